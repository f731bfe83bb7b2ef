"""One structured comparison of an implementation's array with the reference's.

A `Comparison` holds every number a reader needs (how many elements are off and what fraction, the
greatest absolute and relative difference, the index where it occurs, what was allowed); the failure
message, the record (suites/schema.py: LayerComparison) and the report cell are all made from it, so they cannot
disagree.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from bnparity.suites.schema import LayerComparison

from .tolerance import Tolerance


@dataclass(frozen=True)
class Comparison:
    """The result of comparing `got` with `ref` under a Tolerance."""

    quantity: str
    passed: bool
    max_abs_err: float
    max_rel_err: float
    worst_index: tuple[int, ...] | None
    n_mismatched: int
    n_total: int
    atol: float
    rtol: float
    worst_ratio: float  # the greatest error as a fraction of what was allowed there (≤ 1 passes)
    problem: str | None = None  # a structural problem (missing value, wrong shape) instead of numbers

    def describe(self, where: str = "") -> str:
        """A one-paragraph message in the style of torch.testing.assert_close."""
        return describe_record(self, where)

    def to_record(self, context: Mapping[str, Any], *, scale: float) -> LayerComparison:
        """The record of this comparison: `context` says what was compared (every field of LayerComparison before
        `quantity`: case, framework, ...), `scale` the magnitude the tolerance judged it against."""
        return LayerComparison(
            **context, quantity=self.quantity, passed=self.passed, max_abs_err=_finite_or_none(self.max_abs_err),
            max_rel_err=_finite_or_none(self.max_rel_err), worst_index=self.worst_index,
            n_mismatched=self.n_mismatched, n_total=self.n_total, atol=self.atol, rtol=self.rtol, scale=scale,
            worst_ratio=_finite_or_none(self.worst_ratio), problem=self.problem)


def describe_record(record: Comparison | LayerComparison, where: str = "") -> str:
    """The message of a comparison, or of its record (a record file's): what, where, by how much."""
    head = f"{record.quantity}{' of ' + where if where else ''}"
    if record.problem:
        return f"{head}: {record.problem}"
    verdict = "agrees" if record.passed else "does not agree"
    pct = 100.0 * record.n_mismatched / max(record.n_total, 1)
    index = list(record.worst_index) if record.worst_index is not None else None
    return (f"{head} {verdict} with the reference: {record.n_mismatched} of {record.n_total} elements "
            f"({pct:.1f}%) outside tolerance; greatest absolute difference {_g(record.max_abs_err)} at "
            f"index {index} (allowed {record.atol:.3g} + {record.rtol:.3g}·|ref|), greatest "
            f"relative difference {_g(record.max_rel_err)}.")


def _g(v: float | None) -> str:
    return "inf or nan" if v is None or not np.isfinite(v) else f"{v:.3g}"


def _finite_or_none(v: float) -> float | None:
    """JSON has no inf/nan: in a record they are None (its `passed` and `problem` say what happened)."""
    return float(v) if np.isfinite(v) else None


def missing(quantity: str, problem: str) -> Comparison:
    return Comparison(quantity=quantity, passed=False, max_abs_err=float("inf"), max_rel_err=float("inf"),
                      worst_index=None, n_mismatched=0, n_total=0, atol=0.0, rtol=0.0,
                      worst_ratio=float("inf"), problem=problem)


def compare(quantity: str, got: np.ndarray | None, ref: np.ndarray | None, tol: Tolerance) -> Comparison | None:
    """Compare `got` with `ref` element-wise: |got − ref| ≤ atol + rtol·|ref|, NaN equal to NaN.

    Returns None when neither side has the quantity (e.g. dγ of a non-affine layer).
    """
    if got is None and ref is None:
        return None
    if got is None:
        return missing(quantity, "the implementation returned no value, the reference has one")
    if ref is None:
        return missing(quantity, "the implementation returned a value where the reference has none")
    got = np.asarray(got, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    if got.shape != ref.shape:
        return missing(quantity, f"shape {got.shape} differs from the reference's {ref.shape}")
    both_nan = np.isnan(got) & np.isnan(ref)
    with np.errstate(invalid="ignore", over="ignore"):
        abs_err = np.where(both_nan, 0.0, np.abs(got - ref))
        abs_err = np.where(np.isnan(abs_err), np.inf, abs_err)  # NaN on one side only: infinitely off
        allowed = tol.atol + tol.rtol * np.abs(ref)
        rel_err = np.where(abs_err == 0, 0.0, abs_err / np.abs(ref))
        ratio = np.where(abs_err == 0, 0.0, abs_err / allowed)
    bad = ~((abs_err <= allowed) | both_nan)
    n = int(abs_err.size)
    worst = int(np.argmax(ratio)) if n else 0
    worst_index = tuple(int(i) for i in np.unravel_index(worst, abs_err.shape)) if n else None
    return Comparison(
        quantity=quantity,
        passed=not bool(bad.any()),
        max_abs_err=float(abs_err.max()) if n else 0.0,
        max_rel_err=float(rel_err.max()) if n else 0.0,
        worst_index=worst_index,
        n_mismatched=int(bad.sum()),
        n_total=n,
        atol=tol.atol,
        rtol=tol.rtol,
        worst_ratio=float(ratio.max()) if n else 0.0,
    )
