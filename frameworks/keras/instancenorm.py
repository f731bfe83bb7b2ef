"""Keras' InstanceNorm adapters: keras.layers.GroupNormalization(groups=-1) (builtin) and InstanceNorm in keras.ops
(scratch).

Keras has no InstanceNormalization layer: GroupNormalization with ``groups=-1`` (one group per channel) is its
instance norm, as its docstring says (keras/src/layers/normalization/group_normalization.py:26-28; build() sets
groups to the channel count, :113-114). Channels last: each sample's channel is normalized over the spatial axes, γ
and β per channel (on by default), no running statistics: training and eval compute the same thing, the input's own
statistics, with the backend's ops.moments. The base class moves the channels last and back.

Scratch (teaching material) honours every spec field, running statistics included: like BatchNorm's, its function
is pure and returns the updated statistics.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np

from bnparity.frameworks.base import LayerAdapter, Unsupported
from bnparity.reference.spec import INSpec

from ._backend import DESCRIPTOR
from ._session import KerasLayerSession, _mean, _mean_and_variance
from .batchnorm import _moments_algorithm, _refuse_float64, _scratch_session
from .convert import framework_dtype
from .groupnorm import _GN, _layer


class BuiltinInstanceNorm(LayerAdapter):
    """keras.layers.GroupNormalization(groups=-1): channels last, γ and β per channel, no running statistics."""

    framework = DESCRIPTOR.name
    normalization = "instancenorm"
    impl = "builtin"
    native_axis = DESCRIPTOR.native_axis

    def realize(self, spec: INSpec, dtype: np.dtype) -> INSpec:
        framework_dtype(dtype)  # raises Unsupported for a dtype Keras has no float type for
        _refuse_float64("GroupNormalization", dtype, f"{_GN}:181")
        if spec.track_running_stats:
            raise Unsupported(f"{DESCRIPTOR.name}: keras.layers.GroupNormalization keeps no running statistics (its "
                              f"only variables are gamma and beta, {_GN}:133-151; call() normalizes with "
                              f"ops.moments of its input, {_GN}:192). Received: track_running_stats=True")
        # Not configurable: σ² is the backend's ops.moments.
        return spec.replace(variance=_moments_algorithm())

    def build(self, spec: INSpec, *, shape: tuple[int, ...], dtype: np.dtype, gamma: np.ndarray,
              beta: np.ndarray, use_defaults: bool) -> KerasLayerSession:
        self.realize(spec, dtype)  # refuses running statistics
        if len(shape) < 3:
            raise Unsupported(f"{DESCRIPTOR.name}: keras.layers.GroupNormalization(groups=-1) of a 2-D input reduces "
                              f"each channel over itself alone ({_GN}:186-189: the reduction axes are all but the "
                              f"batch and group axes) and returns β for every input. Received: x.shape={shape}")
        # affine is structure: set in both modes (Keras' default is center=scale=True, PyTorch's affine=False).
        return _layer(groups=-1, affine=spec.affine, eps=None if use_defaults else spec.eps, shape=shape,
                      dtype=dtype, gamma=gamma, beta=beta)


def instance_norm(x: Any, params: dict[str, Any], stats: dict[str, Any], *, spec: INSpec,
                  training: bool) -> tuple[Any, dict[str, Any]]:
    """y = γ x̂ + β, x̂ standardized per sample and channel over the spatial axes; and the running statistics
    after this call.

    Args:
        x: the input, channels last: (N, *spatial, C), at least one spatial axis.
        params: {"gamma": γ, "beta": β}, shape (C,) each; empty when the spec is not affine.
        stats: {"moving_mean": ..., "moving_variance": ...}, shape (C,); empty when the spec tracks none.
        spec: the conventions to follow (eps, variance algorithm, momentum, running-variance estimator).
        training: normalize with each sample's own statistics and update `stats` (True), or normalize with
            `stats` (False; with the sample's own statistics when `stats` is empty).
    """
    ops = keras.ops
    axes = tuple(range(1, x.ndim - 1))  # the spatial axes
    channels = x.shape[-1]
    new_stats = stats
    if training or not stats:
        mu, var = _mean_and_variance(x, axes, spec.variance)  # μ_nc and σ²_nc, shape (N, 1, ..., C)
        if training and stats:
            m = int(np.prod(x.shape[1:-1]))  # values per sample's channel: the spatial size
            stored_var = var * (m / (m - 1) if m > 1 else float("nan")) if spec.running_var == "unbiased" else var
            w = spec.weight_at(0)  # weight of the new statistic: the batch's average of the per-sample ones
            batch_mu = ops.reshape(_mean(ops.reshape(mu, (-1, channels)), (0,)), (-1,))  # 1/N Σ_n μ_nc
            batch_var = ops.reshape(_mean(ops.reshape(stored_var, (-1, channels)), (0,)), (-1,))  # 1/N Σ_n σ²_nc
            new_stats = {"moving_mean": (1 - w) * stats["moving_mean"] + w * batch_mu,
                         "moving_variance": (1 - w) * stats["moving_variance"] + w * batch_var}
    else:
        mu, var = stats["moving_mean"], stats["moving_variance"]  # (C,): broadcast along the last axis
    y = (x - mu) / ops.sqrt(var + spec.eps)  # x̂
    if "gamma" in params:
        y = params["gamma"] * y  # γ x̂ (γ per channel, the last axis)
    if "beta" in params:
        y = y + params["beta"]  # + β
    return y, new_stats


class ScratchInstanceNorm(LayerAdapter):
    """InstanceNorm in keras.ops (`instance_norm` in a keras.layers.Layer), channels last: every spec field honoured,
    running statistics included."""

    framework = DESCRIPTOR.name
    normalization = "instancenorm"
    impl = "scratch"
    native_axis = DESCRIPTOR.native_axis

    def realize(self, spec: INSpec, dtype: np.dtype) -> INSpec:
        framework_dtype(dtype)
        if spec.track_running_stats and spec.momentum is None:
            raise Unsupported(f"{DESCRIPTOR.name}: the scratch InstanceNorm keeps no count of the batches it has "
                              "seen (the cumulative average needs one). Received: momentum=None")
        return spec

    def build(self, spec: INSpec, *, shape: tuple[int, ...], dtype: np.dtype, gamma: np.ndarray,
              beta: np.ndarray, use_defaults: bool) -> KerasLayerSession:
        if len(shape) < 3:
            raise ValueError(f"InstanceNorm needs a spatial axis: expected a 3-D to 5-D input. Received: {shape}")
        # A scratch layer has no defaults of its own: "defaults" are the spec it is given.
        self.realize(spec, dtype)

        def forward(x: Any, params: dict, stats: dict, *, training: bool) -> tuple[Any, dict]:
            return instance_norm(x, params, stats, spec=spec, training=training)

        return _scratch_session(spec, forward, channels=shape[-1], dtype=dtype, gamma=gamma, beta=beta)
