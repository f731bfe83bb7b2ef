"""The report's training sections (curves, time to accuracy, throughput), the summary and the environment."""

from __future__ import annotations

from typing import Any

from bnparity.frameworks.registry import display_name, sort_key

from .document import STATUS_MEANING, Bullets, Cell, Section, Table, key_value_table, text_cell
from .figures import Figure
from .load import RunData, unreadable_note
from .summary import ConfigRow, TrainingSummary, digest_verdict

VARIANT_NAME = {"bn": "with BN", "nobn": "without BN"}


def _order(configs: tuple[ConfigRow, ...]) -> list[ConfigRow]:
    return sorted(configs, key=lambda c: (sort_key(c.framework), c.variant != "bn", c.variant))


def _missing_train(data: RunData) -> str:
    return data.parts["train"].detail or "no training records"


def _acc(value: float | None) -> str | None:
    return None if value is None else f"{value:.4f}"


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
    if data.conclusions is None or data.train_manifest is None:
        return Section(section.id, section.title, missing=_missing_train(data))
    p = data.train_manifest.preset
    section.blocks.append(
        f"AlexNet (preset {p.name}: {p.arch} architecture, {p.image_size}px, {p.train_subset or 60000} training and "
        f"{p.test_subset or 10000} test images, batch {p.batch_size}, SGD lr {p.lr}, momentum {p.momentum}, "
        f"{p.epochs} epochs) trained from identical weights on identical batches in every framework.")
    digests = digest_verdict(data.conclusions.batch_digests)
    if digests:
        section.blocks.append(digests)
    elif data.conclusions.batch_digests.without_digests:
        section.blocks.append("These runs recorded no batch digests (an older format): identical batches are not "
                              "checked.")
    if data.train_unreadable:
        section.blocks.append(unreadable_note(data.train_unreadable) + ": each such line is left out, the rest of "
                              "its run is shown.")
    section.blocks.extend(figures or ["No run has an evaluation record yet."])
    return section


def _digest_table(t: TrainingSummary) -> Table | None:
    checks = [c for c in t.batch_digests.checks if not c.identical]
    if not checks:
        return None
    rows = [[Cell(VARIANT_NAME.get(c.variant, c.variant)), Cell(str(c.seed)),
             Cell(" vs ".join(display_name(f) for f in c.frameworks)), Cell(f"{c.mismatched} of {c.iterations}",
                                                                             "fail"),
             Cell(str(c.first_mismatch), "fail", ", ".join(f"{display_name(f)} {d}" for f, d in c.digests.items()))]
            for c in checks]
    return Table(["variant", "seed", "frameworks", "iterations with different batches", "first"], rows,
                 caption="The frameworks did not train on identical batches: their curves are not comparable.")


def time_to_accuracy_section(data: RunData, summary: dict[str, Any]) -> Section:
    section = Section("time-to-accuracy", "Time to accuracy and BN speed-up")
    t: TrainingSummary | None = summary["training"]
    if t is None:
        return Section(section.id, section.title, missing=_missing_train(data))
    targets = [f"{x:g}" for x in t.targets]
    body = []
    for c in _order(t.configs):
        final = c.final_test_accuracy
        acc = "–" if final.mean is None else f"{final.mean:.4f}" + (
            f" ± {final.std:.4f}" if final.std is not None else "") + f" (n={final.n})"
        row = [Cell(display_name(c.framework)), Cell(VARIANT_NAME.get(c.variant, c.variant)),
               Cell(f"{c.seeds_done}/{len(c.seeds)}"), Cell(acc), text_cell(_acc(c.best_test_accuracy))]
        for target in targets:
            x = c.time_to_target[target]
            if x.reached == 0:
                row.append(Cell("not reached", "differs", f"0 of {x.of} seeds reached {target}"))
            else:
                epochs = "–" if x.epochs_mean is None else f"{x.epochs_mean:.2f}"
                row.append(Cell(f"{epochs} ep ({x.iterations_mean:.0f} it)",
                                "pass" if x.reached == x.of else "differs", f"{x.reached} of {x.of} seeds"))
        body.append(row)
    section.blocks.append("Time to a test accuracy: the first evaluation point at or above it (mean over the seeds "
                          "that reached it), in epochs and iterations. Final: the last evaluation of each finished "
                          "run (mean ± sample std over seeds); best: the highest evaluation of any seed.")
    section.blocks.append(Table(["framework", "variant", "seeds done", "final test accuracy", "best",
                                 *[f"to ≥ {x}" for x in targets]], body))
    speed = []
    for e in sorted(t.bn_speedup, key=lambda e: (sort_key(e.framework), e.target)):
        if e.speedup is not None:
            cell = Cell(f"{e.speedup:.2f}×", "pass")
        elif e.at_least is not None:
            cell = Cell(f"≥ {e.at_least:.2f}×", "pass", "without BN never reached the target: a lower bound")
        else:
            cell = Cell("–", None, "not every seed of both variants reached the target")
        speed.append([Cell(display_name(e.framework)), Cell(f"{e.target:g}"), text_cell(
            None if e.iterations_bn is None else f"{e.iterations_bn:.0f}"), text_cell(
            None if e.iterations_nobn is None else f"{e.iterations_nobn:.0f}"), cell])
    if speed:
        section.blocks.append("BN speed-up: iterations to the target without BN / with BN (mean over seeds).")
        section.blocks.append(Table(["framework", "target", "iterations with BN", "iterations without BN",
                                     "speed-up"], speed))
    pairs = sorted(t.agreement.pairs, key=lambda p: (p.variant != "bn", [sort_key(f) for f in p.frameworks]))
    if pairs:
        section.blocks.append(f"Agreement across frameworks — {t.agreement.criterion}.")
        section.blocks.append(Table(["variant", "frameworks", "points", "outside", "max |Δ accuracy|", "verdict"], [
            [Cell(VARIANT_NAME.get(p.variant, p.variant)),
             Cell(" vs ".join(display_name(f) for f in sorted(p.frameworks, key=sort_key))),
             Cell(str(p.points)), Cell(str(p.outside)),
             Cell(f"{p.max_abs_diff:.4f} (iteration {p.worst_iteration})"),
             Cell("agree", "pass") if p.agree else Cell("differ", "differs")] for p in pairs]))
    digests = _digest_table(t)
    if digests is not None:
        section.blocks.append(digests)
    return section


def throughput_section(data: RunData, summary: dict[str, Any]) -> Section:
    section = Section("throughput", "Throughput")
    t: TrainingSummary | None = summary["training"]
    if t is None:
        return Section(section.id, section.title, missing=_missing_train(data))
    speeds = {(c.framework, c.variant): c.images_per_s for c in t.configs}
    body = []
    for fw in dict.fromkeys(c.framework for c in _order(t.configs)):
        bn, nobn = speeds.get((fw, "bn")), speeds.get((fw, "nobn"))
        body.append([Cell(display_name(fw)), text_cell(None if bn is None else f"{bn:.0f}"),
                     text_cell(None if nobn is None else f"{nobn:.0f}"),
                     text_cell(None if not (bn and nobn) else f"{bn / nobn:.2f}")])
    m = data.train_manifest
    jobs = m.jobs if m and m.jobs is not None else "?"
    threads = m.threads_per_job if m and m.threads_per_job is not None else "?"
    section.blocks.append(f"Training images per second (evaluation excluded, mean over epochs and seeds), with "
                          f"{jobs} run(s) in parallel and {threads} thread(s) each on a shared machine: an "
                          "indication, not a benchmark.")
    section.blocks.append(Table(["framework", "with BN (images/s)", "without BN (images/s)", "with / without"], body))
    return section


def environment_section(data: RunData) -> Section:
    section = Section("environment", "Environment")
    env = data.environment
    m = data.manifest
    items: list[tuple[str, object]] = [("run directory", str(data.run_dir))]
    if m is not None:
        items += [("command", " ".join(m.command)), ("started", m.started), ("finished", m.finished),
                  ("steps", ", ".join(f"{s}: {v} ({m.step_seconds.get(s, '?')} s)" for s, v in m.steps.items()))]
    items += [("time", env.time or None), ("python", env.python or None), ("platform", env.platform or None),
              ("cpu", env.cpu or None), ("cpu_count", env.cpu_count), ("git_commit", env.git_commit)]
    items.append(("threads", ", ".join(f"{k}={v}" for k, v in env.threads.items())))
    items.append(("packages", ", ".join(f"{k} {v}" for k, v in env.packages.items() if v)))
    for name, doc in (("parity", data.parity), ("model parity", data.model_parity)):
        if doc is not None:
            items.append((f"{name} wall time", f"{doc.meta.wall_time_s} s, complete: {doc.meta.complete}"))
    if data.train_manifest is not None:
        tm = data.train_manifest
        items.append(("training", f"preset {tm.preset.name}, {len(tm.runs)} runs, data {tm.data_dir}, "
                                  f"device {tm.device}"))
    section.blocks.append(key_value_table(items))
    section.blocks.append("Parts of the run directory: " + "; ".join(
        f"{p.part}: {p.status}" + (f" ({p.detail})" if p.detail else "") for p in data.parts.values()) + ".")
    return section
