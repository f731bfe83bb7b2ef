"""The JAX/Flax Trainer: jax.jit-compiled steps carrying batch_stats, optax SGD in PyTorch's formulation.

optax.chain(add_decayed_weights(λ), sgd(lr, momentum=μ)) computes g' = g + λ·p, t ← μ·t + g', p ← p − lr·t:
PyTorch's SGD (frameworks.training.SGDConfig) on every parameter, BN's scale and bias included; the
canonical momentum buffer v is optax's trace t. The loss is the batch mean of
optax.softmax_cross_entropy_with_integer_labels, as F.cross_entropy.

Two jax.jit functions, each traced (and compiled) once per input shape and dropout mode: the training step
(which also serves `gradients`, whose parameter and optimizer updates are dropped: one compilation instead
of two) and evaluation; `compile_counts` counts the traces and `compile_count` is the training step's. Batches go
to the device one at a time. Dropout draws from a PRNG key carried (and split) inside the compiled step;
the key is part of `state()`, so a resumed run draws the same masks.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
import optax.tree_utils as otu

from bnparity.frameworks import training
from bnparity.reference.alexnet import (
    AlexNetSpec,
    check_params,
    momentum_key,
    param_shapes,
    params_fingerprint,
    trainable_names,
    training_dtype,
)

from ._x64 import dtype_scope
from .alexnet import AlexNet, from_canonical, to_canonical
from .convert import framework_device

KEY_KEY = "rng.jax_key"
STEP_KEY = "step"


class Trainer(training.Trainer):
    """AlexNet in Flax with optax SGD, compiled with jax.jit.

    Args:
        arch: the AlexNetSpec.
        params: canonical initial parameters.
        sgd: learning rate, momentum, weight decay.
        device: "cpu" or "gpu".
        seed: the dropout PRNG seed. Default: derived from `params`.
        dtype: "float32" (training) or "float64" (model-parity checks, run under a scoped x64 switch).
    """

    framework = "jax"

    def __init__(self, *, arch: AlexNetSpec, params: dict[str, np.ndarray], sgd: training.SGDConfig,
                 device: str = "cpu", seed: int | None = None, dtype: str = "float32") -> None:
        check_params(arch, params)
        self.arch, self.sgd = arch, sgd
        self.dtype = training_dtype(dtype)
        self.device_name, self.device = device, framework_device(device)
        self._trainable = trainable_names(arch)
        self.compile_counts = {"train_step": 0, "evaluate": 0}
        self.steps = 0
        with self._scope():
            self.model = AlexNet(arch, dtype=jnp.dtype(self.dtype))
            self.tx = optax.chain(optax.add_decayed_weights(sgd.weight_decay),
                                  optax.sgd(sgd.lr, momentum=sgd.momentum or None))
            self._set_variables(params)
            self.opt_state = self.tx.init(self.params)
            self.key = jax.device_put(jax.random.PRNGKey(params_fingerprint(params) if seed is None else seed),
                                      self.device)
        self._step = jax.jit(self._step_impl)
        self._evaluate = jax.jit(self._evaluate_impl)

    @property
    def compile_count(self) -> int:
        """How many times the training step was traced and compiled (once per batch shape)."""
        return self.compile_counts["train_step"]

    def _scope(self):
        return dtype_scope(self.dtype)

    def _variables(self, params: dict[str, np.ndarray]) -> dict[str, Any]:
        """The Flax variables of the canonical arrays in `params` (other names in it are ignored)."""
        canonical = {n: params[n] for n in param_shapes(self.arch)}
        return from_canonical(self.arch, canonical, dtype=self.dtype, device=self.device_name)

    def _set_variables(self, params: dict[str, np.ndarray]) -> None:
        variables = self._variables(params)
        self.params, self.batch_stats = variables["params"], variables["batch_stats"]

    def _batch(self, x: np.ndarray, labels: np.ndarray, masks: list[np.ndarray] | None) -> tuple[Any, ...]:
        xs = jax.device_put(np.asarray(x, dtype=self.dtype), self.device)
        ys = jax.device_put(np.asarray(labels, dtype=np.int32), self.device)
        ms = None if masks is None else [jax.device_put(np.asarray(m, dtype=self.dtype), self.device)
                                         for m in masks]
        return xs, ys, ms

    # --- compiled functions (the body runs only when jax.jit traces it) ---

    def _loss(self, params: Any, batch_stats: Any, x: jax.Array, labels: jax.Array, masks: Any,
              key: jax.Array) -> tuple[jax.Array, tuple[jax.Array, Any]]:
        return _mean_loss(self.model, params, batch_stats, x, labels, masks, key)

    def _step_impl(self, params, batch_stats, opt_state, key, x, labels, masks):
        self.compile_counts["train_step"] += 1
        key, dropout_key = jax.random.split(key)
        (loss, (logits, batch_stats)), grads = jax.value_and_grad(self._loss, has_aux=True)(
            params, batch_stats, x, labels, masks, dropout_key)
        updates, opt_state = self.tx.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
        correct = jnp.sum(jnp.argmax(logits, axis=-1) == labels)
        return params, batch_stats, opt_state, key, loss, correct, grads, logits

    def _evaluate_impl(self, params, batch_stats, x, labels):
        self.compile_counts["evaluate"] += 1
        logits = self.model.apply({"params": params, "batch_stats": batch_stats}, x, train=False)
        loss_sum = optax.softmax_cross_entropy_with_integer_labels(logits, labels).sum()
        return loss_sum, jnp.sum(jnp.argmax(logits, axis=-1) == labels)

    # --- the Trainer interface ---

    def train_step(self, x: np.ndarray, labels: np.ndarray, *,
                   dropout_masks: list[np.ndarray] | None = None) -> training.StepStats:
        with self._scope():
            xs, ys, ms = self._batch(x, labels, dropout_masks)
            (self.params, self.batch_stats, self.opt_state, self.key, loss, correct, _, _) = self._step(
                self.params, self.batch_stats, self.opt_state, self.key, xs, ys, ms)
            self.steps += 1
            return training.StepStats(loss=float(loss), correct=int(correct))

    def evaluate(self, x: np.ndarray, labels: np.ndarray) -> tuple[float, int]:
        with self._scope():
            xs, ys, _ = self._batch(x, labels, None)
            loss_sum, correct = self._evaluate(self.params, self.batch_stats, xs, ys)
            return float(loss_sum), int(correct)

    def gradients(self, x: np.ndarray, labels: np.ndarray, *,
                  dropout_masks: list[np.ndarray] | None = None) -> training.Gradients:
        with self._scope():
            xs, ys, ms = self._batch(x, labels, dropout_masks)
            # The compiled training step, with its parameter and optimizer updates dropped.
            _, self.batch_stats, _, self.key, loss, _, grads, logits = self._step(
                self.params, self.batch_stats, self.opt_state, self.key, xs, ys, ms)
            return training.Gradients(logits=np.asarray(logits), loss=float(loss),
                                      grads=to_canonical(self.arch, {"params": grads}, self._trainable))

    def state(self) -> dict[str, np.ndarray]:
        with self._scope():
            state = to_canonical(self.arch, {"params": self.params, "batch_stats": self.batch_stats})
            if self.sgd.momentum:
                trace = {"params": otu.tree_get(self.opt_state, "trace")}
                state.update({momentum_key(n): v for n, v in to_canonical(self.arch, trace, self._trainable).items()})
            state[KEY_KEY] = np.asarray(jax.device_get(self.key))
            state[STEP_KEY] = np.array(self.steps, dtype=np.int64)
            return state

    def load_state(self, state: dict[str, np.ndarray]) -> None:
        check_params(self.arch, {n: state[n] for n in param_shapes(self.arch) if n in state})
        with self._scope():
            self._set_variables(state)
            self.opt_state = self.tx.init(self.params)
            if self.sgd.momentum:
                # The buffers have the parameters' shapes and layouts: convert them as parameters.
                as_params = {**state, **{n: state[momentum_key(n)] for n in self._trainable}}
                trace = self._variables(as_params)["params"]
                self.opt_state = otu.tree_set(self.opt_state, trace=trace)
            self.key = jax.device_put(np.asarray(state[KEY_KEY], dtype=np.uint32), self.device)
            self.steps = int(state[STEP_KEY])


def _mean_loss(model: Any, params: Any, batch_stats: Any, x: jax.Array, labels: jax.Array, masks: Any,
               key: jax.Array) -> tuple[jax.Array, tuple[jax.Array, Any]]:
    """The batch's mean cross-entropy in training mode, its logits and the updated batch_stats (shared with
    data_parallel.py, where the batch is one device's shard)."""
    logits, updated = model.apply({"params": params, "batch_stats": batch_stats}, x, train=True,
                                  dropout_masks=masks, rngs={"dropout": key}, mutable=["batch_stats"])
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
    return loss, (logits, updated.get("batch_stats", batch_stats))
