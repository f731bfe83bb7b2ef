"""The model-parity tolerance: how far one framework's AlexNet may be from the reference or from PyTorch.

A quantity passes when, element by element,  |got − ref| ≤ atol + rtol·|ref|,  with

    rtol = u · C_MODEL · D · √K          atol = rtol · scale

- u: the unit roundoff of the dtype the frameworks compute in (float32: 2⁻²⁴ ≈ 6.0e-8, float64: 2⁻⁵³).
- D: the depth, the number of Conv and Dense layers (8): rounding errors add up layer after layer.
- K: the longest sum in the forward or backward pass: a layer's fan-in, or the N·H·W (N for Dense) terms that
  a weight gradient and a BN batch statistic add up (conv1's, 6272 for tiny with batch 8, 12544 for cpu with
  batch 16); a sum of K terms carries about √K roundings (the worst case is K). A GroupNorm statistic sums
  one sample's group, (C/G)·H·W terms, fewer than BN's N·H·W.
- C_MODEL = 4, a constant for everything else (BatchNorm's or GroupNorm's few operations per element, ReLU and
  pooling are exact). With it, rtol is 1.5e-4 (tiny, batch 8) and 2.1e-4 (cpu, batch 16) in float32, 2.8e-13 and
  4.0e-13 in float64. Measured (seed 0, all three frameworks): at most 0.05 of the allowed error in float32
  (forward quantities) and 0.33 in float64; the gn variant at most 0.008 and 0.10.
- scale: the magnitude the error is judged against (the model is relative to the quantity's largest
  magnitude, not element-wise): max |ref| of the quantity for logits, losses and running statistics; for
  gradients, the largest gradient of the *layer* (weight and bias together), so a bias followed by BN, whose
  exact gradient is 0 and whose float value is rounding noise, is judged against its layer; for parameters
  after SGD steps, the change p − p₀ is what is compared (p₀ is the same exact value in every framework and
  only the update can differ), judged against the largest change of the layer's parameters.
"""

from __future__ import annotations

import math

import numpy as np

from bnparity.reference.alexnet import AlexNetSpec, Conv, Dense, layer_shapes
from bnparity.suites.parity.tolerance import UNIT_ROUNDOFF, Tolerance

C_MODEL = 4.0


def depth_and_length(spec: AlexNetSpec, *, batch: int) -> tuple[int, int]:
    """(D, K): the number of Conv and Dense layers, and the longest sum of the forward and backward passes."""
    depth, longest = 0, 0
    for s in layer_shapes(spec):
        if isinstance(s.layer, Conv):
            depth += 1
            positions = batch * s.out_shape[1] * s.out_shape[2]  # terms of a weight gradient and of BN's μ_B
            longest = max(longest, s.in_shape[0] * s.layer.kernel ** 2, positions)
        elif isinstance(s.layer, Dense):
            depth += 1
            longest = max(longest, s.in_shape[0], s.layer.out_features, batch)
    return depth, longest


def model_rtol(spec: AlexNetSpec, dtype: str, *, batch: int) -> float:
    """rtol = u · C_MODEL · D · √K for `spec` on batches of `batch`, computed in `dtype` (float32 or float64)."""
    if dtype not in ("float32", "float64"):
        raise ValueError(f"dtype must be float32 or float64. Received: {dtype!r}")
    depth, length = depth_and_length(spec, batch=batch)
    return UNIT_ROUNDOFF[dtype] * C_MODEL * depth * math.sqrt(length)


def model_tolerance(spec: AlexNetSpec, dtype: str, scale: float, *, batch: int) -> Tolerance:
    """The Tolerance of a quantity of magnitude `scale` (see the module docstring)."""
    rtol = model_rtol(spec, dtype, batch=batch)
    return Tolerance(rtol=rtol, atol=rtol * scale)


def magnitude(*arrays: np.ndarray) -> float:
    """The largest finite |value| over `arrays` (0 when there is none)."""
    values = [np.abs(np.asarray(a, dtype=np.float64)).ravel() for a in arrays]
    flat = np.concatenate(values) if values else np.zeros(0)
    flat = flat[np.isfinite(flat)]
    return float(flat.max()) if flat.size else 0.0
