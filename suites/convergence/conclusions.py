"""What a training run directory shows, computed from its JSONL records only: conclusions.json.

Definitions:
- time to a target: the first evaluation point whose test accuracy is >= the target (iteration, fractional
  epochs done, 1-based epoch, wall time); null when no point reaches it. A configuration's figure is the mean
  over the seeds that reached it, with how many did.
- final test accuracy: the last evaluation of each completed run; mean, sample std (ddof=1; null with one
  seed) and count over seeds.
- BN speed-up (per framework and target): mean iterations-to-target without BN / with BN, given only when
  every seed of both variants reached the target; when BN reached it in every seed and no completed no-BN
  run did, ``at_least`` is the lower bound (iterations no-BN ran) / (iterations BN needed).
- agreement across frameworks (per variant and pair f, g), at every evaluation iteration both have:
  |mean_f - mean_g| <= K * max(std_f, std_g, FLOOR) with means and stds of test accuracy over seeds (std 0
  with one seed). The curves agree when every common point passes. K = 3, FLOOR = 0.01: with one seed two
  curves agree when they are within 3 accuracy points everywhere.
- identical batches: every framework's runs of the same variant and seed must have trained on the same batch at
  every iteration; each "iter" record carries its batch's digest (runner.batch_digest) and the check compares
  them iteration by iteration (`batch_digests`; version-1 runs have no digests, `recorded` says so).
- a run is "done" when its last record is "done", or when its last readable record is the "epoch" record of its
  last planned epoch and the line after it is unreadable (the "done" line was cut mid-write).
- batch-size sweeps (a preset with batch_sizes): a configuration is framework x variant x batch size, and every
  comparison above (BN speed-up, agreement, identical batches) is made within one batch size: the speed-ups and
  agreement per batch size in `by_batch_size`, the digest checks with their batch size. Each run's batch size is
  its RunId's (the "start" record holds it too).
- data-parallel presets (a preset with bn_sync): a configuration is framework x variant x mode — "local" and "sync"
  on R replicas (the RunId's replicas and bn_sync), "single" on one device — and the speed-ups, agreement and
  identical-batches checks are made within one mode: the single-device runs' in bn_speedup and agreement as in any
  directory, the replicas' per mode in `by_bn_sync`. `data_parallel` compares the modes per framework and variant:
  each mode's final test accuracy (mean over its finished seeds) and best (mean over seeds of each seed's best),
  and the differences local - single and sync - single of those means (null when either side has none).

conclusions.json is bnparity.suites.schema.Conclusions (format "bnparity-train-conclusions/2"); the README's
"Record format" section lists every field.
"""

from __future__ import annotations

import itertools
import math
import statistics
from pathlib import Path

from bnparity.frameworks.training import BN_SYNC
from bnparity.suites.records import write_json
from bnparity.suites.schema import (
    AccuracyStat,
    Agreement,
    AgreementPair,
    BatchComparison,
    BatchDigests,
    Conclusions,
    ConfigSummary,
    DataParallelComparison,
    DigestCheck,
    EpochEvent,
    EvalEvent,
    FailedEvent,
    IncompleteRun,
    IterEvent,
    ModeResult,
    PublishedPoint,
    ReplicaModeComparison,
    RunSummary,
    SkippedEvent,
    Speedup,
    StartEvent,
    TargetHit,
    TimeToTarget,
    TrainManifest,
    to_dict,
)

from .records import CONCLUSIONS, SINGLE, RunId, RunRecords, load_manifest, read_run

K = 3.0
FLOOR = 0.01
CRITERION = (f"at each common evaluation iteration: |mean_f - mean_g| <= {K:g} * max(std_f, std_g, {FLOOR:g}) "
             "(test accuracy, mean and sample std over seeds, std 0 with one seed); agree = every point passes")


def _mean(values: list[float]) -> float | None:
    return statistics.fmean(values) if values else None


def _std(values: list[float]) -> float | None:
    return statistics.stdev(values) if len(values) >= 2 else None


def _accuracy(e: EvalEvent | EpochEvent) -> float | None:
    a = e.test_accuracy
    return a if a is not None and math.isfinite(a) else None


def time_to_target(evals: list[EvalEvent], target: float) -> TargetHit | None:
    """The first evaluation at or above `target` test accuracy; None if none is."""
    for r in evals:
        accuracy = _accuracy(r)
        if accuracy is not None and accuracy >= target:
            return TargetHit(iteration=r.iteration, epochs_done=r.epochs_done, epoch=r.epoch, wall_time=r.wall_time)
    return None


def run_summary(run: RunId, rr: RunRecords, *, epochs_planned: int | None) -> RunSummary:
    """Status and figures of one run from its records ("not started" when there are none)."""
    records = rr.events
    last = records[-1] if records else None
    starts = [r for r in records if isinstance(r, StartEvent)]
    planned = starts[-1].epochs if starts else epochs_planned
    status = {None: "not started", "done": "done", "failed": "failed", "skipped": "skipped",
              "interrupted": "interrupted"}.get(last and last.kind, "incomplete")
    message = (last.error if isinstance(last, FailedEvent) else last.reason if isinstance(last, SkippedEvent)
               else "")
    if status == "incomplete" and isinstance(last, EpochEvent) and last.epoch == planned and rr.tail_unreadable:
        status, message = "done", f"its last line is unreadable; the record of its last epoch ({planned}) is there"
    evals = [r for r in records if isinstance(r, EvalEvent)]
    epochs = [r for r in records if isinstance(r, EpochEvent)]
    accuracies = [a for a in map(_accuracy, evals) if a is not None]
    speeds = [r.images_per_s for r in epochs if r.images_per_s]
    return RunSummary(framework=run.framework, variant=run.variant, seed=run.seed, status=status,
                      batch_size=run.batch_size, replicas=run.replicas, bn_sync=run.bn_sync,
                      epochs_completed=len(epochs), iterations=last.iteration if last else 0,
                      final_test_accuracy=_accuracy(evals[-1]) if evals and status == "done" else None,
                      last_test_accuracy=_accuracy(evals[-1]) if evals else None,
                      best_test_accuracy=max(accuracies, default=None), images_per_s=_mean(speeds),
                      wall_time=epochs[-1].wall_time if epochs else None, message=message, epochs_planned=planned,
                      unreadable_lines=len(rr.unreadable))


def _config(framework: str, variant: str, batch_size: int | None, replicas: int | None, bn_sync: str | None,
            runs: list[RunId], summaries: dict[str, RunSummary], curves: dict[str, list[EvalEvent]],
            targets: list[float]) -> ConfigSummary:
    mine = [summaries[r.name] for r in runs]
    finals = [s.final_test_accuracy for s in mine if s.final_test_accuracy is not None]
    bests = [s.best_test_accuracy for s in mine if s.best_test_accuracy is not None]
    speeds = [s.images_per_s for s in mine if s.images_per_s]
    started = [r for r in runs if curves[r.name]]
    to_target = {}
    for target in targets:
        per_seed = {r.seed: time_to_target(curves[r.name], target) for r in started}
        hit = [p for p in per_seed.values() if p is not None]
        to_target[f"{target:g}"] = TimeToTarget(
            reached=len(hit), of=len(started), iterations_mean=_mean([p.iteration for p in hit]),
            epochs_mean=_mean([p.epochs_done for p in hit if p.epochs_done is not None]),
            per_seed={str(seed): p for seed, p in per_seed.items()})
    return ConfigSummary(framework=framework, variant=variant, batch_size=batch_size, replicas=replicas,
                         bn_sync=bn_sync, seeds=tuple(r.seed for r in runs),
                         seeds_done=sum(s.status == "done" for s in mine),
                         final_test_accuracy=AccuracyStat(mean=_mean(finals), std=_std(finals), n=len(finals)),
                         best_test_accuracy=max(bests, default=None), images_per_s=_mean(speeds),
                         targets=to_target, best_test_accuracy_mean=_mean(bests))


Group = tuple[str, str, int | None, int | None, str | None]  # framework, variant, batch size, replicas, bn_sync


def _group(run: RunId) -> Group:
    """The configuration of `run`: framework, variant, batch size (None: not a sweep), replicas and BatchNorm mode
    (None, None: one device)."""
    return run.framework, run.variant, run.batch_size, run.replicas, run.bn_sync


def _batch_key(batch_size: int | None) -> int:
    """Sort key of a batch size: ascending, None (not a sweep) first."""
    return -1 if batch_size is None else batch_size


def _speedups(configs: dict[tuple[str, str], ConfigSummary], curves: dict[str, list[EvalEvent]], runs: list[RunId],
              targets: list[float]) -> list[Speedup]:
    out = []
    for framework in sorted({f for f, _ in configs}):
        bn, nobn = configs.get((framework, "bn")), configs.get((framework, "nobn"))
        if bn is None or nobn is None:
            continue
        nobn_ran = max((curves[r.name][-1].iteration for r in runs
                        if r.framework == framework and r.variant == "nobn" and curves[r.name]), default=0)
        for target in targets:
            key = f"{target:g}"
            b, n = bn.targets[key], nobn.targets[key]
            bn_all = b.of > 0 and b.reached == b.of
            nobn_all = n.of > 0 and n.reached == n.of
            speedup = at_least = None
            if bn_all and nobn_all:
                speedup = n.iterations_mean / b.iterations_mean
            elif bn_all and n.reached == 0 and nobn.seeds_done == len(nobn.seeds) and nobn_ran:
                at_least = nobn_ran / b.iterations_mean
            out.append(Speedup(framework=framework, target=target, iterations_bn=b.iterations_mean,
                               iterations_nobn=n.iterations_mean, speedup=speedup, at_least=at_least))
    return out


def _curve_stats(runs: list[RunId], curves: dict[str, list[EvalEvent]]) -> dict[int, tuple[float, float, int]]:
    """iteration -> (mean, std, n) of test accuracy over the seeds that evaluated at that iteration."""
    by_iteration: dict[int, list[float]] = {}
    for r in runs:
        for e in curves[r.name]:
            accuracy = _accuracy(e)
            if accuracy is not None:
                by_iteration.setdefault(e.iteration, []).append(accuracy)
    return {i: (statistics.fmean(v), _std(v) or 0.0, len(v)) for i, v in by_iteration.items()}


def _agreement(runs: list[RunId], curves: dict[str, list[EvalEvent]]) -> list[AgreementPair]:
    pairs = []
    for variant in sorted({r.variant for r in runs}):
        frameworks = sorted({r.framework for r in runs if r.variant == variant})
        stats = {f: _curve_stats([r for r in runs if r.framework == f and r.variant == variant], curves)
                 for f in frameworks}
        for f, g in itertools.combinations(frameworks, 2):
            common = sorted(set(stats[f]) & set(stats[g]))
            if not common:
                continue
            outside, worst = 0, (-1.0, None)
            for i in common:
                (mf, sf, _), (mg, sg, _) = stats[f][i], stats[g][i]
                diff = abs(mf - mg)
                outside += diff > K * max(sf, sg, FLOOR)
                worst = max(worst, (diff, i), key=lambda w: w[0])
            pairs.append(AgreementPair(variant=variant, frameworks=(f, g), points=len(common), outside=outside,
                                       max_abs_diff=worst[0], worst_iteration=worst[1], agree=outside == 0))
    return pairs


def _published(manifest: TrainManifest, configs: dict[Group, ConfigSummary], runs: list[RunId],
               records: dict[str, RunRecords]) -> list[PublishedPoint]:
    out = []
    for variant, epoch, accuracy in manifest.preset.published:
        for framework in sorted({f for f, v, *_ in configs if v == variant}):
            measured = [a for run in runs if run.framework == framework and run.variant == variant
                        for r in records[run.name].events if isinstance(r, EpochEvent) and r.epoch == epoch
                        and (a := _accuracy(r)) is not None]
            out.append(PublishedPoint(framework=framework, variant=variant, epoch=epoch, published=accuracy,
                                      measured_mean=_mean(measured), n=len(measured)))
    return out


def batch_digests(runs: list[RunId], records: dict[str, RunRecords]) -> BatchDigests:
    """Compare, for each variant, seed (and batch size, and data-parallel mode), the batch digests of every
    framework's run at every iteration."""
    digests = {r.name: {e.iteration: e.batch_digest for e in records[r.name].events
                        if isinstance(e, IterEvent) and e.batch_digest is not None} for r in runs}
    trained = {r.name for r in runs if any(isinstance(e, IterEvent) for e in records[r.name].events)}
    checks = []
    keys = sorted({(r.variant, r.seed, r.batch_size, r.replicas, r.bn_sync) for r in runs},
                  key=lambda k: (k[0], k[1], _batch_key(k[2]), _mode_key(k[4])))
    for variant, seed, batch, replicas, bn_sync in keys:
        group = sorted((r for r in runs if (r.variant, r.seed, r.batch_size, r.replicas, r.bn_sync)
                        == (variant, seed, batch, replicas, bn_sync) and digests[r.name]), key=lambda r: r.framework)
        if len(group) < 2:
            continue
        iterations = sorted(i for i in set().union(*(digests[r.name] for r in group))
                            if sum(i in digests[r.name] for r in group) >= 2)
        mismatched = [i for i in iterations if len({digests[r.name][i] for r in group if i in digests[r.name]}) > 1]
        first = mismatched[0] if mismatched else None
        checks.append(DigestCheck(variant=variant, seed=seed, batch_size=batch, replicas=replicas, bn_sync=bn_sync,
                                  frameworks=tuple(r.framework for r in group),
                                  iterations=len(iterations), mismatched=len(mismatched), first_mismatch=first,
                                  digests={} if first is None else {r.framework: digests[r.name][first]
                                                                    for r in group if first in digests[r.name]}))
    return BatchDigests(recorded=any(digests.values()), checks=tuple(checks),
                        without_digests=tuple(r.name for r in runs if r.name in trained and not digests[r.name]))


def _mode_key(bn_sync: str | None) -> int:
    """Sort key of a BatchNorm mode: BN_SYNC's order (local, sync, single); None is one device, "single"."""
    return BN_SYNC.index(bn_sync or SINGLE)


def _diff(a: float | None, b: float | None) -> float | None:
    return a - b if a is not None and b is not None else None


def _minus_single(modes: dict[str, ModeResult], mode: str, *, best: bool) -> float | None:
    """`mode`'s mean final (or best) test accuracy minus the single device's (None when either has none)."""
    m, single = modes.get(mode), modes.get(SINGLE)
    if m is None or single is None:
        return None
    if best:
        return _diff(m.best_test_accuracy_mean, single.best_test_accuracy_mean)
    return _diff(m.final_test_accuracy.mean, single.final_test_accuracy.mean)


def data_parallel_comparisons(configs: list[ConfigSummary], global_batch: int) -> list[DataParallelComparison]:
    """Per framework x variant that trained on replicas: each mode's accuracy (ModeResult, single-device included)
    and local - single, sync - single of the mean final and mean best test accuracy; [] without data-parallel
    configurations. Batch-size sweeps' configurations take no part."""
    out = []
    plain = [c for c in configs if c.batch_size is None]
    for framework, variant in dict.fromkeys((c.framework, c.variant) for c in plain if c.replicas is not None):
        mine = sorted((c for c in plain if (c.framework, c.variant) == (framework, variant)),
                      key=lambda c: _mode_key(c.bn_sync))
        modes = {c.bn_sync or SINGLE: ModeResult(
            bn_sync=c.bn_sync or SINGLE, replicas=c.replicas or 1, seeds=c.seeds, seeds_done=c.seeds_done,
            final_test_accuracy=c.final_test_accuracy, best_test_accuracy_mean=c.best_test_accuracy_mean)
            for c in mine}
        out.append(DataParallelComparison(
            framework=framework, variant=variant, replicas=max(c.replicas or 1 for c in mine),
            global_batch=global_batch, modes=tuple(modes.values()),
            final_local_minus_single=_minus_single(modes, "local", best=False),
            final_sync_minus_single=_minus_single(modes, "sync", best=False),
            best_local_minus_single=_minus_single(modes, "local", best=True),
            best_sync_minus_single=_minus_single(modes, "sync", best=True)))
    return out


def compute_conclusions(run_dir: Path, *, manifest: TrainManifest | None = None,
                        records: dict[str, RunRecords] | None = None) -> Conclusions:
    """The conclusions of `run_dir` (complete or not) from its manifest and JSONL files (or those given, read
    already). Raises FormatError when a file is of a newer format than this bnparity reads."""
    run_dir = Path(run_dir)
    manifest = manifest or load_manifest(run_dir)
    targets = [float(t) for t in manifest.preset.targets]
    runs = [RunId.parse(name) for name in manifest.runs]
    if records is None:
        records = {r.name: read_run(r.records_path(run_dir)) for r in runs}
    curves = {r.name: [e for e in records[r.name].events if isinstance(e, EvalEvent)] for r in runs}
    summaries = {r.name: run_summary(r, records[r.name], epochs_planned=manifest.preset.epochs) for r in runs}
    trained = [r for r in runs if summaries[r.name].status not in ("skipped", "not started")]
    groups: dict[Group, list[RunId]] = {}
    for r in trained:
        groups.setdefault(_group(r), []).append(r)
    configs = {key: _config(*key, group, summaries, curves, targets) for key, group in groups.items()}

    def compare(batch: int | None, replicas: int | None = None,
                bn_sync: str | None = None) -> tuple[list[Speedup], list[AgreementPair]]:
        """BN speed-ups and agreement among the runs of one batch size (None: the runs of no sweep) and one
        data-parallel mode (None, None: on one device)."""
        mine = [r for r in trained if (r.batch_size, r.replicas, r.bn_sync) == (batch, replicas, bn_sync)]
        by_variant = {(f, v): c for (f, v, *rest), c in configs.items() if tuple(rest) == (batch, replicas, bn_sync)}
        return _speedups(by_variant, curves, mine, targets), _agreement(mine, curves)

    plain = compare(None)
    sweep = [BatchComparison(b, *map(tuple, compare(b))) for b in sorted({r.batch_size for r in trained} - {None})
             if any(r.batch_size == b and r.replicas is None for r in trained)]
    modes = sorted({(r.replicas, r.bn_sync) for r in trained if r.replicas is not None and r.batch_size is None},
                   key=lambda m: (m[0], _mode_key(m[1])))
    by_mode = [ReplicaModeComparison(n, m, *map(tuple, compare(None, n, m))) for n, m in modes]
    return Conclusions(
        run_dir=str(run_dir), preset=manifest.preset.name, epochs=manifest.preset.epochs, targets=tuple(targets),
        complete=all(s.status in ("done", "skipped") for s in summaries.values()),
        runs=summaries, configs=tuple(configs.values()),
        bn_speedup=tuple(plain[0]), agreement=Agreement(criterion=CRITERION, k=K, floor=FLOOR, pairs=tuple(plain[1])),
        by_batch_size=tuple(sweep), by_bn_sync=tuple(by_mode),
        data_parallel=tuple(data_parallel_comparisons(list(configs.values()), manifest.preset.batch_size)),
        published=tuple(_published(manifest, configs, [r for r in trained if r.replicas is None], records)),
        incomplete=tuple(IncompleteRun(run=name, status=s.status, epochs_completed=s.epochs_completed,
                                       iterations=s.iterations, message=s.message)
                         for name, s in summaries.items() if s.status not in ("done", "skipped")),
        skipped={name: s.message for name, s in summaries.items() if s.status == "skipped"},
        batch_digests=batch_digests(trained, records),
        unreadable_lines={r.records_path(run_dir).name: len(records[r.name].unreadable) for r in runs
                          if records[r.name].unreadable})


def write_conclusions(run_dir: Path) -> Conclusions:
    """Compute the conclusions of `run_dir` and write them to its conclusions.json; returns them."""
    conclusions = compute_conclusions(run_dir)
    write_json(Path(run_dir) / CONCLUSIONS, to_dict(conclusions))
    return conclusions


def _fmt(value: float | None, spec: str = ".4f") -> str:
    return "-" if value is None else format(value, spec)


def _at(batch_size: int | None, replicas: int | None = None, bn_sync: str | None = None) -> str:
    """' at batch 8' in a sweep, ' on 4 replicas (sync BN)' for a data-parallel mode, '' otherwise."""
    where = "" if batch_size is None else f" at batch {batch_size}"
    return where + ("" if replicas is None else f" on {replicas} replicas ({bn_sync} BN)")


def _signed(value: float | None) -> str:
    return "-" if value is None else f"{value:+.4f}"


def format_conclusions(c: Conclusions) -> str:
    """A compact text summary of `c` for the terminal."""
    targets = [f"{t:g}" for t in c.targets]
    names = [f"{cfg.framework}-{cfg.variant}" + ("" if cfg.batch_size is None else f"-b{cfg.batch_size}")
             + ("" if cfg.replicas is None else f"-r{cfg.replicas}{cfg.bn_sync}") for cfg in c.configs]
    width = max([15, *map(len, names)])
    lines = [f"{'config':<{width}} {'seeds':>5} {'final test acc':>18} {'best':>7} {'img/s':>7}  "
             + "  ".join(f"ep→{t:<5}" for t in targets)]
    for cfg, name in zip(c.configs, names, strict=True):
        final = cfg.final_test_accuracy
        acc = _fmt(final.mean) + (f" ± {final.std:.4f}" if final.std is not None else "")
        reach = [_fmt(cfg.targets[t].epochs_mean, ".2f") for t in targets]
        lines.append(f"{name:<{width}} {cfg.seeds_done:>2}/{len(cfg.seeds):<2} "
                     f"{acc:>18} {_fmt(cfg.best_test_accuracy):>7} {_fmt(cfg.images_per_s, '.0f'):>7}  "
                     + "  ".join(f"{r:<8}" for r in reach))
    comparisons = ([("", c.bn_speedup, c.agreement.pairs)]
                   + [(_at(b.batch_size), b.bn_speedup, b.agreement) for b in c.by_batch_size]
                   + [(_at(None, m.replicas, m.bn_sync), m.bn_speedup, m.agreement) for m in c.by_bn_sync])
    for where, speedups, pairs in comparisons:
        for s in speedups:
            if s.speedup is not None or s.at_least is not None:
                value = f"{s.speedup:.2f}x" if s.speedup is not None else f">= {s.at_least:.2f}x"
                lines.append(f"BN speed-up {s.framework}{where} to {s.target:g}: {value} fewer iterations")
        for p in pairs:
            verdict = "agree" if p.agree else f"differ at {p.outside} of {p.points} points"
            lines.append(f"{p.variant}{where}: {' vs '.join(p.frameworks)} {verdict} "
                         f"(max |Δ acc| {p.max_abs_diff:.4f} at iteration {p.worst_iteration})")
    for d in c.data_parallel:
        if all(m.final_test_accuracy.mean is None for m in d.modes):
            continue  # nothing finished: the runs' own lines below say why
        accs = ", ".join(f"{m.bn_sync} {_fmt(m.final_test_accuracy.mean)}" for m in d.modes)
        lines.append(f"data-parallel {d.framework}-{d.variant} (R={d.replicas}, global batch {d.global_batch}): "
                     f"final test acc {accs}; local - single {_signed(d.final_local_minus_single)}, "
                     f"sync - single {_signed(d.final_sync_minus_single)}")
    for check in c.batch_digests.checks:
        if not check.identical:
            lines.append(f"DIFFERENT BATCHES: {check.variant}{_at(check.batch_size, check.replicas, check.bn_sync)} "
                         f"seed {check.seed}: "
                         f"{', '.join(check.frameworks)} differ "
                         f"at {check.mismatched} of {check.iterations} iterations (first: {check.first_mismatch})")
    for p in c.published:
        lines.append(f"{p.framework}-{p.variant} after epoch {p.epoch}: test accuracy "
                     f"{_fmt(p.measured_mean)} (published: {p.published:.3f})")
    for item in c.incomplete:
        lines.append(f"{item.status}: {item.run} after {item.epochs_completed} epochs"
                     + (f": {item.message}" if item.message else ""))
    for name, n in c.unreadable_lines.items():
        lines.append(f"{n} unreadable lines in {name}")
    return "\n".join(lines)
