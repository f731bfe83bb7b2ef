"""The float64 references of LayerNorm, GroupNorm, InstanceNorm and RMSNorm (and their shared moments):
finite differences, hand-worked cases, equivalences between the normalizations, bad parameters."""

from __future__ import annotations

import numpy as np
import pytest

from bnparity.reference import batchnorm as bn
from bnparity.reference import groupnorm as gn
from bnparity.reference import instancenorm as inorm
from bnparity.reference import layernorm as ln
from bnparity.reference import moments
from bnparity.reference import rmsnorm as rms
from bnparity.reference.normalization import normalization, of_spec, run_reference
from bnparity.reference.spec import BNSpec, GNSpec, INSpec, LNSpec, RMSSpec
from bnparity.reference.steps import LayerInputs

EPS = 1e-3  # a large ε, so that a gradient that forgot it shows


def _inputs(spec, shape, *, steps=1, seed=0, offset=0.5):
    """Random float64 inputs for `spec` and input `shape`, γ and β of spec.param_shape(shape)."""
    rng = np.random.default_rng(seed)
    pshape = spec.param_shape(shape)
    return LayerInputs(
        xs=tuple(rng.normal(offset, 1.5, shape) for _ in range(steps)),
        dys=tuple(rng.normal(size=shape) for _ in range(steps)),
        x_eval=rng.normal(offset, 1.5, shape),
        gamma=rng.normal(1.0, 0.5, pshape), beta=rng.normal(0.0, 0.5, pshape))


def _with(inputs, **changes):
    fields = {"xs": inputs.xs, "dys": inputs.dys, "x_eval": inputs.x_eval, "gamma": inputs.gamma,
              "beta": inputs.beta}
    return LayerInputs(**{**fields, **changes})


def _loss(spec, inputs):
    """L = Σ dy·y of the last training step, for which dy is dL/dy."""
    return float(np.sum(inputs.dys[-1] * run_reference(spec, inputs).y))


def _numeric_gradient(spec, inputs, name, h=1e-6):
    """Central differences of L with respect to the last x, γ or β."""
    def perturbed(i, delta):
        if name == "x":
            x = inputs.xs[-1].copy()
            x[i] += delta
            return _with(inputs, xs=(*inputs.xs[:-1], x))
        p = getattr(inputs, name).copy()
        p[i] += delta
        return _with(inputs, **{name: p})

    value = inputs.xs[-1] if name == "x" else getattr(inputs, name)
    numeric = np.zeros_like(value)
    for i in np.ndindex(value.shape):
        numeric[i] = (_loss(spec, perturbed(i, h)) - _loss(spec, perturbed(i, -h))) / (2 * h)
    return numeric


FD_CASES = [
    # LayerNorm: ranks, normalized_dims, params elementwise/feature, affine off, bias off, fast variance
    (LNSpec(eps=EPS), (3, 5)),
    (LNSpec(eps=EPS, normalized_dims=2), (2, 3, 4)),
    (LNSpec(eps=EPS, normalized_dims=2, params="feature"), (2, 3, 4)),
    (LNSpec(eps=EPS, affine=False), (2, 3, 4)),
    (LNSpec(eps=EPS, bias=False), (2, 2, 3)),
    (LNSpec(eps=EPS, variance="fast", normalized_dims=3), (2, 2, 2, 3)),
    # GroupNorm: ranks 2..5, NCHW and NHWC, G = 1, G = C, params channel/group, affine off
    (GNSpec(eps=EPS, groups=2), (2, 4)),
    (GNSpec(eps=EPS, groups=2), (2, 4, 3)),
    (GNSpec(eps=EPS, groups=2, axis=-1), (2, 3, 2, 4)),
    (GNSpec(eps=EPS, groups=3, params="group"), (2, 6, 2, 2)),
    (GNSpec(eps=EPS, groups=2, params="group", axis=-1), (2, 2, 3, 4)),
    (GNSpec(eps=EPS, groups=1), (2, 3, 2, 2)),
    (GNSpec(eps=EPS, groups=3), (2, 3, 4)),
    (GNSpec(eps=EPS, groups=2, affine=False), (2, 4, 1, 2, 2)),
    # InstanceNorm: ranks 3..5, layouts, affine on/off, running statistics weighing new and old
    (INSpec(eps=EPS), (2, 3, 4)),
    (INSpec(eps=EPS, affine=True), (2, 3, 4)),
    (INSpec(eps=EPS, affine=True, axis=-1), (2, 2, 3, 3)),
    (INSpec(eps=EPS, affine=True, track_running_stats=True, momentum_weighs="new"), (2, 2, 2, 2, 2)),
    (INSpec(eps=EPS, affine=True, track_running_stats=True, momentum_weighs="old", running_var="biased"),
     (3, 2, 4)),
    # RMSNorm: elementwise/feature, affine off
    (RMSSpec(eps=EPS), (3, 4)),
    (RMSSpec(eps=EPS, normalized_dims=2), (2, 3, 2)),
    (RMSSpec(eps=EPS, normalized_dims=2, params="feature"), (2, 3, 2)),
    (RMSSpec(eps=EPS, affine=False), (2, 5)),
]


@pytest.mark.parametrize("spec,shape", FD_CASES, ids=lambda v: repr(v) if isinstance(v, tuple) else type(v).__name__)
def test_gradients_match_central_finite_differences(spec, shape):
    inputs = _inputs(spec, shape, steps=2)  # two steps: the gradients are those of the last one
    out = run_reference(spec, inputs)
    np.testing.assert_allclose(out.dx, _numeric_gradient(spec, inputs, "x"), rtol=1e-6, atol=1e-7)
    if not spec.affine:
        assert out.dgamma is None and out.dbeta is None
        return
    np.testing.assert_allclose(out.dgamma, _numeric_gradient(spec, inputs, "gamma"), rtol=1e-6, atol=1e-7)
    has_beta = not isinstance(spec, RMSSpec) and getattr(spec, "bias", True)
    if has_beta:
        np.testing.assert_allclose(out.dbeta, _numeric_gradient(spec, inputs, "beta"), rtol=1e-6, atol=1e-7)
    else:
        assert out.dbeta is None
        np.testing.assert_array_equal(_numeric_gradient(spec, inputs, "beta"), 0.0)  # β has no effect


def test_last_step_only_determines_y_and_gradients():
    spec = LNSpec(normalized_dims=2)
    two = _inputs(spec, (2, 3, 4), steps=2)
    last = _with(two, xs=two.xs[-1:], dys=two.dys[-1:])
    a, b = run_reference(spec, two), run_reference(spec, last)
    for q in ("y", "dx", "dgamma", "dbeta", "y_eval"):
        np.testing.assert_array_equal(getattr(a, q), getattr(b, q))


# --- hand-worked cases ---------------------------------------------------------------------------------------------


def test_layernorm_of_one_two_three_by_hand():
    # x = [1, 2, 3]: μ = 2, σ² = ((−1)² + 0 + 1²)/3 = 2/3, x̂ = [−1, 0, 1]·s with s = 1/√(2/3 + ε).
    # γ = 2, β = 0.5 (one feature per element, all equal): y = 0.5 + 2·[−s, 0, s].
    eps = 1e-5
    s = 1.0 / np.sqrt(2.0 / 3.0 + eps)
    spec = LNSpec(eps=eps)
    x = np.array([[1.0, 2.0, 3.0]])
    dy = np.array([[1.0, 0.0, 0.0]])
    inputs = LayerInputs(xs=(x,), dys=(dy,), x_eval=x, gamma=np.full(3, 2.0), beta=np.full(3, 0.5))
    out = run_reference(spec, inputs)
    np.testing.assert_allclose(out.y, [[0.5 - 2 * s, 0.5, 0.5 + 2 * s]], rtol=1e-15)
    # dβ = dy = [1, 0, 0]; dγ = dy·x̂ = [−s, 0, 0].
    np.testing.assert_allclose(out.dbeta, [1.0, 0.0, 0.0], rtol=0)
    np.testing.assert_allclose(out.dgamma, [-s, 0.0, 0.0], rtol=1e-15)
    # g = γ·dy = [2, 0, 0]: mean(g) = 2/3, mean(g·x̂) = −2s/3, so
    # dx = s·(g − 2/3 − x̂·(−2s/3)) = s·[2 − 2/3 − 2s²/3, −2/3, −2/3 + 2s²/3].
    want = s * np.array([4 / 3 - 2 * s**2 / 3, -2 / 3, -2 / 3 + 2 * s**2 / 3])
    np.testing.assert_allclose(out.dx[0], want, rtol=1e-14)
    # With ε → 0, s² → 3/2 and dx → s·[1/3, −2/3, 1/3]: the entries sum to 0 (a shift of x changes nothing).
    assert out.dx.sum() == pytest.approx(0.0, abs=1e-14)


def test_groupnorm_groups_consecutive_channels_by_hand():
    # C = 4, G = 2, one value per channel: groups {1, 3} and {10, 14} (consecutive channels, not {1, 10}, {3, 14}).
    # Group 0: μ = 2, σ² = 1, x̂ = [−1, 1]/√(1 + ε). Group 1: μ = 12, σ² = 4, x̂ = [−2, 2]/√(4 + ε).
    # params "group": γ = [2, 3], β = [0, 1].
    eps = 1e-5
    spec = GNSpec(groups=2, params="group", eps=eps)
    x = np.array([[1.0, 3.0, 10.0, 14.0]])
    inputs = LayerInputs(xs=(x,), dys=(np.array([[1.0, 2.0, 3.0, 4.0]]),), x_eval=x,
                         gamma=np.array([2.0, 3.0]), beta=np.array([0.0, 1.0]))
    out = run_reference(spec, inputs)
    s0, s1 = 1 / np.sqrt(1 + eps), 2 / np.sqrt(4 + eps)
    np.testing.assert_allclose(out.y, [[-2 * s0, 2 * s0, 1 - 3 * s1, 1 + 3 * s1]], rtol=1e-15)
    # dβ_g = Σ of the group's dy: [1 + 2, 3 + 4]; dγ_g = Σ dy·x̂: [−s0 + 2s0, −3s1 + 4s1].
    np.testing.assert_allclose(out.dbeta, [3.0, 7.0], rtol=0)
    np.testing.assert_allclose(out.dgamma, [s0, s1], rtol=1e-15)


def test_instancenorm_by_hand_with_running_statistics():
    # N = 2, C = 1, L = 2: sample 0 [1, 3]: μ = 2, σ² = 1 (unbiased, m = 2: 2);
    #                      sample 1 [2, 6]: μ = 4, σ² = 4 (unbiased: 8).
    # The batch's averages: μ = 3; unbiased σ² = 5; biased σ² = 2.5.
    x = np.array([[[1.0, 3.0]], [[2.0, 6.0]]])
    x_eval = np.array([[[0.0, 4.0]]])
    inputs = LayerInputs(xs=(x,), dys=(np.ones_like(x),), x_eval=x_eval, gamma=np.ones(1), beta=np.zeros(1))
    new = run_reference(INSpec(track_running_stats=True, momentum=0.1, momentum_weighs="new"), inputs)
    # weighing the new batch by 0.1: mean 0.9·0 + 0.1·3 = 0.3; var 0.9·1 + 0.1·5 = 1.4
    np.testing.assert_allclose(new.running_mean, [0.3], rtol=1e-15)
    np.testing.assert_allclose(new.running_var, [1.4], rtol=1e-15)
    old = run_reference(INSpec(track_running_stats=True, momentum=0.1, momentum_weighs="old", running_var="biased"),
                        inputs)
    # weighing the old value by 0.1: mean 0.1·0 + 0.9·3 = 2.7; biased var 0.1·1 + 0.9·2.5 = 2.35
    np.testing.assert_allclose(old.running_mean, [2.7], rtol=1e-15)
    np.testing.assert_allclose(old.running_var, [2.35], rtol=1e-15)
    # eval with running statistics: (x − 0.3)/√(1.4 + ε)
    np.testing.assert_allclose(new.y_eval, (x_eval - 0.3) / np.sqrt(1.4 + 1e-5), rtol=1e-15)
    # training: each sample with its own statistics: [−1, 1]/√(1 + ε) and [−2, 2]/√(4 + ε)
    np.testing.assert_allclose(new.y[:, 0], [[-1 / np.sqrt(1 + 1e-5), 1 / np.sqrt(1 + 1e-5)],
                                             [-2 / np.sqrt(4 + 1e-5), 2 / np.sqrt(4 + 1e-5)]], rtol=1e-15)
    # without running statistics, eval uses the eval input's own: [0, 4] → μ = 2, σ² = 4
    own = run_reference(INSpec(), inputs)
    assert own.running_mean is None and own.running_var is None
    np.testing.assert_allclose(own.y_eval[0, 0], [-2 / np.sqrt(4 + 1e-5), 2 / np.sqrt(4 + 1e-5)], rtol=1e-15)


def test_rmsnorm_by_hand():
    # x = [3, 4]: mean(x²) = (9 + 16)/2 = 12.5, r = 1/√(12.5 + ε); γ = [1, 2]: y = [3r, 8r].
    eps = 1e-6
    r = 1 / np.sqrt(12.5 + eps)
    x = np.array([[3.0, 4.0]])
    dy = np.array([[1.0, 0.0]])
    inputs = LayerInputs(xs=(x,), dys=(dy,), x_eval=x, gamma=np.array([1.0, 2.0]), beta=np.array([7.0, 7.0]))
    out = run_reference(RMSSpec(eps=eps), inputs)
    np.testing.assert_allclose(out.y, [[3 * r, 8 * r]], rtol=1e-15)  # β plays no part
    assert out.dbeta is None
    # dγ = dy·x̂ = [3r, 0]. g = γ·dy = [1, 0], mean(g·x̂) = 3r/2: dx = r·([1, 0] − [3r, 4r]·3r/2)
    np.testing.assert_allclose(out.dgamma, [3 * r, 0.0], rtol=1e-15)
    np.testing.assert_allclose(out.dx[0], r * np.array([1 - 4.5 * r**2, -6 * r**2]), rtol=1e-14)


# --- equivalences ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(2, 6, 5), (2, 6, 3, 2), (2, 6, 2, 2, 3)])
@pytest.mark.parametrize("params", ["channel", "group"])
def test_groupnorm_channels_first_equals_channels_last(shape, params):
    first = GNSpec(groups=3, params=params)
    inputs = _inputs(first, shape, steps=1)
    a = run_reference(first, inputs)
    last = [np.moveaxis(v, 1, -1) for v in (inputs.xs[0], inputs.dys[0], inputs.x_eval)]
    b = run_reference(first.replace(axis=-1), _with(inputs, xs=(last[0],), dys=(last[1],), x_eval=last[2]))
    for q in ("y", "dx", "y_eval"):
        np.testing.assert_allclose(np.moveaxis(getattr(b, q), -1, 1), getattr(a, q), rtol=1e-13, atol=1e-14)
    np.testing.assert_allclose(b.dgamma, a.dgamma, rtol=1e-13)
    np.testing.assert_allclose(b.dbeta, a.dbeta, rtol=1e-13)


def test_groupnorm_group_params_equal_channel_params_repeated_over_the_group():
    spec = GNSpec(groups=2, params="group")
    inputs = _inputs(spec, (3, 6, 4))
    per_group = run_reference(spec, inputs)
    # group g's γ on each of its C/G = 3 consecutive channels: np.repeat (not np.tile)
    channel = _with(inputs, gamma=np.repeat(inputs.gamma, 3), beta=np.repeat(inputs.beta, 3))
    per_channel = run_reference(spec.replace(params="channel"), channel)
    np.testing.assert_allclose(per_group.y, per_channel.y, rtol=1e-14)
    np.testing.assert_allclose(per_group.dx, per_channel.dx, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(per_group.dgamma, per_channel.dgamma.reshape(2, 3).sum(axis=1), rtol=1e-13)
    np.testing.assert_allclose(per_group.dbeta, per_channel.dbeta.reshape(2, 3).sum(axis=1), rtol=1e-13)


@pytest.mark.parametrize("shape,axis", [((2, 3, 5), 1), ((2, 4, 3, 3), 1), ((2, 3, 3, 4), -1), ((2, 2, 2, 3, 2), 1)])
def test_instancenorm_is_groupnorm_with_one_channel_per_group(shape, axis):
    c = shape[axis]
    spec_in = INSpec(affine=True, axis=axis)
    inputs = _inputs(spec_in, shape)
    a = run_reference(spec_in, inputs)
    b = run_reference(GNSpec(groups=c, params="channel", axis=axis), inputs)
    for q in ("y", "dx", "dgamma", "dbeta", "y_eval"):
        np.testing.assert_allclose(getattr(a, q), getattr(b, q), rtol=1e-13, atol=1e-14)


@pytest.mark.parametrize("shape", [(4, 5), (3, 2, 4)])
def test_layernorm_over_all_non_batch_axes_is_groupnorm_with_one_group(shape):
    spec_ln = LNSpec(affine=False, normalized_dims=len(shape) - 1)
    inputs = _inputs(spec_ln, shape)
    a = run_reference(spec_ln, inputs)
    spec_gn = GNSpec(groups=1, affine=False)
    b = run_reference(spec_gn, _with(inputs, gamma=np.ones(shape[1]), beta=np.zeros(shape[1])))
    for q in ("y", "dx", "y_eval"):
        np.testing.assert_allclose(getattr(a, q), getattr(b, q), rtol=1e-13, atol=1e-14)


def test_layernorm_feature_params_equal_elementwise_params_tiled():
    spec = LNSpec(normalized_dims=2, params="feature")
    inputs = _inputs(spec, (2, 3, 4))
    feature = run_reference(spec, inputs)
    tiled = _with(inputs, gamma=np.tile(inputs.gamma, (3, 1)), beta=np.tile(inputs.beta, (3, 1)))
    elementwise = run_reference(spec.replace(params="elementwise"), tiled)
    np.testing.assert_allclose(feature.y, elementwise.y, rtol=1e-14)
    np.testing.assert_allclose(feature.dx, elementwise.dx, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(feature.dgamma, elementwise.dgamma.sum(axis=0), rtol=1e-13)
    np.testing.assert_allclose(feature.dbeta, elementwise.dbeta.sum(axis=0), rtol=1e-13)


def test_rmsnorm_of_zero_mean_data_is_layernorm_without_the_mean_gradient():
    # Each sample is [a, −a, b, −b]: its mean is exactly 0, so σ² = mean(x²) and both put ε inside the same root.
    rng = np.random.default_rng(3)
    half = rng.normal(size=(3, 2))
    x = np.stack([half[:, 0], -half[:, 0], half[:, 1], -half[:, 1]], axis=1)
    dy = rng.normal(size=x.shape)
    gamma = rng.normal(1.0, 0.3, 4)
    inputs = LayerInputs(xs=(x,), dys=(dy,), x_eval=x, gamma=gamma, beta=np.zeros(4))
    a = run_reference(LNSpec(eps=1e-6, bias=False), inputs)
    b = run_reference(RMSSpec(eps=1e-6), inputs)
    np.testing.assert_array_equal(x.mean(axis=1), 0.0)
    np.testing.assert_allclose(a.y, b.y, rtol=1e-15)
    np.testing.assert_allclose(a.dgamma, b.dgamma, rtol=1e-14)
    # LayerNorm's dx has the extra term −mean(g)/√(σ² + ε), g = γ·dy: the gradient through μ.
    through_mu = (gamma * dy).mean(axis=1, keepdims=True) / np.sqrt((x**2).mean(axis=1, keepdims=True) + 1e-6)
    np.testing.assert_allclose(a.dx, b.dx - through_mu, rtol=1e-12, atol=1e-15)


# --- the variance algorithm -----------------------------------------------------------------------------------------


def test_fast_variance_agrees_with_two_pass_on_centred_data():
    x = np.random.default_rng(4).normal(size=(4, 3, 5))
    for axes in ((1, 2), (2,), (0, 2)):
        mu2, var2 = moments.mean_and_variance(x, axes, "two-pass")
        muf, varf = moments.mean_and_variance(x, axes, "fast")
        np.testing.assert_array_equal(mu2, muf)
        np.testing.assert_allclose(varf, var2, rtol=1e-13)
        np.testing.assert_allclose(var2, x.var(axis=axes, keepdims=True), rtol=1e-14)  # biased: 1/m, not 1/(m−1)


def test_fast_variance_is_clipped_at_zero_for_a_constant_input():
    x = np.full((1, 3), 0.1)
    raw = (x**2).mean(axis=1) - x.mean(axis=1) ** 2
    assert raw[0] < 0  # E[x²] − E[x]² rounds below zero for this constant
    _, var = moments.mean_and_variance(x, (1,), "fast")
    assert var[0, 0] == 0.0
    out = run_reference(LNSpec(variance="fast", affine=False), LayerInputs(
        xs=(x,), dys=(np.ones_like(x),), x_eval=x, gamma=np.ones(3), beta=np.zeros(3)))
    # σ² = 0 exactly: x̂ = (x − μ)/√ε (unclipped, √(ε − 1.7e-18) would differ by about 1e-13 relative)
    np.testing.assert_allclose(out.y, (x - x.mean()) / np.sqrt(1e-5), rtol=1e-15)
    assert np.max(np.abs(out.y)) < 1e-12  # x̂ ≈ 0 where x equals its mean


@pytest.mark.parametrize("spec,shape", [
    (BNSpec(), (6, 3)), (LNSpec(), (3, 6)), (GNSpec(groups=2), (3, 4, 3)), (INSpec(), (2, 3, 6)),
])
def test_every_normalization_honours_the_variance_algorithm(spec, shape):
    # Data at 1e8 with unit spread: E[x²] ≈ 1e16 has an ulp of 2, so E[x²] − E[x]² is wrong even in float64.
    inputs = _inputs(spec, shape, offset=1e8)
    two_pass = run_reference(spec, inputs)
    np.testing.assert_allclose(two_pass.y, run_reference(spec.replace(variance="two-pass"), inputs).y, rtol=0)
    fast = run_reference(spec.replace(variance="fast"), inputs)
    assert np.max(np.abs(fast.y - two_pass.y)) > 1e-3


def test_batchnorm_fast_variance_matches_two_pass_on_centred_data():
    rng = np.random.default_rng(5)
    x = rng.normal(size=(6, 3, 4))
    np.testing.assert_allclose(bn.batch_stats(x, 1, variance="fast")[1], bn.batch_stats(x, 1)[1], rtol=1e-13)
    inputs = LayerInputs(xs=(x,), dys=(rng.normal(size=x.shape),), x_eval=x, gamma=np.ones(3), beta=np.zeros(3))
    a, b = run_reference(BNSpec(), inputs), run_reference(BNSpec(variance="fast"), inputs)
    np.testing.assert_allclose(b.dx, a.dx, rtol=1e-10, atol=1e-13)


# --- running statistics of InstanceNorm -----------------------------------------------------------------------------


@pytest.mark.parametrize("weighs,running_var", [("new", "unbiased"), ("old", "biased"), ("old", "unbiased")])
def test_instancenorm_running_statistics_as_torch_keeps_them(weighs, running_var):
    # PyTorch's way: one running value per (sample, channel), each updated with that instance's statistics
    # (variance over its m spatial values), then the average over the samples; three steps.
    spec = INSpec(track_running_stats=True, momentum=0.3, momentum_weighs=weighs, running_var=running_var,
                  init_running_mean=0.5, init_running_var=2.0, axis=-1)
    inputs = _inputs(spec, (3, 4, 5, 2), steps=3)
    out = run_reference(spec, inputs)
    w = 0.3 if weighs == "new" else 0.7
    mean, var = np.full(2, 0.5), np.full(2, 2.0)
    for x in inputs.xs:
        ddof = 1 if running_var == "unbiased" else 0
        per_mean = (1 - w) * mean + w * x.mean(axis=(1, 2))  # (N, C)
        per_var = (1 - w) * var + w * x.var(axis=(1, 2), ddof=ddof)
        mean, var = per_mean.mean(axis=0), per_var.mean(axis=0)
    np.testing.assert_allclose(out.running_mean, mean, rtol=1e-13)
    np.testing.assert_allclose(out.running_var, var, rtol=1e-13)
    g = inputs.gamma if spec.affine else 1.0
    want = (inputs.x_eval - mean) / np.sqrt(var + spec.eps) * g
    np.testing.assert_allclose(out.y_eval, want, rtol=1e-13, atol=1e-14)


def test_instancenorm_needs_a_spatial_axis():
    with pytest.raises(ValueError, match="InstanceNorm needs a spatial axis"):
        run_reference(INSpec(), _inputs(INSpec(), (4, 3)))


# --- parameters, condition factor, error scales ---------------------------------------------------------------------


@pytest.mark.parametrize("spec,shape,gamma_shape", [
    (LNSpec(normalized_dims=2), (2, 3, 4), (4,)),
    (LNSpec(normalized_dims=2, params="feature"), (2, 3, 4), (3, 4)),
    (GNSpec(groups=2, params="group"), (2, 4, 3), (4,)),
    (GNSpec(groups=2), (2, 4, 3), (2,)),
    (INSpec(affine=True), (2, 3, 4), (4,)),
    (RMSSpec(), (2, 5), (4,)),
])
def test_parameters_of_the_wrong_shape_are_rejected(spec, shape, gamma_shape):
    good = _inputs(spec, shape)
    run_reference(spec, good)
    with pytest.raises(ValueError, match=r"gamma must have shape .* Received: \(" + ", ".join(map(str, gamma_shape))):
        run_reference(spec, _with(good, gamma=np.ones(gamma_shape)))
    with pytest.raises(ValueError, match="beta must have shape"):
        run_reference(spec, _with(good, beta=np.ones(gamma_shape)))


def test_groups_must_divide_the_channels():
    with pytest.raises(ValueError, match="does not divide"):
        run_reference(GNSpec(groups=3), _inputs(GNSpec(groups=2), (2, 4, 3)))


MEAN_CASES = [(LNSpec(), (4, 6)), (GNSpec(groups=2), (3, 4, 5)), (INSpec(axis=-1), (3, 5, 2))]


@pytest.mark.parametrize("spec,shape", MEAN_CASES)
def test_condition_factor_is_one_plus_the_worst_offset_over_spread(spec, shape):
    plugin = of_spec(spec)
    x = np.random.default_rng(6).normal(size=shape)
    centred = plugin.condition_factor(spec, [x - x.mean()])
    assert 1.0 <= centred < 5.0
    # every statistic group shifted by 100 with a spread near 1: κ ≈ 1 + 100/σ, and the worst input counts
    assert plugin.condition_factor(spec, [x, x + 100.0]) > 30.0
    assert plugin.condition_factor(spec, [x + 100.0]) == pytest.approx(plugin.condition_factor(spec, [x, x + 100.0]))


def test_condition_factor_of_one_group_by_hand():
    # One sample [99, 101]: μ = 100, σ² = 1, κ = 1 + 100/√(1 + ε).
    x = np.array([[99.0, 101.0]])
    assert ln.condition_factor(LNSpec(eps=1e-5), [x]) == pytest.approx(1 + 100 / np.sqrt(1 + 1e-5), rel=1e-14)
    assert gn.condition_factor(GNSpec(eps=1e-5), [x]) == pytest.approx(1 + 100 / np.sqrt(1 + 1e-5), rel=1e-14)
    assert inorm.condition_factor(INSpec(eps=1e-5), [x[:, None, :]]) == pytest.approx(1 + 100 / np.sqrt(1 + 1e-5),
                                                                                     rel=1e-14)


def test_rmsnorm_condition_factor_is_one_even_far_from_zero():
    x = np.random.default_rng(7).normal(1e4, 1.0, (3, 4))
    assert rms.condition_factor(RMSSpec(), [x]) == 1.0


@pytest.mark.parametrize("spec,shape,keys", [
    (LNSpec(), (3, 4), {"dx", "dgamma", "dbeta"}),
    (LNSpec(bias=False, normalized_dims=2, params="feature"), (2, 3, 4), {"dx", "dgamma"}),
    (LNSpec(affine=False), (3, 4), {"dx"}),
    (GNSpec(groups=2, params="group", axis=-1), (2, 3, 4), {"dx", "dgamma", "dbeta"}),
    (INSpec(affine=True), (2, 3, 4), {"dx", "dgamma", "dbeta"}),
    (INSpec(), (2, 3, 4), {"dx"}),
    (RMSSpec(normalized_dims=2), (2, 3, 4), {"dx", "dgamma"}),
])
def test_error_scales_name_the_existing_quantities_and_bound_them(spec, shape, keys):
    inputs = _inputs(spec, shape, steps=2)
    scales = of_spec(spec).error_scales(spec, inputs)
    assert set(scales) == keys
    out = run_reference(spec, inputs)
    for q in keys:  # a sum is bounded by the sum of its terms' magnitudes
        assert np.max(np.abs(getattr(out, q))) <= scales[q] * (1 + 1e-12)


def test_error_scales_by_hand():
    # LayerNorm of [1, 3] (μ = 2, σ² = 1, x̂ = [−s, s], s = 1/√(1 + ε)) with dy = [1, 1], γ = 1: dγ = [−s, s],
    # Σ|dy·x̂| per parameter = s; Σ|dy| = 1; dx's terms: s·(|g| + |mean g| + |x̂|·|mean(g·x̂)|) = s·(1 + 1 + 0) = 2s.
    s = 1 / np.sqrt(1 + 1e-5)
    x = np.array([[1.0, 3.0]])
    inputs = LayerInputs(xs=(x,), dys=(np.ones_like(x),), x_eval=x, gamma=np.ones(2), beta=np.zeros(2))
    scales = ln.error_scales(LNSpec(), inputs)
    assert scales == pytest.approx({"dx": 2 * s, "dgamma": s, "dbeta": 1.0}, rel=1e-14)
    # for the exact result dx = s·([1, 1] − 1 − 0) = 0: the scale is not the (cancelled) value
    np.testing.assert_allclose(run_reference(LNSpec(), inputs).dx, 0.0, atol=1e-15)


def test_plugins_are_discovered_with_their_names_and_titles():
    for name, title, spec_type in (("layernorm", "LayerNorm", LNSpec), ("groupnorm", "GroupNorm", GNSpec),
                                   ("instancenorm", "InstanceNorm", INSpec), ("rmsnorm", "RMSNorm", RMSSpec)):
        plugin = normalization(name)
        assert (plugin.title, plugin.spec_type) == (title, spec_type)
        assert spec_type.normalization == name


def test_sum_over_broadcast_follows_numpy_broadcasting():
    a = np.arange(24.0).reshape(2, 3, 4)
    np.testing.assert_array_equal(moments.sum_over_broadcast(a, np.ones(4)), a.sum(axis=(0, 1)))
    np.testing.assert_array_equal(moments.sum_over_broadcast(a, np.ones((3, 4))), a.sum(axis=0))
    np.testing.assert_array_equal(moments.sum_over_broadcast(a, np.ones((1, 3, 1))), a.sum(axis=(0, 2))[None, :, None])
