"""The training interface every framework implements in frameworks/<fw>/train.py (class `Trainer`).

The convergence and model-parity suites drive a framework only through this interface, with NumPy
arrays in and plain numbers or NumPy arrays (canonical layout, see bnparity.reference.alexnet) out.

Devices: a trainer runs on "cpu" or "gpu" ("cuda" is another name of "gpu"). Whether a framework can use a device
here is its convert.py's `check_device(device)` (None, or the one-line reason), reached through `device_check` in
this process or `probe_devices` in a process per framework (the training suite imports no framework itself).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from abc import ABC, abstractmethod
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from .registry import Unavailable, framework_environment, framework_module, import_failure, load_class

DEVICES = ("cpu", "gpu", "cuda")  # the --device choices; "cuda" is another name of "gpu"
PROBE_TIMEOUT_S = 180.0  # a framework's import (TensorFlow's ~6 s here) and its device query
_PROBE_MARK = "BNPARITY-DEVICE "


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


def canonical_device(device: str) -> str:
    """'cuda' -> 'gpu'; 'cpu' and 'gpu' unchanged. Raises ValueError for another name."""
    if device not in DEVICES:
        raise ValueError(f"--device must be one of {', '.join(DEVICES)}. Received: {device!r}")
    return "gpu" if device == "cuda" else device


@dataclass(frozen=True)
class DeviceCheck:
    """Whether one framework can use one device here.

    Attributes:
        framework: its name.
        device: "cpu" or "gpu".
        problem: why the framework cannot use the device, in one line (None: it can, or it could not be asked).
        unavailable: why the framework itself cannot load here (not installed, broken, a process of its own), in one
            line; None when it loaded. Its runs then skip or fail as they would on the CPU.
    """

    framework: str
    device: str
    problem: str | None = None
    unavailable: str | None = None

    @property
    def usable(self) -> bool:
        return self.problem is None and self.unavailable is None


def device_check(framework: str, device: str) -> DeviceCheck:
    """Ask `framework`'s convert.check_device, in this process (it imports the framework)."""
    device = canonical_device(device)
    try:
        module = framework_module(framework, "convert")
    except Exception as e:  # a framework that is missing, or installed but broken, is reported, not raised
        return DeviceCheck(framework, device, unavailable=import_failure(framework, e).reason)
    return DeviceCheck(framework, device, problem=module.check_device(device))


def _probe_main(framework: str, device: str) -> None:
    check = device_check(framework, device)
    print(_PROBE_MARK + json.dumps({"problem": check.problem, "unavailable": check.unavailable}), flush=True)


def probe_device(framework: str, device: str, *, timeout: float = PROBE_TIMEOUT_S) -> DeviceCheck:
    """`device_check` in a process of its own with `framework`'s environment (a Keras backend is fixed per process);
    a probe that crashes or hangs is a problem, with its last line."""
    device = canonical_device(device)
    env = dict(os.environ)
    env.update(framework_environment(framework))
    code = f"from {__name__} import _probe_main; _probe_main({framework!r}, {device!r})"
    try:
        done = subprocess.run([sys.executable, "-c", code], env=env, stdin=subprocess.DEVNULL, capture_output=True,
                              text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return DeviceCheck(framework, device, problem=f"{framework}: its device query did not answer within "
                                                      f"{timeout:g} s")
    found = [line[len(_PROBE_MARK):] for line in done.stdout.splitlines() if line.startswith(_PROBE_MARK)]
    if not found:
        errors = [line.strip() for line in done.stderr.splitlines() if line.strip()]
        last = f": {errors[-1][:200]}" if errors else ""
        return DeviceCheck(framework, device,
                           problem=f"{framework}: its device query exited with code {done.returncode}{last}")
    answer = json.loads(found[-1])
    return DeviceCheck(framework, device, problem=answer["problem"], unavailable=answer["unavailable"])


def probe_devices(frameworks: Iterable[str], device: str, *, jobs: int = 2) -> dict[str, DeviceCheck]:
    """`probe_device` of every framework, `jobs` processes at a time, in the order given. On the CPU nothing is
    started: every framework's CPU is usable (and one that is missing says so when it runs)."""
    names = tuple(frameworks)
    if canonical_device(device) == "cpu":
        return {name: DeviceCheck(name, "cpu") for name in names}
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        return dict(zip(names, pool.map(lambda name: probe_device(name, device), names), strict=True))


@dataclass(frozen=True)
class DevicePlan:
    """What a command does with `checks` (framework -> DeviceCheck) of the frameworks it was asked to run.

    Attributes:
        skipped: {framework: reason} of the frameworks that cannot use the device and were not named: left out.
        error: one line when the command must stop before it starts: a framework named in --frameworks cannot use
            the device, or none of them can. None: run the others.
    """

    skipped: dict[str, str]
    error: str | None


def device_plan(checks: dict[str, DeviceCheck], device: str, named: Iterable[str] = ()) -> DevicePlan:
    """Skip the frameworks that cannot use `device` (as the user spelled it), unless the user named one of them
    (--frameworks) or none can: then `error` gives every reason that stops the command."""
    refused = {fw: c.problem for fw, c in checks.items() if c.problem is not None}
    named_refused = [refused[fw] for fw in named if fw in refused]
    if named_refused:
        return DevicePlan(skipped={}, error=f"--device {device}: " + "; ".join(named_refused))
    if refused and not any(c.usable for c in checks.values()):
        return DevicePlan(skipped={}, error=f"--device {device}: " + "; ".join(refused.values()))
    return DevicePlan(skipped=refused, error=None)
