"""The interface every framework's cross-replica BatchNorm implements in frameworks/<fw>/replicas.py.

A data-parallel run splits the global batch into shards, one per replica, and runs the same layer on every
replica: with *synchronized* statistics (one all-reduce makes every replica normalize with the global batch's μ
and σ²) or *per-replica* statistics (each replica a BatchNorm of its own shard, what data parallelism gives
without synchronization). `ReplicaAdapter` runs a list of such cases on a framework's real distributed engine
(processes over torch.distributed, JAX host devices, MXNet CPU contexts) and returns what every replica computed;
the sync-parity suite (bnparity.suites.sync_parity) compares it with bnparity.reference.crossreplica.

Each framework folder has ``replicas.py`` with ``BuiltinSyncBatchNorm`` (the framework's own synchronized layer,
and its plain BatchNorm for per-replica cases) and ``ScratchSyncBatchNorm`` (the all-reduce written in the
framework's own ops). An engine that needs its environment set before the framework starts (JAX's host device
count, MXNet's worker threads) declares it in the descriptor (`Framework.replica_env`); the suite runs each
framework in a subprocess that sets it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from bnparity.reference.spec import BNSpec

from .registry import Unavailable, descriptor, framework_module, import_failure

IMPLS = ("builtin", "scratch")
CLASSES = {"builtin": "BuiltinSyncBatchNorm", "scratch": "ScratchSyncBatchNorm"}
MODULE = "replicas"


@dataclass(frozen=True)
class ReplicaCase:
    """One configuration for the replicas, its arrays in the framework's native layout.

    Attributes:
        name: the case's name (records and messages).
        spec: the BatchNorm (its axis the native one, ε, momentum, running-variance estimator as `realize` gave).
        synchronized: normalize with the global batch's statistics (True) or each shard's own (False).
        xs: the inputs of each training step, one array per replica (shard sizes may differ: the last shard of a
            global batch that R does not divide is smaller).
        dys: the upstream gradients, shaped as `xs`.
        gamma: γ (C,), in the case's dtype.
        beta: β (C,).
        dtype: "float32" or "float64": the dtype of every array and of the layer.
    """

    name: str
    spec: BNSpec
    synchronized: bool
    xs: tuple[tuple[np.ndarray, ...], ...]
    dys: tuple[tuple[np.ndarray, ...], ...]
    gamma: np.ndarray
    beta: np.ndarray
    dtype: str

    @property
    def replicas(self) -> int:
        return len(self.xs[0])

    @property
    def shard_sizes(self) -> tuple[int, ...]:
        return tuple(int(x.shape[0]) for x in self.xs[0])


@dataclass(frozen=True)
class ReplicaResult:
    """What every replica computed in one case: the last step's outputs and the running statistics after all steps.

    Attributes:
        ys: each replica's y of the last step (its shard's shape, native layout).
        dxs: each replica's dx of the last step.
        dgammas: each replica's own dγ of the last step, before data parallelism all-reduces it.
        dbetas: each replica's own dβ.
        running_means: each replica's running mean after every step.
        running_vars: each replica's running variance.
        saved_running: (mean, variance) as the framework's own way of saving a data-parallel model stores them
            (replica 0's, or their mean: the framework's `ReplicaConvention.saved_running`).
    """

    ys: tuple[np.ndarray, ...]
    dxs: tuple[np.ndarray, ...]
    dgammas: tuple[np.ndarray, ...]
    dbetas: tuple[np.ndarray, ...]
    running_means: tuple[np.ndarray, ...]
    running_vars: tuple[np.ndarray, ...]
    saved_running: tuple[np.ndarray, np.ndarray]


@dataclass(frozen=True)
class ReplicaSkip:
    """A case this implementation cannot run here, with the one-line reason (the framework's own message when it
    raised one, e.g. torch.nn.SyncBatchNorm on CPU tensors)."""

    reason: str


class ReplicaAdapter(ABC):
    """Runs one framework's cross-replica BatchNorm on its distributed engine."""

    framework: ClassVar[str]  # the descriptor's name
    impl: ClassVar[str]  # "builtin" or "scratch"
    native_axis: ClassVar[int]  # the channel axis the layer runs with: 1 (NC...) or -1 (...C)
    # Ways to run the same layer that must agree too (name -> constructor keywords), e.g. shard_map and pmap.
    variants: ClassVar[dict[str, dict[str, object]]] = {"default": {}}

    @abstractmethod
    def realize(self, spec: BNSpec, dtype: np.dtype) -> BNSpec:
        """The spec this implementation computes when asked for `spec` (the running-variance estimator the
        framework cannot configure is its convention's); as LayerAdapter.realize."""

    @abstractmethod
    def run(self, cases: Sequence[ReplicaCase]) -> Iterator[ReplicaResult | ReplicaSkip]:
        """Run every case, in order, on `case.replicas` replicas of the real engine; one result per case.

        The engine is started once for the whole list where it can be (a process group, a device mesh). A case
        that raises inside the framework yields a ReplicaSkip only when the framework refuses the configuration
        (its own error message); any other exception propagates.
        """


def load_replica_adapter(framework: str, impl: str, variant: str | None = None) -> ReplicaAdapter | Unavailable:
    """The cross-replica adapter of `framework`'s `impl` (its first variant unless named), or why it cannot run."""
    d = descriptor(framework)
    if impl not in d.replica_impls:
        lack = d.lack("sync-batchnorm", impl)
        return Unavailable(framework, lack.reason if lack else f"{framework} has no {impl} cross-replica BatchNorm")
    try:
        cls = getattr(framework_module(framework, MODULE), CLASSES[impl])
    except Exception as e:  # a framework that is missing, or installed but broken, is reported, not raised
        return import_failure(framework, e)
    name = variant or next(iter(cls.variants))
    return cls(**cls.variants[name])


def replica_environment(framework: str, replicas: int, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The variables `framework`'s engine needs, set before it starts, to run `replicas` replicas: the descriptor's
    templates filled in, {existing} being the variable's value in `base` (flags appended to the ones already set)."""
    base = base or {}
    return {key: value.format(replicas=replicas, existing=base.get(key, "")).strip()
            for key, value in descriptor(framework).replica_env}
