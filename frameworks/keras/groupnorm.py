"""Keras' GroupNorm adapters: keras.layers.GroupNormalization (builtin) and GroupNorm in keras.ops (scratch).

Keras is channels-last here: the C channels are the last axis, split into `groups` groups of C/G consecutive channels
(the input is reshaped to (..., G, C/G)); each sample's group is normalized over its channels and every spatial
position, with the backend's ops.moments (two passes on TensorFlow and JAX, E[x²] − E[x]² on PyTorch). γ and β are
per channel, shape (C,). There are no running statistics: training and eval compute the same thing. The base class
moves the channels last and back.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np

from bnparity.frameworks.base import LayerAdapter, Unsupported
from bnparity.reference.spec import GNSpec

from ._backend import DESCRIPTOR
from ._session import KerasLayerSession, _mean_and_variance, scratch_session
from ._x64 import dtype_scope
from .batchnorm import _moments_algorithm, _refuse_float64
from .convert import framework_dtype
from .layernorm import _assign

_GN = "keras/src/layers/normalization/group_normalization.py"


def _refuse_group_params(spec: GNSpec) -> None:
    if spec.params == "group":
        raise Unsupported(f"{DESCRIPTOR.name}: keras.layers.GroupNormalization has one gamma and beta per channel, "
                          f"shape (C,) ({_GN}:134: `shape=(dim,),`); no argument makes them per group. "
                          "Received: params='group'")


def _layer(*, groups: int, affine: bool, eps: float | None, shape: tuple[int, ...], dtype: np.dtype,
           gamma: np.ndarray, beta: np.ndarray) -> KerasLayerSession:
    """A GroupNormalization(groups, axis=-1) built for `shape` with γ, β set (ε: Keras' default when None)."""
    options: dict[str, Any] = dict(groups=groups, axis=-1, center=affine, scale=affine, dtype=framework_dtype(dtype))
    if eps is not None:
        options.update(epsilon=eps)
    with dtype_scope(dtype):
        layer = keras.layers.GroupNormalization(**options)
        layer.build(shape)
        if affine:
            _assign(layer, {"gamma": gamma, "beta": beta}, dtype)
    return KerasLayerSession(layer, dtype, gamma="gamma" if affine else None, beta="beta" if affine else None)


class BuiltinGroupNorm(LayerAdapter):
    """keras.layers.GroupNormalization: channels last, consecutive groups, γ and β per channel."""

    framework = DESCRIPTOR.name
    normalization = "groupnorm"
    impl = "builtin"
    native_axis = DESCRIPTOR.native_axis

    def realize(self, spec: GNSpec, dtype: np.dtype) -> GNSpec:
        framework_dtype(dtype)  # raises Unsupported for a dtype Keras has no float type for
        _refuse_float64("GroupNormalization", dtype, f"{_GN}:181")
        _refuse_group_params(spec)
        # Not configurable: σ² is the backend's ops.moments.
        return spec.replace(variance=_moments_algorithm())

    def build(self, spec: GNSpec, *, shape: tuple[int, ...], dtype: np.dtype, gamma: np.ndarray,
              beta: np.ndarray, use_defaults: bool) -> KerasLayerSession:
        self.realize(spec, dtype)
        spec.param_shape(shape)  # raises ValueError when the groups do not divide the channels
        # groups is structure: set in both modes (Keras' default is 32).
        return _layer(groups=spec.groups, affine=spec.affine, eps=None if use_defaults else spec.eps, shape=shape,
                      dtype=dtype, gamma=gamma, beta=beta)


def group_norm(x: Any, params: dict[str, Any], *, spec: GNSpec) -> Any:
    """y = γ x̂ + β, x̂ standardized per sample and group of C/G consecutive channels (G = `spec.groups`).

    Args:
        x: the input, channels last: (N, *spatial, C).
        params: {"gamma": γ, "beta": β}, shape (C,) each ("channel") or (G,) ("group"); empty when the spec
            is not affine.
        spec: the conventions to follow (groups, params, eps, variance algorithm).
    """
    ops = keras.ops
    groups = spec.groups
    shape = tuple(x.shape)
    xg = ops.reshape(x, shape[:-1] + (groups, shape[-1] // groups))  # (N, *spatial, G, C/G): channel c in c // (C/G)
    axes = (*range(1, len(shape) - 1), len(shape))  # each group's spatial positions and channels
    mu, var = _mean_and_variance(xg, axes, spec.variance)  # μ and σ² of each sample's group
    y = (xg - mu) / ops.sqrt(var + spec.eps)  # x̂
    param_shape = (groups, -1 if spec.params == "channel" else 1)  # γ, β against the (G, C/G) axes
    if "gamma" in params:
        y = ops.reshape(params["gamma"], param_shape) * y  # γ x̂
    if "beta" in params:
        y = y + ops.reshape(params["beta"], param_shape)  # + β
    return ops.reshape(y, shape)  # back to (N, *spatial, C)


class ScratchGroupNorm(LayerAdapter):
    """GroupNorm in keras.ops (`group_norm` in a keras.layers.Layer), channels last: every spec field honoured."""

    framework = DESCRIPTOR.name
    normalization = "groupnorm"
    impl = "scratch"
    native_axis = DESCRIPTOR.native_axis

    def realize(self, spec: GNSpec, dtype: np.dtype) -> GNSpec:
        framework_dtype(dtype)
        return spec

    def build(self, spec: GNSpec, *, shape: tuple[int, ...], dtype: np.dtype, gamma: np.ndarray,
              beta: np.ndarray, use_defaults: bool) -> KerasLayerSession:
        spec.param_shape(shape)  # raises ValueError when the groups do not divide the channels
        # A scratch layer has no defaults of its own: "defaults" are the spec it is given.
        framework_dtype(dtype)
        params = {"gamma": gamma, "beta": beta} if spec.affine else {}

        def forward(x: Any, params: dict, stats: dict, *, training: bool) -> tuple[Any, dict]:
            return group_norm(x, params, spec=spec), stats

        return scratch_session(forward, params=params, stats={}, dtype=dtype)
