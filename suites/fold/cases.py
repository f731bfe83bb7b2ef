"""The layer cases of `bnparity fold`: what porters report breaking when they fold BatchNorm for inference.

Each class of case (a convolution with bias, without bias, grouped (groups = 2), depthwise, with negative γ, with a
running variance near 0 in some channels, a dense layer with and without bias) runs in float64, float32 and
float16, and the convolutions in NCHW and NHWC: 42 small cases, a few seconds per framework. Every array is drawn
in float64 from a generator seeded by the case's name and rounded to the case's dtype, so the framework and the
float64 reference see the same numbers.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np

from bnparity.frameworks.folding import FoldCase

DTYPES = ("float64", "float32", "float16")
LAYOUTS = ("NCHW", "NHWC")
EPS = 1e-5
TINY_VAR = 1e-8  # a channel that was (nearly) constant in training: s = γ/√(1e-8 + ε) ≈ 316 γ


@dataclass(frozen=True)
class CaseClass:
    """One kind of layer + BatchNorm, before a dtype and layout are chosen.

    Attributes:
        name: the class's name ("conv-bias", "depthwise", ...).
        kind: "conv" or "dense".
        groups: the convolution's groups (0: depthwise, one per input channel).
        bias: whether the layer has a bias.
        negative_gamma: γ < 0 in every other channel.
        tiny_var: the running variance is TINY_VAR in channels 0 and 2.
        description: for the report.
    """

    name: str
    kind: str
    groups: int = 1
    bias: bool = True
    negative_gamma: bool = False
    tiny_var: bool = False
    description: str = ""


CLASSES = (
    CaseClass("conv-bias", "conv", description="3x3 convolution with bias"),
    CaseClass("conv-nobias", "conv", bias=False, description="convolution without bias (b = 0: b' = β − s·μ)"),
    CaseClass("grouped", "conv", groups=2, description="grouped convolution, groups = 2"),
    CaseClass("depthwise", "conv", groups=0, description="depthwise convolution (groups = channels)"),
    CaseClass("negative-gamma", "conv", negative_gamma=True, description="γ < 0 in half the channels"),
    CaseClass("tiny-variance", "conv", tiny_var=True,
              description=f"running variance {TINY_VAR:g} in two channels (|s| ≈ 316·|γ|)"),
    CaseClass("dense-bias", "dense", description="dense layer with bias"),
    CaseClass("dense-nobias", "dense", bias=False, tiny_var=True,
              description=f"dense layer without bias, running variance {TINY_VAR:g} in two features"),
)

CHANNELS_IN, CHANNELS_OUT, SIZE, BATCH, KERNEL = 4, 8, 6, 2, 3
FEATURES_IN, FEATURES_OUT = 24, 8


def _rng(name: str) -> np.random.Generator:
    return np.random.default_rng(zlib.crc32(name.encode()))


def make_case(cls: CaseClass, dtype: str, layout: str = "NCHW") -> FoldCase:
    """The case of class `cls` in `dtype` (and `layout` for a convolution), its arrays rounded to `dtype`."""
    rng = _rng(f"{cls.name}/{dtype}")  # the same numbers in both layouts
    dt = np.dtype(dtype)

    def draw(a: np.ndarray) -> np.ndarray:
        return np.asarray(a, dtype=dt).astype(np.float64)  # representable in the dtype

    out = CHANNELS_OUT if cls.kind == "conv" else FEATURES_OUT
    if cls.kind == "conv":
        groups = CHANNELS_IN if cls.groups == 0 else cls.groups
        out = CHANNELS_IN if cls.groups == 0 else CHANNELS_OUT  # depthwise: one filter per input channel
        x = rng.standard_normal((BATCH, CHANNELS_IN, SIZE, SIZE))
        fan = CHANNELS_IN // groups * KERNEL * KERNEL
        weight = rng.uniform(-1, 1, (out, CHANNELS_IN // groups, KERNEL, KERNEL)) * np.sqrt(3.0 / fan)
    else:
        groups, layout = 1, "NC"
        x = rng.standard_normal((BATCH * 4, FEATURES_IN))
        weight = rng.uniform(-1, 1, (out, FEATURES_IN)) * np.sqrt(3.0 / FEATURES_IN)
    bias = rng.normal(0.0, 0.5, out) if cls.bias else None
    gamma = rng.normal(1.0, 0.3, out)
    if cls.negative_gamma:
        gamma[::2] *= -1.0
    beta, mean = rng.normal(0.0, 0.5, out), rng.normal(0.0, 1.0, out)
    var = rng.uniform(0.5, 2.0, out)
    if cls.tiny_var:
        var[[0, 2]] = TINY_VAR
    name = f"{cls.name}/{dtype}" + (f"/{layout}" if cls.kind == "conv" else "")
    return FoldCase(name=name, kind=cls.kind, dtype=dtype, layout=layout, groups=groups, x=draw(x),
                    weight=draw(weight), bias=None if bias is None else draw(bias), gamma=draw(gamma),
                    beta=draw(beta), running_mean=draw(mean), running_var=draw(var), eps=EPS,
                    padding=1 if cls.kind == "conv" else 0)


def case_class(case: FoldCase) -> str:
    """The class name of a case ("conv-bias/float32/NHWC" -> "conv-bias")."""
    return case.name.split("/", 1)[0]


def fold_cases(dtypes: tuple[str, ...] = DTYPES) -> list[FoldCase]:
    """Every case, class by class, dtype by dtype, then layout."""
    return [make_case(cls, dtype, layout) for cls in CLASSES for dtype in dtypes
            for layout in (LAYOUTS if cls.kind == "conv" else ("NC",))]
