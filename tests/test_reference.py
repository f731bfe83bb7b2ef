"""The float64 reference: closed forms, finite differences, a hand-worked case, bad specs."""

from __future__ import annotations

import numpy as np
import pytest

from bnparity.reference import batchnorm as bn
from bnparity.reference.normalization import run_reference
from bnparity.reference.spec import BNSpec
from bnparity.reference.steps import LayerInputs

SHAPES = [((6, 3), 1), ((4, 3, 5), 1), ((3, 2, 4, 4), 1), ((3, 4, 4, 2), -1), ((2, 5, 3, 2), 2)]


def _data(shape, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(1.5, 2.0, shape), rng.normal(size=shape)


def test_hand_worked_two_values():
    # One channel, x = [1, 3]: μ_B = 2, σ²_B = 1, x̂ = ∓1/√(1 + ε); γ = 2, β = 0.5.
    eps = 1e-5
    y, cache = bn.forward_train(np.array([[1.0], [3.0]]), np.array([2.0]), np.array([0.5]), eps=eps, axis=1)
    assert cache.mu == pytest.approx([2.0], abs=0)
    assert cache.var == pytest.approx([1.0], abs=0)
    s = 1.0 / np.sqrt(1.0 + eps)
    np.testing.assert_allclose(y[:, 0], [0.5 - 2 * s, 0.5 + 2 * s], rtol=1e-15)


@pytest.mark.parametrize("shape,axis", SHAPES)
def test_backward_matches_central_finite_differences(shape, axis):
    x, dy = _data(shape)
    c = shape[axis]
    rng = np.random.default_rng(1)
    gamma, beta = rng.normal(1, 0.3, c), rng.normal(0, 0.3, c)

    def loss(x_, g_, b_):
        return float(np.sum(dy * bn.forward_train(x_, g_, b_, eps=1e-3, axis=axis)[0]))

    _, cache = bn.forward_train(x, gamma, beta, eps=1e-3, axis=axis)
    dx, dgamma, dbeta = bn.backward(dy, cache, gamma)
    h = 1e-6
    for arr, grad, args in ((x, dx, 0), (gamma, dgamma, 1), (beta, dbeta, 2)):
        numeric = np.zeros_like(arr)
        for i in np.ndindex(arr.shape):
            plus, minus = [a.copy() for a in (x, gamma, beta)], [a.copy() for a in (x, gamma, beta)]
            plus[args][i] += h
            minus[args][i] -= h
            numeric[i] = (loss(*plus) - loss(*minus)) / (2 * h)
        np.testing.assert_allclose(grad, numeric, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("shape,axis", SHAPES)
def test_normalized_output_has_mean_zero_and_variance_one(shape, axis):
    x, _ = _data(shape)
    c = shape[axis]
    y, _ = bn.forward_train(x, np.ones(c), np.zeros(c), eps=1e-5, axis=axis)
    mu, var = bn.batch_stats(y, axis)
    _, x_var = bn.batch_stats(x, axis)
    np.testing.assert_allclose(mu, 0.0, atol=1e-14)
    np.testing.assert_allclose(var, x_var / (x_var + 1e-5), rtol=1e-13)  # 1 up to ε


def test_gamma_and_beta_scale_and_shift():
    x, _ = _data((5, 3, 4))
    gamma, beta = np.array([2.0, -0.5, 3.0]), np.array([1.0, 0.0, -2.0])
    y1, _ = bn.forward_train(x, np.ones(3), np.zeros(3), eps=1e-5, axis=1)
    y, _ = bn.forward_train(x, gamma, beta, eps=1e-5, axis=1)
    np.testing.assert_allclose(y, gamma[None, :, None] * y1 + beta[None, :, None], rtol=1e-14)


def test_channels_last_equals_channels_first_transposed():
    x, dy = _data((3, 2, 4, 5))
    g, b = np.array([1.5, 0.5]), np.array([0.1, -0.2])
    y_first, cache_first = bn.forward_train(x, g, b, eps=1e-5, axis=1)
    x_last = np.moveaxis(x, 1, -1)
    y_last, cache_last = bn.forward_train(x_last, g, b, eps=1e-5, axis=-1)
    np.testing.assert_allclose(np.moveaxis(y_last, -1, 1), y_first, rtol=1e-14)
    dx_first = bn.backward(dy, cache_first, g)[0]
    dx_last = bn.backward(np.moveaxis(dy, 1, -1), cache_last, g)[0]
    np.testing.assert_allclose(np.moveaxis(dx_last, -1, 1), dx_first, rtol=1e-13, atol=1e-15)


def test_running_statistics_after_two_steps_by_hand():
    # One channel; batches [0, 2] then [4, 8]. m = 2.
    x1, x2 = np.array([[0.0], [2.0]]), np.array([[4.0], [8.0]])
    spec = BNSpec(momentum=0.1, momentum_weighs="new", running_var="unbiased")
    inputs = LayerInputs(xs=(x1, x2), dys=(np.ones((2, 1)),) * 2, x_eval=x1, gamma=np.ones(1), beta=np.zeros(1))
    out = run_reference(spec, inputs)
    # μ: 0.9·0 + 0.1·1 = 0.1, then 0.9·0.1 + 0.1·6 = 0.69
    # σ² unbiased: batch 1: 2, batch 2: 8 → 0.9·1 + 0.1·2 = 1.1, then 0.9·1.1 + 0.1·8 = 1.79
    np.testing.assert_allclose(out.running_mean, [0.69], rtol=1e-15)
    np.testing.assert_allclose(out.running_var, [1.79], rtol=1e-15)
    biased = run_reference(spec.replace(running_var="biased"), inputs)
    # σ² biased: 1 then 4 → 0.9·1 + 0.1·1 = 1.0, then 0.9·1.0 + 0.1·4 = 1.3
    np.testing.assert_allclose(biased.running_var, [1.3], rtol=1e-15)
    np.testing.assert_allclose(out.y_eval, (x1 - 0.69) / np.sqrt(1.79 + 1e-5), rtol=1e-15)


def test_momentum_conventions_are_two_names_for_one_update():
    new = BNSpec(momentum=0.1, momentum_weighs="new")
    old = BNSpec(momentum=0.9, momentum_weighs="old")
    assert new.new_weight == pytest.approx(old.new_weight, abs=1e-15)
    r = np.array([1.0, 2.0])
    b = np.array([3.0, 5.0])
    np.testing.assert_allclose(bn.running_update(r, b, new), bn.running_update(r, b, old), rtol=1e-15)
    np.testing.assert_allclose(bn.running_update(r, b, new), 0.9 * r + 0.1 * b, rtol=1e-15)


def test_without_running_stats_eval_uses_batch_statistics():
    x, dy = _data((6, 3))
    inputs = LayerInputs(xs=(x,), dys=(dy,), x_eval=x + 1.0, gamma=np.ones(3), beta=np.zeros(3))
    out = run_reference(BNSpec(track_running_stats=False), inputs)
    assert out.running_mean is None and out.running_var is None
    np.testing.assert_allclose(out.y_eval, bn.forward_train(x + 1.0, np.ones(3), np.zeros(3), eps=1e-5, axis=1)[0])


def test_affine_off_ignores_gamma_beta_and_has_no_gradients():
    x, dy = _data((6, 3))
    inputs = LayerInputs(xs=(x,), dys=(dy,), x_eval=x, gamma=np.full(3, 5.0), beta=np.full(3, 2.0))
    out = run_reference(BNSpec(affine=False), inputs)
    assert out.dgamma is None and out.dbeta is None
    np.testing.assert_allclose(bn.batch_stats(out.y, 1)[0], 0.0, atol=1e-14)


@pytest.mark.parametrize("kwargs,match", [
    ({"eps": 0.0}, "eps must be > 0"),
    ({"momentum": 1.5}, "momentum must be in"),
    ({"momentum_weighs": "both"}, "momentum_weighs must be"),
    ({"running_var": "sample"}, "running_var must be"),
])
def test_bad_specs_are_rejected(kwargs, match):
    with pytest.raises(ValueError, match=match):
        BNSpec(**kwargs)


def test_bad_rank_and_axis_are_rejected():
    with pytest.raises(ValueError, match="expected a 2-D to 5-D input. Received: x.ndim=1"):
        bn.batch_stats(np.ones(4), 0)
    with pytest.raises(ValueError, match="out of range"):
        bn.batch_stats(np.ones((2, 3)), 2)
    with pytest.raises(ValueError, match="as many dys as xs"):
        LayerInputs(xs=(np.ones((2, 3)),), dys=(), x_eval=np.ones((2, 3)), gamma=np.ones(3), beta=np.ones(3))


def test_cumulative_average_and_per_channel_initial_statistics():
    """PyTorch's momentum=None: the k-th batch gets weight 1/k (counted from batches_tracked), so the running mean is
    the average of the batch means; per-channel initial statistics start every channel where it was."""
    from bnparity.reference.steps import LayerInputs

    rng = np.random.default_rng(7)
    xs = tuple(rng.normal(3.0, 2.0, (6, 3)) for _ in range(4))
    dys = tuple(rng.standard_normal((6, 3)) for _ in range(4))
    inputs = LayerInputs(xs=xs, dys=dys, x_eval=xs[0], gamma=np.ones(3), beta=np.zeros(3))
    fresh = bn.run(BNSpec(momentum=None), inputs)
    np.testing.assert_allclose(fresh.running_mean, np.mean([x.mean(0) for x in xs], axis=0), rtol=1e-13)
    np.testing.assert_allclose(fresh.running_var, np.mean([x.var(0, ddof=1) for x in xs], axis=0), rtol=1e-13)
    start = (1.0, -2.0, 0.5)
    resumed = bn.run(BNSpec(momentum=None, batches_tracked=4, init_running_mean=start), inputs)
    np.testing.assert_allclose(resumed.running_mean, (4 * np.array(start) + sum(x.mean(0) for x in xs)) / 8,
                               rtol=1e-13)
    per_channel = bn.run(BNSpec(momentum=0.25, init_running_mean=start, init_running_var=(1.0, 2.0, 3.0)),
                         LayerInputs(xs=xs[:1], dys=dys[:1], x_eval=xs[0], gamma=np.ones(3), beta=np.zeros(3)))
    np.testing.assert_allclose(per_channel.running_mean, 0.75 * np.array(start) + 0.25 * xs[0].mean(0), rtol=1e-13)
    np.testing.assert_allclose(per_channel.running_var, 0.75 * np.array([1.0, 2.0, 3.0]) + 0.25 * xs[0].var(0, ddof=1),
                               rtol=1e-13)
    with pytest.raises(ValueError, match="weight_at"):
        _ = BNSpec(momentum=None).new_weight
    with pytest.raises(ValueError, match="init_running_var"):
        BNSpec(init_running_var=(1.0, -1.0))


@pytest.mark.parametrize("name", ["batchnorm", "instancenorm", "layernorm", "groupnorm", "rmsnorm"])
def test_evaluate_is_the_eval_pass_of_a_layer_whose_state_did_not_move(name):
    """evaluate(spec, x) (eval mode before any training step) equals the protocol's eval pass after training steps
    that cannot move the state: momentum 0 keeps the initial running statistics."""
    from bnparity.reference.normalization import evaluate, normalization
    from bnparity.reference.spec import GNSpec, INSpec, LNSpec, RMSSpec

    specs = {"batchnorm": BNSpec(momentum=0.0, init_running_mean=(0.5, -1.0, 2.0, 0.0),
                                 init_running_var=(1.5, 0.5, 2.0, 1.0)),
             "instancenorm": INSpec(affine=True, track_running_stats=True, momentum=0.0, init_running_mean=0.3,
                                    init_running_var=2.0),
             "layernorm": LNSpec(), "groupnorm": GNSpec(groups=2), "rmsnorm": RMSSpec()}
    spec = specs[name]
    assert normalization(name).spec_type is type(spec)
    rng = np.random.default_rng(3)
    x = rng.normal(1.0, 2.0, (5, 4, 3, 3))
    shape = spec.param_shape(x.shape)
    gamma, beta = rng.normal(1.0, 0.3, shape), rng.normal(0.0, 0.3, shape)
    inputs = LayerInputs(xs=(rng.standard_normal(x.shape),) * 2, dys=(rng.standard_normal(x.shape),) * 2, x_eval=x,
                         gamma=gamma, beta=beta)
    np.testing.assert_allclose(evaluate(spec, x, gamma, beta), run_reference(spec, inputs).y_eval, rtol=1e-13,
                               atol=1e-13)
    if name == "batchnorm":  # and it does use the state: other initial statistics, another output
        moved = spec.replace(init_running_mean=0.0)
        assert np.abs(evaluate(moved, x, gamma, beta) - evaluate(spec, x, gamma, beta)).max() > 1e-2


def test_sgd_step_two_steps_with_momentum_and_weight_decay_by_hand():
    """v ← μ·v + (g + λ·p), p ← p − lr·v (v = g + λ·p on the first step), worked by hand with lr 0.1, μ 0.9, λ 0.01;
    a parameter without a gradient (a running statistic) passes through untouched."""
    from bnparity.reference.alexnet_numpy import sgd_step

    params = {"w": np.array([1.0, -2.0]), "bn.running_var": np.array([3.0])}
    p1, v1 = sgd_step(params, {"w": np.array([0.5, 0.5])}, lr=0.1, momentum=0.9, weight_decay=0.01)
    np.testing.assert_allclose(v1["w"], [0.51, 0.48], rtol=1e-14)  # g + λ·p
    np.testing.assert_allclose(p1["w"], [0.949, -2.048], rtol=1e-14)
    p2, v2 = sgd_step(p1, {"w": np.array([-1.0, 2.0])}, lr=0.1, momentum=0.9, weight_decay=0.01, buffers=v1)
    np.testing.assert_allclose(v2["w"], [0.9 * 0.51 - 1.0 + 0.00949, 0.9 * 0.48 + 2.0 - 0.02048], rtol=1e-14)
    np.testing.assert_allclose(p2["w"], [1.002151, -2.289152], rtol=1e-14)
    assert set(v2) == {"w"} and p2["bn.running_var"] is params["bn.running_var"]
    assert params["w"].tolist() == [1.0, -2.0]  # the input is not changed in place
    plain, _ = sgd_step(params, {"w": np.array([0.5, 0.5])}, lr=0.1, momentum=0.9, buffers=v1)  # λ = 0
    np.testing.assert_allclose(plain["w"], [1.0 - 0.1 * (0.9 * 0.51 + 0.5), -2.0 - 0.1 * (0.9 * 0.48 + 0.5)],
                               rtol=1e-14)
