"""Keras' RMSNorm adapters: keras.layers.RMSNormalization (builtin) and RMSNorm in keras.ops (scratch).

RMSNormalization rescales each sample by the root mean square of the axes it is given (``axis``: here the trailing
`normalized_dims` axes), with no mean subtracted and no β; its γ (the variable ``scale``) always exists, in the shape
of those axes (the spec's "elementwise"). It has no switch to remove γ: a non-affine RMSNorm is the layer with γ left
at its initial ones, its dγ not reported. There are no running statistics: training and eval compute the same thing.
On the PyTorch backend the op is torch.nn.functional.rms_norm.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np

from bnparity.frameworks.base import LayerAdapter
from bnparity.reference.spec import RMSSpec

from ._backend import DESCRIPTOR
from ._session import KerasLayerSession, _mean, scratch_session
from ._x64 import dtype_scope
from .batchnorm import _refuse_float64
from .convert import framework_dtype
from .layernorm import _assign, _refuse_feature_params, _trailing_axes


class BuiltinRMSNorm(LayerAdapter):
    """keras.layers.RMSNormalization: the trailing axes, γ elementwise over them and always present, never a β."""

    framework = DESCRIPTOR.name
    normalization = "rmsnorm"
    impl = "builtin"
    native_axis = -1  # the features are the last axis

    def realize(self, spec: RMSSpec, dtype: np.dtype) -> RMSSpec:
        framework_dtype(dtype)  # raises Unsupported for a dtype Keras has no float type for
        _refuse_float64("RMSNormalization", dtype, "keras/src/ops/nn.py:3027")
        _refuse_feature_params(spec, "RMSNormalization", "keras/src/layers/normalization/rms_normalization.py:53")
        return spec  # ε and the axes are arguments; there is no mean, so no variance algorithm

    def build(self, spec: RMSSpec, *, shape: tuple[int, ...], dtype: np.dtype, gamma: np.ndarray,
              beta: np.ndarray, use_defaults: bool) -> KerasLayerSession:
        self.realize(spec, dtype)
        spec.param_shape(shape)  # raises ValueError when no batch axis is left
        options: dict[str, Any] = dict(axis=_trailing_axes(spec, len(shape)), dtype=framework_dtype(dtype))
        if not use_defaults:
            options.update(epsilon=spec.eps)
        with dtype_scope(dtype):
            layer = keras.layers.RMSNormalization(**options)
            layer.build(shape)
            if spec.affine:  # else γ stays at its initializer's ones: y = x / RMS(x)
                _assign(layer, {"scale": gamma}, dtype)
        return KerasLayerSession(layer, dtype, gamma="scale" if spec.affine else None, beta=None)


def rms_norm(x: Any, params: dict[str, Any], *, spec: RMSSpec) -> Any:
    """y = γ x / √(mean(x²) + ε), the mean over the trailing `spec.normalized_dims` axes of each sample.

    Args:
        x: the input; the normalized axes are the last ones.
        params: {"gamma": γ}, shaped as spec.param_shape(x.shape) (it broadcasts from the trailing axes); empty
            when the spec is not affine.
        spec: the conventions to follow (eps, normalized_dims).
    """
    ops = keras.ops
    axes = tuple(_trailing_axes(spec, x.ndim))
    y = x / ops.sqrt(_mean(ops.square(x), axes) + spec.eps)  # x̂ = x / RMS(x) (_mean: see there)
    if "gamma" in params:
        y = params["gamma"] * y  # γ x̂
    return y


class ScratchRMSNorm(LayerAdapter):
    """RMSNorm in keras.ops (`rms_norm` in a keras.layers.Layer): every spec field honoured."""

    framework = DESCRIPTOR.name
    normalization = "rmsnorm"
    impl = "scratch"
    native_axis = -1

    def realize(self, spec: RMSSpec, dtype: np.dtype) -> RMSSpec:
        framework_dtype(dtype)
        return spec

    def build(self, spec: RMSSpec, *, shape: tuple[int, ...], dtype: np.dtype, gamma: np.ndarray,
              beta: np.ndarray, use_defaults: bool) -> KerasLayerSession:
        spec.param_shape(shape)  # raises ValueError when no batch axis is left
        # A scratch layer has no defaults of its own: "defaults" are the spec it is given.
        framework_dtype(dtype)
        params = {"gamma": gamma} if spec.affine else {}

        def forward(x: Any, params: dict, stats: dict, *, training: bool) -> tuple[Any, dict]:
            return rms_norm(x, params, spec=spec), stats

        return scratch_session(forward, params=params, stats={}, dtype=dtype)
