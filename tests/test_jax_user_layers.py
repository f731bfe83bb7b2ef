"""frameworks/jax/user_layers.py: reading a user's own Flax normalization layer (flax.linen with its variables,
flax.nnx) into the spec it computes, and running a copy of it.

Each layer is built by hand with non-default settings and a state that is not the initial one (random γ and β, running
statistics moved by earlier training steps); the spec read off it, run by the float64 NumPy reference, must give what
the session (a copy of the layer) computes, and the user's layer and variables must be bit-identical afterwards.
"""

from __future__ import annotations

import numpy as np
import pytest

jax = pytest.importorskip("jax")
jnp = pytest.importorskip("jax.numpy")
nn = pytest.importorskip("flax.linen")
nnx = pytest.importorskip("flax.nnx")

from bnparity.frameworks.jax._x64 import dtype_scope  # noqa: E402
from bnparity.frameworks.jax.user_layers import UserLayers  # noqa: E402
from bnparity.frameworks.user_layers import UserLayer  # noqa: E402
from bnparity.reference.normalization import run_reference  # noqa: E402
from bnparity.reference.spec import BNSpec, GNSpec, INSpec, LNSpec, RMSSpec  # noqa: E402
from bnparity.reference.steps import LayerInputs, LayerOutputs  # noqa: E402

RTOL = {"float32": 1e-4, "float64": 1e-10}  # max |error| / max |reference|
READER = UserLayers()


def _rng() -> np.random.Generator:
    return np.random.default_rng(7)


def _perturbed(variables: dict, rng: np.random.Generator) -> dict:
    """variables with random γ and β (the reader must take the layer's own, not ones and zeros)."""
    params = {k: jnp.asarray(rng.normal(1.0 if k == "scale" else 0.0, 0.5, np.shape(v)), jnp.asarray(v).dtype)
              for k, v in variables.get("params", {}).items()}
    return {**variables, "params": params}


def _trained_linen_bn(module: nn.BatchNorm, shape: tuple[int, ...], rng: np.random.Generator,
                      dtype: np.dtype = np.float32) -> dict:
    """Variables of `module` after two training steps on shifted data (running statistics far from 0 and 1)."""
    x = jnp.asarray(rng.normal(size=shape).astype(dtype))
    variables = _perturbed(dict(module.clone(use_running_average=None).init(jax.random.key(0), x,
                                                                            use_running_average=True)), rng)
    for _ in range(2):
        x = jnp.asarray((rng.normal(size=shape) * 2 + 1).astype(dtype))
        _, upd = module.clone(use_running_average=None).apply(variables, x, use_running_average=False,
                                                              mutable=["batch_stats"])
        variables = {"params": variables["params"], "batch_stats": upd["batch_stats"]}
    return variables


def _snapshot(tree: object) -> list[np.ndarray]:
    return [np.array(leaf) for leaf in jax.tree.leaves(tree)]


def _unchanged(before: list[np.ndarray], tree: object) -> bool:
    after = _snapshot(tree)
    return len(before) == len(after) and all(a.dtype == b.dtype and np.array_equal(a, b, equal_nan=True)
                                             for a, b in zip(before, after, strict=True))


def _run(user: UserLayer, shape: tuple[int, ...], dtype: np.dtype = np.float32
         ) -> tuple[LayerOutputs, LayerOutputs, LayerInputs]:
    """(what the session computed, the reference of the read spec, the inputs): 2 training steps, then eval."""
    rng = np.random.default_rng(11)
    xs = tuple((rng.normal(size=shape) * 1.5 + 0.5).astype(dtype) for _ in range(2))
    dys = tuple(rng.normal(size=shape).astype(dtype) for _ in range(2))
    x_eval = (rng.normal(size=shape) + 1).astype(dtype)
    gamma, beta = user.gamma, user.beta
    if gamma.size == 0:  # a flax.linen layer without parameters: its feature count is the input's
        gamma, beta = np.ones(user.spec.param_shape(shape)), np.zeros(user.spec.param_shape(shape))
    inputs = LayerInputs(xs=xs, dys=dys, x_eval=x_eval, gamma=gamma, beta=beta)
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


def _assert_matches(user: UserLayer, shape: tuple[int, ...], dtype: np.dtype = np.float32) -> None:
    got, ref, _ = _run(user, shape, dtype)
    errors = _errors(got, ref)
    bad = {k: v for k, v in errors.items() if not v <= RTOL[np.dtype(dtype).name]}
    assert not bad, f"{user.kind}: the session disagrees with the reference of the read spec {user.spec}: {bad}"


def test_linen_batchnorm_nchw_reads_every_convention_and_its_state() -> None:
    rng = _rng()
    module = nn.BatchNorm(axis=1, momentum=0.8, epsilon=1e-3, use_fast_variance=False)
    variables = _trained_linen_bn(module, (6, 4, 3, 3), rng)
    before = _snapshot(variables)
    user = READER.read(module, variables)
    spec = user.spec
    assert isinstance(spec, BNSpec) and user.kind == "flax.linen.BatchNorm" and user.dtype == "float32"
    assert (spec.axis, spec.eps, spec.momentum, spec.momentum_weighs, spec.running_var, spec.variance) == \
        (1, 1e-3, 0.8, "old", "biased", "two-pass")
    assert spec.affine and spec.track_running_stats
    np.testing.assert_array_equal(spec.init_running_mean, np.array(variables["batch_stats"]["mean"], np.float64))
    np.testing.assert_array_equal(spec.init_running_var, np.array(variables["batch_stats"]["var"], np.float64))
    assert not np.allclose(spec.init_running_var, 1.0)  # the state is the trained one, not the initial one
    np.testing.assert_array_equal(user.gamma, np.array(variables["params"]["scale"], np.float64))
    np.testing.assert_array_equal(user.beta, np.array(variables["params"]["bias"], np.float64))
    assert user.gamma.dtype == np.float64
    assert "old" in user.conventions["momentum"] and "axis" in user.conventions
    _assert_matches(user, (6, 4, 3, 3))
    _assert_matches(user, (6, 4, 3, 3))  # a second session starts from the read state again
    assert _unchanged(before, variables)


def test_linen_batchnorm_without_affine_and_fixed_use_running_average_false() -> None:
    rng = _rng()
    module = nn.BatchNorm(use_running_average=False, use_scale=False, use_bias=False, momentum=0.5)
    variables = _trained_linen_bn(module, (8, 3), rng)
    before = _snapshot(variables)
    user = READER.read(module, variables)
    assert not user.spec.affine and user.spec.axis == -1 and user.spec.variance == "fast"
    np.testing.assert_array_equal(user.gamma, np.ones(3))
    np.testing.assert_array_equal(user.beta, np.zeros(3))
    assert "use_running_average" in user.conventions
    _assert_matches(user, (8, 3))
    assert _unchanged(before, variables)


def test_linen_batchnorm_float64() -> None:
    rng = _rng()
    with dtype_scope(np.dtype(np.float64)):
        module = nn.BatchNorm(momentum=0.6, epsilon=1e-4, use_fast_variance=False, dtype=jnp.float64,
                              param_dtype=jnp.float64, force_float32_reductions=False)
        variables = _trained_linen_bn(module, (5, 4, 3), rng, np.float64)
    user = READER.read(module, variables)
    assert user.dtype == "float64"
    _assert_matches(user, (5, 4, 3), np.float64)


def test_nnx_batchnorm_reads_its_own_state() -> None:
    rng = _rng()
    layer = nnx.BatchNorm(4, momentum=0.7, epsilon=1e-4, rngs=nnx.Rngs(0))
    layer.scale.value = jnp.asarray(rng.normal(1, 0.5, 4), jnp.float32)
    layer.bias.value = jnp.asarray(rng.normal(0, 0.5, 4), jnp.float32)
    layer(jnp.asarray(rng.normal(size=(6, 3, 4)) * 3 + 2, jnp.float32))  # moves the running statistics
    before = _snapshot(nnx.state(layer))
    user = READER.read(layer)
    assert user.kind == "flax.nnx.BatchNorm"
    assert (user.spec.momentum, user.spec.momentum_weighs, user.spec.eps, user.spec.variance) == \
        (0.7, "old", 1e-4, "fast")
    np.testing.assert_array_equal(user.spec.init_running_mean, np.array(layer.mean.value, np.float64))
    _assert_matches(user, (6, 3, 4))
    assert _unchanged(before, nnx.state(layer))


def test_linen_layernorm_two_axes_elementwise_without_bias() -> None:
    module = nn.LayerNorm(reduction_axes=(-2, -1), feature_axes=(-2, -1), epsilon=1e-4, use_bias=False,
                          use_fast_variance=False)
    variables = _perturbed(dict(module.init(jax.random.key(0), jnp.zeros((2, 3, 5)))), _rng())
    before = _snapshot(variables)
    user = READER.read(module, variables)
    assert user.spec == LNSpec(eps=1e-4, affine=True, variance="two-pass", normalized_dims=2, params="elementwise",
                               bias=False)
    assert user.gamma.shape == (3, 5) and not user.beta.any()
    _assert_matches(user, (4, 3, 5))
    assert _unchanged(before, variables)


def test_nnx_layernorm_feature_params() -> None:
    layer = nnx.LayerNorm(5, reduction_axes=(-2, -1), feature_axes=-1, epsilon=1e-3, rngs=nnx.Rngs(0))
    layer.scale.value = jnp.linspace(0.5, 1.5, 5)
    user = READER.read(layer)
    assert (user.spec.normalized_dims, user.spec.params, user.spec.eps) == (2, "feature", 1e-3)
    _assert_matches(user, (4, 3, 5))


def test_linen_rmsnorm() -> None:
    module = nn.RMSNorm(epsilon=1e-3)
    variables = _perturbed(dict(module.init(jax.random.key(0), jnp.zeros((2, 6)))), _rng())
    user = READER.read(module, variables)
    assert isinstance(user.spec, RMSSpec) and user.spec.eps == 1e-3 and user.spec.normalized_dims == 1
    _assert_matches(user, (4, 6))


def test_groupnorm_linen_num_groups_and_nnx_group_size() -> None:
    module = nn.GroupNorm(num_groups=2, epsilon=1e-3, use_fast_variance=False)
    variables = _perturbed(dict(module.init(jax.random.key(0), jnp.zeros((2, 3, 6)))), _rng())
    before = _snapshot(variables)
    user = READER.read(module, variables)
    assert user.spec == GNSpec(axis=-1, eps=1e-3, affine=True, variance="two-pass", groups=2, params="channel")
    _assert_matches(user, (4, 3, 6))
    assert _unchanged(before, variables)
    layer = nnx.GroupNorm(6, num_groups=None, group_size=2, rngs=nnx.Rngs(0))
    user = READER.read(layer)
    assert user.spec.groups == 3 and user.kind == "flax.nnx.GroupNorm"
    _assert_matches(user, (4, 3, 6))


def test_linen_instancenorm_channels_first() -> None:
    module = nn.InstanceNorm(feature_axes=1, epsilon=1e-4)
    variables = _perturbed(dict(module.init(jax.random.key(0), jnp.zeros((2, 3, 4, 4)))), _rng())
    user = READER.read(module, variables)
    assert user.spec == INSpec(axis=1, eps=1e-4, affine=True, variance="fast", track_running_stats=False)
    assert "never" in user.conventions["track_running_stats"]
    _assert_matches(user, (2, 3, 4, 4))


@pytest.mark.parametrize("module, shape", [
    (nn.LayerNorm(use_scale=False, use_bias=False, epsilon=1e-3), (4, 6)),
    (nn.GroupNorm(num_groups=3, use_scale=False, use_bias=False), (2, 3, 6)),
    (nn.InstanceNorm(use_scale=False, use_bias=False), (2, 4, 3)),
    (nn.RMSNorm(use_scale=False), (4, 6)),
], ids=lambda v: type(v).__name__ if isinstance(v, nn.Module) else "")
def test_linen_layers_without_parameters(module: nn.Module, shape: tuple[int, ...]) -> None:
    """No γ, β: not affine, and (the feature count unknown before an input) empty placeholders."""
    user = READER.read(module, module.init(jax.random.key(0), jnp.zeros(shape)))
    assert not user.spec.affine and user.gamma.shape == (0,) == user.beta.shape
    _assert_matches(user, shape)


def test_nnx_layer_without_parameters_knows_its_features() -> None:
    user = READER.read(nnx.GroupNorm(6, num_groups=2, use_scale=False, use_bias=False, rngs=nnx.Rngs(0)))
    np.testing.assert_array_equal(user.gamma, np.ones(6))
    _assert_matches(user, (2, 3, 6))


def test_a_wrong_convention_makes_the_running_statistics_disagree() -> None:
    """The comparison can fail: the spec read with the momentum weighing the new value instead of the old."""
    module = nn.BatchNorm(momentum=0.8)
    variables = _trained_linen_bn(module, (8, 3), _rng())
    user = READER.read(module, variables)
    wrong = UserLayer(framework=user.framework, kind=user.kind, spec=user.spec.replace(momentum_weighs="new"),
                      dtype=user.dtype, gamma=user.gamma, beta=user.beta, session=user.session)
    errors = _errors(*_run(wrong, (8, 3))[:2])
    assert errors["y"] <= RTOL["float32"]  # the training step itself does not depend on it
    assert errors["running_mean"] > 1e-2 and errors["running_var"] > 1e-2


def test_refusals() -> None:
    conv = nn.Conv(4, (3, 3))
    with pytest.raises(TypeError, match="Supported: flax.linen.BatchNorm"):
        READER.read(conv, conv.init(jax.random.key(0), jnp.zeros((1, 5, 5, 2))))
    with pytest.raises(TypeError, match="Supported"):
        READER.read(nnx.Linear(2, 3, rngs=nnx.Rngs(0)))
    module = nn.BatchNorm(momentum=0.9)
    with pytest.raises(TypeError, match="variables"):
        READER.read(module)
    variables = module.init(jax.random.key(0), jnp.zeros((2, 3)), use_running_average=True)
    with pytest.raises(TypeError, match="use_running_average=False"):
        READER.read(nn.BatchNorm(use_running_average=True), variables)
    with pytest.raises(TypeError, match="axis_name"):
        READER.read(nn.BatchNorm(axis_name="batch"), variables)
    with pytest.raises(TypeError, match="batch_stats"):
        READER.read(module, {"params": variables["params"]})


def test_other_objects_and_to_numpy() -> None:
    assert READER.read(object()) is None
    assert READER.read(np.zeros(3)) is None
    assert READER.to_numpy(np.zeros(3)) is None and READER.to_numpy([1.0]) is None
    out = READER.to_numpy(jnp.arange(3.0))
    assert isinstance(out, np.ndarray) and out.tolist() == [0.0, 1.0, 2.0]
    assert READER.framework == "jax" and "flax.linen.BatchNorm" in READER.supported
