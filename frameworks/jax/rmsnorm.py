"""Flax's RMSNorm adapters: flax.linen.RMSNorm or flax.nnx.RMSNorm (builtin), raw jax.numpy ops (scratch).

RMSNorm rescales each sample by the root mean square of its trailing `normalized_dims` axes (Flax's
``reduction_axes``), with no mean subtracted and no β; γ (scale) has one value per normalized element
(``feature_axes`` = the reduction axes, the spec's "elementwise") or per feature of the last axis
(``feature_axes=-1``, "feature", Flax's default). There are no running statistics: training and eval compute
the same thing. dx and dγ come from `jax.vjp`.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from bnparity.frameworks.base import LayerAdapter
from bnparity.reference.spec import RMSSpec

from ._session import Apply, JaxLayer, StepCache, scratch_layer, stateless_layer
from .convert import framework_dtype
from .descriptor import DESCRIPTOR

APIS = ("linen", "nnx")


def _axes(spec: RMSSpec) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(reduction_axes, feature_axes) of a Flax RMSNorm computing `spec`."""
    reduction = tuple(range(-spec.normalized_dims, 0))  # the trailing normalized_dims axes
    return reduction, reduction if spec.params == "elementwise" else (-1,)


class BuiltinRMSNorm(LayerAdapter):
    """flax.linen.RMSNorm (or flax.nnx.RMSNorm): trailing axes, ε and γ's shape configurable, never a β.

    Args:
        api: "linen" (flax.linen.RMSNorm, the default) or "nnx" (flax.nnx.RMSNorm, its own copy of the
            statistics and normalization code in flax/nnx/nn/normalization.py). nnx's scale is always 1-D,
            (num_features,): γ over two axes is given flattened (nnx reshapes it to the feature axes).

    Attributes:
        steps: the jitted steps per configuration; ``steps.traces`` counts compilations.
    """

    framework = DESCRIPTOR.name
    normalization = "rmsnorm"
    impl = "builtin"
    native_axis = DESCRIPTOR.native_axis  # the features are the last axis
    variants = {"linen": {}, "nnx": {"api": "nnx"}}

    def __init__(self, *, api: str = "linen") -> None:
        if api not in APIS:
            raise ValueError(f"api must be one of {', '.join(APIS)}. Received: {api!r}")
        self.api = api
        self.steps = StepCache()

    def realize(self, spec: RMSSpec, dtype: np.dtype) -> RMSSpec:
        framework_dtype(dtype)  # raises Unsupported for a dtype JAX has no float type for
        # ε and the axes are arguments; use_fast_variance changes nothing (no mean: σ² is mean(x²) either way).
        return spec

    def _options(self, spec: RMSSpec, dtype: np.dtype, use_defaults: bool) -> dict[str, Any]:
        reduction, features = _axes(spec)
        options: dict[str, Any] = dict(reduction_axes=reduction, feature_axes=features, use_scale=spec.affine,
                                       dtype=jnp.dtype(dtype), param_dtype=jnp.dtype(dtype))
        if not use_defaults:  # else Flax's ε = 1e-6
            options.update(epsilon=spec.eps)
        return options

    def build(self, spec: RMSSpec, *, shape: tuple[int, ...], dtype: np.dtype, gamma: np.ndarray,
              beta: np.ndarray, use_defaults: bool) -> JaxLayer:
        param_shape = spec.param_shape(shape)
        dtype = framework_dtype(dtype)
        options = self._options(spec, dtype, use_defaults)
        return stateless_layer(self.api, (nn.RMSNorm, nnx.RMSNorm), param_shape=param_shape, options=options,
                               values={"scale": gamma}, dtype=dtype, cache=self.steps)

def rms_norm(x: jax.Array, params: dict[str, jax.Array], *, spec: RMSSpec) -> jax.Array:
    """y = γ x / √(mean(x²) + ε), the mean over the trailing `spec.normalized_dims` axes of each sample.

    Args:
        x: the input; the normalized axes are the last ones.
        params: {"scale": γ}, shaped as spec.param_shape(x.shape) (it broadcasts from the trailing axes); empty
            when the spec is not affine.
        spec: the conventions to follow (eps, normalized_dims).
    """
    axes = tuple(range(x.ndim - spec.normalized_dims, x.ndim))
    y = x / jnp.sqrt(jnp.mean(jnp.square(x), axis=axes, keepdims=True) + spec.eps)  # x̂ = x / RMS(x)
    if "scale" in params:
        y = params["scale"] * y  # γ x̂
    return y


def _apply(spec: RMSSpec) -> Apply:
    def apply(params: dict, stats: dict, x: jax.Array, *, train: bool) -> tuple[jax.Array, dict]:
        return rms_norm(x, params, spec=spec), stats

    return apply


class ScratchRMSNorm(LayerAdapter):
    """RMSNorm in raw jax.numpy ops: every spec field honoured (jax.vjp supplies the backward pass).

    Attributes:
        steps: the jitted steps per spec; ``steps.traces`` counts compilations.
    """

    framework = DESCRIPTOR.name
    normalization = "rmsnorm"
    impl = "scratch"
    native_axis = DESCRIPTOR.native_axis

    def __init__(self) -> None:
        self.steps = StepCache()

    def realize(self, spec: RMSSpec, dtype: np.dtype) -> RMSSpec:
        framework_dtype(dtype)
        return spec

    def build(self, spec: RMSSpec, *, shape: tuple[int, ...], dtype: np.dtype, gamma: np.ndarray,
              beta: np.ndarray, use_defaults: bool) -> JaxLayer:
        spec.param_shape(shape)  # raises ValueError when no batch axis is left
        # A scratch layer has no defaults of its own: "defaults" are the spec it is given.
        dtype = framework_dtype(dtype)
        values = {"scale": gamma} if spec.affine else {}
        return scratch_layer(spec, values, dtype=dtype, cache=self.steps, apply=lambda: _apply(spec))
