"""The gn variant: GroupNorm in BatchNorm's places, its group rule, the NumPy backward, and each framework's model."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from conftest import require

from bnparity.reference import alexnet_numpy as anp
from bnparity.reference.alexnet import (
    ARCH_PRESETS,
    BatchNorm,
    GroupNorm,
    alexnet_spec,
    check_params,
    gn_groups,
    init_params,
    layer_of,
    layer_shapes,
    param_shapes,
    running_names,
    trainable_names,
    variant_spec,
)
from bnparity.reference.spec import GNSpec

# preset -> G of gn1..gn7 under the rule G = gcd(32, C), halved below 8 values per group
EXPECTED_GROUPS = {"tiny": (2, 16, 8, 8, 16, 8, 8), "cpu": (8, 32, 32, 32, 32, 32, 32), "paper": (32,) * 7}


@pytest.mark.parametrize("preset", sorted(ARCH_PRESETS))
def test_gn_replaces_every_batch_norm_with_the_rule_groups(preset: str) -> None:
    gn, bn = variant_spec(preset, "gn"), variant_spec(preset, "bn")
    assert (gn.norm, gn.group_norm, gn.batch_norm) == ("gn", True, False)
    assert gn.gn == GNSpec(axis=1, eps=1e-5, variance="two-pass", groups=32)
    swapped = tuple(BatchNorm(la.name.replace("gn", "bn")) if isinstance(la, GroupNorm) else la for la in gn.layers)
    assert swapped == bn.layers  # the same network, GroupNorm exactly where BatchNorm is
    groups = tuple(la.groups for la in gn.layers if isinstance(la, GroupNorm))
    assert groups == EXPECTED_GROUPS[preset]
    for s in layer_shapes(gn):
        if isinstance(s.layer, GroupNorm):
            c, positions = s.in_shape[0], int(np.prod(s.in_shape[1:]))
            assert c % s.layer.groups == 0 and c // s.layer.groups * positions >= 8, s
            assert gn.gn_spec(s.layer) == gn.gn.replace(groups=s.layer.groups)
    shapes = param_shapes(gn)
    assert {n for n in shapes if n.startswith("gn")} == {f"gn{i}.{k}" for i in range(1, 8) for k in ("gamma", "beta")}
    for i in range(1, 8):  # per channel, as BN's γ and β
        assert shapes[f"gn{i}.gamma"] == shapes[f"gn{i}.beta"] == param_shapes(bn)[f"bn{i}.gamma"]
    assert running_names(gn) == ()
    assert set(trainable_names(gn)) == set(shapes)


def test_group_rule() -> None:
    assert gn_groups((96, 55, 55)) == 32  # Wu & He's G where 32 divides C
    assert gn_groups((24, 28, 28)) == 8  # the largest power of two dividing 24, not InstanceNorm's 24
    assert gn_groups((1024,)) == 32 and gn_groups((64,)) == 8  # 64/32 = 2 values per group: halved to 8
    assert gn_groups((16, 6, 6)) == 16  # one channel, 36 values per group
    assert gn_groups((5,)) == 1 and gn_groups((6,)) == 1  # odd C: one group; 6/2 = 3 values: halved


def test_variant_names_map_to_specs() -> None:
    assert variant_spec("tiny", "bn") == alexnet_spec("tiny", batch_norm=True) == alexnet_spec("tiny", norm="bn")
    assert variant_spec("tiny", "nobn") == alexnet_spec("tiny", batch_norm=False) == alexnet_spec("tiny", norm="none")
    assert variant_spec("tiny", "gn") == alexnet_spec("tiny", norm="gn")
    with pytest.raises(ValueError, match="unknown variant 'ln'"):
        variant_spec("tiny", "ln")
    with pytest.raises(ValueError, match="unknown norm 'ln'"):
        alexnet_spec("tiny", norm="ln")
    with pytest.raises(ValueError, match="give norm or batch_norm"):
        alexnet_spec("tiny", norm="gn", batch_norm=True)
    with pytest.raises(ValueError, match="give norm or batch_norm"):
        alexnet_spec("tiny")


def test_bad_gn_specs_are_refused() -> None:
    spec = variant_spec("tiny", "gn")
    with pytest.raises(ValueError, match="group_norm=False but the layers do contain GroupNorm"):
        dataclasses.replace(spec, group_norm=False)
    wrong = tuple(dataclasses.replace(la, groups=4) if la.name == "gn1" else la for la in spec.layers)
    with pytest.raises(ValueError, match="groups=4 does not divide the 6 channels"):
        dataclasses.replace(spec, layers=wrong)
    with pytest.raises(ValueError, match="per-channel γ and β"):
        dataclasses.replace(spec, gn=spec.gn.replace(params="group"))
    with pytest.raises(ValueError, match="Missing: \\['gn1.gamma'"):
        check_params(spec, init_params(variant_spec("tiny", "nobn"), seed=0))


def test_every_variant_of_a_seed_has_the_same_weights() -> None:
    gn, bn = init_params(variant_spec("cpu", "gn"), seed=3), init_params(variant_spec("cpu", "bn"), seed=3)
    shared = [n for n in gn if not n.startswith("gn")]
    assert shared and all(np.array_equal(gn[n], bn[n]) for n in shared)
    np.testing.assert_array_equal(gn["gn4.gamma"], 1.0)
    np.testing.assert_array_equal(gn["gn4.beta"], 0.0)


def _random_affine(spec, params: dict[str, np.ndarray], rng: np.random.Generator) -> dict[str, np.ndarray]:
    """γ, β away from 1, 0 per channel, so that a per-group or permuted γ/β cannot pass."""
    out = dict(params)
    for name in params:
        if name.endswith(".gamma"):
            out[name] = rng.uniform(0.5, 1.5, params[name].shape)
        elif name.endswith(".beta"):
            out[name] = rng.normal(0.0, 0.1, params[name].shape)
    return out


@pytest.mark.parametrize("variant", ["gn", "bn"])
def test_numpy_backward_equals_finite_differences(variant: str) -> None:
    spec = variant_spec("tiny", variant)
    rng = np.random.default_rng(11)
    params = _random_affine(spec, {n: v.astype(np.float64) for n, v in init_params(spec, seed=0).items()}, rng)
    x, y = rng.standard_normal((4, 1, 28, 28)), rng.integers(0, 10, 4)
    masks = anp.dropout_masks(spec, batch=4, rng=rng)
    result = anp.gradients(spec, params, x, y, dropout_masks=masks)
    assert list(result.grads) == list(trainable_names(spec))

    def loss(p: dict[str, np.ndarray]) -> float:
        return anp.cross_entropy(anp.forward(spec, p, x, train=True, dropout_masks=masks).logits, y)

    assert result.loss == loss(params)
    h = 1e-6
    for name in ("conv1.weight", "conv3.weight", f"{variant}1.gamma", f"{variant}3.beta", f"{variant}6.gamma",
                 "fc1.weight", "fc2.bias", "fc3.weight"):
        g = result.grads[name]
        scale = max(np.abs(result.grads[n]).max() for n in result.grads if layer_of(n) == layer_of(name))
        for idx in (np.unravel_index(np.argmax(np.abs(g)), g.shape), tuple(rng.integers(0, s) for s in g.shape)):
            plus, minus = dict(params), dict(params)
            plus[name], minus[name] = params[name].copy(), params[name].copy()
            plus[name][idx] += h
            minus[name][idx] -= h
            numeric = (loss(plus) - loss(minus)) / (2 * h)
            assert abs(numeric - g[idx]) <= 1e-6 * scale, (name, idx, numeric, g[idx])


def test_numpy_conv_and_pool_backward_with_stride_and_padding() -> None:
    """dx, dw, db of a strided, padded convolution and of an overlapping max-pool against central differences
    of L = Σ dy·y (the paper preset's conv1 has stride 4; tiny's convolutions have stride 1)."""
    rng = np.random.default_rng(3)
    x, w, b = rng.standard_normal((2, 3, 9, 9)), rng.standard_normal((4, 3, 3, 3)), rng.standard_normal(4)
    dy = rng.standard_normal(anp.conv2d(x, w, b, stride=2, padding=1).shape)
    dx, dw, db = anp.conv2d_backward(dy, x, w, stride=2, padding=1)
    for arg, grad in ((0, dx), (1, dw), (2, db)):
        for _ in range(5):
            values = [x.copy(), w.copy(), b.copy()]
            idx = tuple(rng.integers(0, s) for s in values[arg].shape)
            values[arg][idx] += 1e-6
            plus = np.sum(dy * anp.conv2d(*values, stride=2, padding=1))
            values[arg][idx] -= 2e-6
            minus = np.sum(dy * anp.conv2d(*values, stride=2, padding=1))
            assert (plus - minus) / 2e-6 == pytest.approx(grad[idx], rel=1e-6, abs=1e-8)
    dy_pool = rng.standard_normal(anp.max_pool2d(x, kernel=3, stride=2).shape)
    dx_pool = anp.max_pool2d_backward(dy_pool, x, kernel=3, stride=2)
    assert np.sum(dx_pool) == pytest.approx(np.sum(dy_pool))  # every window's gradient lands once
    for _ in range(10):
        idx = tuple(rng.integers(0, s) for s in x.shape)
        xp, xm = x.copy(), x.copy()
        xp[idx] += 1e-6
        xm[idx] -= 1e-6
        numeric = (np.sum(dy_pool * anp.max_pool2d(xp, kernel=3, stride=2))
                   - np.sum(dy_pool * anp.max_pool2d(xm, kernel=3, stride=2))) / 2e-6
        assert numeric == pytest.approx(dx_pool[idx], abs=1e-8)


def test_numpy_gn_eval_equals_training_forward() -> None:
    """GroupNorm has no running statistics: eval mode normalizes with the input's own groups."""
    spec = variant_spec("tiny", "gn").with_dropout(0.0)
    params = init_params(spec, seed=0)
    x = np.random.default_rng(4).standard_normal((4, 1, 28, 28))
    train = anp.forward(spec, params, x, train=True)
    np.testing.assert_array_equal(anp.forward(spec, params, x, train=False).logits, train.logits)
    assert train.batch_stats == {}


@pytest.mark.parametrize("framework", ["torch", "mxnet", "jax"])
def test_framework_gn_model_equals_the_numpy_reference(framework: str) -> None:
    """float64 logits, gradients and eval loss of the gn AlexNet equal the reference's, with per-channel γ, β."""
    require(framework)
    from bnparity.frameworks.registry import framework_module
    from bnparity.frameworks.training import SGDConfig, load_trainer
    from bnparity.suites.model_parity.harness import GN_EPS
    from bnparity.suites.model_parity.tolerance import model_rtol

    spec = variant_spec("tiny", "gn")
    spec = dataclasses.replace(spec, gn=spec.gn.replace(eps=GN_EPS["float64"]))  # exact in MXNet's float32 ε
    rng = np.random.default_rng(7)
    params = _random_affine(spec, init_params(spec, seed=0), rng)
    x, y = rng.standard_normal((8, 1, 28, 28)), rng.integers(0, 10, 8)
    masks = anp.dropout_masks(spec, batch=8, rng=rng)

    alexnet = framework_module(framework, "alexnet")
    back = alexnet.to_canonical(spec, alexnet.from_canonical(spec, params, dtype=np.dtype("float64")))
    assert list(back) == list(param_shapes(spec))
    for name, value in params.items():  # the conversion in and out is exact
        np.testing.assert_array_equal(back[name], value, err_msg=name)

    trainer = load_trainer(framework)(arch=spec, params=params, sgd=SGDConfig(lr=0.05), dtype="float64")
    got = trainer.gradients(x, y, dropout_masks=masks)
    ref = anp.gradients(spec, params, x, y, dropout_masks=masks)
    rtol = model_rtol(spec, "float64", batch=8)  # 2.8e-13
    np.testing.assert_allclose(got.logits, ref.logits, rtol=rtol, atol=rtol * np.abs(ref.logits).max())
    assert got.loss == pytest.approx(ref.loss, rel=rtol)
    for name in trainable_names(spec):
        scale = max(np.abs(ref.grads[n]).max() for n in ref.grads if layer_of(n) == layer_of(name))
        np.testing.assert_allclose(got.grads[name], ref.grads[name], rtol=rtol, atol=rtol * scale, err_msg=name)
    loss_sum, _ = trainer.evaluate(x, y)  # eval mode: the same GroupNorm, no dropout
    ref_eval = anp.per_example_loss(anp.forward(spec, params, x, train=False).logits, y).sum()
    assert loss_sum == pytest.approx(ref_eval, rel=rtol)
    # not vacuous: one layer grouped differently moves the logits far beyond the tolerance
    regrouped = tuple(dataclasses.replace(la, groups=1) if la.name == "gn3" else la for la in spec.layers)
    other = anp.forward(dataclasses.replace(spec, layers=regrouped), params, x, train=True, dropout_masks=masks)
    assert np.abs(other.logits - got.logits).max() > 1e3 * rtol * np.abs(ref.logits).max()
