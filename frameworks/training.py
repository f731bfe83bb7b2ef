"""The training interface every framework implements in frameworks/<fw>/train.py (class `Trainer`).

The convergence and model-parity suites drive a framework only through this interface, with NumPy
arrays in and plain numbers or NumPy arrays (canonical layout, see bnparity.reference.alexnet) out.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from .registry import Unavailable, framework_module, import_failure, load_class


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


BN_SYNC = ("local", "sync", "single")  # per-replica statistics, synchronized statistics, one device
DATA_PARALLEL_BN = ("local", "sync")  # the modes of a DataParallelTrainer


class DataParallelTrainer(Trainer):
    """One framework's AlexNet trained data-parallel on R replicas of its real engine (frameworks/<fw>/data_parallel.py,
    class `DataParallelTrainer`): the Trainer interface, every batch a *global* batch.

    `train_step` and `gradients` split the global batch (and its dropout masks) into R equal shards in order
    (bnparity.reference.crossreplica.shard_sizes; a batch that R does not divide raises ValueError), one per
    replica; the gradient is the mean over replicas of each replica's mean-loss gradient (what PyTorch's DDP,
    `jax.lax.pmean` and MXNet's kvstore give), so with equal shards it is the gradient of the global batch's mean
    loss. BatchNorm layers run with per-replica statistics (`bn_sync="local"`) or synchronized ones ("sync").
    `evaluate`, `state` and `load_state` act on the model a user of the framework saves (parameters, which every
    replica holds alike, and the running statistics of its ReplicaConvention.saved_running); `load_state` gives
    every replica that state. `close` stops the engine (processes, threads); the trainer is also a context manager.
    """

    @abstractmethod
    def __init__(self, *, arch: object, params: dict[str, np.ndarray], sgd: SGDConfig, replicas: int,
                 bn_sync: str, device: str = "cpu", dtype: str = "float32", seed: int | None = None) -> None:
        """Start R replicas of the engine and build the model on each. Raises frameworks.base.Unsupported for a
        configuration the framework cannot run, ValueError for bad arguments."""

    @abstractmethod
    def close(self) -> None:
        """Stop the engine; idempotent."""

    @staticmethod
    def checked(replicas: int, bn_sync: str) -> tuple[int, str]:
        """(replicas, bn_sync) validated: R ≥ 1 and a mode of DATA_PARALLEL_BN, else ValueError."""
        if bn_sync not in DATA_PARALLEL_BN:
            raise ValueError(f"bn_sync must be one of {', '.join(DATA_PARALLEL_BN)}. Received: {bn_sync!r}")
        if int(replicas) < 1:
            raise ValueError(f"replicas must be >= 1. Received: {replicas}")
        return int(replicas), bn_sync

    def __enter__(self) -> DataParallelTrainer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def load_data_parallel_trainer(framework: str) -> type[DataParallelTrainer] | Unavailable:
    """The DataParallelTrainer class of `framework`, or why it is unavailable here (a framework folder without
    ``data_parallel.py`` has none: a skip, not an error)."""
    return load_class(framework, "data_parallel", "DataParallelTrainer",
                      f"{framework} has no data-parallel trainer (frameworks/{framework}/data_parallel.py)")


def broken_frameworks(names: Iterable[str]) -> dict[str, str]:
    """{framework: reason} of those of `names` that are installed but fail to import (imports each one's trainer)."""
    found = {name: load_trainer(name) for name in names}
    return {name: u.reason for name, u in found.items() if isinstance(u, Unavailable) and u.installed}
