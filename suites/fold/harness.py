"""Running the layer cases through each framework's folds and judging them against the float64 reference.

In-process: every framework's `Folds` runs in this process, one case at a time (the cases are small, and no engine
needs its environment set before it starts). A configuration a framework cannot compute here is a FoldSkip with its
reason; an exception that is not `Unsupported` is recorded as an error, never raised, so one framework's bug does
not cost the others' records.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

import numpy as np

from bnparity.frameworks.base import Unsupported
from bnparity.frameworks.folding import IMPLS, FoldCase, FoldOutput, Folds, load_folds
from bnparity.frameworks.registry import Unavailable

from .cases import case_class
from .records import FoldComparison, FoldRecord, FoldSkip
from .tolerance import FoldBound, fold_bound, worst_ratio


def bound_of(case: FoldCase) -> FoldBound:
    """The reference outputs and the allowed errors of `case`."""
    return fold_bound(kind=case.kind, dtype=case.dtype, x=case.x, weight=case.weight, bias=case.bias,
                      gamma=case.gamma, beta=case.beta, running_mean=case.running_mean,
                      running_var=case.running_var, eps=case.eps, stride=case.stride, padding=case.padding,
                      groups=case.groups)


def compare(framework: str, impl: str, case: FoldCase, out: FoldOutput,
            bound: FoldBound | None = None) -> FoldComparison:
    """One framework's output for `case` against the reference: y of the folded and of the unfolded layer, and
    the folded weight and bias against reference.fold's, each as error / allowed."""
    b = bound or bound_of(case)
    y_ratio, y_error = worst_ratio(out.y_folded, b.y, b.allowed_y)
    unfolded_ratio, _ = worst_ratio(out.y_unfolded, b.y, b.allowed_y)
    weight_ratio, _ = worst_ratio(out.weight, b.weight, b.allowed_weight)
    bias_ratio, _ = worst_ratio(out.bias, b.bias, b.allowed_bias)
    ratios = (y_ratio, unfolded_ratio, weight_ratio, bias_ratio)
    return FoldComparison(framework=framework, impl=impl, case=case.name, case_class=case_class(case),
                          kind=case.kind, dtype=case.dtype, layout=case.layout, groups=case.groups,
                          bias=case.has_bias, max_scale=float(np.abs(b.scale).max()), y_error=y_error,
                          y_ratio=y_ratio, unfolded_ratio=unfolded_ratio, weight_ratio=weight_ratio,
                          bias_ratio=bias_ratio, passed=all(r <= 1.0 for r in ratios))


def _one_line(e: BaseException) -> str:
    return f"{type(e).__name__}: {e}".splitlines()[0] if str(e) else type(e).__name__


def run_folds(folds: Folds, cases: Iterable[FoldCase], impls: Iterable[str] = IMPLS) -> Iterator[FoldRecord]:
    """Every case through every impl of `folds`: a comparison, or a skip with the reason."""
    cases = list(cases)
    bounds: dict[str, FoldBound] = {}
    for impl in impls:
        if impl not in folds.impls:
            yield FoldSkip(framework=folds.framework, impl=impl, case=None,
                           reason=folds.lacks.get(impl, f"{folds.framework} has no {impl} fold"))
            continue
        for case in cases:
            try:
                out = folds.fold_layer(case, impl)
            except Unsupported as e:
                yield FoldSkip(framework=folds.framework, impl=impl, case=case.name, reason=str(e).splitlines()[0])
                continue
            except Exception as e:  # noqa: BLE001 (recorded as an error: the other cases and frameworks still run)
                yield FoldSkip(status="error", framework=folds.framework, impl=impl, case=case.name,
                               reason=_one_line(e))
                continue
            if case.name not in bounds:
                bounds[case.name] = bound_of(case)
            yield compare(folds.framework, impl, case, out, bounds[case.name])


def run_frameworks(frameworks: Iterable[str], cases: list[FoldCase], *,
                   load: Callable[[str], Folds | Unavailable] = load_folds,
                   on_record: Callable[[FoldRecord], None] = lambda r: None) -> list[FoldRecord]:
    """The cases through every framework (one not installed: one skip with its reason)."""
    records: list[FoldRecord] = []
    for framework in frameworks:
        folds = load(framework)
        if isinstance(folds, Unavailable):
            found: Iterable[FoldRecord] = [FoldSkip(status="error" if folds.installed else "skipped",
                                                    framework=framework, impl="-", case=None, reason=folds.reason)]
        else:
            found = run_folds(folds, cases)
        for record in found:
            records.append(record)
            on_record(record)
    return records
