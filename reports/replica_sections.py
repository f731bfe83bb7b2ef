"""The report's cross-replica section: BatchNorm across data-parallel replicas (sync_parity.json) and one
data-parallel SGD step against one device (dp_parity.json), from their summaries (replica_summary.py); the curves of
data-parallel training are the training sections'."""

from __future__ import annotations

from typing import Any

from bnparity.frameworks.registry import display_name

from .document import Bullets, Cell, Section, Table, fmt, text_cell
from .load import RunData
from .replica_summary import DP_KINDS, SAVED, WEIGHTING


def replica_section(data: RunData, summary: dict[str, Any]) -> Section:
    """Cross-replica BatchNorm: the frameworks' switches and conventions, the layer-level results, the unequal-shard
    findings and the data-parallel step parity."""
    section = Section("cross-replica", "Cross-replica BatchNorm (data-parallel)")
    if data.sync_parity is None and data.dp_parity is None:
        return Section(section.id, section.title, missing=data.parts["sync_parity"].detail)
    if data.sync_parity is not None:
        doc, s = data.sync_parity, summary["sync_parity"]
        section.blocks.append(
            "Data parallelism splits a global batch into shards, one per replica. Each replica's BatchNorm then "
            "normalizes with its own shard's statistics (per-replica BN, what data-parallel training gives unless "
            "told otherwise) or, synchronized, with the statistics of the whole global batch, all-reduced across "
            "the replicas. Every framework ran on its real engine here, on the CPU, and was compared with the "
            "float64 NumPy reference (bnparity.reference.crossreplica). The comparisons are y, dx, Σ dγ and Σ dβ, "
            "each replica's running statistics, and the running statistics the framework's way of saving the "
            "model holds.")
        rows = [[Cell(display_name(c.framework)), Cell(c.layer), Cell(c.switch), Cell(c.engine),
                 Cell(WEIGHTING[c.shard_weighting]), Cell(SAVED[c.saved_running]), Cell(c.cpu)]
                for c in doc.meta.conventions]
        if rows:
            section.blocks.append(Table(["framework", "synchronized layer", "switch", "engine here",
                                         "unequal shards weighted", "a per-replica model saves", "on CPU"], rows,
                                        caption="The frameworks' cross-replica conventions (conventions registry)."))
        body = [[Cell(r["implementation"]), text_cell(r["replicas"]),
                 text_cell(f"{r['gated'] - r['failures']}/{r['gated']}", status="fail" if r["failures"] else "pass"),
                 Cell(fmt(r["worst_ratio"]), title=None if r["worst"] is None else
                      f"{r['worst']['quantity']} on {r['worst']['case']}: max |Δ| {fmt(r['worst']['max_abs_err'])}")]
                for r in s["rows"]]
        section.blocks.append(Table(["implementation", "R", "gated pass", "worst error / allowed"], body,
                                    caption=f"{s['gated'] - s['failures']}/{s['gated']} gated comparisons pass "
                                            f"(wall time {fmt(s['wall_time_s'], '.1f')} s)."))
        notes = [f"{name} skipped: {reason}" for name, reason in s["skipped"]]
        notes += [f"{e['implementation']} failed on {e['case'] or 'every case'}: {e['reason']}" for e in s["errors"]]
        for name, f in s["findings"].items():
            parts = ", ".join(f"{q} {v:.2g}" for q, v in f["by_quantity"].items())
            notes.append(f"{name} with unequal shards: it averages the replicas' statistics with equal weights, "
                         f"so it does not compute the global batch's BatchNorm; largest error relative to each "
                         f"quantity's scale: {parts}. It is gated against what it does compute (equal weights).")
        if notes:
            section.blocks.append(Bullets(notes))
    if data.dp_parity is not None:
        d = summary["dp_parity"]
        body = []
        for g in d["rows"]:
            verdict = ("pass" if g["passed"] else "FAIL") if g["gate"] else "finding"
            status = {"pass": "pass", "FAIL": "fail", "finding": "differs"}[verdict]
            body.append([Cell(display_name(g["framework"])), Cell(g["dtype"]), text_cell(g["replicas"]),
                         Cell(g["bn_sync"])] + [Cell(fmt(g["worst"].get(k))) for k in DP_KINDS]
                        + [Cell(verdict, status=status, title=f"allowed {g['rtol']:.2g}")])
        section.blocks.append(
            f"One SGD step of the {d['preset']}-preset AlexNet on a global batch of {d['batch']}, split over R "
            "replicas of each framework's data-parallel engine, against the same framework on one device (a cell: "
            "the largest |Δ| relative to its layer's magnitude). With synchronized BN the step is the single "
            "device's up to the order of summation (gated: every quantity in float64, the loss and the running "
            "statistics in float32, where gradients are discontinuous at ReLU and max-pool ties); per-replica BN "
            "normalizes each shard by itself, and the difference is the measured size of that choice.")
        section.blocks.append(Table(["framework", "dtype", "R", "BN", *DP_KINDS, "verdict"], body,
                                    caption=f"{d['gated'] - d['failures']}/{d['gated']} gated comparisons pass."))
        if d["not_run"]:
            section.blocks.append(Bullets([f"{display_name(n['framework'])} R={n['replicas']} {n['bn_sync']} "
                                           f"{n['dtype']} {n['status']}: {n['reason']}" for n in d["not_run"]]))
    return section
