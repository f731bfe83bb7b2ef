"""The PyTorch LayerNorm, GroupNorm, InstanceNorm and RMSNorm adapters, and the proofs of their conventions rows.

The adapters are run against the float64 reference on a grid of specs; every fact of torch's rows in
frameworks/torch/convention.py (LAYER_CONVENTIONS) is proved here by running torch itself.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import framework_installed

from bnparity.frameworks.base import LayerAdapter, Unsupported
from bnparity.frameworks.conventions import convention
from bnparity.frameworks.registry import load_adapter
from bnparity.reference.normalization import of_spec, run_reference
from bnparity.reference.spec import BNSpec, GNSpec, INSpec, LayerSpec, LNSpec, RMSSpec
from bnparity.reference.steps import LayerInputs, LayerOutputs

if not framework_installed("torch"):
    pytest.skip("torch is not installed", allow_module_level=True)
torch = pytest.importorskip("torch")

from bnparity.frameworks.torch.groupnorm import BuiltinGroupNorm  # noqa: E402  (needs torch)

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

ROW = "frameworks/torch/convention.py"


def _adapter(norm: str, impl: str) -> LayerAdapter:
    adapter = load_adapter("torch", impl, norm)
    assert isinstance(adapter, LayerAdapter), adapter
    return adapter


def _inputs(spec: LayerSpec, shape: tuple[int, ...], dtype: str = "float64", *, seed: int = 0, steps: int = 2,
            loc: float = 1.0, scale: float = 2.0) -> LayerInputs:
    """Seeded data rounded to `dtype`; γ and β of shape spec.param_shape(shape)."""
    rng = np.random.default_rng(seed)
    params = spec.param_shape(shape)

    def draw() -> np.ndarray:
        return (loc + scale * rng.standard_normal(shape)).astype(dtype)

    return LayerInputs(xs=tuple(draw() for _ in range(steps)),
                       dys=tuple(rng.standard_normal(shape).astype(dtype) for _ in range(steps)),
                       x_eval=draw(), gamma=rng.normal(1, 0.3, params), beta=rng.normal(0, 0.3, params))


def _check(adapter: LayerAdapter, spec: LayerSpec, inputs: LayerInputs, rtol: float) -> LayerOutputs:
    """Run `adapter` on `inputs` and check it against the reference (see _assert_matches); its outputs."""
    got = adapter.run(inputs, spec=spec)
    _assert_matches(got, run_reference(spec, inputs), rtol, of_spec(spec).error_scales(spec, inputs))
    return got


def _assert_matches(got: LayerOutputs, ref: LayerOutputs, rtol: float, scales: dict[str, float]) -> None:
    """Each quantity present in both or neither, and within rtol of its scale: its largest |reference|, or the
    magnitude of its terms when larger (dx of a group of two values cancels to ≈ 0; see error_scales)."""
    for name, r in ref.as_dict().items():
        g = got.as_dict()[name]
        assert (g is None) == (r is None), f"{name}: {'missing' if g is None else 'not expected'}"
        if r is not None:
            assert g.shape == r.shape, name
            err, top = float(np.max(np.abs(g - r))), max(float(np.max(np.abs(r))), scales.get(name, 0.0))
            assert err <= rtol * top, f"{name}: max |error| {err:.3g} > {rtol:g} × {top:.3g}"


def _x_hat(x: np.ndarray, axes: tuple[int, ...], eps: float) -> np.ndarray:
    """(x − μ)/√(σ² + ε) in float64, two-pass, over `axes` (the expected output of a layer at γ = 1, β = 0)."""
    x = np.asarray(x, dtype=np.float64)
    mu = x.mean(axis=axes, keepdims=True)
    return (x - mu) / np.sqrt(((x - mu) ** 2).mean(axis=axes, keepdims=True) + eps)


def _rms_hat(x: np.ndarray, axes: tuple[int, ...], eps: float) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return x / np.sqrt((x**2).mean(axis=axes, keepdims=True) + eps)


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().double().numpy()


# --- the adapters against the reference ------------------------------------------------------------------------

# (normalization, impls, shape, spec): the builtin rows run both implementations, the scratch-only rows are the
# configurations torch's layers do not have.
BOTH, SCRATCH = ("builtin", "scratch"), ("scratch",)
GRID = [
    ("layernorm", BOTH, (6, 5), LNSpec(eps=1e-3)),
    ("layernorm", BOTH, (3, 4, 5), LNSpec(normalized_dims=2)),
    ("layernorm", BOTH, (2, 3, 4, 5), LNSpec(normalized_dims=3, eps=1e-2)),
    ("layernorm", BOTH, (3, 4, 5), LNSpec(bias=False)),
    ("layernorm", BOTH, (3, 4, 5), LNSpec(affine=False)),
    ("layernorm", BOTH, (3, 4, 5), LNSpec(normalized_dims=1, params="feature")),
    ("layernorm", SCRATCH, (3, 4, 5), LNSpec(normalized_dims=2, params="feature")),
    ("layernorm", SCRATCH, (3, 4, 5), LNSpec(variance="fast")),
    ("groupnorm", BOTH, (6, 4), GNSpec(groups=2)),
    ("groupnorm", BOTH, (3, 4, 5), GNSpec(groups=1)),
    ("groupnorm", BOTH, (2, 6, 3, 4), GNSpec(groups=3, eps=1e-3)),
    ("groupnorm", BOTH, (2, 3, 5, 4), GNSpec(groups=4, axis=-1)),  # G = C, channels-last layout
    ("groupnorm", BOTH, (2, 4, 2, 3, 2), GNSpec(groups=2, affine=False)),
    ("groupnorm", SCRATCH, (2, 6, 3, 4), GNSpec(groups=3, params="group")),
    ("groupnorm", SCRATCH, (2, 6, 3, 4), GNSpec(groups=2, variance="fast")),
    ("instancenorm", BOTH, (3, 4, 5), INSpec()),
    ("instancenorm", BOTH, (2, 3, 4, 5), INSpec(affine=True, track_running_stats=True, momentum=0.3,
                                                init_running_mean=0.5, init_running_var=2.0)),
    ("instancenorm", BOTH, (2, 4, 5, 3), INSpec(axis=-1, affine=True, track_running_stats=True, momentum=0.7,
                                                momentum_weighs="old")),
    ("instancenorm", BOTH, (2, 3, 2, 3, 2), INSpec(track_running_stats=True, eps=1e-3)),
    ("instancenorm", SCRATCH, (3, 4, 5), INSpec(track_running_stats=True, running_var="biased")),
    ("instancenorm", SCRATCH, (2, 3, 4, 5), INSpec(affine=True, variance="fast")),
    ("rmsnorm", BOTH, (6, 5), RMSSpec()),
    ("rmsnorm", BOTH, (3, 4, 5), RMSSpec(normalized_dims=2, eps=1e-3)),
    ("rmsnorm", BOTH, (3, 4, 5), RMSSpec(affine=False)),
    ("rmsnorm", SCRATCH, (3, 4, 5), RMSSpec(normalized_dims=2, params="feature")),
]
CASES = [(norm, impl, shape, spec) for norm, impls, shape, spec in GRID for impl in impls]
IDS = [f"{norm}-{impl}-{'x'.join(map(str, shape))}-{i}" for i, (norm, impl, shape, _) in enumerate(CASES)]


@pytest.mark.parametrize(("dtype", "rtol"), [("float64", 1e-10), ("float32", 1e-5)])
@pytest.mark.parametrize(("norm", "impl", "shape", "spec"), CASES, ids=IDS)
def test_adapters_match_the_reference(norm, impl, shape, spec, dtype, rtol):
    adapter = _adapter(norm, impl)
    inputs = _inputs(spec, shape, dtype, steps=3)
    _check(adapter, adapter.realize(spec, inputs.dtype), inputs, rtol)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
@pytest.mark.parametrize("impl", ["builtin", "scratch"])
@pytest.mark.parametrize(("norm", "shape", "spec"), [
    ("layernorm", (4, 3, 8), LNSpec()),
    ("groupnorm", (4, 4, 3, 2), GNSpec(groups=2)),
    ("instancenorm", (4, 3, 8), INSpec(affine=True, track_running_stats=True)),
    ("rmsnorm", (4, 3, 8), RMSSpec(eps=1e-5)),
])
def test_half_precision_runs(norm, shape, spec, impl, dtype):
    if dtype == "bfloat16":
        dtype = pytest.importorskip("ml_dtypes").bfloat16
    adapter = _adapter(norm, impl)
    inputs = _inputs(spec, shape, dtype)
    _check(adapter, adapter.realize(spec, inputs.dtype), inputs, 0.05)


@pytest.mark.parametrize("shape", [(2, 6, 3, 4), (2, 4, 2, 3, 2)], ids=["4d", "5d"])
def test_groupnorm_channels_last_path_matches_the_fast_reference(shape):
    adapter = BuiltinGroupNorm(memory_format="channels_last")
    spec = adapter.realize(GNSpec(groups=2), np.dtype("float64"))
    assert spec.variance == "fast"
    _check(adapter, spec, _inputs(spec, shape, steps=3), 1e-10)


def test_quantities_that_do_not_exist_are_none():
    for norm, spec, absent in (("layernorm", LNSpec(bias=False), ("dbeta",)),
                               ("rmsnorm", RMSSpec(), ("dbeta",)),
                               ("groupnorm", GNSpec(groups=2, affine=False), ("dgamma", "dbeta")),
                               ("instancenorm", INSpec(), ("dgamma", "dbeta", "running_mean", "running_var"))):
        for impl in ("builtin", "scratch"):
            got = _adapter(norm, impl).run(_inputs(spec, (3, 4, 5)), spec=spec)
            assert all(got.as_dict()[q] is None for q in absent), (norm, impl)
            assert got.dgamma is not None or not spec.affine


def test_realize_fixes_what_torch_cannot_configure():
    f32 = np.dtype("float32")
    assert _adapter("layernorm", "builtin").realize(LNSpec(variance="fast"), f32).variance == "two-pass"
    assert _adapter("groupnorm", "builtin").realize(GNSpec(variance="fast"), f32).variance == "two-pass"
    realized = _adapter("instancenorm", "builtin").realize(INSpec(variance="fast", running_var="biased"), f32)
    assert (realized.variance, realized.running_var) == ("two-pass", "unbiased")
    assert BuiltinGroupNorm(memory_format="channels_last").realize(GNSpec(), f32).variance == "fast"
    for norm, spec in (("layernorm", LNSpec(variance="fast", normalized_dims=2, params="feature")),
                       ("groupnorm", GNSpec(variance="fast", params="group")),
                       ("instancenorm", INSpec(variance="fast", running_var="biased")),
                       ("rmsnorm", RMSSpec(normalized_dims=2, params="feature"))):
        assert _adapter(norm, "scratch").realize(spec, f32) == spec  # the scratch layers honour every field


@pytest.mark.parametrize(("norm", "impl", "spec", "shape", "reason"), [
    ("layernorm", "builtin", LNSpec(normalized_dims=2, params="feature"), (3, 4, 5), "shape of normalized_shape"),
    ("rmsnorm", "builtin", RMSSpec(normalized_dims=2, params="feature"), (3, 4, 5), "shape of normalized_shape"),
    ("groupnorm", "builtin", GNSpec(groups=2, params="group"), (3, 4, 5), "per channel"),
    ("groupnorm", "builtin", GNSpec(groups=4), (1, 4), "more than 1 value per channel"),
    ("instancenorm", "builtin", INSpec(), (3, 4), "unbatched"),
    ("instancenorm", "builtin", INSpec(), (3, 4, 1), "more than 1 spatial element"),
    ("instancenorm", "builtin", INSpec(), (3, 4, 1, 1), "more than 1 spatial element"),
    ("groupnorm", "channels-last", GNSpec(groups=2), (3, 4, 5), "4-D and 5-D"),
], ids=["ln-feature", "rms-feature", "gn-group-params", "gn-one-value", "in-2d", "in-1d-one", "in-2d-one",
        "gn-channels-last-3d"])
def test_unsupported_names_torch_and_the_reason(norm, impl, spec, shape, reason):
    adapter = BuiltinGroupNorm(memory_format="channels_last") if impl == "channels-last" else _adapter(norm, impl)
    rng = np.random.default_rng(0)
    p = rng.normal(size=spec.param_shape(shape))
    with pytest.raises(Unsupported, match=r"^torch: ") as raised:
        realized = adapter.realize(spec, np.dtype("float64"))
        inputs = LayerInputs(xs=(rng.normal(size=shape),), dys=(rng.normal(size=shape),),
                             x_eval=rng.normal(size=shape), gamma=p, beta=p)
        adapter.run(inputs, spec=realized)
    assert reason in str(raised.value)


@pytest.mark.parametrize("norm", ["layernorm", "groupnorm", "instancenorm", "rmsnorm"])
@pytest.mark.parametrize("impl", ["builtin", "scratch"])
def test_a_dtype_torch_has_no_float_for_is_unsupported(norm, impl):
    spec = {"layernorm": LNSpec(), "groupnorm": GNSpec(), "instancenorm": INSpec(), "rmsnorm": RMSSpec()}[norm]
    with pytest.raises(Unsupported, match=r"^torch: no float dtype for int32"):
        _adapter(norm, impl).realize(spec, np.dtype("int32"))


def test_scratch_batchnorm_honours_the_fast_variance():
    builtin, scratch = _adapter("batchnorm", "builtin"), _adapter("batchnorm", "scratch")
    assert builtin.realize(BNSpec(variance="fast"), np.dtype("float32")).variance == "two-pass"
    fast = BNSpec(variance="fast")
    assert scratch.realize(fast, np.dtype("float32")) == fast
    rng = np.random.default_rng(0)
    shape = (8, 3, 4)
    well = LayerInputs(xs=(rng.normal(1, 2, shape),), dys=(rng.normal(size=shape),), x_eval=rng.normal(size=shape),
                       gamma=rng.normal(1, .3, 3), beta=rng.normal(0, .3, 3))
    _check(scratch, fast, well, 1e-10)
    # On an offset float32 input E[x²] − E[x]² cancels; the two-pass σ² does not.
    x = (1e4 + rng.standard_normal(shape)).astype(np.float32)
    offset = LayerInputs(xs=(x,), dys=(np.ones_like(x),), x_eval=x, gamma=np.ones(3), beta=np.zeros(3))
    expected = _x_hat(x, (0, 2), 1e-5)
    assert np.max(np.abs(scratch.run(offset, spec=fast).y - expected)) > 1.0
    assert np.max(np.abs(scratch.run(offset, spec=BNSpec()).y - expected)) < 5e-3


# --- defaults mode reproduces the conventions rows ---------------------------------------------------------------

DEFAULT_CASES = {  # (shape, STRUCTURE fields of the case)
    "layernorm": ((4, 3, 6), dict(normalized_dims=2)),
    "groupnorm": ((3, 4, 5), dict(groups=2)),
    "instancenorm": ((3, 4, 5), dict(track_running_stats=True)),
    "rmsnorm": ((4, 3, 6), dict(normalized_dims=1)),
}


@pytest.mark.parametrize("norm", list(DEFAULT_CASES))
def test_defaults_mode_builds_the_layer_of_the_conventions_row(norm):
    """use_defaults ignores the spec's ε and momentum: the layer's own defaults are the row's (by output, on data
    whose variance is small enough for ε to matter)."""
    shape, structure = DEFAULT_CASES[norm]
    row = convention("torch", norm)
    asked = row.spec(dtype=np.dtype("float64"), **structure)
    inputs = _inputs(asked, shape, loc=0.0, scale=3e-3, steps=3)
    adapter = _adapter(norm, "builtin")
    wrong = {"eps": 0.5, **({"momentum": 0.9} if norm == "instancenorm" else {})}
    got = adapter.run(inputs, spec=adapter.realize(asked, inputs.dtype).replace(**wrong), use_defaults=True)
    _assert_matches(got, run_reference(asked, inputs), 1e-9, of_spec(asked).error_scales(asked, inputs))
    assert np.max(np.abs(got.y - run_reference(asked.replace(**wrong), inputs).y)) > 0.1


# --- proofs of the conventions rows (each runs torch itself) ---------------------------------------------------

@pytest.mark.parametrize(("norm", "make", "axes", "shape"), [
    ("layernorm", lambda: torch.nn.LayerNorm(6), (-1,), (4, 6)),
    ("groupnorm", lambda: torch.nn.GroupNorm(2, 4), (2,), (3, 4, 5)),  # over the grouped view (N, G, C/G · L)
    ("instancenorm", lambda: torch.nn.InstanceNorm1d(4), (2,), (3, 4, 5)),
], ids=["layernorm", "groupnorm", "instancenorm"])
def test_default_eps_by_output(norm, make, axes, shape):
    row = convention("torch", norm)
    assert row.defaults["eps"] == 1e-5
    rng = np.random.default_rng(1)
    x = 3e-3 * rng.standard_normal(shape)  # σ² ≈ 1e-5: ε is visible
    if norm == "groupnorm":
        x = x.reshape(3, 2, 10)  # the grouped view: group g holds channels 2g, 2g + 1
    module = make().double()
    y = _np(module(torch.from_numpy(x.reshape(shape)))).reshape(x.shape)
    np.testing.assert_allclose(y, _x_hat(x, axes, row.eps()), rtol=1e-10, atol=1e-12)
    assert np.max(np.abs(y - _x_hat(x, axes, 1e-6))) > 0.1


@pytest.mark.parametrize(("norm", "make", "axes", "shape"), [
    ("layernorm", lambda: torch.nn.LayerNorm(64), (-1,), (4, 64)),
    ("groupnorm", lambda: torch.nn.GroupNorm(1, 4), (1, 2, 3), (2, 4, 4, 4)),
    ("instancenorm", lambda: torch.nn.InstanceNorm2d(4), (2, 3), (2, 4, 4, 4)),
], ids=["layernorm", "groupnorm", "instancenorm"])
def test_two_pass_variance_on_an_offset_input(norm, make, axes, shape):
    """Mean 1e4, spread 1, float32: a two-pass σ² gives x̂ to u·κ ≈ 6e-4; E[x²] − E[x]² (x² ≈ 1e8 is resolved to
    8 in float32) is off by O(1) or more, as the same formula in float32 torch ops shows."""
    assert convention("torch", norm).defaults["variance"] == "two-pass"
    x = torch.from_numpy(1e4 + np.random.default_rng(2).standard_normal(shape)).float()
    expected = _x_hat(x.double().numpy(), axes, 1e-5)
    assert np.max(np.abs(_np(make()(x)) - expected)) < 5e-3
    mu = x.mean(dim=axes, keepdim=True)
    fast = (x - mu) / torch.sqrt(((x * x).mean(dim=axes, keepdim=True) - mu * mu).clamp_min(0) + 1e-5)
    assert np.max(np.abs(_np(fast) - expected)) > 0.1  # the check can tell the two algorithms apart


@pytest.mark.parametrize("shape", [(2, 4, 8, 8), (2, 4, 2, 4, 4)], ids=["4d", "5d"])
def test_groupnorm_channels_last_uses_the_fast_variance(shape):
    """The same values in the channels_last memory format: torch's CPU kernel takes its NHWC path, whose σ² is
    E[x²] − E[x]² — off by hundreds on the input the contiguous path gets to 1e-3."""
    row = convention("torch", "groupnorm")
    assert "channels_last" in row.facts["variance"]
    x = torch.from_numpy(1e4 + np.random.default_rng(3).standard_normal(shape)).float()
    fmt = torch.channels_last if len(shape) == 4 else torch.channels_last_3d
    module = torch.nn.GroupNorm(2, 4)
    expected = _x_hat(x.double().numpy().reshape(2, 2, -1), (2,), 1e-5).reshape(shape)
    contiguous = np.max(np.abs(_np(module(x)) - expected))
    channels_last = np.max(np.abs(_np(module(x.contiguous(memory_format=fmt))) - expected))
    assert contiguous < 5e-3
    assert channels_last > 10.0


def test_eval_equals_training_without_running_statistics():
    x = torch.from_numpy(np.random.default_rng(4).normal(1, 2, (3, 4, 5)))
    for name, module in (("layernorm", torch.nn.LayerNorm(5)), ("groupnorm", torch.nn.GroupNorm(2, 4)),
                         ("rmsnorm", torch.nn.RMSNorm(5)), ("instancenorm", torch.nn.InstanceNorm1d(4))):
        module = module.double()
        y_train = module.train()(x)
        y_eval = module.eval()(x)
        assert torch.equal(y_train, y_eval), name
        assert getattr(module, "running_mean", None) is None, name
        assert "eval" in convention("torch", name).facts


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
@pytest.mark.parametrize(("norm", "make", "axes", "shape"), [
    ("layernorm", lambda: torch.nn.LayerNorm(256), (-1,), (4, 256)),
    ("groupnorm", lambda: torch.nn.GroupNorm(4, 4), (2,), (2, 4, 256)),
    ("rmsnorm", lambda: torch.nn.RMSNorm(256), (-1,), (4, 256)),
], ids=["layernorm", "groupnorm", "rmsnorm"])
def test_half_precision_is_computed_in_float32(norm, make, axes, shape, dtype):
    """Mean 512, spread 1: computed in float32 and rounded once, y is within an ulp of the exact value. In half
    precision itself, μ is only known to ±0.25 (LayerNorm, GroupNorm) and x² ≈ 2.6e5 overflows float16 (RMSNorm)."""
    assert "float32" in convention("torch", norm).facts["half_precision"]
    dt = getattr(torch, dtype)
    x = torch.from_numpy(512 + np.random.default_rng(5).standard_normal(shape)).to(dt)
    xd = x.double().numpy()
    eps = 1e-5 if norm != "rmsnorm" else float(np.finfo(np.float32).eps)
    expected = _rms_hat(xd, axes, eps) if norm == "rmsnorm" else _x_hat(xd, axes, eps)
    y = _np(make().to(dt)(x))
    ulp = float(torch.finfo(dt).eps) * float(np.max(np.abs(expected)))
    assert np.max(np.abs(y - expected)) <= ulp
    if dtype == "float16":  # the same formula in float16 ops is far off: the check can fail
        xh = x.clone()
        dims = list(range(x.dim()))[axes[0]:] if axes == (-1,) else list(axes)
        if norm == "rmsnorm":
            in_half = xh / torch.sqrt((xh * xh).mean(dim=dims, keepdim=True) + eps)
        else:
            centred = xh - xh.mean(dim=dims, keepdim=True).to(dt)
            in_half = centred / torch.sqrt((centred * centred).mean(dim=dims, keepdim=True) + eps)
        assert not np.max(np.abs(_np(in_half) - expected)) <= 10 * ulp


def test_layernorm_normalizes_the_trailing_normalized_shape():
    with pytest.raises(TypeError):
        torch.nn.LayerNorm()  # normalized_shape is required
    module = torch.nn.LayerNorm((4, 5)).double()
    assert tuple(module.weight.shape) == tuple(module.bias.shape) == (4, 5)  # elementwise over normalized_shape
    x = np.random.default_rng(6).normal(1, 2, (3, 4, 5))
    np.testing.assert_allclose(_np(module(torch.from_numpy(x))), _x_hat(x, (1, 2), 1e-5), rtol=1e-12, atol=1e-13)
    with pytest.raises(RuntimeError):
        module(torch.zeros(3, 5, 4, dtype=torch.float64))  # the trailing sizes must be normalized_shape
    row = convention("torch", "layernorm")
    assert "normalized_dims" not in row.defaults and row.defaults["params"] == "elementwise"


def test_layernorm_affine_and_bias_switches():
    row = convention("torch", "layernorm")
    assert (row.defaults["affine"], row.defaults["bias"]) == (True, True)
    no_bias = torch.nn.LayerNorm(5, bias=False)
    assert no_bias.weight is not None and no_bias.bias is None
    off = torch.nn.LayerNorm(5, elementwise_affine=False)
    assert off.weight is None and off.bias is None
    # bias=False through the adapter: y = γ x̂ (the given β ignored), no dβ
    spec = LNSpec(bias=False)
    inputs = _inputs(spec, (3, 4, 5))
    got = _check(_adapter("layernorm", "builtin"), spec, inputs, 1e-10)
    assert got.dbeta is None
    assert np.max(np.abs(got.y - run_reference(LNSpec(), inputs).y)) > 0.01  # β would have shifted y


def test_groupnorm_num_groups_is_required_and_groups_are_consecutive():
    with pytest.raises(TypeError):
        torch.nn.GroupNorm(num_channels=4)  # num_groups has no default
    with pytest.raises(ValueError, match="divisible"):
        torch.nn.GroupNorm(3, 4)
    assert "groups" not in convention("torch", "groupnorm").defaults
    rng = np.random.default_rng(7)
    x = rng.normal(size=(2, 4, 6)) + np.array([5.0, -5.0, 1.0, 3.0]).reshape(1, 4, 1)  # channel means differ
    y = _np(torch.nn.GroupNorm(2, 4).double()(torch.from_numpy(x)))
    consecutive = _x_hat(x.reshape(2, 2, 12), (2,), 1e-5).reshape(x.shape)  # groups {0, 1}, {2, 3}
    interleaved = _x_hat(x[:, [0, 2, 1, 3]].reshape(2, 2, 12), (2,), 1e-5).reshape(x.shape)[:, [0, 2, 1, 3]]
    np.testing.assert_allclose(y, consecutive, rtol=1e-12, atol=1e-13)
    assert np.max(np.abs(y - interleaved)) > 0.1


def test_groupnorm_params_are_per_channel():
    module = torch.nn.GroupNorm(2, 6)
    assert tuple(module.weight.shape) == tuple(module.bias.shape) == (6,)  # per channel, not per group
    assert torch.nn.GroupNorm(2, 6, affine=False).weight is None
    assert torch.nn.GroupNorm(2, 6, bias=False).bias is None
    row = convention("torch", "groupnorm")
    assert (row.defaults["params"], row.defaults["affine"]) == ("channel", True)


def test_groupnorm_refuses_one_value_per_channel_and_batch():
    module = torch.nn.GroupNorm(4, 4)
    for mode in (module.train, module.eval):  # no training flag: eval refuses too
        mode()
        with pytest.raises(ValueError, match="Expected more than 1 value per channel"):
            module(torch.randn(1, 4))
    y = module(torch.randn(2, 4))  # still one value per group, but N·C/G = 2: accepted, x̂ = 0 (to rounding)
    assert float(y.abs().max()) < 1e-3
    assert "single_value" in convention("torch", "groupnorm").facts


def test_instancenorm_defaults():
    row = convention("torch", "instancenorm")
    module = torch.nn.InstanceNorm2d(3)
    assert (module.eps, module.momentum) == (row.defaults["eps"], row.defaults["momentum"])
    assert module.weight is None and module.bias is None and row.defaults["affine"] is False
    assert module.running_mean is None and row.defaults["track_running_stats"] is False
    x = torch.from_numpy(np.random.default_rng(8).normal(1, 2, (2, 3, 4, 5)))
    y_eval = _np(module.double().eval()(x))  # eval: the eval input's own statistics
    np.testing.assert_allclose(y_eval, _x_hat(x.numpy(), (2, 3), 1e-5), rtol=1e-12, atol=1e-13)


def test_instancenorm_running_statistics():
    row = convention("torch", "instancenorm")
    assert (row.defaults["momentum_weighs"], row.defaults["running_var"]) == ("new", "unbiased")
    module = torch.nn.InstanceNorm1d(2, track_running_stats=True, momentum=0.3).double()
    assert (module.running_mean.tolist(), module.running_var.tolist()) == ([0.0, 0.0], [1.0, 1.0])
    x = np.random.default_rng(9).normal(1, 2, (3, 2, 5))
    module.train()(torch.from_numpy(x))
    mu, var = x.mean(axis=2), x.var(axis=2)  # per sample and channel, σ² biased
    m = x.shape[2]
    np.testing.assert_allclose(module.running_mean.numpy(), 0.7 * 0.0 + 0.3 * mu.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(module.running_var.numpy(), 0.7 * 1.0 + 0.3 * (var * m / (m - 1)).mean(axis=0),
                               rtol=1e-12)
    assert np.max(np.abs(module.running_var.numpy() - (0.7 + 0.3 * var.mean(axis=0)))) > 1e-3  # not biased
    assert np.max(np.abs(module.running_var.numpy() - (0.7 + 0.3 * x.var(axis=(0, 2), ddof=1)))) > 1e-3  # nor BN's
    x_eval = np.random.default_rng(10).normal(size=(2, 2, 5))
    y = _np(module.eval()(torch.from_numpy(x_eval)))  # eval: the running statistics
    rm, rv = module.running_mean.numpy().reshape(1, 2, 1), module.running_var.numpy().reshape(1, 2, 1)
    np.testing.assert_allclose(y, (x_eval - rm) / np.sqrt(rv + 1e-5), rtol=1e-12)


def test_instancenorm_momentum_none_freezes_the_running_statistics():
    x = torch.from_numpy(np.random.default_rng(11).normal(3, 2, (4, 2, 5)))
    frozen = torch.nn.InstanceNorm1d(2, track_running_stats=True, momentum=None).double().train()
    frozen(x)
    assert frozen.running_mean.tolist() == [0.0, 0.0] and frozen.running_var.tolist() == [1.0, 1.0]
    cumulative = torch.nn.BatchNorm1d(2, momentum=None).double().train()  # BatchNorm's None: 1/num_batches
    cumulative(x)
    np.testing.assert_allclose(cumulative.running_mean.numpy(), x.numpy().mean(axis=(0, 2)), rtol=1e-12)
    assert "None freezes" in convention("torch", "instancenorm").facts["momentum"]


def test_instancenorm1d_reads_a_2d_input_as_one_unbatched_sample():
    x = np.random.default_rng(12).normal(1, 2, (4, 3))  # an (N, C) batch to a porter; (C, L) to torch
    y = _np(torch.nn.InstanceNorm1d(4).double()(torch.from_numpy(x)))
    np.testing.assert_allclose(y, _x_hat(x, (1,), 1e-5), rtol=1e-12, atol=1e-13)  # each row over its columns
    with pytest.raises(Unsupported, match="^torch: .*unbatched"):
        p = np.ones(3)
        _adapter("instancenorm", "builtin").run(LayerInputs((x,), (x,), x, p, p), spec=INSpec())


def test_instancenorm_refuses_one_spatial_value():
    with pytest.raises(ValueError, match="Expected more than 1 spatial element"):
        torch.nn.InstanceNorm1d(3).train()(torch.randn(2, 3, 1))
    with pytest.raises(ValueError, match="Expected more than 1 spatial element"):
        torch.nn.InstanceNorm2d(3).train()(torch.randn(2, 3, 1, 1))
    assert "spatial_size" in convention("torch", "instancenorm").facts


def test_instancenorm_half_precision_error_grows_with_the_mean():
    """Mean 512, spread 1 in float16: InstanceNorm's y is off by tens of ulps, GroupNorm(C, C) — the same
    statistics — by at most one."""
    x = torch.from_numpy(512 + np.random.default_rng(13).standard_normal((2, 4, 1024))).half()
    expected = _x_hat(x.double().numpy(), (2,), 1e-5)
    ulp = float(torch.finfo(torch.float16).eps) * float(np.max(np.abs(expected)))
    instance = np.max(np.abs(_np(torch.nn.InstanceNorm1d(4).half()(x)) - expected))
    group = np.max(np.abs(_np(torch.nn.GroupNorm(4, 4).half()(x)) - expected))
    assert group <= ulp
    assert instance > 10 * ulp
    assert "float32" in convention("torch", "instancenorm").facts["half_precision"]


@pytest.mark.parametrize("dtype", ["float64", "float32", "float16", "bfloat16"])
def test_rmsnorm_default_eps_is_the_machine_epsilon_of_the_computation_type(dtype):
    """eps=None: ε = finfo(float32).eps for float16, bfloat16 and float32, finfo(float64).eps for float64 — by
    output, on an input whose mean square is about that ε."""
    row = convention("torch", "rmsnorm")
    assert row.eps_rule == "machine-epsilon" and row.defaults["eps"] is None
    dt = getattr(torch, dtype)
    eps = row.eps(np.float64 if dtype == "float64" else np.float32)
    assert eps == float(torch.finfo(torch.float64 if dtype == "float64" else torch.float32).eps)
    rng = np.random.default_rng(14)
    x = torch.from_numpy(np.sqrt(eps) * (1 + 0.5 * rng.random((3, 8)))).to(dt)  # mean(x²) ≈ 1.6 ε
    module = torch.nn.RMSNorm(8)
    assert module.eps is None
    y = _np(module.to(dt)(x))
    xd = x.double().numpy()
    tol = 2 * float(torch.finfo(dt).eps) if dtype in ("float16", "bfloat16") else 1e-6
    np.testing.assert_allclose(y, _rms_hat(xd, (1,), eps), rtol=tol)
    # the input dtype's own machine epsilon (float16: 9.8e-4, bfloat16: 7.8e-3), or Flax's 1e-6 for the others
    other = float(torch.finfo(dt).eps) if dtype in ("float16", "bfloat16") else 1e-6 if dtype == "float32" else 1e-15
    assert np.max(np.abs(y - _rms_hat(xd, (1,), other))) > 0.05


def test_rmsnorm_has_elementwise_gamma_and_no_beta():
    with pytest.raises(TypeError):
        torch.nn.RMSNorm()  # normalized_shape is required
    module = torch.nn.RMSNorm((4, 5))
    assert tuple(module.weight.shape) == (4, 5)
    assert getattr(module, "bias", None) is None and len(list(module.parameters())) == 1
    assert torch.nn.RMSNorm(5, elementwise_affine=False).weight is None
    row = convention("torch", "rmsnorm")
    assert (row.defaults["params"], row.defaults["affine"]) == ("elementwise", True)


def test_every_fact_has_a_citation_and_a_proof_in_this_file():
    names = set(globals())
    for norm in ("layernorm", "groupnorm", "instancenorm", "rmsnorm"):
        row = convention("torch", norm)
        assert set(row.facts) <= set(row.citations) and set(row.facts) <= set(row.proofs), norm
        for tests in row.proofs.values():
            for test in tests:
                path, name = test.split("::")
                assert path == "tests/test_torch_norms.py" and name in names, test
