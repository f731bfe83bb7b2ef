"""MXNet's LayerNorm, GroupNorm, InstanceNorm and RMSNorm: the adapters against the float64 reference, every path
they refuse, and the proof of every fact of MXNet's LAYER_CONVENTIONS rows by running gluon.nn's own layers."""

from __future__ import annotations

import inspect
from types import SimpleNamespace

import numpy as np
import pytest
from conftest import framework_installed

from bnparity.frameworks.base import Unsupported
from bnparity.frameworks.conventions import convention
from bnparity.reference import groupnorm as ref_gn
from bnparity.reference import instancenorm as ref_in
from bnparity.reference import layernorm as ref_ln
from bnparity.reference.normalization import run_reference
from bnparity.reference.spec import GNSpec, INSpec, LayerSpec, LNSpec, RMSSpec
from bnparity.reference.steps import LayerInputs, LayerOutputs

# Allowed max |error| / max |reference|, per dtype (float64: a few ulps of every formula, far above the measured).
RTOL = {"float64": 1e-12, "float32": 1e-5, "float16": 1e-2, "bfloat16": 5e-2}
SUFFIX = {"layernorm": "LayerNorm", "groupnorm": "GroupNorm", "instancenorm": "InstanceNorm", "rmsnorm": "RMSNorm"}
BUILTINS = {"builtin-hybridized": {}, "builtin-imperative": {"hybridize": False}}
THIS = "tests/test_mxnet_norms.py"


@pytest.fixture(scope="module")
def mx():
    """mxnet (through the project's entry point) and the adapter modules; skips when mxnet is not installed."""
    if not framework_installed("mxnet"):
        pytest.skip("mxnet is not installed (pip install 'bnparity[mxnet]')")
    from bnparity.frameworks.mxnet import _mx, groupnorm, instancenorm, layernorm, rmsnorm

    return SimpleNamespace(mx=_mx.mx, nd=_mx.nd, autograd=_mx.autograd, gluon=_mx.gluon, layernorm=layernorm,
                           groupnorm=groupnorm, instancenorm=instancenorm, rmsnorm=rmsnorm)


def make_adapter(mx, norm: str, impl: str):
    module = getattr(mx, norm)
    if impl == "scratch":
        return getattr(module, f"Scratch{SUFFIX[norm]}")()
    return getattr(module, f"Builtin{SUFFIX[norm]}")(**BUILTINS[impl])


def np_dtype(name: str) -> np.dtype:
    return np.dtype(pytest.importorskip("ml_dtypes").bfloat16) if name == "bfloat16" else np.dtype(name)


def make_inputs(spec: LayerSpec, shape: tuple[int, ...], dtype: np.dtype, *, seed: int = 0,
                steps: int = 2) -> LayerInputs:
    """Seeded inputs with a non-zero mean; γ (of the spec's shape) and β non-trivial and representable in dtype."""
    rng = np.random.default_rng(seed)
    params = spec.param_shape(shape)

    def draw(loc: float, scale: float) -> np.ndarray:
        return rng.normal(loc, scale, size=shape).astype(dtype)

    return LayerInputs(xs=tuple(draw(1.5, 2.0) for _ in range(steps)), dys=tuple(draw(0.0, 1.0) for _ in range(steps)),
                       x_eval=draw(1.0, 2.5), gamma=rng.uniform(0.5, 2.0, params).astype(dtype).astype(np.float64),
                       beta=rng.normal(0.0, 1.0, params).astype(dtype).astype(np.float64))


def assert_parity(out: LayerOutputs, ref: LayerOutputs, *, rtol: float) -> None:
    """Every quantity within rtol × max |reference|; None exactly where the reference has None."""
    for name, expected in ref.as_dict().items():
        got = out.as_dict()[name]
        if expected is None:
            assert got is None, f"{name}: expected None (the quantity does not exist), got an array"
            continue
        assert got is not None and got.shape == expected.shape, f"{name}: shape {None if got is None else got.shape}"
        scale = float(np.abs(expected).max())
        err = float(np.abs(np.asarray(got, dtype=np.float64) - expected).max())
        assert err <= rtol * scale, f"{name}: max |error| {err:.3e} > allowed {rtol:.0e} x {scale:.3g}"


def run_case(mx, norm: str, impl: str, spec: LayerSpec, shape: tuple[int, ...], dtype: str, *,
             seed: int = 0) -> None:
    adapter = make_adapter(mx, norm, impl)
    inputs = make_inputs(spec, shape, np_dtype(dtype), seed=seed)
    realized = adapter.realize(spec, inputs.dtype)
    assert_parity(adapter.run(inputs, spec=realized), run_reference(realized, inputs), rtol=RTOL[dtype])


# ---------------------------------------------------------------------------------------------------------------
# The adapters against the reference. Cases every implementation runs, and cases only the scratch one can.

_LN, _GN, _IN, _RMS = LNSpec(eps=1e-3), GNSpec(eps=1e-3, groups=2), INSpec(eps=1e-3), RMSSpec(eps=1e-3)
SHARED = {
    "layernorm": {
        "nc": ((6, 5), _LN), "nlc": ((4, 5, 6), _LN), "nhwc": ((2, 3, 2, 4), _LN), "5d": ((2, 2, 2, 3, 4), _LN),
        "params-feature": ((4, 5, 6), _LN.replace(params="feature")), "bias-off": ((4, 5, 6), _LN.replace(bias=False)),
        "affine-off": ((4, 5, 6), _LN.replace(affine=False)),
        "affine-off-bias-off": ((4, 5, 6), _LN.replace(affine=False, bias=False)),
    },
    "groupnorm": {  # MXNet's γ and β are per group
        "g1": ((4, 8, 3, 2), _GN.replace(groups=1, params="group")),
        "g2": ((4, 8, 3, 2), _GN.replace(params="group")),
        "gC": ((4, 8, 3, 2), _GN.replace(groups=8, params="group")),
        "ncl": ((4, 4, 5), _GN.replace(params="group")),
        "nhwc": ((4, 3, 2, 8), _GN.replace(axis=-1, params="group")),
        "ncdhw": ((2, 4, 2, 2, 2), _GN.replace(params="group")),
        "affine-off": ((4, 8, 3, 2), _GN.replace(affine=False)),
    },
    "instancenorm": {
        "ncl": ((4, 3, 5), _IN), "nchw": ((4, 3, 3, 2), _IN), "nhwc": ((4, 3, 2, 3), _IN.replace(axis=-1)),
        "ncdhw": ((2, 3, 2, 2, 2), _IN), "affine": ((4, 3, 5), _IN.replace(affine=True)),
        "affine-nhwc": ((2, 3, 2, 4), _IN.replace(affine=True, axis=-1)),
    },
    "rmsnorm": {},
}
SCRATCH_ONLY = {
    "layernorm": {
        "dims2": ((4, 5, 6), _LN.replace(normalized_dims=2)),
        "dims2-feature": ((4, 5, 6), _LN.replace(normalized_dims=2, params="feature")),
        "dims3": ((2, 3, 4, 5), _LN.replace(normalized_dims=3)),
        "dims2-bias-off": ((4, 5, 6), _LN.replace(normalized_dims=2, bias=False)),
        "fast": ((4, 5, 6), _LN.replace(variance="fast")),
    },
    "groupnorm": {
        "channel-g1": ((4, 8, 3, 2), _GN.replace(groups=1)), "channel-g2": ((4, 8, 3, 2), _GN),
        "channel-gC": ((4, 8, 3, 2), _GN.replace(groups=8)), "nc": ((6, 4), _GN),
        "nc-group": ((6, 4), _GN.replace(params="group")), "channel-nhwc": ((4, 3, 2, 8), _GN.replace(axis=-1)),
        "fast": ((4, 8, 3, 2), _GN.replace(variance="fast")),
    },
    "instancenorm": {
        "running-stats": ((4, 3, 5), _IN.replace(track_running_stats=True, momentum=0.2, init_running_mean=0.25,
                                                 init_running_var=1.5)),
        "running-stats-old": ((4, 3, 5), _IN.replace(track_running_stats=True, momentum=0.7, momentum_weighs="old")),
        "biased-running-var": ((4, 3, 2, 2), _IN.replace(track_running_stats=True, running_var="biased",
                                                         affine=True)),
        "running-stats-nhwc": ((4, 3, 2, 3), _IN.replace(track_running_stats=True, axis=-1)),
        "fast": ((4, 3, 5), _IN.replace(variance="fast", affine=True)),
    },
    "rmsnorm": {
        "nc": ((6, 5), _RMS), "nlc": ((4, 5, 6), _RMS), "dims2": ((4, 5, 6), _RMS.replace(normalized_dims=2)),
        "dims2-feature": ((4, 5, 6), _RMS.replace(normalized_dims=2, params="feature")),
        "dims3": ((2, 3, 4, 5), _RMS.replace(normalized_dims=3)), "affine-off": ((4, 5, 6), _RMS.replace(affine=False)),
    },
}
# The builtin InstanceNorm has a float32 kernel only (its other dtypes are tested as Unsupported below).
BUILTIN_DTYPES = {"layernorm": ("float64", "float32"), "groupnorm": ("float64", "float32"),
                  "instancenorm": ("float32",), "rmsnorm": ()}
PARITY = ([(norm, impl, case, dtype) for norm, cases in SHARED.items() for case in cases
           for impl in BUILTINS for dtype in BUILTIN_DTYPES[norm]]
          + [(norm, "scratch", case, dtype) for norm in SHARED for case in (*SHARED[norm], *SCRATCH_ONLY[norm])
             for dtype in ("float64", "float32")])


@pytest.mark.parametrize(("norm", "impl", "case", "dtype"), PARITY, ids=["-".join(p) for p in PARITY])
def test_matches_the_reference(mx, norm, impl, case, dtype):
    shape, spec = {**SHARED[norm], **SCRATCH_ONLY[norm]}[case]
    run_case(mx, norm, impl, spec, shape, dtype, seed=len(case))


REDUCED = ([("layernorm", impl, "float16") for impl in BUILTINS] + [("groupnorm", impl, "float16") for impl in BUILTINS]
           + [(norm, "scratch", dtype) for norm in SHARED for dtype in ("float16", "bfloat16")])
REPRESENTATIVE = {"layernorm": "nlc", "groupnorm": "g2", "instancenorm": "affine", "rmsnorm": "nlc"}


@pytest.mark.parametrize(("norm", "impl", "dtype"), REDUCED, ids=["-".join(p) for p in REDUCED])
def test_reduced_precision(mx, norm, impl, dtype):
    shape, spec = {**SHARED[norm], **SCRATCH_ONLY[norm]}[REPRESENTATIVE[norm]]
    run_case(mx, norm, impl, spec, shape, dtype, seed=3)


@pytest.mark.parametrize("norm", ["layernorm", "groupnorm", "instancenorm"])
def test_builtin_realize_fixes_what_mxnet_computes(mx, norm):
    shape, spec = SHARED[norm][REPRESENTATIVE[norm]]
    asked = spec.replace(variance="fast", eps=1e-3)
    realized = make_adapter(mx, norm, "builtin-hybridized").realize(asked, np.dtype("float32"))
    # σ² is always two-pass and ε is stored as a float32 (neither is configurable).
    assert realized == asked.replace(variance="two-pass", eps=float(np.float32(1e-3)))
    assert realized.eps != asked.eps
    assert make_adapter(mx, norm, "builtin-hybridized").realize(realized, np.dtype("float32")) == realized


@pytest.mark.parametrize("norm", list(SHARED))
def test_scratch_realizes_every_spec_unchanged(mx, norm):
    for _, spec in {**SHARED[norm], **SCRATCH_ONLY[norm]}.values():
        assert make_adapter(mx, norm, "scratch").realize(spec, np.dtype("float64")) == spec


def test_the_eps_rounding_is_needed_in_float64(mx):
    """Why realize rounds ε: an adapter judged against the asked ε = 1e-3 fails float64 parity."""
    shape, spec = SHARED["layernorm"]["nlc"]
    adapter = make_adapter(mx, "layernorm", "builtin-imperative")
    inputs = make_inputs(spec, shape, np.dtype("float64"))
    out = adapter.run(inputs, spec=adapter.realize(spec, inputs.dtype))
    with pytest.raises(AssertionError, match="max |error|"):
        assert_parity(out, run_reference(spec, inputs), rtol=RTOL["float64"])


@pytest.mark.parametrize("impl", list(BUILTINS))
def test_hybridize_flag_reaches_the_block(mx, impl):
    for norm, shape in (("layernorm", (2, 3)), ("groupnorm", (2, 4, 3)), ("instancenorm", (2, 3, 4))):
        spec = SHARED[norm][REPRESENTATIVE[norm]][1]
        session = make_adapter(mx, norm, impl).build(spec, shape=shape, dtype=np.dtype("float32"),
                                                     gamma=np.ones(spec.param_shape(shape)),
                                                     beta=np.zeros(spec.param_shape(shape)), use_defaults=False)
        assert session.block._active is (impl == "builtin-hybridized"), norm


# ---------------------------------------------------------------------------------------------------------------
# What the builtin layers refuse, each an Unsupported naming the framework and the reason.

@pytest.mark.parametrize("impl", list(BUILTINS))
def test_builtin_layernorm_normalizes_one_axis_only(mx, impl):
    adapter = make_adapter(mx, "layernorm", impl)
    for spec in (_LN.replace(normalized_dims=2), _LN.replace(normalized_dims=2, params="feature")):
        with pytest.raises(Unsupported, match=r"^mxnet: gluon.nn.LayerNorm normalizes over one axis"):
            adapter.realize(spec, np.dtype("float32"))
        with pytest.raises(Unsupported, match=r"^mxnet: gluon.nn.LayerNorm normalizes over one axis"):
            adapter.build(spec, shape=(4, 5, 6), dtype=np.dtype("float32"), gamma=np.ones((5, 6)),
                          beta=np.zeros((5, 6)), use_defaults=False)


@pytest.mark.parametrize("impl", list(BUILTINS))
def test_builtin_groupnorm_has_no_per_channel_parameters(mx, impl):
    adapter = make_adapter(mx, "groupnorm", impl)
    with pytest.raises(Unsupported, match=r"^mxnet: gluon.nn.GroupNorm's γ and β are one per group"):
        adapter.realize(_GN, np.dtype("float32"))
    # Without γ and β their shape does not matter: that spec runs (test_matches_the_reference, "affine-off").
    assert adapter.realize(_GN.replace(affine=False), np.dtype("float32")).params == "channel"


@pytest.mark.parametrize("impl", list(BUILTINS))
def test_builtin_groupnorm_and_instancenorm_need_rank_3(mx, impl):
    for norm, spec in (("groupnorm", _GN.replace(params="group")), ("instancenorm", _IN)):
        adapter = make_adapter(mx, norm, impl)
        with pytest.raises(Unsupported, match=r"^mxnet: gluon.nn.\w+ needs .*rank 3 or more.* a 2-D input"):
            adapter.build(spec, shape=(6, 4), dtype=np.dtype("float32"), gamma=np.ones(spec.param_shape((6, 4))),
                          beta=np.zeros(spec.param_shape((6, 4))), use_defaults=False)


@pytest.mark.parametrize("impl", list(BUILTINS))
def test_builtin_instancenorm_keeps_no_running_statistics(mx, impl):
    adapter = make_adapter(mx, "instancenorm", impl)
    for _, spec in SCRATCH_ONLY["instancenorm"].values():
        if spec.track_running_stats:
            with pytest.raises(Unsupported, match=r"^mxnet: gluon.nn.InstanceNorm keeps no running statistics"):
                adapter.realize(spec, np.dtype("float32"))


# (normalization, dtype) -> whether the builtin layer has a CPU kernel for it (proved by running it below).
KERNELS = {("layernorm", "float64"): True, ("layernorm", "float32"): True, ("layernorm", "float16"): True,
           ("layernorm", "bfloat16"): False, ("groupnorm", "float64"): True, ("groupnorm", "float32"): True,
           ("groupnorm", "float16"): True, ("groupnorm", "bfloat16"): False, ("instancenorm", "float64"): False,
           ("instancenorm", "float32"): True, ("instancenorm", "float16"): False,
           ("instancenorm", "bfloat16"): False}


@pytest.mark.parametrize(("norm", "dtype"), list(KERNELS), ids=[f"{n}-{d}" for n, d in KERNELS])
def test_builtin_dtypes_are_the_kernels_mxnet_has(mx, norm, dtype):
    """realize accepts a dtype exactly when gluon's layer runs a training step in it."""
    from bnparity.frameworks.mxnet.convert import to_tensor

    layer = {"layernorm": mx.gluon.nn.LayerNorm, "groupnorm": mx.gluon.nn.GroupNorm,
             "instancenorm": mx.gluon.nn.InstanceNorm}[norm]
    block = layer(**({"in_channels": 4} if norm != "groupnorm" else {}))
    block.initialize()
    x = to_tensor(np.random.default_rng(0).normal(size=(2, 4, 4)), np_dtype(dtype))
    block.cast(x.dtype)
    error = mxnet_error(mx, block, x)
    if error is None:  # and a training step too
        x.attach_grad()
        with mx.autograd.record():
            y = block(x)
        y.backward(mx.nd.ones_like(y))
        assert np.all(np.isfinite(x.grad.astype("float32").asnumpy()))
    else:
        assert "Unknown type enum 12" in error or "Unsupported data type" in error, error
    runs = error is None
    assert runs is KERNELS[norm, dtype]
    adapter = make_adapter(mx, norm, "builtin-imperative")
    spec = SHARED[norm][REPRESENTATIVE[norm]][1]
    if runs:
        adapter.realize(spec, np_dtype(dtype))
    else:
        with pytest.raises(Unsupported, match=rf"^mxnet: gluon.nn.\w+ has no {dtype} kernel on CPU"):
            adapter.realize(spec, np_dtype(dtype))


ADAPTERS = [(norm, impl) for norm in SHARED for impl in (*BUILTINS, "scratch")
            if BUILTIN_DTYPES[norm] or impl == "scratch"]  # no builtin RMSNorm


@pytest.mark.parametrize(("norm", "impl"), ADAPTERS, ids=["-".join(a) for a in ADAPTERS])
def test_non_float_dtype_is_unsupported(mx, norm, impl):
    spec = {**SHARED[norm], **SCRATCH_ONLY[norm]}[REPRESENTATIVE[norm]][1]
    with pytest.raises(Unsupported, match=r"^mxnet: expected a float64, .* dtype. Received: int32$"):
        make_adapter(mx, norm, impl).realize(spec, np.dtype("int32"))


def test_there_is_no_builtin_rmsnorm(mx):
    from bnparity.frameworks.mxnet.descriptor import DESCRIPTOR

    assert not any("rms" in name.lower() for name in dir(mx.gluon.nn))
    assert not hasattr(mx.rmsnorm, "BuiltinRMSNorm") and DESCRIPTOR.lack("rmsnorm", "builtin") is not None
    with pytest.raises(LookupError):
        convention("mxnet", "rmsnorm")


# ---------------------------------------------------------------------------------------------------------------
# The conventions rows, proved by running gluon.nn's layers.

def rows() -> dict[str, object]:
    from bnparity.frameworks.mxnet.convention import LAYER_CONVENTIONS

    return {row.normalization: row for row in LAYER_CONVENTIONS}


def test_rows_are_registered_cited_and_proved_by_tests_of_this_file():
    assert set(rows()) == {"layernorm", "groupnorm", "instancenorm"}
    for norm, row in rows().items():
        assert convention("mxnet", norm) is row and row.framework == "mxnet" and row.eps_rule == "fixed"
        assert row.constructor.startswith(row.layer.split(" ")[0])
        for key in (*row.defaults, *row.facts):
            assert row.citations.get(key), f"{norm}: {key} has no citation"
            assert row.proofs.get(key), f"{norm}: {key} has no proof"
        for key in row.facts:
            assert key in row.citations and key in row.proofs
        for proofs in row.proofs.values():
            for proof in proofs:
                path, name = proof.split("::")
                assert path == THIS and callable(globals().get(name)), f"{norm}: no test {proof}"
        row.spec(dtype=np.dtype("float32"))  # the defaults make a valid spec


def block_of(mx, norm: str, dtype: str = "float64", **options):
    layer = {"layernorm": mx.gluon.nn.LayerNorm, "groupnorm": mx.gluon.nn.GroupNorm,
             "instancenorm": mx.gluon.nn.InstanceNorm}[norm]
    block = layer(**options)
    block.initialize(ctx=mx.mx.cpu())
    block.cast(dtype)
    return block


def forward(mx, block, x: np.ndarray, *, train: bool = True, dy: np.ndarray | None = None) -> np.ndarray:
    """The block's output on x (in x's dtype), in training mode with a backward of dy (ones) or in eval mode."""
    xt = mx.nd.array(x, dtype=x.dtype)
    if not train:
        return block(xt).asnumpy().astype(np.float64)
    xt.attach_grad()
    with mx.autograd.record():
        y = block(xt)
    y.backward(mx.nd.ones_like(y) if dy is None else mx.nd.array(dy, dtype=x.dtype))
    return y.asnumpy().astype(np.float64)


def mxnet_error(mx, block, x) -> str | None:
    """The MXNetError an eval-mode forward of x (NumPy or NDArray) raises, synchronously or from MXNet's
    asynchronous engine, or None.

    No backward is queued behind a failing forward, and the engine is drained, so that no error is left to
    surface in a later test.
    """
    xt = x if isinstance(x, mx.nd.NDArray) else mx.nd.array(x, dtype=x.dtype)
    try:
        block(xt).wait_to_read()
        mx.nd.waitall()
    except mx.mx.base.MXNetError as e:
        mx.nd.waitall()
        return str(e)
    return None


def reference_y(norm: str, x: np.ndarray, spec: LayerSpec, gamma=None, beta=None) -> np.ndarray:
    """The reference forward of `spec` on x with γ = 1, β = 0 unless given."""
    shape = spec.param_shape(x.shape)
    gamma = np.ones(shape) if gamma is None else np.asarray(gamma, dtype=np.float64)
    beta = np.zeros(shape) if beta is None else np.asarray(beta, dtype=np.float64)
    if norm == "layernorm":
        return ref_ln.forward(x, gamma, beta, spec)[0]
    if norm == "groupnorm":
        return ref_gn.forward(x, gamma, beta, spec)[0]
    return ref_in.forward_train(x, gamma, beta, spec)[0]


REF_SPECS = {"layernorm": LNSpec(), "groupnorm": GNSpec(params="group"), "instancenorm": INSpec()}
SHAPES = {"layernorm": (4, 8), "groupnorm": (4, 2, 4), "instancenorm": (4, 2, 8)}


@pytest.mark.parametrize("norm", ["layernorm", "groupnorm"])
def test_default_eps_is_1e_5_stored_as_float32(mx, norm):
    # σ² ≈ 1e-6 per sample makes ε visible: y = (x − μ)/√(σ² + ε). In float64, only float32(1e-5) reproduces y.
    x = np.random.default_rng(0).normal(0.0, 1e-3, SHAPES[norm])
    y = forward(mx, block_of(mx, norm), x)
    row = rows()[norm]
    spec = REF_SPECS[norm]
    stored = float(np.float32(row.defaults["eps"]))
    assert row.defaults["eps"] == 1e-5
    np.testing.assert_allclose(y, reference_y(norm, x, spec.replace(eps=stored)), rtol=0, atol=1e-14)
    assert np.abs(y - reference_y(norm, x, spec.replace(eps=1e-5))).max() > 1e-10  # not the float64 1e-5
    assert np.abs(y - reference_y(norm, x, spec.replace(eps=1e-6))).max() > 1e-2  # not Flax's RMSNorm 1e-6


def test_instancenorm_default_eps_is_1e_5_not_the_operators_1e_3(mx):
    # float32 only; σ² ≈ 1e-4 per sample and channel: ε = 1e-5, 1e-6 and 1e-3 give visibly different outputs.
    x = np.random.default_rng(1).normal(0.0, 1e-2, SHAPES["instancenorm"]).astype(np.float32)
    y = forward(mx, block_of(mx, "instancenorm", "float32"), x)
    row = rows()["instancenorm"]
    assert row.defaults["eps"] == 1e-5
    spec = REF_SPECS["instancenorm"]
    np.testing.assert_allclose(y, reference_y("instancenorm", x, spec.replace(eps=1e-5)), atol=1e-4)
    for other in (1e-6, 1e-3):
        assert np.abs(y - reference_y("instancenorm", x, spec.replace(eps=other))).max() > 1e-2
    # The raw operator's own default is 1e-3: the same input through nd.InstanceNorm without eps.
    y_op = mx.nd.InstanceNorm(mx.nd.array(x), mx.nd.ones(2), mx.nd.zeros(2)).asnumpy()
    np.testing.assert_allclose(y_op, reference_y("instancenorm", x, spec.replace(eps=1e-3)), atol=1e-4)


def test_instancenorm_adds_eps_under_the_square_root(mx):
    # The docstrings say (x − μ)/(√Var + ε); with σ ≈ 0.1 and ε = 1e-2 that would give |y| ≈ 0.9·|x̂|, the
    # operator gives (x − μ)/√(σ² + ε) ≈ 0.7·|x̂|.
    x = np.random.default_rng(2).normal(0.0, 0.1, SHAPES["instancenorm"]).astype(np.float32)
    y = forward(mx, block_of(mx, "instancenorm", "float32", epsilon=1e-2), x)
    x64 = x.astype(np.float64)
    mu, var = x64.mean(axis=2, keepdims=True), x64.var(axis=2, keepdims=True)
    np.testing.assert_allclose(y, (x64 - mu) / np.sqrt(var + 1e-2), atol=1e-5)
    assert np.abs(y - (x64 - mu) / (np.sqrt(var) + 1e-2)).max() > 0.1
    assert "sqrt" in rows()["instancenorm"].facts["eps"]


@pytest.mark.parametrize("norm", ["layernorm", "groupnorm", "instancenorm"])
def test_variance_is_two_pass(mx, norm):
    # x = 1e4 + N(0, 1) in float32: E[x²] − E[x]² loses every digit (x² ≈ 1e8, float32 spacing 8), two passes
    # keep σ² ≈ 1.
    shape = {"layernorm": (4, 1024), "groupnorm": (4, 2, 512), "instancenorm": (4, 2, 512)}[norm]
    axes = {"layernorm": (1,), "groupnorm": (1, 2), "instancenorm": (2,)}[norm]
    x = (1e4 + np.random.default_rng(3).normal(size=shape)).astype(np.float32)
    y = forward(mx, block_of(mx, norm, "float32"), x)
    mean = x.mean(axis=axes, keepdims=True, dtype=np.float32)
    fast = (x * x).mean(axis=axes, dtype=np.float32) - (mean * mean).squeeze()
    two_pass = x.astype(np.float64).var(axis=axes)
    assert np.all(np.abs(fast - two_pass) > 0.5)  # the input does tell the two algorithms apart
    assert rows()[norm].defaults["variance"] == "two-pass"
    np.testing.assert_allclose(y, reference_y(norm, x, REF_SPECS[norm]), atol=1e-2)  # fast: off by O(1) or NaN


def test_layernorm_normalizes_the_last_axis_only(mx):
    x = np.random.default_rng(4).normal(1.0, 2.0, (4, 5, 6))
    block = block_of(mx, "layernorm")
    y = forward(mx, block, x)
    assert block.gamma.shape == block.beta.shape == (6,)  # one per feature of the normalized axis
    row = rows()["layernorm"]
    assert (row.defaults["axis"], row.defaults["normalized_dims"]) == (-1, 1)
    np.testing.assert_allclose(y, reference_y("layernorm", x, LNSpec()), rtol=1e-12, atol=1e-12)
    assert np.abs(y - reference_y("layernorm", x, LNSpec(normalized_dims=2))).max() > 0.1
    with pytest.raises(Exception, match="Invalid Parameter format for axis expect int"):  # no several axes
        forward(mx, block_of(mx, "layernorm", axis=(1, 2)), x)


@pytest.mark.parametrize("norm", ["layernorm", "groupnorm", "instancenorm"])
def test_center_and_scale_false_freeze_but_still_apply_beta_and_gamma(mx, norm):
    x = np.random.default_rng(5).normal(1.0, 2.0, (2, 4, 3))
    dtype = "float32" if norm == "instancenorm" else "float64"
    x = x.astype(dtype)
    channels = {"in_channels": 4 if norm == "instancenorm" else 3} if norm != "groupnorm" else {}
    block = block_of(mx, norm, dtype, center=False, scale=False, **channels)
    assert (block.gamma.grad_req, block.beta.grad_req) == ("null", "null")  # frozen
    block.gamma.set_data(2 * mx.nd.ones(block.gamma.shape, dtype=dtype))
    block.beta.set_data(mx.nd.ones(block.beta.shape, dtype=dtype))
    plain = forward(mx, block_of(mx, norm, dtype, **channels), x)
    np.testing.assert_allclose(forward(mx, block, x), 2 * plain + 1, rtol=1e-6, atol=1e-6)  # γ x̂ + β all the same
    assert "still" in rows()[norm].facts["affine"]


def test_instancenorm_defaults_learn_beta_but_not_gamma(mx):
    block = block_of(mx, "instancenorm", "float32", in_channels=2)
    assert (block.gamma.grad_req, block.beta.grad_req) == ("null", "write")  # center=True, scale=False
    x = np.random.default_rng(6).normal(size=(3, 2, 5)).astype(np.float32)
    dy = np.random.default_rng(7).normal(size=x.shape).astype(np.float32)
    forward(mx, block, x, dy=dy)
    np.testing.assert_allclose(block.beta.grad().asnumpy(), dy.sum(axis=(0, 2)), rtol=1e-5)
    assert "affine" not in rows()["instancenorm"].defaults  # neither PyTorch's affine=False nor True


def test_instancenorm_keeps_no_running_statistics(mx):
    block = block_of(mx, "instancenorm", "float32", in_channels=2)
    assert sorted(p.split("_")[-1] for p in block.collect_params()) == ["beta", "gamma"]  # no aux states
    rng = np.random.default_rng(8)
    for _ in range(2):
        forward(mx, block, rng.normal(3.0, 2.0, (3, 2, 5)).astype(np.float32))
    x_eval = rng.normal(-1.0, 0.5, (3, 2, 5)).astype(np.float32)
    y_eval = forward(mx, block, x_eval, train=False)
    np.testing.assert_array_equal(y_eval, forward(mx, block, x_eval))  # eval = training: its own statistics
    np.testing.assert_allclose(y_eval, reference_y("instancenorm", x_eval, INSpec()), atol=1e-5)
    assert rows()["instancenorm"].defaults["track_running_stats"] is False


@pytest.mark.parametrize("norm", ["layernorm", "groupnorm"])
def test_eval_computes_what_training_does(mx, norm):
    block = block_of(mx, norm)
    assert sorted(p.split("_")[-1] for p in block.collect_params()) == ["beta", "gamma"]  # no running statistics
    rng = np.random.default_rng(9)
    for _ in range(2):
        forward(mx, block, rng.normal(3.0, 2.0, SHAPES[norm]))
    x_eval = rng.normal(-1.0, 0.5, SHAPES[norm])
    np.testing.assert_array_equal(forward(mx, block, x_eval, train=False), forward(mx, block, x_eval))


def test_groupnorm_defaults_to_one_group_with_per_group_parameters(mx):
    x = np.random.default_rng(10).normal(1.0, 2.0, (4, 6, 5))
    block = block_of(mx, "groupnorm")
    y = forward(mx, block, x)
    assert block.gamma.shape == block.beta.shape == (1,)  # (num_groups,)
    row = rows()["groupnorm"]
    assert (row.defaults["groups"], row.defaults["params"]) == (1, "group")
    np.testing.assert_allclose(y, reference_y("groupnorm", x, GNSpec(groups=1)), rtol=1e-12, atol=1e-12)
    assert np.abs(y - reference_y("groupnorm", x, GNSpec(groups=2))).max() > 0.1


def test_groupnorm_gamma_and_beta_are_per_group(mx):
    x = np.random.default_rng(11).normal(1.0, 2.0, (4, 6, 5))
    block = block_of(mx, "groupnorm", num_groups=2)
    assert block.gamma.shape == block.beta.shape == (2,)
    gamma, beta = np.array([2.0, 3.0]), np.array([-1.0, 0.5])
    block.gamma.set_data(mx.nd.array(gamma, dtype="float64"))
    block.beta.set_data(mx.nd.array(beta, dtype="float64"))
    spec = GNSpec(groups=2, params="group")
    np.testing.assert_allclose(forward(mx, block, x), reference_y("groupnorm", x, spec, gamma, beta),
                               rtol=1e-12, atol=1e-12)
    with pytest.raises(AssertionError):  # no room for a per-channel γ
        block.gamma.set_data(mx.nd.ones(6, dtype="float64"))


def test_groupnorm_takes_channels_first_inputs_of_rank_3_or_more(mx):
    assert "axis" not in inspect.signature(mx.gluon.nn.GroupNorm).parameters  # no other layout
    assert rows()["groupnorm"].defaults["axis"] == 1
    x = np.random.default_rng(12).normal(1.0, 2.0, (4, 4, 3))
    y = forward(mx, block_of(mx, "groupnorm", num_groups=2), x)
    np.testing.assert_allclose(y, reference_y("groupnorm", x, GNSpec(groups=2, params="group", axis=1)),
                               rtol=1e-12, atol=1e-12)
    assert "Check failed: dshape.ndim() >= 3" in mxnet_error(mx, block_of(mx, "groupnorm", num_groups=2), x[:, :, 0])


def test_instancenorm_channel_axis_and_rank(mx):
    rng = np.random.default_rng(13)
    x = rng.normal(1.0, 2.0, (4, 3, 5)).astype(np.float32)  # NCL: the default axis=1
    assert rows()["instancenorm"].defaults["axis"] == 1
    np.testing.assert_allclose(forward(mx, block_of(mx, "instancenorm", "float32"), x),
                               reference_y("instancenorm", x, INSpec(axis=1)), atol=1e-5)
    nlc = np.ascontiguousarray(x.transpose(0, 2, 1))  # axis=-1 swaps the channels to axis 1 and back
    np.testing.assert_allclose(forward(mx, block_of(mx, "instancenorm", "float32", axis=-1), nlc),
                               reference_y("instancenorm", nlc, INSpec(axis=-1)), atol=1e-5)
    error = mxnet_error(mx, block_of(mx, "instancenorm", "float32", in_channels=3), x[:, :, 0])
    assert "InstanceNorm only supports input tensors of rank >= 3" in error


@pytest.mark.parametrize("norm", ["layernorm", "groupnorm", "instancenorm"])
def test_defaults_mode_reproduces_the_row(mx, norm):
    """Built with use_defaults, the adapter ignores the spec's ε (1e-3) and computes the row's spec (ε = 1e-5)."""
    row = rows()[norm]
    shape, case = SHARED[norm][REPRESENTATIVE[norm]]
    dtype = np.dtype("float32" if norm == "instancenorm" else "float64")
    for impl in BUILTINS:
        adapter = make_adapter(mx, norm, impl)
        asked = adapter.realize(case, dtype)
        defaults = adapter.realize(row.spec(dtype=dtype, **case.structure()), dtype)
        assert asked.eps != defaults.eps
        inputs = make_inputs(asked, shape, dtype, seed=14)
        out = adapter.run(inputs, spec=asked, use_defaults=True)
        assert_parity(out, run_reference(defaults, inputs), rtol=RTOL[dtype.name])
        with pytest.raises(AssertionError):
            assert_parity(out, run_reference(asked, inputs), rtol=RTOL[dtype.name])


# ---------------------------------------------------------------------------------------------------------------
# The variance algorithm: the builtins always compute two passes; the scratch layers honour "fast".

OFFSET_CASES = {"batchnorm": (4, 2, 256), "layernorm": (4, 1024), "groupnorm": (4, 2, 512),
                "instancenorm": (4, 2, 512)}


@pytest.mark.parametrize("norm", list(OFFSET_CASES))
def test_scratch_fast_variance_is_what_it_computes(mx, norm):
    # x = 1e4 + N(0, 1) in float32: two passes normalize it to within 1e-2 of the float64 reference, E[x²] − E[x]²
    # cancels every digit of σ² (off by O(1), or dividing by √ε once clipped at 0).
    from bnparity.frameworks.mxnet.batchnorm import BuiltinBatchNorm, ScratchBatchNorm
    from bnparity.reference.spec import BNSpec

    shape = OFFSET_CASES[norm]
    spec = {"batchnorm": BNSpec(), "layernorm": LNSpec(), "groupnorm": GNSpec(groups=2, params="group"),
            "instancenorm": INSpec()}[norm]
    rng = np.random.default_rng(15)
    x = (1e4 + rng.normal(size=shape)).astype(np.float32)
    inputs = LayerInputs(xs=(x,), dys=(rng.normal(size=shape).astype(np.float32),), x_eval=x,
                         gamma=np.ones(spec.param_shape(shape)), beta=np.zeros(spec.param_shape(shape)))
    adapter = ScratchBatchNorm() if norm == "batchnorm" else make_adapter(mx, norm, "scratch")
    expected = run_reference(spec, inputs).y
    two_pass = adapter.run(inputs, spec=spec).y
    fast = adapter.run(inputs, spec=spec.replace(variance="fast")).y
    np.testing.assert_allclose(two_pass, expected, atol=1e-2)
    assert not np.all(np.abs(fast - expected) < 0.1)  # NaN or far off
    if norm == "batchnorm":  # the builtin BatchNorm computes two passes whatever it is asked
        assert BuiltinBatchNorm().realize(spec.replace(variance="fast"), x.dtype).variance == "two-pass"
