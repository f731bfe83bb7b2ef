"""The Keras AlexNet on this process's backend: exact canonical conversion, the NumPy forward, fc1's flatten order,
and float64 exactly where every layer computes it."""

from __future__ import annotations

import os

import numpy as np
import pytest
from conftest import require

from bnparity.reference import alexnet_numpy as anp
from bnparity.reference.alexnet import Conv, alexnet_spec, init_params, param_shapes

NAME = f"keras-{os.environ.get('KERAS_BACKEND', 'tensorflow')}"
# JAX compiles every new Trainer's step and every eager op's first shape: these take 5-20 s there, 1-4 s elsewhere
SLOW_ON_JAX = pytest.mark.slow if NAME == "keras-jax" else (lambda test: test)


def _modules():
    require(NAME)
    from bnparity.frameworks.keras import _x64, alexnet, convert, train

    return alexnet, convert, _x64, train


def _logits(spec, params, x, masks, dtype: str) -> np.ndarray:
    alexnet, convert, x64, _ = _modules()
    model = alexnet.from_canonical(spec, params, dtype=np.dtype(dtype))
    with x64.dtype_scope(np.dtype(dtype)):
        mt = None if masks is None else [convert.to_tensor(m, np.dtype(dtype)) for m in masks]
        return convert.to_numpy(model(convert.to_tensor(x, np.dtype(dtype)), training=True, dropout_masks=mt))


def _batch(spec, n: int = 8, seed: int = 5):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, *spec.input_shape)).astype(np.float32)
    return x, anp.dropout_masks(spec, batch=n, rng=rng)


@SLOW_ON_JAX
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("norm", ["bn", "gn"])
def test_canonical_arrays_round_trip_exactly(dtype: str, norm: str) -> None:
    alexnet, *_ = _modules()
    spec = alexnet_spec("tiny", norm=norm)
    rng = np.random.default_rng(8)
    # float64 values everywhere, so that a transposed or permuted layout cannot pass
    params = {n: rng.uniform(0.5, 1.5, v.shape) for n, v in init_params(spec, seed=4).items()}
    model = alexnet.from_canonical(spec, params, dtype=np.dtype(dtype))
    back = alexnet.to_canonical(spec, model)
    assert list(back) == list(param_shapes(spec))
    for name, value in params.items():
        assert back[name].dtype == np.dtype(dtype), name
        np.testing.assert_array_equal(back[name], value.astype(dtype), err_msg=name)
    held = model.by_name()
    assert tuple(held["conv2.weight"].shape) == (5, 5, 6, 16)  # HWIO
    assert tuple(held["fc1.weight"].shape) == (params["fc1.weight"].shape[1], 64)  # (in, out)
    with pytest.raises(ValueError, match=r"Missing: \['conv1.bias'\]"):
        alexnet.from_canonical(spec, {n: v for n, v in params.items() if n != "conv1.bias"}, dtype=np.dtype(dtype))


@SLOW_ON_JAX
@pytest.mark.parametrize("norm", ["bn", "none", "gn"])
def test_forward_equals_the_numpy_reference_in_float32(norm: str) -> None:
    from bnparity.suites.model_parity.tolerance import model_rtol

    spec = alexnet_spec("tiny", norm=norm)
    params = init_params(spec, seed=0)
    x, masks = _batch(spec)
    got = _logits(spec, params, x, masks, "float32")
    ref = anp.forward(spec, params, x, train=True, dropout_masks=masks).logits
    rtol = model_rtol(spec, "float32", batch=8)
    np.testing.assert_allclose(got, ref, rtol=rtol, atol=rtol * np.abs(ref).max())


@SLOW_ON_JAX
@pytest.mark.parametrize("norm", ["bn", "none", "gn"])
def test_float64_is_refused_exactly_where_a_layer_computes_float32(norm: str) -> None:
    """Where _float64_problem says None the network agrees with the float64 reference to 1e-12 of its largest logit;
    where it refuses, Keras really returned float32 values (this fails once Keras computes float64 there)."""
    *_, train = _modules()
    spec = alexnet_spec("tiny", norm=norm)
    params = init_params(spec, seed=0)
    x, masks = _batch(spec)
    got = _logits(spec, params, x, masks, "float64")
    ref = anp.forward(spec, params, x, train=True, dropout_masks=masks).logits
    error = np.abs(got - ref).max() / np.abs(ref).max()
    if train._float64_problem(spec) is None:
        assert error < 1e-12, error
    else:
        assert error > 1e-9, error  # float32 rounding somewhere in the network


def test_fc1_needs_the_flatten_permutation() -> None:
    """Loading fc1's canonical (C, H, W)-ordered columns without the permutation changes the logits."""
    alexnet, convert, x64, _ = _modules()
    spec = alexnet_spec("tiny", norm="none").with_dropout(0.0)
    params = init_params(spec, seed=2)
    x, _ = _batch(spec)
    right = _logits(spec, params, x, None, "float32")
    model = alexnet.from_canonical(spec, params, dtype=np.dtype("float32"))
    model.by_name()["fc1.weight"].assign(params["fc1.weight"].T)  # (in, out) but in C, H, W order
    wrong = convert.to_numpy(model(convert.to_tensor(x, np.dtype("float32")), training=True))
    assert np.abs(wrong - right).max() > 1e-2 * np.abs(right).max()


@pytest.mark.parametrize("conv, mode", [(Conv("c", 4, 3, padding=1), "same"), (Conv("c", 4, 5, padding=2), "same"),
                                        (Conv("c", 4, 11, stride=4), "valid"),
                                        (Conv("c", 4, 3, stride=2, padding=1), "valid")])
def test_padding_mode_is_same_only_when_symmetric(conv: Conv, mode: str) -> None:
    alexnet, *_ = _modules()
    assert alexnet._padding(conv) == mode


def test_explicit_padding_layer_matches_the_reference() -> None:
    """A padded strided convolution (not Keras' "same") goes through ZeroPadding2D and still equals the reference."""
    import dataclasses

    from bnparity.suites.model_parity.tolerance import model_rtol

    spec = alexnet_spec("tiny", norm="none").with_dropout(0.0)
    layers = tuple(Conv("conv1", la.out_channels, 3, stride=1, padding=2) if la.name == "conv1" else la
                   for la in spec.layers)
    spec = dataclasses.replace(spec, layers=layers)
    params = init_params(spec, seed=3)
    x, _ = _batch(spec)
    alexnet, *_ = _modules()
    assert "conv1_pad" in alexnet.from_canonical(spec, params, dtype=np.dtype("float32")).layers_by_name
    got = _logits(spec, params, x, None, "float32")
    ref = anp.forward(spec, params, x, train=True).logits
    rtol = model_rtol(spec, "float32", batch=8)
    np.testing.assert_allclose(got, ref, rtol=rtol, atol=rtol * np.abs(ref).max())
