"""The InstanceNorm formulas (Ulyanov et al., 2016) in float64 NumPy, each written once.

Per sample n and channel c, over the m = (spatial size) values x_i of that one image's channel:
    μ_nc   = 1/m Σ x_i                     mean of the sample's channel
    σ²_nc  = 1/m Σ (x_i − μ_nc)²           its variance (biased)
    x̂_i    = (x_i − μ_nc) / √(σ²_nc + ε)   normalized input
    y_i    = γ_c x̂_i + β_c                 γ, β per channel (only when affine)
This is GroupNorm with one channel per group (G = C); it is written out here on its own axes.

With running statistics (spec.track_running_stats), each training step updates them with the batch's average of
the per-sample statistics, the variance in spec.running_var's estimator over the m values of one sample:
    running_mean ← update(running_mean, 1/N Σ_n μ_nc)
    running_var  ← update(running_var, 1/N Σ_n σ²_nc [· m/(m−1) when unbiased])
(batchnorm.running_update). This is PyTorch's rule: `torch.instance_norm` runs batch_norm on the input seen as
(1, N·C, *spatial) with the running statistics repeated N times, then averages them over N; the EMA is linear,
so that equals one update with the averaged statistic. Documented only as "keeps running estimates"
(torch/nn/modules/instancenorm.py:157-160); the .cpp (aten/src/ATen/native/Normalization.cpp `instance_norm`) is
not in the installed package, and torch.nn.InstanceNorm1d was checked against this rule in float64.
Eval mode normalizes with the running statistics when kept, else with the eval input's own statistics.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from . import moments
from .batchnorm import reduce_axes, running_update, variance_for_running
from .layout import channel_axis, per_channel
from .normalization import Normalization
from .spec import INSpec
from .steps import LayerInputs, LayerOutputs


def spatial_axes(ndim: int, axis: int) -> tuple[int, ...]:
    """The axes one sample's channel statistics run over: all but the batch axis (0) and the channel axis.
    Raises ValueError for a 2-D input (no spatial axis)."""
    c = channel_axis(ndim, axis)
    if ndim < 3:
        raise ValueError(f"InstanceNorm needs a spatial axis: expected a 3-D to 5-D input. Received: x.ndim={ndim}")
    return tuple(a for a in range(1, ndim) if a != c)


def count_per_instance(shape: tuple[int, ...], axis: int) -> int:
    """m: how many values one sample's channel statistics average over (the spatial size)."""
    return int(np.prod([shape[a] for a in spatial_axes(len(shape), axis)]))


def instance_stats(x: np.ndarray, spec: INSpec) -> tuple[np.ndarray, np.ndarray]:
    """(μ_nc, σ²_nc) of every sample and channel, kept as size-1 spatial axes (σ² biased, by spec.variance)."""
    return moments.mean_and_variance(x, spatial_axes(np.ndim(x), spec.axis), spec.variance)


def forward_train(x: np.ndarray, gamma: np.ndarray, beta: np.ndarray, spec: INSpec) -> tuple[
        np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(y, x̂, 1/√(σ² + ε), μ_nc, σ²_nc): normalize each sample's channel with its own statistics."""
    x = np.asarray(x, dtype=np.float64)
    mu, var = instance_stats(x, spec)
    x_hat, inv_std = moments.normalize_with(x, mu, var, spec.eps)  # x̂
    y = per_channel(gamma, x.ndim, spec.axis) * x_hat + per_channel(beta, x.ndim, spec.axis)  # y = γ x̂ + β
    return y, x_hat, inv_std, mu, var


def forward_eval(x: np.ndarray, gamma: np.ndarray, beta: np.ndarray, running_mean: np.ndarray,
                 running_var: np.ndarray, spec: INSpec) -> np.ndarray:
    """Eval-mode forward with running statistics (shape (C,)): the same affine map for every sample."""
    ndim = np.ndim(x)
    spatial_axes(ndim, spec.axis)  # the same rank check as training
    x_hat, _ = moments.normalize_with(x, per_channel(running_mean, ndim, spec.axis),
                                      per_channel(running_var, ndim, spec.axis), spec.eps)
    return per_channel(gamma, ndim, spec.axis) * x_hat + per_channel(beta, ndim, spec.axis)  # γ x̂ + β


def backward(dy: np.ndarray, x_hat: np.ndarray, inv_std: np.ndarray, gamma: np.ndarray,
             spec: INSpec) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Closed-form (dx, dγ, dβ) of the training forward pass, given dL/dy.

    dβ_c = Σ dy,  dγ_c = Σ dy·x̂  (over samples and spatial positions)
    dx = 1/√(σ²_nc + ε) · (g − mean(g) − x̂·mean(g·x̂)),  g = γ·dy, means over each sample's channel.
    """
    dy = np.asarray(dy, dtype=np.float64)
    ndim, axis = dy.ndim, spec.axis
    per_c = reduce_axes(ndim, axis)  # every axis but the channel's
    dbeta = dy.sum(axis=per_c)  # dβ
    dgamma = (dy * x_hat).sum(axis=per_c)  # dγ
    dx = moments.standardize_backward(per_channel(gamma, ndim, axis) * dy, x_hat, inv_std, spatial_axes(ndim, axis))
    return dx, dgamma, dbeta


def run(spec: INSpec, inputs: LayerInputs) -> LayerOutputs:
    """The layer protocol in float64: `inputs.steps` training steps, then one eval pass."""
    gamma, beta = moments.checked_params(spec, inputs, inputs.xs[0].shape)
    running_mean = np.full(gamma.shape, spec.init_running_mean, dtype=np.float64)
    running_var = np.full(gamma.shape, spec.init_running_var, dtype=np.float64)
    for step, (x, dy) in enumerate(zip(inputs.xs, inputs.dys, strict=True)):
        y, x_hat, inv_std, mu, var = forward_train(x, gamma, beta, spec)
        dx, dgamma, dbeta = backward(dy, x_hat, inv_std, gamma, spec)
        m = count_per_instance(x.shape, spec.axis)
        per_c = reduce_axes(x.ndim, spec.axis)  # every axis but the channel's
        running_mean = running_update(running_mean, mu.mean(axis=per_c), spec, step)  # 1/N Σ_n μ_nc
        stored = variance_for_running(var, m, spec)  # σ²_nc in the running estimator
        running_var = running_update(running_var, stored.mean(axis=per_c), spec, step)  # 1/N Σ_n of it
    if spec.track_running_stats:
        y_eval = forward_eval(inputs.x_eval, gamma, beta, running_mean, running_var, spec)
    else:
        y_eval, *_ = forward_train(inputs.x_eval, gamma, beta, spec)  # the eval input's own statistics
    return LayerOutputs(
        y=y, dx=dx,
        dgamma=dgamma if spec.affine else None,
        dbeta=dbeta if spec.affine else None,
        running_mean=running_mean if spec.track_running_stats else None,
        running_var=running_var if spec.track_running_stats else None,
        y_eval=y_eval,
    )


def condition_factor(spec: INSpec, xs: Sequence[np.ndarray]) -> float:
    """κ = 1 + max over inputs, samples and channels of |μ_nc| / √(σ²_nc + ε) (two-pass σ²; see
    batchnorm.condition_factor and suites/parity/tolerance.py)."""
    worst = 0.0
    for x in xs:
        mu, var = moments.mean_and_variance(x, spatial_axes(np.ndim(x), spec.axis))
        worst = max(worst, float(np.max(np.abs(mu) / np.sqrt(var + spec.eps))))
    return 1.0 + worst


def error_scales(spec: INSpec, inputs: LayerInputs) -> dict[str, float]:
    """The magnitudes the errors of the last training step are judged against (see batchnorm.error_scales):
    max over channels of Σ|dy·x̂| (dγ) and Σ|dy| (dβ), and the largest magnitude of dx's terms."""
    gamma, beta = moments.checked_params(spec, inputs, inputs.xs[0].shape)
    _, x_hat, inv_std, _, _ = forward_train(inputs.xs[-1], gamma, beta, spec)
    dy = np.asarray(inputs.dys[-1], dtype=np.float64)
    ndim, axis = dy.ndim, spec.axis
    g = per_channel(gamma, ndim, axis) * dy  # dL/dx̂ = γ·dy
    scales = {"dx": float(np.max(moments.standardize_backward_magnitude(g, x_hat, inv_std,
                                                                        spatial_axes(ndim, axis))))}
    if spec.affine:
        per_c = reduce_axes(ndim, axis)
        scales["dgamma"] = float(np.max(np.abs(dy * x_hat).sum(axis=per_c)))  # max over channels of Σ|dy·x̂|
        scales["dbeta"] = float(np.max(np.abs(dy).sum(axis=per_c)))  # max over channels of Σ|dy|
    return scales


def evaluate(spec: INSpec, x: np.ndarray, gamma: np.ndarray, beta: np.ndarray) -> np.ndarray:
    """Eval mode before any training step: the spec's initial running statistics, or, without them (PyTorch's
    default), each sample's own statistics."""
    inputs = LayerInputs(xs=(x,), dys=(np.zeros_like(x),), x_eval=x, gamma=gamma, beta=beta)
    gamma, beta = moments.checked_params(spec, inputs, np.shape(x))
    if not spec.track_running_stats:
        return forward_train(x, gamma, beta, spec)[0]
    return forward_eval(x, gamma, beta, np.full(gamma.shape, spec.init_running_mean, dtype=np.float64),
                        np.full(gamma.shape, spec.init_running_var, dtype=np.float64), spec)


NORMALIZATION = Normalization(name="instancenorm", title="InstanceNorm", spec_type=INSpec, run=run,
                              condition_factor=condition_factor, error_scales=error_scales, evaluate=evaluate)
