"""The porting guide's cross-replica section: each framework's switch to synchronized BatchNorm, what it does with
unequal shards and what a saved per-replica model holds (the conventions registry's ReplicaConvention rows), and what
the suites measured (sync_parity.json, dp_parity.json, the data-parallel training conclusions) when those records
are given."""

from __future__ import annotations

from collections.abc import Sequence

from bnparity.frameworks.conventions import ReplicaConvention
from bnparity.frameworks.registry import display_name
from bnparity.suites.schema import DataParallelComparison, DPParityDoc, SyncComparison, SyncParityDoc

from .porting_facts import ProofRef
from .replica_summary import SAVED, WEIGHTING


def _proofs(row: ReplicaConvention, key: str) -> str:
    refs = [ProofRef.parse(text, framework=row.framework) for text in row.proofs.get(key, ())]
    return ("(proved by " + ", ".join(r.link() for r in refs) + ")") if refs else ""


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def unequal_findings(doc: SyncParityDoc) -> dict[str, float]:
    """framework -> the largest error of y relative to its scale, against the global batch, of a synchronized layer
    that weights unequal shards equally (the measured size of that convention)."""
    worst: dict[str, float] = {}
    for r in doc.comparisons:
        if isinstance(r, SyncComparison) and not r.gate and r.reference == "global-batch" and r.quantity == "y":
            err = r.scaled_error
            worst[r.framework] = max(worst.get(r.framework, 0.0), float("inf") if err is None else err)
    return worst


def replica_section(rows: Sequence[ReplicaConvention], sync: SyncParityDoc | None = None,
                    dp: DPParityDoc | None = None, training: Sequence[DataParallelComparison] = ()) -> list[str]:
    """The section's Markdown lines (`training`: a data-parallel training directory's conclusions, when given)."""
    lines = ["With data parallelism each replica runs BatchNorm on its own shard of the global batch and, unless "
             "the layer is synchronized, normalizes with that shard's statistics (per-replica BN). Synchronized BN "
             "all-reduces the statistics, so that every replica normalizes with the global batch's.", "",
             "| | synchronized layer | switch | unequal shards | a saved per-replica model holds | on CPU |",
             "|---|---|---|---|---|---|"]
    for row in rows:
        lines.append(f"| {display_name(row.framework)} | `{_cell(row.layer)}` | `{_cell(row.switch)}` | "
                     f"{WEIGHTING[row.shard_weighting]} {_proofs(row, 'shard_weighting')} | "
                     f"{SAVED[row.saved_running]} {_proofs(row, 'saved_running')} | {_cell(row.cpu)} |")
    lines.append("")
    lines += [f"- {display_name(row.framework)}: " + " ".join(f.rstrip(".") + "." for f in row.facts)
              for row in rows if row.facts]
    if sync is not None:
        gated = [r for r in sync.comparisons if r.gate]
        passed = sum(r.passed for r in gated)
        lines += ["", f"Measured by `bnparity sync-parity` ({sync.meta.environment.time}, R = "
                      f"{', '.join(map(str, sync.meta.replicas))}, every framework on its real engine on the CPU): "
                      f"{passed}/{len(gated)} gated comparisons with the float64 reference pass."]
        unequal = unequal_findings(sync)
        if unequal:
            lines.append("- A synchronized layer with unequal shards (a global batch that R does not divide): y is up "
                         "to " + ", ".join(f"{err:.2g} ({display_name(fw)})" for fw, err in unequal.items())
                         + " of its scale away from the global batch's BatchNorm. Padding the last shard does not help "
                         "(a masked mean is still averaged with weight 1/R): drop the remainder so that every shard "
                         "has as many samples, or all-reduce counts and sums yourself (bnparity's scratch layers do).")
    if dp is not None:
        local = [r for r in dp.comparisons if r.bn_sync == "local" and r.dtype == "float64"]
        synced = [r for r in dp.comparisons if r.bn_sync == "sync" and r.dtype == "float64"]
        step = []
        for fw in dict.fromkeys(r.framework for r in dp.comparisons):
            worst_sync = max((r.rel_err or 0.0 for r in synced if r.framework == fw), default=None)
            worst_local = max((r.rel_err or 0.0 for r in local if r.framework == fw and r.kind == "grad"), default=None)
            if worst_sync is not None and worst_local is not None:
                step.append(f"| {display_name(fw)} | {worst_sync:.1g} | {worst_local:.2g} |")
        if step:
            lines += ["", f"One SGD step of the {dp.meta.preset} AlexNet on a global batch of {dp.meta.batch} "
                          "(float64, relative errors):", "",
                      "| framework | synchronized BN on R replicas vs one device | per-replica BN: largest change of a "
                      "layer's gradients |", "|---|---|---|", *step]
    if training:
        lines += ["", "Trained data-parallel (`bnparity train --preset dp-cpu`: the same global batch, initial weights "
                      "and data order in every mode), final test accuracy:", "",
                  "| framework | R × shard | per-replica BN | synchronized BN | one device | per-replica − one device "
                  "| synchronized − one device |", "|---|---|---|---|---|---|---|"]
        for t in training:
            final = {m.bn_sync: m.final_test_accuracy.mean for m in t.modes}
            lines.append(f"| {display_name(t.framework)} | {t.replicas} × {t.global_batch // t.replicas} | "
                         f"{_acc(final.get('local'))} | {_acc(final.get('sync'))} | {_acc(final.get('single'))} | "
                         f"{_diff(t.final_local_minus_single)} | {_diff(t.final_sync_minus_single)} |")
        seeds = sorted({len(m.seeds) for t in training for m in t.modes})
        lines += ["", f"Seeds per mode: {', '.join(map(str, seeds))}. Each replica draws its own dropout masks, so the "
                      "modes differ by dropout noise too: a difference smaller than the spread over seeds is not "
                      "the statistics' doing."]
    return lines


def _acc(value: float | None) -> str:
    return "–" if value is None else f"{value:.4f}"


def _diff(value: float | None) -> str:
    return "–" if value is None else f"{value:+.4f}"
