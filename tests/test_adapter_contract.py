"""The adapter contract: one declarative test that every adapter of every framework and normalization passes.

In the spirit of Keras 3's `run_layer_test`: the adapters are enumerated from the framework descriptors (a new
framework or normalization is covered without editing this file), each one is run on a grid of specs, layouts
and dtypes, and judged by the SAME tolerance model as the `bnparity parity` gate (suites/parity/tolerance.py) —
there is no per-framework tolerance table. Besides the numbers, the contract fixes the behaviour the harness
relies on: class attributes that agree with the descriptor, `realize` idempotent and of the same spec type,
outputs in the input's layout with None exactly where the reference has None, inputs never modified, two runs
bit-identical, defaults mode runnable, and Unsupported messages that name the framework.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from conftest import framework_installed, require

from bnparity.frameworks.base import LayerAdapter, Unsupported
from bnparity.frameworks.conventions import convention
from bnparity.frameworks.registry import descriptors, framework_module
from bnparity.reference.normalization import normalization, of_spec, run_reference
from bnparity.reference.spec import BNSpec, GNSpec, INSpec, LayerSpec, LNSpec, RMSSpec, TrailingSpec
from bnparity.reference.steps import QUANTITIES, LayerInputs, LayerOutputs
from bnparity.suites.parity.compare import compare
from bnparity.suites.parity.tolerance import scale_of, tolerance

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

def _adapter_class(framework: str, normalization_name: str, impl: str) -> type[LayerAdapter]:
    require(framework)
    layer = next(x for x in descriptors() if x.name == framework).layer(normalization_name, impl)
    return getattr(framework_module(framework, layer.module), layer.cls)


def _variants() -> list[tuple[str, str, str, str]]:
    """(framework, normalization, impl, variant) for every adapter and each of its declared variants.

    Variants are declared on the class, so the frameworks that are installed are imported here; one that is
    not contributes its default variant (its tests skip with the reason).
    """
    out = []
    for d in descriptors():
        for layer in d.layers:
            names = ["default"]
            if framework_installed(d.name):
                names = list(_adapter_class(d.name, layer.normalization, layer.impl).variants)
            out += [(d.name, layer.normalization, layer.impl, v) for v in names]
    return out


VARIANTS = _variants()
IDS = [f"{f}-{n}-{i}-{v}" for f, n, i, v in VARIANTS]


def _make(framework: str, norm: str, impl: str, variant: str) -> LayerAdapter:
    cls = _adapter_class(framework, norm, impl)
    return cls(**cls.variants[variant])


# The grids: every feature of each normalization's spec at least once, each layout a framework may have to convert.
BASE = BNSpec(momentum=0.2, eps=1e-3, init_running_mean=0.25, init_running_var=1.5)
GRID: dict[str, tuple[tuple[int, ...], LayerSpec]] = {
    "nc": ((6, 3), BASE),
    "ncl": ((4, 3, 5), BASE),
    "nlc": ((4, 5, 3), BASE.replace(axis=-1)),
    "nchw": ((4, 8, 3, 2), BASE),
    "nhwc": ((4, 3, 2, 8), BASE.replace(axis=-1)),
    "ncdhw": ((2, 3, 2, 2, 2), BASE),
    "affine-off": ((4, 3, 5), BASE.replace(affine=False)),
    "no-running-stats": ((4, 3, 5), BASE.replace(track_running_stats=False)),
    "momentum-weighs-old": ((6, 3), BASE.replace(momentum=0.7, momentum_weighs="old")),
    "biased-running-var": ((6, 3), BASE.replace(running_var="biased", init_running_var=0.5)),
}
_LN = LNSpec(eps=1e-3)
_GN = GNSpec(eps=1e-3, groups=2)
_IN = INSpec(eps=1e-3)
_RMS = RMSSpec(eps=1e-3)
GRIDS: dict[str, dict[str, tuple[tuple[int, ...], LayerSpec]]] = {
    "batchnorm": GRID,
    "layernorm": {
        "nc": ((6, 5), _LN),
        "nlc": ((4, 5, 6), _LN),
        "nhwc": ((2, 3, 2, 4), _LN),
        "dims2": ((4, 5, 6), _LN.replace(normalized_dims=2)),
        "dims2-feature": ((4, 5, 6), _LN.replace(normalized_dims=2, params="feature")),
        "bias-off": ((4, 5, 6), _LN.replace(bias=False)),
        "affine-off": ((4, 5, 6), _LN.replace(affine=False)),
    },
    "groupnorm": {
        "nc": ((6, 4), _GN),
        "ncl": ((4, 4, 5), _GN),
        "nchw": ((4, 8, 3, 2), _GN),
        "nhwc": ((4, 3, 2, 8), _GN.replace(axis=-1)),
        "ncdhw": ((2, 4, 2, 2, 2), _GN),
        "g1": ((4, 8, 3, 2), _GN.replace(groups=1)),
        "gC": ((4, 8, 3, 2), _GN.replace(groups=8)),
        "group-params": ((4, 8, 3, 2), _GN.replace(params="group")),
        "affine-off": ((4, 8, 3, 2), _GN.replace(affine=False)),
    },
    "instancenorm": {
        "ncl": ((4, 3, 5), _IN),
        "nchw": ((4, 3, 3, 2), _IN),
        "nhwc": ((4, 3, 2, 3), _IN.replace(axis=-1)),
        "ncdhw": ((2, 3, 2, 2, 2), _IN),
        "affine": ((4, 3, 5), _IN.replace(affine=True)),
        "running-stats": ((4, 3, 5), _IN.replace(track_running_stats=True, momentum=0.2, init_running_mean=0.25,
                                                 init_running_var=1.5)),
        "running-stats-old": ((4, 3, 5), _IN.replace(track_running_stats=True, momentum=0.7, momentum_weighs="old")),
        "biased-running-var": ((4, 3, 5), _IN.replace(track_running_stats=True, running_var="biased")),
    },
    "rmsnorm": {
        "nc": ((6, 5), _RMS),
        "nlc": ((4, 5, 6), _RMS),
        "dims2": ((4, 5, 6), _RMS.replace(normalized_dims=2)),
        "dims2-feature": ((4, 5, 6), _RMS.replace(normalized_dims=2, params="feature")),
        "affine-off": ((4, 5, 6), _RMS.replace(affine=False)),
    },
}
# One case per normalization for the tests that need a single representative configuration.
REPRESENTATIVE = {"batchnorm": "nchw", "layernorm": "nlc", "groupnorm": "nchw", "instancenorm": "nchw",
                  "rmsnorm": "nlc"}


def _grid(norm: str) -> dict[str, tuple[tuple[int, ...], LayerSpec]]:
    if norm not in GRIDS:
        pytest.fail(f"no contract grid for normalization {norm!r}: add one to GRIDS")
    return GRIDS[norm]


CASES = [(v, case) for v in VARIANTS for case in _grid(v[1])]
CASE_IDS = [f"{'-'.join(v)}-{case}" for v, case in CASES]


def _inputs(shape: tuple[int, ...], axis: int, dtype: str, *, seed: int, steps: int = 3,
            spec: LayerSpec = BASE) -> LayerInputs:
    """Seeded data, rounded to `dtype` before anyone sees it; γ and β (of the spec's shape) representable in `dtype`."""
    rng = np.random.default_rng(seed)
    params = spec.param_shape(shape)
    c = shape[axis]
    bshape = [1] * len(shape)
    bshape[axis] = c
    loc, spread = rng.uniform(-2, 2, c).reshape(bshape), rng.uniform(0.5, 3, c).reshape(bshape)

    def draw() -> np.ndarray:
        return (loc + spread * rng.standard_normal(shape)).astype(dtype)

    xs = tuple(draw() for _ in range(steps))
    dys = tuple(rng.standard_normal(shape).astype(dtype) for _ in range(steps))
    return LayerInputs(xs=xs, dys=dys, x_eval=draw(),
                       gamma=rng.normal(1, 0.5, params).astype(dtype).astype(np.float64),
                       beta=rng.normal(0, 0.5, params).astype(dtype).astype(np.float64))


def _judge(spec: LayerSpec, inputs: LayerInputs, got: LayerOutputs, ref: LayerOutputs) -> list[str]:
    """The gate's verdict on every quantity: the failure messages (empty when everything agrees)."""
    plugin = of_spec(spec)
    kappa = plugin.condition_factor(spec, [*inputs.xs, inputs.x_eval])
    scales = plugin.error_scales(spec, inputs)
    problems = []
    for quantity in QUANTITIES:
        r, g = ref.as_dict()[quantity], got.as_dict()[quantity]
        scale = scale_of(quantity, r, scales) if r is not None else 0.0
        result = compare(quantity, g, r, tolerance(inputs.dtype.name, kappa, scale, variance=spec.variance))
        if result is not None and not result.passed:
            problems.append(result.describe())
    return problems


def _realized_or_skip(adapter: LayerAdapter, spec: LayerSpec, dtype: np.dtype) -> LayerSpec:
    try:
        return adapter.realize(spec, dtype)
    except Unsupported as e:
        assert str(e).startswith(f"{adapter.framework}:"), f"an Unsupported message must name the framework: {e}"
        pytest.skip(f"not configurable: {e}")


def _run_or_skip(adapter: LayerAdapter, inputs: LayerInputs, spec: LayerSpec, **kw: object) -> LayerOutputs:
    """adapter.run, skipping on a refusal that depends on the input's shape (raised by `build`, as the harness
    records it)."""
    try:
        return adapter.run(inputs, spec=spec, **kw)
    except Unsupported as e:
        assert str(e).startswith(f"{adapter.framework}:"), f"an Unsupported message must name the framework: {e}"
        pytest.skip(f"not runnable on this input: {e}")


@pytest.mark.parametrize("variant", VARIANTS, ids=IDS)
def test_class_attributes_agree_with_the_descriptor(variant):
    framework, norm, impl, _ = variant
    adapter = _make(*variant)
    d = next(x for x in descriptors() if x.name == framework)
    assert (adapter.framework, adapter.normalization, adapter.impl) == (framework, norm, impl)
    # trailing-axes normalizations (LayerNorm, RMSNorm) run channels-last everywhere; the others natively
    trailing = issubclass(normalization(norm).spec_type, TrailingSpec)
    assert adapter.native_axis == (-1 if trailing else d.native_axis)
    normalization(adapter.normalization)  # a plug-in of that name exists


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize(("variant", "case"), CASES, ids=CASE_IDS)
def test_matches_the_reference_within_the_gate_tolerance(variant, case, dtype):
    adapter = _make(*variant)
    shape, asked = GRIDS[variant[1]][case]
    inputs = _inputs(shape, asked.axis, dtype, seed=len(case) * 7 + len(shape), spec=asked)
    spec = _realized_or_skip(adapter, asked, inputs.dtype)
    got = _run_or_skip(adapter, inputs, spec)
    ref = run_reference(spec, inputs)
    problems = _judge(spec, inputs, got, ref)
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
@pytest.mark.parametrize("variant", VARIANTS, ids=IDS)
def test_reduced_precision_within_the_gate_tolerance(variant, dtype):
    if dtype == "bfloat16":
        dtype = np.dtype(pytest.importorskip("ml_dtypes").bfloat16)
    adapter = _make(*variant)
    shape, asked = _grid(variant[1])[REPRESENTATIVE[variant[1]]]
    inputs = _inputs(shape, asked.axis, dtype, seed=3, spec=asked)
    spec = _realized_or_skip(adapter, asked, inputs.dtype)
    problems = _judge(spec, inputs, _run_or_skip(adapter, inputs, spec), run_reference(spec, inputs))
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("variant", VARIANTS, ids=IDS)
def test_realize_is_idempotent_and_keeps_the_spec_type(variant):
    adapter = _make(*variant)
    for spec in (s for _, s in _grid(variant[1]).values()):
        try:
            once = adapter.realize(spec, np.dtype("float32"))
        except Unsupported:
            continue
        assert type(once) is type(spec)
        assert adapter.realize(once, np.dtype("float32")) == once
        # realize changes only conventions the framework cannot configure, never the layout, and ε at most by its
        # rounding to float32 (MXNet's LayerNorm, GroupNorm and InstanceNorm operators store ε as a float)
        assert (once.axis, once.affine) == (spec.axis, spec.affine)
        assert once.eps in (spec.eps, float(np.float32(spec.eps)))


@pytest.mark.parametrize("variant", VARIANTS, ids=IDS)
def test_outputs_have_the_input_layout_and_inputs_are_untouched(variant):
    adapter = _make(*variant)
    grid = _grid(variant[1])
    shape, asked = grid.get("nhwc", grid[REPRESENTATIVE[variant[1]]])
    inputs = _inputs(shape, asked.axis, "float32", seed=11, spec=asked)
    before = [a.copy() for a in (*inputs.xs, *inputs.dys, inputs.x_eval, inputs.gamma, inputs.beta)]
    spec = _realized_or_skip(adapter, asked, inputs.dtype)
    first = _run_or_skip(adapter, inputs, spec)
    after = [*inputs.xs, *inputs.dys, inputs.x_eval, inputs.gamma, inputs.beta]
    for a, b in zip(before, after, strict=True):
        np.testing.assert_array_equal(a, b)
    ref = run_reference(spec, inputs)
    for name, r in ref.as_dict().items():
        g = first.as_dict()[name]
        assert (g is None) == (r is None), f"{name}: present in {'the adapter' if r is None else 'the reference'} only"
        if r is not None:
            assert np.shape(g) == r.shape, name
    second = adapter.run(inputs, spec=spec)  # a fresh layer: the same bits
    for name, g in first.as_dict().items():
        if g is not None:
            np.testing.assert_array_equal(second.as_dict()[name], g, err_msg=name)


@pytest.mark.parametrize("variant", VARIANTS, ids=IDS)
def test_defaults_mode_runs_and_reproduces_the_registry_row(variant):
    framework, norm, impl, _ = variant
    if impl != "builtin":
        pytest.skip("a scratch layer has no defaults of its own")
    adapter = _make(*variant)
    row = convention(framework, norm)
    if norm == "batchnorm":
        shape = (8, 3, 4) if row.channel_axis == 1 else (8, 4, 3)
        asked = row.spec()
    else:  # the representative case's structure (layout, groups, ...) at the framework's defaults
        shape, case_spec = _grid(norm)[REPRESENTATIVE[norm]]
        asked = row.spec(dtype=np.dtype("float64"), **case_spec.structure())
    # float64, or float32 where the layer refuses float64 (Keras' layers compute float32 off TensorFlow): the
    # defaults are judged either way
    dtype = "float64"
    try:
        adapter.realize(asked, np.dtype(dtype))
    except Unsupported:
        dtype = "float32"
    inputs = _inputs(shape, asked.axis, dtype, seed=5, spec=asked)
    spec = _realized_or_skip(adapter, asked, inputs.dtype)
    problems = _judge(spec, inputs, _run_or_skip(adapter, inputs, spec, use_defaults=True),
                      run_reference(spec, inputs))
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("variant", VARIANTS, ids=IDS)
def test_a_dtype_the_framework_has_no_float_for_is_unsupported_naming_it(variant):
    adapter = _make(*variant)
    _, spec = _grid(variant[1])[REPRESENTATIVE[variant[1]]]
    with pytest.raises(Unsupported, match=rf"^{adapter.framework}: "):
        adapter.realize(spec, np.dtype("int32"))


def test_the_contract_can_fail():
    """The judge is not vacuous: a layer that forgets the initial running mean fails it."""
    shape, spec = GRID["nc"]
    inputs = _inputs(shape, spec.axis, "float64", seed=1)
    ref = run_reference(spec, inputs)
    wrong = dataclasses.replace(ref, running_mean=run_reference(spec.replace(init_running_mean=0.0),
                                                                inputs).running_mean)
    problems = _judge(spec, inputs, wrong, ref)
    assert len(problems) == 1 and problems[0].startswith("running_mean")
