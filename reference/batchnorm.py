"""The BatchNorm formulas (Ioffe & Szegedy, 2015) in float64 NumPy, each written once.

Notation of the paper, per channel c over the m = N·(spatial size) values of a mini-batch B:
    μ_B  = 1/m Σ x_i                       batch mean
    σ²_B = 1/m Σ (x_i − μ_B)²              batch variance (biased; two passes over the data, or
                                           E[x²] − μ_B² for spec.variance "fast"; see moments.py)
    x̂_i  = (x_i − μ_B) / √(σ²_B + ε)       normalized input
    y_i  = γ x̂_i + β                       scale and shift
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from . import moments
from .layout import channel_axis, per_channel
from .normalization import Normalization
from .spec import BNSpec, RunningStatsSpec
from .steps import LayerInputs, LayerOutputs


def reduce_axes(ndim: int, axis: int) -> tuple[int, ...]:
    """Every axis but the channel axis: the axes a batch statistic averages over."""
    c = channel_axis(ndim, axis)
    return tuple(a for a in range(ndim) if a != c)


def batch_stats(x: np.ndarray, axis: int, *, variance: str = "two-pass") -> tuple[np.ndarray, np.ndarray]:
    """μ_B and the biased σ²_B of every channel, shape (C,): by two passes over the data, or E[x²] − E[x]²
    when `variance` is "fast" (moments.mean_and_variance)."""
    axes = reduce_axes(np.ndim(x), axis)
    mu, var = moments.mean_and_variance(x, axes, variance)  # μ_B, σ²_B, kept as size-1 axes
    return mu.reshape(-1), var.reshape(-1)


def count_per_channel(shape: tuple[int, ...], axis: int) -> int:
    """m: how many values one channel's batch statistics average over."""
    c = channel_axis(len(shape), axis)
    return int(np.prod([n for i, n in enumerate(shape) if i != c]))


def normalize(x: np.ndarray, mean: np.ndarray, var: np.ndarray, gamma: np.ndarray, beta: np.ndarray,
              *, eps: float, axis: int) -> np.ndarray:
    """y = γ (x − mean) / √(var + ε) + β, with (mean, var) either batch or running statistics."""
    ndim = np.ndim(x)
    x_hat, _ = moments.normalize_with(x, per_channel(mean, ndim, axis), per_channel(var, ndim, axis), eps)  # x̂
    return per_channel(gamma, ndim, axis) * x_hat + per_channel(beta, ndim, axis)  # γ x̂ + β


@dataclass(frozen=True)
class TrainCache:
    """What the backward pass needs from the training forward pass."""

    x_hat: np.ndarray  # x̂
    mu: np.ndarray  # μ_B, shape (C,)
    var: np.ndarray  # σ²_B (biased), shape (C,)
    inv_std: np.ndarray  # 1/√(σ²_B + ε), shape (C,)
    axis: int


def forward_train(x: np.ndarray, gamma: np.ndarray, beta: np.ndarray, *, eps: float, axis: int,
                  variance: str = "two-pass") -> tuple[np.ndarray, TrainCache]:
    """Training-mode forward: normalize with the batch's own statistics."""
    ndim = np.ndim(x)
    mu, var = batch_stats(x, axis, variance=variance)
    x_hat, inv_std = moments.normalize_with(x, per_channel(mu, ndim, axis), per_channel(var, ndim, axis), eps)  # x̂
    y = per_channel(gamma, ndim, axis) * x_hat + per_channel(beta, ndim, axis)  # y = γ x̂ + β
    return y, TrainCache(x_hat=x_hat, mu=mu, var=var, inv_std=inv_std.reshape(-1), axis=axis)


def forward_eval(x: np.ndarray, gamma: np.ndarray, beta: np.ndarray, running_mean: np.ndarray,
                 running_var: np.ndarray, *, eps: float, axis: int) -> np.ndarray:
    """Eval-mode forward: normalize with the running statistics (a fixed affine map)."""
    return normalize(x, running_mean, running_var, gamma, beta, eps=eps, axis=axis)


def backward(dy: np.ndarray, cache: TrainCache, gamma: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Closed-form gradients of the training forward pass, given dL/dy.

    dβ = Σ dy
    dγ = Σ dy · x̂
    dx = γ/√(σ²_B + ε) · (dy − mean(dy) − x̂ · mean(dy · x̂))
    (the sums and means run over the m values of each channel; μ_B and σ²_B depend on x).
    """
    dy = np.asarray(dy, dtype=np.float64)
    ndim, axis = dy.ndim, cache.axis
    axes = reduce_axes(ndim, axis)
    dbeta = dy.sum(axis=axes)  # dβ
    dgamma = (dy * cache.x_hat).sum(axis=axes)  # dγ
    g = per_channel(gamma, ndim, axis) * dy  # dL/dx̂ = γ·dy
    dx = moments.standardize_backward(g, cache.x_hat, per_channel(cache.inv_std, ndim, axis), axes)
    return dx, dgamma, dbeta


def running_update(running: np.ndarray, batch_value: np.ndarray, spec: RunningStatsSpec, step: int = 0) -> np.ndarray:
    """One moving-average step of a running statistic, in the spec's momentum convention: in training step `step`
    (0 for the first) the new batch gets weight w = momentum ("new"), 1 − momentum ("old"), or 1/k for the
    cumulative average (momentum None; the k-th batch the layer has seen)."""
    w = spec.weight_at(step)
    return (1.0 - w) * np.asarray(running, dtype=np.float64) + w * np.asarray(batch_value, dtype=np.float64)


def variance_for_running(var: np.ndarray, m: int, spec: RunningStatsSpec) -> np.ndarray:
    """The batch variance as the running estimate stores it: σ²_B, or σ²_B · m/(m−1) when unbiased."""
    if spec.running_var == "biased":
        return var
    if m < 2:
        return np.full_like(var, np.nan)  # m/(m−1) is undefined for a single value
    return var * m / (m - 1)


def running_var_as_unbiased(stored: np.ndarray, initial: np.ndarray, m: int, spec: BNSpec) -> np.ndarray:
    """A biased running variance after ONE update, as the unbiased estimator would have stored it.

    After one step r = (1 − w)·r₀ + w·σ²_B; the unbiased estimator stores (1 − w)·r₀ + w·σ²_B·m/(m−1), so
    r' = (1 − w)·r₀ + (r − (1 − w)·r₀)·m/(m−1), w the new batch's weight, m the values per channel.
    """
    kept = (1.0 - spec.new_weight) * np.asarray(initial, dtype=np.float64)  # (1 − w)·r₀
    return kept + (np.asarray(stored, dtype=np.float64) - kept) * m / (m - 1)


def run(spec: BNSpec, inputs: LayerInputs) -> LayerOutputs:
    """The layer protocol in float64: `inputs.steps` training steps, then one eval pass."""
    gamma, beta = inputs.affine_params(spec)
    channels = gamma.shape[0]
    running_mean = np.full(channels, spec.init_running_mean, dtype=np.float64)
    running_var = np.full(channels, spec.init_running_var, dtype=np.float64)
    for step, (x, dy) in enumerate(zip(inputs.xs, inputs.dys, strict=True)):
        y, cache = forward_train(x, gamma, beta, eps=spec.eps, axis=spec.axis, variance=spec.variance)
        dx, dgamma, dbeta = backward(dy, cache, gamma)
        m = count_per_channel(x.shape, spec.axis)
        running_mean = running_update(running_mean, cache.mu, spec, step)
        running_var = running_update(running_var, variance_for_running(cache.var, m, spec), spec, step)
    if spec.track_running_stats:
        y_eval = forward_eval(inputs.x_eval, gamma, beta, running_mean, running_var, eps=spec.eps, axis=spec.axis)
    else:
        # Without running statistics, eval mode normalizes with the eval batch's own statistics.
        y_eval, _ = forward_train(inputs.x_eval, gamma, beta, eps=spec.eps, axis=spec.axis, variance=spec.variance)
    return LayerOutputs(
        y=y, dx=dx,
        dgamma=dgamma if spec.affine else None,
        dbeta=dbeta if spec.affine else None,
        running_mean=running_mean if spec.track_running_stats else None,
        running_var=running_var if spec.track_running_stats else None,
        y_eval=y_eval,
    )


def condition_factor(spec: BNSpec, xs: Sequence[np.ndarray]) -> float:
    """κ = 1 + max over inputs and channels of |μ_B| / √(σ²_B + ε).

    A float μ_B is only known to u·|μ_B|, which perturbs x̂ by u·|μ_B|/σ: κ measures how far the data sits from
    zero relative to its spread (see suites/parity/tolerance.py). A property of the data: always computed with
    the two-pass σ²_B, whatever spec.variance.
    """
    worst = 0.0
    for x in xs:
        mu, var = batch_stats(x, spec.axis)
        worst = max(worst, float(np.max(np.abs(mu) / np.sqrt(var + spec.eps))))
    return 1.0 + worst


def error_scales(spec: BNSpec, inputs: LayerInputs) -> dict[str, float]:
    """The magnitudes the errors of the last training step's sums are judged against.

    dβ = Σ dy and dγ = Σ dy·x̂ are sums over m values: a sum's rounding error is bounded by u times the sum of
    its terms' magnitudes, Σ|dy| and Σ|dy·x̂|, not by its (possibly cancelled) value. dx = γ/√(σ²_B + ε)·(dy −
    mean(dy) − x̂·mean(dy·x̂)) is judged against the magnitude of its terms, so that a result that cancels to
    near zero (dx of a batch of 2 is ≈ 0) is not judged by its small value.
    """
    gamma, beta = inputs.affine_params(spec)
    _, cache = forward_train(inputs.xs[-1], gamma, beta, eps=spec.eps, axis=spec.axis, variance=spec.variance)
    dy = np.asarray(inputs.dys[-1], dtype=np.float64)
    ndim, axes = dy.ndim, reduce_axes(dy.ndim, spec.axis)
    g = per_channel(gamma, ndim, spec.axis) * dy  # dL/dx̂ = γ·dy
    dx_terms = moments.standardize_backward_magnitude(g, cache.x_hat, per_channel(cache.inv_std, ndim, spec.axis),
                                                      axes)
    return {
        "dbeta": float(np.max(np.abs(dy).sum(axis=axes))),  # max over channels of Σ|dy|
        "dgamma": float(np.max(np.abs(dy * cache.x_hat).sum(axis=axes))),  # max over channels of Σ|dy·x̂|
        "dx": float(np.max(dx_terms)),
    }


def evaluate(spec: BNSpec, x: np.ndarray, gamma: np.ndarray, beta: np.ndarray) -> np.ndarray:
    """Eval mode before any training step: the spec's initial running statistics, or, without running statistics,
    the input's own batch statistics."""
    gamma, beta = (gamma, beta) if spec.affine else (np.ones_like(gamma), np.zeros_like(beta))
    if not spec.track_running_stats:
        return forward_train(x, gamma, beta, eps=spec.eps, axis=spec.axis, variance=spec.variance)[0]
    channels = np.shape(gamma)[0]
    return forward_eval(x, gamma, beta, np.full(channels, spec.init_running_mean, dtype=np.float64),
                        np.full(channels, spec.init_running_var, dtype=np.float64), eps=spec.eps, axis=spec.axis)


NORMALIZATION = Normalization(name="batchnorm", title="BatchNorm", spec_type=BNSpec, run=run,
                              condition_factor=condition_factor, error_scales=error_scales, evaluate=evaluate)
