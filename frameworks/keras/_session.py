"""A Keras layer through the layer protocol, on whichever backend runs it (private to this folder).

Keras layers are backend-neutral, but a gradient is not: Keras 3 leaves it to the backend (TensorFlow's
GradientTape, JAX's vjp of `Layer.stateless_call`, PyTorch's autograd; keras.io's "training loop from scratch"
guides, one per backend). `train_call` is that one step, written once per backend; everything else is Keras.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import keras
import numpy as np

from bnparity.frameworks.base import LayerSession, StepResult

from ._backend import BACKEND
from ._x64 import dtype_scope
from .convert import framework_dtype, to_numpy, to_tensor


def _training_keywords(layer: keras.layers.Layer, training: bool) -> dict[str, bool]:
    """The keywords of a call in training mode or not: `training` only for a layer whose call() takes it
    (stateless_call passes keywords to call() as they are; LayerNormalization's call() has no `training`)."""
    return {"training": training} if "training" in layer.call_signature_parameters else {}


class _JaxSteps:
    """A layer's training step and eval on the JAX backend, each one jax.jit of `Layer.stateless_call`, compiled
    once per input shape and dtype (as Keras' own JAX trainer compiles its step); eager JAX would compile every
    op of every call."""

    def __init__(self, layer: keras.layers.Layer) -> None:
        import jax

        train_keywords, eval_keywords = _training_keywords(layer, True), _training_keywords(layer, False)

        def train(trainable: list, frozen: list, x: Any, dy: Any) -> tuple[Any, Any, list, list]:
            def forward(trainable: list, x: Any) -> tuple[Any, list]:
                return layer.stateless_call(trainable, frozen, x, **train_keywords)

            y, backward, updated = jax.vjp(forward, trainable, x, has_aux=True)
            grads, dx = backward(dy)
            return y, dx, grads, updated

        def infer(trainable: list, frozen: list, x: Any, training: bool) -> Any:
            keywords = train_keywords if training else eval_keywords
            return layer.stateless_call(trainable, frozen, x, **keywords)[0]

        self.train = jax.jit(train)
        self.infer = jax.jit(infer, static_argnames="training")


def train_call(layer: keras.layers.Layer, x: np.ndarray, dy: np.ndarray, dtype: np.dtype, *,
               jax_steps: _JaxSteps | None = None) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """One training-mode call of `layer` on x and its backward pass with upstream gradient dy.

    The layer's non-trainable variables (BatchNorm's moving statistics) are updated as the call updates them.
    `jax_steps` (JAX backend only): the layer's compiled steps, to reuse across calls; without, they are compiled
    for this call.

    Returns:
        (y, dx, {trainable variable's name: its gradient}), as NumPy arrays.
    """
    with dtype_scope(dtype):
        xt, dyt = to_tensor(x, dtype), to_tensor(dy, dtype)
        names = [v.name for v in layer.trainable_variables]
        if BACKEND == "tensorflow":
            import tensorflow as tf

            with tf.GradientTape() as tape:
                tape.watch(xt)
                y = layer(xt, training=True)
            dx, *grads = tape.gradient(y, [xt, *layer.trainable_variables], output_gradients=dyt)
        elif BACKEND == "jax":
            steps = jax_steps or _JaxSteps(layer)
            y, dx, grads, updated = steps.train([v.value for v in layer.trainable_variables],
                                                [v.value for v in layer.non_trainable_variables], xt, dyt)
            for variable, value in zip(layer.non_trainable_variables, updated, strict=True):
                variable.assign(value)
        else:  # torch
            xt.requires_grad_(True)
            for v in layer.trainable_variables:
                v.value.grad = None
            y = layer(xt, training=True)
            y.backward(dyt)
            dx, grads = xt.grad, [v.value.grad for v in layer.trainable_variables]
        return to_numpy(y), to_numpy(dx), {n: to_numpy(g) for n, g in zip(names, grads, strict=True)}


def eval_call(layer: keras.layers.Layer, x: np.ndarray, dtype: np.dtype, *, training: bool = False,
              jax_steps: _JaxSteps | None = None) -> np.ndarray:
    """`layer` in inference mode (``training=False``: BatchNorm normalizes with its moving statistics).

    ``training=True`` normalizes with x's own statistics instead (a BatchNorm without running statistics): the
    moving statistics that call updates are put back as they were.
    """
    with dtype_scope(dtype):
        if BACKEND == "jax":  # stateless: nothing to put back
            steps = jax_steps or _JaxSteps(layer)
            return to_numpy(steps.infer([v.value for v in layer.trainable_variables],
                                        [v.value for v in layer.non_trainable_variables], to_tensor(x, dtype),
                                        training=training))
        if not training:
            return to_numpy(layer(to_tensor(x, dtype), training=False))
        kept = [v.value for v in layer.non_trainable_variables]
        y = to_numpy(layer(to_tensor(x, dtype), training=True))
        for variable, value in zip(layer.non_trainable_variables, kept, strict=True):
            variable.assign(value)
        return y


Forward = Callable[..., tuple[Any, dict[str, Any]]]


class ScratchLayer(keras.layers.Layer):
    """A scratch normalization as a Keras layer: `forward` in keras.ops, its parameters and statistics as variables.

    Args:
        forward: ``forward(x, params, stats, *, training) -> (y, new_stats)``, params and stats dicts of tensors
            keyed as below; new_stats is `stats` when the call updates nothing.
        params: trainable variables to create (name -> initial value): "gamma" (γ), "beta" (β).
        stats: non-trainable variables to create (name -> initial value): "moving_mean", "moving_variance".
        dtype: the layer's dtype (its variables' and its computation's).
    """

    def __init__(self, forward: Forward, *, params: dict[str, np.ndarray], stats: dict[str, np.ndarray],
                 dtype: np.dtype) -> None:
        super().__init__(dtype=framework_dtype(dtype))
        self.normalize = forward  # not `forward`: on the torch backend a Layer is a torch.nn.Module
        with dtype_scope(dtype):
            self.param_vars = {name: self._variable(name, value, dtype, trainable=True)
                               for name, value in params.items()}
            self.stat_vars = {name: self._variable(name, value, dtype, trainable=False)
                              for name, value in stats.items()}
        self.built = True

    def _variable(self, name: str, value: np.ndarray, dtype: np.dtype, *, trainable: bool) -> keras.Variable:
        variable = self.add_weight(shape=np.shape(value), initializer="zeros", name=name, trainable=trainable)
        variable.assign(to_tensor(value, dtype))  # assigned after creation, so that float64 keeps every digit
        return variable

    def call(self, x: Any, training: bool = False) -> Any:
        params = {name: v.value for name, v in self.param_vars.items()}
        stats = {name: v.value for name, v in self.stat_vars.items()}
        y, new_stats = self.normalize(x, params, stats, training=bool(training))
        if training:
            for name, value in new_stats.items():
                self.stat_vars[name].assign(value)
        return y


def scratch_session(forward: Forward, *, params: dict[str, np.ndarray], stats: dict[str, np.ndarray],
                    dtype: np.dtype) -> KerasLayerSession:
    """A ScratchLayer (see there for the arguments) as a session: γ, β and the statistics found by their names."""
    layer = ScratchLayer(forward, params=params, stats=stats, dtype=dtype)
    return KerasLayerSession(layer, dtype, gamma="gamma" if "gamma" in params else None,
                             beta="beta" if "beta" in params else None,
                             stats=("moving_mean", "moving_variance") if stats else None)


def _mean(x: Any, axes: tuple[int, ...]) -> Any:
    """The mean of x over `axes`, kept as size-1 axes, in x's dtype: Σx / m.

    Not keras.ops.mean: on the JAX and PyTorch backends it computes a float64 input in float32 and casts the result
    back (keras/src/backend/jax/numpy.py:231, keras/src/backend/torch/numpy.py:176:
    `compute_dtype = dtypes.result_type(x.dtype, "float32")`, float32 for float64 there). ops.sum keeps the dtype.
    """
    m = int(np.prod([x.shape[a] for a in axes]))  # the values per statistic
    return keras.ops.sum(x, axis=axes, keepdims=True) / m


def _mean_and_variance(x: Any, axes: tuple[int, ...], variance: str) -> tuple[Any, Any]:
    """(μ, σ²) of x over `axes`, kept as size-1 axes; σ² biased, by the spec's algorithm (the scratch layers').

    "two-pass": σ² = mean((x − μ)²); "fast": σ² = max(0, mean(x²) − μ²), clipped at 0 as Flax does (rounding can
    make it negative; bnparity.reference.moments has the same). The clip is ops.relu: ops.maximum(0.0, v) would
    compute a float64 v in float32 on the PyTorch backend (keras/src/backend/torch/numpy.py: maximum casts both to
    dtypes.result_type of the two).
    """
    mu = _mean(x, axes)  # μ
    if variance == "fast":
        return mu, keras.ops.relu(_mean(keras.ops.square(x), axes) - keras.ops.square(mu))
    return mu, _mean(keras.ops.square(x - mu), axes)  # σ² = mean((x − μ)²)


class KerasLayerSession(LayerSession):
    """A built Keras layer: training steps (a call with ``training=True`` and its backward pass), then eval.

    Args:
        layer: the layer, built for the inputs' shape.
        dtype: the NumPy dtype of the inputs.
        gamma, beta: the names of the layer's γ and β variables ("gamma", "beta"), or None where it has none.
        stats: the names of its (moving mean, moving variance) variables, or None when it keeps no statistics.
        eval_with_batch_stats: eval normalizes with the eval input's own statistics (a ``training=True`` call whose
            update of the moving statistics is undone): a BatchNorm without running statistics, which Keras' layer
            has no switch for.
    """

    def __init__(self, layer: keras.layers.Layer, dtype: np.dtype, *, gamma: str | None = "gamma",
                 beta: str | None = "beta", stats: tuple[str, str] | None = None,
                 eval_with_batch_stats: bool = False) -> None:
        self.layer, self.dtype, self.gamma, self.beta, self.stats = layer, dtype, gamma, beta, stats
        self.eval_with_batch_stats = eval_with_batch_stats
        self.jax_steps = _JaxSteps(layer) if BACKEND == "jax" else None

    def train_step(self, x: np.ndarray, dy: np.ndarray) -> StepResult:
        y, dx, grads = train_call(self.layer, x, dy, self.dtype, jax_steps=self.jax_steps)
        return StepResult(y=y, dx=dx, dgamma=grads.get(self.gamma) if self.gamma else None,
                          dbeta=grads.get(self.beta) if self.beta else None)

    def running_stats(self) -> tuple[np.ndarray, np.ndarray] | None:
        if self.stats is None:
            return None
        by_name = {v.name: v for v in self.layer.non_trainable_variables}
        return to_numpy(by_name[self.stats[0]]), to_numpy(by_name[self.stats[1]])

    def eval(self, x: np.ndarray) -> np.ndarray:
        return eval_call(self.layer, x, self.dtype, training=self.eval_with_batch_stats, jax_steps=self.jax_steps)
