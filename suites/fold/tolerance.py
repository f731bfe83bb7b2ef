"""The error a folded layer may have in a dtype: a forward error bound, derived, computed in float64.

A framework folds W' = s·W, b' = s·(b − μ) + β with s = γ/√(σ² + ε) in the case's dtype (unit roundoff u), then
computes y = Σ W'·x + b' over the K products of each output element (K: the fan-in, in/groups · kh · kw, or in
for a dense layer). The case's arrays are representable in the dtype (the suite rounds them first), so only the
computation rounds; the reference computes y_ref = BN_eval(layer(x)) in float64 from the same values.

Rounding of the fold, per output channel c. s_c takes σ² + ε (one rounding), a square root or reciprocal square
root (at most 2 ulp in the libraries' kernels) and a division or a product with γ (one); W'_c one product more,
so |fl(W'_c) − W'_c| ≤ δ_c·|W'_c| with
    δ_c = 6u + η/(2(σ²_c + ε)),
where η is the dtype's smallest subnormal: ε is a Python float the framework rounds into the dtype, and where
σ² + ε is subnormal (float16's ε = 1e-5 is: its spacing there is η = 6e-8, a relative 3e-3, six times u) the
rounding is absolute, not relative. b'_c adds a subtraction and an addition to s_c's error:
    |fl(b'_c) − b'_c| ≤ (δ_c + 2u)·|s_c|·(|b_c| + |μ_c|) + u·|β_c|.

Rounding of the layer. A sum of K products in any order (a dot product, an im2col GEMM, a Winograd or FFT
convolution aside) errs by at most γ_K·Σ|W'||x| ≈ K·u·(|W'| ∗ |x|), where ∗ is the convolution (or dense
product) of absolute values (Higham, Accuracy and Stability of Numerical Algorithms, 2nd ed., §3.1); the folded
weights' own error adds δ_c·(|W'| ∗ |x|); the bias one more rounding and the result one, u·|y_ref|. Per element:
    allowed = c·[(K·u + δ_c)·(|W'| ∗ |x|) + (δ_c + 2u)·|s_c|·(|b_c| + |μ_c|) + u·|β_c| + u·|y_ref|].
The unfolded layer followed by BatchNorm's eval pass has the same bound: its BN multiplies the layer's output by
s_c (so its error is |s_c|·K·u·(|W| ∗ |x|) = K·u·(|W'| ∗ |x|)), and its (z − μ)·s + β rounds the same terms.

It grows with |s| = |γ|/√(σ² + ε) through W' = s·W and through |s|·(|b| + |μ|): a channel whose running variance is
near 0 has a large s, large folded weights, and a proportionally larger rounding, which is what the bound allows
and no more.

c = 2 covers what the first-order bound leaves out: γ_K = K·u/(1 − K·u) rather than K·u, and the product of the fold's
and the layer's roundings (second order in u). It is not fitted to measured errors; the cases' worst ratios are
recorded, and a fold that forgets ε, or adds μ where it should subtract it, exceeds it many times
(tests/test_fold.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bnparity.reference import batchnorm
from bnparity.reference.alexnet_numpy import dense
from bnparity.reference.fold import bn_scale, fold, grouped_conv2d

C = 2.0  # safety factor over the first-order bound (module docstring)


def unit_roundoff(dtype: str) -> float:
    """u = ε_mach / 2 of a float dtype (float16 4.9e-4, float32 6.0e-8, float64 1.1e-16)."""
    return float(np.finfo(np.dtype(dtype)).eps) / 2.0


def smallest_subnormal(dtype: str) -> float:
    """η, the spacing of the dtype's subnormal range (float16 6.0e-8)."""
    return float(np.finfo(np.dtype(dtype)).smallest_subnormal)


@dataclass(frozen=True)
class FoldBound:
    """The reference and the allowed errors of one case (float64, canonical layout).

    Attributes:
        y: the reference output BN_eval(layer(x)).
        weight: the reference folded weight W'.
        bias: the reference folded bias b'.
        scale: s = γ/√(σ² + ε), per output channel.
        allowed_y: the allowed |error| of each output element.
        allowed_weight: the allowed |error| of each folded weight.
        allowed_bias: the allowed |error| of each folded bias.
    """

    y: np.ndarray
    weight: np.ndarray
    bias: np.ndarray
    scale: np.ndarray
    allowed_y: np.ndarray
    allowed_weight: np.ndarray
    allowed_bias: np.ndarray


def _channel(v: np.ndarray, ndim: int, axis: int) -> np.ndarray:
    """A per-channel vector shaped to broadcast along `axis` of an `ndim`-array."""
    shape = [1] * ndim
    shape[axis] = -1
    return np.asarray(v).reshape(shape)


def fan_in(kind: str, weight: np.ndarray) -> int:
    """K, the products summed per output element: in/groups · kh · kw for a convolution, in for a dense layer."""
    return int(np.prod(np.shape(weight)[1:]))


def layer_apply(kind: str, x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None, *, stride: int = 1,
                padding: int = 0, groups: int = 1) -> np.ndarray:
    """The reference layer in float64: a grouped convolution (NCHW) or a dense layer."""
    if kind == "conv":
        return grouped_conv2d(x, weight, bias, stride=stride, padding=padding, groups=groups)
    return dense(x, weight, np.zeros(np.shape(weight)[0]) if bias is None else bias)


@dataclass(frozen=True)
class WeightBound:
    """The reference fold of one layer and the errors allowed in its folded weights (float64).

    Attributes:
        weight: W'.
        bias: b'.
        scale: s, per output channel.
        delta: δ_c, the relative error allowed in each channel's folded weights before the factor c.
        bias_terms: (δ_c + 2u)·|s_c|·(|b_c| + |μ_c|) + u·|β_c|, before the factor c.
        allowed_weight: c·δ_c·|W'|.
        allowed_bias: c·bias_terms.
    """

    weight: np.ndarray
    bias: np.ndarray
    scale: np.ndarray
    delta: np.ndarray
    bias_terms: np.ndarray
    allowed_weight: np.ndarray
    allowed_bias: np.ndarray


def weight_bound(*, dtype: str, weight: np.ndarray, bias: np.ndarray | None, gamma: np.ndarray, beta: np.ndarray,
                 running_mean: np.ndarray, running_var: np.ndarray, eps: float, c: float = C) -> WeightBound:
    """reference.fold's W', b' and the errors a fold in `dtype` may have in them (module docstring)."""
    u, eta = unit_roundoff(dtype), smallest_subnormal(dtype)
    w2, b2 = fold(weight, bias, gamma, beta, running_mean, running_var, eps)
    s = bn_scale(gamma, running_var, eps)
    delta = 6 * u + eta / (2 * (np.asarray(running_var, dtype=np.float64) + eps))  # δ_c
    b = np.zeros_like(s) if bias is None else np.abs(np.asarray(bias, dtype=np.float64))
    bias_terms = (delta + 2 * u) * np.abs(s) * (b + np.abs(running_mean)) + u * np.abs(beta)
    return WeightBound(weight=w2, bias=b2, scale=s, delta=delta, bias_terms=bias_terms,
                       allowed_weight=c * _channel(delta, w2.ndim, 0) * np.abs(w2), allowed_bias=c * bias_terms)


def fold_bound(*, kind: str, dtype: str, x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None,
               gamma: np.ndarray, beta: np.ndarray, running_mean: np.ndarray, running_var: np.ndarray, eps: float,
               stride: int = 1, padding: int = 0, groups: int = 1, c: float = C) -> FoldBound:
    """The reference y, W', b' of one case and the errors allowed in `dtype` (module docstring)."""
    u = unit_roundoff(dtype)
    kw = dict(stride=stride, padding=padding, groups=groups)
    z = layer_apply(kind, x, weight, bias, **kw)
    y = batchnorm.forward_eval(z, gamma, beta, running_mean, running_var, eps=eps, axis=1)
    wb = weight_bound(dtype=dtype, weight=weight, bias=bias, gamma=gamma, beta=beta, running_mean=running_mean,
                      running_var=running_var, eps=eps, c=c)
    abs_product = layer_apply(kind, np.abs(x), np.abs(wb.weight), None, **kw)  # |W'| ∗ |x|
    k = fan_in(kind, weight)
    allowed_y = c * ((k * u + _channel(wb.delta, y.ndim, 1)) * abs_product + _channel(wb.bias_terms, y.ndim, 1)
                     + u * np.abs(y))
    return FoldBound(y=y, weight=wb.weight, bias=wb.bias, scale=wb.scale, allowed_y=allowed_y,
                     allowed_weight=wb.allowed_weight, allowed_bias=wb.allowed_bias)


def worst_ratio(got: np.ndarray, want: np.ndarray, allowed: np.ndarray) -> tuple[float, float]:
    """(max |got − want| / allowed over the elements, max |got − want|); inf for a non-finite value or a nonzero
    error where nothing is allowed."""
    got, want = np.asarray(got, dtype=np.float64), np.asarray(want, dtype=np.float64)
    if got.shape != want.shape:
        raise ValueError(f"shape {got.shape} where the reference has {want.shape}")
    err = np.abs(got - want)
    if not np.all(np.isfinite(err)):
        return float("inf"), float("inf")
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(err == 0, 0.0, err / allowed)
    return float(ratio.max(initial=0.0)), float(err.max(initial=0.0))
