"""Flax's BatchNorm across data-parallel replicas, on real JAX host devices: flax.linen.BatchNorm(axis_name=...)
(builtin) and the all-reduce written in jax.numpy + lax.psum (scratch).

The engine: R JAX CPU devices, which JAX creates only when ``XLA_FLAGS=--xla_force_host_platform_device_count=R``
is set before it starts (the descriptor's `replica_env`; the sync-parity suite runs this module in a subprocess
that sets it). Every replica's step runs SPMD on its own device, under `jax.shard_map` (a mesh of the first R
devices, the stacked shards split over mesh axis "replicas") or the legacy `jax.pmap` (in jax 0.7.1 still its own
C++ path, jax/_src/api.py:1471-1479: only ``jax_pmap_shmap_merge=True``, default False, routes it through
shard_map).

One step, per device: the training forward (batch statistics, running statistics updated), then `jax.vjp` with the
case's dy. Each device's γ and β enter as its own copy (sharded like the data, as `flax.jax_utils.replicate`
gives pmap), so dγ and dβ are that replica's own, before data parallelism would all-reduce them; dx comes from
autodiff *through* the collective, so the backward pass crosses devices as a synchronized layer's must.

Unequal shards (the last shard of a global batch R does not divide): SPMD needs equal shapes, so every shard is
padded with zeros to the largest one and a mask marks the real samples (Flax's ``mask`` argument; the scratch
layer weighs every sum by it); the padding's dy is 0 and its rows are sliced off the outputs. Flax then averages
the devices' masked means with *equal* weights (`lax.pmean`, flax/linen/normalization.py `_compute_stats`): its
statistics are `bnparity.reference.crossreplica.equal_weight_step`'s, not the global batch's. The scratch layer
weighs each shard by its count (Chan's combination), which is the global batch's.

Saved running statistics: the Flax ImageNet example (flax 0.12.0, examples/imagenet/train.py) replaces every
device's batch_stats by their `lax.pmean` after each step and checkpoints that replicated state, so a saved model
holds the mean over the replicas; `run` computes it on the devices the same way, once after the last step (the
moving average is linear: pmeaning once at the end equals pmeaning after every step).
"""

from __future__ import annotations

from abc import abstractmethod
from collections import Counter
from collections.abc import Callable, Hashable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.sharding import Mesh
from jax.sharding import PartitionSpec as P

from bnparity.frameworks.base import Unsupported
from bnparity.frameworks.replicas import ReplicaAdapter, ReplicaCase, ReplicaResult, ReplicaSkip, replica_environment
from bnparity.reference.spec import BNSpec

from ._x64 import dtype_scope
from .batchnorm import BuiltinBatchNorm, _stats_dtype
from .convert import framework_dtype, to_numpy, to_tensor
from .descriptor import DESCRIPTOR

AXIS = "replicas"  # the mesh / pmap axis the statistics are all-reduced over
ENGINES = ("shard_map", "pmap")
DTYPES = ("float32", "float64")

_Tree = Any  # a pytree of arrays
# One device's program: (params, stats, xs, dys, mask) -> (what each replica reports, what a saved model holds).
_Body = Callable[..., tuple[_Tree, _Tree]]


def _host_devices(replicas: int) -> list[jax.Device]:
    """The first `replicas` JAX CPU devices. Raises RuntimeError (one line) when JAX started with fewer."""
    devices = jax.devices("cpu")
    if len(devices) < replicas:
        setting = " ".join(f"{k}={v}" for k, v in replica_environment(DESCRIPTOR.name, replicas).items())
        raise RuntimeError(f"jax: {replicas} replicas need {replicas} host devices, JAX has {len(devices)}; "
                           f"set {setting} before JAX starts (before the first `import jax`)")
    return devices[:replicas]


def _check_dtype(dtype: np.dtype | str) -> np.dtype:
    """The JAX dtype of a float32 or float64 case. Raises Unsupported for any other dtype."""
    name = np.dtype(dtype).name
    if name not in DTYPES:
        raise Unsupported(f"jax: the cross-replica adapters run {' and '.join(DTYPES)}. Received: {name}")
    return framework_dtype(dtype)


@dataclass(frozen=True)
class _Packed:
    """A case's shards stacked for SPMD: one row per replica, every shard zero-padded to the largest.

    Attributes:
        xs: (R, steps, n_max, ...) inputs, zeros after each shard's own samples.
        dys: the upstream gradients, padded the same way (the padding's dy is 0: it adds nothing to any gradient).
        valid: (R, steps, n_max) True on real samples.
        sizes: the last step's shard sizes (to slice the padding off the outputs).
        padded: whether any shard is padded (the builtin passes Flax's mask only then).
    """

    xs: np.ndarray
    dys: np.ndarray
    valid: np.ndarray
    sizes: tuple[int, ...]
    padded: bool


def _pack(case: ReplicaCase) -> _Packed:
    """`case`'s shards stacked for SPMD (see `Packed`)."""
    n_max = max(int(x.shape[0]) for step in case.xs for x in step)
    sample = case.xs[0][0].shape[1:]
    replicas, steps = case.replicas, len(case.xs)
    xs = np.zeros((replicas, steps, n_max, *sample), dtype=case.dtype)
    dys = np.zeros_like(xs)
    valid = np.zeros((replicas, steps, n_max), dtype=bool)
    for s, (step_x, step_dy) in enumerate(zip(case.xs, case.dys, strict=True)):
        for r, (x, dy) in enumerate(zip(step_x, step_dy, strict=True)):
            n = x.shape[0]
            xs[r, s, :n], dys[r, s, :n], valid[r, s, :n] = x, dy, True
    return _Packed(xs=xs, dys=dys, valid=valid, sizes=tuple(int(x.shape[0]) for x in case.xs[-1]),
                  padded=not bool(valid.all()))


def _distribute(body: _Body, engine: str, devices: Sequence[jax.Device]) -> Callable[..., tuple[_Tree, _Tree]]:
    """`body` (one device's program) run SPMD on `devices`; the result maps stacked inputs (leading axis: the
    replica) to (stacked per-replica outputs, the one saved copy).

    shard_map: a mesh of `devices` with axis "replicas", every input split on its leading axis (each device sees a
    leading axis of 1, removed before `body` runs). pmap: the legacy engine, the leading axis mapped over devices;
    its saved copy is device 0's (`flax.jax_utils.unreplicate`), equal on every device after the pmean.
    """
    if engine == "shard_map":
        mesh = Mesh(np.array(devices), (AXIS,))

        def per_device(*args: _Tree) -> tuple[_Tree, _Tree]:
            local, saved = body(*jax.tree_util.tree_map(lambda a: a[0], args))
            return jax.tree_util.tree_map(lambda a: a[None], local), saved

        return jax.jit(jax.shard_map(per_device, mesh=mesh, in_specs=P(AXIS), out_specs=(P(AXIS), P())))
    if engine == "pmap":
        mapped = jax.pmap(body, axis_name=AXIS, devices=list(devices))

        def unreplicated(*args: _Tree) -> tuple[_Tree, _Tree]:
            local, saved = mapped(*args)
            return local, jax.tree_util.tree_map(lambda a: a[0], saved)

        return unreplicated
    raise ValueError(f"engine must be one of {', '.join(ENGINES)}. Received: {engine!r}")


def _broadcast_mask(valid: jax.Array, ndim: int) -> jax.Array:
    """(n,) sample mask -> (n, 1, ..., 1): broadcastable to an ndim-D input."""
    return valid.reshape(valid.shape + (1,) * (ndim - 1))


def _replicate(tree: _Tree, replicas: int, dtype: np.dtype) -> _Tree:
    """One copy of every array of `tree` per replica, stacked on a new leading axis (flax.jax_utils.replicate)."""
    return jax.tree_util.tree_map(lambda a: to_tensor(np.broadcast_to(a, (replicas, *a.shape)), dtype), tree)


class _ReplicaRunner(ReplicaAdapter):
    """What both implementations share: packing, the engine, compiling once per configuration, the results.

    Attributes:
        engine: "shard_map" or "pmap".
        traces: how often a configuration's program was traced (one per configuration and shape).
    """

    native_axis: ClassVar[int] = DESCRIPTOR.native_axis
    variants: ClassVar[dict[str, dict[str, object]]] = {"shard_map": {"engine": "shard_map"},
                                                        "pmap": {"engine": "pmap"}}

    def __init__(self, *, engine: str = "shard_map") -> None:
        if engine not in ENGINES:
            raise ValueError(f"engine must be one of {', '.join(ENGINES)}. Received: {engine!r}")
        self.engine = engine
        self.traces: Counter[Hashable] = Counter()
        self._programs: dict[Hashable, Callable[..., tuple[_Tree, _Tree]]] = {}

    @abstractmethod
    def _config(self, case: ReplicaCase, dtype: np.dtype, masked: bool) -> Hashable:
        """What the compiled program depends on beyond shapes and dtypes (one program per configuration)."""

    @abstractmethod
    def _body(self, case: ReplicaCase, dtype: np.dtype, masked: bool) -> _Body:
        """One device's program for `case`'s configuration: every training step, then the saved statistics."""

    def _initial(self, case: ReplicaCase, dtype: np.dtype) -> tuple[_Tree, _Tree]:
        """(params, stats) of one replica, as NumPy arrays."""
        channels = case.gamma.shape[0]
        sdtype = self._stats_dtype(dtype)
        params = {"scale": np.asarray(case.gamma, dtype), "bias": np.asarray(case.beta, dtype)}
        stats = {"mean": np.full(channels, case.spec.init_running_mean, sdtype),
                 "var": np.full(channels, case.spec.init_running_var, sdtype)}
        return params, stats

    def _stats_dtype(self, dtype: np.dtype) -> np.dtype:
        return dtype

    def run(self, cases: Sequence[ReplicaCase]) -> Iterator[ReplicaResult | ReplicaSkip]:
        for case in cases:
            yield self._run_case(case)

    def _run_case(self, case: ReplicaCase) -> ReplicaResult:
        devices = _host_devices(case.replicas)
        dtype = _check_dtype(case.dtype)
        packed = _pack(case)
        # jax.jit (pmap) compiles each program once per shape and dtype on top of this.
        key = (self._config(case, dtype, packed.padded), self.engine, tuple(d.id for d in devices), packed.xs.ndim)
        if key not in self._programs:
            body = self._body(case, dtype, packed.padded)

            def counted(*args: _Tree, _body: _Body = body, _key: Hashable = key) -> tuple[_Tree, _Tree]:
                self.traces[_key] += 1  # runs only while JAX traces
                return _body(*args)

            self._programs[key] = _distribute(counted, self.engine, devices)
        params, stats = self._initial(case, dtype)
        with dtype_scope(dtype):
            local, saved = self._programs[key](
                _replicate(params, case.replicas, dtype), _replicate(stats, case.replicas, self._stats_dtype(dtype)),
                to_tensor(packed.xs, dtype),
                to_tensor(packed.dys, dtype), jnp.asarray(packed.valid))
            y, dx, dgamma, dbeta, mean, var = (to_numpy(a) for a in local)
            saved = (to_numpy(saved["mean"]), to_numpy(saved["var"]))
        return ReplicaResult(
            ys=tuple(y[r, :n] for r, n in enumerate(packed.sizes)),
            dxs=tuple(dx[r, :n] for r, n in enumerate(packed.sizes)),
            dgammas=tuple(dgamma), dbetas=tuple(dbeta), running_means=tuple(mean), running_vars=tuple(var),
            saved_running=saved)


def _train(step: Callable[..., tuple[_Tree, _Tree]]) -> _Body:
    """One device's program: every step of `step` (params, stats, x, dy, valid) -> ((y, dx, dparams), new stats),
    in a `lax.scan` over the steps (one step compiled, whatever their number); then the saved statistics."""

    def body(params: _Tree, stats: _Tree, xs: jax.Array, dys: jax.Array, valid: jax.Array) -> tuple[_Tree, _Tree]:
        def one(stats: _Tree, step_inputs: tuple[jax.Array, ...]) -> tuple[_Tree, _Tree]:
            outputs, new_stats = step(params, stats, *step_inputs)
            return new_stats, outputs

        stats, (ys, dxs, dparams) = lax.scan(one, stats, (xs, dys, valid))
        saved = lax.pmean(stats, AXIS)  # what a Flax user saves: the replicas' batch_stats, pmeaned (module doc)
        last = (ys[-1], dxs[-1], dparams["scale"][-1], dparams["bias"][-1], stats["mean"], stats["var"])
        return last, saved

    return body


def _flax_step(module: nn.BatchNorm, params: _Tree, stats: _Tree, x: jax.Array, dy: jax.Array,
               mask: jax.Array | None) -> tuple[tuple[jax.Array, jax.Array, _Tree], _Tree]:
    """One training step of the Flax layer on one device: ((y, dx, dparams), updated batch_stats)."""

    def forward(p: _Tree, x: jax.Array) -> tuple[jax.Array, _Tree]:
        y, updated = module.apply({"params": p, "batch_stats": stats}, x, use_running_average=False, mask=mask,
                                  mutable=["batch_stats"])
        return y, updated["batch_stats"]

    y, vjp, new_stats = jax.vjp(forward, params, x, has_aux=True)
    dparams, dx = vjp(dy)
    return (y, dx, dparams), new_stats


class BuiltinSyncBatchNorm(_ReplicaRunner):
    """flax.linen.BatchNorm(axis_name="replicas") on every replica (synchronized cases), plain flax.linen.BatchNorm
    (per-replica cases), under shard_map or pmap.

    Flax's `_compute_stats` pmeans each device's (masked) means, equal weights 1/R: with unequal shards its
    statistics are the equally weighted ones (reference.crossreplica.equal_weight_step). Its running variance is
    the biased σ² it normalizes with (`realize`).

    Args:
        engine: "shard_map" (jax.shard_map over a device mesh, the default) or "pmap" (the legacy jax.pmap).
    """

    framework = DESCRIPTOR.name
    impl = "builtin"

    def realize(self, spec: BNSpec, dtype: np.dtype) -> BNSpec:
        _check_dtype(dtype)
        return BuiltinBatchNorm().realize(spec, dtype)  # Flax's running_var="biased"; use_fast_variance follows

    def _stats_dtype(self, dtype: np.dtype) -> np.dtype:
        return _stats_dtype(dtype)  # what Flax keeps batch_stats in

    def _options(self, case: ReplicaCase, dtype: np.dtype) -> dict[str, Any]:
        spec = case.spec
        if spec.running_var != "biased":
            raise Unsupported(f"jax: flax.linen.BatchNorm always stores the biased running variance. "
                              f"Received: running_var={spec.running_var!r}")
        # momentum, epsilon, use_fast_variance as the spec says (the single-device adapter's options); γ and β are
        # always given (every replica case has them).
        options = BuiltinBatchNorm()._options(spec, dtype, use_defaults=False)
        options.update(axis=spec.axis % case.xs[0][0].ndim, use_scale=True, use_bias=True)
        if case.synchronized:
            options["axis_name"] = AXIS  # the one switch: statistics pmeaned over the replicas
        return options

    def _config(self, case: ReplicaCase, dtype: np.dtype, masked: bool) -> Hashable:
        return ("flax", tuple(sorted((k, str(v)) for k, v in self._options(case, dtype).items())), masked)

    def _body(self, case: ReplicaCase, dtype: np.dtype, masked: bool) -> _Body:
        module = nn.BatchNorm(**self._options(case, dtype))

        def step(params: _Tree, stats: _Tree, x: jax.Array, dy: jax.Array, valid: jax.Array) -> tuple[_Tree, _Tree]:
            mask = _broadcast_mask(valid, x.ndim) if masked else None  # Flax's mask: True on real samples
            return _flax_step(module, params, stats, x, dy, mask)

        return _train(step)


def _sync_batch_norm(x: jax.Array, valid: jax.Array, params: dict[str, jax.Array], stats: dict[str, jax.Array], *,
                    spec: BNSpec, axis_name: str | None) -> tuple[jax.Array, dict[str, jax.Array]]:
    """One replica's training-mode BatchNorm of its shard: y = γ x̂ + β and the updated running statistics.

    The statistics are the global batch's: each replica contributes its count m_r, mean μ_r and centred sum M₂,r,
    and `lax.psum` over `axis_name` combines them weighted by the counts (Chan), so unequal shards are exact:
        m = Σ m_r,   μ = Σ m_r μ_r / m,   M₂ = Σ [M₂,r + m_r (μ_r − μ)²],   σ² = M₂ / m.
    (variance "fast": σ² = Σ x² / m − μ², clipped at 0, one psum of the sums of squares.) Without `axis_name` it
    is a BatchNorm of the shard alone (per-replica statistics). The backward pass is autodiff's, through the psums.

    Args:
        x: the shard, zero-padded to the largest shard (batch axis 0, channels at `spec.axis`).
        valid: (n,) True on the shard's real samples; padding is weighted 0 in every sum.
        params: {"scale": γ, "bias": β}, shape (C,).
        stats: {"mean", "var"}: the running statistics before this step.
        spec: ε, the variance algorithm, momentum (and what it weighs), the running variance's estimator.
        axis_name: the device axis to all-reduce over, or None for per-replica statistics.
    """
    axis = spec.axis % x.ndim
    axes = tuple(a for a in range(x.ndim) if a != axis)
    shape = tuple(-1 if a == axis else 1 for a in range(x.ndim))
    w = _broadcast_mask(valid, x.ndim).astype(x.dtype)  # 1 on real samples, 0 on padding
    psum = (lambda v: v) if axis_name is None else (lambda v: lax.psum(v, axis_name))

    m_r = jnp.sum(w) * (x.size // (x.shape[0] * x.shape[axis]))  # m_r: values per channel in this shard
    mu_r = jnp.sum(w * x, axis=axes) / m_r  # μ_r
    m = psum(m_r)  # m = Σ m_r
    mu = psum(m_r * mu_r) / m  # μ = Σ m_r μ_r / m
    if spec.variance == "fast":  # σ² = E[x²] − μ², clipped at 0 (rounding can make it negative)
        var = jnp.maximum(0.0, psum(jnp.sum(w * jnp.square(x), axis=axes)) / m - jnp.square(mu))
    else:
        m2_r = jnp.sum(w * jnp.square(x - mu_r.reshape(shape)), axis=axes)  # M₂,r = Σ (x − μ_r)²
        var = psum(m2_r + m_r * jnp.square(mu_r - mu)) / m  # σ² = Σ [M₂,r + m_r (μ_r − μ)²] / m

    x_hat = (x - mu.reshape(shape)) / jnp.sqrt(var.reshape(shape) + spec.eps)  # x̂
    y = params["scale"].reshape(shape) * x_hat + params["bias"].reshape(shape)  # y = γ x̂ + β

    stored = var * m / (m - 1) if spec.running_var == "unbiased" else var  # σ²·m/(m − 1) over the global m
    if spec.running_var == "unbiased":
        stored = jnp.where(m > 1, stored, jnp.nan)  # undefined for a single value
    nw = spec.new_weight  # the weight of the new batch statistic, whatever momentum weighs
    new_stats = {"mean": (1 - nw) * stats["mean"] + nw * mu, "var": (1 - nw) * stats["var"] + nw * stored}
    return y, new_stats


class ScratchSyncBatchNorm(_ReplicaRunner):
    """BatchNorm in jax.numpy with the all-reduce written out (`sync_batch_norm`), under shard_map or pmap.

    Count-weighted statistics: the global batch's, unequal shards included; every spec field is followed.

    Args:
        engine: "shard_map" (the default) or "pmap".
    """

    framework = DESCRIPTOR.name
    impl = "scratch"

    def realize(self, spec: BNSpec, dtype: np.dtype) -> BNSpec:
        _check_dtype(dtype)
        return spec

    def _config(self, case: ReplicaCase, dtype: np.dtype, masked: bool) -> Hashable:
        # The initial statistics are arguments of the program, not part of its configuration.
        return ("scratch", case.spec.replace(init_running_mean=0.0, init_running_var=1.0), case.synchronized)

    def _body(self, case: ReplicaCase, dtype: np.dtype, masked: bool) -> _Body:
        spec, axis_name = case.spec, (AXIS if case.synchronized else None)

        def step(params: _Tree, stats: _Tree, x: jax.Array, dy: jax.Array, valid: jax.Array) -> tuple[_Tree, _Tree]:
            def forward(p: _Tree, x: jax.Array) -> tuple[jax.Array, _Tree]:
                return _sync_batch_norm(x, valid, p, stats, spec=spec, axis_name=axis_name)

            y, vjp, new_stats = jax.vjp(forward, params, x, has_aux=True)  # backward: autodiff through the psums
            dparams, dx = vjp(dy)
            return (y, dx, dparams), new_stats

        return _train(step)
