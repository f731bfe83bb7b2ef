"""keras.layers.BatchNormalization's conventions row (frameworks/keras/convention.py: CONVENTION), proved on the
backend this process runs: each test runs Keras itself, and one checks that every citation quotes its line."""

from __future__ import annotations

import ast
import dataclasses
import importlib.util
import os
import re
from pathlib import Path

import numpy as np
import pytest
from conftest import require

NAME = f"keras-{os.environ.get('KERAS_BACKEND', 'tensorflow')}"
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


@pytest.fixture(scope="module")
def keras():
    require(NAME)
    import keras

    assert f"keras-{keras.config.backend()}" == NAME
    return keras


@pytest.fixture(scope="module")
def row(keras):
    from bnparity.frameworks.conventions import convention

    return convention(NAME)


def _bn(keras, x: np.ndarray, *, training: bool = True, **options):
    """A float32 BatchNormalization built for x, and its output on x."""
    layer = keras.layers.BatchNormalization(**options)
    y = layer(keras.ops.convert_to_tensor(x.astype(np.float32)), training=training)
    return layer, np.asarray(keras.ops.convert_to_numpy(y), dtype=np.float64)


def _numpy(keras, v) -> np.ndarray:
    return np.asarray(keras.ops.convert_to_numpy(v), dtype=np.float64)


def _data(shape=(16, 5, 3), loc=0.0, scale=1.0, seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (loc + scale * rng.standard_normal(shape)).astype(np.float32).astype(np.float64)


def test_row_is_the_layer_as_shipped(keras, row):
    layer = keras.layers.BatchNormalization()
    assert (layer.momentum, layer.epsilon, layer.axis, layer.center, layer.scale) == (
        row.momentum, row.eps, row.channel_axis, True, True)
    assert (row.momentum_weighs, row.running_var, row.running_var_configurable) == ("old", "biased", False)


def test_momentum_weighs_the_old_value_and_the_moving_variance_is_biased(keras, row):
    x = _data()
    layer, _ = _bn(keras, x, momentum=0.7)
    mu, var = x.mean(axis=(0, 1)), x.var(axis=(0, 1))  # biased σ²_B
    np.testing.assert_allclose(_numpy(keras, layer.moving_mean), 0.7 * 0.0 + 0.3 * mu, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(_numpy(keras, layer.moving_variance), 0.7 * 1.0 + 0.3 * var, rtol=1e-5)
    m = x.size // x.shape[-1]
    unbiased = 0.7 + 0.3 * var * m / (m - 1)
    assert np.all(np.abs(_numpy(keras, layer.moving_variance) - unbiased) > 1e-3)  # distinguishable


def test_default_eps(keras, row):
    x = _data(scale=0.05)  # σ² ≈ 2.5e-3: ε = 1e-3 and 1e-5 differ by ~20 %
    _, y = _bn(keras, x)
    mu, var = x.mean(axis=(0, 1)), x.var(axis=(0, 1))
    np.testing.assert_allclose(y, (x - mu) / np.sqrt(var + row.eps), rtol=1e-4, atol=1e-5)
    assert np.abs(y - (x - mu) / np.sqrt(var + 1e-5)).max() > 0.05


def test_channel_axis_is_last(keras, row):
    x = _data((8, 4, 6))
    layer, y = _bn(keras, x)
    assert tuple(layer.gamma.shape) == (6,)
    np.testing.assert_allclose(y.mean(axis=(0, 1)), 0.0, atol=1e-5)  # per last-axis channel
    np.testing.assert_allclose(y.var(axis=(0, 1)), x.var(axis=(0, 1)) / (x.var(axis=(0, 1)) + row.eps), rtol=1e-4)


def test_variance_algorithm_is_the_backends_moments(keras, row):
    """On 1e3 + N(0, 1) float32 a two-pass σ² is right to ~1e-5; E[x²] − E[x]² (torch backend) is off by ~1e-1
    (u · 1e6 ≈ 0.06 per term), and ops.moments itself is what BatchNormalization calls."""
    x = _data((64, 8, 4), loc=1e3)
    exact = x.var(axis=(0, 1))
    layer, _ = _bn(keras, x, momentum=0.0)  # the moving variance is σ²_B itself
    got = _numpy(keras, layer.moving_variance)
    _, ops_var = keras.ops.moments(keras.ops.convert_to_tensor(x.astype(np.float32)), axes=[0, 1])
    np.testing.assert_array_equal(_numpy(keras, ops_var), got)
    fast_f32 = ((x.astype(np.float32) ** 2).mean(axis=(0, 1)) - x.astype(np.float32).mean(axis=(0, 1)) ** 2)
    if row.variance_algorithm == "two-pass":
        np.testing.assert_allclose(got, exact, rtol=1e-4)
    else:
        assert row.variance_algorithm == "fast"
        assert np.abs(got - exact).max() > 1e-2  # the cancellation is there ...
        assert np.abs(fast_f32 - exact).max() > 1e-2  # ... as in NumPy's float32 E[x²] − E[x]²


def test_an_offset_float32_input_on_the_torch_backend_gives_nan(keras, row):
    """1e4 + N(0, 1) in float32: E[x²] ≈ 1e8 is only known to 8, so the torch backend's unclipped E[x²] − E[x]²
    goes negative for some channels and rsqrt(σ² + ε) is NaN; two passes stay finite and right."""
    x = _data((16, 8, 8, 16), loc=1e4, seed=1)
    layer, y = _bn(keras, x, momentum=0.0)
    var = _numpy(keras, layer.moving_variance)
    if row.variance_algorithm == "fast":
        assert (var < 0).any() and np.isnan(y).any()
    else:
        assert np.isfinite(y).all()
        np.testing.assert_allclose(var, x.var(axis=(0, 1, 2)), rtol=1e-3)


def test_train_eval_switch_and_trainable_false_forces_inference(keras, row):
    x = _data(loc=3.0)
    layer = keras.layers.BatchNormalization()
    layer.build(x.shape)
    xt = keras.ops.convert_to_tensor(x.astype(np.float32))
    with_moving = x / np.sqrt(1.0 + row.eps)  # moving mean 0, variance 1
    np.testing.assert_allclose(_numpy(keras, layer(xt)), with_moving, rtol=1e-5)  # default: inference
    np.testing.assert_allclose(_numpy(keras, layer(xt, training=False)), with_moving, rtol=1e-5)
    assert np.abs(_numpy(keras, layer(xt, training=True)).mean(axis=(0, 1))).max() < 1e-4  # batch statistics
    layer.trainable = False
    before = _numpy(keras, layer.moving_mean)
    frozen = _numpy(keras, layer(xt, training=True))
    np.testing.assert_allclose(frozen, (x - before) / np.sqrt(_numpy(keras, layer.moving_variance) + row.eps),
                               rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(_numpy(keras, layer.moving_mean), before)  # and no update


def test_scale_and_center_switch_independently(keras, row):
    names = {}
    for scale in (True, False):
        for center in (True, False):
            layer = keras.layers.BatchNormalization(scale=scale, center=center)
            layer.build((4, 3))
            names[scale, center] = sorted(v.name for v in layer.trainable_variables)
    assert names == {(True, True): ["beta", "gamma"], (True, False): ["gamma"], (False, True): ["beta"],
                     (False, False): []}


def test_moving_statistics_are_written_in_the_forward_pass(keras, row):
    from bnparity.frameworks.keras._session import train_call

    x = _data(loc=2.0)
    layer = keras.layers.BatchNormalization(momentum=0.5)
    layer(keras.ops.convert_to_tensor(x.astype(np.float32)), training=True)  # a forward pass only
    after_forward = _numpy(keras, layer.moving_mean)
    np.testing.assert_allclose(after_forward, 0.5 * x.mean(axis=(0, 1)), rtol=1e-5)
    fresh = keras.layers.BatchNormalization(momentum=0.5)
    fresh.build(x.shape)
    train_call(fresh, x.astype(np.float32), np.ones_like(x, dtype=np.float32), np.dtype(np.float32))
    np.testing.assert_array_equal(_numpy(keras, fresh.moving_mean), after_forward)  # the backward adds nothing


def test_a_batch_of_one_normalizes_to_beta(keras, row):
    from bnparity.frameworks.keras.batchnorm import BuiltinBatchNorm
    from bnparity.suites.parity.cases import hard_cases, make_inputs

    assert row.batch_of_one == "normalizes to β"
    case = next(c for c in hard_cases(["batchnorm"]) if c.shape == (1, 16))
    inputs = make_inputs(case)
    adapter = BuiltinBatchNorm()
    out = adapter.run(inputs, spec=adapter.realize(row.spec(axis=case.axis), inputs.dtype), use_defaults=True)
    # ops.batch_normalization computes x·inv + (β − μ·inv), inv = γ/√(0 + ε): x − μ cancels only after the products,
    # so y is β up to the rounding of x·inv (a few u·|x|·|γ|/√ε; ≈ 1e-5 here), not bit for bit.
    x = np.abs(inputs.xs[-1]).max()
    bound = 4 * 2.0**-24 * x * np.abs(inputs.gamma).max() / np.sqrt(row.eps)
    np.testing.assert_allclose(out.y, np.broadcast_to(inputs.beta, case.shape), rtol=0, atol=bound)


def test_synchronized_is_tensorflow_only(keras, row):
    if NAME == "keras-tensorflow":
        assert keras.layers.BatchNormalization(synchronized=True).synchronized
    else:
        with pytest.raises(ValueError, match="only supported with the TensorFlow backend"):
            keras.layers.BatchNormalization(synchronized=True)


def test_realize_fixes_what_the_layer_cannot_be_told(keras, row):
    from bnparity.frameworks.base import Unsupported
    from bnparity.frameworks.keras.batchnorm import BuiltinBatchNorm
    from bnparity.reference.spec import BNSpec

    adapter = BuiltinBatchNorm()
    asked = BNSpec(running_var="unbiased", variance="two-pass" if row.variance_algorithm == "fast" else "fast")
    assert adapter.realize(asked, np.dtype(np.float32)) == asked.replace(running_var="biased",
                                                                         variance=row.variance_algorithm)
    with pytest.raises(Unsupported, match=rf"^{NAME}: .*momentum=None"):
        adapter.realize(BNSpec(momentum=None), np.dtype(np.float32))


def test_float64_is_computed_in_float32_except_on_tensorflow(keras, row):
    """A float64 BatchNormalization is float64 in and out, but float32 inside on JAX and PyTorch."""
    from bnparity.frameworks.base import Unsupported
    from bnparity.frameworks.keras._x64 import dtype_scope
    from bnparity.frameworks.keras.batchnorm import BuiltinBatchNorm
    from bnparity.reference.spec import BNSpec

    x = _data(loc=1.0, scale=2.0)
    mu, var = x.mean(axis=(0, 1)), x.var(axis=(0, 1))
    with dtype_scope(np.dtype(np.float64)):
        layer = keras.layers.BatchNormalization(dtype="float64")
        y = layer(keras.ops.convert_to_tensor(x, dtype="float64"), training=True)
        assert keras.backend.standardize_dtype(y.dtype) == "float64"
        err = np.abs(_numpy(keras, y) - (x - mu) / np.sqrt(var + row.eps)).max()
    if NAME == "keras-tensorflow":
        assert err < 1e-13
        BuiltinBatchNorm().realize(BNSpec(), np.dtype(np.float64))
    else:
        assert 1e-9 < err < 1e-5, err
        with pytest.raises(Unsupported, match=rf"^{NAME}: keras.layers.BatchNormalization computes in float32"):
            BuiltinBatchNorm().realize(BNSpec(), np.dtype(np.float64))


def test_every_field_is_cited_and_proved_here(keras, row):
    """Each cited line quotes the installed code; each proof is a test of this repository."""
    check_citations(row.citations)
    fields = {f.name for f in dataclasses.fields(row)}
    for field, proofs in row.proofs.items():
        assert field == "batch_of_one" or field in fields, field
        check_proofs(proofs)
    assert {"momentum", "eps", "running_var", "channel_axis", "variance_algorithm", "train_eval_switch",
            "scale_switch", "running_stats_written", "batch_of_one"} <= set(row.proofs)


_CITED = re.compile(r"^([\w/.]+\.py):(\d+): `([^`]+)`")


def check_citations(citations: dict[str, str]) -> None:
    """Every "path:LINE: `code` ..." part of the citations has `code` on that line of the installed package."""
    root = Path(importlib.util.find_spec("keras").submodule_search_locations[0]).parent
    checked = 0
    for field, citation in citations.items():
        for cited in citation.split("; "):
            match = _CITED.match(cited)
            if match is None:
                continue
            path, line, code = match.groups()
            if not (root / path).exists():
                pytest.skip(f"{path} is not installed here")
            source = (root / path).read_text(encoding="utf-8").splitlines()
            assert code in source[int(line) - 1], f"{field}: {path}:{line} is {source[int(line) - 1].strip()!r}"
            checked += 1
    assert checked >= len(citations), "every field cites at least one line"


def check_proofs(proofs: tuple[str, ...]) -> None:
    """Every proof names an existing test function of an existing file under tests/."""
    tests = Path(__file__).resolve().parent
    assert proofs
    for proof in proofs:
        file, name = proof.split("::")
        path = tests.parent / file
        assert path.exists(), proof
        tree = ast.parse(path.read_text(encoding="utf-8"))
        assert name in {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}, proof
