"""The report's training sections (curves, time to accuracy, throughput), the summary and the environment."""

from __future__ import annotations

from typing import Any

from .document import STATUS_MEANING, Bullets, Cell, Section, Table, key_value_table, text_cell
from .figures import Figure
from .layer_summary import FRAMEWORK_ORDER
from .load import RunData

VARIANT_NAME = {"bn": "with BN", "nobn": "without BN"}


def _order(configs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rank = {f: i for i, f in enumerate(FRAMEWORK_ORDER)}
    return sorted(configs, key=lambda c: (rank.get(c["framework"], len(rank)), c["framework"], c["variant"] != "bn"))


def _missing_train(data: RunData) -> str:
    return data.parts["train"].detail or "no training records"


def summary_section(data: RunData, summary: dict[str, Any]) -> Section:
    section = Section("summary", "Summary")
    if data.incomplete:
        section.blocks.append("This report is INCOMPLETE. Missing or cut short: " + "; ".join(
            f"{p.part} ({p.status}: {p.detail})" for p in data.incomplete) + ".")
    section.blocks.append(Bullets([v for v in summary["verdicts"] if not v.startswith("INCOMPLETE")]))
    section.blocks.append(Table(["colour", "meaning in the tables below"],
                                [[Cell(k, k), Cell(v)] for k, v in STATUS_MEANING.items()], row_class="kv"))
    return section


def convergence_section(data: RunData, figures: list[Figure]) -> Section:
    section = Section("convergence", "Convergence curves")
    if data.conclusions is None:
        return Section(section.id, section.title, missing=_missing_train(data))
    preset = (data.train_manifest or {}).get("preset", {})
    section.blocks.append(
        f"AlexNet (preset {preset.get('name')}: {preset.get('arch')} architecture, {preset.get('image_size')}px, "
        f"{preset.get('train_subset') or 60000} training and {preset.get('test_subset') or 10000} test images, batch "
        f"{preset.get('batch_size')}, SGD lr {preset.get('lr')}, momentum {preset.get('momentum')}, "
        f"{preset.get('epochs')} epochs) trained from identical weights on identical batches in every framework.")
    section.blocks.extend(figures or ["No run has an evaluation record yet."])
    return section


def time_to_accuracy_section(data: RunData, summary: dict[str, Any]) -> Section:
    section = Section("time-to-accuracy", "Time to accuracy and BN speed-up")
    t = summary["training"]
    if t is None:
        return Section(section.id, section.title, missing=_missing_train(data))
    targets = [f"{x:g}" for x in t["targets"]]
    body = []
    for c in _order(t["configs"]):
        final = c["final_test_accuracy"]
        acc = "–" if final["mean"] is None else f"{final['mean']:.4f}" + (
            f" ± {final['std']:.4f}" if final["std"] is not None else "") + f" (n={final['n']})"
        row = [Cell(c["framework"]), Cell(VARIANT_NAME.get(c["variant"], c["variant"])),
               Cell(f"{c['seeds_done']}/{len(c['seeds'])}"), Cell(acc), text_cell(
                   None if c["best_test_accuracy"] is None else f"{c['best_test_accuracy']:.4f}")]
        for target in targets:
            x = c["time_to_target"][target]
            if x["reached"] == 0:
                row.append(Cell("not reached", "differs", f"0 of {x['of']} seeds reached {target}"))
            else:
                row.append(Cell(f"{x['epochs_mean']:.2f} ep ({x['iterations_mean']:.0f} it)",
                                "pass" if x["reached"] == x["of"] else "differs", f"{x['reached']} of {x['of']} seeds"))
        body.append(row)
    section.blocks.append("Time to a test accuracy: the first evaluation point at or above it (mean over the seeds "
                          "that reached it), in epochs and iterations.")
    section.blocks.append(Table(["framework", "variant", "seeds done", "final test accuracy", "best",
                                 *[f"to ≥ {x}" for x in targets]], body))
    speed = []
    for e in t["bn_speedup"]:
        if e["speedup"] is not None:
            cell = Cell(f"{e['speedup']:.2f}×", "pass")
        elif e["at_least"] is not None:
            cell = Cell(f"≥ {e['at_least']:.2f}×", "pass", "without BN never reached the target: a lower bound")
        else:
            cell = Cell("–", None, "not every seed of both variants reached the target")
        speed.append([Cell(e["framework"]), Cell(f"{e['target']:g}"), text_cell(
            None if e["iterations_bn"] is None else f"{e['iterations_bn']:.0f}"), text_cell(
            None if e["iterations_nobn"] is None else f"{e['iterations_nobn']:.0f}"), cell])
    if speed:
        section.blocks.append("BN speed-up: iterations to the target without BN / with BN (mean over seeds).")
        section.blocks.append(Table(["framework", "target", "iterations with BN", "iterations without BN",
                                     "speed-up"], speed))
    rank = {f: i for i, f in enumerate(FRAMEWORK_ORDER)}
    pairs = sorted(({**p, "frameworks": sorted(p["frameworks"], key=lambda f: rank.get(f, len(rank)))}
                    for p in t["agreement"].get("pairs", [])),
                   key=lambda p: (p["variant"] != "bn", [rank.get(f, len(rank)) for f in p["frameworks"]]))
    if pairs:
        section.blocks.append(f"Agreement across frameworks — {t['agreement'].get('criterion', '')}.")
        section.blocks.append(Table(["variant", "frameworks", "points", "outside", "max |Δ accuracy|", "verdict"], [
            [Cell(VARIANT_NAME.get(p["variant"], p["variant"])), Cell(" vs ".join(p["frameworks"])),
             Cell(str(p["points"])), Cell(str(p["outside"])),
             Cell(f"{p['max_abs_diff']:.4f} (iteration {p['worst_iteration']})"),
             Cell("agree", "pass") if p["agree"] else Cell("differ", "differs")] for p in pairs]))
    return section


def throughput_section(data: RunData, summary: dict[str, Any]) -> Section:
    section = Section("throughput", "Throughput")
    t = summary["training"]
    if t is None:
        return Section(section.id, section.title, missing=_missing_train(data))
    speeds = {(c["framework"], c["variant"]): c["images_per_s"] for c in t["configs"]}
    body = []
    for fw in dict.fromkeys(c["framework"] for c in _order(t["configs"])):
        bn, nobn = speeds.get((fw, "bn")), speeds.get((fw, "nobn"))
        body.append([Cell(fw), text_cell(None if bn is None else f"{bn:.0f}"),
                     text_cell(None if nobn is None else f"{nobn:.0f}"),
                     text_cell(None if not (bn and nobn) else f"{bn / nobn:.2f}")])
    m = data.train_manifest or {}
    section.blocks.append(f"Training images per second (evaluation excluded, mean over epochs and seeds), with "
                          f"{m.get('jobs', '?')} run(s) in parallel and {m.get('threads_per_job', '?')} thread(s) "
                          "each on a shared machine: an indication, not a benchmark.")
    section.blocks.append(Table(["framework", "with BN (images/s)", "without BN (images/s)", "with / without"], body))
    return section


def environment_section(data: RunData) -> Section:
    section = Section("environment", "Environment")
    env = data.environment
    m = data.manifest or {}
    items: list[tuple[str, object]] = [("run directory", str(data.run_dir))]
    if m:
        items += [("command", " ".join(m.get("command", []))), ("started", m.get("started")),
                  ("finished", m.get("finished")),
                  ("steps", ", ".join(f"{s}: {v} ({m.get('step_seconds', {}).get(s, '?')} s)"
                                      for s, v in m.get("steps", {}).items()))]
    items += [(k, env.get(k)) for k in ("time", "python", "platform", "cpu", "cpu_count", "git_commit")]
    items.append(("threads", ", ".join(f"{k}={v}" for k, v in (env.get("threads") or {}).items())))
    items.append(("packages", ", ".join(f"{k} {v}" for k, v in (env.get("packages") or {}).items() if v)))
    for name, doc in (("parity", data.parity), ("model parity", data.model_parity)):
        if doc:
            meta = doc.get("meta", {})
            items.append((f"{name} wall time", f"{meta.get('wall_time_s')} s, complete: {meta.get('complete')}"))
    if data.train_manifest:
        tm = data.train_manifest
        items.append(("training", f"preset {tm.get('preset', {}).get('name')}, {len(tm.get('runs', []))} runs, "
                                  f"data {tm.get('data_dir')}, device {tm.get('device')}"))
    section.blocks.append(key_value_table(items))
    section.blocks.append("Parts of the run directory: " + "; ".join(
        f"{p.part}: {p.status}" + (f" ({p.detail})" if p.detail else "") for p in data.parts.values()) + ".")
    return section
