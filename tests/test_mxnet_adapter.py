"""The MXNet adapters (gluon.nn.BatchNorm hybridized and imperative, scratch) against the float64 reference."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bnparity.frameworks.base import Unsupported
from bnparity.reference.normalization import run_reference
from bnparity.reference.spec import BNSpec
from bnparity.reference.steps import LayerInputs, LayerOutputs
from tests.conftest import require

# Allowed max |error| / max(1, max |reference|) in float64: a few ulps of every formula, far above the measured.
RTOL = 1e-12  # float64 only: the float32 and reduced-precision grids are the adapter contract's
IMPLS = ("builtin-hybridized", "builtin-imperative", "scratch")
SPEC = BNSpec(momentum=0.2, eps=1e-3, init_running_mean=0.25, init_running_var=1.5)
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def mxnet_adapters():
    """impl name -> a fresh adapter factory; skips the module's tests when mxnet is not installed."""
    require("mxnet")
    from bnparity.frameworks.mxnet import batchnorm as bn

    return {"builtin-hybridized": lambda: bn.BuiltinBatchNorm(hybridize=True),
            "builtin-imperative": lambda: bn.BuiltinBatchNorm(hybridize=False),
            "scratch": bn.ScratchBatchNorm}


def make_inputs(*, rank: int, axis: int, dtype, steps: int = 3, seed: int = 0) -> LayerInputs:
    """Seeded inputs: channels at `axis`, non-zero mean, non-trivial γ and β."""
    rng = np.random.default_rng(seed)
    channels = 8 if rank == 4 else 3  # 8 channels: the float32 4-D case also meets oneDNN's old C % 8 rule
    native = {2: (6, channels), 3: (4, channels, 5), 4: (4, channels, 3, 2)}[rank]
    shape = tuple(np.moveaxis(np.empty(native), 1, axis).shape)

    def draw(loc: float, scale: float) -> np.ndarray:
        return rng.normal(loc, scale, size=shape).astype(dtype)

    return LayerInputs(xs=tuple(draw(1.5, 2.0) for _ in range(steps)), dys=tuple(draw(0.0, 1.0) for _ in range(steps)),
                       x_eval=draw(1.0, 2.5), gamma=rng.uniform(0.5, 2.0, channels), beta=rng.normal(0, 1, channels))


def assert_parity(out: LayerOutputs, ref: LayerOutputs, *, rtol: float) -> None:
    """Every quantity within rtol × max(1, max |reference|); None exactly where the reference has None."""
    for name, expected in ref.as_dict().items():
        got = out.as_dict()[name]
        if expected is None:
            assert got is None, f"{name}: expected None (quantity does not exist), got an array"
            continue
        assert got is not None and got.shape == expected.shape, f"{name}: shape {None if got is None else got.shape}"
        scale = max(1.0, float(np.abs(expected).max()))
        err = float(np.abs(np.asarray(got, dtype=np.float64) - expected).max())
        assert err <= rtol * scale, f"{name}: max |error| {err:.3e} > allowed {rtol:.1e} x {scale:.3g}"


def run_case(adapter, inputs: LayerInputs, spec: BNSpec) -> tuple[LayerOutputs, LayerOutputs]:
    realized = adapter.realize(spec, inputs.dtype)
    return adapter.run(inputs, spec=realized), run_reference(realized, inputs)


@pytest.mark.parametrize("impl", IMPLS)
def test_nhwc_through_the_adapter_equals_nchw_transposed(mxnet_adapters, impl):
    nchw = make_inputs(rank=4, axis=1, dtype="float32", seed=7)

    def to_nhwc(a: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(a.transpose(0, 2, 3, 1))

    nhwc = LayerInputs(xs=tuple(map(to_nhwc, nchw.xs)), dys=tuple(map(to_nhwc, nchw.dys)),
                       x_eval=to_nhwc(nchw.x_eval), gamma=nchw.gamma, beta=nchw.beta)
    adapter = mxnet_adapters[impl]()
    out_nchw = adapter.run(nchw, spec=adapter.realize(SPEC.replace(axis=1), nchw.dtype))
    out_nhwc = adapter.run(nhwc, spec=adapter.realize(SPEC.replace(axis=-1), nhwc.dtype))
    for name in ("y", "dx", "y_eval"):
        np.testing.assert_array_equal(out_nhwc.as_dict()[name], to_nhwc(out_nchw.as_dict()[name]), err_msg=name)
    for name in ("dgamma", "dbeta", "running_mean", "running_var"):
        np.testing.assert_array_equal(out_nhwc.as_dict()[name], out_nchw.as_dict()[name], err_msg=name)


@pytest.mark.parametrize("spec", [SPEC.replace(momentum=0.7, momentum_weighs="old"),
                                  SPEC.replace(running_var="unbiased"),
                                  SPEC.replace(track_running_stats=False)],
                         ids=["momentum-weighs-old", "unbiased", "no-running-stats"])
def test_scratch_honours_every_spec_field(mxnet_adapters, spec):
    adapter = mxnet_adapters["scratch"]()
    assert adapter.realize(spec, np.dtype("float64")) == spec
    out, ref = run_case(adapter, make_inputs(rank=3, axis=1, dtype="float64", seed=3), spec)
    assert_parity(out, ref, rtol=RTOL)


@pytest.mark.parametrize("weighs", ["new", "old"])
def test_builtin_realize_fixes_what_mxnet_stores(mxnet_adapters, weighs):
    spec = SPEC.replace(momentum=0.2 if weighs == "new" else 0.8, momentum_weighs=weighs, running_var="unbiased")
    realized = mxnet_adapters["builtin-hybridized"]().realize(spec, np.dtype("float64"))
    # The running variance is always biased, and MXNet parses momentum (the old value's weight) as a float32.
    assert realized.running_var == "biased"
    assert realized.new_weight == 1.0 - float(np.float32(0.8))
    assert realized.new_weight != spec.new_weight
    assert realized.replace(momentum=spec.momentum, running_var="unbiased") == spec


def test_hand_worked_case_with_gluon_defaults(mxnet_adapters):
    # One channel, x = (1, 3): μ = 2, σ² = 1, x̂ = (−s, s) with s = 1/√(1 + ε), ε = 1e-5 (gluon's default).
    inputs = LayerInputs(xs=(np.array([[1.0], [3.0]]),), dys=(np.array([[1.0], [0.0]]),),
                         x_eval=np.array([[0.2], [1.2]]), gamma=np.array([1.0]), beta=np.array([0.0]))
    adapter = mxnet_adapters["builtin-hybridized"]()
    out = adapter.run(inputs, spec=BNSpec(axis=1), use_defaults=True)
    eps = 1e-5
    s = 1 / np.sqrt(1 + eps)
    np.testing.assert_allclose(out.y.ravel(), [-s, s], rtol=1e-15)
    # dx = s (dy − mean dy − x̂ mean(dy x̂)) = s (0.5 − 0.5 s², −0.5 + 0.5 s²)
    np.testing.assert_allclose(out.dx.ravel(), [0.5 * s * (1 - s * s), -0.5 * s * (1 - s * s)], rtol=1e-9)
    np.testing.assert_allclose(out.dgamma, [-s], rtol=1e-15)
    np.testing.assert_allclose(out.dbeta, [1.0], rtol=1e-15)
    # momentum 0.9 weighs the old value: 0.9·0 + 0.1·2 and 0.9·1 + 0.1·1 (biased; unbiased would give 1.1),
    # to float32 precision of the momentum.
    np.testing.assert_allclose(out.running_mean, [0.2], rtol=1e-6)
    np.testing.assert_allclose(out.running_var, [1.0], rtol=1e-6)
    np.testing.assert_allclose(out.y_eval.ravel(), [0.0, 1.0 / np.sqrt(1 + eps)], atol=1e-6)


def test_builtin_without_running_stats_is_unsupported(mxnet_adapters):
    adapter = mxnet_adapters["builtin-hybridized"]()
    spec = SPEC.replace(track_running_stats=False)
    with pytest.raises(Unsupported, match=r"^mxnet: gluon.nn.BatchNorm has no track_running_stats=False"):
        adapter.realize(spec, np.dtype("float32"))
    with pytest.raises(Unsupported, match=r"^mxnet: .*track_running_stats=False"):
        adapter.build(spec, shape=(2, 3), dtype=np.dtype("float32"), gamma=np.ones(3), beta=np.zeros(3),
                      use_defaults=False)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("dtype", ["int32", "complex64"])
def test_non_float_dtype_is_unsupported(mxnet_adapters, impl, dtype):
    with pytest.raises(Unsupported, match=rf"^mxnet: expected a float64, .* dtype. Received: {dtype}$"):
        mxnet_adapters[impl]().realize(SPEC, np.dtype(dtype))


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_reduced_precision_keeps_parameters_in_float32(mxnet_adapters, dtype):
    np_dtype = np.dtype(pytest.importorskip("ml_dtypes").bfloat16 if dtype == "bfloat16" else dtype)
    session = mxnet_adapters["builtin-imperative"]().build(SPEC, shape=(2, 8, 3, 3), dtype=np_dtype,
                                                           gamma=np.ones(8), beta=np.zeros(8), use_defaults=False)
    for param in (session.block.gamma, session.block.beta, session.block.running_mean, session.block.running_var):
        assert np.dtype(param.data().dtype) == np.float32, param.name
    step = session.train_step(np.zeros((2, 8, 2, 2)), np.ones((2, 8, 2, 2)))
    assert step.y.dtype == (np.float16 if dtype == "float16" else np.float32)  # bfloat16 is returned as float32


@pytest.mark.parametrize(("impl", "hybridized"), [("builtin-hybridized", True), ("builtin-imperative", False)])
def test_hybridize_flag_reaches_the_block(mxnet_adapters, impl, hybridized):
    session = mxnet_adapters[impl]().build(SPEC, shape=(2, 3), dtype=np.dtype("float64"), gamma=np.ones(3),
                                           beta=np.zeros(3), use_defaults=False)
    assert session.block._active is hybridized


def test_registry_loads_the_hybridized_builtin_and_the_scratch(mxnet_adapters):
    from bnparity.frameworks.mxnet.batchnorm import BuiltinBatchNorm, ScratchBatchNorm
    from bnparity.frameworks.registry import load_adapter

    builtin = load_adapter("mxnet", "builtin")
    assert isinstance(builtin, BuiltinBatchNorm) and builtin.hybridize is True
    assert (builtin.framework, builtin.impl, builtin.native_axis) == ("mxnet", "builtin", 1)
    assert isinstance(load_adapter("mxnet", "scratch"), ScratchBatchNorm)
    inputs = make_inputs(rank=2, axis=1, dtype="float64", seed=11)
    out, ref = run_case(builtin, inputs, SPEC)
    assert_parity(out, ref, rtol=RTOL)


def test_numpy_shim_lives_only_in_the_mx_module():
    shim = "np.bool" + " = bool"
    folders = ("reference", "frameworks", "suites", "reports", "benchmarks")
    holders = sorted(str(p.relative_to(REPO)) for folder in folders for p in (REPO / folder).rglob("*.py")
                     if shim in p.read_text(encoding="utf-8"))
    assert holders == ["frameworks/mxnet/_mx.py"]


def test_package_and_convention_import_without_mxnet():
    code = ("import sys, bnparity.frameworks.mxnet, bnparity.frameworks.mxnet.convention; "
            "sys.exit('mxnet' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code], cwd=REPO, check=False).returncode == 0
