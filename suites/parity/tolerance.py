"""The parity tolerance model: how far an implementation may be from the float64 reference, per dtype.

A result passes when, element by element,  |got − ref| ≤ atol + rtol·|ref|,  with

    rtol = u · (C_ACC + C_COND · κ)        atol = rtol · scale

- u is the unit roundoff of the dtype the implementation computes in (float32: 2⁻²⁴ ≈ 6.0e-8).
- C_ACC = 32 units of rounding for the arithmetic of BatchNorm itself (a few operations per element,
  sums in blocks or pairs). C_COND = 4 for the loss of precision in x − μ_B.
- A spec whose variance is "fast" (E[x²] − E[x]², Flax's default) is judged with κ² in place of κ: that algorithm
  loses u·κ² by design, and the reference computes it too, so the tolerance models the rounding of the algorithm
  the spec names. A layer that claims two-pass and computes E[x²] − E[x]² is still judged with κ, and fails.
- κ, the condition factor, is computed by the normalization's plug-in (bnparity.reference.normalization);
  for BatchNorm it is 1 + max over channels of |μ_B| / √(σ²_B + ε) of the inputs: a float μ_B is only
  known to u·|μ_B|, which perturbs x̂ by u·|μ_B|/σ. A careful implementation in float32
  has errors near u·κ; one that computes σ²_B as E[x²] − E[x]² has errors near u·κ², and fails as soon
  as κ is large (the hard inputs are built for that).
- scale is the magnitude the error is judged against, per quantity (see `scale_of`): the largest |ref|
  for outputs, and for the quantities the plug-in names (its `error_scales`) its own magnitude: for
  BatchNorm the sum of the magnitudes of the summed terms for the sums dγ and dβ (the classic error
  bound of a sum), and the magnitude of the terms of dx, so that a result that cancels to near zero
  (dx of a batch of 2 is ≈ 0) is not judged by its small value.

One table of (C_ACC, C_COND) for every dtype: half-precision dtypes get their own tolerance through u.
A difference between frameworks' conventions is never absorbed here; it lives in the conventions
registry and in the reports.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

C_ACC = 32.0
C_COND = 4.0

UNIT_ROUNDOFF: dict[str, float] = {
    "float64": 2.0**-53,
    "float32": 2.0**-24,
    "float16": 2.0**-11,
    "bfloat16": 2.0**-8,
}


@dataclass(frozen=True)
class Tolerance:
    """The allowed error of one quantity: |got − ref| ≤ atol + rtol·|ref|."""

    rtol: float
    atol: float


def unit_roundoff(dtype_name: str) -> float:
    """u of a float dtype name. Raises ValueError for dtypes the model does not cover."""
    try:
        return UNIT_ROUNDOFF[dtype_name]
    except KeyError:
        raise ValueError(f"no tolerance for dtype {dtype_name}; expected one of "
                         f"{', '.join(UNIT_ROUNDOFF)}") from None


def relative_tolerance(dtype_name: str, kappa: float, *, variance: str = "two-pass") -> float:
    """rtol = u · (C_ACC + C_COND · κ), with κ² for the "fast" variance algorithm."""
    amplification = kappa * kappa if variance == "fast" else kappa
    return unit_roundoff(dtype_name) * (C_ACC + C_COND * amplification)


def scale_of(quantity: str, ref: np.ndarray | None, scales: Mapping[str, float]) -> float:
    """The magnitude an error in `quantity` is judged against: the normalization's own scale for it (a sum's
    terms, see its `error_scales`), else the largest finite |ref| (0 when there is no reference value)."""
    if quantity in scales:
        return float(scales[quantity])
    if ref is None:
        return 0.0
    finite = np.abs(ref[np.isfinite(ref)])
    return float(finite.max()) if finite.size else 0.0


def tolerance(dtype_name: str, kappa: float, scale: float, *, variance: str = "two-pass") -> Tolerance:
    """The Tolerance of a quantity of magnitude `scale`, computed in `dtype_name`, condition `kappa`, by the
    spec's variance algorithm ("two-pass" or "fast")."""
    rtol = relative_tolerance(dtype_name, kappa, variance=variance)
    return Tolerance(rtol=rtol, atol=rtol * scale)
