"""The JAX/Flax DataParallelTrainer: one jax.jit-compiled jax.shard_map step over R real host devices (SPMD).

The devices are the first R of JAX's platform (`--device cpu`: the host CPU split into R XLA devices by
XLA_FLAGS=--xla_force_host_platform_device_count=R, which must be set before JAX initializes:
bnparity.frameworks.replicas.replica_environment("jax", R)), in a one-axis mesh named "replicas". Each step is
the single-device Trainer's (frameworks/jax/train.py: the same Flax AlexNet, optax chain, loss and PRNG key
handling) written per device:

- the global batch (and its dropout masks) is placed sharded along its batch axis, R equal shards in order
  (bnparity.reference.crossreplica.shard_sizes; a batch that R does not divide raises ValueError);
- parameters and optimizer state are replicated (PartitionSpec()); each device differentiates its shard's mean
  loss with respect to its own copy of the parameters (`lax.pvary`: without it shard_map's
  varying-manual-axes typing transposes the implicit broadcast of the replicated parameters into a `psum`, and
  the gradient would come out R times the mean), then `lax.pmean`s the gradients over "replicas": with equal
  shards, the gradient of the global batch's mean loss. Every device applies the same optax update;
- batch_stats are held per device: every leaf stacked with a leading axis R, sharded PartitionSpec("replicas").
  bn_sync="sync" builds the BatchNorm layers with axis_name="replicas" (flax.linen.BatchNorm `lax.pmean`s the
  shard means and two-pass variances: with equal shards the global batch's statistics), so every copy stays
  the same; "local" builds them without (each device normalizes with its own shard's statistics, and the
  copies diverge);
- dropout: given masks are sharded like x; without masks each device draws its own, from the step's key with the
  device index folded in (`jax.random.fold_in(key, lax.axis_index("replicas"))`).

The saved model (`state`, `evaluate`) holds the parameters (alike on every device) and the running statistics a
Flax user saves: their mean over the devices (SAVED_RUNNING = "mean"). Flax's ImageNet example
(google/flax examples/imagenet/train.py, commit 594b4529: `train_and_evaluate`) trains with per-device BatchNorm
and, before every evaluation and every checkpoint, calls `sync_batch_stats`, which replaces each device's
batch_stats by `cross_replica_mean` (`jax.pmap(lambda x: lax.pmean(x, 'x'), 'x')`); `save_checkpoint` then takes
replica 0's copy (`x[0]`, `flax.jax_utils.unreplicate`'s semantics), which by then is the mean. `evaluate` runs
the saved model on device 0 without writing the mean back into the devices (so that evaluating does not change
training); `load_state` gives every device the saved state, as restoring that checkpoint with
`jax_utils.replicate` does. In "sync" mode the copies are equal and the choice makes no difference.

float64 runs inside `_x64.dtype_scope`, as the single-device Trainer.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
import optax.tree_utils as otu
from jax import lax
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from bnparity.frameworks import training
from bnparity.frameworks.replicas import replica_environment
from bnparity.reference.alexnet import (
    AlexNetSpec,
    check_params,
    momentum_key,
    param_shapes,
    params_fingerprint,
    running_names,
    trainable_names,
    training_dtype,
)
from bnparity.reference.crossreplica import shard_sizes

from ._x64 import dtype_scope
from .alexnet import AlexNet, from_canonical, to_canonical
from .descriptor import DESCRIPTOR
from .train import KEY_KEY, STEP_KEY, _mean_loss

AXIS = "replicas"  # the mesh axis, and the BatchNorm axis_name in "sync" mode
SAVED_RUNNING = "mean"  # what `state` saves of the per-device running statistics: "mean" or "replica0"


def _devices(device: str, replicas: int) -> list[jax.Device]:
    """The first `replicas` devices of `device`'s platform. Raises RuntimeError (one line) when there are fewer."""
    if device not in ("cpu", "gpu", "cuda"):
        raise ValueError(f"device must be 'cpu' or 'gpu'. Received: {device!r}")
    platform = "cpu" if device == "cpu" else "gpu"
    try:
        devices = jax.devices(platform)
    except RuntimeError as e:
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise RuntimeError(f"--device {device}: JAX sees no {platform.upper()} here "
                           f"(jax.devices({platform!r}) raised: {reason})") from None
    if len(devices) < replicas:
        env = " ".join(f"{k}={v}" for k, v in replica_environment(DESCRIPTOR.name, replicas).items())
        hint = f"start Python with {env} (set before JAX initializes)" if platform == "cpu" else "use fewer replicas"
        raise RuntimeError(f"jax: {replicas} replicas need {replicas} {platform} devices, JAX sees {len(devices)}; "
                           f"{hint}")
    return list(devices[:replicas])


class DataParallelTrainer(training.DataParallelTrainer):
    """AlexNet in Flax trained data-parallel by one jitted jax.shard_map step over R devices (module docstring).

    Args:
        arch: the AlexNetSpec.
        params: canonical initial parameters (every device gets them).
        sgd: learning rate, momentum, weight decay.
        replicas: R, the number of devices (the first R of the platform).
        bn_sync: "sync" (BatchNorm with the global batch's statistics, axis_name="replicas") or "local" (each
            device's own shard's).
        device: "cpu" or "gpu".
        dtype: "float32" (training) or "float64" (parity checks, run under a scoped x64 switch).
        seed: the dropout PRNG seed. Default: derived from `params`, as the single-device Trainer.

    Raises:
        ValueError: an unknown bn_sync, dtype or device.
        RuntimeError: JAX sees fewer than R devices of the platform, or no GPU for device="gpu" (one line).
    """

    framework = DESCRIPTOR.name
    saved_running = SAVED_RUNNING

    def __init__(self, *, arch: AlexNetSpec, params: dict[str, np.ndarray], sgd: training.SGDConfig, replicas: int,
                 bn_sync: str, device: str = "cpu", dtype: str = "float32", seed: int | None = None) -> None:
        replicas, bn_sync = self.checked(replicas, bn_sync)
        check_params(arch, params)
        self.arch, self.sgd, self.replicas, self.bn_sync = arch, sgd, replicas, bn_sync
        self.dtype = training_dtype(dtype)
        self.device_name = device
        self.mesh = Mesh(np.array(_devices(device, self.replicas)), (AXIS,))
        self._replicated = NamedSharding(self.mesh, P())
        self._sharded = NamedSharding(self.mesh, P(AXIS))
        self._device0 = self.mesh.devices.flat[0]
        self._trainable = trainable_names(arch)
        self.compile_counts = {"train_step": 0, "evaluate": 0}
        self.steps = 0
        self._closed = False
        with self._scope():
            self.model = AlexNet(arch, dtype=jnp.dtype(self.dtype), axis_name=AXIS if bn_sync == "sync" else None)
            self.eval_model = AlexNet(arch, dtype=jnp.dtype(self.dtype))  # eval mode: running statistics only
            self.tx = optax.chain(optax.add_decayed_weights(sgd.weight_decay),
                                  optax.sgd(sgd.lr, momentum=sgd.momentum or None))
            self._set_variables(params)
            self.opt_state = jax.device_put(self.tx.init(self.params), self._replicated)
            self.key = jax.device_put(jax.random.PRNGKey(params_fingerprint(params) if seed is None else seed),
                                      self._replicated)
        self._step = jax.jit(self._step_impl)
        self._evaluate = jax.jit(self._evaluate_impl)

    @property
    def compile_count(self) -> int:
        """How many times the training step was traced and compiled (once per batch shape and dropout mode)."""
        return self.compile_counts["train_step"]

    def _scope(self):
        if self._closed:
            raise RuntimeError("jax data-parallel trainer: used after close()")
        return dtype_scope(self.dtype)

    # --- placement ---

    def _variables(self, params: dict[str, np.ndarray]) -> dict[str, Any]:
        """The Flax variables of the canonical arrays in `params`, as NumPy arrays (other names are ignored)."""
        canonical = {n: params[n] for n in param_shapes(self.arch)}
        variables = from_canonical(self.arch, canonical, dtype=self.dtype, device="cpu")
        return jax.tree.map(np.asarray, variables)

    def _set_variables(self, params: dict[str, np.ndarray]) -> None:
        """Parameters replicated on the mesh; every device's batch_stats the same copy of `params`' statistics."""
        variables = self._variables(params)
        self.params = jax.device_put(variables["params"], self._replicated)
        stacked = jax.tree.map(lambda a: np.stack([a] * self.replicas), variables["batch_stats"])
        self.batch_stats = jax.device_put(stacked, self._sharded)

    def _shards(self, x: np.ndarray, labels: np.ndarray, masks: list[np.ndarray] | None) -> tuple[Any, ...]:
        """The global batch placed sharded along its batch axis, R equal shards in order."""
        n = int(np.shape(x)[0])
        sizes = shard_sizes(n, self.replicas)
        if len(set(sizes)) != 1:
            raise ValueError(f"jax data-parallel: a global batch of {n} does not split into {self.replicas} equal "
                             f"shards (shard_sizes gives {sizes}); use a batch that {self.replicas} divides")
        xs = jax.device_put(np.asarray(x, dtype=self.dtype), self._sharded)
        ys = jax.device_put(np.asarray(labels, dtype=np.int32), self._sharded)
        ms = None if masks is None else [jax.device_put(np.asarray(m, dtype=self.dtype), self._sharded)
                                         for m in masks]
        return xs, ys, ms

    # --- compiled functions (the bodies run only when jax.jit traces them) ---

    def _loss(self, params: Any, batch_stats: Any, x: jax.Array, labels: jax.Array, masks: Any,
              key: jax.Array) -> tuple[jax.Array, tuple[jax.Array, Any]]:
        """One device's mean loss over its shard, its logits and its updated batch_stats."""
        return _mean_loss(self.model, params, batch_stats, x, labels, masks, key)

    def _device_step(self, params, batch_stats, opt_state, key, x, labels, masks):
        """The step on one device (inside shard_map): its shard, its batch_stats copy (leading axis of size 1)."""
        stats = jax.tree.map(lambda a: a[0], batch_stats)
        device_key = jax.random.fold_in(key, lax.axis_index(AXIS))
        # This device's own copy of the parameters: its gradient is its shard's, pmean-ed below.
        own = lax.pvary(params, AXIS)
        (loss, (logits, stats)), grads = jax.value_and_grad(self._loss, has_aux=True)(
            own, stats, x, labels, masks, device_key)
        grads = lax.pmean(grads, AXIS)
        loss = lax.pmean(loss, AXIS)  # equal shards: the global batch's mean loss
        correct = lax.psum(jnp.sum(jnp.argmax(logits, axis=-1) == labels), AXIS)
        updates, opt_state = self.tx.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
        return params, jax.tree.map(lambda a: a[None], stats), opt_state, loss, correct, grads, logits

    def _step_impl(self, params, batch_stats, opt_state, key, x, labels, masks):
        self.compile_counts["train_step"] += 1
        key, dropout_key = jax.random.split(key)
        step = jax.shard_map(self._device_step, mesh=self.mesh,
                             in_specs=(P(), P(AXIS), P(), P(), P(AXIS), P(AXIS), P(AXIS)),
                             out_specs=(P(), P(AXIS), P(), P(), P(), P(), P(AXIS)))
        params, batch_stats, opt_state, loss, correct, grads, logits = step(
            params, batch_stats, opt_state, dropout_key, x, labels, masks)
        return params, batch_stats, opt_state, key, loss, correct, grads, logits

    def _evaluate_impl(self, params, batch_stats, x, labels):
        self.compile_counts["evaluate"] += 1
        logits = self.eval_model.apply({"params": params, "batch_stats": batch_stats}, x, train=False)
        loss_sum = optax.softmax_cross_entropy_with_integer_labels(logits, labels).sum()
        return loss_sum, jnp.sum(jnp.argmax(logits, axis=-1) == labels)

    # --- the saved model ---

    def _saved_batch_stats(self) -> Any:
        """The running statistics the saved model holds (SAVED_RUNNING), as NumPy arrays."""
        def saved(a: jax.Array) -> np.ndarray:
            copies = np.asarray(jax.device_get(a))
            return copies.mean(axis=0, dtype=copies.dtype) if SAVED_RUNNING == "mean" else copies[0]

        return jax.tree.map(saved, self.batch_stats)

    def replica_running(self) -> list[dict[str, np.ndarray]]:
        """Every device's own BN running statistics (canonical names and layout), device order."""
        names = running_names(self.arch)
        copies = jax.tree.map(lambda a: np.asarray(jax.device_get(a)), self.batch_stats)
        with self._scope():
            return [to_canonical(self.arch, {"batch_stats": jax.tree.map(lambda a, r=r: a[r], copies)}, names)
                    for r in range(self.replicas)]

    # --- the Trainer interface ---

    def train_step(self, x: np.ndarray, labels: np.ndarray, *,
                   dropout_masks: list[np.ndarray] | None = None) -> training.StepStats:
        with self._scope():
            xs, ys, ms = self._shards(x, labels, dropout_masks)
            (self.params, self.batch_stats, self.opt_state, self.key, loss, correct, _, _) = self._step(
                self.params, self.batch_stats, self.opt_state, self.key, xs, ys, ms)
            self.steps += 1
            return training.StepStats(loss=float(loss), correct=int(correct))

    def evaluate(self, x: np.ndarray, labels: np.ndarray) -> tuple[float, int]:
        """The saved model (parameters, SAVED_RUNNING statistics) in eval mode on device 0, any batch size."""
        with self._scope():
            params = jax.device_put(jax.device_get(self.params), self._device0)
            stats = jax.device_put(self._saved_batch_stats(), self._device0)
            xs = jax.device_put(np.asarray(x, dtype=self.dtype), self._device0)
            ys = jax.device_put(np.asarray(labels, dtype=np.int32), self._device0)
            loss_sum, correct = self._evaluate(params, stats, xs, ys)
            return float(loss_sum), int(correct)

    def gradients(self, x: np.ndarray, labels: np.ndarray, *,
                  dropout_masks: list[np.ndarray] | None = None) -> training.Gradients:
        """The pmean-ed gradients and the global batch's logits and mean loss; batch_stats update as in a step."""
        with self._scope():
            xs, ys, ms = self._shards(x, labels, dropout_masks)
            # The compiled training step, with its parameter and optimizer updates dropped.
            _, self.batch_stats, _, self.key, loss, _, grads, logits = self._step(
                self.params, self.batch_stats, self.opt_state, self.key, xs, ys, ms)
            return training.Gradients(logits=np.asarray(logits), loss=float(loss),
                                      grads=to_canonical(self.arch, {"params": grads}, self._trainable))

    def state(self) -> dict[str, np.ndarray]:
        """Parameters, the saved running statistics (SAVED_RUNNING), momentum buffers, PRNG key and step count."""
        with self._scope():
            variables = {"params": jax.device_get(self.params), "batch_stats": self._saved_batch_stats()}
            state = to_canonical(self.arch, variables)
            if self.sgd.momentum:
                trace = {"params": otu.tree_get(jax.device_get(self.opt_state), "trace")}
                state.update({momentum_key(n): v for n, v in to_canonical(self.arch, trace, self._trainable).items()})
            state[KEY_KEY] = np.asarray(jax.device_get(self.key))
            state[STEP_KEY] = np.array(self.steps, dtype=np.int64)
            return state

    def load_state(self, state: dict[str, np.ndarray]) -> None:
        """Every device gets `state` (parameters, running statistics, momentum buffers); the key and step too."""
        check_params(self.arch, {n: state[n] for n in param_shapes(self.arch) if n in state})
        with self._scope():
            self._set_variables(state)
            opt_state = self.tx.init(self._variables(state)["params"])
            if self.sgd.momentum:
                # The buffers have the parameters' shapes and layouts: convert them as parameters.
                as_params = {**state, **{n: state[momentum_key(n)] for n in self._trainable}}
                opt_state = otu.tree_set(opt_state, trace=self._variables(as_params)["params"])
            self.opt_state = jax.device_put(opt_state, self._replicated)
            self.key = jax.device_put(np.asarray(state[KEY_KEY], dtype=np.uint32), self._replicated)
            self.steps = int(state[STEP_KEY])

    def close(self) -> None:
        """Nothing runs outside a call in JAX: drops the device arrays; idempotent."""
        if self._closed:
            return
        self._closed = True
        self._step = self._evaluate = None
        self.params = self.batch_stats = self.opt_state = None
