"""The RMSNorm formulas (Zhang & Sennrich, 2019) in float64 NumPy, each written once.

Per sample, over the H values x_i of its last `normalized_dims` axes, with no mean subtracted:
    RMS(x) = √(1/H Σ x_i² + ε)             root mean square (ε inside the root, as PyTorch and Flax put it)
    x̂_i    = x_i / RMS(x)                  rescaled input
    y_i    = γ x̂_i                         γ per normalized element ("elementwise") or per last-axis feature
                                           ("feature"); there is no β
Training and eval compute the same thing (no running statistics); spec.variance does not apply.
With r = 1/RMS(x) and g = γ·dy, the gradient is dx = r·(g − x̂·mean(g·x̂)) and dγ = Σ dy·x̂.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from . import moments
from .normalization import Normalization
from .spec import RMSSpec
from .steps import LayerInputs, LayerOutputs


def normalized_axes(ndim: int, spec: RMSSpec) -> tuple[int, ...]:
    """The trailing `normalized_dims` axes the mean square runs over."""
    return tuple(range(ndim - spec.normalized_dims, ndim))


def forward(x: np.ndarray, gamma: np.ndarray, spec: RMSSpec) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(y, x̂, r) with r = 1/√(mean(x²) + ε) kept as size-1 normalized axes; γ broadcasts from the trailing axes."""
    x = np.asarray(x, dtype=np.float64)
    r = 1.0 / np.sqrt((x**2).mean(axis=normalized_axes(x.ndim, spec), keepdims=True) + spec.eps)  # 1/RMS(x)
    x_hat = x * r  # x̂ = x / RMS(x)
    return gamma * x_hat, x_hat, r  # y = γ x̂


def backward(dy: np.ndarray, x_hat: np.ndarray, r: np.ndarray, gamma: np.ndarray,
             spec: RMSSpec) -> tuple[np.ndarray, np.ndarray]:
    """Closed-form (dx, dγ) of the forward pass, given dL/dy.

    dγ = Σ dy·x̂  (over every axis γ is broadcast over)
    dx = r·(g − x̂·mean(g·x̂)),  g = γ·dy, the mean over the normalized axes of each sample (only the RMS
    depends on the whole sample: no mean(g) term, as no mean is subtracted).
    """
    dy = np.asarray(dy, dtype=np.float64)
    g = gamma * dy  # dL/dx̂
    dgamma = moments.sum_over_broadcast(dy * x_hat, gamma)  # dγ
    dx = r * (g - x_hat * (g * x_hat).mean(axis=normalized_axes(dy.ndim, spec), keepdims=True))
    return dx, dgamma


def run(spec: RMSSpec, inputs: LayerInputs) -> LayerOutputs:
    """The layer protocol in float64: `inputs.steps` training steps, then one eval pass (the same forward)."""
    gamma, _ = moments.checked_params(spec, inputs, inputs.xs[0].shape)  # β is never used
    for x, dy in zip(inputs.xs, inputs.dys, strict=True):
        y, x_hat, r = forward(x, gamma, spec)
        dx, dgamma = backward(dy, x_hat, r, gamma, spec)
    y_eval, _, _ = forward(inputs.x_eval, gamma, spec)
    return LayerOutputs(
        y=y, dx=dx,
        dgamma=dgamma if spec.affine else None,
        dbeta=None,
        running_mean=None, running_var=None,
        y_eval=y_eval,
    )


def condition_factor(spec: RMSSpec, xs: Sequence[np.ndarray]) -> float:
    """κ = 1, whatever the data.

    κ measures the loss of precision in x − μ (a float μ is only known to u·|μ|, which perturbs x̂ by u·|μ|/σ).
    RMSNorm subtracts no mean: x̂ = x/RMS(x) is a ratio of a value to a sum of non-negative squares, both
    computed to a few u relative to x̂ itself, however far the data sits from zero. Nothing is amplified.
    """
    return 1.0


def error_scales(spec: RMSSpec, inputs: LayerInputs) -> dict[str, float]:
    """The magnitudes the errors of the last training step are judged against (see batchnorm.error_scales):
    max over parameters of Σ|dy·x̂| (dγ; there is no dβ), and the largest magnitude of dx's terms,
    r·(|g| + |x̂|·|mean(g·x̂)|)."""
    gamma, _ = moments.checked_params(spec, inputs, inputs.xs[0].shape)
    _, x_hat, r = forward(inputs.xs[-1], gamma, spec)
    dy = np.asarray(inputs.dys[-1], dtype=np.float64)
    g = gamma * dy
    mean_g_xhat = (g * x_hat).mean(axis=normalized_axes(dy.ndim, spec), keepdims=True)
    scales = {"dx": float(np.max(r * (np.abs(g) + np.abs(x_hat) * np.abs(mean_g_xhat))))}
    if spec.affine:
        scales["dgamma"] = float(np.max(moments.sum_over_broadcast(np.abs(dy * x_hat), gamma)))  # max of Σ|dy·x̂|
    return scales


NORMALIZATION = Normalization(name="rmsnorm", title="RMSNorm", spec_type=RMSSpec, run=run,
                              condition_factor=condition_factor, error_scales=error_scales)
