"""frameworks/keras/user_layers.py: reading a user's own Keras normalization layer (BatchNormalization,
LayerNormalization, GroupNormalization, RMSNormalization), on this process's backend, into the spec it computes,
and running a copy of it.

Each layer is built by hand with non-default settings and a state that is not the initial one (random γ and β,
moving statistics moved by earlier training calls); the spec read off it, run by the float64 NumPy reference, must
give what the session (a copy of the layer) computes, and the user's layer must be bit-identical afterwards.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
from conftest import require

NAME = f"keras-{os.environ.get('KERAS_BACKEND', 'tensorflow')}"
require(NAME)

import keras  # noqa: E402

from bnparity.frameworks.conventions import convention  # noqa: E402
from bnparity.frameworks.keras._x64 import dtype_scope  # noqa: E402
from bnparity.frameworks.keras.user_layers import UserLayers  # noqa: E402
from bnparity.frameworks.user_layers import UserLayer  # noqa: E402
from bnparity.reference.normalization import run_reference  # noqa: E402
from bnparity.reference.spec import BNSpec, GNSpec, LNSpec, RMSSpec  # noqa: E402
from bnparity.reference.steps import LayerInputs, LayerOutputs  # noqa: E402
from bnparity.testing import assert_layer_parity, compare_layer  # noqa: E402

RTOL = {"float32": 1e-4, "float64": 1e-10}  # max |error| / max |reference|
READER = UserLayers()
BN_VARIANCE = "fast" if convention(NAME).variance_algorithm == "fast" else "two-pass"


def _rng() -> np.random.Generator:
    return np.random.default_rng(7)


def _perturb(layer: keras.layers.Layer, rng: np.random.Generator) -> None:
    """Random γ and β (the reader must take the layer's own, not ones and zeros)."""
    for v in layer.trainable_variables:
        center = 1.0 if v.name in ("gamma", "scale") else 0.0
        v.assign(rng.normal(center, 0.5, v.shape).astype(keras.backend.standardize_dtype(v.dtype)))


def _trained_bn(layer: keras.layers.BatchNormalization, shape: tuple[int, ...], rng: np.random.Generator,
                dtype: str = "float32") -> keras.layers.BatchNormalization:
    """`layer` built, perturbed and called twice in training mode on shifted data (moving statistics far from
    0 and 1)."""
    with dtype_scope(np.dtype(dtype)):
        layer.build(shape)
        _perturb(layer, rng)
        for _ in range(2):
            layer(keras.ops.convert_to_tensor((rng.normal(size=shape) * 2 + 1).astype(dtype)), training=True)
    return layer


def _snapshot(layer: keras.layers.Layer) -> list[np.ndarray]:
    return [np.array(keras.ops.convert_to_numpy(v)) for v in layer.variables]


def _unchanged(before: list[np.ndarray], layer: keras.layers.Layer) -> bool:
    after = _snapshot(layer)
    return len(before) == len(after) and all(a.dtype == b.dtype and np.array_equal(a, b, equal_nan=True)
                                             for a, b in zip(before, after, strict=True))


def _run(user: UserLayer, shape: tuple[int, ...], dtype: np.dtype = np.float32
         ) -> tuple[LayerOutputs, LayerOutputs, LayerInputs]:
    """(what the session computed, the reference of the read spec, the inputs): 2 training steps, then eval."""
    rng = np.random.default_rng(11)
    xs = tuple((rng.normal(size=shape) * 1.5 + 0.5).astype(dtype) for _ in range(2))
    dys = tuple(rng.normal(size=shape).astype(dtype) for _ in range(2))
    x_eval = (rng.normal(size=shape) + 1).astype(dtype)
    inputs = LayerInputs(xs=xs, dys=dys, x_eval=x_eval, gamma=user.gamma, beta=user.beta)
    session = user.session()
    for x, dy in zip(xs, dys, strict=True):
        step = session.train_step(x, dy)
    stats = session.running_stats()
    got = LayerOutputs(y=step.y, dx=step.dx, dgamma=step.dgamma, dbeta=step.dbeta,
                       running_mean=None if stats is None else stats[0],
                       running_var=None if stats is None else stats[1], y_eval=session.eval(x_eval))
    return got, run_reference(user.spec, inputs), inputs


def _errors(got: LayerOutputs, ref: LayerOutputs) -> dict[str, float]:
    """quantity -> max |error| / max |reference|; a quantity present on one side only is an infinite error."""
    out = {}
    for name, r in ref.as_dict().items():
        g = got.as_dict()[name]
        if r is None or g is None:
            out[name] = 0.0 if r is None and g is None else float("inf")
            continue
        g, r = np.asarray(g, np.float64), np.asarray(r, np.float64)
        out[name] = float("inf") if g.shape != r.shape else float(np.max(np.abs(g - r)) / max(np.max(np.abs(r)),
                                                                                              1e-30))
    return out


def _assert_matches(user: UserLayer, shape: tuple[int, ...], dtype: np.dtype = np.float32) -> dict[str, float]:
    got, ref, _ = _run(user, shape, dtype)
    errors = _errors(got, ref)
    bad = {k: v for k, v in errors.items() if not v <= RTOL[np.dtype(dtype).name]}
    assert not bad, f"{user.kind}: the session disagrees with the reference of the read spec {user.spec}: {bad}"
    return errors


def test_batchnorm_reads_every_convention_and_its_state():
    rng = _rng()
    layer = _trained_bn(keras.layers.BatchNormalization(momentum=0.8, epsilon=1e-4), (6, 3, 3, 4), rng)
    before = _snapshot(layer)
    user = READER.read(layer)
    spec = user.spec
    assert isinstance(spec, BNSpec) and user.kind == "keras.layers.BatchNormalization" and user.dtype == "float32"
    assert (spec.axis, spec.eps, spec.momentum, spec.momentum_weighs, spec.running_var, spec.variance) == \
        (-1, 1e-4, 0.8, "old", "biased", BN_VARIANCE)
    assert spec.affine and spec.track_running_stats and spec.new_weight == pytest.approx(0.2)
    np.testing.assert_array_equal(spec.init_running_mean, np.array(layer.moving_mean.numpy(), np.float64))
    np.testing.assert_array_equal(spec.init_running_var, np.array(layer.moving_variance.numpy(), np.float64))
    assert not np.allclose(spec.init_running_var, 1.0)  # the state is the trained one, not the initial one
    np.testing.assert_array_equal(user.gamma, np.array(layer.gamma.numpy(), np.float64))
    np.testing.assert_array_equal(user.beta, np.array(layer.beta.numpy(), np.float64))
    assert user.gamma.dtype == np.float64
    assert "old" in user.conventions["momentum"] and "channels last" in user.conventions["axis"]
    _assert_matches(user, (6, 3, 3, 4))
    _assert_matches(user, (6, 3, 3, 4))  # a second session starts from the read state again
    assert _unchanged(before, layer)


def test_batchnorm_channels_first_without_gamma_and_beta():
    rng = _rng()
    layer = _trained_bn(keras.layers.BatchNormalization(axis=1, center=False, scale=False, momentum=0.5),
                        (8, 3, 4), rng)
    before = _snapshot(layer)
    user = READER.read(layer)
    assert not user.spec.affine and user.spec.axis == 1
    np.testing.assert_array_equal(user.gamma, np.ones(3))
    np.testing.assert_array_equal(user.beta, np.zeros(3))
    _assert_matches(user, (8, 3, 4))
    assert _unchanged(before, layer)


def test_a_frozen_batchnorm_is_read_and_its_copy_trains():
    """trainable=False: the user's layer would normalize with its moving statistics even with training=True; the
    copy is trainable (the conventions say so) and the user's layer stays frozen."""
    layer = _trained_bn(keras.layers.BatchNormalization(momentum=0.7), (8, 5), _rng())
    layer.trainable = False
    user = READER.read(layer)
    assert "trainable=False" in user.conventions["trainable"] and "inference mode" in user.conventions["trainable"]
    errors = _assert_matches(user, (8, 5))
    assert errors["running_mean"] <= RTOL["float32"]  # the copy moved its statistics as the spec says
    assert not layer.trainable


def test_float64_is_float64_only_on_tensorflow():
    """keras/src/backend/common/dtypes.py:240: BatchNormalization computes in result_type(x, float32), float32 on
    every backend but TensorFlow, whatever the layer's dtype: the comparison shows it."""
    with dtype_scope(np.dtype(np.float64)):
        layer = _trained_bn(keras.layers.BatchNormalization(momentum=0.6, epsilon=1e-4, dtype="float64"), (5, 4),
                            _rng(), "float64")
    user = READER.read(layer)
    assert user.dtype == "float64"
    if NAME == "keras-tensorflow":
        _assert_matches(user, (5, 4), np.float64)
    else:
        errors = _errors(*_run(user, (5, 4), np.float64)[:2])
        assert 1e-10 < errors["y"] < 1e-5  # float32 rounding, not a float64 computation


def test_layernorm_two_trailing_axes_without_beta():
    layer = keras.layers.LayerNormalization(axis=[-2, -1], epsilon=1e-4, center=False)
    layer.build((None, 3, 5))
    _perturb(layer, _rng())
    before = _snapshot(layer)
    user = READER.read(layer)
    assert isinstance(user.spec, LNSpec)
    assert (user.spec.eps, user.spec.affine, user.spec.normalized_dims, user.spec.params, user.spec.bias) == \
        (1e-4, True, 2, "elementwise", False)
    assert user.gamma.shape == (3, 5) and not user.beta.any()
    _assert_matches(user, (4, 3, 5))
    assert _unchanged(before, layer)


def test_layernorm_positive_axes_are_the_trailing_ones():
    layer = keras.layers.LayerNormalization(axis=[2, 3])
    layer.build((None, 2, 3, 4))
    _perturb(layer, _rng())
    user = READER.read(layer)
    assert user.spec.normalized_dims == 2 and user.spec.eps == 1e-3 and user.gamma.shape == (3, 4)
    _assert_matches(user, (2, 2, 3, 4))


def test_groupnorm_groups_and_keras_instance_norm():
    layer = keras.layers.GroupNormalization(groups=2, epsilon=1e-4)
    layer.build((None, 3, 6))
    _perturb(layer, _rng())
    before = _snapshot(layer)
    user = READER.read(layer)
    assert user.spec == GNSpec(axis=-1, eps=1e-4, affine=True, variance=user.spec.variance, groups=2,
                               params="channel")
    _assert_matches(user, (4, 3, 6))
    assert _unchanged(before, layer)
    instance = keras.layers.GroupNormalization(groups=-1)
    instance.build((None, 5, 6))
    user = READER.read(instance)
    assert user.spec.groups == 6 and "instance" in user.conventions["groups"]
    _assert_matches(user, (4, 5, 6))


def test_rmsnorm():
    layer = keras.layers.RMSNormalization(epsilon=1e-3)
    layer.build((None, 6))
    _perturb(layer, _rng())
    user = READER.read(layer)
    assert isinstance(user.spec, RMSSpec) and user.spec.eps == 1e-3 and user.spec.normalized_dims == 1
    assert not user.beta.any() and user.kind == "keras.layers.RMSNormalization"
    _assert_matches(user, (4, 6))


def test_a_subclass_is_named_as_such():
    class MyBN(keras.layers.BatchNormalization):
        pass

    layer = MyBN()
    layer.build((4, 3))
    user = READER.read(layer)
    assert "MyBN" in user.kind and "(a keras.layers.BatchNormalization)" in user.kind
    _assert_matches(user, (4, 3))


def test_a_wrong_convention_makes_the_running_statistics_disagree():
    """The comparison can fail: the spec read with Keras' momentum weighing the new value instead of the old."""
    layer = _trained_bn(keras.layers.BatchNormalization(momentum=0.8), (8, 3), _rng())
    user = READER.read(layer)
    wrong = UserLayer(framework=user.framework, kind=user.kind, spec=user.spec.replace(momentum_weighs="new"),
                      dtype=user.dtype, gamma=user.gamma, beta=user.beta, session=user.session)
    errors = _errors(*_run(wrong, (8, 3))[:2])
    assert errors["y"] <= RTOL["float32"]  # the training step itself does not depend on it
    assert errors["running_mean"] > 1e-2 and errors["running_var"] > 1e-2


def test_refusals():
    with pytest.raises(TypeError, match="Supported: keras.layers.BatchNormalization"):
        READER.read(keras.layers.Dense(3))
    with pytest.raises(TypeError, match="not built yet"):
        READER.read(keras.layers.BatchNormalization())
    built = keras.layers.BatchNormalization()
    built.build((2, 3))
    with pytest.raises(TypeError, match="variables=None"):
        READER.read(built, {"params": {}})
    with pytest.raises(TypeError, match="renorm=True"):
        renorm = keras.layers.BatchNormalization(renorm=True)
        renorm.build((2, 3))
        READER.read(renorm)
    with pytest.raises(TypeError, match="scale=True with center=False"):
        half = keras.layers.BatchNormalization(center=False)
        half.build((2, 3))
        READER.read(half)
    with pytest.raises(TypeError, match="not its trailing axes"):
        ln = keras.layers.LayerNormalization(axis=1)
        ln.build((None, 3, 4))
        READER.read(ln)
    with pytest.raises(TypeError, match="not a normalization layer"):
        READER.read(built.gamma)


def test_other_objects_and_to_numpy():
    assert READER.read(object()) is None
    assert READER.read(np.zeros(3)) is None
    assert READER.to_numpy(np.zeros(3)) is None and READER.to_numpy([1.0]) is None
    out = READER.to_numpy(keras.ops.arange(3.0))
    assert isinstance(out, np.ndarray) and out.tolist() == [0.0, 1.0, 2.0]
    assert READER.framework == NAME and "keras.layers.BatchNormalization" in READER.supported


@pytest.mark.slow  # compare_layer loads every installed framework's reader
def test_assert_layer_parity_on_a_users_layer():
    """The public entry point: a trained Keras layer passes against the reference configured as it is."""
    layer = _trained_bn(keras.layers.BatchNormalization(momentum=0.9, epsilon=1e-3), (16, 4), _rng())
    x = keras.ops.convert_to_tensor((np.random.default_rng(3).normal(size=(16, 4)) * 2 + 1).astype(np.float32))
    result = assert_layer_parity(layer, x, steps=2)
    assert result.framework == NAME and result.passed
    wrong = compare_layer(layer, x, steps=2, reference=result.spec.replace(momentum_weighs="new"))
    assert not wrong.passed and "running" in wrong.message
