"""The LayerNorm formulas (Ba et al., 2016) in float64 NumPy, each written once.

Per sample, over the H values x_i of its last `normalized_dims` axes (the layer's "hidden units"):
    μ   = 1/H Σ x_i                        mean of the sample
    σ²  = 1/H Σ (x_i − μ)²                 variance of the sample (biased)
    x̂_i = (x_i − μ) / √(σ² + ε)            normalized input
    y_i = γ x̂_i + β                        γ, β one per normalized element ("elementwise") or one per feature of
                                           the last axis ("feature"), broadcast over the leading axes
Training and eval compute the same thing: the statistics are always the sample's own (no running statistics).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from . import moments
from .normalization import Normalization
from .spec import LNSpec
from .steps import LayerInputs, LayerOutputs


def normalized_axes(ndim: int, spec: LNSpec) -> tuple[int, ...]:
    """The trailing `normalized_dims` axes the statistics run over."""
    return tuple(range(ndim - spec.normalized_dims, ndim))


def params(spec: LNSpec, inputs: LayerInputs) -> tuple[np.ndarray, np.ndarray]:
    """(γ, β) as the layer uses them: ones and zeros when not affine, β = 0 when the spec has no bias."""
    gamma, beta = moments.checked_params(spec, inputs, inputs.xs[0].shape)
    if not spec.bias:
        beta = np.zeros_like(beta)  # no β: y = γ x̂
    return gamma, beta


def forward(x: np.ndarray, gamma: np.ndarray, beta: np.ndarray, spec: LNSpec) -> tuple[np.ndarray, np.ndarray,
                                                                                          np.ndarray]:
    """(y, x̂, 1/√(σ² + ε)) with the sample's own statistics; γ and β broadcast from the trailing axes."""
    x = np.asarray(x, dtype=np.float64)
    x_hat, inv_std = moments.standardize(x, normalized_axes(x.ndim, spec), spec.eps, spec.variance)
    y = gamma * x_hat + beta  # y = γ x̂ + β (γ, β align with the trailing axes)
    return y, x_hat, inv_std


def backward(dy: np.ndarray, x_hat: np.ndarray, inv_std: np.ndarray, gamma: np.ndarray,
             spec: LNSpec) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Closed-form (dx, dγ, dβ) of the forward pass, given dL/dy.

    dβ = Σ dy,  dγ = Σ dy·x̂  (over every axis γ is broadcast over)
    dx = 1/√(σ² + ε) · (g − mean(g) − x̂·mean(g·x̂)),  g = γ·dy, means over the normalized axes of each sample.
    """
    dy = np.asarray(dy, dtype=np.float64)
    dbeta = moments.sum_over_broadcast(dy, gamma)  # dβ
    dgamma = moments.sum_over_broadcast(dy * x_hat, gamma)  # dγ
    dx = moments.standardize_backward(gamma * dy, x_hat, inv_std, normalized_axes(dy.ndim, spec))
    return dx, dgamma, dbeta


def run(spec: LNSpec, inputs: LayerInputs) -> LayerOutputs:
    """The layer protocol in float64: `inputs.steps` training steps, then one eval pass (the same forward)."""
    gamma, beta = params(spec, inputs)
    for x, dy in zip(inputs.xs, inputs.dys, strict=True):
        y, x_hat, inv_std = forward(x, gamma, beta, spec)
        dx, dgamma, dbeta = backward(dy, x_hat, inv_std, gamma, spec)
    y_eval, _, _ = forward(inputs.x_eval, gamma, beta, spec)
    return LayerOutputs(
        y=y, dx=dx,
        dgamma=dgamma if spec.affine else None,
        dbeta=dbeta if spec.affine and spec.bias else None,
        running_mean=None, running_var=None,
        y_eval=y_eval,
    )


def condition_factor(spec: LNSpec, xs: Sequence[np.ndarray]) -> float:
    """κ = 1 + max over inputs and samples of |μ| / √(σ² + ε) (two-pass σ²; see batchnorm.condition_factor and
    suites/parity/tolerance.py): a float μ is only known to u·|μ|, which perturbs x̂ by u·|μ|/σ."""
    worst = 0.0
    for x in xs:
        mu, var = moments.mean_and_variance(x, normalized_axes(np.ndim(x), spec))
        worst = max(worst, float(np.max(np.abs(mu) / np.sqrt(var + spec.eps))))
    return 1.0 + worst


def error_scales(spec: LNSpec, inputs: LayerInputs) -> dict[str, float]:
    """The magnitudes the errors of the last training step are judged against (see batchnorm.error_scales):
    max over parameters of Σ|dy·x̂| (dγ) and Σ|dy| (dβ), and the largest magnitude of dx's terms."""
    gamma, beta = params(spec, inputs)
    _, x_hat, inv_std = forward(inputs.xs[-1], gamma, beta, spec)
    dy = np.asarray(inputs.dys[-1], dtype=np.float64)
    axes = normalized_axes(dy.ndim, spec)
    scales = {"dx": float(np.max(moments.standardize_backward_magnitude(gamma * dy, x_hat, inv_std, axes)))}
    if spec.affine:
        scales["dgamma"] = float(np.max(moments.sum_over_broadcast(np.abs(dy * x_hat), gamma)))  # max of Σ|dy·x̂|
        if spec.bias:
            scales["dbeta"] = float(np.max(moments.sum_over_broadcast(np.abs(dy), gamma)))  # max of Σ|dy|
    return scales


NORMALIZATION = Normalization(name="layernorm", title="LayerNorm", spec_type=LNSpec, run=run,
                              condition_factor=condition_factor, error_scales=error_scales)
