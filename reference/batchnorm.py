"""The BatchNorm formulas (Ioffe & Szegedy, 2015) in float64 NumPy, each written once.

Notation of the paper, per channel c over the m = N·(spatial size) values of a mini-batch B:
    μ_B  = 1/m Σ x_i                       batch mean
    σ²_B = 1/m Σ (x_i − μ_B)²              batch variance (biased; two passes over the data)
    x̂_i  = (x_i − μ_B) / √(σ²_B + ε)       normalized input
    y_i  = γ x̂_i + β                       scale and shift
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .spec import BNSpec


def channel_axis(ndim: int, axis: int) -> int:
    """The channel axis as a non-negative index. Raises ValueError for ranks outside 2-5."""
    if not 2 <= ndim <= 5:
        raise ValueError(f"expected a 2-D to 5-D input. Received: x.ndim={ndim}")
    if not -ndim <= axis < ndim:
        raise ValueError(f"axis {axis} is out of range for a {ndim}-D input")
    return axis % ndim


def reduce_axes(ndim: int, axis: int) -> tuple[int, ...]:
    """Every axis but the channel axis: the axes a batch statistic averages over."""
    c = channel_axis(ndim, axis)
    return tuple(a for a in range(ndim) if a != c)


def per_channel(v: np.ndarray, ndim: int, axis: int) -> np.ndarray:
    """Reshape a (C,) vector so that it broadcasts along `axis` of an ndim-D input."""
    shape = [1] * ndim
    shape[channel_axis(ndim, axis)] = -1
    return np.asarray(v, dtype=np.float64).reshape(shape)


def batch_stats(x: np.ndarray, axis: int) -> tuple[np.ndarray, np.ndarray]:
    """μ_B and the biased σ²_B of every channel, by two passes over the data (no E[x²] − E[x]²)."""
    x = np.asarray(x, dtype=np.float64)
    axes = reduce_axes(x.ndim, axis)
    mu = x.mean(axis=axes)  # μ_B
    var = ((x - per_channel(mu, x.ndim, axis)) ** 2).mean(axis=axes)  # σ²_B
    return mu, var


def count_per_channel(shape: tuple[int, ...], axis: int) -> int:
    """m: how many values one channel's batch statistics average over."""
    c = channel_axis(len(shape), axis)
    return int(np.prod([n for i, n in enumerate(shape) if i != c]))


def normalize(x: np.ndarray, mean: np.ndarray, var: np.ndarray, gamma: np.ndarray, beta: np.ndarray,
              *, eps: float, axis: int) -> np.ndarray:
    """y = γ (x − mean) / √(var + ε) + β, with (mean, var) either batch or running statistics."""
    x = np.asarray(x, dtype=np.float64)
    x_hat = (x - per_channel(mean, x.ndim, axis)) / np.sqrt(per_channel(var, x.ndim, axis) + eps)  # x̂
    return per_channel(gamma, x.ndim, axis) * x_hat + per_channel(beta, x.ndim, axis)  # γ x̂ + β


@dataclass(frozen=True)
class TrainCache:
    """What the backward pass needs from the training forward pass."""

    x_hat: np.ndarray  # x̂
    mu: np.ndarray  # μ_B, shape (C,)
    var: np.ndarray  # σ²_B (biased), shape (C,)
    inv_std: np.ndarray  # 1/√(σ²_B + ε), shape (C,)
    axis: int


def forward_train(x: np.ndarray, gamma: np.ndarray, beta: np.ndarray, *, eps: float,
                  axis: int) -> tuple[np.ndarray, TrainCache]:
    """Training-mode forward: normalize with the batch's own statistics."""
    x = np.asarray(x, dtype=np.float64)
    mu, var = batch_stats(x, axis)
    inv_std = 1.0 / np.sqrt(var + eps)  # 1/√(σ²_B + ε)
    x_hat = (x - per_channel(mu, x.ndim, axis)) * per_channel(inv_std, x.ndim, axis)  # x̂
    y = per_channel(gamma, x.ndim, axis) * x_hat + per_channel(beta, x.ndim, axis)  # y = γ x̂ + β
    return y, TrainCache(x_hat=x_hat, mu=mu, var=var, inv_std=inv_std, axis=axis)


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
    m = count_per_channel(dy.shape, axis)
    mean_dy = per_channel(dbeta / m, ndim, axis)
    mean_dy_xhat = per_channel(dgamma / m, ndim, axis)
    scale = per_channel(np.asarray(gamma, dtype=np.float64) * cache.inv_std, ndim, axis)
    dx = scale * (dy - mean_dy - cache.x_hat * mean_dy_xhat)
    return dx, dgamma, dbeta


def running_update(running: np.ndarray, batch_value: np.ndarray, spec: BNSpec) -> np.ndarray:
    """One exponential-moving-average step of a running statistic, in the spec's momentum convention."""
    w = spec.new_weight  # the weight of the new batch: momentum ("new") or 1 − momentum ("old")
    return (1.0 - w) * np.asarray(running, dtype=np.float64) + w * np.asarray(batch_value, dtype=np.float64)


def variance_for_running(var: np.ndarray, m: int, spec: BNSpec) -> np.ndarray:
    """The batch variance as the running estimate stores it: σ²_B, or σ²_B · m/(m−1) when unbiased."""
    if spec.running_var == "biased":
        return var
    if m < 2:
        return np.full_like(var, np.nan)  # m/(m−1) is undefined for a single value
    return var * m / (m - 1)
