"""frameworks/mxnet/user_layers.py: a user's own Gluon block, read into the spec it computes.

Each supported block is built by hand with non-default settings and a state that is not the initial one; the read
spec and state are checked field by field, and the session (a copy of the block) run for two training steps and
an eval is compared with the float64 reference configured by the read spec: this proves the spec is what the block
computes. The user's block is bit-identical afterwards.
"""

from __future__ import annotations

import numpy as np
import pytest

from bnparity.reference.normalization import run_reference
from bnparity.reference.spec import BNSpec, GNSpec, INSpec, LNSpec
from bnparity.reference.steps import QUANTITIES, LayerInputs

_mx = pytest.importorskip("bnparity.frameworks.mxnet._mx")
user_layers = pytest.importorskip("bnparity.frameworks.mxnet.user_layers")
gluon, mx, nd, autograd = _mx.gluon, _mx.mx, _mx.nd, _mx.autograd

RTOL = {"float32": 1e-4, "float64": 1e-10}  # max |error| / max |reference|


@pytest.fixture(scope="module")
def reader():
    return user_layers.UserLayers()


def array(values: object, dtype: object = np.float32) -> object:
    """An NDArray (nd.ndarray.array: nd.array's sparse-input probe trips a SciPy deprecation warning)."""
    return nd.ndarray.array(np.asarray(values, dtype=dtype), dtype=dtype)


def set_params(block, **values: np.ndarray) -> None:
    for name, value in values.items():
        param = getattr(block, name)
        param.set_data(array(value, dtype=param.data().dtype))


def train(block, shape: tuple[int, ...], *, steps: int = 2, seed: int = 100) -> None:
    """Run the user's block through a few training steps (MXNet updates the running statistics in backward)."""
    rng = np.random.default_rng(seed)
    dtype = block.collect_params()[next(iter(block.collect_params()))].data().dtype
    for _ in range(steps):
        x = array(rng.normal(0.7, 1.5, size=shape), dtype=dtype)
        x.attach_grad()  # a block that learns nothing still records a graph (the backward updates its statistics)
        with autograd.record():
            y = block(x)
        y.backward(array(rng.normal(size=shape), dtype=dtype))


def snapshot(block) -> dict[str, np.ndarray]:
    return {name: p.data().asnumpy().copy() for name, p in block.collect_params().items()}


def assert_unchanged(block, before: dict[str, np.ndarray]) -> None:
    after = snapshot(block)
    assert after.keys() == before.keys()
    for name, value in before.items():
        assert after[name].tobytes() == value.tobytes(), f"{name} of the user's block changed"


def make_inputs(user, shape: tuple[int, ...], *, seed: int = 0) -> LayerInputs:
    rng = np.random.default_rng(seed)
    dtype = np.dtype(user.dtype)

    def draw(loc: float, scale: float) -> np.ndarray:
        return rng.normal(loc, scale, size=shape).astype(dtype)

    return LayerInputs(xs=(draw(1.5, 2.0), draw(-0.5, 1.0)), dys=(draw(0.0, 1.0), draw(0.0, 1.0)),
                       x_eval=draw(0.3, 1.7), gamma=user.gamma, beta=user.beta)


def run_session(session, inputs: LayerInputs) -> dict[str, np.ndarray | None]:
    """The layer protocol on the session, in the layer's own layout (the read spec's axis is the layer's)."""
    for x, dy in zip(inputs.xs, inputs.dys, strict=True):
        step = session.train_step(x, dy)
    stats = session.running_stats()
    return {"y": step.y, "dx": step.dx, "dgamma": step.dgamma, "dbeta": step.dbeta,
            "running_mean": None if stats is None else stats[0], "running_var": None if stats is None else stats[1],
            "y_eval": session.eval(inputs.x_eval)}


def mismatches(user, inputs: LayerInputs, spec=None) -> list[str]:
    """The quantities where the user's layer's session and the reference of `spec` (the read one) disagree."""
    ref = run_reference(spec or user.spec, inputs).as_dict()
    got = run_session(user.session(), inputs)
    rtol, bad = RTOL[user.dtype], []
    for q in QUANTITIES:
        if (ref[q] is None) != (got[q] is None):
            bad.append(f"{q}: reference {'None' if ref[q] is None else 'set'}, layer "
                       f"{'None' if got[q] is None else 'set'}")
        elif ref[q] is not None:
            assert got[q].dtype == np.dtype(user.dtype), q
            err = float(np.max(np.abs(got[q].astype(np.float64) - ref[q])))
            if err > rtol * max(float(np.max(np.abs(ref[q]))), 1e-30):
                bad.append(f"{q}: max error {err:.3g}")
    return bad


def check(reader, block, shape: tuple[int, ...]):
    """Read `block`, compare its session with the reference, and prove the block untouched; returns the read."""
    before = snapshot(block)
    user = reader.read(block)
    assert user is not None and user.framework == "mxnet"
    assert user.gamma.dtype == user.beta.dtype == np.float64
    assert user.gamma.shape == user.spec.param_shape(shape)
    assert mismatches(user, make_inputs(user, shape)) == []
    assert mismatches(user, make_inputs(user, shape, seed=1)) == []  # a second, fresh session
    assert_unchanged(block, before)
    return user


def test_batchnorm_every_convention_and_its_state(reader):
    block = gluon.nn.BatchNorm(momentum=0.7, epsilon=1e-3, in_channels=5)
    block.initialize()
    set_params(block, gamma=np.linspace(0.5, 1.5, 5), beta=np.linspace(-1, 1, 5))
    train(block, (6, 5, 3, 3))
    mean, var = block.running_mean.data().asnumpy(), block.running_var.data().asnumpy()
    assert not np.allclose(mean, 0) and not np.allclose(var, 1)  # not the initial statistics

    user = check(reader, block, (6, 5, 3, 3))
    spec = user.spec
    assert isinstance(spec, BNSpec) and user.kind == "mxnet.gluon.nn.BatchNorm"
    assert (spec.axis, spec.eps, spec.affine, spec.variance) == (1, 1e-3, True, "two-pass")
    assert spec.momentum == float(np.float32(0.7)) and spec.momentum_weighs == "old"  # as the operator parses it
    assert spec.running_var == "biased" and spec.track_running_stats
    assert spec.init_running_mean == tuple(float(v) for v in mean)
    assert spec.init_running_var == tuple(float(v) for v in var)
    assert user.dtype == "float32"
    np.testing.assert_array_equal(user.gamma, block.gamma.data().asnumpy())
    np.testing.assert_array_equal(user.beta, block.beta.data().asnumpy())
    assert user.conventions["momentum"].startswith("0.7 on the old value")
    assert user.conventions["running_var"].startswith("biased") and user.conventions["axis"].startswith("1 ")


def test_batchnorm_channels_last_hybridized_without_affine(reader):
    block = gluon.nn.BatchNorm(axis=-1, momentum=0.5, epsilon=2e-4, center=False, scale=False, in_channels=4)
    block.initialize()
    block.hybridize(static_alloc=True)
    train(block, (5, 3, 3, 4))
    user = check(reader, block, (5, 3, 3, 4))
    assert (user.spec.axis, user.spec.affine, user.spec.eps) == (-1, False, 2e-4)
    np.testing.assert_array_equal(user.gamma, np.ones(4))
    np.testing.assert_array_equal(user.beta, np.zeros(4))
    assert "fix_gamma" in user.conventions["affine"]


def test_batchnorm_scale_false_applies_gamma_one_whatever_it_holds(reader):
    """scale=False is fix_gamma: a held γ of 3 is not what applies; β is learned, so the spec is affine."""
    block = gluon.nn.BatchNorm(scale=False, in_channels=3)
    block.initialize()
    set_params(block, gamma=np.full(3, 3.0), beta=np.array([0.5, -0.5, 1.0]))
    user = check(reader, block, (4, 3, 5))
    assert user.spec.affine
    np.testing.assert_array_equal(user.gamma, np.ones(3))
    np.testing.assert_array_equal(user.beta, [0.5, -0.5, 1.0])


def test_float64_batchnorm_matches_to_float64_precision(reader):
    """In float64 the float32 rounding of the momentum shows: the read spec carries it."""
    block = gluon.nn.BatchNorm(momentum=0.7, epsilon=1e-3, in_channels=3)
    block.initialize()
    block.cast("float64")
    train(block, (8, 3, 4))
    user = check(reader, block, (8, 3, 4))
    assert user.dtype == "float64"
    # Taking the momentum as written (0.7, not the float32 the operator parses) is off at float64 precision.
    assert any(q.startswith("running") for q in mismatches(user, make_inputs(user, (8, 3, 4)),
                                                           user.spec.replace(momentum=0.7)))


def test_layernorm_without_beta(reader):
    block = gluon.nn.LayerNorm(epsilon=1e-4, center=False, in_channels=6)
    block.initialize()
    set_params(block, gamma=np.linspace(0.5, 2.0, 6))
    user = check(reader, block, (4, 3, 6))
    spec = user.spec
    assert isinstance(spec, LNSpec) and user.kind == "mxnet.gluon.nn.LayerNorm"
    assert (spec.axis, spec.affine, spec.bias, spec.normalized_dims) == (-1, True, False, 1)
    assert spec.eps == float(np.float32(1e-4)) and spec.variance == "two-pass"
    np.testing.assert_array_equal(user.gamma, np.linspace(0.5, 2.0, 6).astype(np.float32))
    np.testing.assert_array_equal(user.beta, np.zeros(6))
    assert "float32" in user.conventions["eps"]


def test_groupnorm_two_groups_per_group_parameters(reader):
    block = gluon.nn.GroupNorm(num_groups=2, epsilon=1e-3)
    block.initialize()
    set_params(block, gamma=np.array([1.5, 0.5]), beta=np.array([0.25, -1.0]))
    user = check(reader, block, (4, 6, 5))
    spec = user.spec
    assert isinstance(spec, GNSpec) and user.kind == "mxnet.gluon.nn.GroupNorm"
    assert (spec.axis, spec.groups, spec.params, spec.affine) == (1, 2, "group", True)
    assert spec.eps == float(np.float32(1e-3))
    np.testing.assert_array_equal(user.gamma, [1.5, 0.5])


@pytest.mark.parametrize("axis, shape", [(1, (3, 4, 5, 5)), (3, (3, 5, 5, 4))])
def test_instancenorm_frozen_gamma_still_applies(reader, axis, shape):
    """The default center=True, scale=False: β learned, γ frozen but applied as it holds it (here 2)."""
    block = gluon.nn.InstanceNorm(axis=axis, epsilon=1e-3, in_channels=4)
    block.initialize()
    set_params(block, gamma=np.full(4, 2.0), beta=np.array([0.1, 0.2, -0.3, 0.0]))
    user = check(reader, block, shape)
    spec = user.spec
    assert isinstance(spec, INSpec) and user.kind == "mxnet.gluon.nn.InstanceNorm"
    assert (spec.axis, spec.affine, spec.track_running_stats) == (axis, True, False)
    np.testing.assert_array_equal(user.gamma, np.full(4, 2.0))
    assert "frozen" in user.conventions["affine"]


def test_a_wrong_convention_disagrees_with_the_layer(reader):
    """The deliberate failure: the same read with momentum weighing the new value gives other running stats."""
    block = gluon.nn.BatchNorm(momentum=0.7, in_channels=3)
    block.initialize()
    train(block, (6, 3, 4))
    user = reader.read(block)
    inputs = make_inputs(user, (6, 3, 4))
    assert mismatches(user, inputs) == []
    wrong = mismatches(user, inputs, user.spec.replace(momentum_weighs="new"))
    assert {q.split(":")[0] for q in wrong} == {"running_mean", "running_var", "y_eval"}


def test_blocks_that_cannot_be_read_raise_type_error(reader):
    with pytest.raises(TypeError, match="initialize\\(\\) it first"):
        reader.read(gluon.nn.BatchNorm(in_channels=3))
    deferred = gluon.nn.LayerNorm()
    deferred.initialize()
    with pytest.raises(TypeError, match="deferred"):
        reader.read(deferred)
    conv = gluon.nn.Conv2D(4, 3, in_channels=2)
    conv.initialize()
    with pytest.raises(TypeError, match="mxnet.gluon.nn.BatchNorm") as e:
        reader.read(conv)
    assert "\n" not in str(e.value) and "Conv2D" in str(e.value)
    with pytest.raises(TypeError, match="not a normalization layer"):
        reader.read(nd.zeros(3))
    frozen = gluon.nn.BatchNorm(use_global_stats=True, in_channels=3)
    frozen.initialize()
    with pytest.raises(TypeError, match="use_global_stats"):
        reader.read(frozen)
    with pytest.raises(TypeError, match="sync-parity"):
        reader.read(gluon.contrib.nn.SyncBatchNorm(in_channels=3, num_devices=1))
    moved = gluon.nn.LayerNorm(axis=1, in_channels=3)
    moved.initialize()
    with pytest.raises(TypeError, match="axis=-1"):
        reader.read(moved)
    nd_float64 = gluon.nn.InstanceNorm(in_channels=3)
    nd_float64.initialize()
    nd_float64.cast("float64")
    with pytest.raises(TypeError, match="float64"):
        reader.read(nd_float64)


def test_other_objects_are_not_mxnet_ones(reader):
    assert reader.read(object()) is None
    assert reader.read(np.zeros(3)) is None
    assert reader.to_numpy(np.zeros(3)) is None
    value = reader.to_numpy(array([1.0, 2.0]))
    assert isinstance(value, np.ndarray) and value.tolist() == [1.0, 2.0]
    assert reader.framework == "mxnet" and "mxnet.gluon.nn.GroupNorm" in reader.supported
