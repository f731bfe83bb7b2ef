"""summary.json: every conclusion of a run directory, computed from its records, with one-paragraph verdicts."""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
from dataclasses import dataclass
from typing import Any

from bnparity.frameworks.conventions import Convention
from bnparity.frameworks.registry import baseline, display_name, sort_key
from bnparity.frameworks.training import BN_SYNC
from bnparity.reference.normalization import normalization, normalizations
from bnparity.suites.schema import (
    AccuracyStat,
    Agreement,
    BatchDigests,
    ConfigSummary,
    DataParallelComparison,
    IncompleteRun,
    ModelComparison,
    ModelParityDoc,
    ParityDoc,
    ReplicaModeComparison,
    Speedup,
)

from .layer_summary import (
    MEASURED_DEFAULTS,
    hard_inputs,
    hard_verdict,
    layer_parity,
    layer_verdict,
    measured_defaults,
)
from .load import RunData, unreadable_note
from .replica_summary import dp_summary, dp_verdict, sync_summary, sync_verdict
from .seed_sections import seed_comparison
from .verdict import build_verdict

FORMAT = "bnparity-report/1"
# registry fields a porter must change, in the order the conventions table shows them
CONVENTION_FIELDS = ("momentum", "momentum_weighs", "new_weight", "eps", "running_var", "channel_axis",
                     "variance_algorithm")


def conventions(data: RunData) -> dict[str, Any]:
    """BatchNorm's registry rows (as recorded) with the measured defaults-mode differences from the baseline's
    convention."""
    measured = measured_defaults(data.parity.of_normalization(Convention.normalization)) if data.parity else {}
    rows = []
    for row in data.conventions:
        entry: dict[str, Any] = {k: getattr(row, k) for k in CONVENTION_FIELDS}
        entry["framework"], entry["measured"] = row.framework, measured.get(row.framework)
        rows.append(entry)
    return {"source": data.conventions_source, "baseline": baseline().name, "frameworks": rows}


def conventions_verdict(s: dict[str, Any]) -> str:
    """Which defaults differ from the baseline's, and by how much they change the running statistics (measured)."""
    rows = {r["framework"]: r for r in s["frameworks"]}
    name_b = s["baseline"]
    base = rows.get(name_b)
    if base is None:
        return ""
    shown = display_name(name_b)
    parts = []
    for name, row in rows.items():
        if name == name_b:
            continue
        diffs = []
        if row["momentum_weighs"] != base["momentum_weighs"] or row["new_weight"] != base["new_weight"]:
            same = "the same as" if row["new_weight"] == base["new_weight"] else "unlike"
            diffs.append(f"momentum {row['momentum']:g} weighs the {row['momentum_weighs']} value, i.e. {shown}'s "
                         f"momentum {row['new_weight']:g} ({same} {shown}'s default {base['new_weight']:g})")
        diffs += [f"{label} {row[k]} ({name_b} {base[k]})" for k, label in
                  (("running_var", "running variance"), ("channel_axis", "channel axis"),
                   ("variance_algorithm", "variance algorithm"), ("eps", "eps")) if row[k] != base[k]]
        text = f"{name}: " + (", ".join(diffs) if diffs else f"same as {name_b}")
        m = row.get("measured")
        if m:
            own = m["own_convention"]
            text += f"; its defaults reproduce its registry row in {own['passed']}/{own['of']} comparisons"
            moved = [f"{q} by up to {w['scaled_err']:.2g}" for q, w in m["vs_baseline"].items()
                     if w and w["scaled_err"] is not None and (w["worst_ratio"] or 0) > 1]
            if moved:
                text += (f"; left at its defaults it differs from {shown}'s convention in " + ", ".join(moved)
                         + " (max |Δ| / max |ref|, standard cases)")
        parts.append(text)
    return f"Conventions (each framework's defaults vs {shown}'s): " + "; ".join(parts) + "."


@dataclass(frozen=True)
class WorstGated:
    """The gated comparison of a framework × dtype closest to (or furthest past) its tolerance."""

    kind: str
    quantity: str
    against: str
    rel_err: float | None
    worst_ratio: float | None


@dataclass(frozen=True)
class ModelGroup:
    """One framework × dtype of model parity: its gated comparisons, failures and worst case; its ungated ones."""

    framework: str
    dtype: str
    gated: int
    failed: int
    worst_gated: WorstGated | None
    ungated: int
    ungated_outside: int
    ungated_worst_rel_err: float | None


@dataclass(frozen=True)
class ModelFinding:
    """One kind × dtype of ungated comparisons (float32 gradients, the raw running variance)."""

    kind: str
    dtype: str
    frameworks: tuple[str, ...]
    outside: int
    of: int
    worst_rel_err: float | None
    worst_quantity: str
    worst_framework: str


@dataclass(frozen=True)
class ModelParitySummary:
    """summary.json's "model_parity": what model_parity.json shows. anchor: the framework compared against."""

    preset: str
    anchor: str | None
    frameworks: tuple[str, ...]
    gated: int
    failures: int
    all_pass: bool
    groups: tuple[ModelGroup, ...]
    ungated_findings: tuple[ModelFinding, ...]
    skipped: dict[str, str]
    errors: dict[str, str]


def _worst_ratio_key(r: ModelComparison) -> tuple[bool, float]:
    return r.worst_ratio is None, r.worst_ratio or 0.0


def _rel_key(r: ModelComparison) -> float:
    return math.inf if r.rel_err is None else r.rel_err


def model_parity(doc: ModelParityDoc) -> ModelParitySummary:
    """Gated comparisons per framework × dtype, their worst relative error, and the ungated findings."""
    ok = doc.comparisons
    groups = []
    for key in sorted({(r.framework, r.dtype) for r in ok}, key=lambda k: (k[1], sort_key(k[0]))):
        mine = [r for r in ok if (r.framework, r.dtype) == key]
        gated = [r for r in mine if r.gate]
        ungated = [r for r in mine if not r.gate]
        worst = max(gated, key=_worst_ratio_key, default=None)
        groups.append(ModelGroup(
            framework=key[0], dtype=key[1], gated=len(gated), failed=sum(not r.passed for r in gated),
            worst_gated=None if worst is None else WorstGated(kind=worst.kind, quantity=worst.quantity,
                                                              against=worst.against, rel_err=worst.rel_err,
                                                              worst_ratio=worst.worst_ratio),
            ungated=len(ungated), ungated_outside=sum(not r.passed for r in ungated),
            ungated_worst_rel_err=max((_rel_key(r) for r in ungated), default=None)))
    gated_all = [r for r in doc.records if r.gate]
    failures = [r for r in gated_all if r.passed is False]
    findings = []
    for kind, dtype in sorted({(r.kind, r.dtype) for r in ok if not r.gate}):
        mine = [r for r in ok if not r.gate and (r.kind, r.dtype) == (kind, dtype)]
        worst = max(mine, key=_rel_key)
        findings.append(ModelFinding(kind=kind, dtype=dtype, frameworks=_ordered({r.framework for r in mine}),
                                     outside=sum(not r.passed for r in mine), of=len(mine), worst_rel_err=worst.rel_err,
                                     worst_quantity=worst.quantity, worst_framework=worst.framework))
    return ModelParitySummary(
        preset=doc.meta.preset, anchor=doc.meta.anchor, frameworks=_ordered({g.framework for g in groups}),
        gated=len(gated_all), failures=len(failures), all_pass=bool(gated_all) and not failures,
        groups=tuple(groups), ungated_findings=tuple(findings),
        skipped={r.framework: r.reason for r in doc.not_run if r.status == "skipped"},
        errors={r.framework: r.reason for r in doc.not_run if r.status == "error"})


def _ordered(frameworks: set[str]) -> tuple[str, ...]:
    """The registry's order; a name no framework folder declares (an old record's) last."""
    return tuple(sorted(frameworks, key=sort_key))


def relative(r: ModelComparison) -> float | None:
    """max_abs_err / scale, the relative error the model-parity tolerance is stated in (recorded: rel_err)."""
    return r.rel_err


def _num(value: float | None, spec: str) -> str:
    return "inf/nan" if value is None or not math.isfinite(value) else format(value, spec)


def model_verdict(s: ModelParitySummary) -> str:
    who = ", ".join(display_name(f) for f in s.frameworks) or "no framework"
    text = (f"Model parity (AlexNet preset {s.preset}): {who} — {s.gated - s.failures}/{s.gated} gated "
            "comparisons pass" + ("." if s.all_pass else f"; {s.failures} FAIL."))
    outside = [f for f in s.ungated_findings if f.outside]
    if outside:
        text += " Not gated, outside the tolerance: " + "; ".join(
            f"{f.kind} {f.dtype} ({', '.join(display_name(x) for x in f.frameworks)}) {f.outside}/{f.of}, worst "
            f"relative error {_num(f.worst_rel_err, '.2g')} ({f.worst_quantity})" for f in outside) + "."
    for fw, reason in {**s.skipped, **s.errors}.items():
        text += f" {display_name(fw)} not compared: {reason}."
    return text


@dataclass(frozen=True)
class TargetSummary:
    """How many seeds reached a target accuracy, and when (means over those that did)."""

    reached: int
    of: int
    iterations_mean: float | None
    epochs_mean: float | None


@dataclass(frozen=True)
class ConfigRow:
    """One framework × variant as the report shows it (conclusions' ConfigSummary without the per-seed details).
    final_test_accuracy: the finished seeds' final evaluations; best_test_accuracy: the highest evaluation."""

    framework: str
    variant: str
    seeds: tuple[int, ...]
    seeds_done: int
    final_test_accuracy: AccuracyStat
    best_test_accuracy: float | None
    images_per_s: float | None
    time_to_target: dict[str, TargetSummary]
    batch_size: int | None = None  # a batch-size sweep's (None: the preset's)


@dataclass(frozen=True)
class ReplicaConfigRow(ConfigRow):
    """A data-parallel configuration: a ConfigRow of runs on `replicas` replicas with BatchNorm mode `bn_sync`,
    "local" (per-replica statistics) or "sync" (synchronized)."""

    _: dataclasses.KW_ONLY
    replicas: int
    bn_sync: str


@dataclass(frozen=True)
class TrainingSummary:
    """summary.json's "training": the conclusions of the training run directory (suites/convergence). configs:
    the configurations on one device (a data-parallel preset's "single" mode among them); replica_configs: a
    data-parallel preset's configurations on replicas; by_bn_sync and data_parallel: the conclusions' (empty
    without data-parallel runs)."""

    preset: str
    epochs: int | None
    targets: tuple[float, ...]
    complete: bool
    configs: tuple[ConfigRow, ...]
    bn_speedup: tuple[Speedup, ...]
    agreement: Agreement
    incomplete: tuple[IncompleteRun, ...]
    skipped: dict[str, str]
    batch_digests: BatchDigests
    unreadable_lines: dict[str, int]
    replica_configs: tuple[ReplicaConfigRow, ...] = ()
    by_bn_sync: tuple[ReplicaModeComparison, ...] = ()
    data_parallel: tuple[DataParallelComparison, ...] = ()


def training(data: RunData) -> TrainingSummary:
    """The convergence suite's conclusions (bnparity.suites.convergence.conclusions), as summary.json keeps them."""
    c = data.conclusions
    assert c is not None, "training() needs the run's conclusions"
    configs = sorted(c.configs, key=lambda cfg: (sort_key(cfg.framework), cfg.batch_size or 0, cfg.variant != "bn",
                                                 cfg.variant, BN_SYNC.index(cfg.bn_sync or "single")))

    def fields(cfg: ConfigSummary) -> dict[str, Any]:
        return dict(framework=cfg.framework, variant=cfg.variant, seeds=cfg.seeds, seeds_done=cfg.seeds_done,
                    batch_size=cfg.batch_size,
                    final_test_accuracy=cfg.final_test_accuracy, best_test_accuracy=cfg.best_test_accuracy,
                    images_per_s=cfg.images_per_s,
                    time_to_target={t: TargetSummary(reached=x.reached, of=x.of, iterations_mean=x.iterations_mean,
                                                     epochs_mean=x.epochs_mean) for t, x in cfg.targets.items()})

    rows = tuple(ConfigRow(**fields(cfg)) for cfg in configs if cfg.replicas is None)
    replica_rows = tuple(ReplicaConfigRow(**fields(cfg), replicas=cfg.replicas, bn_sync=cfg.bn_sync)
                         for cfg in configs if cfg.replicas is not None and cfg.bn_sync is not None)
    return TrainingSummary(preset=c.preset, epochs=c.epochs, targets=c.targets, complete=c.complete, configs=rows,
                           bn_speedup=c.bn_speedup, agreement=c.agreement, incomplete=c.incomplete, skipped=c.skipped,
                           batch_digests=c.batch_digests, unreadable_lines=c.unreadable_lines,
                           replica_configs=replica_rows, by_bn_sync=c.by_bn_sync, data_parallel=c.data_parallel)


def _pct(t: float) -> str:
    return f"{100 * t:g}%"


def digest_verdict(d: BatchDigests) -> str | None:
    """Whether the frameworks trained on identical batches (None when no run recorded digests)."""
    if not d.recorded:
        return None
    differ = [c for c in d.checks if not c.identical]
    if differ:
        return "DIFFERENT BATCHES: " + "; ".join(
            f"{c.variant} seed {c.seed}: {', '.join(display_name(f) for f in c.frameworks)} trained on different "
            f"batches at {c.mismatched} of {c.iterations} iterations (first at iteration {c.first_mismatch})"
            for c in differ) + " — their curves are not comparable."
    compared = sum(c.iterations for c in d.checks)
    if not compared:
        return None
    return (f"Identical batches: every framework's runs of each variant and seed trained on the same batches at all "
            f"{compared} compared iterations (batch digests).")


MODE_NAME = {"local": "per-replica BN", "sync": "synchronized BN", "single": "one device"}
VARIANT_NAME = {"bn": "with BN", "gn": "with GroupNorm", "nobn": "without BN"}


def _signed(value: float | None) -> str:
    return "–" if value is None else f"{value:+.3f}"


def data_parallel_verdict(s: TrainingSummary) -> str | None:
    """What data parallelism did to BN: per framework and variant, each mode's final test accuracy and the
    differences local − single and sync − single; None without data-parallel runs."""
    if not s.data_parallel:
        return None
    first = s.data_parallel[0]
    parts = []
    for d in sorted(s.data_parallel, key=lambda d: (sort_key(d.framework), d.variant != "bn", d.variant)):
        accs = " / ".join(f"{'–' if m.final_test_accuracy.mean is None else f'{m.final_test_accuracy.mean:.3f}'} "
                          f"{MODE_NAME.get(m.bn_sync, m.bn_sync)}" for m in d.modes)
        parts.append(f"{display_name(d.framework)} {VARIANT_NAME.get(d.variant, d.variant)} {accs} (local − single "
                     f"{_signed(d.final_local_minus_single)}, sync − single {_signed(d.final_sync_minus_single)})")
    shard = first.global_batch // first.replicas
    return (f"Data parallel: final test accuracy on {first.replicas} replicas of {shard} images (global batch "
            f"{first.global_batch}) with per-replica or synchronized BN statistics, and on one device: "
            + "; ".join(parts) + ".")


def training_verdicts(s: TrainingSummary) -> list[str]:
    """What BN buys per framework (time to accuracy, final accuracy), whether the frameworks trained on identical
    batches and whether their curves agree, what data parallelism did (a data-parallel preset), and which record
    lines could not be read."""
    out = []
    by_fw: dict[str, list[Speedup]] = {}
    for e in s.bn_speedup:
        by_fw.setdefault(e.framework, []).append(e)
    for fw in _ordered(set(by_fw)):
        said = []
        for e in by_fw[fw]:
            if e.speedup is not None:
                said.append(f"{_pct(e.target)} test accuracy in {e.speedup:.2f}× fewer iterations "
                            f"({e.iterations_bn:.0f} vs {e.iterations_nobn:.0f})")
            elif e.at_least is not None:
                said.append(f"{_pct(e.target)} in at least {e.at_least:.2f}× fewer iterations (without BN "
                            "never reached it)")
        if said:
            out.append(f"BN ({display_name(fw)}): reaches " + "; ".join(said) + ".")
        else:
            out.append(f"BN ({display_name(fw)}): no target accuracy was reached by both variants in every seed.")
    finals = {(c.framework, c.variant, c.batch_size): c.final_test_accuracy for c in s.configs}
    sweep = sorted({c.batch_size for c in s.configs if c.batch_size is not None})
    lines = []
    for fw in dict.fromkeys(c.framework for c in s.configs):
        if sweep:  # a batch-size sweep: every variant at every batch size, never one batch size's figures alone
            variants = list(dict.fromkeys(c.variant for c in s.configs if c.framework == fw))
            per_batch = []
            for b in sweep:
                accs = [finals.get((fw, v, b)) for v in variants]
                per_batch.append(f"batch {b}: " + " / ".join("–" if a is None or a.mean is None else f"{a.mean:.3f}"
                                                           for a in accs))
            lines.append(f"{display_name(fw)} ({' / '.join(variants)}) " + ", ".join(per_batch))
            continue
        bn, nobn = finals.get((fw, "bn", None)), finals.get((fw, "nobn", None))
        if bn and nobn and bn.mean is not None and nobn.mean is not None:
            lines.append(f"{display_name(fw)} {bn.mean:.3f} with BN vs {nobn.mean:.3f} without")
    if lines:
        n = max(c.final_test_accuracy.n for c in s.configs)
        out.append(f"Final test accuracy after {s.epochs} epochs (mean over up to {n} seed(s)): "
                   + "; ".join(lines) + ".")
    dp = data_parallel_verdict(s)
    if dp:
        out.append(dp)
    digests = digest_verdict(s.batch_digests)
    if digests:
        out.append(digests)
    single = f" ({MODE_NAME['single']})" if s.data_parallel else ""  # in a data-parallel run, name every mode
    pairs = [(single, p) for p in s.agreement.pairs] + [
        (f" ({MODE_NAME[m.bn_sync]}, {m.replicas} replicas)", p) for m in s.by_bn_sync for p in m.agreement]
    if pairs:
        out.append("Training curves across frameworks (test accuracy): " + "; ".join(
            f"{p.variant}{where} {' vs '.join(display_name(f) for f in p.frameworks)} "
            + ("agree" if p.agree else f"differ at {p.outside} of {p.points} points")
            + f" (max |Δ| {p.max_abs_diff:.3f})" for where, p in pairs) + ".")
    if s.unreadable_lines:
        out.append("Unreadable training records: " + unreadable_note(s.unreadable_lines)
                   + " (each costs that line only).")
    return out


def normalization_summaries(doc: ParityDoc) -> dict[str, dict[str, Any]]:
    """Per normalization of the run: its gate, hard-input findings (matched and defaults) and measured defaults."""
    out = {}
    for name in doc.normalizations():
        part = doc.of_normalization(name)
        out[name] = {"title": normalization(name).title if name in {p.name for p in normalizations()} else name,
                     "layer_parity": layer_parity(part), "hard_inputs": hard_inputs(part),
                     "hard_inputs_defaults": hard_inputs(part, mode="defaults"),
                     "measured": measured_defaults(part, MEASURED_DEFAULTS)}
    return out


def build_summary(data: RunData) -> dict[str, Any]:
    """summary.json of `data`: verdicts, counts, worst errors, time to accuracy, speed-ups, incomplete parts."""
    summary: dict[str, Any] = {
        "format": FORMAT, "run_dir": str(data.run_dir),
        "generated": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "complete": not data.incomplete,
        "incomplete": [{"part": p.part, "status": p.status, "detail": p.detail} for p in data.incomplete],
        "verdicts": [], "layer_parity": None, "hard_inputs": None, "hard_inputs_defaults": None,
        "normalizations": {}, "conventions": conventions(data),
        "model_parity": None, "sync_parity": None, "dp_parity": None, "training": None}
    verdicts = summary["verdicts"]
    if data.parity is not None:
        summary["layer_parity"] = layer_parity(data.parity)
        summary["hard_inputs"] = hard_inputs(data.parity)
        summary["hard_inputs_defaults"] = hard_inputs(data.parity, mode="defaults")
        summary["normalizations"] = normalization_summaries(data.parity)
        if len(summary["normalizations"]) > 1:  # one verdict per normalization: each its own cases and skips
            verdicts.extend(layer_verdict(n["layer_parity"], n["title"]) for n in summary["normalizations"].values())
        else:
            verdicts.append(layer_verdict(summary["layer_parity"]))
    if summary["conventions"]["frameworks"]:
        text = conventions_verdict(summary["conventions"])
        if text:
            verdicts.append(text)
    for key in ("hard_inputs", "hard_inputs_defaults"):
        if summary[key] and summary[key]["findings"]:
            verdicts.append(hard_verdict(summary[key]))
    if data.model_parity is not None:
        summary["model_parity"] = model_parity(data.model_parity)
        verdicts.append(model_verdict(summary["model_parity"]))
    if data.sync_parity is not None:
        summary["sync_parity"] = sync_summary(data.sync_parity)
        verdicts.append(sync_verdict(summary["sync_parity"]))
    if data.dp_parity is not None:
        summary["dp_parity"] = dp_summary(data.dp_parity)
        verdicts.append(dp_verdict(summary["dp_parity"]))
    if data.conclusions is not None:
        summary["training"] = training(data)
        verdicts.extend(training_verdicts(summary["training"]))
    summary["verdict"] = build_verdict(data, summary)  # (from the parts computed above)
    summary["seed_comparison"] = seed_comparison(data)
    if data.incomplete:
        verdicts.insert(0, "INCOMPLETE: " + "; ".join(f"{p.part} {p.status} ({p.detail})" for p in data.incomplete))
    return summary
