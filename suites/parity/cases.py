"""The parity cases: the standard matrix (the gate) and the hard inputs (findings), with their data.

Every case's data comes from a NumPy generator seeded by the case's name, so every framework and the
reference see the same values. Inputs are rounded to the case's dtype *before* anyone sees them, and
γ, β are chosen representable in that dtype: the reference then computes on exactly the values the
framework holds, and any difference is the framework's arithmetic, not the input's rounding.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np

from bnparity.reference.spec import BNSpec, MomentumWeighs
from bnparity.reference.steps import LayerInputs


@dataclass(frozen=True)
class ParityCase:
    """One configuration of the parity suite.

    Attributes:
        name: unique and stable, used in records and on the command line.
        shape: input shape, channel axis at `axis`.
        axis: 1 (channels-first) or -1 (channels-last).
        dtype: "float64", "float32", "float16" or "bfloat16".
        steps: training steps before the eval pass.
        affine, track_running_stats, momentum, momentum_weighs, init_running_mean, init_running_var: the
            canonical spec (see BNSpec; by default momentum 0.1 weighs the new batch, as in PyTorch).
        gate: True for the standard matrix (a failure fails the run), False for hard inputs (findings).
        gate_modes: the harness modes in which a gated case is gated (see `gated`); the others record it as a
            finding. A case whose failure in "defaults" mode is a documented convention of a framework (Flax's
            default E[x²] − E[x]² on an offset input) is gated in "matched" mode only.
        loc: range of the per-channel means of the data.
        spread: range of the per-channel standard deviations of the data.
        special: "constant-channel" or "tiny-variance-channel": channel 0 is made so.
        note: what the case probes, for the reports.
    """

    name: str
    shape: tuple[int, ...]
    axis: int
    dtype: str
    steps: int = 3
    affine: bool = True
    track_running_stats: bool = True
    momentum: float = 0.1
    momentum_weighs: MomentumWeighs = "new"
    init_running_mean: float = 0.0
    init_running_var: float = 1.0
    gate: bool = True
    gate_modes: tuple[str, ...] = ("matched", "defaults")
    loc: tuple[float, float] = (-2.0, 2.0)
    spread: tuple[float, float] = (0.5, 3.0)
    special: str | None = None
    note: str = ""

    @property
    def spec(self) -> BNSpec:
        """The canonical semantics of this case (PyTorch's defaults for every field the case does not set)."""
        return BNSpec(axis=self.axis, momentum=self.momentum, momentum_weighs=self.momentum_weighs,
                      affine=self.affine, track_running_stats=self.track_running_stats,
                      init_running_mean=self.init_running_mean, init_running_var=self.init_running_var)

    def gated(self, mode: str) -> bool:
        """Whether a failure of this case in harness mode `mode` ("matched" or "defaults") fails the run."""
        return self.gate and mode in self.gate_modes

    @property
    def channels(self) -> int:
        return self.shape[self.axis]


_LAYOUTS = {
    "nc": 1, "ncl": 1, "nlc": -1, "nchw": 1, "nhwc": -1,
}


def _case(layout: str, shape: tuple[int, ...], dtype: str, suffix: str = "", **kw: object) -> ParityCase:
    name = f"{layout}-{'x'.join(map(str, shape))}-{dtype}{'-' + suffix if suffix else ''}"
    return ParityCase(name=name, shape=shape, axis=_LAYOUTS[layout], dtype=dtype, **kw)


def standard_cases() -> list[ParityCase]:
    """The gate: ranks 2/3/4, both layouts, batches from 2 to large, float32 and float64, variants.

    The variants include one case per bug a porter makes that the other cases cannot see (tests/test_gate.py
    proves each one fails a layer with that bug): a momentum that weighs the old estimate (passed on without
    converting its meaning), non-default initial running statistics (ignored), and an offset float32 input
    (σ²_B computed as E[x²] − E[x]²).
    """
    shapes = [("nc", (2, 4)), ("nc", (32, 16)), ("nc", (1024, 64)), ("ncl", (8, 6, 10)), ("nlc", (8, 10, 6)),
              ("nchw", (4, 8, 6, 6)), ("nhwc", (4, 6, 6, 8)), ("nchw", (64, 16, 8, 8))]
    cases = [_case(layout, shape, dtype) for layout, shape in shapes for dtype in ("float32", "float64")]
    for dtype in ("float32", "float64"):
        cases += [
            _case("nchw", (4, 8, 6, 6), dtype, "affine_off", affine=False, note="affine=False"),
            _case("nchw", (4, 8, 6, 6), dtype, "no_running_stats", track_running_stats=False,
                  note="track_running_stats=False: eval uses batch statistics"),
            _case("nchw", (8, 8, 6, 6), dtype, "momentum0.3-10steps", momentum=0.3, steps=10,
                  note="10 steps with momentum 0.3"),
            _case("nchw", (8, 8, 6, 6), dtype, "momentum_old0.9", momentum=0.9, momentum_weighs="old",
                  note="momentum 0.9 weighing the old estimate (MXNet's and Flax's meaning; PyTorch's 0.1)"),
        ]
    # Ignored initial statistics are off by their whole value: float32 shows it (float64 would add only time).
    cases.append(_case("nchw", (4, 8, 6, 6), "float32", "init0.5-2", init_running_mean=0.5, init_running_var=2.0,
                       note="running statistics start at mean 0.5, variance 2 (not 0 and 1)"))
    # Gated in matched mode only: left at its default (use_fast_variance=True) Flax computes E[x²] − E[x]², which
    # fails here by design; in defaults mode that is the registry's documented variance_algorithm, a finding.
    cases.append(_case(
        "nchw", (16, 4, 8, 8), "float32", "offset100", loc=(100.0, 100.0), spread=(1.0, 1.0), gate_modes=("matched",),
        note="100 + N(0,1), κ ≈ 106: measured, two-pass σ²_B stays within 0.41 of the tolerance (MXNet, XLA; "
             "PyTorch 0.04), E[x²] − E[x]² exceeds it 11× (NumPy float32) and 71× (Flax use_fast_variance)"))
    return cases


def hard_cases() -> list[ParityCase]:
    """Findings, not gates: inputs that separate a careful implementation from a naive one."""
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
        return _rounded(x, dtype)

    xs = tuple(sample() for _ in range(case.steps))
    dys = tuple(_rounded(rng.standard_normal(case.shape), dtype) for _ in range(case.steps))
    x_eval = sample()
    # γ and β exactly representable in the case's dtype (the framework stores them in it).
    gamma = _rounded(rng.normal(1.0, 0.5, size=c), dtype).astype(np.float64)
    beta = _rounded(rng.normal(0.0, 0.5, size=c), dtype).astype(np.float64)
    return LayerInputs(xs=xs, dys=dys, x_eval=x_eval, gamma=gamma, beta=beta)
