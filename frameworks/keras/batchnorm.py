"""Keras' BatchNorm adapters: keras.layers.BatchNormalization (builtin) and BatchNorm in keras.ops (scratch).

Builtin: training is a call with ``training=True`` (batch statistics; the call assigns the moving statistics), eval a
call with ``training=False`` (moving statistics); dx, dγ and dβ are the backend's gradient of that call with the given
dy (_session.train_call). Keras is channels-last (``axis=-1``); the base class moves the data there and back. What
the layer cannot be told is taken from the backend's convention row in `realize`: the moving variance is always the
biased σ²_B, σ²_B is computed by the backend's `ops.moments` (two passes on TensorFlow and JAX, E[x²] − E[x]² on
PyTorch), and on the JAX and PyTorch backends the layer computes in float32 whatever its dtype.

Scratch (teaching material): `batch_norm`, the formulas of bnparity.reference.batchnorm in keras.ops, inside a
keras.layers.Layer whose moving statistics are non-trainable variables; it follows the spec exactly. Like Flax's, the
function is pure (it returns the updated statistics; the layer assigns them).
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np

from bnparity.frameworks.base import LayerAdapter, Unsupported
from bnparity.frameworks.conventions import convention
from bnparity.reference.spec import BNSpec, LayerSpec

from ._backend import BACKEND, DESCRIPTOR
from ._session import KerasLayerSession, _mean_and_variance, scratch_session
from ._x64 import dtype_scope
from .convert import framework_dtype, framework_momentum, to_tensor


def _moments_algorithm() -> str:
    """How the backend's ops.moments computes σ² (BatchNormalization's and GroupNormalization's): its convention row."""
    return convention(DESCRIPTOR.name).variance_algorithm


def _refuse_float64(layer: str, dtype: np.dtype, line: str) -> None:
    """Raise Unsupported for float64 on a backend where keras.layers.`layer` computes in float32 (all but TF)."""
    if BACKEND != "tensorflow" and np.dtype(dtype) == np.float64:
        raise Unsupported(f"{DESCRIPTOR.name}: keras.layers.{layer} computes in float32 on the {BACKEND} backend "
                          f"whatever its dtype ({line}: `compute_dtype = backend.result_type(..., \"float32\")`, "
                          "and keras/src/backend/common/dtypes.py:240 maps float64 to float32 on every backend but "
                          "TensorFlow): a float64 run would be a float32 result. Received: float64")


def _initial(value: float | tuple[float, ...], channels: int) -> np.ndarray:
    return np.broadcast_to(np.asarray(value, dtype=np.float64), (channels,)).copy()


class BuiltinBatchNorm(LayerAdapter):
    """keras.layers.BatchNormalization: channels last, momentum weighs the old value, biased moving variance."""

    framework = DESCRIPTOR.name
    normalization = "batchnorm"
    impl = "builtin"
    native_axis = DESCRIPTOR.native_axis

    def realize(self, spec: BNSpec, dtype: np.dtype) -> BNSpec:
        framework_dtype(dtype)  # raises Unsupported for a dtype Keras has no float type for
        _refuse_float64("BatchNormalization", dtype, "keras/src/layers/normalization/batch_normalization.py:345")
        if spec.track_running_stats and spec.momentum is None:
            raise Unsupported(f"{DESCRIPTOR.name}: keras.layers.BatchNormalization has a fixed momentum; it has no "
                              "cumulative average. Received: momentum=None")
        # Not configurable: the moving variance is the σ²_B that normalizes; σ²_B is the backend's ops.moments.
        return spec.replace(running_var="biased", variance=_moments_algorithm())

    def build(self, spec: BNSpec, *, shape: tuple[int, ...], dtype: np.dtype, gamma: np.ndarray,
              beta: np.ndarray, use_defaults: bool) -> KerasLayerSession:
        self.realize(spec, dtype)
        if spec.running_var != "biased":
            raise Unsupported(f"{DESCRIPTOR.name}: keras.layers.BatchNormalization always stores the biased moving "
                              f"variance. Received: running_var={spec.running_var!r}")
        channels = shape[spec.axis]
        options: dict[str, Any] = dict(axis=spec.axis, center=spec.affine, scale=spec.affine,
                                       dtype=framework_dtype(dtype))
        if not use_defaults:
            options.update(epsilon=spec.eps)
            if spec.track_running_stats:
                options.update(momentum=framework_momentum(spec))
        with dtype_scope(dtype):
            layer = keras.layers.BatchNormalization(**options)
            layer.build(shape)
            if spec.affine:
                layer.gamma.assign(to_tensor(gamma, dtype))
                layer.beta.assign(to_tensor(beta, dtype))
            if spec.track_running_stats and not use_defaults:
                layer.moving_mean.assign(to_tensor(_initial(spec.init_running_mean, channels), dtype))
                layer.moving_variance.assign(to_tensor(_initial(spec.init_running_var, channels), dtype))
        # No track_running_stats switch: without running statistics eval normalizes with its own batch's.
        return KerasLayerSession(layer, dtype, gamma="gamma" if spec.affine else None,
                                 beta="beta" if spec.affine else None,
                                 stats=("moving_mean", "moving_variance") if spec.track_running_stats else None,
                                 eval_with_batch_stats=not spec.track_running_stats)


def batch_norm(x: Any, params: dict[str, Any], stats: dict[str, Any], *, spec: BNSpec,
               training: bool) -> tuple[Any, dict[str, Any]]:
    """y = γ x̂ + β over channel axis `spec.axis`, and the moving statistics after this call.

    Args:
        x: the input, channels at `spec.axis`.
        params: {"gamma": γ, "beta": β}, shape (C,) each; empty when the spec is not affine.
        stats: {"moving_mean": ..., "moving_variance": ...}, shape (C,); empty when the spec tracks none.
        spec: the conventions to follow (eps, variance algorithm, momentum, running-variance estimator).
        training: normalize with the batch's statistics and update `stats` (True), or normalize with
            `stats` (False; with the batch's statistics when `stats` is empty).
    """
    ops = keras.ops
    axis = spec.axis % x.ndim
    axes = tuple(a for a in range(x.ndim) if a != axis)
    shape = tuple(-1 if a == axis else 1 for a in range(x.ndim))
    new_stats = stats
    if training or not stats:
        mu, var = _mean_and_variance(x, axes, spec.variance)  # μ_B, σ²_B (biased), kept as size-1 axes
        mu, var = ops.reshape(mu, (-1,)), ops.reshape(var, (-1,))
        if training and stats:
            m = int(np.prod(x.shape)) // x.shape[axis]  # values per channel
            if spec.running_var == "unbiased":
                stored_var = var * (m / (m - 1) if m > 1 else float("nan"))
            else:
                stored_var = var
            w = spec.weight_at(0)  # weight of the new batch statistic
            new_stats = {"moving_mean": (1 - w) * stats["moving_mean"] + w * mu,
                         "moving_variance": (1 - w) * stats["moving_variance"] + w * stored_var}
    else:
        mu, var = stats["moving_mean"], stats["moving_variance"]
    y = (x - ops.reshape(mu, shape)) / ops.sqrt(ops.reshape(var, shape) + spec.eps)  # x̂
    if "gamma" in params:
        y = ops.reshape(params["gamma"], shape) * y  # γ x̂
    if "beta" in params:
        y = y + ops.reshape(params["beta"], shape)  # + β
    return y, new_stats


def _scratch_session(spec: LayerSpec, forward: Any, *, channels: int, dtype: np.dtype, gamma: np.ndarray,
                     beta: np.ndarray) -> KerasLayerSession:
    """A scratch layer with γ and β (when affine) and running statistics (when tracked) of one per channel."""
    framework_dtype(dtype)
    params = {"gamma": gamma, "beta": beta} if spec.affine else {}
    stats = ({"moving_mean": _initial(spec.init_running_mean, channels),
              "moving_variance": _initial(spec.init_running_var, channels)} if spec.track_running_stats else {})
    return scratch_session(forward, params=params, stats=stats, dtype=dtype)


class ScratchBatchNorm(LayerAdapter):
    """BatchNorm in keras.ops (`batch_norm` in a keras.layers.Layer): any channel axis, every spec field honoured."""

    framework = DESCRIPTOR.name
    normalization = "batchnorm"
    impl = "scratch"
    native_axis = DESCRIPTOR.native_axis

    def realize(self, spec: BNSpec, dtype: np.dtype) -> BNSpec:
        framework_dtype(dtype)
        if spec.track_running_stats and spec.momentum is None:
            raise Unsupported(f"{DESCRIPTOR.name}: the scratch BatchNorm keeps no count of the batches it has seen "
                              "(the cumulative average needs one). Received: momentum=None")
        return spec

    def build(self, spec: BNSpec, *, shape: tuple[int, ...], dtype: np.dtype, gamma: np.ndarray,
              beta: np.ndarray, use_defaults: bool) -> KerasLayerSession:
        # A scratch layer has no defaults of its own: "defaults" are the spec it is given.
        self.realize(spec, dtype)

        def forward(x: Any, params: dict, stats: dict, *, training: bool) -> tuple[Any, dict]:
            return batch_norm(x, params, stats, spec=spec, training=training)

        return _scratch_session(spec, forward, channels=shape[spec.axis], dtype=dtype, gamma=gamma, beta=beta)
