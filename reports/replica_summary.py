"""Summaries of the cross-replica records for summary.json and the verdicts: sync_parity.json (BatchNorm across
data-parallel replicas) and dp_parity.json (one data-parallel SGD step against one device), read through their
record classes."""

from __future__ import annotations

from typing import Any

from bnparity.frameworks.registry import display_name, sort_key
from bnparity.suites.schema import DP_KINDS, DPParityDoc, SyncComparison, SyncParityDoc, SyncSkip

# A ReplicaConvention's shard_weighting and saved_running, in words (the report and the porting guide)
WEIGHTING = {"count": "weighted by each shard's count: the global batch's statistics",
             "equal": "averaged with equal weights 1/R: not the global batch's when the shards differ"}
SAVED = {"replica0": "replica 0's own", "mean": "the mean of the replicas'"}
__all__ = ["DP_KINDS", "SAVED", "WEIGHTING", "dp_summary", "dp_verdict", "sync_summary", "sync_verdict"]


def _implementation(r: SyncComparison | SyncSkip) -> str:
    variant = "" if r.variant in ("default", "-") else f" [{r.variant}]"
    return f"{display_name(r.framework)} {r.impl}{variant}"


def sync_summary(doc: SyncParityDoc) -> dict[str, Any]:
    """summary.json's "sync_parity": gated counts, the worst comparison per implementation and R, the skips and
    errors, and the unequal-shard findings (the largest error against the global batch of an equal-weight layer)."""
    comps = doc.comparisons
    gated = [r for r in comps if r.gate]
    errors = [r for r in doc.not_run if r.status == "error"]
    rows: dict[tuple[str, int], dict[str, Any]] = {}
    for r in gated:
        row = rows.setdefault((_implementation(r), r.replicas), {
            "implementation": _implementation(r), "framework": r.framework, "replicas": r.replicas, "gated": 0,
            "failures": 0, "worst_ratio": 0.0, "worst": None})
        row["gated"] += 1
        row["failures"] += not r.passed
        if r.ratio >= row["worst_ratio"]:
            row["worst_ratio"] = r.ratio
            row["worst"] = {"case": r.case, "quantity": r.quantity, "max_abs_err": r.max_abs_err,
                            "max_rel_err": r.max_rel_err}
    findings: dict[str, dict[str, Any]] = {}
    for r in comps:
        if not r.gate and r.reference == "global-batch" and not r.quantity.startswith("saved"):
            f = findings.setdefault(_implementation(r), {"framework": r.framework, "by_quantity": {}})
            err = r.scaled_error
            value = float("inf") if err is None else err
            f["by_quantity"][r.quantity] = max(f["by_quantity"].get(r.quantity, 0.0), value)
    return {
        "gated": len(gated), "failures": sum(not r.passed for r in gated) + len(errors),
        "rows": sorted(rows.values(), key=lambda x: (sort_key(x["framework"]), x["implementation"], x["replicas"])),
        "skipped": sorted({(_implementation(r), r.reason) for r in doc.not_run if r.status == "skipped"}),
        "errors": [{"implementation": _implementation(r), "case": r.case, "reason": r.reason} for r in errors],
        "findings": findings, "wall_time_s": doc.meta.wall_time_s, "complete": doc.meta.complete,
    }


def dp_summary(doc: DPParityDoc) -> dict[str, Any]:
    """summary.json's "dp_parity": per framework × dtype × R × BN mode, the worst relative error per kind."""
    groups: dict[tuple[str, str, int, str], dict[str, Any]] = {}
    for r in doc.comparisons:
        g = groups.setdefault((r.framework, r.dtype, r.replicas, r.bn_sync), {
            "framework": r.framework, "dtype": r.dtype, "replicas": r.replicas, "bn_sync": r.bn_sync,
            "gate": r.gate, "passed": True, "rtol": r.rtol, "worst": {}})
        g["passed"] = g["passed"] and (r.passed or not r.gate)
        rel = float("inf") if r.rel_err is None else r.rel_err
        g["worst"][r.kind] = max(g["worst"].get(r.kind, 0.0), rel)
    gated = [r for r in doc.records if r.gate]
    return {"rows": sorted(groups.values(), key=lambda g: (sort_key(g["framework"]), g["dtype"] != "float64",
                                                           g["replicas"], g["bn_sync"])),
            "gated": len(gated), "failures": sum(r.passed is False for r in gated),
            "not_run": [{"framework": r.framework, "replicas": r.replicas, "bn_sync": r.bn_sync, "dtype": r.dtype,
                         "status": r.status, "reason": r.reason} for r in doc.not_run],
            "preset": doc.meta.preset, "batch": doc.meta.batch, "wall_time_s": doc.meta.wall_time_s}


def sync_verdict(s: dict[str, Any]) -> str:
    head = (f"Cross-replica BatchNorm: {s['gated'] - s['failures']}/{s['gated']} gated comparisons pass"
            if not s["failures"] else f"Cross-replica BatchNorm: {s['failures']} of {s['gated']} gated checks FAIL")
    equal = [display_name(f["framework"]) for f in s["findings"].values()]
    tail = (f"; {', '.join(dict.fromkeys(equal))} weight{'s' if len(set(equal)) == 1 else ''} unequal shards "
            "equally (not the global batch)" if equal else "")
    return head + tail + "."


def dp_verdict(s: dict[str, Any]) -> str:
    skipped = [n for n in s["not_run"] if n["status"] == "skipped"]
    tail = "".join(f"; {display_name(n['framework'])} {n['bn_sync']} {n['dtype']} R={n['replicas']} skipped: "
                   f"{n['reason']}" for n in skipped[:2])
    tail += f" (and {len(skipped) - 2} more)" if len(skipped) > 2 else ""
    if s["failures"]:
        return (f"Data-parallel SGD step: {s['failures']} of {s['gated']} gated comparisons FAIL against one "
                f"device{tail}.")
    return (f"Data-parallel SGD step: with synchronized BN it is one device's step, {s['gated']}/{s['gated']} gated "
            f"comparisons pass (every quantity in float64, the loss and running statistics in float32){tail}.")
