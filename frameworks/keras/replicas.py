"""Keras 3's BatchNorm across data-parallel replicas, on each backend's own engine: keras.layers.BatchNormalization
(builtin) and a count-weighted all-reduce written in keras.ops (scratch).

TensorFlow: tf.distribute.MirroredStrategy over R logical CPU devices, which TensorFlow creates only when
`tf.config.set_logical_device_configuration` runs before its runtime starts; this module does that at import
when ``BNPARITY_KERAS_TF_CPUS=R`` is set (the descriptor's `replica_env`; the suites run it in a subprocess that
sets it). Every replica runs the layer on its own shard in `strategy.run`, under one `tf.GradientTape` per
replica. ``BatchNormalization(synchronized=True)`` makes `ops.moments` all-reduce each replica's Σx, Σx² and
count (keras/src/backend/tensorflow/nn.py:1515-1542): the global batch's statistics, each shard weighted by its
count (unequal shards are right), σ² = E[x²] − μ² clipped at 0 (one pass). The all-reduce's gradient is an
all-reduce (tensorflow/python/distribute/distribute_lib.py:3648-3653), so dx crosses replicas. The moving
statistics are MirroredVariables with aggregation "none" (keras/src/layers/layer.py:534, `add_weight`): a
replica-context assign writes that replica's own copy (tensorflow/python/distribute/values.py:54-55), and reading
or saving the variable gives replica 0's (the primary copy).

JAX: keras.distribution.DataParallel (keras/src/distribution/distribution_lib.py:533) over the first R JAX host
devices (``XLA_FLAGS=--xla_force_host_platform_device_count=R`` before JAX starts, as frameworks/jax). Keras on JAX
runs *one* global program (GSPMD): the layer's variables are replicated, the global batch is sharded on its first
axis (`DataParallel.get_data_layout`, :610-613), and `jax.jit` of `Layer.stateless_call` computes `jnp.mean`/
`jnp.var` over the whole batch, XLA inserting the all-reduces: synchronized statistics with no switch
(``synchronized=True`` raises ValueError off TensorFlow, keras/src/layers/normalization/batch_normalization.py:
184-188). Per-replica cases run the same stateless layer under `jax.shard_map` over the same mesh (each device a
BatchNorm of its own shard). JAX refuses to shard a batch that R does not divide (its own ValueError): unequal
shards are skips. dγ and dβ are all-reduced inside the global program; each replica's own share is the gradient
of its own dy (the backward pass is linear in dy).

PyTorch: Keras has no distribution support on the torch backend (keras/src/backend/__init__.py:43-47:
``distribution_lib = None``); the descriptor declares no replica implementation there.

The scratch layer (`_sync_moments`): each replica's count m_r, mean μ_r and centred sum M₂,r combined by Chan's
count-weighted formulas through the backend's collective (the replica context's all_reduce on TensorFlow,
`lax.psum` under shard_map on JAX, zero-padded shards masked out); the backward pass is autodiff through the
collective. It follows every spec field.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterator, Sequence
from typing import Any, ClassVar

import keras
import numpy as np

from bnparity.frameworks.base import Unsupported
from bnparity.frameworks.replicas import ReplicaAdapter, ReplicaCase, ReplicaResult, ReplicaSkip, replica_environment
from bnparity.reference.spec import BNSpec

from ._backend import BACKEND, DESCRIPTOR
from ._x64 import dtype_scope
from .convert import framework_dtype, framework_momentum, to_numpy, to_tensor

DTYPES = ("float32", "float64")
AXIS = "batch"  # the mesh axis of keras.distribution.DataParallel (DEFAULT_BATCH_DIM_NAME)
TF_CPUS = "BNPARITY_KERAS_TF_CPUS"  # the logical CPU devices TensorFlow is given at import (replica_env)


def _configure_tf_cpus() -> None:
    """Split TensorFlow's CPU into `TF_CPUS` logical devices, if set and TensorFlow has not started yet."""
    count = int(os.environ.get(TF_CPUS, "0") or 0)
    if BACKEND != "tensorflow" or count < 2:
        return
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    try:
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * count)
    except RuntimeError:  # TensorFlow has started already: `_devices` says what to do
        pass


_configure_tf_cpus()


def _devices(replicas: int) -> list[str]:
    """The first `replicas` CPU devices of the backend, as Keras names them ("cpu:0", ...). Raises RuntimeError
    (one line) when the process has fewer."""
    devices = keras.distribution.list_devices("cpu")
    if len(devices) < replicas:
        setting = " ".join(f"{k}={v}" for k, v in replica_environment(DESCRIPTOR.name, replicas).items())
        raise RuntimeError(f"{DESCRIPTOR.name}: {replicas} replicas need {replicas} CPU devices, the backend has "
                           f"{len(devices)}; set {setting} before the backend starts")
    return devices[:replicas]


def _check_dtype(dtype: np.dtype | str) -> np.dtype:
    name = np.dtype(dtype).name
    if name not in DTYPES:
        raise Unsupported(f"{DESCRIPTOR.name}: the cross-replica adapters run {' and '.join(DTYPES)}. "
                          f"Received: {name}")
    framework_dtype(dtype)
    return np.dtype(name)


def _check_spec(spec: BNSpec) -> None:
    if not (spec.affine and spec.track_running_stats):
        raise Unsupported(f"{DESCRIPTOR.name}: the cross-replica adapters run affine layers with moving statistics")


def _check_backend(impl: str) -> None:
    if BACKEND not in ("tensorflow", "jax"):
        raise Unsupported(f"{DESCRIPTOR.name}: Keras has no distribution support on the {BACKEND} backend "
                          "(keras/src/backend/__init__.py: distribution_lib = None)")


# --- the scratch layer's statistics: keras.ops and one collective -------------------------------------------

def _sync_moments(x: Any, weight: Any | None, spec: BNSpec, psum: Callable[[Any], Any]) -> tuple[Any, Any, Any]:
    """(m, μ, σ²) of the global batch from one replica's shard, per channel (channels last).

    Each replica contributes m_r, μ_r and M₂,r = Σ (x − μ_r)²; `psum` (the collective, identity for per-replica
    statistics) combines them weighted by the counts (Chan):
        m = Σ m_r,   μ = Σ m_r μ_r / m,   M₂ = Σ [M₂,r + m_r (μ_r − μ)²],   σ² = M₂ / m.
    Variance "fast": σ² = Σ x² / m − μ², clipped at 0. `weight` (n, 1, ..., 1) is 1 on real samples, 0 on padding.
    """
    ops = keras.ops
    axes = tuple(range(x.ndim - 1))
    w = ops.ones_like(x[..., :1]) if weight is None else ops.broadcast_to(weight, x.shape[:-1] + (1,))
    m_r = ops.sum(w, axis=axes)  # m_r (C = 1): the shard's values per channel
    mu_r = ops.sum(w * x, axis=axes) / m_r  # μ_r
    m = psum(m_r)  # m = Σ m_r
    mu = psum(m_r * mu_r) / m  # μ = Σ m_r μ_r / m
    if spec.variance == "fast":
        var = ops.maximum(psum(ops.sum(w * ops.square(x), axis=axes)) / m - ops.square(mu), 0.0)
    else:
        m2_r = ops.sum(w * ops.square(x - mu_r), axis=axes)  # M₂,r = Σ (x − μ_r)²
        var = psum(m2_r + m_r * ops.square(mu_r - mu)) / m  # σ² = Σ [M₂,r + m_r (μ_r − μ)²] / m
    return m, mu, var


def _scratch_step(x: Any, weight: Any | None, gamma: Any, beta: Any, mean: Any, var: Any, spec: BNSpec,
                  psum: Callable[[Any], Any]) -> tuple[Any, Any, Any]:
    """(y, new running mean, new running variance) of one replica's training step."""
    ops = keras.ops
    m, mu, batch_var = _sync_moments(x, weight, spec, psum)
    y = gamma * (x - mu) / ops.sqrt(batch_var + spec.eps) + beta  # y = γ (x − μ)/√(σ² + ε) + β
    if spec.running_var == "unbiased":  # σ²·m/(m − 1) over the global m; undefined for one value
        stored = ops.where(m > 1, batch_var * m / ops.maximum(m - 1, 1), float("nan"))
    else:
        stored = batch_var
    w = spec.new_weight  # the new batch statistic's weight, whatever momentum weighs
    return y, (1 - w) * mean + w * ops.stop_gradient(mu), (1 - w) * var + w * ops.stop_gradient(stored)


# --- the builtin layer ----------------------------------------------------------------------------------------

def _builtin_layer(case: ReplicaCase, *, synchronized: bool) -> keras.layers.BatchNormalization:
    """keras.layers.BatchNormalization of the case's spec (channels last), not yet built."""
    spec = case.spec
    if spec.axis % case.xs[0][0].ndim != case.xs[0][0].ndim - 1:
        raise ValueError(f"{DESCRIPTOR.name}: the replica adapters run channels last. Received: axis={spec.axis}")
    options: dict[str, Any] = {"axis": -1, "momentum": framework_momentum(spec), "epsilon": spec.eps,
                               "dtype": framework_dtype(np.dtype(case.dtype))}
    if synchronized:
        options["synchronized"] = True
    return keras.layers.BatchNormalization(**options)


def _set_state(layer: keras.layers.Layer, case: ReplicaCase) -> None:
    """γ, β and the initial moving statistics of `case` into the built `layer`."""
    channels, dtype = int(case.gamma.shape[0]), np.dtype(case.dtype)
    layer.gamma.assign(to_tensor(case.gamma, dtype))
    layer.beta.assign(to_tensor(case.beta, dtype))
    layer.moving_mean.assign(to_tensor(np.full(channels, case.spec.init_running_mean), dtype))
    layer.moving_variance.assign(to_tensor(np.full(channels, case.spec.init_running_var), dtype))


def _saved(layer: keras.layers.Layer, shape: tuple[int, ...], dtype: np.dtype,
           scope: Any) -> tuple[np.ndarray, np.ndarray]:
    """(moving mean, moving variance) as `Model.save_weights` writes them: a model of `layer` saved and loaded into
    a fresh BatchNormalization."""
    with tempfile.TemporaryDirectory(prefix="bnparity-keras-") as tmp:
        path = os.path.join(tmp, "replicas.weights.h5")
        with scope:
            model = keras.Sequential([keras.Input(shape=shape[1:], dtype=framework_dtype(dtype)), layer])
        model.save_weights(path)
        fresh = keras.layers.BatchNormalization(axis=-1, dtype=framework_dtype(dtype))
        loaded = keras.Sequential([keras.Input(shape=shape[1:], dtype=framework_dtype(dtype)), fresh])
        loaded.load_weights(path)
    return to_numpy(fresh.moving_mean), to_numpy(fresh.moving_variance)


# --- the TensorFlow engine: MirroredStrategy ------------------------------------------------------------------

_STRATEGIES: dict[int, Any] = {}


def _tf_strategy(replicas: int) -> Any:
    """The MirroredStrategy over the first `replicas` CPU devices (one per replica count and process), reducing
    through one device (tf.distribute.ReductionToOneDevice, what MirroredStrategy itself falls back to for CPU
    devices in graph mode, tensorflow/python/distribute/mirrored_strategy.py:377-380). Not its default collective
    ops: every strategy numbers its collective groups and instances from 1 (mirrored_strategy.py:373-375), so a
    second strategy in the process collides with the first ("joining a group with size 4, but that group has size
    2"; "Collective instance 100 expected ... data_type", measured)."""
    if replicas not in _STRATEGIES:
        import tensorflow as tf

        _STRATEGIES[replicas] = tf.distribute.MirroredStrategy(
            [f"/{d.replace('cpu', 'CPU')}" for d in _devices(replicas)],
            cross_device_ops=tf.distribute.ReductionToOneDevice())
    return _STRATEGIES[replicas]


def _tf_per_replica(strategy: Any, arrays: Sequence[np.ndarray], dtype: np.dtype) -> Any:
    """One tensor per replica (shard r on replica r): a PerReplica value for `strategy.run`."""
    return strategy.experimental_distribute_values_from_function(
        lambda ctx: to_tensor(arrays[ctx.replica_id_in_sync_group], dtype))


def _tf_local(strategy: Any, value: Any) -> list[np.ndarray]:
    return [to_numpy(v) for v in strategy.experimental_local_results(value)]


def _tf_run(case: ReplicaCase, impl: str) -> ReplicaResult:
    import tensorflow as tf

    spec, dtype = case.spec, np.dtype(case.dtype)
    strategy = _tf_strategy(case.replicas)
    with strategy.scope():
        layer = _builtin_layer(case, synchronized=case.synchronized and impl == "builtin")
        layer.build((None, *case.xs[0][0].shape[1:]))
    _set_state(layer, case)
    moving_mean, moving_var = layer.moving_mean.value, layer.moving_variance.value
    gamma, beta = layer.gamma.value, layer.beta.value

    def replica_step(x: Any, dy: Any) -> tuple[Any, ...]:
        with tf.GradientTape() as tape:
            tape.watch(x)
            if impl == "builtin":
                y = layer(x, training=True)
            else:
                context = tf.distribute.get_replica_context()
                psum = ((lambda v: context.all_reduce(tf.distribute.ReduceOp.SUM, v)) if case.synchronized
                        else (lambda v: v))
                y, new_mean, new_var = _scratch_step(x, None, gamma, beta, moving_mean, moving_var, spec, psum)
                moving_mean.assign(new_mean)  # this replica's own copy (aggregation "none")
                moving_var.assign(new_var)
        dx, dgamma, dbeta = tape.gradient(y, [x, gamma, beta], output_gradients=dy)
        return y, dx, dgamma, dbeta

    step = tf.function(lambda x, dy: strategy.run(replica_step, args=(x, dy)))
    out: tuple[Any, ...] = ()
    for xs, dys in zip(case.xs, case.dys, strict=True):
        out = step(_tf_per_replica(strategy, xs, dtype), _tf_per_replica(strategy, dys, dtype))
    ys, dxs, dgammas, dbetas = (_tf_local(strategy, v) for v in out)
    return ReplicaResult(ys=tuple(ys), dxs=tuple(dxs), dgammas=tuple(dgammas), dbetas=tuple(dbetas),
                         running_means=tuple(_tf_local(strategy, moving_mean)),
                         running_vars=tuple(_tf_local(strategy, moving_var)),
                         saved_running=_saved(layer, case.xs[0][0].shape, dtype, strategy.scope()))


# --- the JAX engine: keras.distribution.DataParallel ----------------------------------------------------------

def _jax_batches(case: ReplicaCase, padded: bool) -> tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray]]:
    """(xs, dys, valid) of every step as global batches, shards in replica order; `padded`: every shard zero-padded
    to the largest, `valid` False on the padding."""
    n_max = max(case.shard_sizes)
    xs, dys, valid = [], [], []
    for step_x, step_dy in zip(case.xs, case.dys, strict=True):
        pad = (lambda a: np.pad(a, [(0, n_max - a.shape[0])] + [(0, 0)] * (a.ndim - 1))) if padded else (lambda a: a)
        xs.append(np.concatenate([pad(a) for a in step_x]))
        dys.append(np.concatenate([pad(a) for a in step_dy]))
        valid.append(np.concatenate([np.arange(n_max if padded else n) < n for n in case.shard_sizes]))
    return xs, dys, valid


def _jax_run(case: ReplicaCase, impl: str) -> ReplicaResult | ReplicaSkip:
    import jax
    import jax.numpy as jnp
    from jax import lax
    from jax.sharding import PartitionSpec as P

    spec, dtype, replicas = case.spec, np.dtype(case.dtype), case.replicas
    distribution = keras.distribution.DataParallel(devices=_devices(replicas))
    padded = impl == "scratch" and len(set(case.shard_sizes)) > 1  # the scratch layer masks padded shards
    xs, dys, valid = _jax_batches(case, padded)

    def put(a: np.ndarray, dtype: Any) -> Any:
        return keras.distribution.distribute_tensor(jnp.asarray(a, dtype), distribution.get_data_layout(a.shape))

    try:
        put(xs[0], dtype)
    except ValueError as e:  # JAX refuses to shard a batch that R does not divide
        return ReplicaSkip(f"{DESCRIPTOR.name}: keras.distribution.DataParallel cannot shard a global batch of "
                           f"{xs[0].shape[0]} over {replicas} devices: " + " ".join(str(e).split())[:300])
    with distribution.scope():
        layer = _builtin_layer(case, synchronized=False)
        layer.build((None, *xs[0].shape[1:]))
    _set_state(layer, case)
    if [v.name for v in layer.trainable_variables] != ["gamma", "beta"] or \
            [v.name for v in layer.non_trainable_variables] != ["moving_mean", "moving_variance"]:
        raise RuntimeError(f"{DESCRIPTOR.name}: unexpected BatchNormalization variables")

    def step(trainable: list, stats: list, x: Any, dy: Any, v: Any) -> tuple[Any, list, Any, list]:
        """One training step over `x` (a shard, or the global batch): (y, new stats, dx, [dγ, dβ])."""
        if impl == "builtin":
            def forward(t: list, x: Any) -> tuple[Any, list]:
                return layer.stateless_call(t, stats, x, training=True)
        else:
            psum = (lambda a: lax.psum(a, AXIS)) if case.synchronized else (lambda a: a)
            weight = v.reshape((-1,) + (1,) * (x.ndim - 1)).astype(x.dtype) if padded else None

            def forward(t: list, x: Any) -> tuple[Any, list]:
                y, mean, var = _scratch_step(x, weight, t[0], t[1], stats[0], stats[1], spec, psum)
                return y, [mean, var]

        y, vjp, new = jax.vjp(forward, trainable, x, has_aux=True)
        grads, dx = vjp(dy)
        return y, new, dx, grads

    trainable = [v.value for v in layer.trainable_variables]
    if impl == "builtin" and case.synchronized:
        owner = np.repeat(np.arange(replicas), xs[0].shape[0] // replicas)  # the replica each sample is on
        masks = (owner[None, :] == np.arange(replicas)[:, None])

        def program(trainable: list, stats: list, x: Any, dy: Any, v: Any) -> tuple[Any, ...]:
            """The global program Keras' JAX trainer runs: GSPMD over the sharded batch, stats replicated."""
            def forward(t: list, x: Any) -> tuple[Any, list]:
                return layer.stateless_call(t, [s[0] for s in stats], x, training=True)

            y, vjp, new = jax.vjp(forward, trainable, x, has_aux=True)
            _, dx = vjp(dy)
            shape = (replicas, -1) + (1,) * (dy.ndim - 1)
            # each replica's own dγ, dβ: the gradient of its own dy (the program sums them over the batch)
            own = jax.vmap(lambda d: vjp(d)[0])(dy[None] * jnp.asarray(masks, dy.dtype).reshape(shape))
            return y, [jnp.broadcast_to(s, (replicas, *s.shape)) for s in new], dx, own
    else:
        def local(trainable: list, stats: list, x: Any, dy: Any, v: Any) -> tuple[Any, ...]:
            y, new, dx, grads = step([t[0] for t in trainable], [s[0] for s in stats], x, dy, v)
            return y, [s[None] for s in new], dx, [g[None] for g in grads]

        program = jax.shard_map(local, mesh=distribution.device_mesh.backend_mesh,
                                in_specs=P(AXIS), out_specs=P(AXIS))
        # every replica its own copy of γ and β (a replicated input's gradient would be psummed over the devices)
        trainable = [put(np.broadcast_to(to_numpy(v), (replicas, *v.shape)), dtype) for v in trainable]
    compiled = jax.jit(program)
    channels = int(case.gamma.shape[0])
    stats = [put(np.full((replicas, channels), init), dtype)
             for init in (spec.init_running_mean, spec.init_running_var)]  # one row per replica
    for x, dy, v in zip(xs, dys, valid, strict=True):
        y, stats, dx, grads = compiled(trainable, stats, put(x, dtype), put(dy, dtype), put(v, bool))
    y, dx = to_numpy(y), to_numpy(dx)
    means, variances = to_numpy(stats[0]), to_numpy(stats[1])
    dgamma, dbeta = to_numpy(grads[0]), to_numpy(grads[1])
    n_max = xs[0].shape[0] // replicas
    rows = [slice(r * n_max, r * n_max + n) for r, n in enumerate(case.shard_sizes)]
    layer.moving_mean.assign(stats[0][0])  # one Keras variable: replica 0's statistics (REPLICA_CONVENTION)
    layer.moving_variance.assign(stats[1][0])
    return ReplicaResult(ys=tuple(y[s] for s in rows), dxs=tuple(dx[s] for s in rows), dgammas=tuple(dgamma),
                         dbetas=tuple(dbeta), running_means=tuple(means), running_vars=tuple(variances),
                         saved_running=_saved(layer, xs[0].shape, dtype, distribution.scope()))


class _KerasReplicaAdapter(ReplicaAdapter):
    """The engine of this process' backend (module docstring), one case at a time."""

    framework = DESCRIPTOR.name
    native_axis: ClassVar[int] = -1

    def run(self, cases: Sequence[ReplicaCase]) -> Iterator[ReplicaResult | ReplicaSkip]:
        _check_backend(self.impl)
        for case in cases:
            dtype = _check_dtype(case.dtype)
            with dtype_scope(dtype):
                yield _tf_run(case, self.impl) if BACKEND == "tensorflow" else _jax_run(case, self.impl)


class BuiltinSyncBatchNorm(_KerasReplicaAdapter):
    """keras.layers.BatchNormalization on every replica: synchronized=True under tf.distribute.MirroredStrategy
    (TensorFlow), the global GSPMD program of keras.distribution.DataParallel (JAX); per-replica cases the plain
    layer on each replica. Momentum weighs the old value; the moving variance is the biased σ² that normalizes."""

    impl = "builtin"

    def realize(self, spec: BNSpec, dtype: np.dtype) -> BNSpec:
        _check_dtype(dtype)
        _check_spec(spec)
        _check_backend(self.impl)
        if BACKEND != "tensorflow" and np.dtype(dtype) == np.float64:
            raise Unsupported(f"{DESCRIPTOR.name}: keras.layers.BatchNormalization computes in float32 whatever its "
                              "dtype (keras/src/layers/normalization/batch_normalization.py:345 `compute_dtype = "
                              "backend.result_type(inputs.dtype, \"float32\")`, and keras/src/backend/common/"
                              "dtypes.py:240,276 map float64 to float32 off TensorFlow). Received: float64")
        # TensorFlow: the synchronized moments are E[x²] − μ² (nn.py:1536-1538; tf.nn.moments for per-replica is
        # centred, "fast" covers both); JAX: jnp.var over the (global) batch, centred.
        return spec.replace(running_var="biased", variance="fast" if BACKEND == "tensorflow" else "two-pass")


class ScratchSyncBatchNorm(_KerasReplicaAdapter):
    """BatchNorm in keras.ops with the count-weighted all-reduce written out (`_sync_moments`): the replica
    context's all_reduce (TensorFlow) or lax.psum under shard_map (JAX); every spec field followed."""

    impl = "scratch"

    def realize(self, spec: BNSpec, dtype: np.dtype) -> BNSpec:
        _check_dtype(dtype)
        _check_spec(spec)
        _check_backend(self.impl)
        return spec
