"""BatchNorm across data-parallel replicas, in float64 NumPy: the global-batch BN and the per-replica BN.

A global batch of N samples is split into R shards, one per replica (the last one smaller when R does not divide N).

Synchronized ("global-batch") BN normalizes every shard with the statistics of the whole batch. No replica holds it,
so each computes its count, sum and centred sum, and one all-reduce combines them (Chan, Golub & LeVeque, 1979),
weighting each shard by its count m_r:
    m   = Σ_r m_r
    μ   = Σ_r m_r μ_r / m
    M₂  = Σ_r [ M₂,r + m_r (μ_r − μ)² ]           M₂,r = Σ_{i in r} (x_i − μ_r)²
    σ²  = M₂ / m                                   (the running variance's unbiased one: M₂ / (m − 1), the global m)
The backward pass all-reduces the two sums of BatchNorm's closed form, Σ dy and Σ dy·x̂, over every shard:
    dx_i = γ/√(σ² + ε) · (dy_i − Σ dy / m − x̂_i · Σ dy·x̂ / m)
So synchronized BN over R shards *is* BatchNorm of the concatenated batch, and this module computes it that way (with
reference/batchnorm.py's formulas) and the all-reduce way above (`combine_moments`, `synchronized_backward`): the
tests prove the two equal, unequal shards included.

A synchronized layer that averages the replicas' means and mean squares with *equal* weights 1/R (a `pmean` of
each replica's statistics) computes the global batch's only when the shards are equal. With unequal shards it is
a BatchNorm whose samples are weighted w_i = 1/(R·m_r), m_r the count of the sample's shard, in place of 1/m:
    μ   = Σ_i w_i x_i                              (= (1/R) Σ_r μ_r)
    σ²  = Σ_i w_i (x_i − μ)²                       (= (1/R) Σ_r mean over shard r of (x − μ)²)
    dx_i = γ/√(σ² + ε) · (dy_i − w_i Σ_j dy_j − w_i x̂_i Σ_j dy_j·x̂_j)
(`equal_weight_step`; with w_i = 1/m this is BatchNorm's own backward).

Per-replica BN (what data-parallel training gives without synchronization) normalizes each shard with its own
statistics: each replica is a BatchNorm of its shard, and its running statistics are its own; what a framework then
keeps (replica 0's, or their mean) is that framework's convention (`RUNNING_STATS`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from . import batchnorm
from .layout import per_channel
from .spec import BNSpec

# How a synchronized layer weights the shards' statistics: by their counts (the global batch) or equally (1/R).
ShardWeighting = Literal["count", "equal"]
SHARD_WEIGHTINGS: tuple[str, ...] = ("count", "equal")

# What a per-replica run's running statistics are, once read back as one set: those of replica 0 (each replica's
# copy of the layer updates its own and a checkpoint saves replica 0's), or the mean over the replicas.
RunningStats = Literal["replica0", "mean"]
RUNNING_STATS: tuple[str, ...] = ("replica0", "mean")


def shard_sizes(n: int, replicas: int) -> tuple[int, ...]:
    """How a global batch of `n` samples splits over `replicas`: ⌈n/R⌉ each, the last shard the remainder.

    Raises ValueError when a replica would get no sample.
    """
    if replicas < 1 or n < replicas:
        raise ValueError(f"expected 1 <= replicas <= n. Received: n={n}, replicas={replicas}")
    size = -(-n // replicas)  # ⌈n/R⌉
    sizes = [size] * (n // size) + ([n % size] if n % size else [])
    if len(sizes) != replicas:
        raise ValueError(f"a batch of {n} does not split into {replicas} shards of ⌈n/R⌉ = {size} and a remainder")
    return tuple(sizes)


def split(x: np.ndarray, sizes: Sequence[int]) -> list[np.ndarray]:
    """The shards of x (its batch axis 0) of the given sizes, in order."""
    if sum(sizes) != np.shape(x)[0]:
        raise ValueError(f"shard sizes {tuple(sizes)} must add up to the batch {np.shape(x)[0]}")
    return np.split(np.asarray(x), np.cumsum(sizes)[:-1], axis=0)


@dataclass(frozen=True)
class ShardMoments:
    """What one replica contributes to the all-reduce, per channel: its count m_r, mean μ_r and centred sum M₂,r."""

    count: int
    mean: np.ndarray
    m2: np.ndarray


def shard_moments(x: np.ndarray, axis: int) -> ShardMoments:
    """m_r, μ_r and M₂,r = Σ (x − μ_r)² of one shard's channels."""
    mu, var = batchnorm.batch_stats(x, axis)  # μ_r and the biased σ²_r
    m = batchnorm.count_per_channel(np.shape(x), axis)
    return ShardMoments(count=m, mean=mu, m2=var * m)


def combine_moments(shards: Sequence[ShardMoments]) -> ShardMoments:
    """The all-reduce: the global m, μ and M₂ from every shard's, each shard weighted by its count."""
    m = sum(s.count for s in shards)  # m = Σ m_r
    mu = sum(s.count * s.mean for s in shards) / m  # μ = Σ m_r μ_r / m
    m2 = sum(s.m2 + s.count * (s.mean - mu) ** 2 for s in shards)  # M₂ = Σ [M₂,r + m_r (μ_r − μ)²]
    return ShardMoments(count=m, mean=mu, m2=m2)


@dataclass(frozen=True)
class ReplicaStep:
    """One training step of the replicas: each shard's y and dx, the gradients of γ and β, the batch statistics.

    dgamma and dbeta are summed over every shard (what data-parallel training all-reduces), in both modes; mean and
    var are the global batch's (synchronized) or one row per replica (per-replica).
    """

    ys: tuple[np.ndarray, ...]
    dxs: tuple[np.ndarray, ...]
    dgamma: np.ndarray
    dbeta: np.ndarray
    mean: np.ndarray
    var: np.ndarray


def synchronized_step(xs: Sequence[np.ndarray], dys: Sequence[np.ndarray], gamma: np.ndarray, beta: np.ndarray,
                      spec: BNSpec) -> ReplicaStep:
    """Global-batch BN of the shards: BatchNorm of their concatenation, split back into shards."""
    sizes = [np.shape(x)[0] for x in xs]
    x, dy = np.concatenate(xs, axis=0), np.concatenate(dys, axis=0)
    y, cache = batchnorm.forward_train(x, gamma, beta, eps=spec.eps, axis=spec.axis)
    dx, dgamma, dbeta = batchnorm.backward(dy, cache, gamma)
    return ReplicaStep(ys=tuple(split(y, sizes)), dxs=tuple(split(dx, sizes)), dgamma=dgamma, dbeta=dbeta,
                       mean=cache.mu, var=cache.var)


def synchronized_backward(xs: Sequence[np.ndarray], dys: Sequence[np.ndarray], gamma: np.ndarray,
                          spec: BNSpec) -> tuple[np.ndarray, ...]:
    """Each shard's dx as a synchronized layer computes it: the all-reduced statistics, then the all-reduced sums.

    dx_i = γ/√(σ² + ε) · (dy_i − Σ dy / m − x̂_i · Σ dy·x̂ / m), the sums over every shard.
    """
    total = combine_moments([shard_moments(x, spec.axis) for x in xs])
    var = total.m2 / total.count  # σ² = M₂ / m
    x_hats = [batchnorm.normalize(x, total.mean, var, np.ones_like(gamma), np.zeros_like(gamma), eps=spec.eps,
                                  axis=spec.axis) for x in xs]  # x̂ with the global statistics
    axes = batchnorm.reduce_axes(np.ndim(xs[0]), spec.axis)
    sum_dy = sum(np.asarray(dy, dtype=np.float64).sum(axis=axes) for dy in dys)  # all-reduce of Σ dy
    sum_dy_xhat = sum((np.asarray(dy, dtype=np.float64) * xh).sum(axis=axes)  # all-reduce of Σ dy·x̂
                      for dy, xh in zip(dys, x_hats, strict=True))
    ndim = np.ndim(xs[0])
    scale = per_channel(np.asarray(gamma, dtype=np.float64) / np.sqrt(var + spec.eps), ndim, spec.axis)
    return tuple(scale * (np.asarray(dy, dtype=np.float64) - per_channel(sum_dy / total.count, ndim, spec.axis)
                          - xh * per_channel(sum_dy_xhat / total.count, ndim, spec.axis))
                 for dy, xh in zip(dys, x_hats, strict=True))


def equal_weights(xs: Sequence[np.ndarray], axis: int) -> list[np.ndarray]:
    """Each shard's per-value weight w = 1/(R·m_r) when the replicas' statistics are averaged with equal weights."""
    return [np.full(np.shape(x)[0], 1.0 / (len(xs) * batchnorm.count_per_channel(np.shape(x), axis))) for x in xs]


def equal_weight_moments(xs: Sequence[np.ndarray], axis: int) -> tuple[np.ndarray, np.ndarray]:
    """μ = (1/R) Σ_r μ_r and σ² = (1/R) Σ_r mean over shard r of (x − μ)²: the replicas' statistics averaged equally."""
    axes = batchnorm.reduce_axes(np.ndim(xs[0]), axis)
    mu = np.mean([np.asarray(x, dtype=np.float64).mean(axis=axes) for x in xs], axis=0)  # (1/R) Σ_r μ_r
    ndim = np.ndim(xs[0])
    var = np.mean([((np.asarray(x, dtype=np.float64) - per_channel(mu, ndim, axis)) ** 2).mean(axis=axes)
                   for x in xs], axis=0)  # (1/R) Σ_r mean_r (x − μ)²
    return mu, var


def equal_weight_step(xs: Sequence[np.ndarray], dys: Sequence[np.ndarray], gamma: np.ndarray, beta: np.ndarray,
                      spec: BNSpec) -> ReplicaStep:
    """Synchronized BN that averages the replicas' statistics with equal weights (module docstring): the weighted
    BatchNorm with w_i = 1/(R·m_r). Equal shards make it `synchronized_step`."""
    ndim, axis = np.ndim(xs[0]), spec.axis
    axes = batchnorm.reduce_axes(ndim, axis)
    mu, var = equal_weight_moments(xs, axis)
    x_hats = [batchnorm.normalize(x, mu, var, np.ones_like(gamma), np.zeros_like(gamma), eps=spec.eps, axis=axis)
              for x in xs]
    ys = tuple(per_channel(np.asarray(gamma, dtype=np.float64), ndim, axis) * xh
               + per_channel(np.asarray(beta, dtype=np.float64), ndim, axis) for xh in x_hats)
    w = [weight[0] for weight in equal_weights(xs, axis)]  # one weight per shard
    dys64 = [np.asarray(dy, dtype=np.float64) for dy in dys]
    sum_dy = sum(dy.sum(axis=axes) for dy in dys64)  # Σ_j dy_j
    sum_dy_xhat = sum((dy * xh).sum(axis=axes) for dy, xh in zip(dys64, x_hats, strict=True))  # Σ_j dy_j·x̂_j
    scale = per_channel(np.asarray(gamma, dtype=np.float64) / np.sqrt(var + spec.eps), ndim, axis)
    dxs = tuple(scale * (dy - w_r * per_channel(sum_dy, ndim, axis) - w_r * xh * per_channel(sum_dy_xhat, ndim, axis))
                for dy, xh, w_r in zip(dys64, x_hats, w, strict=True))
    return ReplicaStep(ys=ys, dxs=dxs, dgamma=sum_dy_xhat, dbeta=sum_dy, mean=mu, var=var)


def per_replica_step(xs: Sequence[np.ndarray], dys: Sequence[np.ndarray], gamma: np.ndarray, beta: np.ndarray,
                     spec: BNSpec) -> ReplicaStep:
    """Per-replica BN: each shard a BatchNorm of its own; dγ and dβ summed over the replicas."""
    steps = []
    for x, dy in zip(xs, dys, strict=True):
        y, cache = batchnorm.forward_train(x, gamma, beta, eps=spec.eps, axis=spec.axis)
        steps.append((y, *batchnorm.backward(dy, cache, gamma), cache))
    return ReplicaStep(ys=tuple(s[0] for s in steps), dxs=tuple(s[1] for s in steps),
                       dgamma=sum(s[2] for s in steps), dbeta=sum(s[3] for s in steps),
                       mean=np.stack([s[4].mu for s in steps]), var=np.stack([s[4].var for s in steps]))


def replica_running(steps: Sequence[Sequence[np.ndarray]],
                    spec: BNSpec) -> tuple[tuple[np.ndarray, np.ndarray], ...]:
    """Per-replica BN's running (mean, variance) of every replica after the steps: each updated with its own
    shard's μ_r and σ²_r (unbiased over its own m_r when the spec says so)."""
    channels = np.shape(steps[0][0])[spec.axis]
    running = [(np.full(channels, spec.init_running_mean), np.full(channels, spec.init_running_var))
               for _ in steps[0]]
    for xs in steps:
        for r, x in enumerate(xs):
            s = shard_moments(x, spec.axis)
            mean, var = running[r]
            running[r] = (batchnorm.running_update(mean, s.mean, spec),
                          batchnorm.running_update(var, batchnorm.variance_for_running(s.m2 / s.count, s.count, spec),
                                                   spec))
    return tuple(running)


def running_after(steps: Sequence[Sequence[np.ndarray]], spec: BNSpec, *, synchronized: bool,
                  running_stats: RunningStats = "replica0",
                  weighting: ShardWeighting = "count") -> tuple[np.ndarray, np.ndarray]:
    """The running (mean, variance) after training steps, each step given as its shards.

    Synchronized: one update per step with the global batch's μ and σ² (unbiased over the global count m), or with
    the equally weighted ones (`weighting="equal"`, `equal_weight_moments`). Per replica: each replica updates with
    its own shard's (`replica_running`); the result is replica 0's or the mean over the replicas (`running_stats`).
    """
    if running_stats not in RUNNING_STATS:
        raise ValueError(f"running_stats must be one of {', '.join(RUNNING_STATS)}. Received: {running_stats!r}")
    if weighting not in SHARD_WEIGHTINGS:
        raise ValueError(f"weighting must be one of {', '.join(SHARD_WEIGHTINGS)}. Received: {weighting!r}")
    if synchronized:
        channels = np.shape(steps[0][0])[spec.axis]
        mean, var = np.full(channels, spec.init_running_mean), np.full(channels, spec.init_running_var)
        for xs in steps:
            total = combine_moments([shard_moments(x, spec.axis) for x in xs])
            mu, sigma2 = ((total.mean, total.m2 / total.count) if weighting == "count"
                          else equal_weight_moments(xs, spec.axis))
            mean = batchnorm.running_update(mean, mu, spec)
            var = batchnorm.running_update(var, batchnorm.variance_for_running(sigma2, total.count, spec), spec)
        return mean, var
    running = replica_running(steps, spec)
    if running_stats == "replica0":
        return running[0]
    return np.mean([m for m, _ in running], axis=0), np.mean([v for _, v in running], axis=0)
