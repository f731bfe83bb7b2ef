"""The parity cases: the standard matrix (the gate) and the hard inputs (findings), with their data.

Every case's data comes from a NumPy generator seeded by the case's name, so every framework and the
reference see the same values. Inputs are rounded to the case's dtype *before* anyone sees them, and
γ, β are chosen representable in that dtype: the reference then computes on exactly the values the
framework holds, and any difference is the framework's arithmetic, not the input's rounding.
"""

from __future__ import annotations

import dataclasses
import zlib
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from bnparity.reference.spec import BNSpec, GNSpec, INSpec, LayerSpec, LNSpec, RMSSpec
from bnparity.reference.steps import LayerInputs


@dataclass(frozen=True)
class ParityCase:
    """One configuration of the parity suite.

    Attributes:
        name: unique and stable, used in records and on the command line. BatchNorm's cases keep the first
            release's names ("nchw-4x8x6x6-float32"); the other normalizations' start with theirs
            ("groupnorm-nchw-4x8x6x6-float32-g2").
        shape: input shape, channel (feature) axis at `spec.axis`.
        spec: the canonical semantics of the case: the normalization's spec, at PyTorch's defaults for every field
            the case does not set (the matched-mode reference; in defaults mode its STRUCTURE fields are kept).
        dtype: "float64", "float32", "float16" or "bfloat16".
        steps: training steps before the eval pass.
        gate: True for the standard matrix (a failure fails the run), False for hard inputs (findings).
        gate_modes: the harness modes in which a gated case is gated (see `gated`); the others record it as a
            finding. A case whose failure in "defaults" mode is a documented convention of a framework (Flax's
            default E[x²] − E[x]² on an offset input) is gated in "matched" mode only.
        loc: range of the per-channel means of the data.
        spread: range of the per-channel standard deviations of the data.
        special: "constant-channel", "tiny-variance-channel" (channel 0 is made so) or "constant-sample" (sample 0
            is constant: σ² = 0 for a per-sample statistic).
        note: what the case probes, for the reports.
    """

    name: str
    shape: tuple[int, ...]
    spec: LayerSpec
    dtype: str
    steps: int = 3
    gate: bool = True
    gate_modes: tuple[str, ...] = ("matched", "defaults")
    loc: tuple[float, float] = (-2.0, 2.0)
    spread: tuple[float, float] = (0.5, 3.0)
    special: str | None = None
    note: str = ""

    @property
    def axis(self) -> int:
        return self.spec.axis

    @property
    def normalization(self) -> str:
        return self.spec.normalization

    def gated(self, mode: str) -> bool:
        """Whether a failure of this case in harness mode `mode` ("matched" or "defaults") fails the run."""
        return self.gate and mode in self.gate_modes

    @property
    def channels(self) -> int:
        return self.shape[self.axis]


_LAYOUTS = {
    "nc": 1, "ncl": 1, "nlc": -1, "nchw": 1, "nhwc": -1, "ncdhw": 1,
}


def _name(prefix: str, layout: str, shape: tuple[int, ...], dtype: str, suffix: str) -> str:
    return f"{prefix}{layout}-{'x'.join(map(str, shape))}-{dtype}{'-' + suffix if suffix else ''}"


def _case(layout: str, shape: tuple[int, ...], dtype: str, suffix: str = "", *, spec: LayerSpec | None = None,
          **kw: object) -> ParityCase:
    """A case named after its layout, shape, dtype and suffix; BatchNorm unless `spec` says otherwise (whose axis is
    the layout's)."""
    spec, ndim = spec or BNSpec(), len(shape)
    if spec.axis % ndim != _LAYOUTS[layout] % ndim:  # (a trailing-axes spec keeps its -1 for "nc")
        spec = spec.replace(axis=_LAYOUTS[layout])
    prefix = "" if spec.normalization == BNSpec.normalization else f"{spec.normalization}-"
    return ParityCase(name=_name(prefix, layout, shape, dtype, suffix), shape=shape, spec=spec, dtype=dtype, **kw)


def _bn(layout: str, shape: tuple[int, ...], dtype: str, suffix: str = "", *, note: str = "",
        steps: int = 3, **spec_fields: object) -> ParityCase:
    return _case(layout, shape, dtype, suffix, spec=BNSpec(**spec_fields), note=note, steps=steps)


def _batchnorm_cases() -> list[ParityCase]:
    """BatchNorm's gate: ranks 2/3/4, both layouts, batches from 2 to large, float32 and float64, variants.

    The variants include one case per bug a porter makes that the other cases cannot see (tests/test_gate.py
    proves each one fails a layer with that bug): a momentum that weighs the old estimate (passed on without
    converting its meaning), non-default initial running statistics (ignored), and an offset float32 input
    (σ²_B computed as E[x²] − E[x]²).
    """
    shapes = [("nc", (2, 4)), ("nc", (32, 16)), ("nc", (1024, 64)), ("ncl", (8, 6, 10)), ("nlc", (8, 10, 6)),
              ("nchw", (4, 8, 6, 6)), ("nhwc", (4, 6, 6, 8)), ("nchw", (64, 16, 8, 8))]
    cases = [_bn(layout, shape, dtype) for layout, shape in shapes for dtype in ("float32", "float64")]
    for dtype in ("float32", "float64"):
        cases += [
            _bn("nchw", (4, 8, 6, 6), dtype, "affine_off", affine=False, note="affine=False"),
            _bn("nchw", (4, 8, 6, 6), dtype, "no_running_stats", track_running_stats=False,
                note="track_running_stats=False: eval uses batch statistics"),
            _bn("nchw", (8, 8, 6, 6), dtype, "momentum0.3-10steps", momentum=0.3, steps=10,
                note="10 steps with momentum 0.3"),
            _bn("nchw", (8, 8, 6, 6), dtype, "momentum_old0.9", momentum=0.9, momentum_weighs="old",
                note="momentum 0.9 weighing the old estimate (MXNet's and Flax's meaning; PyTorch's 0.1)"),
        ]
    # An ε the layer is not given (the default 1e-5 used whatever is asked) shows only where the case asks another.
    cases.append(_bn("nchw", (4, 8, 6, 6), "float32", "eps1e-3", eps=1e-3, note="ε = 1e-3 (not the default 1e-5)"))
    # Ignored initial statistics are off by their whole value: float32 shows it (float64 would add only time).
    cases.append(_bn("nchw", (4, 8, 6, 6), "float32", "init0.5-2", init_running_mean=0.5, init_running_var=2.0,
                     note="running statistics start at mean 0.5, variance 2 (not 0 and 1)"))
    # Gated in matched mode only: left at its default (use_fast_variance=True) Flax computes E[x²] − E[x]², which
    # fails here by design; in defaults mode that is the registry's documented variance_algorithm, a finding.
    cases.append(dataclasses.replace(
        _bn("nchw", (16, 4, 8, 8), "float32", "offset100"), loc=(100.0, 100.0), spread=(1.0, 1.0),
        gate_modes=("matched",),
        note="100 + N(0,1), κ ≈ 106: measured, two-pass σ²_B stays within 0.41 of the tolerance (MXNet, XLA; "
             "PyTorch 0.04), E[x²] − E[x]² exceeds it 11× (NumPy float32) and 71× (Flax use_fast_variance)"))
    return cases


_EPS_NOTE = "ε = 1e-3: a layer not given the spec's ε (its default used whatever is asked) fails here"
_OFFSET_NOTE = ("100 + N(0,1) per feature: gated in matched mode; at its defaults Flax computes E[x²] − E[x]² "
                "(use_fast_variance=True), which this input is built to expose (a defaults-mode finding)")


def _offset(case: ParityCase) -> ParityCase:
    return dataclasses.replace(case, loc=(100.0, 100.0), spread=(1.0, 1.0), gate_modes=("matched",), note=_OFFSET_NOTE)


def _layernorm_cases() -> list[ParityCase]:
    """LayerNorm's gate: one or two normalized trailing axes, γ/β elementwise or per feature, β off, affine off."""
    ln = LNSpec()
    cases = []
    for dtype in ("float32", "float64"):
        cases += [
            _case("nc", (32, 16), dtype, spec=ln),
            _case("nlc", (8, 10, 16), dtype, spec=ln, note="a transformer's (batch, tokens, features)"),
            _case("nlc", (8, 10, 16), dtype, "dims2", spec=ln.replace(normalized_dims=2),
                  note="normalized over (tokens, features), γ/β elementwise (PyTorch's normalized_shape=(L, C))"),
            _case("nhwc", (4, 6, 6, 8), dtype, spec=ln, note="channels-last image, normalized over the channels"),
            _case("nlc", (8, 10, 16), dtype, "affine_off", spec=ln.replace(affine=False), note="no γ, β"),
        ]
    cases += [
        _case("nc", (64, 256), "float32", spec=ln, note="256 features"),
        _case("nlc", (8, 10, 16), "float32", "dims2-feature", spec=ln.replace(normalized_dims=2, params="feature"),
              note="normalized over (tokens, features), γ/β per feature only (Flax's feature_axes=-1 default)"),
        _case("nlc", (8, 10, 16), "float32", "bias_off", spec=ln.replace(bias=False),
              note="γ without β (PyTorch bias=False)"),
        _case("nlc", (8, 10, 16), "float32", "eps1e-3", spec=ln.replace(eps=1e-3), note=_EPS_NOTE),
        _offset(_case("nlc", (8, 10, 16), "float32", "offset100", spec=ln)),
    ]
    return cases


def _groupnorm_cases() -> list[ParityCase]:
    """GroupNorm's gate: G = 1, 2 and C, ranks 2 to 5, both layouts (the channel-to-group assignment must not
    depend on the layout), per-channel and per-group γ/β, a batch of one (where BatchNorm has no statistics)."""
    gn = GNSpec(groups=2)
    cases = []
    for dtype in ("float32", "float64"):
        cases += [
            _case("nchw", (4, 8, 6, 6), dtype, "g2", spec=gn),
            _case("nhwc", (4, 6, 6, 8), dtype, "g2", spec=gn, note="channels-last: the same channel-to-group map"),
            _case("nchw", (4, 8, 6, 6), dtype, "g1", spec=gn.replace(groups=1), note="G = 1: LayerNorm over (C, H, W)"),
            _case("nchw", (4, 8, 6, 6), dtype, "g8", spec=gn.replace(groups=8), note="G = C: InstanceNorm"),
            _case("nchw", (4, 8, 6, 6), dtype, "g2-group_params", spec=gn.replace(params="group"),
                  note="one γ and β per group (MXNet 1.9's gluon.nn.GroupNorm)"),
        ]
    cases += [
        _case("nc", (16, 8), "float32", "g4", spec=gn.replace(groups=4), note="2-D input (after a dense layer)"),
        _case("ncl", (4, 8, 10), "float32", "g4", spec=gn.replace(groups=4)),
        _case("ncdhw", (2, 8, 3, 4, 4), "float32", "g4", spec=gn.replace(groups=4)),
        _case("nhwc", (4, 6, 6, 8), "float32", "g4-group_params", spec=gn.replace(groups=4, params="group"),
              note="per-group γ/β, channels-last"),
        _case("nchw", (1, 8, 6, 6), "float32", "g2-batch1", spec=gn, note="a batch of one: statistics per sample"),
        _case("nchw", (4, 8, 6, 6), "float32", "g2-affine_off", spec=gn.replace(affine=False), note="no γ, β"),
        _case("nchw", (4, 8, 6, 6), "float32", "g2-eps1e-3", spec=gn.replace(eps=1e-3), note=_EPS_NOTE),
        _offset(_case("nchw", (4, 8, 6, 6), "float32", "g2-offset100", spec=gn)),
    ]
    return cases


def _instancenorm_cases() -> list[ParityCase]:
    """InstanceNorm's gate: ranks 3 to 5, both layouts, with γ/β and running statistics (PyTorch's options)."""
    inorm = INSpec()
    cases = []
    for dtype in ("float32", "float64"):
        cases += [
            _case("ncl", (4, 6, 10), dtype, spec=inorm),
            _case("nchw", (4, 8, 6, 6), dtype, spec=inorm),
            _case("nhwc", (4, 6, 6, 8), dtype, spec=inorm),
            _case("nchw", (4, 8, 6, 6), dtype, "affine", spec=inorm.replace(affine=True), note="with γ, β"),
            _case("nchw", (4, 8, 6, 6), dtype, "running_stats", spec=inorm.replace(track_running_stats=True),
                  note="track_running_stats=True: eval uses the running statistics (PyTorch only)"),
        ]
    cases += [
        _case("ncdhw", (2, 4, 3, 4, 4), "float32", spec=inorm),
        _case("nchw", (4, 8, 6, 6), "float32", "eps1e-3", spec=inorm.replace(eps=1e-3), note=_EPS_NOTE),
        _case("nchw", (8, 4, 6, 6), "float32", "running_stats-momentum_old0.9",
              spec=inorm.replace(track_running_stats=True, momentum=0.9, momentum_weighs="old"),
              note="running statistics, momentum 0.9 weighing the old estimate"),
        _offset(_case("nchw", (4, 8, 6, 6), "float32", "offset100", spec=inorm)),
    ]
    return cases


def _rmsnorm_cases() -> list[ParityCase]:
    """RMSNorm's gate: one or two trailing axes, γ elementwise or per feature, γ off. ε is set (1e-6) in every case:
    PyTorch's default (eps=None) is the dtype's machine epsilon, a defaults-mode convention."""
    rms = RMSSpec(eps=1e-6)
    cases = []
    for dtype in ("float32", "float64"):
        cases += [
            _case("nc", (32, 16), dtype, spec=rms),
            _case("nlc", (8, 10, 16), dtype, spec=rms),
            _case("nlc", (8, 10, 16), dtype, "dims2", spec=rms.replace(normalized_dims=2),
                  note="normalized over (tokens, features), γ elementwise"),
            _case("nlc", (8, 10, 16), dtype, "affine_off", spec=rms.replace(affine=False), note="no γ"),
        ]
    cases += [
        _case("nc", (64, 256), "float32", spec=rms, note="256 features"),
        _case("nlc", (8, 10, 16), "float32", "eps1e-3", spec=rms.replace(eps=1e-3), note=_EPS_NOTE),
        _case("nlc", (8, 10, 16), "float32", "dims2-feature", spec=rms.replace(normalized_dims=2, params="feature"),
              note="normalized over (tokens, features), γ per feature only (Flax's feature_axes=-1 default)"),
        dataclasses.replace(_case("nlc", (8, 10, 16), "float32", "offset100", spec=rms), loc=(100.0, 100.0),
                            spread=(1.0, 1.0), note="100 + N(0,1): no mean is subtracted, nothing cancels"),
    ]
    return cases


_STANDARD = {
    "batchnorm": _batchnorm_cases,
    "layernorm": _layernorm_cases,
    "groupnorm": _groupnorm_cases,
    "instancenorm": _instancenorm_cases,
    "rmsnorm": _rmsnorm_cases,
}


def standard_cases(normalizations: Iterable[str] | None = None) -> list[ParityCase]:
    """The gate of the given normalizations (default: every one), BatchNorm's first."""
    names = tuple(_STANDARD) if normalizations is None else tuple(normalizations)
    return [case for name in names for case in _STANDARD[name]()]


def _batchnorm_hard_cases() -> list[ParityCase]:
    """BatchNorm's findings: inputs that separate a careful implementation from a naive one."""
    shape, f32 = (16, 4, 8, 8), "float32"
    return [
        _case("nchw", shape, f32, "offset1e4", gate=False, loc=(1e4, 1e4), spread=(1.0, 1.0),
              note="1e4 + N(0,1): E[x²] − E[x]² cancels catastrophically in float32"),
        _case("nchw", shape, f32, "offset1e6", gate=False, loc=(1e6, 1e6), spread=(1.0, 1.0),
              note="1e6 + N(0,1): float32 resolves 0.06 at 1e6"),
        _case("nchw", shape, f32, "constant-channel", gate=False, special="constant-channel",
              note="channel 0 is constant (σ²_B = 0)"),
        _case("nchw", shape, f32, "tiny-variance", gate=False, special="tiny-variance-channel",
              note="channel 0 has σ²_B ≈ ε"),
        _case("nchw", shape, f32, "huge1e18", gate=False, loc=(0.0, 0.0), spread=(1e18, 1e18),
              note="N(0, 1e36): x² overflows float32 sums"),
        _case("nc", (2, 16), f32, "batch2", gate=False, note="batch of 2"),
        _case("nc", (1, 16), f32, "batch1", gate=False,
              note="batch of 1 in 1-D: σ²_B = 0 and the unbiased running variance is undefined"),
        _case("ncl", (1, 4, 16), f32, "batch1", gate=False, note="batch of 1 with a length axis"),
        _case("nchw", shape, "float16", "half", gate=False, note="float16 inputs"),
        _case("nchw", shape, "bfloat16", "half", gate=False, note="bfloat16 inputs"),
        _case("nchw", (8, 4, 6, 6), f32, "100steps", gate=False, steps=100,
              note="100 training steps (running-statistics drift), then eval"),
    ]


def _per_sample_hard_cases(prefix_spec: LayerSpec, layout: str, shape: tuple[int, ...]) -> list[ParityCase]:
    """The findings of a normalization with per-sample statistics: offsets, a constant sample, a small spread
    (where ε's default matters), half precision."""
    f32 = "float32"

    def case(dtype: str, suffix: str, **kw: object) -> ParityCase:
        return dataclasses.replace(_case(layout, shape, dtype, suffix, spec=prefix_spec), gate=False, **kw)

    return [
        case(f32, "offset1e4", loc=(1e4, 1e4), spread=(1.0, 1.0),
             note="1e4 + N(0,1): E[x²] − E[x]² cancels catastrophically in float32"),
        case(f32, "spread0.01", loc=(10.0, 10.0), spread=(0.01, 0.01),
             note="10 + N(0, 0.01²): a spread small relative to the mean (κ ≈ 1000) and σ² = 1e-4 only 10× ε = 1e-5"),
        case(f32, "centred-spread0.01", loc=(0.0, 0.0), spread=(0.01, 0.01),
             note="N(0, 0.01²): nothing cancels (κ ≈ 1), σ² = 1e-4: ε = 1e-6 instead of 1e-5 changes y by ~4%"),
        case(f32, "constant-sample", special="constant-sample", note="sample 0 is constant (σ² = 0)"),
        case("float16", "half", note="float16 inputs"),
        case("bfloat16", "half", note="bfloat16 inputs"),
    ]


def _layernorm_hard_cases() -> list[ParityCase]:
    return _per_sample_hard_cases(LNSpec(), "nlc", (8, 10, 16))


def _groupnorm_hard_cases() -> list[ParityCase]:
    return _per_sample_hard_cases(GNSpec(groups=2), "nchw", (4, 8, 6, 6))


def _instancenorm_hard_cases() -> list[ParityCase]:
    return _per_sample_hard_cases(INSpec(), "nchw", (4, 8, 6, 6))


def _rmsnorm_hard_cases() -> list[ParityCase]:
    return _per_sample_hard_cases(RMSSpec(eps=1e-6), "nlc", (8, 10, 16))


_HARD = {
    "batchnorm": _batchnorm_hard_cases,
    "layernorm": _layernorm_hard_cases,
    "groupnorm": _groupnorm_hard_cases,
    "instancenorm": _instancenorm_hard_cases,
    "rmsnorm": _rmsnorm_hard_cases,
}


def hard_cases(normalizations: Iterable[str] | None = None) -> list[ParityCase]:
    """Findings, not gates, of the given normalizations (default: every one)."""
    names = tuple(_HARD) if normalizations is None else tuple(normalizations)
    return [case for name in names for case in _HARD[name]()]


def case_normalizations() -> tuple[str, ...]:
    """The normalizations that have parity cases."""
    return tuple(_STANDARD)


def numpy_dtype(name: str) -> np.dtype:
    """The NumPy dtype of a case; bfloat16 comes from ml_dtypes (installed with jax). ValueError if absent."""
    if name == "bfloat16":
        try:
            import ml_dtypes
        except ImportError:
            raise ValueError("bfloat16 needs the ml_dtypes package (installed with bnparity[jax])") from None
        return np.dtype(ml_dtypes.bfloat16)
    return np.dtype(name)


def _rounded(a: np.ndarray, dtype: np.dtype) -> np.ndarray:
    return np.asarray(a, dtype=np.float64).astype(dtype)


def make_inputs(case: ParityCase) -> LayerInputs:
    """The case's data: `steps` inputs and upstream gradients, an eval input, γ and β."""
    rng = np.random.default_rng([0, zlib.crc32(case.name.encode())])
    dtype = numpy_dtype(case.dtype)
    c, ndim = case.channels, len(case.shape)
    param_shape = case.spec.param_shape(case.shape)
    bshape = [1] * ndim
    bshape[case.axis % ndim] = c
    loc = rng.uniform(*case.loc, size=c).reshape(bshape)
    spread = rng.uniform(*case.spread, size=c).reshape(bshape)

    def sample() -> np.ndarray:
        x = loc + spread * rng.standard_normal(case.shape)
        ch0 = [slice(None)] * ndim
        ch0[case.axis % ndim] = 0
        if case.special == "constant-channel":
            x[tuple(ch0)] = 3.0
        elif case.special == "tiny-variance-channel":
            x[tuple(ch0)] = 1.0 + np.sqrt(1e-5) * rng.standard_normal(x[tuple(ch0)].shape)
        elif case.special == "constant-sample":
            x[0] = 3.0
        return _rounded(x, dtype)

    xs = tuple(sample() for _ in range(case.steps))
    dys = tuple(_rounded(rng.standard_normal(case.shape), dtype) for _ in range(case.steps))
    x_eval = sample()
    # γ and β exactly representable in the case's dtype (the framework stores them in it).
    gamma = _rounded(rng.normal(1.0, 0.5, size=param_shape), dtype).astype(np.float64)
    beta = _rounded(rng.normal(0.0, 0.5, size=param_shape), dtype).astype(np.float64)
    return LayerInputs(xs=xs, dys=dys, x_eval=x_eval, gamma=gamma, beta=beta)
