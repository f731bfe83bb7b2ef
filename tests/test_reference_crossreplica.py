"""The cross-replica BatchNorm reference: the all-reduce form equals BatchNorm of the concatenated batch, unequal
shards weighted by their counts; per-replica BN is each shard's own BatchNorm; running statistics of both modes."""

from __future__ import annotations

import numpy as np
import pytest

from bnparity.reference import batchnorm
from bnparity.reference import crossreplica as cr
from bnparity.reference.spec import BNSpec


def _batch(shape: tuple[int, ...], axis: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    c = shape[axis]
    bshape = [1] * len(shape)
    bshape[axis] = c
    x = rng.uniform(-2, 2, c).reshape(bshape) + rng.uniform(0.5, 3, c).reshape(bshape) * rng.standard_normal(shape)
    return x, rng.standard_normal(shape), rng.normal(1, 0.5, c), rng.normal(0, 0.5, c)


def test_shard_sizes_put_the_remainder_last():
    assert cr.shard_sizes(128, 4) == (32, 32, 32, 32)
    assert cr.shard_sizes(10, 4) == (3, 3, 3, 1)
    assert cr.shard_sizes(7, 2) == (4, 3)
    with pytest.raises(ValueError, match="replicas"):
        cr.shard_sizes(3, 4)
    with pytest.raises(ValueError, match="does not split"):
        cr.shard_sizes(9, 4)  # ⌈9/4⌉ = 3 gives 3 shards, not 4


@pytest.mark.parametrize("sizes", [(8, 8), (5, 3), (4, 4, 4, 1), (6, 1, 3, 2)])
@pytest.mark.parametrize("shape,axis", [((16, 5), 1), ((16, 3, 4, 4), 1), ((16, 4, 4, 3), -1)])
def test_the_all_reduce_of_counts_means_and_centred_sums_is_the_global_batch(sizes, shape, axis):
    n = sum(sizes)
    x, _, _, _ = _batch((n, *shape[1:]), axis, seed=n)
    total = cr.combine_moments([cr.shard_moments(s, axis) for s in cr.split(x, sizes)])
    mu, var = batchnorm.batch_stats(x, axis)
    assert total.count == batchnorm.count_per_channel(x.shape, axis)
    np.testing.assert_allclose(total.mean, mu, rtol=1e-13, atol=1e-14)
    np.testing.assert_allclose(total.m2 / total.count, var, rtol=1e-12)


def test_equal_weights_for_unequal_shards_would_be_wrong():
    """The average of the shards' means is not the batch mean when the shards differ in size: the counts matter."""
    x, _, _, _ = _batch((10, 3), 1, seed=1)
    shards = [cr.shard_moments(s, 1) for s in cr.split(x, (7, 3))]
    unweighted = np.mean([s.mean for s in shards], axis=0)
    assert np.abs(unweighted - cr.combine_moments(shards).mean).max() > 1e-2


@pytest.mark.parametrize("sizes", [(8, 8), (4, 4, 4, 1), (6, 1, 3, 2)])
def test_synchronized_bn_is_batchnorm_of_the_concatenated_batch_and_its_all_reduce_backward(sizes):
    spec = BNSpec(axis=1, eps=1e-3)
    n = sum(sizes)
    x, dy, gamma, beta = _batch((n, 3, 2, 2), 1, seed=2 + n)
    step = cr.synchronized_step(cr.split(x, sizes), cr.split(dy, sizes), gamma, beta, spec)
    y, cache = batchnorm.forward_train(x, gamma, beta, eps=spec.eps, axis=1)
    dx, dgamma, dbeta = batchnorm.backward(dy, cache, gamma)
    np.testing.assert_allclose(np.concatenate(step.ys), y, rtol=0, atol=1e-14)
    np.testing.assert_allclose(np.concatenate(step.dxs), dx, rtol=0, atol=1e-14)
    np.testing.assert_allclose(step.dgamma, dgamma, rtol=1e-14)
    np.testing.assert_allclose(step.dbeta, dbeta, rtol=1e-14)
    # the all-reduce form of the backward pass (global statistics, all-reduced Σ dy and Σ dy·x̂) gives the same dx
    for got, want in zip(cr.synchronized_backward(cr.split(x, sizes), cr.split(dy, sizes), gamma, spec), step.dxs,
                         strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-11, atol=1e-13)


def test_the_synchronized_backward_matches_finite_differences_of_the_whole_batch_loss():
    spec = BNSpec(axis=1, eps=1e-3)
    sizes = (3, 2)
    x, dy, gamma, beta = _batch((5, 2), 1, seed=9)

    def loss(xv: np.ndarray) -> float:
        ys = cr.synchronized_step(cr.split(xv, sizes), cr.split(dy, sizes), gamma, beta, spec).ys
        return float(sum((y * d).sum() for y, d in zip(ys, cr.split(dy, sizes), strict=True)))

    grad = np.concatenate(cr.synchronized_backward(cr.split(x, sizes), cr.split(dy, sizes), gamma, spec))
    h = 1e-6
    for index in np.ndindex(x.shape):
        e = np.zeros_like(x)
        e[index] = h
        fd = (loss(x + e) - loss(x - e)) / (2 * h)
        assert grad[index] == pytest.approx(fd, rel=1e-6, abs=1e-8), index


def test_per_replica_bn_is_each_shards_own_batchnorm_and_differs_from_the_synchronized_one():
    spec = BNSpec(axis=1)
    sizes = (4, 4)
    x, dy, gamma, beta = _batch((8, 3), 1, seed=4)
    xs, dys = cr.split(x, sizes), cr.split(dy, sizes)
    step = cr.per_replica_step(xs, dys, gamma, beta, spec)
    for r, (xr, dyr) in enumerate(zip(xs, dys, strict=True)):
        y, cache = batchnorm.forward_train(xr, gamma, beta, eps=spec.eps, axis=1)
        np.testing.assert_array_equal(step.ys[r], y)
        np.testing.assert_array_equal(step.dxs[r], batchnorm.backward(dyr, cache, gamma)[0])
    synced = cr.synchronized_step(xs, dys, gamma, beta, spec)
    assert np.abs(np.concatenate(step.ys) - np.concatenate(synced.ys)).max() > 1e-2
    # with one replica the two modes are the same BatchNorm
    one = cr.per_replica_step([x], [dy], gamma, beta, spec)
    np.testing.assert_allclose(one.ys[0], cr.synchronized_step([x], [dy], gamma, beta, spec).ys[0], atol=1e-15)


@pytest.mark.parametrize("momentum_weighs", ["new", "old"])
def test_running_statistics_of_both_modes(momentum_weighs):
    spec = BNSpec(axis=1, momentum=0.3 if momentum_weighs == "new" else 0.7, momentum_weighs=momentum_weighs)
    sizes = (5, 3)
    batches = [_batch((8, 3), 1, seed=20 + k)[0] for k in range(3)]
    steps = [cr.split(b, sizes) for b in batches]
    # synchronized: exactly the running statistics of a single-device BatchNorm on the global batches
    mean, var = cr.running_after(steps, spec, synchronized=True)
    want_mean, want_var = np.zeros(3), np.ones(3)
    for b in batches:
        mu, v = batchnorm.batch_stats(b, 1)
        want_mean = batchnorm.running_update(want_mean, mu, spec)
        want_var = batchnorm.running_update(want_var, v * 8 / 7, spec)  # unbiased over the global count m = 8
    np.testing.assert_allclose(mean, want_mean, rtol=1e-13)
    np.testing.assert_allclose(var, want_var, rtol=1e-13)
    # per replica: replica 0's own (unbiased over its 5 values), or the mean of the replicas'
    r0_mean, r0_var = cr.running_after(steps, spec, synchronized=False, running_stats="replica0")
    own = cr.running_after([[s[0]] for s in steps], spec, synchronized=True)
    np.testing.assert_allclose(r0_mean, own[0], rtol=1e-13)
    np.testing.assert_allclose(r0_var, own[1], rtol=1e-13)
    avg_mean, _ = cr.running_after(steps, spec, synchronized=False, running_stats="mean")
    other = cr.running_after([[s[1]] for s in steps], spec, synchronized=True)
    np.testing.assert_allclose(avg_mean, (own[0] + other[0]) / 2, rtol=1e-13)
    assert np.abs(r0_var - var).max() > 1e-3  # per-replica statistics are not the global batch's
    with pytest.raises(ValueError, match="running_stats"):
        cr.running_after(steps, spec, synchronized=False, running_stats="sum")


def test_equal_weights_are_the_global_batch_when_the_shards_are_equal():
    spec = BNSpec(axis=-1, eps=1e-3)
    x, dy, gamma, beta = _batch((8, 2, 2, 3), -1, seed=30)
    xs, dys = cr.split(x, (4, 4)), cr.split(dy, (4, 4))
    eq, synced = cr.equal_weight_step(xs, dys, gamma, beta, spec), cr.synchronized_step(xs, dys, gamma, beta, spec)
    for a, b in [*zip(eq.ys, synced.ys, strict=True), *zip(eq.dxs, synced.dxs, strict=True),
                 (eq.dgamma, synced.dgamma), (eq.dbeta, synced.dbeta), (eq.mean, synced.mean), (eq.var, synced.var)]:
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-13)


def test_equal_weights_average_the_shards_means_and_their_backward_matches_finite_differences():
    spec = BNSpec(axis=1, eps=1e-3)
    sizes = (3, 1)
    x, dy, gamma, beta = _batch((4, 2), 1, seed=31)
    xs, dys = cr.split(x, sizes), cr.split(dy, sizes)
    step = cr.equal_weight_step(xs, dys, gamma, beta, spec)
    np.testing.assert_allclose(step.mean, (xs[0].mean(0) + xs[1].mean(0)) / 2, rtol=1e-14)
    np.testing.assert_allclose(step.var, (((xs[0] - step.mean) ** 2).mean(0) + ((xs[1] - step.mean) ** 2).mean(0)) / 2,
                               rtol=1e-13)
    assert np.abs(step.mean - x.mean(0)).max() > 1e-2  # not the batch mean

    def loss(xv: np.ndarray) -> float:
        ys = cr.equal_weight_step(cr.split(xv, sizes), dys, gamma, beta, spec).ys
        return float(sum((y * d).sum() for y, d in zip(ys, dys, strict=True)))

    grad = np.concatenate(step.dxs)
    h = 1e-6
    for index in np.ndindex(x.shape):
        e = np.zeros_like(x)
        e[index] = h
        assert grad[index] == pytest.approx((loss(x + e) - loss(x - e)) / (2 * h), rel=1e-6, abs=1e-8), index
    y = np.concatenate(step.ys)
    xhat = (y - beta) / gamma
    np.testing.assert_allclose(step.dgamma, (dy * xhat).sum(0), rtol=1e-12)
    np.testing.assert_allclose(step.dbeta, dy.sum(0), rtol=1e-13)


def test_replica_running_is_each_replicas_own_and_equal_weighting_reaches_the_running_statistics():
    spec = BNSpec(axis=1, momentum=0.25, running_var="biased")
    sizes = (5, 3)
    batches = [_batch((8, 3), 1, seed=40 + k)[0] for k in range(2)]
    steps = [cr.split(b, sizes) for b in batches]
    running = cr.replica_running(steps, spec)
    for r in range(2):
        own = cr.running_after([[s[r]] for s in steps], spec, synchronized=True)
        np.testing.assert_allclose(running[r][0], own[0], rtol=1e-13)
        np.testing.assert_allclose(running[r][1], own[1], rtol=1e-13)
    mean, var = cr.running_after(steps, spec, synchronized=True, weighting="equal")
    want_mean, want_var = np.zeros(3), np.ones(3)
    for xs in steps:
        mu, v = cr.equal_weight_moments(xs, 1)
        want_mean, want_var = 0.75 * want_mean + 0.25 * mu, 0.75 * want_var + 0.25 * v
    np.testing.assert_allclose(mean, want_mean, rtol=1e-13)
    np.testing.assert_allclose(var, want_var, rtol=1e-13)
    with pytest.raises(ValueError, match="weighting"):
        cr.running_after(steps, spec, synchronized=True, weighting="median")
