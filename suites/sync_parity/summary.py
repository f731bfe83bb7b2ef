"""Summaries of cross-replica records: the gate verdict, one line per implementation, and the findings."""

from __future__ import annotations

from collections.abc import Iterable

from bnparity.frameworks.registry import display_name, sort_key
from bnparity.suites.schema import SyncComparison, SyncRecord, SyncSkip


def gated(records: Iterable[SyncRecord]) -> list[SyncRecord]:
    """The records that count for the exit code: gated comparisons and engine errors."""
    return [r for r in records if r.gate and (isinstance(r, SyncComparison) or r.status == "error")]


def gate_failures(records: Iterable[SyncRecord]) -> list[SyncRecord]:
    return [r for r in gated(records) if r.passed is False]


def implementation(r: SyncRecord) -> str:
    """"torch/scratch" or "jax/builtin[pmap]" (the variant when it is not the only one)."""
    variant = "" if r.variant in ("default", "-") else f"[{r.variant}]"
    return f"{r.framework}/{r.impl}{variant}"


def format_summary(records: Iterable[SyncRecord]) -> str:
    """One line per implementation and replica count: gated comparisons passed, the worst error/allowed, skips;
    then the findings (comparisons with the global batch that are not gated)."""
    records = list(records)
    rows: dict[tuple[str, int], list[SyncRecord]] = {}
    for r in records:
        if r.case is not None:
            rows.setdefault((implementation(r), r.replicas), []).append(r)
    lines = [f"{'implementation':<28} {'R':>2}  {'gated pass':>11}  {'worst/allowed':>13}  skipped  errors"]
    for (name, replicas), mine in sorted(rows.items(), key=lambda kv: (sort_key(kv[0][0].split('/')[0]), kv[0])):
        comps = [r for r in mine if isinstance(r, SyncComparison) and r.gate]
        passed = sum(r.passed for r in comps)
        worst = max((r.ratio for r in comps), default=0.0)
        skips = len({r.case for r in mine if isinstance(r, SyncSkip) and r.status == "skipped"})
        errors = len({r.case for r in mine if isinstance(r, SyncSkip) and r.status == "error"})
        lines.append(f"{name:<28} {replicas:>2}  {f'{passed}/{len(comps)}':>11}  {worst:>13.3g}  {skips:>7}  "
                     f"{errors:>6}")
    skipped = sorted({(implementation(r), r.reason) for r in records if isinstance(r, SyncSkip)
                      and r.status == "skipped" and r.case is not None})
    for name, reason in skipped:
        lines.append(f"skipped {name}: {reason}")
    for finding in findings(records):
        lines.append(finding)
    return "\n".join(lines)


def findings(records: Iterable[SyncRecord]) -> list[str]:
    """Per implementation whose synchronized statistics weight unequal shards equally: how far that is from the
    global batch (the largest error relative to the quantity's scale, per quantity)."""
    worst: dict[str, dict[str, float]] = {}
    for r in records:
        if isinstance(r, SyncComparison) and not r.gate and r.reference == "global-batch":
            err = r.scaled_error
            q = worst.setdefault(implementation(r), {})
            q[r.quantity] = max(q.get(r.quantity, 0.0), float("inf") if err is None else err)
    lines = []
    for name, by_quantity in worst.items():
        parts = ", ".join(f"{q} {v:.2g}" for q, v in by_quantity.items() if not q.startswith("saved"))
        lines.append(f"finding: {display_name(name.split('/')[0])} ({name}) weights unequal shards equally; vs the "
                     f"global batch, largest error / scale: {parts}")
    return lines
