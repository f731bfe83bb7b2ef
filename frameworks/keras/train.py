"""The Keras Trainer: the AlexNet keras.Model, keras.optimizers.SGD, a custom training step per backend.

The step is the one of keras.io's "writing a training loop from scratch" guides, compiled as Keras compiles
`fit` by default on each backend (`Model.compile(jit_compile="auto")`, keras/src/trainers/trainer.py:200-268):
TensorFlow: a `tf.function` without XLA (auto turns XLA off on a CPU-only machine, trainer.py:261-267); JAX: `jax.jit`
of `Model.stateless_call` and `Optimizer.stateless_apply`; PyTorch: eager (auto is eager there, trainer.py:257-259).
Why not `train_on_batch` or `fit`: benchmarks/keras_overhead.py measures both against a bare loop of this step on
the same model (cpu preset, one thread, 2026-12-02): this Trainer's overhead is within ±4% (noise) on every backend,
train_on_batch's 3% (TensorFlow) and 6% (JAX), fit's 6% and 2%; on PyTorch all three are within noise. A Trainer
step also needs what neither gives: the logits, and (for `gradients`) the gradients without an update.

The update equals PyTorch's (frameworks.training.SGDConfig), checked against torch by the model-parity suite:
- keras.optimizers.SGD keeps m ← μ·m − lr·g, p ← p + m (keras/src/optimizers/sgd.py:95-123): for a constant lr,
  m = −lr·v with PyTorch's v, so the steps are the same. Checkpoints store v = −m/lr (as MXNet's Trainer), in
  float64 (the conversion back is then exact).
- Its `weight_decay` is decoupled (p ← p − lr·λ·p outside the momentum, keras/src/optimizers/base_optimizer.py:952-959),
  not PyTorch's L2: λ·p is added to every gradient instead (biases, γ and β included) and weight_decay stays None.
- The loss is the batch mean of keras.losses.sparse_categorical_crossentropy(from_logits=True), as F.cross_entropy
  (a sum over the batch size, see `_mean_loss`).
Dropout (when no masks are given) draws from each Dropout layer's keras.random.SeedGenerator, seeded at
construction; their states are part of `state()`, so a resumed run draws the same masks.

float64: only where every layer computes it (TensorFlow; JAX without BatchNorm and GroupNorm; see alexnet.py);
elsewhere the Trainer raises frameworks.base.Unsupported rather than compute float32 and call it float64.
Threads: BNPARITY_THREADS (the convergence suite's thread count) sets TensorFlow's intra- and inter-op pools before
its first op; PyTorch follows OMP_NUM_THREADS and XLA its XLA_FLAGS (bnparity.suites.convergence.runner.thread_env).
"""

from __future__ import annotations

import os
from typing import Any

import keras
import numpy as np

from bnparity.frameworks import training
from bnparity.frameworks.base import Unsupported
from bnparity.reference.alexnet import (
    AlexNetSpec,
    check_params,
    momentum_key,
    param_shapes,
    params_fingerprint,
    trainable_names,
    training_dtype,
)

from ._backend import BACKEND, DESCRIPTOR
from ._x64 import dtype_scope
from .alexnet import AlexNet, _from_keras, _to_keras, from_canonical, to_canonical
from .convert import to_numpy, to_tensor

SEED_KEY = "rng.keras_seed"  # + ".<dropout layer>": its SeedGenerator's state
STEP_KEY = "step"


def _limit_threads() -> None:
    """TensorFlow's thread pools from BNPARITY_THREADS; they can only be set before TensorFlow runs its first op."""
    threads = os.environ.get("BNPARITY_THREADS")
    if BACKEND != "tensorflow" or not threads:
        return
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(int(threads))
        tf.config.threading.set_inter_op_parallelism_threads(int(threads))
    except RuntimeError:  # TensorFlow already initialized in this process: its pools are fixed
        pass


_limit_threads()


def _float64_problem(arch: AlexNetSpec) -> str | None:
    """Why this backend cannot run `arch` in float64 (a layer computes float32 there), or None if it can."""
    if BACKEND == "torch":
        return ("keras-torch: Dense computes float64 as float32 (ops.matmul casts to result_type(float64, float64), "
                "float32 on this backend: keras/src/backend/torch/numpy.py:137-143, keras/src/backend/common/"
                "dtypes.py:235-276)")
    if BACKEND == "jax" and (arch.batch_norm or arch.group_norm):
        layer, line = (("BatchNormalization", "batch_normalization.py:345") if arch.batch_norm
                       else ("GroupNormalization", "group_normalization.py:181"))
        return (f"keras-jax: {layer} computes float64 as float32 (it casts to result_type(x.dtype, 'float32'), "
                f"float32 on this backend: keras/src/layers/normalization/{line}, "
                "keras/src/backend/common/dtypes.py:235-276)")
    return None


def _mean_loss(labels: Any, logits: Any) -> Any:
    """The batch-mean cross-entropy, as a sum over the batch size: keras.ops.mean computes float64 in float32 on
    the JAX and PyTorch backends (it casts to result_type(x.dtype, "float32"), keras/src/backend/jax/numpy.py:231)."""
    per_example = keras.losses.sparse_categorical_crossentropy(labels, logits, from_logits=True)
    return keras.ops.sum(per_example) / per_example.shape[0]


def _correct(labels: Any, logits: Any) -> Any:
    return keras.ops.sum(keras.ops.cast(keras.ops.argmax(logits, axis=-1) == labels, "int32"))


class Trainer(training.Trainer):
    """AlexNet in Keras 3 with keras.optimizers.SGD, on the backend this process runs.

    Args:
        arch: the AlexNetSpec.
        params: canonical initial parameters.
        sgd: learning rate, momentum, weight decay.
        device: "cpu" or "gpu".
        seed: seeds the Dropout layers' generators. Default: derived from `params`.
        dtype: "float32" (training) or "float64" (model-parity checks; raises Unsupported where a layer of the
            backend would compute float32, see `_float64_problem`).
    """

    framework = DESCRIPTOR.name

    def __init__(self, *, arch: AlexNetSpec, params: dict[str, np.ndarray], sgd: training.SGDConfig,
                 device: str = "cpu", seed: int | None = None, dtype: str = "float32") -> None:
        check_params(arch, params)
        self.dtype = training_dtype(dtype)
        if self.dtype == np.float64 and (problem := _float64_problem(arch)):
            raise Unsupported(problem)
        self.arch, self.sgd = arch, sgd
        self.steps = 0
        self.compile_counts = {"train_step": 0, "gradients": 0, "evaluate": 0}
        with dtype_scope(self.dtype):
            self.model: AlexNet = from_canonical(arch, params, dtype=self.dtype, device=device)
            if seed is None:
                seed = params_fingerprint(params)
            self._seed(seed)
            self._by_name = self.model.by_name()
            self._trainable = trainable_names(arch)
            self._variables = [self._by_name[n] for n in self._trainable]
            # Built on the model's own order: Optimizer.stateless_apply (JAX) takes the values in that order
            self.optimizer = keras.optimizers.SGD(learning_rate=sgd.lr, momentum=sgd.momentum)
            self.optimizer.build(self.model.trainable_variables)
            self._wd = sgd.weight_decay
            order = {id(v): i for i, v in enumerate(self.model.trainable_variables)}
            self._trainable_index = [order[id(v)] for v in self._variables]  # canonical order in Keras' order
            self._carried: tuple[list, list, list] | None = None  # JAX: the state between steps, as arrays
            self._compile()

    @property
    def compile_count(self) -> int | None:
        """How many times the training step was traced (TensorFlow, JAX: once per batch shape and dropout mode);
        None on PyTorch, which runs eagerly."""
        return None if BACKEND == "torch" else self.compile_counts["train_step"]

    def _seed(self, seed: int) -> None:
        """Every Dropout layer's SeedGenerator state to (seed + its index, 0), as keras.random.SeedGenerator(seed)."""
        for i, layer in enumerate(self._dropouts()):
            layer.seed_generator.state.assign(np.array([(seed + i) % 2**31, 0], dtype="int32"))

    def _dropouts(self) -> list[keras.layers.Dropout]:
        return [la for la in self.model.layers_by_name.values()
                if isinstance(la, keras.layers.Dropout) and hasattr(la, "seed_generator")]

    # --- one step per backend (a gradient is the one thing Keras leaves to its backend) ---

    def _compile(self) -> None:
        if BACKEND == "tensorflow":
            import tensorflow as tf

            self._step = tf.function(self._tf_step)
            self._evaluate = tf.function(self._eval_impl)
        elif BACKEND == "jax":
            import jax

            self._jit_step = jax.jit(self._jax_step)
            self._jit_eval = jax.jit(self._jax_eval)
            self._step, self._evaluate = self._jax_run, self._jax_run_eval
        else:
            self._step, self._evaluate = self._torch_step, self._eval_impl

    def _decayed(self, grads: list[Any], values: list[Any]) -> list[Any]:
        """g + λ·p: PyTorch's L2 weight decay, added to the gradient before the momentum."""
        if not self._wd:
            return list(grads)
        return [g + keras.ops.cast(self._wd, g.dtype) * p for g, p in zip(grads, values, strict=True)]

    def _tf_step(self, update: bool, x: Any, labels: Any, masks: Any) -> tuple[Any, ...]:
        import tensorflow as tf

        self.compile_counts["train_step" if update else "gradients"] += 1
        with tf.GradientTape() as tape:
            logits = self.model(x, training=True, dropout_masks=masks)
            loss = _mean_loss(labels, logits)
        grads = tape.gradient(loss, self._variables)
        if update:
            self.optimizer.apply(self._decayed(grads, self._variables), self._variables)
        return logits, loss, grads

    def _torch_step(self, update: bool, x: Any, labels: Any, masks: Any) -> tuple[Any, ...]:
        import torch

        for v in self._variables:
            v.value.grad = None
        logits = self.model(x, training=True, dropout_masks=masks)
        loss = _mean_loss(labels, logits)
        loss.backward()
        grads = [v.value.grad for v in self._variables]
        if update:
            with torch.no_grad():
                self.optimizer.apply(self._decayed(grads, [v.value for v in self._variables]), self._variables)
        return logits.detach(), loss.detach(), grads

    def _jax_step(self, trainable: list, frozen: list, opt_vars: list, x: Any, labels: Any,
                  masks: Any) -> tuple[Any, ...]:
        import jax

        self.compile_counts["train_step"] += 1

        def loss_fn(trainable: list) -> tuple[Any, tuple[Any, list]]:
            logits, frozen_out = self.model.stateless_call(trainable, frozen, x, training=True, dropout_masks=masks)
            return _mean_loss(labels, logits), (logits, frozen_out)

        (loss, (logits, frozen)), grads = jax.value_and_grad(loss_fn, has_aux=True)(trainable)
        updated, opt_vars = self.optimizer.stateless_apply(opt_vars, self._decayed(grads, trainable), trainable)
        return updated, frozen, opt_vars, logits, loss, grads

    def _jax_values(self) -> tuple[list, list, list]:
        """(trainable, non-trainable, optimizer) values: the carried arrays, or the variables' when none are."""
        if self._carried is None:
            model, opt = self.model, self.optimizer
            return ([v.value for v in model.trainable_variables], [v.value for v in model.non_trainable_variables],
                    [v.value for v in opt.variables])
        return self._carried

    def _sync(self) -> None:
        """Write the carried JAX arrays back into the Keras variables (as Keras' JAX trainer does at the end of
        `fit`, `jax_state_sync`, keras/src/backend/jax/trainer.py); nothing to do on the other backends."""
        if BACKEND != "jax" or self._carried is None:
            return
        variables = (self.model.trainable_variables, self.model.non_trainable_variables, self.optimizer.variables)
        for group, values in zip(variables, self._carried, strict=True):
            for variable, value in zip(group, values, strict=True):
                variable.assign(value)
        self._carried = None

    def _jax_run(self, update: bool, x: Any, labels: Any, masks: Any) -> tuple[Any, ...]:
        """The jitted step on the carried values; the new values are carried to the next step (written into the
        variables by `_sync` only when they are read: assigning the 50-odd variables after every step made the Trainer
        26% slower than the bare loop on the cpu preset, measured on a busy machine; carried, it runs at the bare
        loop's speed, benchmarks/keras_overhead.py)."""
        trainable, frozen, opt_vars = self._jax_values()
        # One compiled function for both: `gradients` drops the update (one compilation instead of two, as the
        # JAX folder's Trainer).
        new_trainable, frozen, new_opt_vars, logits, loss, grads = self._jit_step(trainable, frozen, opt_vars, x,
                                                                                  labels, masks)
        self._carried = (new_trainable, frozen, new_opt_vars) if update else (trainable, frozen, opt_vars)
        return logits, loss, [grads[i] for i in self._trainable_index]

    def _eval_impl(self, x: Any, labels: Any) -> tuple[Any, Any]:
        self.compile_counts["evaluate"] += 1
        logits = self.model(x, training=False)
        loss_sum = keras.ops.sum(keras.losses.sparse_categorical_crossentropy(labels, logits, from_logits=True))
        return loss_sum, _correct(labels, logits)

    def _jax_eval(self, trainable: list, frozen: list, x: Any, labels: Any) -> tuple[Any, Any]:
        self.compile_counts["evaluate"] += 1
        logits, _ = self.model.stateless_call(trainable, frozen, x, training=False)
        loss_sum = keras.ops.sum(keras.losses.sparse_categorical_crossentropy(labels, logits, from_logits=True))
        return loss_sum, _correct(labels, logits)

    def _jax_run_eval(self, x: Any, labels: Any) -> tuple[Any, Any]:
        trainable, frozen, _ = self._jax_values()
        return self._jit_eval(trainable, frozen, x, labels)

    # --- the Trainer interface ---

    def _inputs(self, x: np.ndarray, labels: np.ndarray, masks: list[np.ndarray] | None) -> tuple[Any, ...]:
        xt = to_tensor(np.asarray(x, dtype=self.dtype), self.dtype)
        yt = keras.ops.convert_to_tensor(np.asarray(labels, dtype=np.int32), dtype="int32")
        mt = None if masks is None else tuple(to_tensor(np.asarray(m, dtype=self.dtype), self.dtype) for m in masks)
        return xt, yt, mt

    def train_step(self, x: np.ndarray, labels: np.ndarray, *,
                   dropout_masks: list[np.ndarray] | None = None) -> training.StepStats:
        with dtype_scope(self.dtype):
            xt, yt, mt = self._inputs(x, labels, dropout_masks)
            logits, loss, _ = self._step(True, xt, yt, mt)
            self.steps += 1
            correct = int((to_numpy(logits).argmax(1) == np.asarray(labels)).sum())
            return training.StepStats(loss=float(to_numpy(loss)), correct=correct)

    def evaluate(self, x: np.ndarray, labels: np.ndarray) -> tuple[float, int]:
        with dtype_scope(self.dtype):
            xt, yt, _ = self._inputs(x, labels, None)
            loss_sum, correct = self._evaluate(xt, yt)
            return float(to_numpy(loss_sum)), int(to_numpy(correct))

    def gradients(self, x: np.ndarray, labels: np.ndarray, *,
                  dropout_masks: list[np.ndarray] | None = None) -> training.Gradients:
        with dtype_scope(self.dtype):
            xt, yt, mt = self._inputs(x, labels, dropout_masks)
            logits, loss, grads = self._step(False, xt, yt, mt)
            return training.Gradients(
                logits=to_numpy(logits), loss=float(to_numpy(loss)),
                grads={n: _from_keras(self.arch, n, to_numpy(g)) for n, g in zip(self._trainable, grads, strict=True)})

    def _momentums(self) -> list[keras.Variable]:
        return [self.optimizer.momentums[self.optimizer._get_variable_index(v)] for v in self._variables]

    def state(self) -> dict[str, np.ndarray]:
        self._sync()
        with dtype_scope(self.dtype):
            state = to_canonical(self.arch, self.model)
            if self.sgd.momentum:
                # v = −m/lr in float64: m·(1/lr)·lr then rounds back to m exactly (in float32, 12% of the elements
                # of a random m would not at lr 0.05), so a resumed run continues bit-identically.
                for n, m in zip(self._trainable, self._momentums(), strict=True):
                    state[momentum_key(n)] = _from_keras(self.arch, n, to_numpy(m).astype(np.float64) / -self.sgd.lr)
            for layer in self._dropouts():
                state[f"{SEED_KEY}.{layer.name}"] = to_numpy(layer.seed_generator.state)
            state[STEP_KEY] = np.array(self.steps, dtype=np.int64)
            return state

    def load_state(self, state: dict[str, np.ndarray]) -> None:
        check_params(self.arch, {n: state[n] for n in param_shapes(self.arch) if n in state})
        self._sync()  # what the state does not hold (the optimizer's iteration count) stays current
        with dtype_scope(self.dtype):
            self.model.load(state)
            if self.sgd.momentum:
                for n, m in zip(self._trainable, self._momentums(), strict=True):
                    v = np.asarray(state[momentum_key(n)], dtype=np.float64)
                    m.assign((_to_keras(self.arch, n, v) * -self.sgd.lr).astype(self.dtype))
            for layer in self._dropouts():
                layer.seed_generator.state.assign(np.asarray(state[f"{SEED_KEY}.{layer.name}"], dtype="int32"))
            self.steps = int(state[STEP_KEY])
