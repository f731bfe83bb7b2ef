"""Folding an eval-mode BatchNorm into the layer before it: the interface of frameworks/<fw>/fold.py (`Folds`).

In eval mode a BatchNorm after a convolution or dense layer is a fixed affine map per output channel, so the two
are one layer, W' = s·W, b' = s·(b − μ) + β with s = γ/√(σ² + ε) (bnparity.reference.fold). Each framework folder
folds it its own way and runs the folded layer with its own convolution or dense op:

- impl "builtin": the framework's own fold, where it has one (PyTorch's torch.nn.utils.fusion); a framework
  without one declares it in `Folds.lacks` with the reason.
- impl "scratch": bnparity's fold written in the framework's own ops (torch tensors, mx.nd, jax.numpy).

Every array crosses this interface in the canonical layout (NCHW activations, OIHW convolution weights, (out, in)
dense weights), as float64 NumPy copies of the framework's values; a case's `layout` says how the framework holds
it inside (NHWC: PyTorch's channels_last memory format, Flax's native layout). A configuration the framework cannot
compute here (a float16 convolution on MXNet's CPU, NHWC in MXNet's CPU Convolution) raises
bnparity.frameworks.base.Unsupported with a one-line reason, which the suite records as a skip. Nothing here
imports a framework.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar, Literal

import numpy as np

from .base import Unsupported
from .registry import Unavailable, load_class

MODULE = "fold"
CLASS = "Folds"
IMPLS = ("builtin", "scratch")

__all__ = ["CLASS", "IMPLS", "MODULE", "FoldCase", "FoldOutput", "Folds", "Unsupported", "load_folds"]


@dataclass(frozen=True)
class FoldCase:
    """One layer followed by an eval-mode BatchNorm, every array in the canonical layout (float64 values).

    Attributes:
        name: the case's name (records and messages).
        kind: "conv" (a 2-D convolution) or "dense".
        dtype: the dtype the framework computes in ("float64", "float32", "float16"); the arrays hold values
            already representable in it (the suite rounds them), so only the computation rounds.
        layout: how the framework holds a convolution's activations: "NCHW" or "NHWC" ("NC" for dense).
        groups: the convolution's groups (1: ordinary; = input channels: depthwise). 1 for dense.
        stride: the convolution's stride. Default: 1.
        padding: its symmetric zero padding. Default: 0.
        x: the input, (N, C, H, W) or (N, in).
        weight: (out, in/groups, kh, kw) or (out, in).
        bias: (out,), or None for a layer without bias.
        gamma: BatchNorm's γ (out,).
        beta: β (out,).
        running_mean: μ (out,).
        running_var: σ² (out,), as the BatchNorm's eval pass uses it.
        eps: ε.
    """

    name: str
    kind: Literal["conv", "dense"]
    dtype: str
    layout: str
    groups: int
    x: np.ndarray
    weight: np.ndarray
    bias: np.ndarray | None
    gamma: np.ndarray
    beta: np.ndarray
    running_mean: np.ndarray
    running_var: np.ndarray
    eps: float
    stride: int = 1
    padding: int = 0

    @property
    def has_bias(self) -> bool:
        return self.bias is not None


@dataclass(frozen=True)
class FoldOutput:
    """What a framework computed for one case, as float64 copies of its values, canonical layout.

    Attributes:
        weight: the folded weight W' (the layer's own shape).
        bias: the folded bias b' (out,).
        y_folded: the folded layer's output on the case's x (NCHW or (N, out)).
        y_unfolded: the unfolded layer followed by the framework's BatchNorm in eval mode, on the same x.
    """

    weight: np.ndarray
    bias: np.ndarray
    y_folded: np.ndarray
    y_unfolded: np.ndarray


class Folds(ABC):
    """One framework's folds of an eval-mode BatchNorm into the layer before it.

    Attributes:
        framework: the descriptor's name.
        impls: the implementations this framework has, some of IMPLS.
        lacks: impl -> why the framework does not have it (one line, with where its source says so).
    """

    framework: ClassVar[str]
    impls: ClassVar[tuple[str, ...]]
    lacks: ClassVar[dict[str, str]] = {}

    @property
    def alexnet_impl(self) -> str:
        """The fold a whole network uses: the framework's own when it has one, else the scratch one."""
        return "builtin" if "builtin" in self.impls else "scratch"

    @abstractmethod
    def fold_layer(self, case: FoldCase, impl: str) -> FoldOutput:
        """Fold `case`'s BatchNorm into its layer with `impl` and run both layers on `case.x`.

        Raises:
            Unsupported: the framework cannot compute this configuration here (the reason in one line), or has no
                such `impl`.
        """

    @abstractmethod
    def fold_alexnet(self, spec: object, params: dict[str, np.ndarray], dtype: str) -> dict[str, np.ndarray]:
        """Every BatchNorm of the AlexNet `spec` (bnparity.reference.alexnet, with BN) folded into the Conv or Dense
        layer before it, in `dtype`, with `alexnet_impl`: the canonical parameters of the same network without BN
        (bnparity.reference.alexnet.variant_spec(preset, "nobn")), as float64 copies of the framework's values."""

    @abstractmethod
    def logits(self, spec: object, params: dict[str, np.ndarray], x: np.ndarray, dtype: str) -> np.ndarray:
        """The eval-mode logits of the framework's own AlexNet of `spec` with canonical `params`, on the NCHW batch
        `x`, computed in `dtype` (float64 copies)."""


def check_impl(folds: Folds, impl: str) -> None:
    """Raise Unsupported (the framework's reason) unless `folds` has `impl`; ValueError for an unknown impl."""
    if impl not in IMPLS:
        raise ValueError(f"impl must be one of {', '.join(IMPLS)}. Received: {impl!r}")
    if impl not in folds.impls:
        raise Unsupported(folds.lacks.get(impl, f"{folds.framework} has no {impl} fold"))


def load_folds(framework: str) -> Folds | Unavailable:
    """The `Folds` of `framework`, or why it cannot run here (not installed, broken, or no fold.py: one line)."""
    cls = load_class(framework, MODULE, CLASS, f"{framework} has no {MODULE}.py (no BatchNorm folding)")
    return cls if isinstance(cls, Unavailable) else cls()
