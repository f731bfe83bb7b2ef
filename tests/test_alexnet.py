"""The AlexNet spec, its canonical layout and init, the float64 NumPy forward, and each framework's model."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from conftest import require

from bnparity.frameworks.registry import descriptors
from bnparity.reference import alexnet_numpy as anp
from bnparity.reference.alexnet import (
    ARCH_PRESETS,
    BatchNorm,
    Flatten,
    MaxPool,
    alexnet_spec,
    check_params,
    dense_columns_chw_to_hwc,
    dense_columns_hwc_to_chw,
    flatten_shape,
    init_params,
    layer_shapes,
    load_params,
    param_shapes,
    save_params,
    trainable_names,
)

# preset -> (conv1 output size, sizes after the three max-pools, fc1 input features)
EXPECTED_SHAPES = {"tiny": (28, (13, 6, 2), 16 * 2 * 2), "cpu": (28, (13, 6, 2), 64 * 2 * 2),
                   "paper": (54, (26, 12, 5), 256 * 5 * 5)}


@pytest.mark.parametrize("preset", sorted(ARCH_PRESETS))
@pytest.mark.parametrize("batch_norm", [True, False])
def test_spatial_sizes_of_every_preset(preset: str, batch_norm: bool) -> None:
    spec = alexnet_spec(preset, batch_norm=batch_norm)
    shapes = layer_shapes(spec)
    conv1, pools, flat = EXPECTED_SHAPES[preset]
    assert shapes[0].out_shape[1:] == (conv1, conv1)
    assert tuple(s.out_shape[1] for s in shapes if isinstance(s.layer, MaxPool)) == pools
    assert next(s for s in shapes if isinstance(s.layer, Flatten)).out_shape == (flat,)
    assert shapes[-1].out_shape == (10,)
    assert param_shapes(spec)["fc1.weight"][1] == flat


@pytest.mark.parametrize("preset", sorted(ARCH_PRESETS))
def test_variants_differ_only_by_batch_norm_layers(preset: str) -> None:
    with_bn, without = alexnet_spec(preset, batch_norm=True), alexnet_spec(preset, batch_norm=False)
    assert tuple(la for la in with_bn.layers if not isinstance(la, BatchNorm)) == without.layers
    assert sum(isinstance(la, BatchNorm) for la in with_bn.layers) == 7
    extra = set(param_shapes(with_bn)) - set(param_shapes(without))
    assert extra == {f"bn{i}.{k}" for i in range(1, 8) for k in ("gamma", "beta", "running_mean", "running_var")}
    assert set(param_shapes(without)) < set(param_shapes(with_bn))


def test_bad_specs_are_refused() -> None:
    spec = alexnet_spec("tiny", batch_norm=True)
    with pytest.raises(ValueError, match="unknown AlexNet preset 'huge'"):
        alexnet_spec("huge", batch_norm=True)
    with pytest.raises(ValueError, match="needs an input of at least"):
        dataclasses.replace(spec, image_size=8)
    with pytest.raises(ValueError, match="batch_norm=False but the layers do contain BatchNorm"):
        dataclasses.replace(spec, batch_norm=False)
    with pytest.raises(ValueError, match=r"dropout must be in \[0, 1\)"):
        spec.with_dropout(1.0)
    assert spec.with_dropout(0.0).dropout_layers[0].rate == 0.0


def test_flatten_order_needs_the_permutation() -> None:
    """NHWC flattening equals the canonical NCHW Dense only with fc1's input columns permuted."""
    rng = np.random.default_rng(0)
    chw = (3, 2, 4)
    x = rng.standard_normal((5, *chw))
    w = rng.standard_normal((7, int(np.prod(chw))))
    canonical = x.reshape(5, -1) @ w.T
    nhwc_flat = x.transpose(0, 2, 3, 1).reshape(5, -1)
    permuted = dense_columns_chw_to_hwc(w, chw)
    np.testing.assert_allclose(nhwc_flat @ permuted.T, canonical, rtol=1e-12, atol=1e-12)
    assert np.abs(nhwc_flat @ w.T - canonical).max() > 0.5  # the classic porting bug
    np.testing.assert_array_equal(dense_columns_hwc_to_chw(permuted, chw), w)
    assert flatten_shape(alexnet_spec("cpu", batch_norm=False)) == (64, 2, 2)


def test_params_round_trip_through_npz(tmp_path) -> None:
    spec = alexnet_spec("tiny", batch_norm=True)
    params = init_params(spec, seed=3)
    save_params(tmp_path / "w.npz", params)
    loaded = load_params(tmp_path / "w.npz", spec=spec)
    assert list(loaded) == list(params)
    for name, value in params.items():
        assert loaded[name].dtype == np.float32
        np.testing.assert_array_equal(loaded[name], value)
    with pytest.raises(ValueError, match="Missing: \\['bn1.gamma'"):
        check_params(spec, {n: v for n, v in params.items() if n != "bn1.gamma"})
    with pytest.raises(ValueError, match=r"conv1.bias must have shape \(6,\)"):
        check_params(spec, {**params, "conv1.bias": np.zeros(5)})
    with pytest.raises(ValueError, match="unexpected: \\['bn1.gamma'"):
        load_params(tmp_path / "w.npz", spec=alexnet_spec("tiny", batch_norm=False))


def test_init_is_seeded_glorot_uniform() -> None:
    spec = alexnet_spec("cpu", batch_norm=True)
    a, b, c = init_params(spec, seed=0), init_params(spec, seed=0), init_params(spec, seed=1)
    assert all(np.array_equal(a[n], b[n]) for n in a)
    assert not np.array_equal(a["conv2.weight"], c["conv2.weight"])
    w = a["fc2.weight"]  # 1024 -> 1024: U(−√(6/2048), √(6/2048)), std = bound/√3
    bound = np.sqrt(6 / 2048)
    assert w.dtype == np.float32 and np.abs(w).max() <= bound
    assert abs(w.std() - bound / np.sqrt(3)) < 0.01 * bound
    conv2 = a["conv2.weight"]  # (64, 24, 5, 5): fan_in 24·25, fan_out 64·25
    assert np.abs(conv2).max() <= np.sqrt(6 / (88 * 25)) < np.abs(conv2).max() * 1.01
    np.testing.assert_array_equal(a["conv3.bias"], 0.0)
    np.testing.assert_array_equal(a["bn3.gamma"], 1.0)
    np.testing.assert_array_equal(a["bn3.running_var"], 1.0)
    np.testing.assert_array_equal(a["bn3.beta"], 0.0)


def test_numpy_ops_hand_worked() -> None:
    x = np.arange(9.0).reshape(1, 1, 3, 3)
    kernel = np.array([[[[1.0, 2.0], [3.0, 4.0]]]])
    # y[i, j] = x[i, j] + 2 x[i, j+1] + 3 x[i+1, j] + 4 x[i+1, j+1] + 0.5
    np.testing.assert_array_equal(anp.conv2d(x, kernel, np.array([0.5]), stride=1, padding=0)[0, 0],
                                  [[27.5, 37.5], [57.5, 67.5]])
    # padding 1, stride 2: windows at padded (0,0): 4·x00; (0,2): 3·x01 + 4·x02; (2,0): 2·x10 + 4·x20;
    # (2,2): 1·x11 + 2·x12 + 3·x21 + 4·x22
    np.testing.assert_array_equal(anp.conv2d(x, kernel, np.array([0.0]), stride=2, padding=1)[0, 0],
                                  [[0.0, 11.0], [30.0, 67.0]])
    pooled = anp.max_pool2d(np.arange(25.0).reshape(1, 1, 5, 5), kernel=3, stride=2)
    np.testing.assert_array_equal(pooled[0, 0], [[12.0, 14.0], [22.0, 24.0]])
    assert anp.cross_entropy(np.zeros((3, 10)), np.array([0, 4, 9])) == pytest.approx(np.log(10))
    assert anp.cross_entropy(np.array([[0.0, np.log(3.0)]]), np.array([1])) == pytest.approx(-np.log(0.75))


def test_conv2d_equals_the_direct_sum() -> None:
    rng = np.random.default_rng(1)
    x, w, b = rng.standard_normal((2, 3, 7, 7)), rng.standard_normal((4, 3, 3, 3)), rng.standard_normal(4)
    y = anp.conv2d(x, w, b, stride=2, padding=1)
    xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    direct = np.array([[[[np.sum(w[o] * xp[n, :, 2 * i:2 * i + 3, 2 * j:2 * j + 3]) + b[o] for j in range(4)]
                         for i in range(4)] for o in range(4)] for n in range(2)])
    np.testing.assert_allclose(y, direct, rtol=1e-13, atol=1e-13)


def test_masks_and_running_statistics_closed_form() -> None:
    spec = alexnet_spec("tiny", batch_norm=True)
    params = init_params(spec, seed=0)
    rng = np.random.default_rng(2)
    masks = anp.dropout_masks(spec, batch=8, rng=rng)
    assert [m.shape for m in masks] == [(8, 64), (8, 64)]
    assert set(np.unique(np.concatenate(masks))) == {0.0, 2.0}
    x = rng.standard_normal((8, 1, 28, 28))
    result = anp.forward(spec, params, x, train=True, dropout_masks=masks)
    stats = result.batch_stats["bn6"]
    assert stats.count == 8
    run = anp.running_after_step(spec, params, result.batch_stats, convention=spec.bn)
    np.testing.assert_allclose(run["bn6.running_mean"], 0.1 * stats.mean, rtol=1e-15)
    np.testing.assert_allclose(run["bn6.running_var"], 0.9 + 0.1 * stats.var * 8 / 7, rtol=1e-15)
    biased = anp.running_after_step(spec, params, result.batch_stats, convention=spec.bn.replace(running_var="biased"))
    np.testing.assert_allclose(biased["bn6.running_var"], 0.9 + 0.1 * stats.var, rtol=1e-15)
    with pytest.raises(ValueError, match="needs dropout_masks in training mode"):
        anp.forward(spec, params, x, train=True)


FRAMEWORKS = [d.name for d in descriptors()]


def _trainer(framework: str, spec, params, **kw):
    require(framework)
    from bnparity.frameworks.training import SGDConfig, load_trainer

    return load_trainer(framework)(arch=spec, params=params, sgd=SGDConfig(lr=0.05, momentum=0.9, weight_decay=5e-4),
                                   **kw)


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_framework_model_equals_the_numpy_forward(framework: str) -> None:
    from bnparity.suites.model_parity.tolerance import model_rtol

    spec = alexnet_spec("tiny", batch_norm=True)
    params = init_params(spec, seed=0)
    rng = np.random.default_rng(5)
    x, y = rng.standard_normal((8, 1, 28, 28)).astype(np.float32), rng.integers(0, 10, 8)
    masks = anp.dropout_masks(spec, batch=8, rng=rng)
    trainer = _trainer(framework, spec, params)
    state = trainer.state()
    for name, value in params.items():  # the conversion in and out is exact
        np.testing.assert_array_equal(state[name], value, err_msg=name)
    rtol = model_rtol(spec, "float32", batch=8)
    got = trainer.gradients(x, y, dropout_masks=masks)
    ref = anp.forward(spec, params, x, train=True, dropout_masks=masks).logits
    np.testing.assert_allclose(got.logits, ref, rtol=rtol, atol=rtol * np.abs(ref).max())
    assert got.loss == pytest.approx(anp.cross_entropy(ref, y), rel=rtol)
    assert set(got.grads) == set(trainable_names(spec))
    trainer.load_state(state)
    loss_sum, correct = trainer.evaluate(x, y)  # running statistics (0, 1) and no dropout
    ref_eval = anp.forward(spec, params, x, train=False).logits
    assert loss_sum == pytest.approx(anp.per_example_loss(ref_eval, y).sum(), rel=rtol)
    assert correct == int((ref_eval.argmax(1) == y).sum())


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_framework_dropout_is_random_and_resumes_exactly(framework: str) -> None:
    spec = alexnet_spec("tiny", batch_norm=False)
    params = init_params(spec, seed=1)
    rng = np.random.default_rng(6)
    xs = [rng.standard_normal((8, 1, 28, 28)).astype(np.float32) for _ in range(2)]
    y = rng.integers(0, 10, 8)
    first = _trainer(framework, spec, params)
    a, b = first.gradients(xs[0], y).logits, first.gradients(xs[0], y).logits
    assert np.abs(a - b).max() > 1e-3  # its own dropout layers, fresh masks each pass
    first.train_step(xs[0], y)
    checkpoint = first.state()
    expected = first.train_step(xs[1], y).loss
    resumed = _trainer(framework, spec, params)
    resumed.load_state(checkpoint)
    assert resumed.train_step(xs[1], y).loss == expected
    off = _trainer(framework, spec.with_dropout(0.0), params)
    np.testing.assert_array_equal(off.gradients(xs[0], y).logits, off.gradients(xs[0], y).logits)


@pytest.mark.parametrize("framework", FRAMEWORKS)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_framework_alexnet_converts_canonical_arrays_exactly(framework: str, dtype: str) -> None:
    """from_canonical then to_canonical gives every array back (rounded to `dtype` only), in canonical order."""
    require(framework)
    from bnparity.frameworks.registry import framework_module

    alexnet = framework_module(framework, "alexnet")
    spec = alexnet_spec("tiny", batch_norm=True)
    rng = np.random.default_rng(8)
    # float64 values everywhere (running statistics too), so that a transposed or permuted layout cannot pass
    params = {n: rng.uniform(0.5, 1.5, v.shape) for n, v in init_params(spec, seed=4).items()}
    held = alexnet.from_canonical(spec, params, dtype=np.dtype(dtype))
    back = alexnet.to_canonical(spec, held)
    assert list(back) == list(param_shapes(spec))
    for name, value in params.items():
        assert back[name].dtype == np.dtype(dtype), name
        np.testing.assert_array_equal(back[name], value.astype(dtype), err_msg=name)
    subset = ("fc1.weight", "bn1.running_var", "conv2.weight")
    picked = alexnet.to_canonical(spec, held, subset)
    assert list(picked) == list(subset)
    np.testing.assert_array_equal(picked["fc1.weight"], back["fc1.weight"])
    with pytest.raises(ValueError, match=r"Missing: \['conv1.bias'\]"):
        alexnet.from_canonical(spec, {n: v for n, v in params.items() if n != "conv1.bias"}, dtype=np.dtype(dtype))
