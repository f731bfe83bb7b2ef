"""Keras' LayerNorm adapters: keras.layers.LayerNormalization (builtin) and LayerNorm in keras.ops (scratch).

LayerNormalization normalizes each sample over the axes it is given (``axis``: here the trailing `normalized_dims`
axes) and creates γ and β in the shape of those axes (the spec's "elementwise"); no argument makes them per feature
of the last axis only (Flax's default, the spec's "feature" over several axes). ``center=False`` removes β,
``scale=False`` γ. There are no running statistics: training and eval compute the same thing. On the PyTorch backend
the op is torch.nn.functional.layer_norm; on TensorFlow and JAX, ops.moments (two passes on both).
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np

from bnparity.frameworks.base import LayerAdapter, Unsupported
from bnparity.reference.spec import LNSpec

from ._backend import DESCRIPTOR
from ._session import KerasLayerSession, _mean_and_variance, scratch_session
from ._x64 import dtype_scope
from .batchnorm import _refuse_float64
from .convert import framework_dtype, to_tensor

_LN = "keras/src/layers/normalization/layer_normalization.py"


def _refuse_feature_params(spec: LNSpec | Any, layer: str, source: str) -> None:
    """Raise Unsupported for γ per last-axis feature over several normalized axes: keras.layers.`layer` creates
    its parameters in the shape of every normalized axis (`source`: the line that says so)."""
    if spec.params == "feature" and spec.normalized_dims > 1:
        raise Unsupported(f"{DESCRIPTOR.name}: keras.layers.{layer} creates its parameters in the shape of all the "
                          f"normalized axes ({source}: `shape = tuple(input_shape[dim] for dim in self.axis)`); no "
                          "argument makes them per feature of the last axis only. Received: params='feature', "
                          f"normalized_dims={spec.normalized_dims}")


def _trailing_axes(spec: LNSpec | Any, ndim: int) -> list[int]:
    """The normalized axes, non-negative: the trailing `normalized_dims` axes of an `ndim`-D input."""
    return list(range(ndim - spec.normalized_dims, ndim))


def _assign(layer: keras.layers.Layer, values: dict[str, np.ndarray], dtype: np.dtype) -> None:
    """Set the layer's variables by name (γ, β in the layer's own shape)."""
    by_name = {v.name: v for v in layer.weights}
    for name, value in values.items():
        variable = by_name[name]
        variable.assign(to_tensor(np.reshape(value, variable.shape), dtype))


class BuiltinLayerNorm(LayerAdapter):
    """keras.layers.LayerNormalization: the trailing axes, γ and β elementwise over them, ε configurable."""

    framework = DESCRIPTOR.name
    normalization = "layernorm"
    impl = "builtin"
    native_axis = -1  # the features are the last axis

    def realize(self, spec: LNSpec, dtype: np.dtype) -> LNSpec:
        framework_dtype(dtype)  # raises Unsupported for a dtype Keras has no float type for
        _refuse_float64("LayerNormalization", dtype, "keras/src/ops/nn.py:3145")
        _refuse_feature_params(spec, "LayerNormalization", f"{_LN}:156")
        # Not configurable: σ² is two-pass on every backend (ops.moments on TF and JAX, F.layer_norm on PyTorch).
        return spec.replace(variance="two-pass")

    def build(self, spec: LNSpec, *, shape: tuple[int, ...], dtype: np.dtype, gamma: np.ndarray,
              beta: np.ndarray, use_defaults: bool) -> KerasLayerSession:
        self.realize(spec, dtype)
        spec.param_shape(shape)  # raises ValueError when no batch axis is left
        has_beta = spec.affine and spec.bias
        options: dict[str, Any] = dict(axis=_trailing_axes(spec, len(shape)), center=has_beta, scale=spec.affine,
                                       dtype=framework_dtype(dtype))
        if not use_defaults:
            options.update(epsilon=spec.eps)
        with dtype_scope(dtype):
            layer = keras.layers.LayerNormalization(**options)
            layer.build(shape)
            _assign(layer, {**({"gamma": gamma} if spec.affine else {}), **({"beta": beta} if has_beta else {})},
                    dtype)
        return KerasLayerSession(layer, dtype, gamma="gamma" if spec.affine else None,
                                 beta="beta" if has_beta else None)


def layer_norm(x: Any, params: dict[str, Any], *, spec: LNSpec) -> Any:
    """y = γ x̂ + β, x̂ standardized over the trailing `spec.normalized_dims` axes of each sample.

    Args:
        x: the input; the normalized axes are the last ones.
        params: {"gamma": γ, "beta": β}, shaped as spec.param_shape(x.shape) (they broadcast from the trailing
            axes); "beta" absent without β, both absent when the spec is not affine.
        spec: the conventions to follow (eps, variance algorithm, normalized_dims).
    """
    axes = tuple(_trailing_axes(spec, x.ndim))
    mu, var = _mean_and_variance(x, axes, spec.variance)  # μ and σ² of each sample
    y = (x - mu) / keras.ops.sqrt(var + spec.eps)  # x̂
    if "gamma" in params:
        y = params["gamma"] * y  # γ x̂
    if "beta" in params:
        y = y + params["beta"]  # + β
    return y


class ScratchLayerNorm(LayerAdapter):
    """LayerNorm in keras.ops (`layer_norm` in a keras.layers.Layer): every spec field honoured."""

    framework = DESCRIPTOR.name
    normalization = "layernorm"
    impl = "scratch"
    native_axis = -1

    def realize(self, spec: LNSpec, dtype: np.dtype) -> LNSpec:
        framework_dtype(dtype)
        return spec

    def build(self, spec: LNSpec, *, shape: tuple[int, ...], dtype: np.dtype, gamma: np.ndarray,
              beta: np.ndarray, use_defaults: bool) -> KerasLayerSession:
        spec.param_shape(shape)  # raises ValueError when no batch axis is left
        # A scratch layer has no defaults of its own: "defaults" are the spec it is given.
        framework_dtype(dtype)
        params = {"gamma": gamma, **({"beta": beta} if spec.bias else {})} if spec.affine else {}

        def forward(x: Any, params: dict, stats: dict, *, training: bool) -> tuple[Any, dict]:
            return layer_norm(x, params, spec=spec), stats

        return scratch_session(forward, params=params, stats={}, dtype=dtype)
