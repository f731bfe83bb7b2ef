"""The JAX adapters (flax.linen.BatchNorm, flax.nnx.BatchNorm, raw jax.numpy scratch) against the float64 reference."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import require

from bnparity.frameworks.base import Unsupported
from bnparity.frameworks.conventions import convention
from bnparity.frameworks.registry import load_adapter
from bnparity.reference.normalization import run_reference
from bnparity.reference.spec import BNSpec
from bnparity.reference.steps import LayerInputs, LayerOutputs

# Allowed max |error| / max(1, max |reference|) in float64: a few ulps of every formula, far above the measured.
RTOL = 1e-12  # float64 only: the float32 and reduced-precision grids are the adapter contract's
IMPLS = ("linen", "nnx", "scratch")
SPEC = BNSpec(momentum=0.2, eps=1e-3, init_running_mean=0.25, init_running_var=1.5)


@pytest.fixture(scope="module")
def jax_modules():
    """(bn, scratch, convert) of bnparity.frameworks.jax; skips the module's tests when flax is not installed."""
    require("jax")
    from bnparity.frameworks.jax import batchnorm as bn
    from bnparity.frameworks.jax import convert
    scratch = bn

    return bn, scratch, convert


@pytest.fixture(scope="module")
def adapters(jax_modules):
    """One adapter per implementation, shared by the grid so that its jitted steps are reused."""
    bn, scratch, _ = jax_modules
    return {"linen": bn.BuiltinBatchNorm(), "nnx": bn.BuiltinBatchNorm(api="nnx"), "scratch": bn.ScratchBatchNorm()}


def make_inputs(*, rank: int, axis: int, dtype, steps: int = 3, seed: int = 0, loc: float = 1.5) -> LayerInputs:
    """Seeded inputs: channels at `axis`, non-zero mean, non-trivial γ and β."""
    rng = np.random.default_rng(seed)
    channels = 3
    native = {2: (6, channels), 3: (4, channels, 5), 4: (4, channels, 3, 2)}[rank]
    shape = tuple(np.moveaxis(np.empty(native), 1, axis).shape)

    def draw(mean: float, std: float) -> np.ndarray:
        return rng.normal(mean, std, size=shape).astype(dtype)

    return LayerInputs(xs=tuple(draw(loc, 2.0) for _ in range(steps)), dys=tuple(draw(0.0, 1.0) for _ in range(steps)),
                       x_eval=draw(loc - 0.5, 2.5), gamma=rng.uniform(0.5, 2.0, channels),
                       beta=rng.normal(0, 1, channels))


def max_errors(out: LayerOutputs, ref: LayerOutputs) -> dict[str, float]:
    """Per quantity: max |error| / max(1, max |reference|); None exactly where the reference has None."""
    errors = {}
    for name, expected in ref.as_dict().items():
        got = out.as_dict()[name]
        if expected is None:
            assert got is None, f"{name}: expected None (quantity does not exist), got an array"
            continue
        assert got is not None and got.shape == expected.shape, f"{name}: shape {None if got is None else got.shape}"
        errors[name] = float(np.abs(np.asarray(got, dtype=np.float64) - expected).max()) / max(
            1.0, float(np.abs(expected).max()))
    return errors


def assert_parity(out: LayerOutputs, ref: LayerOutputs, *, rtol: float) -> None:
    for name, err in max_errors(out, ref).items():
        assert err <= rtol, f"{name}: max relative error {err:.3e} > allowed {rtol:.1e}"


def run_case(adapter, inputs: LayerInputs, spec: BNSpec, **kwargs) -> tuple[LayerOutputs, LayerOutputs]:
    realized = adapter.realize(spec, inputs.dtype)
    return adapter.run(inputs, spec=realized, **kwargs), run_reference(realized, inputs)


def test_scratch_follows_every_spec_field(adapters):
    # Old-weighing momentum and the biased estimator (Flax's conventions) as well as the grid's torch ones.
    spec = SPEC.replace(axis=-1, momentum=0.7, momentum_weighs="old", running_var="biased")
    inputs = make_inputs(rank=3, axis=-1, dtype="float64")
    out, ref = run_case(adapters["scratch"], inputs, spec)
    assert_parity(out, ref, rtol=RTOL)
    unbiased, _ = run_case(adapters["scratch"], inputs, spec.replace(running_var="unbiased"))
    assert not np.allclose(unbiased.running_var, out.running_var)


@pytest.mark.parametrize("api", ["linen", "nnx"])
def test_defaults_mode_is_flax_as_shipped(adapters, api):
    """use_defaults: momentum 0.99 weighing the old value, ε = 1e-5, fast variance (exact enough in float64)."""
    adapter = adapters[api]
    inputs = make_inputs(rank=3, axis=-1, dtype="float64")
    out, ref = run_case(adapter, inputs, convention("jax").spec(), use_defaults=True)
    assert_parity(out, ref, rtol=RTOL)
    # The same layer built from SPEC (matched mode) differs: the defaults really were Flax's.
    matched, _ = run_case(adapter, inputs, SPEC.replace(axis=-1))
    assert not np.allclose(matched.running_mean, out.running_mean)


@pytest.mark.parametrize("api", ["linen", "nnx"])
def test_matched_mode_uses_two_pass_variance_and_defaults_mode_the_fast_one(adapters, api):
    rng = np.random.default_rng(0)
    shape = (512, 3)
    draw = lambda: (1e4 + rng.normal(size=shape)).astype(np.float32)  # noqa: E731  (κ ≈ 1e4)
    inputs = LayerInputs(xs=(draw(),), dys=(rng.normal(size=shape).astype(np.float32),), x_eval=draw(),
                         gamma=np.ones(3), beta=np.zeros(3))
    # Flax's conventions (its row says variance "fast"), asked with a two-pass σ²_B: matched mode must honour it
    spec = convention("jax").spec().replace(variance="two-pass")
    assert convention("jax").spec().variance == "fast"
    matched, ref = run_case(adapters[api], inputs, spec)
    defaults, _ = run_case(adapters[api], inputs, spec, use_defaults=True)

    def var_error(out: LayerOutputs) -> float:
        return float(np.abs(out.running_var - ref.running_var).max() / ref.running_var.max())

    assert var_error(matched) < 1e-6  # measured 2.8e-8
    assert var_error(defaults) > 1e-2  # E[x²] − E[x]² in float32: measured 0.15


def test_layout_conversion_nhwc_equals_nchw_transposed(adapters):
    nchw = make_inputs(rank=4, axis=1, dtype="float64")
    to_last = lambda a: np.moveaxis(a, 1, -1)  # noqa: E731
    nhwc = LayerInputs(xs=tuple(map(to_last, nchw.xs)), dys=tuple(map(to_last, nchw.dys)),
                       x_eval=to_last(nchw.x_eval), gamma=nchw.gamma, beta=nchw.beta)
    for adapter in adapters.values():
        assert adapter.native_axis == -1
        a = adapter.run(nchw, spec=adapter.realize(SPEC.replace(axis=1), nchw.dtype))
        b = adapter.run(nhwc, spec=adapter.realize(SPEC.replace(axis=-1), nhwc.dtype))
        for name in ("y", "dx", "y_eval"):  # the layer saw the same NHWC arrays: identical bits
            assert getattr(a, name).shape == nchw.xs[0].shape
            np.testing.assert_array_equal(np.moveaxis(getattr(b, name), -1, 1), getattr(a, name))


@pytest.mark.parametrize("impl", IMPLS)
def test_compiles_once_per_shape_dtype_and_config(jax_modules, impl):
    bn, scratch, _ = jax_modules
    adapter = bn.ScratchBatchNorm() if impl == "scratch" else bn.BuiltinBatchNorm(api=impl)
    inputs = make_inputs(rank=4, axis=1, dtype="float32", steps=3)
    spec = adapter.realize(SPEC, inputs.dtype)
    adapter.run(inputs, spec=spec)
    assert adapter.steps.traces == {"train": 1, "eval": 1}
    adapter.run(make_inputs(rank=4, axis=1, dtype="float32", seed=1), spec=spec.replace(init_running_var=3.0))
    assert adapter.steps.traces == {"train": 1, "eval": 1}  # 6 training steps, 2 sessions, one compilation
    adapter.run(make_inputs(rank=2, axis=1, dtype="float32"), spec=spec)  # a new shape
    assert adapter.steps.traces == {"train": 2, "eval": 2}
    adapter.run(inputs, spec=spec.replace(eps=1e-4))  # a new configuration
    assert adapter.steps.traces == {"train": 3, "eval": 3}


def test_float64_enables_x64_only_inside_the_session(jax_modules, adapters):
    import jax

    from bnparity.frameworks.jax._x64 import dtype_scope

    _, _, convert = jax_modules
    assert not jax.config.x64_enabled
    out = adapters["linen"].run(make_inputs(rank=2, axis=1, dtype="float64"), spec=SPEC.replace(running_var="biased"))
    assert out.y.dtype == np.float64 and out.running_var.dtype == np.float64
    assert not jax.config.x64_enabled  # nothing leaked into the global configuration
    with pytest.raises(RuntimeError, match="float64 arrays need x64"):
        convert.to_tensor(np.ones(2), np.float64)
    with dtype_scope(np.dtype(np.float64)):
        assert convert.to_tensor(np.ones(2), np.float64).dtype == np.float64


def test_registry_loads_the_jax_adapters(jax_modules):
    bn, scratch, _ = jax_modules
    builtin, from_scratch = load_adapter("jax", "builtin"), load_adapter("jax", "scratch")
    assert isinstance(builtin, bn.BuiltinBatchNorm) and builtin.api == "linen"
    assert isinstance(from_scratch, bn.ScratchBatchNorm)
    assert {(a.framework, a.impl) for a in (builtin, from_scratch)} == {("jax", "builtin"), ("jax", "scratch")}
    assert convention("jax").framework == "jax"


def test_realize_fixes_the_running_variance_flax_always_stores(adapters):
    asked = BNSpec(running_var="unbiased")
    for api in ("linen", "nnx"):
        assert adapters[api].realize(asked, np.dtype(np.float32)) == asked.replace(running_var="biased")
    assert adapters["scratch"].realize(asked, np.dtype(np.float32)) == asked


@pytest.mark.parametrize("impl", IMPLS)
def test_unsupported_dtype(adapters, impl):
    with pytest.raises(Unsupported, match="jax: expected a float64, float32, float16 or bfloat16 dtype. "
                                          "Received: int32"):
        adapters[impl].realize(SPEC, np.dtype(np.int32))


def test_unknown_api_and_unrealized_spec_are_refused(jax_modules, adapters):
    bn, _, _ = jax_modules
    with pytest.raises(ValueError, match="api must be one of linen, nnx. Received: 'haiku'"):
        bn.BuiltinBatchNorm(api="haiku")
    with pytest.raises(Unsupported, match="always stores the biased running variance"):
        adapters["linen"].run(make_inputs(rank=2, axis=1, dtype="float32"), spec=SPEC)  # not realized
