"""Summaries of parity records: the worst comparison per case × implementation, and the exit verdict."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

Record = dict[str, object]


@dataclass(frozen=True)
class Cell:
    """The worst of one case × framework × implementation × reference: what a table cell shows."""

    status: str  # "pass", "FAIL" (a gate failed), "differs" (a finding outside tolerance), "skipped", "error"
    worst_quantity: str | None
    max_abs_err: float | None
    worst_ratio: float | None
    reason: str | None = None

    def text(self) -> str:
        if self.status in ("skipped", "error"):
            return self.status
        err = "inf/nan" if self.max_abs_err is None else f"{self.max_abs_err:.1e}"
        return f"{err} {self.status}"


def cell_key(r: Record) -> tuple[str, str]:
    """(case, column) of a record; the column is framework/impl, plus the reference in defaults mode."""
    column = f"{r['framework']}/{r['impl']}"
    if r.get("reference") not in (None, "matched", "own-convention"):
        column += f" vs {r['reference']}"
    return str(r["case"]), column


def cells(records: Iterable[Record]) -> dict[tuple[str, str], Cell]:
    """The worst record of every (case, column)."""
    out: dict[tuple[str, str], Cell] = {}
    for r in records:
        if r.get("case") is None:
            continue
        key = cell_key(r)
        if r["status"] != "ok":
            out[key] = Cell(str(r["status"]), None, None, None, reason=str(r.get("reason")))
            continue
        ratio = r.get("worst_ratio")
        ratio = float("inf") if ratio is None else float(ratio)
        current = out.get(key)
        if current is not None and (current.status in ("skipped", "error") or
                                    (current.worst_ratio or 0.0) >= ratio):
            continue
        verdict = "pass" if r["passed"] else ("FAIL" if r.get("gate") else "differs")
        out[key] = Cell(verdict, str(r["quantity"]), r.get("max_abs_err"), ratio)
    return out


def gate_failures(records: Iterable[Record]) -> list[Record]:
    """Gate records that failed or crashed: these, and only these, make `bnparity parity` exit 1."""
    return [r for r in records if r.get("gate") and r.get("status") in ("ok", "error") and r.get("passed") is False]


def format_table(records: list[Record]) -> str:
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
