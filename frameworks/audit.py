"""Does a "frozen" BatchNorm still change? The interface of frameworks/<fw>/audit.py (`FrozenAudit`).

Fine-tuning with BatchNorm "frozen" means different things, and in every framework the usual way of freezing leaves
something moving:
- PyTorch: `requires_grad=False` on γ and β stops the optimizer only; a module in train mode still normalizes with the
  batch's statistics and updates its running statistics in the forward pass (`torch.no_grad()` changes neither).
  The fix is `.eval()` on the BatchNorm modules after `model.train()`.
- MXNet Gluon: `grad_req='null'` on γ and β stops the optimizer only; under `autograd.record()` the layer normalizes
  with the batch's statistics, and its running statistics are updated when `backward()` runs through it (never by a
  forward pass alone). The fix is `use_global_stats=True`.
- Flax: leaving the parameters out of the optimizer (optax `set_to_zero` / `multi_transform`) does not touch
  `batch_stats`: `BatchNorm(use_running_average=False)` applied with `mutable=["batch_stats"]` updates them.
  The fix is `use_running_average=True` (at construction or at call time; `.eval()` on an nnx module).
- (Keras 3, a later framework folder: `trainable=False` on a BatchNormalization layer makes it run in inference
  mode, so its audit would check that the layer neither moves nor uses batch statistics.)

Each framework's `FrozenAudit` runs ONE fine-tuning step on a copy of a user's layer or model (the user's object is
never modified), the way that framework's users write it, and reports for every BatchNorm layer what changed: the
running statistics, γ and β, and whether the output the step trained on used batch statistics (the gap between the
layer's training-step output and its eval-mode output on the same input, with its state from before the step).
Nothing here imports a framework.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from .registry import Unavailable, load_every

MODULE = "audit"
CLASS = "FrozenAudit"


def max_abs_change(before: np.ndarray | None, after: np.ndarray | None) -> float:
    """max |after − before| (0 for a layer without the quantity), in float64."""
    if before is None or after is None or np.size(before) == 0:
        return 0.0
    return float(np.max(np.abs(np.asarray(after, np.float64) - np.asarray(before, np.float64))))


def relative_change(before: np.ndarray | None, after: np.ndarray | None) -> float:
    """max |after − before| / max(|before|, |after|): 0 when nothing moved, at most 2 (0 when both are all zeros)."""
    if before is None or after is None or np.size(before) == 0:
        return 0.0
    b, a = np.asarray(before, np.float64), np.asarray(after, np.float64)
    scale = max(float(np.max(np.abs(b))), float(np.max(np.abs(a))))
    return max_abs_change(b, a) / scale if scale > 0 else 0.0


@dataclass(frozen=True)
class LayerAudit:
    """One BatchNorm layer after one fine-tuning step.

    Attributes:
        layer: its path in the model ("layers.bn1", "features/bn1"; "" for a layer audited alone).
        framework: the framework's descriptor name.
        kind: the layer's type as its framework names it ("torch.nn.BatchNorm2d", "flax.linen.BatchNorm").
        params_frozen: whether the step's optimizer left its γ and β alone (requires_grad=False, grad_req='null',
            excluded from the optax update).
        batch_statistics: whether the step ran it in training mode (normalizing with the batch's statistics):
            torch `module.training`, MXNet `autograd.record()` without `use_global_stats`, Flax
            `use_running_average=False`.
        setting: how "frozen" is set on it, in the framework's words.
        running_mean_change, running_var_change: max |Δ| of its running statistics over the step (0.0 when it has
            none).
        running_mean_relative, running_var_relative: the same relative to the statistics' magnitude
            (max |Δ| / max(|before|, |after|)).
        param_change: max |Δ| of γ and β over the step.
        output_gap: max |y_step − y_eval|: its output in the step against its eval-mode output on the same input
            with its state from before the step (None when the step did not run it).
        fix: what freezes it in this framework, one line.
        note: anything the step says about this layer (e.g. "backward never reached it").
    """

    layer: str
    framework: str
    kind: str
    params_frozen: bool
    batch_statistics: bool
    setting: str
    running_mean_change: float
    running_var_change: float
    running_mean_relative: float
    running_var_relative: float
    param_change: float
    output_gap: float | None
    fix: str
    note: str = ""

    @property
    def statistics_moved(self) -> bool:
        return self.running_mean_change > 0 or self.running_var_change > 0

    @property
    def drifted(self) -> bool:
        """Whether the step changed the layer: its running statistics, or γ/β although they were frozen."""
        return self.statistics_moved or (self.params_frozen and self.param_change > 0)

    @property
    def frozen(self) -> bool:
        """Frozen for real: nothing moved and the step normalized with the running statistics (its output_gap is then
        rounding at most: MXNet's training-mode kernel with use_global_stats differs from its inference kernel by
        a few float32 ulps)."""
        return not self.drifted and not self.batch_statistics

    def describe(self) -> str:
        """One line: what moved, by how much, and the fix."""
        name = self.layer or "(the layer)"
        if self.frozen:
            return f"{name} ({self.kind}; {self.setting}): frozen — nothing changed, eval-mode output"
        parts = []
        if self.statistics_moved:
            parts.append(f"running_mean moved by {self.running_mean_change:.3g} ({self.running_mean_relative:.1%}), "
                         f"running_var by {self.running_var_change:.3g} ({self.running_var_relative:.1%})")
        if self.params_frozen and self.param_change > 0:
            parts.append(f"γ/β moved by {self.param_change:.3g} although frozen")
        if self.batch_statistics:
            gap = "" if self.output_gap is None else f" (output {self.output_gap:.3g} from the eval-mode one)"
            parts.append(f"trained on batch statistics{gap}")
        verdict = "DRIFTED" if self.drifted else "not frozen"
        return f"{name} ({self.kind}; {self.setting}): {verdict}: {'; '.join(parts)}. Fix: {self.fix}"


@dataclass(frozen=True)
class ModelAudit:
    """Every BatchNorm layer of a model (or one layer) after one fine-tuning step.

    Attributes:
        framework: the framework's descriptor name.
        kind: the audited object's type ("torch.nn.Sequential", "flax.linen.BatchNorm").
        step: how the step ran, in the framework's words ("model as given, forward, sum of outputs, backward,
            SGD(lr=0.1) on the parameters with requires_grad").
        layers: one LayerAudit per BatchNorm layer, in the model's order.
    """

    framework: str
    kind: str
    step: str
    layers: tuple[LayerAudit, ...]

    @property
    def drifted(self) -> tuple[LayerAudit, ...]:
        return tuple(layer for layer in self.layers if layer.drifted)

    @property
    def frozen(self) -> bool:
        """Whether every BatchNorm layer stayed frozen for real."""
        return all(layer.frozen for layer in self.layers)


@dataclass(frozen=True)
class AuditCase:
    """A model in one "frozen" configuration, ready to audit (the CLI's hand-built models and the AlexNet).

    Attributes:
        name: the configuration's name ("requires_grad=False", "eval() fix").
        fixed: whether it is the framework's fix (it must not drift) rather than the usual way of freezing.
        description: how it freezes BatchNorm, in the framework's words.
        model, variables: what `FrozenAudit.audit` takes.
        x: the input, a NumPy array in the layout the model takes.
        labels: integer labels for a cross-entropy loss (None: the sum of the outputs).
        call_kwargs: keyword arguments of the model's call (Flax's `train=True`, AlexNet's dropout masks).
        frozen: the parameter paths the optimizer leaves alone (Flax; None: read off the object).
        names: a layer's path in the model -> the name records show (the AlexNet's "bn1" in every framework).
    """

    name: str
    fixed: bool
    description: str
    model: Any
    variables: Any
    x: np.ndarray
    labels: np.ndarray | None = None
    call_kwargs: Mapping[str, Any] = field(default_factory=dict)
    frozen: Callable[[str], bool] | None = None
    names: Mapping[str, str] = field(default_factory=dict)


class FrozenAudit(ABC):
    """One framework's frozen-BatchNorm audit."""

    framework: ClassVar[str]
    supported: ClassVar[str]  # what it audits, as users write it (for TypeError messages)
    fix: ClassVar[str]  # the framework's fix, one line

    @abstractmethod
    def can_read(self, obj: object) -> bool:
        """Whether `obj` is one of this framework's models or layers."""

    @abstractmethod
    def audit(self, model: object, x: object, *, variables: object | None = None, labels: object | None = None,
              frozen: Callable[[str], bool] | None = None, call_kwargs: Mapping[str, Any] | None = None,
              lr: float = 0.1) -> ModelAudit:
        """One fine-tuning step on a copy of `model` (a BatchNorm layer or a model holding some), per layer.

        Args:
            model: the framework's layer or model (Flax: a linen module with `variables`, or an nnx module).
            x: the input batch (a NumPy array or the framework's tensor), in the layout the model takes.
            variables: Flax linen's variables ({"params": ..., "batch_stats": ...}).
            labels: integer class labels: the loss is the batch-mean cross-entropy of the outputs; None: the
                sum of the outputs.
            frozen: parameter path -> whether the optimizer leaves it alone. None: as the object says
                (requires_grad, grad_req); Flax, whose parameters carry no such flag: every BatchNorm's γ and β.
            call_kwargs: keyword arguments of the model's call.
            lr: the SGD learning rate of the step.

        Raises:
            TypeError: `model` is no object of this framework, or holds no BatchNorm layer.
        """

    @abstractmethod
    def cases(self, seed: int = 0) -> list[AuditCase]:
        """Small hand-built models in each "frozen" configuration users write, and in the fix."""

    @abstractmethod
    def alexnet_cases(self, arch: Any, params: Mapping[str, np.ndarray], x: np.ndarray, labels: np.ndarray,
                      dropout_masks: list[np.ndarray] | None = None) -> list[AuditCase]:
        """The AlexNet of `arch` with canonical `params` (a trained checkpoint), frozen the usual way and fixed;
        `x` NCHW, `dropout_masks` the NumPy masks of its Dropout layers (the same in every framework)."""


def load_audits(frameworks: Iterable[str] | None = None, *,
                imported_only: bool = False) -> tuple[list[FrozenAudit], list[Unavailable]]:
    """The audit of every framework (of `frameworks`, if given; with `imported_only`, of those this process has
    imported: a user's model is one of theirs), and why the others are unavailable."""
    return load_every(MODULE, CLASS, "{framework} has no frozen-BatchNorm audit", frameworks=frameworks,
                      imported_only=imported_only)
