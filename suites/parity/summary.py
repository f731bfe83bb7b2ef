"""Summaries of parity records: the worst comparison per case × implementation, and the exit verdict."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from bnparity.suites.schema import LayerComparison, LayerRecord, LayerSkip


@dataclass(frozen=True)
class Cell:
    """The worst of one case × framework × implementation × reference: what a table cell shows.

    `record` is the comparison shown (None for a skipped or crashed implementation).
    """

    status: str  # "pass", "FAIL" (a gate failed), "differs" (a finding outside tolerance), "skipped", "error"
    worst_quantity: str | None
    max_abs_err: float | None
    worst_ratio: float | None
    reason: str | None = None
    record: LayerComparison | None = None

    def text(self) -> str:
        if self.status in ("skipped", "error"):
            return self.status
        err = "inf/nan" if self.max_abs_err is None else f"{self.max_abs_err:.1e}"
        return f"{err} {self.status}"


def column_of(r: LayerRecord) -> str:
    """The table column of a record: framework/impl, plus " vs baseline-convention" for a baseline comparison."""
    return f"{r.framework}/{r.impl}" + (f" vs {r.reference}" if r.vs_baseline else "")


def cell_key(r: LayerRecord) -> tuple[str, str]:
    """(case, column) of a record (of a record with a case)."""
    return str(r.case), column_of(r)


def verdict(r: LayerComparison) -> str:
    """"pass", "FAIL" (a gated comparison outside the tolerance) or "differs" (an ungated one)."""
    return "pass" if r.passed else ("FAIL" if r.gate else "differs")


def cells(records: Iterable[LayerRecord]) -> dict[tuple[str, str], Cell]:
    """The worst record of every (case, column); a skip or an error takes the cell."""
    out: dict[tuple[str, str], Cell] = {}
    for r in records:
        if r.case is None:
            continue
        key = cell_key(r)
        if isinstance(r, LayerSkip):
            out[key] = Cell(r.status, None, None, None, reason=r.reason)
            continue
        current = out.get(key)
        if current is not None and (current.status in ("skipped", "error") or
                                    (current.record is not None and current.record.ratio >= r.ratio)):
            continue
        out[key] = Cell(verdict(r), r.quantity, r.max_abs_err, r.ratio, record=r)
    return out


def gate_failures(records: Iterable[LayerRecord]) -> list[LayerRecord]:
    """Gate records that failed or crashed: these, and only these, make `bnparity parity` exit 1."""
    return [r for r in records if r.gate and r.status in ("ok", "error") and r.passed is False]


def gated(records: Iterable[LayerRecord]) -> list[LayerRecord]:
    """The gated comparisons and crashes: what gate_failures counts against."""
    return [r for r in records if r.gate and r.status in ("ok", "error")]


def format_table(records: Iterable[LayerRecord]) -> str:
    """A compact text table: one row per case, one column per implementation, worst error and verdict."""
    table = cells(records)
    columns = sorted({col for _, col in table})
    rows = list(dict.fromkeys(case for case, _ in table))
    width = max([len("case")] + [len(r) for r in rows])
    colw = max([14] + [len(c) for c in columns])
    lines = ["case".ljust(width) + "  " + "  ".join(c.ljust(colw) for c in columns)]
    for case in rows:
        lines.append(case.ljust(width) + "  " + "  ".join(
            (table[(case, c)].text() if (case, c) in table else "").ljust(colw) for c in columns))
    return "\n".join(lines)
