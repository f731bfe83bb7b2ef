"""The training interface every framework implements in frameworks/<fw>/train.py (class `Trainer`).

The convergence and model-parity suites drive a framework only through this interface, with NumPy
arrays in and plain numbers or NumPy arrays (canonical layout, see bnparity.reference.alexnet) out.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from .registry import Unavailable, framework_module, import_failure


@dataclass(frozen=True)
class SGDConfig:
    """SGD with heavy-ball momentum and L2 weight decay, PyTorch's formulation:
    v ← μ·v + (g + λ·p);  p ← p − lr·v   (applied to every parameter, γ and β included).

    Attributes:
        lr: learning rate.
        momentum: μ (0 disables momentum).
        weight_decay: λ.
    """

    lr: float
    momentum: float = 0.0
    weight_decay: float = 0.0


@dataclass(frozen=True)
class StepStats:
    """What one training step reports: the mean loss over the batch and how many were right."""

    loss: float
    correct: int


@dataclass(frozen=True)
class Gradients:
    """One forward and backward pass without an update, for model-level parity (canonical layout)."""

    logits: np.ndarray
    loss: float
    grads: dict[str, np.ndarray]


class Trainer(ABC):
    """One framework's AlexNet with its optimizer state, built from canonical NumPy parameters."""

    framework: ClassVar[str]

    @abstractmethod
    def __init__(self, *, arch: object, params: dict[str, np.ndarray], sgd: SGDConfig,
                 device: str = "cpu") -> None:
        """Build the model of `arch` (an AlexNetSpec) with `params` (canonical layout) on `device`."""

    @abstractmethod
    def train_step(self, x: np.ndarray, labels: np.ndarray, *,
                   dropout_masks: list[np.ndarray] | None = None) -> StepStats:
        """One SGD step in training mode (batch statistics, dropout on) on a NCHW float32 batch."""

    @abstractmethod
    def evaluate(self, x: np.ndarray, labels: np.ndarray) -> tuple[float, int]:
        """Eval mode (running statistics, no dropout): (sum of per-example losses, number correct)."""

    @abstractmethod
    def gradients(self, x: np.ndarray, labels: np.ndarray, *,
                  dropout_masks: list[np.ndarray] | None = None) -> Gradients:
        """Training-mode forward and backward, no parameter update (running statistics do update)."""

    @abstractmethod
    def state(self) -> dict[str, np.ndarray]:
        """Parameters, BN running statistics and optimizer buffers, canonical layout, for checkpoints."""

    @abstractmethod
    def load_state(self, state: dict[str, np.ndarray]) -> None:
        """Restore what `state` returned (a resumed run continues exactly)."""


def load_trainer(framework: str) -> type[Trainer] | Unavailable:
    """The Trainer class of `framework`, or why it is unavailable here."""
    try:
        return framework_module(framework, "train").Trainer
    except Exception as e:  # a framework that is missing, or installed but broken, is reported, not raised
        return import_failure(framework, e)
