"""The layer-parity harness: every case through every implementation and the reference, as records.

Modes:
- "matched": every implementation is configured to the case's canonical semantics (what it cannot
  configure, e.g. the running-variance estimator, is listed in the record's `spec_adjusted`) and compared
  with the reference run with exactly the spec it computes.
- "defaults": each framework's own layer is built with its own defaults and compared twice: with the
  reference in that framework's documented convention (reference "own-convention": proves the
  conventions registry, gated) and with the reference in the baseline framework's convention (reference
  "baseline-convention": the difference a porter sees; a finding, never a gate).

Every record is a `bnparity.suites.schema.LayerComparison` (one quantity compared) or a `LayerSkip` (an
implementation skipped, with the reason, or crashed).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import fields
from typing import Any

import numpy as np

from bnparity.frameworks.base import LayerAdapter, Unsupported
from bnparity.frameworks.conventions import convention
from bnparity.frameworks.registry import IMPLS, Unavailable, baseline, load_adapter
from bnparity.reference.normalization import of_spec, run_reference
from bnparity.reference.spec import LayerSpec
from bnparity.reference.steps import QUANTITIES, LayerInputs, LayerOutputs
from bnparity.suites.errors import error_line
from bnparity.suites.schema import BASELINE_REFERENCE, LayerComparison, LayerRecord, LayerSkip

from .cases import ParityCase, make_inputs
from .compare import compare
from .tolerance import Tolerance, scale_of, tolerance

MODES = ("matched", "defaults")


def _spec_changes(asked: LayerSpec, got: LayerSpec) -> list[str]:
    return [f"{f.name}={getattr(got, f.name)!r}" for f in fields(got)
            if getattr(asked, f.name) != getattr(got, f.name)]


class _References:
    """The reference outputs of one case, computed once per spec."""

    def __init__(self, inputs: LayerInputs) -> None:
        self.inputs = inputs
        self._cache: dict[LayerSpec, LayerOutputs] = {}

    def __call__(self, spec: LayerSpec) -> LayerOutputs:
        if spec not in self._cache:
            self._cache[spec] = run_reference(spec, self.inputs)
        return self._cache[spec]


def compare_outputs(dtype: str, inputs: LayerInputs, spec: LayerSpec, got: LayerOutputs,
                    ref: LayerOutputs, kappa: float, context: dict[str, Any], *,
                    sides: int = 1) -> Iterator[LayerComparison]:
    """One record per quantity present on either side (`context`: what was compared, see Comparison.to_record).

    `sides`: how many of the two carry rounding error: 1 against the float64 reference, 2 for two implementations
    compared with each other (each within its tolerance of the exact result, so within the sum of both of each
    other)."""
    scales = of_spec(spec).error_scales(spec, inputs)
    got_d, ref_d = got.as_dict(), ref.as_dict()
    for quantity in QUANTITIES:
        r = ref_d[quantity]
        scale = scale_of(quantity, r, scales) if r is not None else 0.0
        tol = tolerance(dtype, kappa, scale, variance=spec.variance)
        result = compare(quantity, got_d[quantity], r, Tolerance(rtol=sides * tol.rtol, atol=sides * tol.atol))
        if result is not None:
            yield result.to_record(context, scale=scale)


def _context(case: ParityCase, adapter: LayerAdapter, mode: str, reference: str, kappa: float, spec: LayerSpec,
             *, gate: bool) -> dict[str, Any]:
    """The fields of a LayerComparison that say what was compared (all but the numbers)."""
    return {"case": case.name, "framework": adapter.framework, "impl": adapter.impl, "mode": mode,
            "reference": reference, "normalization": spec.normalization, "dtype": case.dtype, "gate": gate,
            "shape": tuple(case.shape), "axis": case.axis, "steps": case.steps, "kappa": kappa, "note": case.note,
            "spec": spec.to_dict(), "spec_adjusted": tuple(_spec_changes(case.spec, spec)),
            "new_weight": new_weight(spec)}


def new_weight(spec: LayerSpec) -> float | None:
    """The weight `spec` gives the new batch in its running statistics' first step (None: it keeps none)."""
    return spec.weight_at(0) if hasattr(spec, "weight_at") else None


def _not_run(case: ParityCase, adapter: LayerAdapter, mode: str, reference: str | None, *, gate: bool,
             status: str, reason: str) -> LayerSkip:
    return LayerSkip(case=case.name, framework=adapter.framework, impl=adapter.impl, mode=mode,
                     normalization=case.spec.normalization, gate=gate, status=status,
                     reason=reason, reference=reference, dtype=case.dtype)


def _convention_spec(framework: str, case: ParityCase, dtype: np.dtype) -> LayerSpec:
    """The reference spec of `framework`'s documented defaults, with the case's STRUCTURE fields (layout, switches,
    groups, ...). Raises LookupError when the framework has no conventions row for the case's normalization."""
    return convention(framework, case.normalization).spec(dtype=dtype, **case.spec.structure())


def _run_one(adapter: LayerAdapter, case: ParityCase, inputs: LayerInputs, refs: _References,
             mode: str, kappa: float) -> Iterator[LayerRecord]:
    """The records of one implementation on one case."""
    # (reference name, the reference spec for a given realized spec, gated?)
    if mode == "matched":
        asked = case.spec
        comparisons = [("matched", lambda realized: realized, case.gated(mode))]
    else:
        anchor = baseline().name
        comparisons = [("own-convention", lambda realized: realized, case.gated(mode)),
                       (BASELINE_REFERENCE, lambda realized: _convention_spec(anchor, case, inputs.dtype), False)]
    try:
        if mode != "matched":
            asked = _convention_spec(adapter.framework, case, inputs.dtype)
        spec = adapter.realize(asked, inputs.dtype)
    except (Unsupported, LookupError) as e:
        for reference, _, gate in comparisons:
            yield _not_run(case, adapter, mode, reference, gate=gate, status="skipped", reason=str(e))
        return
    try:
        got = adapter.run(inputs, spec=spec, use_defaults=(mode == "defaults"))
    except Unsupported as e:  # a refusal that depends on the input's shape (only `build` sees it)
        for reference, _, gate in comparisons:
            yield _not_run(case, adapter, mode, reference, gate=gate, status="skipped", reason=str(e))
        return
    except Exception as e:  # the framework crashed on this case: recorded, not raised
        for reference, _, gate in comparisons:
            yield _not_run(case, adapter, mode, reference, gate=gate, status="error", reason=error_line(e))
        return
    for reference, reference_spec, gate in comparisons:
        ref_spec = reference_spec(spec)
        context = _context(case, adapter, mode, reference, kappa, ref_spec, gate=gate)
        yield from compare_outputs(case.dtype, inputs, ref_spec, got, refs(ref_spec), kappa, context)


def load_adapters(frameworks: Iterable[str], impls: Iterable[str], mode: str, *,
                  normalization: str = "batchnorm") -> tuple[list[LayerAdapter], list[LayerSkip], list[Unavailable]]:
    """The adapters to run, one "skipped" record (case None, with the reason) per unavailable one, and the
    unavailable ones themselves (`Unavailable.installed`: installed but failing to import).

    In defaults mode only the frameworks' own layers run (a scratch layer has no defaults of its own).
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}. Received: {mode!r}")
    adapters: list[LayerAdapter] = []
    skipped: list[LayerSkip] = []
    unavailable: list[Unavailable] = []
    for framework in frameworks:
        for impl in (("builtin",) if mode == "defaults" else tuple(impls)):
            adapter = load_adapter(framework, impl, normalization)
            if isinstance(adapter, Unavailable):
                skipped.append(LayerSkip(case=None, framework=framework, impl=impl, mode=mode,
                                         normalization=normalization, gate=False, status="skipped",
                                         reason=adapter.reason))
                unavailable.append(adapter)
            else:
                adapters.append(adapter)
    return adapters, skipped, unavailable


def run_case(case: ParityCase, inputs: LayerInputs, adapters: Iterable[LayerAdapter],
             mode: str) -> Iterator[LayerRecord]:
    """The records of one case with the given data through every adapter."""
    kappa = of_spec(case.spec).condition_factor(case.spec, [*inputs.xs, inputs.x_eval])
    refs = _References(inputs)
    for adapter in adapters:
        yield from _run_one(adapter, case, inputs, refs, mode, kappa)


def run_parity(*, frameworks: Iterable[str], mode: str, cases: Iterable[ParityCase],
               impls: Iterable[str] = IMPLS,
               on_case: Callable[[ParityCase], None] | None = None,
               on_unavailable: Callable[[Unavailable], None] | None = None) -> Iterator[LayerRecord]:
    """Yield the records of every case × framework × implementation (× reference, in defaults mode).

    The cases may be of several normalizations; each runs through the adapters of its own. An implementation that
    is not available yields one "skipped" record (case None) per normalization it would have run, with the reason
    (and is passed to `on_unavailable`).
    """
    frameworks, impls, cases = tuple(frameworks), tuple(impls), list(cases)
    by_normalization: dict[str, list[LayerAdapter]] = {}
    for name in dict.fromkeys(c.normalization for c in cases):
        adapters, skipped, unavailable = load_adapters(frameworks, impls, mode, normalization=name)
        if on_unavailable is not None:
            for u in unavailable:
                on_unavailable(u)
        yield from skipped
        by_normalization[name] = adapters
    for case in cases:
        adapters = by_normalization[case.normalization]
        if on_case is not None:
            on_case(case)
        try:
            inputs = make_inputs(case)
        except ValueError as e:  # e.g. bfloat16 without ml_dtypes
            for adapter in adapters:
                yield _not_run(case, adapter, mode, None, gate=case.gated(mode), status="skipped", reason=str(e))
            continue
        yield from run_case(case, inputs, adapters, mode)
