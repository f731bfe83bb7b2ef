"""The Keras DataParallelTrainer: the single-device Trainer's AlexNet and step (train.py), run on R replicas of the
backend's own engine (the same engines as replicas.py).

TensorFlow: tf.distribute.MirroredStrategy over R logical CPU devices (``BNPARITY_KERAS_TF_CPUS=R`` before
TensorFlow starts, replicas.py). The model and optimizer are built under `strategy.scope()` (MirroredVariables);
every step is `strategy.run` of the step Keras' TF trainer runs per replica: its shard's mean loss, one
GradientTape, the loss scaled by 1/R (keras/src/losses/loss.py:229-243 `scale_loss_for_distribution`) and
`optimizer.apply`, which all-reduces (sums) the gradients in replica context
(keras/src/backend/tensorflow/optimizer.py:113-125, 141-165): the mean over the replicas of their mean-loss
gradients. bn_sync="sync" sets every BatchNormalization layer's `synchronized` flag (the constructor's argument,
stored at keras/src/layers/normalization/batch_normalization.py:189 and read by `_moments` at :434-439): its
moments are all-reduced over the replicas; "local": each replica's own. The moving statistics are
MirroredVariables with aggregation "none": each replica writes its own copy, and the saved model (`state`,
`Model.save_weights`) reads replica 0's (SAVED_RUNNING = "replica0").

JAX: keras.distribution.DataParallel over the first R host devices (XLA_FLAGS=--xla_force_host_platform_device_count
=R). bn_sync="sync" is what Keras' JAX trainer does: the variables replicated on the mesh (built under
`distribution.scope()`), the global batch sharded on its first axis, and the single-device Trainer's jitted step
run unchanged on it; XLA partitions it (GSPMD), so BatchNorm's moments and the loss are the global batch's.
Keras has no per-replica BatchNorm on JAX: "local" runs the same stateless model under `jax.shard_map`, every
device its shard and its own copy of the non-trainable variables (BN statistics, dropout seed states), the
gradients `lax.pmean`-ed (`lax.pvary` gives each device its own copy of the parameters: without it the gradient
of a replicated input is psummed), then the single-device optimizer update. The Keras variables hold device 0's
statistics after every step (SAVED_RUNNING).

PyTorch: Keras has no distribution support there (keras/src/backend/__init__.py:43-47); the trainer raises
frameworks.base.Unsupported.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np

from bnparity.frameworks import training
from bnparity.frameworks.base import Unsupported
from bnparity.reference.alexnet import AlexNetSpec, running_names
from bnparity.reference.crossreplica import shard_sizes

from ._backend import BACKEND, DESCRIPTOR
from ._x64 import dtype_scope
from .alexnet import _from_keras, to_canonical
from .convert import to_numpy, to_tensor
from .replicas import AXIS, _devices, _tf_strategy
from .train import Trainer, _mean_loss

SAVED_RUNNING = "replica0"  # what `state` saves of the per-replica running statistics


class DataParallelTrainer(Trainer, training.DataParallelTrainer):
    """AlexNet in Keras 3 trained data-parallel on R replicas of the backend's engine (module docstring).

    Args:
        arch: the AlexNetSpec.
        params: canonical initial parameters (every replica gets them).
        sgd: learning rate, momentum, weight decay.
        replicas: R, the number of CPU devices (the first R).
        bn_sync: "sync" (BatchNorm with the global batch's statistics) or "local" (each replica's shard's).
        device: "cpu" only.
        dtype: "float32", or "float64" where every layer of the backend computes it (train.py).
        seed: seeds the Dropout layers' generators. Default: derived from `params`.

    Raises:
        Unsupported: the torch backend, or a device other than the CPU.
        RuntimeError: fewer than R CPU devices (one line naming the variable to set).
        ValueError: an unknown bn_sync, or (in a step) a batch R does not divide.
    """

    framework = DESCRIPTOR.name
    saved_running = SAVED_RUNNING

    def __init__(self, *, arch: AlexNetSpec, params: dict[str, np.ndarray], sgd: training.SGDConfig, replicas: int,
                 bn_sync: str, device: str = "cpu", dtype: str = "float32", seed: int | None = None) -> None:
        replicas, bn_sync = self.checked(replicas, bn_sync)
        if BACKEND not in ("tensorflow", "jax"):
            raise Unsupported(f"{DESCRIPTOR.name}: Keras has no distribution support on the {BACKEND} backend "
                              "(keras/src/backend/__init__.py: distribution_lib = None)")
        if device != "cpu":
            raise Unsupported(f"{DESCRIPTOR.name}: the data-parallel trainer runs on CPU devices. Received: {device!r}")
        self.replicas, self.bn_sync = replicas, bn_sync
        self._closed = False
        if BACKEND == "tensorflow":
            self.strategy = _tf_strategy(replicas)
            scope = self.strategy.scope()
        else:
            self.distribution = keras.distribution.DataParallel(devices=_devices(replicas))
            scope = self.distribution.scope()
        with scope:
            super().__init__(arch=arch, params=params, sgd=sgd, device=device, seed=seed, dtype=dtype)
        if BACKEND == "tensorflow":
            for layer in self.model.layers_by_name.values():
                if isinstance(layer, keras.layers.BatchNormalization):
                    layer.synchronized = bn_sync == "sync"
        elif bn_sync == "local":
            self._restack()

    # --- the engines ---

    def _compile(self) -> None:
        if BACKEND == "tensorflow":
            import tensorflow as tf

            def step(update: bool, x: Any, labels: Any, masks: Any) -> Any:
                return self.strategy.run(self._tf_replica_step, args=(update, x, labels, masks))

            self._dp_step = tf.function(step)
            self._evaluate = tf.function(self._eval_impl)
        else:
            super()._compile()
            if self.bn_sync == "local":
                import jax

                self._jit_local = jax.jit(self._jax_local_step, static_argnums=(0,))

    def _tf_replica_step(self, update: bool, x: Any, labels: Any, masks: Any) -> tuple[Any, ...]:
        """One replica's step (inside strategy.run): its shard's mean loss and gradient; the update all-reduces."""
        import tensorflow as tf

        self.compile_counts["train_step" if update else "gradients"] += 1
        context = tf.distribute.get_replica_context()
        with tf.GradientTape() as tape:
            logits = self.model(x, training=True, dropout_masks=masks)
            loss = _mean_loss(labels, logits)  # this shard's mean loss
        grads = tape.gradient(loss, self._variables)
        if update:  # Keras' TF recipe: loss / R, and the optimizer sums the replicas' gradients
            scale = 1.0 / self.replicas
            self.optimizer.apply([g * scale for g in self._decayed(grads, self._variables)], self._variables)
        mean = tf.distribute.ReduceOp.MEAN
        return logits, context.all_reduce(mean, loss), context.all_reduce(mean, grads)

    def _jax_local_step(self, update: bool, trainable: list, frozen: list, opt_vars: list, x: Any, labels: Any,
                        masks: Any) -> tuple[Any, ...]:
        """bn_sync="local" on JAX: the model per device under shard_map, gradients pmean-ed, one update."""
        import jax
        from jax import lax
        from jax.sharding import PartitionSpec as P

        self.compile_counts["train_step" if update else "gradients"] += 1

        def per_device(trainable: list, frozen: list, x: Any, labels: Any, masks: Any) -> tuple[Any, ...]:
            own = lax.pvary(trainable, AXIS)  # this device's own copy: its gradient is its shard's

            def loss_fn(t: list) -> tuple[Any, tuple[Any, list]]:
                logits, out = self.model.stateless_call(t, [f[0] for f in frozen], x, training=True,
                                                        dropout_masks=masks)
                return _mean_loss(labels, logits), (logits, out)

            (loss, (logits, out)), grads = jax.value_and_grad(loss_fn, has_aux=True)(own)
            return [f[None] for f in out], lax.pmean(loss, AXIS), lax.pmean(grads, AXIS), logits

        mesh = self.distribution.device_mesh.backend_mesh
        frozen, loss, grads, logits = jax.shard_map(
            per_device, mesh=mesh, in_specs=(P(), P(AXIS), P(AXIS), P(AXIS), P(AXIS)),
            out_specs=(P(AXIS), P(), P(), P(AXIS)))(trainable, frozen, x, labels, masks)
        if update:
            trainable, opt_vars = self.optimizer.stateless_apply(opt_vars, self._decayed(grads, trainable), trainable)
        return trainable, frozen, opt_vars, logits, loss, grads

    def _restack(self) -> None:
        """Every device's copy of the non-trainable variables: the Keras variables' values, stacked R times."""
        self._frozen = [self._put(np.stack([to_numpy(v)] * self.replicas), v.dtype)
                        for v in self.model.non_trainable_variables]

    def _put(self, a: np.ndarray, dtype: Any) -> Any:
        """`a` sharded on its first axis over the mesh (keras.distribution's data layout)."""
        import jax.numpy as jnp

        return keras.distribution.distribute_tensor(jnp.asarray(a, dtype),
                                                    self.distribution.get_data_layout(np.shape(a)))

    def _jax_local_run(self, update: bool, x: Any, labels: Any, masks: Any) -> tuple[Any, ...]:
        model, opt = self.model, self.optimizer
        trainable, self._frozen, opt_vars, logits, loss, grads = self._jit_local(
            update, [v.value for v in model.trainable_variables], self._frozen, [v.value for v in opt.variables],
            x, labels, masks)
        for variable, copies in zip(model.non_trainable_variables, self._frozen, strict=True):
            variable.assign(copies[0])  # device 0's copy: what the saved model holds (SAVED_RUNNING)
        if update:
            for variable, value in zip(model.trainable_variables, trainable, strict=True):
                variable.assign(value)
            for variable, value in zip(opt.variables, opt_vars, strict=True):
                variable.assign(value)
        order = {id(v): i for i, v in enumerate(model.trainable_variables)}
        return logits, loss, [grads[order[id(v)]] for v in self._variables]

    def _run(self, update: bool, x: np.ndarray, labels: np.ndarray,
             masks: list[np.ndarray] | None) -> tuple[Any, Any, list[Any]]:
        """(global logits, mean loss, mean gradients) of one distributed step on the global batch."""
        self._check_open()
        n = int(np.shape(x)[0])
        sizes = shard_sizes(n, self.replicas)
        if len(set(sizes)) != 1:
            raise ValueError(f"{DESCRIPTOR.name} data-parallel: a global batch of {n} does not split into "
                             f"{self.replicas} equal shards (shard_sizes gives {sizes})")
        x = np.asarray(x, dtype=self.dtype)
        labels = np.asarray(labels, dtype=np.int32)
        masks = None if masks is None else [np.asarray(m, dtype=self.dtype) for m in masks]
        if BACKEND == "tensorflow":
            import tensorflow as tf

            def shards(a: np.ndarray, dtype: Any) -> Any:
                parts = np.split(a, self.replicas)
                return self.strategy.experimental_distribute_values_from_function(
                    lambda ctx: tf.constant(parts[ctx.replica_id_in_sync_group], dtype=dtype))

            logits, loss, grads = self._dp_step(
                update, shards(x, self.dtype), shards(labels, tf.int32),
                None if masks is None else tuple(shards(m, self.dtype) for m in masks))
            local = self.strategy.experimental_local_results
            return (np.concatenate([to_numpy(t) for t in local(logits)]), local(loss)[0],
                    [local(g)[0] for g in grads])
        xt = self._put(x, self.dtype)
        yt = self._put(labels, "int32")
        mt = None if masks is None else tuple(self._put(m, self.dtype) for m in masks)
        return (self._jax_local_run if self.bn_sync == "local" else self._jax_run)(update, xt, yt, mt)

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError(f"{DESCRIPTOR.name} data-parallel trainer: used after close()")

    # --- the Trainer interface ---

    def train_step(self, x: np.ndarray, labels: np.ndarray, *,
                   dropout_masks: list[np.ndarray] | None = None) -> training.StepStats:
        with dtype_scope(self.dtype):
            logits, loss, _ = self._run(True, x, labels, dropout_masks)
            self.steps += 1
            correct = int((to_numpy(logits).argmax(1) == np.asarray(labels)).sum())
            return training.StepStats(loss=float(to_numpy(loss)), correct=correct)

    def gradients(self, x: np.ndarray, labels: np.ndarray, *,
                  dropout_masks: list[np.ndarray] | None = None) -> training.Gradients:
        """The mean over replicas of their mean-loss gradients; the running statistics update as in a step."""
        with dtype_scope(self.dtype):
            logits, loss, grads = self._run(False, x, labels, dropout_masks)
            return training.Gradients(
                logits=to_numpy(logits), loss=float(to_numpy(loss)),
                grads={n: _from_keras(self.arch, n, to_numpy(g)) for n, g in zip(self._trainable, grads, strict=True)})

    def evaluate(self, x: np.ndarray, labels: np.ndarray) -> tuple[float, int]:
        """The saved model (parameters, replica 0's running statistics) in eval mode, any batch size."""
        self._check_open()
        if BACKEND == "jax":
            with dtype_scope(self.dtype):
                import jax

                trainable = [jax.device_get(v.value) for v in self.model.trainable_variables]
                frozen = [jax.device_get(v.value) for v in self.model.non_trainable_variables]
                loss_sum, correct = self._jit_eval(trainable, frozen, to_tensor(x, self.dtype),
                                                   keras.ops.convert_to_tensor(np.asarray(labels, np.int32)))
                return float(to_numpy(loss_sum)), int(to_numpy(correct))
        return super().evaluate(x, labels)

    def replica_running(self) -> list[dict[str, np.ndarray]]:
        """Every replica's own BN running statistics (canonical names and layout), replica order."""
        names = running_names(self.arch)
        variables = self.model.by_name()
        with dtype_scope(self.dtype):
            if BACKEND == "tensorflow":
                local = self.strategy.experimental_local_results
                return [{n: _from_keras(self.arch, n, to_numpy(local(variables[n].value)[r])) for n in names}
                        for r in range(self.replicas)]
            if self.bn_sync == "sync":
                return [to_canonical(self.arch, self.model, names) for _ in range(self.replicas)]
            index = {id(v): i for i, v in enumerate(self.model.non_trainable_variables)}
            return [{n: _from_keras(self.arch, n, to_numpy(self._frozen[index[id(variables[n])]])[r]) for n in names}
                    for r in range(self.replicas)]

    def load_state(self, state: dict[str, np.ndarray]) -> None:
        """Every replica gets `state` (parameters, running statistics, momentum buffers, seeds, step)."""
        self._check_open()
        super().load_state(state)
        if BACKEND == "jax" and self.bn_sync == "local":
            with dtype_scope(self.dtype):
                self._restack()

    def close(self) -> None:
        """Drops the compiled steps (the engine runs only inside calls); idempotent."""
        self._closed = True
