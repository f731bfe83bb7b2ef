"""Keras' LayerNormalization, GroupNormalization (and groups=-1, its instance norm) and RMSNormalization adapters,
and the proofs of their conventions rows (frameworks/keras/convention.py: LAYER_CONVENTIONS), on the backend this
process runs."""

from __future__ import annotations

import os

import numpy as np
import pytest
from conftest import require
from test_keras_conventions import check_citations, check_proofs

from bnparity.reference.spec import GNSpec, INSpec, LNSpec, RMSSpec

NAME = f"keras-{os.environ.get('KERAS_BACKEND', 'tensorflow')}"
NORMS = ("layernorm", "groupnorm", "instancenorm", "rmsnorm")
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")
# The representative input and structure of each normalization (channels last).
CASES = {"layernorm": ((8, 10, 16), LNSpec()), "groupnorm": ((4, 6, 6, 8), GNSpec(groups=2, axis=-1)),
         "instancenorm": ((4, 6, 6, 8), INSpec(axis=-1)), "rmsnorm": ((8, 10, 16), RMSSpec())}
LAYERS = {"layernorm": ("LayerNormalization", {}), "groupnorm": ("GroupNormalization", {"groups": 2}),
          "instancenorm": ("GroupNormalization", {"groups": -1}), "rmsnorm": ("RMSNormalization", {})}


@pytest.fixture(scope="module")
def keras():
    require(NAME)
    import keras

    return keras


def rows() -> dict:
    from bnparity.frameworks.conventions import convention

    return {norm: convention(NAME, norm) for norm in NORMS}


def _layer(keras, norm: str, **options):
    cls, defaults = LAYERS[norm]
    return getattr(keras.layers, cls)(**{**defaults, **options})


def _run(keras, layer, x: np.ndarray, *, dtype: str = "float32", training: bool = True) -> np.ndarray:
    y = layer(keras.ops.convert_to_tensor(x.astype(dtype), dtype=dtype), training=training)
    return np.asarray(keras.ops.convert_to_numpy(y), dtype=np.float64)


def _data(shape, loc=0.0, scale=1.0, seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (loc + scale * rng.standard_normal(shape)).astype(np.float32).astype(np.float64)


def _standardized(x: np.ndarray, axes: tuple[int, ...], eps: float) -> np.ndarray:
    mu, var = x.mean(axis=axes, keepdims=True), x.var(axis=axes, keepdims=True)
    return (x - mu) / np.sqrt(var + eps)


def _expected(norm: str, x: np.ndarray, eps: float, groups: int = 2) -> np.ndarray:
    """What each layer computes at γ = 1, β = 0, channels last (the closed forms of bnparity.reference)."""
    if norm == "layernorm":
        return _standardized(x, (-1,), eps)
    if norm == "rmsnorm":
        return x / np.sqrt((x**2).mean(axis=-1, keepdims=True) + eps)
    spatial = tuple(range(1, x.ndim - 1))
    if norm == "instancenorm":
        return _standardized(x, spatial, eps)
    xg = x.reshape(x.shape[:-1] + (groups, x.shape[-1] // groups))
    return _standardized(xg, (*spatial, xg.ndim - 1), eps).reshape(x.shape)


def _adapter(norm: str, impl: str = "builtin"):
    from bnparity.frameworks.keras import groupnorm, instancenorm, layernorm, rmsnorm

    module = {"layernorm": layernorm, "groupnorm": groupnorm, "instancenorm": instancenorm, "rmsnorm": rmsnorm}[norm]
    suffix = {"layernorm": "LayerNorm", "groupnorm": "GroupNorm", "instancenorm": "InstanceNorm",
              "rmsnorm": "RMSNorm"}[norm]
    return getattr(module, f"{impl.capitalize()}{suffix}")()


def _inputs(shape, spec, dtype: str = "float32", *, loc: float = 0.5, seed: int = 0):
    from bnparity.reference.steps import LayerInputs

    rng = np.random.default_rng(seed)

    def draw():
        return (loc + rng.standard_normal(shape)).astype(dtype)

    params = spec.param_shape(shape)
    return LayerInputs(xs=(draw(), draw()), dys=tuple(rng.standard_normal(shape).astype(dtype) for _ in range(2)),
                       x_eval=draw(), gamma=rng.normal(1, 0.5, params).astype(dtype).astype(np.float64),
                       beta=rng.normal(0, 0.5, params).astype(dtype).astype(np.float64))


def _assert_close(got, ref, *, rtol: float, atol: float) -> None:
    for name, r in ref.as_dict().items():
        g = got.as_dict()[name]
        assert (g is None) == (r is None), name
        if r is not None:
            np.testing.assert_allclose(g, r, rtol=rtol, atol=atol, err_msg=name)


@pytest.mark.parametrize("norm", NORMS)
def test_default_eps(keras, norm):
    eps = rows()[norm].eps()
    # σ² ≈ 4e-4 shows ε = 1e-3 against 1e-5; RMS's mean(x²) ≈ 4e-6 shows its 1e-6 against 1e-5
    x = _data((4, 6, 6, 8), scale=2e-3) if norm == "rmsnorm" else _data((4, 6, 6, 8), loc=0.2, scale=0.02)
    layer = _layer(keras, norm)
    y = _run(keras, layer, x)
    np.testing.assert_allclose(y, _expected(norm, x, eps), rtol=2e-4, atol=2e-4)
    assert np.abs(y - _expected(norm, x, 1e-5)).max() > 1e-3
    assert layer.epsilon == eps


@pytest.mark.parametrize("norm", NORMS)
def test_defaults_mode_is_keras_as_shipped(keras, norm):
    """The builtin adapter in defaults mode (float32) is the reference run with the row's spec."""
    from bnparity.reference.normalization import run_reference

    shape, case = CASES[norm]
    spec = rows()[norm].spec(dtype=np.dtype(np.float32), **case.structure())
    adapter = _adapter(norm)
    spec = adapter.realize(spec, np.dtype(np.float32))
    inputs = _inputs(shape, spec)
    _assert_close(adapter.run(inputs, spec=spec, use_defaults=True), run_reference(spec, inputs), rtol=1e-4,
                  atol=1e-4)


@pytest.mark.parametrize("norm", ("layernorm", "groupnorm", "instancenorm"))
def test_variance_algorithm_is_the_backends_moments(keras, norm):
    """On 1e3 + N(0, 1) float32 the two-pass σ² keeps x̂ right to ~1e-4; E[x²] − E[x]² (GroupNormalization on the
    PyTorch backend, whose ops.moments it is) is off by ~1e-1. LayerNormalization is two-pass on every backend."""
    row = rows()[norm]
    x = _data((4, 6, 6, 8), loc=1e3, seed=2)
    y = _run(keras, _layer(keras, norm), x)
    err = np.abs(y - _expected(norm, x, row.eps())).max()
    if row.defaults["variance"] == "two-pass":
        assert err < 1e-3, err
    else:
        assert NAME == "keras-torch" and err > 1e-2, err


@pytest.mark.parametrize("norm", ("layernorm", "rmsnorm"))
def test_default_normalizes_the_last_axis_only(keras, norm):
    x = _data((4, 5, 6), loc=1.0)
    layer = _layer(keras, norm)
    np.testing.assert_allclose(_run(keras, layer, x), _expected(norm, x, rows()[norm].eps()), rtol=1e-4, atol=1e-5)
    assert [tuple(v.shape) for v in layer.weights] == [(6,)] * len(layer.weights)


@pytest.mark.parametrize("norm", ("layernorm", "rmsnorm"))
def test_params_have_the_shape_of_the_normalized_axes(keras, norm):
    x = _data((4, 5, 6), loc=1.0)
    layer = _layer(keras, norm, axis=[1, 2])
    y = _run(keras, layer, x)
    assert {tuple(v.shape) for v in layer.weights} == {(5, 6)}
    if norm == "layernorm":
        np.testing.assert_allclose(y, _standardized(x, (1, 2), rows()[norm].eps()), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("norm", ("layernorm", "rmsnorm"))
def test_feature_params_over_several_axes_are_unsupported(keras, norm):
    from bnparity.frameworks.base import Unsupported

    spec = CASES[norm][1].replace(normalized_dims=2, params="feature")
    with pytest.raises(Unsupported, match=rf"^{NAME}: .*per feature of the last axis"):
        _adapter(norm).realize(spec, np.dtype(np.float32))
    _adapter(norm, "scratch").realize(spec, np.dtype(np.float32))  # the scratch layer has them


@pytest.mark.parametrize("norm", ("layernorm", "groupnorm", "instancenorm"))
def test_center_and_scale_switch_independently(keras, norm):
    names = {}
    for scale in (True, False):
        for center in (True, False):
            layer = _layer(keras, norm, scale=scale, center=center)
            layer.build((4, 6, 6, 8))
            names[scale, center] = sorted(v.name for v in layer.trainable_variables)
    assert names == {(True, True): ["beta", "gamma"], (True, False): ["gamma"], (False, True): ["beta"],
                     (False, False): []}
    assert rows()[norm].defaults["affine"] is True


def test_groupnorm_default_is_32_groups(keras):
    layer = keras.layers.GroupNormalization()
    assert layer.groups == rows()["groupnorm"].defaults["groups"] == 32
    layer.build((2, 64))
    with pytest.raises(ValueError, match="Number of groups"):
        keras.layers.GroupNormalization().build((2, 48))


def test_groupnorm_groups_are_consecutive_channels_and_params_per_channel(keras):
    x = _data((4, 3, 8), loc=1.0)
    x[..., :4] *= 5.0  # the first 4 channels are one group only if groups are consecutive
    layer = keras.layers.GroupNormalization(groups=2)
    y = _run(keras, layer, x)
    np.testing.assert_allclose(y, _expected("groupnorm", x, 1e-3), rtol=1e-4, atol=1e-5)
    interleaved = _standardized(x.reshape(4, 3, 4, 2), (1, 2), 1e-3).reshape(x.shape)  # c % G instead
    assert np.abs(y - interleaved).max() > 0.1
    assert {tuple(v.shape) for v in layer.weights} == {(8,)}


def test_group_params_are_unsupported(keras):
    from bnparity.frameworks.base import Unsupported

    with pytest.raises(Unsupported, match=rf"^{NAME}: keras.layers.GroupNormalization has one gamma and beta"):
        _adapter("groupnorm").realize(GNSpec(groups=2, params="group"), np.dtype(np.float32))


def test_instancenorm_is_groupnorm_with_one_group_per_channel(keras):
    x = _data((4, 5, 5, 6), loc=2.0)
    layer = keras.layers.GroupNormalization(groups=-1)
    y = _run(keras, layer, x)
    assert layer.groups == 6
    np.testing.assert_allclose(y, _expected("instancenorm", x, 1e-3), rtol=1e-4, atol=1e-5)


def test_instancenorm_of_a_2d_input_returns_beta(keras):
    from bnparity.frameworks.base import Unsupported

    layer = keras.layers.GroupNormalization(groups=-1)
    layer.build((4, 3))
    layer.beta.assign(np.array([0.5, -1.0, 2.0], dtype=np.float32))
    y = _run(keras, layer, _data((4, 3), scale=3.0))
    np.testing.assert_allclose(y, np.broadcast_to([0.5, -1.0, 2.0], (4, 3)), atol=1e-6)
    spec = INSpec(axis=-1)
    with pytest.raises(Unsupported, match=rf"^{NAME}: .*returns β for every input"):
        _adapter("instancenorm").run(_inputs((4, 3), spec), spec=spec)


def test_instancenorm_running_statistics_are_unsupported(keras):
    from bnparity.frameworks.base import Unsupported

    assert rows()["instancenorm"].defaults["track_running_stats"] is False
    with pytest.raises(Unsupported, match=rf"^{NAME}: keras.layers.GroupNormalization keeps no running statistics"):
        _adapter("instancenorm").realize(INSpec(track_running_stats=True), np.dtype(np.float32))


def test_rmsnorm_has_only_a_scale(keras):
    layer = keras.layers.RMSNormalization()
    layer.build((4, 6))
    assert [v.name for v in layer.weights] == ["scale"]
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(layer.scale), np.ones(6))
    with pytest.raises(ValueError, match="Unrecognized keyword arguments"):
        keras.layers.RMSNormalization(center=True)


@pytest.mark.parametrize("norm", NORMS)
def test_keeps_no_running_statistics(keras, norm):
    x = _data(CASES[norm][0], loc=1.0)
    layer = _layer(keras, norm)
    train = _run(keras, layer, x, training=True)
    assert layer.non_trainable_variables == []
    np.testing.assert_array_equal(_run(keras, layer, x, training=False), train)


@pytest.mark.parametrize("norm", NORMS)
def test_builtin_computes_float64_in_float32_except_on_tensorflow(keras, norm):
    from bnparity.frameworks.base import Unsupported
    from bnparity.frameworks.keras._x64 import dtype_scope

    x = _data(CASES[norm][0], loc=1.0, scale=2.0)
    with dtype_scope(np.dtype(np.float64)):
        layer = _layer(keras, norm, dtype="float64")
        err = np.abs(_run(keras, layer, x, dtype="float64") - _expected(norm, x, rows()[norm].eps())).max()
    spec = CASES[norm][1]
    if NAME == "keras-tensorflow":
        assert err < 1e-13, err
        _adapter(norm).realize(spec, np.dtype(np.float64))
    else:
        assert 1e-9 < err < 1e-5, err
        with pytest.raises(Unsupported, match=rf"^{NAME}: keras.layers.\w+ computes in float32"):
            _adapter(norm).realize(spec, np.dtype(np.float64))


def test_keras_ops_mean_computes_float64_in_float32_except_on_tensorflow(keras):
    """Why the scratch layers average with ops.sum(x) / m: ops.mean rounds a float64 input to float32 on JAX and
    PyTorch (keras/src/backend/jax/numpy.py:231, keras/src/backend/torch/numpy.py:176)."""
    from bnparity.frameworks.keras._session import _mean
    from bnparity.frameworks.keras._x64 import dtype_scope

    x = np.full((4,), 1.0 + 2.0**-40)  # float32 rounds it to 1
    with dtype_scope(np.dtype(np.float64)):
        xt = keras.ops.convert_to_tensor(x, dtype="float64")
        mean = float(keras.ops.convert_to_numpy(keras.ops.mean(xt)))
        ours = float(keras.ops.convert_to_numpy(_mean(xt, (0,)))[0])
    assert ours == 1.0 + 2.0**-40
    assert mean == (1.0 + 2.0**-40 if NAME == "keras-tensorflow" else 1.0)


@pytest.mark.parametrize("norm", NORMS)
def test_scratch_matches_the_reference_in_float64(keras, norm):
    from bnparity.reference.normalization import run_reference

    shape, spec = CASES[norm]
    if norm == "instancenorm":
        spec = spec.replace(affine=True, track_running_stats=True, momentum=0.3)
    inputs = _inputs(shape, spec, "float64", loc=3.0)
    _assert_close(_adapter(norm, "scratch").run(inputs, spec=spec), run_reference(spec, inputs), rtol=1e-11,
                  atol=1e-11)


@pytest.mark.parametrize("norm", NORMS)
def test_every_fact_is_cited_and_proved_here(keras, norm):
    """Each default has a fact; each fact a citation (quoting the installed code) and proofs (tests that exist)."""
    row = rows()[norm]
    assert row.framework == NAME
    assert set(row.defaults) <= set(row.facts), set(row.defaults) - set(row.facts)
    assert set(row.facts) == set(row.citations) == set(row.proofs), norm
    check_citations(row.citations)
    for proofs in row.proofs.values():
        check_proofs(proofs)
