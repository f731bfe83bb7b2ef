"""The report's training sections (curves, time to accuracy, throughput), the summary and the environment.

A batch-size sweep (preset small-batch: configurations with a batch size) shows, in the same sections, its
accuracy against batch size (figure and table), its agreement within each batch size and its throughput per batch
size instead of the per-configuration tables, which would mix batch sizes.

A data-parallel preset (dp-cpu, dp-gpu: configurations on R replicas beside the single-device ones) shows its test
accuracy per BatchNorm mode (figure, in the convergence section) and, in place of the time-to-accuracy section, a
"data-parallel" section: final and best test accuracy per mode with the differences local − single and sync −
single, the time-to-accuracy table with a mode column, and the speed-ups and agreement within each mode; its
throughput per mode. A directory without data-parallel records shows none of it.
"""

from __future__ import annotations

from typing import Any

from bnparity.frameworks.registry import display_name, sort_key
from bnparity.frameworks.training import BN_SYNC
from bnparity.suites.convergence.records import RunId
from bnparity.suites.schema import (
    AgreementPair,
    ConfigSummary,
    DataParallelComparison,
    ModeResult,
    Speedup,
    StartEvent,
)

from .document import STATUS_MEANING, Bullets, Cell, Section, Table, key_value_table, text_cell
from .figures import Figure
from .load import RunData, unreadable_note
from .seed_sections import SEED_FIGURES, seed_blocks
from .summary import MODE_NAME, VARIANT_NAME, ConfigRow, ReplicaConfigRow, TrainingSummary, digest_verdict


def _mode(c: ConfigRow) -> str:
    """A configuration's BatchNorm mode: "local" or "sync" on replicas, "single" on one device."""
    return c.bn_sync if isinstance(c, ReplicaConfigRow) else "single"


def _order(configs: tuple[ConfigRow, ...]) -> list[ConfigRow]:
    return sorted(configs, key=lambda c: (sort_key(c.framework), c.variant != "bn", c.variant, BN_SYNC.index(_mode(c))))


def data_parallel(data: RunData) -> list[DataParallelComparison]:
    """A data-parallel directory's comparisons of its BatchNorm modes, by framework and variant; [] for any other
    training run."""
    found = data.conclusions.data_parallel if data.conclusions else ()
    return sorted(found, key=lambda d: (sort_key(d.framework), d.variant != "bn", d.variant))


def _missing_train(data: RunData) -> str:
    return data.parts["train"].detail or "no training records"


def _acc(value: float | None) -> str | None:
    return None if value is None else f"{value:.4f}"


def sweep_configs(data: RunData) -> list[ConfigSummary]:
    """The configurations of a batch-size sweep, by variant (bn, gn, nobn), batch size and framework; [] for any
    other training run."""
    configs = [c for c in data.conclusions.configs if c.batch_size is not None] if data.conclusions else []
    return sorted(configs, key=lambda c: (c.variant != "bn", c.variant, c.batch_size, sort_key(c.framework)))


def _batch_cells(batch: int | None, sweep: bool) -> list[Cell]:
    """The batch-size cell of a row in a sweep (none otherwise)."""
    return [text_cell(batch)] if sweep else []


Among = tuple[list[Cell], int]  # which runs a comparison is among: its extra cells (batch, mode) and sort key


def _comparisons(data: RunData, t: TrainingSummary, *, sweep: bool) -> tuple[
        list[str], list[tuple[Among, Speedup]], list[tuple[Among, AgreementPair]]]:
    """The extra header (["batch"] in a sweep, ["BatchNorm mode"] in a data-parallel directory, else []) and every
    BN speed-up and agreement pair with the cells of that column: those of the single-device runs without a batch
    size, a sweep's per batch size, a data-parallel directory's per mode."""
    if t.data_parallel:
        def mode(name: str) -> Among:
            return [Cell(MODE_NAME[name])], BN_SYNC.index(name)

        speedups = [(mode("single"), e) for e in t.bn_speedup] + [
            (mode(m.bn_sync), e) for m in t.by_bn_sync for e in m.bn_speedup]
        pairs = [(mode("single"), p) for p in t.agreement.pairs] + [
            (mode(m.bn_sync), p) for m in t.by_bn_sync for p in m.agreement]
        return ["BatchNorm mode"], speedups, pairs

    def batch(size: int | None) -> Among:
        return _batch_cells(size, sweep), size or 0

    by_batch = data.conclusions.by_batch_size if data.conclusions else ()
    speedups = [(batch(None), e) for e in t.bn_speedup] + [(batch(b.batch_size), e) for b in by_batch
                                                           for e in b.bn_speedup]
    pairs = [(batch(None), p) for p in t.agreement.pairs] + [(batch(b.batch_size), p) for b in by_batch
                                                             for p in b.agreement]
    return (["batch"] if sweep else []), speedups, pairs


def sweep_verdict(data: RunData) -> str | None:
    """What the batch-size sweep shows: per variant, the best test accuracy at the largest and the smallest batch
    (each framework's); None without a sweep."""
    configs = sweep_configs(data)
    if not configs:
        return None
    sizes = sorted({c.batch_size for c in configs})
    parts = []
    for variant in dict.fromkeys(c.variant for c in configs):
        best = {(c.framework, c.batch_size): c.best_test_accuracy_mean for c in configs if c.variant == variant}
        frameworks = sorted({f for f, _ in best}, key=sort_key)
        ends = [f"{display_name(f)} {_acc(best.get((f, sizes[-1]))) or '–'} → {_acc(best.get((f, sizes[0]))) or '–'}"
                for f in frameworks]
        parts.append(f"{VARIANT_NAME.get(variant, variant)} " + ", ".join(ends))
    return (f"Batch-size sweep: best test accuracy at batch {sizes[-1]} → batch {sizes[0]} (the same training images, "
            "learning rate scaled linearly): " + "; ".join(parts) + ".")


def _mode_cells(m: ModeResult | None) -> list[Cell]:
    """Final and best test accuracy of one mode (dashes when it did not train)."""
    if m is None:
        return [text_cell(None, title="not run"), text_cell(None, title="not run")]
    seeds = f"{m.seeds_done} of {len(m.seeds)} seeds done"
    return [text_cell(_acc(m.final_test_accuracy.mean), title=seeds),
            text_cell(_acc(m.best_test_accuracy_mean), title=seeds)]


def _signed(value: float | None) -> str | None:
    return None if value is None else f"{value:+.4f}"


def data_parallel_table(data: RunData) -> Table | None:
    """Final and best test accuracy per framework x variant (rows) and BatchNorm mode (columns), with the
    differences local − single and sync − single; None without data-parallel runs."""
    comparisons = data_parallel(data)
    if not comparisons:
        return None
    body = []
    for d in comparisons:
        modes = {m.bn_sync: m for m in d.modes}
        body.append([Cell(display_name(d.framework)), Cell(VARIANT_NAME.get(d.variant, d.variant)),
                     Cell(f"{d.replicas} × {d.global_batch // d.replicas}"),
                     *(c for mode in BN_SYNC for c in _mode_cells(modes.get(mode))),
                     text_cell(_signed(d.final_local_minus_single)), text_cell(_signed(d.best_local_minus_single)),
                     text_cell(_signed(d.final_sync_minus_single)), text_cell(_signed(d.best_sync_minus_single))])
    header = ["framework", "variant", "replicas × images",
              *(f"{MODE_NAME[mode]} {k}" for mode in BN_SYNC for k in ("final", "best")),
              "local − single final", "local − single best", "sync − single final", "sync − single best"]
    return Table(header, body, caption="Test accuracy per BatchNorm mode, on the same global batches: final (the "
                 "last evaluation of each finished run) and best (the highest evaluation), means over seeds; the "
                 "differences are of those means (positive: data-parallel training did better than one device).")


def summary_section(data: RunData, summary: dict[str, Any]) -> Section:
    section = Section("summary", "Summary")
    if data.incomplete:
        section.blocks.append("This report is INCOMPLETE. Missing or cut short: " + "; ".join(
            f"{p.part} ({p.status}: {p.detail})" for p in data.incomplete) + ".")
    verdicts = [v for v in summary["verdicts"] if not v.startswith("INCOMPLETE")]
    sweep = sweep_verdict(data)
    section.blocks.append(Bullets(verdicts + ([sweep] if sweep else [])))
    section.blocks.append(Table(["colour", "meaning in the tables below"],
                                [[Cell(k, k), Cell(v)] for k, v in STATUS_MEANING.items()], row_class="kv"))
    return section


def convergence_section(data: RunData, figures: list[Figure]) -> Section:
    section = Section("convergence", "Convergence curves")
    if data.conclusions is None or data.train_manifest is None:
        return Section(section.id, section.title, missing=_missing_train(data))
    p = data.train_manifest.preset
    sizes = sorted({c.batch_size for c in sweep_configs(data)})
    batch = (f"batch sizes {', '.join(map(str, sizes))} with SGD lr {p.lr:g} × batch / {p.batch_size} (the linear "
             f"scaling rule), each run seeing the same {(p.train_subset or 60000) * p.epochs} training images"
             if sizes else f"batch {p.batch_size}, SGD lr {p.lr}")
    dp = data_parallel(data)
    if dp:
        r = dp[0].replicas
        batch = (f"a global batch of {p.batch_size} per SGD step — in the data-parallel runs split over {r} replicas "
                 f"of {p.batch_size // r} images each, with per-replica or synchronized BatchNorm statistics; on one "
                 f"device whole — SGD lr {p.lr}")
    section.blocks.append(
        f"AlexNet (preset {p.name}: {p.arch} architecture, {p.image_size}px, {p.train_subset or 60000} training and "
        f"{p.test_subset or 10000} test images, {batch}, momentum {p.momentum}, "
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
    ours = [f for f in figures if f.name not in SEED_FIGURES]
    section.blocks.extend(ours or ["No run has an evaluation record yet."])
    section.blocks.extend(seed_blocks(data, figures))  # the seed blog's curves and numbers beside ours
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


def sweep_table(data: RunData) -> Table | None:
    """Final and best test accuracy per normalization x batch size (rows) and framework (columns); None without a
    sweep."""
    configs = sweep_configs(data)
    if not configs:
        return None
    frameworks = sorted({c.framework for c in configs}, key=sort_key)
    preset = data.train_manifest.preset if data.train_manifest else None
    cells = {(c.variant, c.batch_size, c.framework): c for c in configs}
    body = []
    for variant, batch in dict.fromkeys((c.variant, c.batch_size) for c in configs):
        lr = f"{preset.at_batch(batch).lr:.3g}" if preset and batch in preset.batch_sizes else None
        row = [Cell(VARIANT_NAME.get(variant, variant)), Cell(str(batch)), text_cell(lr)]
        for fw in frameworks:
            c = cells.get((variant, batch, fw))
            final = c.final_test_accuracy if c else None
            seeds = f"{c.seeds_done} of {len(c.seeds)} seeds done" if c else "not run"
            row.append(text_cell(_acc(final.mean) if final else None, title=seeds))
            row.append(text_cell(_acc(c.best_test_accuracy_mean) if c else None, title=seeds))
        body.append(row)
    header = ["normalization", "batch", "lr",
              *(f"{display_name(f)} {k}" for f in frameworks for k in ("final", "best"))]
    return Table(header, body, caption="Test accuracy per batch size: final (the last evaluation of each finished "
                 "run) and best (the highest evaluation), means over seeds.")


def _time_to_target_table(t: TrainingSummary) -> Table:
    """One row per configuration; with a BatchNorm-mode column (and its replicas' configurations) in a
    data-parallel directory."""
    targets = [f"{x:g}" for x in t.targets]
    modes = bool(t.data_parallel)
    body = []
    for c in _order(t.configs + (t.replica_configs if modes else ())):
        final = c.final_test_accuracy
        acc = "–" if final.mean is None else f"{final.mean:.4f}" + (
            f" ± {final.std:.4f}" if final.std is not None else "") + f" (n={final.n})"
        row = [Cell(display_name(c.framework)), Cell(VARIANT_NAME.get(c.variant, c.variant)),
               *([Cell(MODE_NAME[_mode(c)])] if modes else []),
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
    return Table(["framework", "variant", *(["BatchNorm mode"] if modes else []), "seeds done",
                  "final test accuracy", "best", *[f"to ≥ {x}" for x in targets]], body)


def time_to_accuracy_section(data: RunData, summary: dict[str, Any]) -> Section:
    t: TrainingSummary | None = summary["training"]
    sweep = sweep_table(data)
    dp = data_parallel_table(data)
    section = (Section("data-parallel", "Data-parallel training: per-replica vs synchronized BatchNorm")
               if dp is not None else Section("time-to-accuracy", "Accuracy against batch size") if sweep is not None
               else Section("time-to-accuracy", "Time to accuracy and BN speed-up"))
    if t is None:
        return Section(section.id, section.title, missing=_missing_train(data))
    if dp is not None:
        d = data_parallel(data)[0]
        section.blocks.append(
            f"Every mode trained on the same global batches of {d.global_batch} images, from the same weights, with "
            f"the same learning rate and schedule (dropout masks drawn by each framework, each replica its own): "
            f"data-parallel on {d.replicas} replicas of "
            f"{d.global_batch // d.replicas} images, the gradient averaged over the replicas, with BatchNorm "
            "normalizing each replica's images with their own statistics (per-replica BN) or with the global "
            "batch's (synchronized BN), and on one device. Evaluation uses the saved model's running statistics "
            "(eval mode). The curves are in the figure \"data-parallel\" of the convergence section.")
        section.blocks.append(dp)
        section.blocks.append("Time to a test accuracy per mode: the first evaluation point at or above it (mean "
                              "over the seeds that reached it), in epochs and iterations.")
        section.blocks.append(_time_to_target_table(t))
    elif sweep is not None:
        section.blocks.append("Each run saw the same training images at its batch size, with the learning rate "
                              "scaled linearly with the batch size. BN evaluates with its running statistics "
                              "(eval mode), GroupNorm with each image's own statistics.")
        section.blocks.append(sweep)
    else:
        section.blocks.append("Time to a test accuracy: the first evaluation point at or above it (mean over the "
                              "seeds that reached it), in epochs and iterations. Final: the last evaluation of each "
                              "finished run (mean ± sample std over seeds); best: the highest evaluation of any seed.")
        section.blocks.append(_time_to_target_table(t))
    extra, speedups, agreement = _comparisons(data, t, sweep=sweep is not None)
    speed = []
    for (cells, _), e in sorted(speedups, key=lambda x: (sort_key(x[1].framework), x[0][1], x[1].target)):
        if e.speedup is not None:
            cell = Cell(f"{e.speedup:.2f}×", "pass")
        elif e.at_least is not None:
            cell = Cell(f"≥ {e.at_least:.2f}×", "pass", "without BN never reached the target: a lower bound")
        else:
            cell = Cell("–", None, "not every seed of both variants reached the target")
        speed.append([Cell(display_name(e.framework)), *cells, Cell(f"{e.target:g}"), text_cell(
            None if e.iterations_bn is None else f"{e.iterations_bn:.0f}"), text_cell(
            None if e.iterations_nobn is None else f"{e.iterations_nobn:.0f}"), cell])
    if speed:
        section.blocks.append("BN speed-up: iterations to the target without BN / with BN (mean over seeds).")
        section.blocks.append(Table(["framework", *extra, "target", "iterations with BN",
                                     "iterations without BN", "speed-up"], speed))
    pairs = sorted(agreement, key=lambda x: (x[1].variant != "bn", x[1].variant, x[0][1],
                                             [sort_key(f) for f in x[1].frameworks]))
    if pairs:
        within = " (within each batch size)" if sweep is not None else " (within each mode)" if dp is not None else ""
        section.blocks.append(f"Agreement across frameworks{within} — {t.agreement.criterion}.")
        section.blocks.append(Table(["variant", *extra, "frameworks", "points", "outside", "max |Δ accuracy|",
                                     "verdict"], [
            [Cell(VARIANT_NAME.get(p.variant, p.variant)), *cells,
             Cell(" vs ".join(display_name(f) for f in sorted(p.frameworks, key=sort_key))),
             Cell(str(p.points)), Cell(str(p.outside)),
             Cell(f"{p.max_abs_diff:.4f} (iteration {p.worst_iteration})"),
             Cell("agree", "pass") if p.agree else Cell("differ", "differs")] for (cells, _), p in pairs]))
    digests = _digest_table(t)
    if digests is not None:
        section.blocks.append(digests)
    return section


def _speed(value: float | None) -> Cell:
    return text_cell(None if value is None else f"{value:.0f}")


def _sweep_throughput(configs: list[ConfigSummary]) -> Table:
    """Images per second per framework x normalization (rows) and batch size (columns)."""
    sizes = sorted({c.batch_size for c in configs})
    speeds = {(c.framework, c.variant, c.batch_size): c.images_per_s for c in configs}
    rows = sorted({(c.framework, c.variant) for c in configs},
                  key=lambda k: (sort_key(k[0]), k[1] != "bn", k[1]))
    body = [[Cell(display_name(fw)), Cell(VARIANT_NAME.get(v, v)), *(_speed(speeds.get((fw, v, b))) for b in sizes)]
            for fw, v in rows]
    return Table(["framework", "normalization", *(f"batch {b} (images/s)" for b in sizes)], body)


def _data_parallel_name(name: str) -> bool:
    """Whether `name` is the name of a data-parallel run ("<framework>-<variant>-r<R><mode>-seed<k>")."""
    try:
        return RunId.parse(name).data_parallel
    except ValueError:
        return False


def _mode_throughput(t: TrainingSummary, data: RunData) -> Table:
    """Images per second per framework x variant (rows) and BatchNorm mode (columns)."""
    speeds = {(c.framework, c.variant, _mode(c)): c.images_per_s for c in t.configs + t.replica_configs}
    rows = dict.fromkeys((c.framework, c.variant) for c in _order(t.configs + t.replica_configs))
    recorded = sorted({e.threads for name, records in data.train_records.items() for e in records
                       if isinstance(e, StartEvent) and e.threads is not None and _data_parallel_name(name)})
    threads = f"; each replica of a data-parallel run had {' or '.join(recorded)} thread(s)" if recorded else ""
    body = [[Cell(display_name(fw)), Cell(VARIANT_NAME.get(v, v)),
             *(_speed(speeds.get((fw, v, mode))) for mode in BN_SYNC)]
            for fw, v in rows]
    return Table(["framework", "variant", *(f"{MODE_NAME[mode]} (images/s)" for mode in BN_SYNC)], body,
                 caption=f"Training images per second of the global batch, per BatchNorm mode{threads}.")


def throughput_section(data: RunData, summary: dict[str, Any]) -> Section:
    section = Section("throughput", "Throughput")
    t: TrainingSummary | None = summary["training"]
    if t is None:
        return Section(section.id, section.title, missing=_missing_train(data))
    m = data.train_manifest
    jobs = m.jobs if m and m.jobs is not None else "?"
    threads = m.threads_per_job if m and m.threads_per_job is not None else "?"
    section.blocks.append(f"Training images per second (evaluation excluded, mean over epochs and seeds), with "
                          f"{jobs} run(s) in parallel and {threads} thread(s) each on a shared machine: an "
                          "indication, not a benchmark.")
    sweep = sweep_configs(data)
    if sweep:
        section.blocks.append(_sweep_throughput(sweep))
        return section
    if t.data_parallel:
        section.blocks.append(_mode_throughput(t, data))
        return section
    speeds = {(c.framework, c.variant): c.images_per_s for c in t.configs}
    gn = any(c.variant == "gn" for c in t.configs)
    body = []
    for fw in dict.fromkeys(c.framework for c in _order(t.configs)):
        bn, nobn = speeds.get((fw, "bn")), speeds.get((fw, "nobn"))
        body.append([Cell(display_name(fw)), _speed(bn), _speed(nobn),
                     text_cell(None if not (bn and nobn) else f"{bn / nobn:.2f}"),
                     *([_speed(speeds.get((fw, "gn")))] if gn else [])])
    section.blocks.append(Table(["framework", "with BN (images/s)", "without BN (images/s)", "with / without",
                                 *(["with GroupNorm (images/s)"] if gn else [])], body))
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
        replicas = f", {tm.replicas} replicas in the data-parallel runs" if tm.replicas else ""
        items.append(("training", f"preset {tm.preset.name}, {len(tm.runs)} runs, data {tm.data_dir}, "
                                  f"device {tm.device}{replicas}"))
    section.blocks.append(key_value_table(items))
    section.blocks.append("Parts of the run directory: " + "; ".join(
        f"{p.part}: {p.status}" + (f" ({p.detail})" if p.detail else "") for p in data.parts.values()) + ".")
    return section
