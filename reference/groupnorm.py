"""The GroupNorm formulas (Wu & He, 2018) in float64 NumPy, each written once.

The C channels are split into G groups of C/G consecutive channels (channel c is in group c // (C/G), whatever
the layout). Per sample n and group g, over the m = (C/G)·(spatial size) values S_ng of the group:
    μ_ng   = 1/m Σ_{i ∈ S_ng} x_i                  mean of the group
    σ²_ng  = 1/m Σ_{i ∈ S_ng} (x_i − μ_ng)²        variance of the group (biased)
    x̂_i    = (x_i − μ_ng) / √(σ²_ng + ε)           normalized input
    y_i    = γ x̂_i + β                             γ, β per channel ("channel") or per group ("group")
Training and eval compute the same thing (no running statistics). Computed on a grouped view of the input,
(N, G, C/G, *spatial): the channel axis moved to 1 and split into (G, C/G).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from . import moments
from .layout import channel_axis
from .normalization import Normalization
from .spec import GNSpec
from .steps import LayerInputs, LayerOutputs


def grouped(a: np.ndarray, spec: GNSpec) -> np.ndarray:
    """The grouped view (N, G, C/G, *spatial) of an input (or dy) with its channel axis at spec.axis."""
    a = np.moveaxis(np.asarray(a, dtype=np.float64), channel_axis(np.ndim(a), spec.axis), 1)
    n, c, *spatial = a.shape
    return a.reshape(n, spec.groups, c // spec.groups, *spatial)


def ungrouped(a: np.ndarray, spec: GNSpec) -> np.ndarray:
    """The inverse of `grouped`: (N, G, C/G, *spatial) back to the channel axis at spec.axis."""
    n, groups, per_group, *spatial = a.shape
    a = a.reshape(n, groups * per_group, *spatial)
    return np.moveaxis(a, 1, channel_axis(a.ndim, spec.axis))


def group_axes(grouped_ndim: int) -> tuple[int, ...]:
    """The axes of the grouped view a group's statistics run over: its channels and every spatial position."""
    return tuple(range(2, grouped_ndim))


def broadcast_param(p: np.ndarray, spec: GNSpec, grouped_ndim: int) -> np.ndarray:
    """γ or β shaped to broadcast against the grouped view: (1, G, C/G, 1, ...) per channel, (1, G, 1, 1, ...)
    per group (group g's value applies to all its channels)."""
    per_group = -1 if spec.params == "channel" else 1
    return np.asarray(p, dtype=np.float64).reshape(1, spec.groups, per_group, *([1] * (grouped_ndim - 3)))


def forward(x: np.ndarray, gamma: np.ndarray, beta: np.ndarray, spec: GNSpec) -> tuple[np.ndarray, np.ndarray,
                                                                                          np.ndarray]:
    """(y, x̂, 1/√(σ² + ε)): y in x's layout; x̂ and 1/√(σ² + ε) in the grouped view."""
    xg = grouped(x, spec)
    x_hat, inv_std = moments.standardize(xg, group_axes(xg.ndim), spec.eps, spec.variance)
    y = broadcast_param(gamma, spec, xg.ndim) * x_hat + broadcast_param(beta, spec, xg.ndim)  # y = γ x̂ + β
    return ungrouped(y, spec), x_hat, inv_std


def backward(dy: np.ndarray, x_hat: np.ndarray, inv_std: np.ndarray, gamma: np.ndarray,
             spec: GNSpec) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Closed-form (dx, dγ, dβ) of the forward pass, given dL/dy (x̂ and 1/√(σ² + ε) in the grouped view).

    dβ = Σ dy,  dγ = Σ dy·x̂  (per channel: over samples and positions; per group: also over the group's channels)
    dx = 1/√(σ² + ε) · (g − mean(g) − x̂·mean(g·x̂)),  g = γ·dy, means over each sample's group.
    """
    dyg = grouped(dy, spec)
    gamma_b = broadcast_param(gamma, spec, dyg.ndim)
    dbeta = moments.sum_over_broadcast(dyg, gamma_b).reshape(np.shape(gamma))  # dβ
    dgamma = moments.sum_over_broadcast(dyg * x_hat, gamma_b).reshape(np.shape(gamma))  # dγ
    dx = moments.standardize_backward(gamma_b * dyg, x_hat, inv_std, group_axes(dyg.ndim))
    return ungrouped(dx, spec), dgamma, dbeta


def run(spec: GNSpec, inputs: LayerInputs) -> LayerOutputs:
    """The layer protocol in float64: `inputs.steps` training steps, then one eval pass (the same forward)."""
    gamma, beta = moments.checked_params(spec, inputs, inputs.xs[0].shape)
    for x, dy in zip(inputs.xs, inputs.dys, strict=True):
        y, x_hat, inv_std = forward(x, gamma, beta, spec)
        dx, dgamma, dbeta = backward(dy, x_hat, inv_std, gamma, spec)
    y_eval, _, _ = forward(inputs.x_eval, gamma, beta, spec)
    return LayerOutputs(
        y=y, dx=dx,
        dgamma=dgamma if spec.affine else None,
        dbeta=dbeta if spec.affine else None,
        running_mean=None, running_var=None,
        y_eval=y_eval,
    )


def condition_factor(spec: GNSpec, xs: Sequence[np.ndarray]) -> float:
    """κ = 1 + max over inputs, samples and groups of |μ| / √(σ² + ε) (two-pass σ²; see
    batchnorm.condition_factor and suites/parity/tolerance.py)."""
    worst = 0.0
    for x in xs:
        xg = grouped(x, spec)
        mu, var = moments.mean_and_variance(xg, group_axes(xg.ndim))
        worst = max(worst, float(np.max(np.abs(mu) / np.sqrt(var + spec.eps))))
    return 1.0 + worst


def error_scales(spec: GNSpec, inputs: LayerInputs) -> dict[str, float]:
    """The magnitudes the errors of the last training step are judged against (see batchnorm.error_scales):
    max over parameters of Σ|dy·x̂| (dγ) and Σ|dy| (dβ), and the largest magnitude of dx's terms."""
    gamma, beta = moments.checked_params(spec, inputs, inputs.xs[0].shape)
    _, x_hat, inv_std = forward(inputs.xs[-1], gamma, beta, spec)
    dyg = grouped(inputs.dys[-1], spec)
    gamma_b = broadcast_param(gamma, spec, dyg.ndim)
    scales = {"dx": float(np.max(moments.standardize_backward_magnitude(gamma_b * dyg, x_hat, inv_std,
                                                                        group_axes(dyg.ndim))))}
    if spec.affine:
        scales["dgamma"] = float(np.max(moments.sum_over_broadcast(np.abs(dyg * x_hat), gamma_b)))  # Σ|dy·x̂|
        scales["dbeta"] = float(np.max(moments.sum_over_broadcast(np.abs(dyg), gamma_b)))  # Σ|dy|
    return scales


NORMALIZATION = Normalization(name="groupnorm", title="GroupNorm", spec_type=GNSpec, run=run,
                              condition_factor=condition_factor, error_scales=error_scales)
