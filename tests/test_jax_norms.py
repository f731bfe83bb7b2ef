"""The JAX/Flax LayerNorm, GroupNorm, InstanceNorm and RMSNorm adapters against the float64 reference, and the
proof of Flax's conventions rows (frameworks/jax/convention.py: LAYER_CONVENTIONS) by running flax.linen and
flax.nnx themselves.

The parity grids use γ and β drawn in float64 (not representable in float32): a layer that rounded them, or
computed in float32, would miss the float64 tolerance by orders of magnitude.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import inspect
from pathlib import Path

import numpy as np
import pytest
from conftest import framework_installed

from bnparity.frameworks.base import Unsupported
from bnparity.frameworks.conventions import LayerConvention, convention
from bnparity.frameworks.registry import load_adapter
from bnparity.reference.normalization import normalization, run_reference
from bnparity.reference.spec import BNSpec, GNSpec, INSpec, LayerSpec, LNSpec, RMSSpec
from bnparity.reference.steps import LayerInputs, LayerOutputs

NORMS = ("layernorm", "groupnorm", "instancenorm", "rmsnorm")
APIS = ("linen", "nnx")
IMPLS = ("linen", "nnx", "scratch")
LAYERS = {"layernorm": "LayerNorm", "groupnorm": "GroupNorm", "instancenorm": "InstanceNorm", "rmsnorm": "RMSNorm"}
RTOL = {"float64": 1e-10, "float32": 1e-5, "float16": 2e-2, "bfloat16": 1e-1}  # max |error| / max |reference|


@pytest.fixture(scope="module")
def flax():
    """(jax, jax.numpy, flax.linen, flax.nnx); skips the module's tests when JAX/Flax is not installed."""
    if not framework_installed("jax"):
        pytest.skip("jax is not installed (pip install 'bnparity[jax]')")
    jax = pytest.importorskip("jax")
    jnp = pytest.importorskip("jax.numpy")
    nn = pytest.importorskip("flax.linen")
    nnx = pytest.importorskip("flax.nnx")
    return jax, jnp, nn, nnx


@pytest.fixture(scope="module")
def modules(flax):
    """normalization -> its module of bnparity.frameworks.jax."""
    return {norm: importlib.import_module(f"bnparity.frameworks.jax.{norm}") for norm in NORMS}


@pytest.fixture(scope="module")
def adapters(modules):
    """(normalization, impl) -> one adapter, shared by every test so that its jitted steps are reused."""
    out = {}
    for norm, module in modules.items():
        builtin, scratch = getattr(module, f"Builtin{LAYERS[norm]}"), getattr(module, f"Scratch{LAYERS[norm]}")
        out[norm, "linen"], out[norm, "nnx"], out[norm, "scratch"] = builtin(), builtin(api="nnx"), scratch()
    return out


def make_inputs(shape: tuple[int, ...], spec: LayerSpec, dtype, *, seed: int = 0, loc: float = 1.5,
                spread: float = 2.0, steps: int = 2) -> LayerInputs:
    """Seeded inputs with a non-zero mean; γ and β of shape spec.param_shape(shape), drawn in float64."""
    rng = np.random.default_rng(seed)
    dtype = np.dtype(dtype)

    def draw(mean: float, std: float) -> np.ndarray:
        return rng.normal(mean, std, size=shape).astype(dtype)

    param_shape = spec.param_shape(shape)
    return LayerInputs(xs=tuple(draw(loc, spread) for _ in range(steps)), dys=tuple(draw(0, 1) for _ in range(steps)),
                       x_eval=draw(loc - 0.5, spread * 1.25), gamma=rng.uniform(0.5, 2.0, param_shape),
                       beta=rng.normal(0.0, 1.0, param_shape))


def errors(out: LayerOutputs, ref: LayerOutputs) -> dict[str, float]:
    """Per quantity: max |error| / max |reference|; asserts None exactly where the reference has None."""
    found = {}
    for name, expected in ref.as_dict().items():
        got = out.as_dict()[name]
        assert (got is None) == (expected is None), f"{name}: {'missing' if got is None else 'should be None'}"
        if expected is not None:
            assert got.shape == expected.shape, f"{name}: shape {got.shape}, expected {expected.shape}"
            diff = np.abs(np.asarray(got, dtype=np.float64) - expected).max()
            found[name] = float(diff / max(np.abs(expected).max(), 1e-300))
    return found


def assert_parity(out: LayerOutputs, ref: LayerOutputs, dtype: str) -> None:
    for name, err in errors(out, ref).items():
        assert err <= RTOL[dtype], f"{name}: max relative error {err:.2e} > {RTOL[dtype]:.0e} ({dtype})"


def run_case(adapter, inputs: LayerInputs, spec: LayerSpec, **kwargs) -> tuple[LayerOutputs, LayerOutputs]:
    realized = adapter.realize(spec, inputs.dtype)
    return adapter.run(inputs, spec=realized, **kwargs), run_reference(realized, inputs)


# Every case runs on every implementation (linen, nnx, scratch). Shapes are reused to keep compilations few.
GRID: dict[str, tuple[str, tuple[int, ...], LayerSpec]] = {
    "ln-nc": ("layernorm", (6, 5), LNSpec(eps=1e-3)),
    "ln-2dims-elementwise": ("layernorm", (3, 4, 5), LNSpec(normalized_dims=2)),
    "ln-2dims-feature": ("layernorm", (3, 4, 5), LNSpec(normalized_dims=2, params="feature")),
    "ln-3dims-elementwise": ("layernorm", (2, 2, 3, 4), LNSpec(normalized_dims=3)),
    "ln-no-bias": ("layernorm", (3, 4, 5), LNSpec(bias=False)),
    "ln-affine-off": ("layernorm", (3, 4, 5), LNSpec(affine=False)),
    "ln-fast": ("layernorm", (3, 4, 5), LNSpec(variance="fast")),
    "gn-nc-g2": ("groupnorm", (6, 4), GNSpec(groups=2)),
    "gn-ncl-g1": ("groupnorm", (3, 4, 5), GNSpec(groups=1)),
    "gn-ncl-g2": ("groupnorm", (3, 4, 5), GNSpec(groups=2, eps=1e-3)),
    "gn-ncl-gC": ("groupnorm", (3, 4, 5), GNSpec(groups=4)),
    "gn-nchw-g2": ("groupnorm", (2, 4, 3, 2), GNSpec(groups=2)),
    "gn-nhwc-g2": ("groupnorm", (2, 3, 2, 4), GNSpec(axis=-1, groups=2)),
    "gn-affine-off": ("groupnorm", (3, 4, 5), GNSpec(groups=2, affine=False)),
    "gn-fast": ("groupnorm", (3, 4, 5), GNSpec(groups=2, variance="fast")),
    "in-ncl": ("instancenorm", (3, 4, 5), INSpec()),
    "in-ncl-affine": ("instancenorm", (3, 4, 5), INSpec(affine=True, eps=1e-3)),
    "in-nlc-affine": ("instancenorm", (3, 5, 4), INSpec(axis=-1, affine=True)),
    "in-nchw-affine": ("instancenorm", (2, 4, 3, 2), INSpec(affine=True)),
    "in-ncdhw-affine": ("instancenorm", (2, 4, 2, 2, 2), INSpec(affine=True)),
    "in-fast": ("instancenorm", (3, 4, 5), INSpec(affine=True, variance="fast")),
    "rms-nc": ("rmsnorm", (6, 5), RMSSpec()),
    "rms-ncl": ("rmsnorm", (3, 4, 5), RMSSpec(eps=1e-3)),
    "rms-2dims-elementwise": ("rmsnorm", (3, 4, 5), RMSSpec(normalized_dims=2)),
    "rms-2dims-feature": ("rmsnorm", (3, 4, 5), RMSSpec(normalized_dims=2, params="feature")),
    "rms-affine-off": ("rmsnorm", (3, 4, 5), RMSSpec(affine=False)),
}
# What only the scratch layers can do: Flax has no per-group γ and β, no InstanceNorm running statistics.
SCRATCH_ONLY: dict[str, tuple[str, tuple[int, ...], LayerSpec]] = {
    "gn-group-params": ("groupnorm", (3, 4, 5), GNSpec(groups=2, params="group")),
    "gn-group-params-nhwc": ("groupnorm", (2, 3, 2, 4), GNSpec(axis=-1, groups=4, params="group")),
    "in-running-new": ("instancenorm", (3, 4, 5), INSpec(affine=True, track_running_stats=True, momentum=0.2,
                                                         init_running_mean=0.25, init_running_var=1.5)),
    "in-running-old-biased": ("instancenorm", (3, 4, 5), INSpec(track_running_stats=True, momentum=0.7,
                                                                momentum_weighs="old", running_var="biased")),
    "in-running-nhwc": ("instancenorm", (2, 3, 2, 4), INSpec(axis=-1, affine=True, track_running_stats=True)),
}
FLOAT32 = ("ln-2dims-elementwise", "gn-nhwc-g2", "in-nchw-affine", "rms-2dims-feature")


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("case", GRID)
def test_matches_the_reference_in_float64(adapters, case, impl):
    norm, shape, spec = GRID[case]
    inputs = make_inputs(shape, spec, "float64", seed=len(case))
    assert_parity(*run_case(adapters[norm, impl], inputs, spec), "float64")


@pytest.mark.parametrize("case", SCRATCH_ONLY)
def test_scratch_follows_every_spec_field(adapters, case):
    norm, shape, spec = SCRATCH_ONLY[case]
    inputs = make_inputs(shape, spec, "float64", seed=len(case))
    out, ref = run_case(adapters[norm, "scratch"], inputs, spec)
    assert_parity(out, ref, "float64")
    if spec.track_running_stats:  # the running statistics are not their initial values
        assert not np.allclose(out.running_mean, spec.init_running_mean)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("case", FLOAT32)
def test_matches_the_reference_in_float32(adapters, case, impl):
    norm, shape, spec = GRID[case]
    inputs = make_inputs(shape, spec, "float32", seed=1)
    out, ref = run_case(adapters[norm, impl], inputs, spec)
    assert out.y.dtype == np.float32
    assert_parity(out, ref, "float32")


@pytest.mark.parametrize(("impl", "dtype"), [(impl, "float16") for impl in IMPLS] + [("linen", "bfloat16")])
@pytest.mark.parametrize("case", FLOAT32)
def test_runs_in_half_precision(adapters, case, impl, dtype):
    if dtype == "bfloat16":
        dtype = pytest.importorskip("ml_dtypes").bfloat16
    norm, shape, spec = GRID[case]
    inputs = make_inputs(shape, spec, dtype, seed=2)
    assert_parity(*run_case(adapters[norm, impl], inputs, spec), np.dtype(dtype).name)


# ---- the adapters' own behaviour ----------------------------------------------------------------------------------

@pytest.mark.parametrize("api", APIS)
def test_group_params_are_unsupported(adapters, api):
    with pytest.raises(Unsupported, match=rf"^jax: flax {api}.GroupNorm has one scale and bias per channel"):
        adapters["groupnorm", api].realize(GNSpec(groups=2, params="group"), np.dtype("float32"))


@pytest.mark.parametrize("api", APIS)
def test_instancenorm_running_statistics_are_unsupported(adapters, api):
    with pytest.raises(Unsupported, match=rf"^jax: flax {api}.InstanceNorm keeps no running statistics"):
        adapters["instancenorm", api].realize(INSpec(track_running_stats=True), np.dtype("float32"))


@pytest.mark.parametrize("api", APIS)
def test_instancenorm_of_a_2d_input_is_unsupported(adapters, api):
    spec = INSpec(affine=True)
    rng = np.random.default_rng(0)
    inputs = LayerInputs(xs=(rng.normal(size=(4, 3)),), dys=(rng.normal(size=(4, 3)),), x_eval=rng.normal(size=(4, 3)),
                         gamma=np.ones(3), beta=np.zeros(3))
    with pytest.raises(Unsupported, match=rf"^jax: flax {api}.InstanceNorm of a 2-D input reduces over no axis"):
        adapters["instancenorm", api].run(inputs, spec=spec)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("norm", NORMS)
def test_a_dtype_jax_has_no_float_for_is_unsupported(adapters, norm, impl):
    spec = normalization(norm).spec_type()
    with pytest.raises(Unsupported, match="^jax: expected a float64, float32, float16 or bfloat16 dtype. "
                                          "Received: int32"):
        adapters[norm, impl].realize(spec, np.dtype(np.int32))


@pytest.mark.parametrize("norm", NORMS)
def test_unknown_api_is_refused(modules, norm):
    with pytest.raises(ValueError, match="api must be one of linen, nnx. Received: 'haiku'"):
        getattr(modules[norm], f"Builtin{LAYERS[norm]}")(api="haiku")


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("norm", NORMS)
def test_realize_keeps_every_field_flax_can_configure(adapters, norm, impl):
    spec = {"layernorm": LNSpec(eps=1e-3, variance="fast", normalized_dims=2, params="feature", bias=False),
            "groupnorm": GNSpec(eps=1e-3, variance="fast", groups=4, affine=False),
            "instancenorm": INSpec(eps=1e-3, variance="fast", affine=True),
            "rmsnorm": RMSSpec(eps=1e-3, normalized_dims=2, params="feature")}[norm]
    realized = adapters[norm, impl].realize(spec, np.dtype("float64"))
    assert realized == spec and type(realized) is type(spec)


def test_registry_loads_the_adapters(modules):
    for norm in NORMS:
        builtin, scratch = load_adapter("jax", "builtin", norm), load_adapter("jax", "scratch", norm)
        assert isinstance(builtin, getattr(modules[norm], f"Builtin{LAYERS[norm]}")) and builtin.api == "linen"
        assert isinstance(scratch, getattr(modules[norm], f"Scratch{LAYERS[norm]}"))
        assert (builtin.normalization, scratch.normalization) == (norm, norm)
        assert builtin.native_axis == scratch.native_axis == -1


def test_sessions_of_one_configuration_reuse_the_compiled_steps(modules):
    adapter = modules["layernorm"].BuiltinLayerNorm()
    spec = LNSpec(normalized_dims=2)
    adapter.run(make_inputs((3, 4, 5), spec, "float32"), spec=spec)
    adapter.run(make_inputs((3, 4, 5), spec, "float32", seed=1), spec=spec)
    # 4 training steps and 2 evals, 2 sessions: one compilation (eval without running statistics reuses the train step)
    assert adapter.steps.traces == {"train": 1}
    adapter.run(make_inputs((3, 4, 5), spec, "float32"), spec=spec.replace(eps=1e-3))  # a new configuration
    assert adapter.steps.traces == {"train": 2}


def mean_1e4_inputs(shape: tuple[int, ...], spec: LayerSpec) -> LayerInputs:
    """float32 data with mean 1e4 and spread 1 (κ ≈ 1e4): E[x²] − E[x]² cancels catastrophically in float32."""
    rng = np.random.default_rng(0)

    def draw() -> np.ndarray:
        return (1e4 + rng.normal(size=shape)).astype(np.float32)

    param_shape = spec.param_shape(shape)
    return LayerInputs(xs=(draw(),), dys=(rng.normal(size=shape).astype(np.float32),), x_eval=draw(),
                       gamma=np.ones(param_shape), beta=np.zeros(param_shape))


VARIANCE_CASES = {"layernorm": ((8, 64), LNSpec(eps=1e-6)),
                  "groupnorm": ((8, 16, 4), GNSpec(axis=-1, groups=2, eps=1e-6)),
                  "instancenorm": ((8, 64, 4), INSpec(axis=-1, eps=1e-6))}


@pytest.mark.parametrize("api", APIS)
@pytest.mark.parametrize("norm", VARIANCE_CASES)
def test_matched_mode_configures_the_variance_and_defaults_mode_is_fast(adapters, norm, api):
    shape, spec = VARIANCE_CASES[norm]
    inputs = mean_1e4_inputs(shape, spec)
    adapter = adapters[norm, api]
    two_pass, ref = run_case(adapter, inputs, spec)
    fast, _ = run_case(adapter, inputs, spec.replace(variance="fast"))
    defaults, _ = run_case(adapter, inputs, spec, use_defaults=True)  # ε = 1e-6 = spec.eps
    assert errors(two_pass, ref)["y"] < 5e-3  # κ·u ≈ 1e4 · 6e-8: measured 2e-4 to 8e-4
    assert errors(fast, ref)["y"] > 1e-1  # E[x²] − E[x]² in float32: measured ≈ 1e3
    np.testing.assert_array_equal(defaults.y, fast.y)  # Flax's default is the fast one


@pytest.mark.parametrize("impl", IMPLS)
def test_batchnorm_matched_mode_honours_the_variance_field(flax, impl):
    from bnparity.frameworks.jax import batchnorm as bn

    adapter = bn.ScratchBatchNorm() if impl == "scratch" else bn.BuiltinBatchNorm(api=impl)
    spec = BNSpec(axis=-1, eps=1e-5, running_var="biased", momentum=0.2)
    inputs = mean_1e4_inputs((512, 3), spec)
    two_pass, ref = run_case(adapter, inputs, spec)
    fast, _ = run_case(adapter, inputs, spec.replace(variance="fast"))
    assert errors(two_pass, ref)["running_var"] < 1e-5  # measured 1e-7
    assert errors(fast, ref)["running_var"] > 1e-2  # E[x²] − E[x]² in float32: measured 3
    inputs64 = make_inputs((6, 5, 3), spec, "float64")
    assert_parity(*run_case(adapter, inputs64, spec.replace(variance="fast")), "float64")


# ---- the conventions rows, proved by running Flax at its own defaults ---------------------------------------------

def rows() -> dict[str, LayerConvention]:
    return {norm: convention("jax", norm) for norm in NORMS}


def flax_layer(flax, norm: str, api: str, x, *, params: dict | None = None, num_features: int | None = None,
               **options):
    """(y, {parameter name: shape}, collections) of one call of Flax's `norm` layer on `x`: eager, at Flax's own
    defaults except `options`; `params` replace the initial parameters (ones and zeros)."""
    jax, jnp, nn, nnx = flax
    x = jnp.asarray(x)
    if api == "linen":
        module = getattr(nn, LAYERS[norm])(**options)
        variables = dict(module.init(jax.random.key(0), x))
        if params is not None:
            variables["params"] = {k: jnp.asarray(v) for k, v in params.items()}
        shapes = {k: tuple(v.shape) for k, v in variables.get("params", {}).items()}
        return module.apply(variables, x), shapes, set(variables)
    layer = getattr(nnx, LAYERS[norm])(num_features or x.shape[-1], rngs=nnx.Rngs(0), **options)
    for name, value in (params or {}).items():
        getattr(layer, name).value = jnp.asarray(value)
    state = nnx.to_pure_dict(nnx.state(layer, nnx.Param))
    collections = {"params"} if state else set()
    if nnx.to_pure_dict(nnx.state(layer, nnx.BatchStat)):
        collections.add("batch_stats")
    return layer(x), {k: tuple(v.shape) for k, v in state.items()}, collections


def reference_y(spec: LayerSpec, x: np.ndarray, gamma: np.ndarray | None = None,
                beta: np.ndarray | None = None) -> np.ndarray:
    """The reference's training-mode y of `spec` on x (γ = 1 and β = 0 unless given)."""
    shape = spec.param_shape(x.shape)
    inputs = LayerInputs(xs=(x,), dys=(np.zeros_like(x),), x_eval=x,
                         gamma=np.ones(shape) if gamma is None else gamma,
                         beta=np.zeros(shape) if beta is None else beta)
    return run_reference(spec, inputs).y


def relative(got, expected: np.ndarray) -> float:
    return float(np.abs(np.asarray(got, dtype=np.float64) - expected).max() / np.abs(expected).max())


# Each layer at its defaults, on an input whose layout the defaults accept: (shape, required options, structure).
DEFAULT_CASES = {"layernorm": ((4, 6), {}, {}),
                 "groupnorm": ((2, 3, 64), {}, {"axis": -1}),  # 64 channels: divisible by the default 32 groups
                 "instancenorm": ((2, 5, 6), {}, {"axis": -1}),
                 "rmsnorm": ((4, 6), {}, {})}
# Data whose σ² (RMSNorm: mean square) is ≈ 1e-4 (1e-5), where ε = 1e-6 and 1e-5 differ visibly: (mean, spread).
SMALL_SPREAD = {"layernorm": (0.5, 0.01), "groupnorm": (0.5, 0.01), "instancenorm": (0.5, 0.01),
                "rmsnorm": (0.0, 0.003)}


@pytest.mark.parametrize("api", APIS)
@pytest.mark.parametrize("norm", NORMS)
def test_default_eps(flax, norm, api):
    """At its defaults each layer is the reference at ε = 1e-6, not 1e-5 (float64, σ² ≈ 1e-4, mean square ≈ 1e-5)."""
    jax = flax[0]
    shape, options, structure = DEFAULT_CASES[norm]
    x = np.random.default_rng(0).normal(*SMALL_SPREAD[norm], shape)
    row = rows()[norm]
    with jax.experimental.enable_x64():
        y = np.asarray(flax_layer(flax, norm, api, x, **options)[0])
    assert row.eps() == 1e-6
    assert relative(y, reference_y(row.spec(**structure), x)) < 1e-10
    assert relative(y, reference_y(row.spec(**structure).replace(eps=1e-5), x)) > 1e-3


@pytest.mark.parametrize("api", APIS)
@pytest.mark.parametrize("norm", ["layernorm", "groupnorm", "instancenorm"])
def test_default_variance_is_the_fast_E_x2_minus_E_x_squared(flax, norm, api):
    """float32, mean 1e4, spread 1: the default equals use_fast_variance=True bit for bit and is far from the
    two-pass reference; use_fast_variance=False is close to it (κ·u ≈ 1e4 · 6e-8: a few 1e-4)."""
    _, options, structure = DEFAULT_CASES[norm]
    shape = {"layernorm": (4, 64), "groupnorm": (2, 16, 64), "instancenorm": (2, 64, 4)}[norm]  # 64 values each
    x = (1e4 + np.random.default_rng(0).normal(size=shape)).astype(np.float32)
    y = {fast: np.asarray(flax_layer(flax, norm, api, x, **options, **({} if fast is None else
                                                                        {"use_fast_variance": fast}))[0])
         for fast in (None, True, False)}
    np.testing.assert_array_equal(y[None], y[True])
    expected = reference_y(rows()[norm].spec(**structure).replace(variance="two-pass"), x.astype(np.float64))
    assert relative(y[False], expected) < 5e-3  # measured 3e-4 to 7e-4
    assert relative(y[None], expected) > 1e-1  # measured ≈ 1e3
    assert rows()[norm].defaults["variance"] == "fast"


@pytest.mark.parametrize("api", APIS)
def test_rmsnorm_use_fast_variance_changes_nothing(flax, api):
    """RMSNorm calls _compute_stats(use_mean=False): σ² is mean(x²) whatever use_fast_variance says."""
    x = (1e4 + np.random.default_rng(0).normal(size=(4, 64))).astype(np.float32)
    y = [np.asarray(flax_layer(flax, "rmsnorm", api, x, use_fast_variance=fast)[0]) for fast in (True, False)]
    np.testing.assert_array_equal(y[0], y[1])
    assert relative(y[0], reference_y(rows()["rmsnorm"].spec(), x.astype(np.float64))) < 1e-5
    assert "variance" not in rows()["rmsnorm"].defaults


@pytest.mark.parametrize("api", APIS)
@pytest.mark.parametrize("norm", ["layernorm", "rmsnorm"])
def test_default_normalizes_the_last_axis_only(flax, norm, api):
    jax = flax[0]
    x = np.random.default_rng(0).normal(1.0, 2.0, (2, 3, 4))
    row = rows()[norm]
    with jax.experimental.enable_x64():
        y = np.asarray(flax_layer(flax, norm, api, x)[0])
    assert row.defaults["normalized_dims"] == 1
    assert relative(y, reference_y(row.spec(), x)) < 1e-10
    assert relative(y, reference_y(row.spec(normalized_dims=2), x)) > 1e-2


@pytest.mark.parametrize("api", APIS)
@pytest.mark.parametrize("norm", ["layernorm", "rmsnorm"])
def test_default_params_are_per_last_axis_feature(flax, norm, api):
    """With reduction_axes=(-2, -1) and the default feature_axes=-1, γ (and β) have shape (W,), not (H, W)."""
    jax = flax[0]
    rng = np.random.default_rng(0)
    x = rng.normal(1.0, 2.0, (2, 3, 4))
    row = rows()[norm]
    spec = row.spec(normalized_dims=2)
    gamma, beta = rng.uniform(0.5, 2, 4), rng.normal(0, 1, 4)
    params = {"scale": gamma} if norm == "rmsnorm" else {"scale": gamma, "bias": beta}
    with jax.experimental.enable_x64():
        y, shapes, _ = flax_layer(flax, norm, api, x, params=params, reduction_axes=(-2, -1))
    assert row.defaults["params"] == "feature" and spec.param_shape(x.shape) == (4,)
    assert set(shapes.values()) == {(4,)}
    assert relative(y, reference_y(spec, x, gamma, beta)) < 1e-10


@pytest.mark.parametrize("norm", ["layernorm", "rmsnorm"])
def test_linen_elementwise_params_have_the_normalized_shape(flax, norm):
    jax = flax[0]
    rng = np.random.default_rng(1)
    x = rng.normal(1.0, 2.0, (2, 3, 4))
    spec = rows()[norm].spec(normalized_dims=2, params="elementwise")
    gamma, beta = rng.uniform(0.5, 2, (3, 4)), rng.normal(0, 1, (3, 4))
    params = {"scale": gamma} if norm == "rmsnorm" else {"scale": gamma, "bias": beta}
    with jax.experimental.enable_x64():
        y, shapes, _ = flax_layer(flax, norm, "linen", x, params=params, reduction_axes=(-2, -1),
                                  feature_axes=(-2, -1))
    assert set(shapes.values()) == {(3, 4)}
    assert relative(y, reference_y(spec, x, gamma, beta)) < 1e-10


@pytest.mark.parametrize("norm", ["layernorm", "rmsnorm"])
def test_nnx_params_are_always_1d_and_reshaped_to_the_feature_axes(flax, norm):
    """nnx.LayerNorm/RMSNorm create (num_features,): γ over (H, W) is num_features = H·W, flattened row-major."""
    jax = flax[0]
    rng = np.random.default_rng(1)
    x = rng.normal(1.0, 2.0, (2, 3, 4))
    spec = rows()[norm].spec(normalized_dims=2, params="elementwise")
    gamma, beta = rng.uniform(0.5, 2, (3, 4)), rng.normal(0, 1, (3, 4))
    params = {"scale": gamma.reshape(-1)} if norm == "rmsnorm" else {"scale": gamma.reshape(-1),
                                                                      "bias": beta.reshape(-1)}
    axes = dict(reduction_axes=(-2, -1), feature_axes=(-2, -1))
    with jax.experimental.enable_x64():
        y, shapes, _ = flax_layer(flax, norm, "nnx", x, params=params, num_features=12, **axes)
    assert set(shapes.values()) == {(12,)}
    assert relative(y, reference_y(spec, x, gamma, beta)) < 1e-10
    with pytest.raises(TypeError, match="reshape"):  # num_features = W does not fit the (H, W) feature axes
        flax_layer(flax, norm, "nnx", x, num_features=4, **axes)


@pytest.mark.parametrize("api", APIS)
@pytest.mark.parametrize("norm", NORMS)
def test_default_parameters(flax, norm, api):
    """Which parameters a layer at its defaults has: γ and β (one per channel or feature); RMSNorm γ only."""
    shape, options, _ = DEFAULT_CASES[norm]
    _, shapes, _ = flax_layer(flax, norm, api, np.ones(shape, np.float32), **options)
    expected = {"scale"} if norm == "rmsnorm" else {"scale", "bias"}
    assert set(shapes) == expected and set(shapes.values()) == {(shape[-1],)}
    assert rows()[norm].defaults["affine"] is True


@pytest.mark.parametrize("api", APIS)
@pytest.mark.parametrize("norm", ["layernorm", "groupnorm", "instancenorm"])
def test_use_scale_and_use_bias_switch_independently(flax, norm, api):
    shape, options, _ = DEFAULT_CASES[norm]
    x = np.ones(shape, np.float32)
    for use_scale, use_bias in ((True, False), (False, True), (False, False)):
        _, shapes, _ = flax_layer(flax, norm, api, x, use_scale=use_scale, use_bias=use_bias, **options)
        assert set(shapes) == {n for n, on in (("scale", use_scale), ("bias", use_bias)) if on}
    assert rows()["layernorm"].defaults["bias"] is True


@pytest.mark.parametrize("api", APIS)
def test_rmsnorm_has_no_bias_argument(flax, api):
    _, _, nn, nnx = flax
    layer = nn.RMSNorm if api == "linen" else nnx.RMSNorm
    parameters = set(inspect.signature(layer.__init__).parameters)
    assert "use_scale" in parameters and "use_bias" not in parameters
    with pytest.raises(TypeError, match="use_bias"):
        flax_layer(flax, "rmsnorm", api, np.ones((2, 4), np.float32), use_bias=True)


@pytest.mark.parametrize("api", APIS)
def test_groupnorm_default_is_32_groups(flax, api):
    jax = flax[0]
    x = np.random.default_rng(0).normal(size=(2, 3, 64)) * np.linspace(0.5, 3, 64)
    row = rows()["groupnorm"]
    with jax.experimental.enable_x64():
        y = np.asarray(flax_layer(flax, "groupnorm", api, x)[0])
    assert row.defaults["groups"] == 32
    assert relative(y, reference_y(row.spec(axis=-1), x)) < 1e-10
    assert relative(y, reference_y(row.spec(axis=-1, groups=16), x)) > 1e-2
    with pytest.raises(ValueError, match=r"Number of groups \(32\) does not divide the number of channels \(48\)"):
        flax_layer(flax, "groupnorm", api, np.ones((2, 48), np.float32))


@pytest.mark.parametrize("api", APIS)
def test_groupnorm_groups_are_consecutive_channels_and_params_per_channel(flax, api):
    """NHWC, C = 4, 2 groups: channels (0, 1) and (2, 3), not (0, 2) and (1, 3); γ and β per channel."""
    jax = flax[0]
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 3, 2, 4)) * np.array([1.0, 1.0, 5.0, 5.0]) + np.array([0.0, 0.0, 4.0, 4.0])
    gamma, beta = rng.uniform(0.5, 2, 4), rng.normal(0, 1, 4)
    spec = rows()["groupnorm"].spec(axis=-1, groups=2)
    with jax.experimental.enable_x64():
        y, shapes, _ = flax_layer(flax, "groupnorm", api, x, params={"scale": gamma, "bias": beta}, num_groups=2)
    assert set(shapes.values()) == {(4,)} and rows()["groupnorm"].defaults["params"] == "channel"
    assert relative(y, reference_y(spec, x, gamma, beta)) < 1e-10
    interleave = [0, 2, 1, 3]  # groups (0, 2) and (1, 3)
    interleaved = reference_y(spec, x[..., interleave], gamma[interleave], beta[interleave])[..., interleave]
    assert relative(y, interleaved) > 1e-2


@pytest.mark.parametrize("api", APIS)
@pytest.mark.parametrize("norm", ["groupnorm", "instancenorm"])
def test_channels_are_last(flax, norm, api):
    """(2, 2, 3, 4): the layer normalizes the 4 channels of the last axis, not the 2 of axis 1."""
    jax = flax[0]
    x = np.random.default_rng(0).normal(size=(2, 2, 3, 4)) * np.array([1.0, 2.0, 3.0, 4.0]) + np.arange(4.0)
    row = rows()[norm]
    options = {"num_groups": 2} if norm == "groupnorm" else {}
    structure = {"groups": 2} if norm == "groupnorm" else {}
    with jax.experimental.enable_x64():
        y = np.asarray(flax_layer(flax, norm, api, x, **options)[0])
    assert row.defaults["axis"] == -1
    assert relative(y, reference_y(row.spec(axis=-1, **structure), x)) < 1e-10
    assert relative(y, reference_y(row.spec(axis=1, **structure), x)) > 1e-2


@pytest.mark.parametrize("api", APIS)
@pytest.mark.parametrize("norm", NORMS)
def test_keeps_no_running_statistics(flax, norm, api):
    """Parameters only; every call normalizes with the input's own statistics (there is no eval mode)."""
    jax, _, nn, nnx = flax
    shape, options, structure = DEFAULT_CASES[norm]
    rng = np.random.default_rng(0)
    row = rows()[norm]
    with jax.experimental.enable_x64():
        for loc in (0.0, 3.0):  # one layer state for every input
            x = rng.normal(loc, 2.0, shape)
            y, _, collections = flax_layer(flax, norm, api, x, **options)
            assert collections == {"params"}
            assert relative(y, reference_y(row.spec(**structure), x)) < 1e-10
    assert row.defaults.get("track_running_stats", False) is False
    layer = getattr(nn if api == "linen" else nnx, LAYERS[norm])
    assert "use_running_average" not in inspect.signature(layer.__call__).parameters


def test_nnx_groupnorm_repeats_the_statistics_along_axis_1(flax):
    """reduction_axes=(-1,) (statistics per position and group): linen is right, nnx scrambles the statistics
    (jnp.repeat along axis 1, not -1); with the default reduction axes both agree (the parity grid)."""
    jax, jnp, nn, nnx = flax
    x = np.random.default_rng(0).normal(size=(2, 3, 5, 4)) * np.arange(1.0, 5.0) + np.arange(4.0)
    xg = x.reshape(2, 3, 5, 2, 2)  # (N, H, W, G, C/G)
    mu, var = xg.mean(axis=-1, keepdims=True), xg.var(axis=-1, keepdims=True)
    expected = ((xg - mu) / np.sqrt(var + 1e-6)).reshape(x.shape)
    with jax.experimental.enable_x64():
        linen = flax_layer(flax, "groupnorm", "linen", x, num_groups=2, reduction_axes=(-1,))[0]
        scrambled = flax_layer(flax, "groupnorm", "nnx", x, num_groups=2, reduction_axes=(-1,))[0]
    assert relative(linen, expected) < 1e-10
    assert relative(scrambled, expected) > 1e-1


@pytest.mark.parametrize("api", APIS)
def test_instancenorm_of_a_2d_input_returns_beta(flax, api):
    x = np.random.default_rng(0).normal(size=(4, 3)).astype(np.float32)
    beta = np.array([0.5, -1.0, 2.0], np.float32)
    y, _, _ = flax_layer(flax, "instancenorm", api, x, params={"scale": np.full(3, 2.0, np.float32), "bias": beta})
    np.testing.assert_array_equal(np.asarray(y), np.broadcast_to(beta, (4, 3)))


@pytest.mark.parametrize("api", APIS)
@pytest.mark.parametrize("norm", NORMS)
def test_half_precision_statistics_are_float32(flax, norm, api):
    """float16, mean 300: x² overflows float16 (max 65504), yet the default E[x²] − E[x]² gives a finite, accurate
    y: x is promoted to float32 before it is squared; y comes back in float16 (dtype=float16, as the adapters ask)."""
    _, jnp, _, _ = flax
    shape, options, structure = DEFAULT_CASES[norm]
    x = (300 + 10 * np.random.default_rng(0).normal(size=shape)).astype(np.float16)
    with np.errstate(over="ignore"):
        assert np.isinf(np.square(x)).any()  # in float16, x² overflows
    y, _, _ = flax_layer(flax, norm, api, x, dtype=jnp.float16, param_dtype=jnp.float16, **options)
    assert y.dtype == np.float16 and bool(jnp.isfinite(y).all())
    assert relative(y, reference_y(rows()[norm].spec(**structure), x.astype(np.float64))) < 2e-2


@pytest.mark.parametrize("api", APIS)
@pytest.mark.parametrize("norm", NORMS)
def test_defaults_mode_is_flax_as_shipped(adapters, norm, api):
    """use_defaults builds the layer at Flax's ε = 1e-6 and fast variance: it is the row's spec, not the asked one."""
    shape, _, structure = DEFAULT_CASES[norm]
    row = rows()[norm]
    spec = row.spec(**({**structure, "groups": 2} if norm == "groupnorm" else structure))
    loc, spread = SMALL_SPREAD[norm]
    inputs = make_inputs(shape, spec, "float64", loc=loc, spread=spread)
    defaults, ref = run_case(adapters[norm, api], inputs, spec, use_defaults=True)
    assert_parity(defaults, ref, "float64")
    asked = spec.replace(eps=1e-5)  # the same layer at PyTorch's ε, matched mode
    matched, ref_asked = run_case(adapters[norm, api], inputs, asked)
    assert_parity(matched, ref_asked, "float64")
    assert relative(defaults.y, ref_asked.y) > 1e-3


# ---- the rows themselves ------------------------------------------------------------------------------------------

def test_there_is_one_row_per_layer_and_its_spec_builds():
    for norm, row in rows().items():
        assert (row.framework, row.normalization, row.eps_rule) == ("jax", norm, "fixed")
        spec_type = normalization(norm).spec_type
        assert set(row.defaults) <= set(spec_type.__dataclass_fields__), norm
        assert isinstance(row.spec(), spec_type)
        assert row.constructor.startswith(f"flax.linen.{LAYERS[norm]}(")


@pytest.mark.parametrize("norm", NORMS)
def test_row_defaults_are_the_constructor_defaults(flax, norm):
    _, _, nn, nnx = flax
    row = rows()[norm]
    for layer in (getattr(nn, LAYERS[norm]), getattr(nnx, LAYERS[norm])):
        defaults = {name: p.default for name, p in inspect.signature(layer.__init__).parameters.items()}
        assert defaults["epsilon"] == row.defaults["eps"]
        assert defaults["use_scale"] is row.defaults["affine"]
        if norm != "rmsnorm":
            assert defaults["use_fast_variance"] is (row.defaults["variance"] == "fast")
            assert defaults["use_bias"] is True
        if norm == "groupnorm":
            assert defaults["num_groups"] == row.defaults["groups"]


def _site_packages() -> Path:
    return Path(importlib.util.find_spec("flax").submodule_search_locations[0]).parent


def _test_names() -> set[str]:
    tree = ast.parse(Path(__file__).read_text(encoding="utf-8"))
    return {node.name for node in tree.body if isinstance(node, ast.FunctionDef) and node.name.startswith("test_")}


@pytest.mark.parametrize("norm", NORMS)
def test_every_fact_is_cited_and_proved_here(flax, norm):
    """Each fact has citations whose quoted code is on the cited line of the installed Flax, and proofs that are
    tests of this file; each default has a fact."""
    row = rows()[norm]
    assert set(row.defaults) <= set(row.facts), f"defaults without a fact: {set(row.defaults) - set(row.facts)}"
    assert set(row.facts) == set(row.citations) == set(row.proofs), norm
    root, names = _site_packages(), _test_names()
    for field, citation in row.citations.items():
        for cited in citation.split("; "):  # "path:LINE: `the code on that line` what it means"
            path, line, what = cited.split(":", 2)
            source = (root / path).read_text(encoding="utf-8").splitlines()
            code = what.split("`")[1]
            assert code in source[int(line) - 1], f"{field}: {path}:{line} is {source[int(line) - 1].strip()!r}"
    tests = Path(__file__).parent
    for field, proofs in row.proofs.items():
        assert proofs, field
        for proof in proofs:
            file, name = proof.split("::")
            assert (tests.parent / file).exists(), proof
            if file == f"tests/{Path(__file__).name}":
                assert name in names, proof
