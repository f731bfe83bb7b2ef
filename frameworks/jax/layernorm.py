"""Flax's LayerNorm adapters: flax.linen.LayerNorm or flax.nnx.LayerNorm (builtin), raw jax.numpy ops (scratch).

LayerNorm normalizes each sample over its trailing `normalized_dims` axes (Flax's ``reduction_axes``); γ and β
have one value per normalized element (``feature_axes`` = the reduction axes, the spec's "elementwise") or per
feature of the last axis (``feature_axes=-1``, "feature", Flax's default). There are no running statistics:
training and eval compute the same thing. dx, dγ (d scale) and dβ (d bias) come from `jax.vjp`.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from bnparity.frameworks.base import LayerAdapter
from bnparity.reference.spec import LNSpec

from ._session import Apply, JaxLayer, StepCache, scratch_layer, stateless_layer
from .convert import _mean_and_variance, framework_dtype
from .descriptor import DESCRIPTOR

APIS = ("linen", "nnx")


def _axes(spec: LNSpec) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(reduction_axes, feature_axes) of a Flax LayerNorm or RMSNorm computing `spec`."""
    reduction = tuple(range(-spec.normalized_dims, 0))  # the trailing normalized_dims axes
    return reduction, reduction if spec.params == "elementwise" else (-1,)


class BuiltinLayerNorm(LayerAdapter):
    """flax.linen.LayerNorm (or flax.nnx.LayerNorm): trailing axes, every convention configurable.

    Args:
        api: "linen" (flax.linen.LayerNorm, the default) or "nnx" (flax.nnx.LayerNorm, its own copy of the
            statistics and normalization code in flax/nnx/nn/normalization.py). nnx's scale and bias are always
            1-D, (num_features,): γ over two axes is given flattened (nnx reshapes it to the feature axes).

    Attributes:
        steps: the jitted steps per configuration; ``steps.traces`` counts compilations.
    """

    framework = DESCRIPTOR.name
    normalization = "layernorm"
    impl = "builtin"
    native_axis = DESCRIPTOR.native_axis  # the features are the last axis
    variants = {"linen": {}, "nnx": {"api": "nnx"}}

    def __init__(self, *, api: str = "linen") -> None:
        if api not in APIS:
            raise ValueError(f"api must be one of {', '.join(APIS)}. Received: {api!r}")
        self.api = api
        self.steps = StepCache()

    def realize(self, spec: LNSpec, dtype: np.dtype) -> LNSpec:
        framework_dtype(dtype)  # raises Unsupported for a dtype JAX has no float type for
        return spec  # ε, use_fast_variance, the axes and both parameters are all arguments

    def _options(self, spec: LNSpec, dtype: np.dtype, use_defaults: bool) -> dict[str, Any]:
        reduction, features = _axes(spec)
        options: dict[str, Any] = dict(reduction_axes=reduction, feature_axes=features, use_scale=spec.affine,
                                       use_bias=spec.affine and spec.bias, dtype=jnp.dtype(dtype),
                                       param_dtype=jnp.dtype(dtype))
        if not use_defaults:  # else Flax's ε = 1e-6 and E[x²] − E[x]²
            options.update(epsilon=spec.eps, use_fast_variance=spec.variance == "fast")
        return options

    def build(self, spec: LNSpec, *, shape: tuple[int, ...], dtype: np.dtype, gamma: np.ndarray,
              beta: np.ndarray, use_defaults: bool) -> JaxLayer:
        param_shape = spec.param_shape(shape)
        dtype = framework_dtype(dtype)
        options = self._options(spec, dtype, use_defaults)
        return stateless_layer(self.api, (nn.LayerNorm, nnx.LayerNorm), param_shape=param_shape, options=options,
                               values={"scale": gamma, "bias": beta}, dtype=dtype, cache=self.steps)

def layer_norm(x: jax.Array, params: dict[str, jax.Array], *, spec: LNSpec) -> jax.Array:
    """y = γ x̂ + β, x̂ standardized over the trailing `spec.normalized_dims` axes of each sample.

    Args:
        x: the input; the normalized axes are the last ones.
        params: {"scale": γ, "bias": β}, shaped as spec.param_shape(x.shape) (they broadcast from the trailing
            axes); "bias" absent without β, both absent when the spec is not affine.
        spec: the conventions to follow (eps, variance algorithm, normalized_dims).
    """
    axes = tuple(range(x.ndim - spec.normalized_dims, x.ndim))
    mu, var = _mean_and_variance(x, axes, spec.variance)  # μ and σ² of each sample
    y = (x - mu) / jnp.sqrt(var + spec.eps)  # x̂
    if "scale" in params:
        y = params["scale"] * y  # γ x̂
    if "bias" in params:
        y = y + params["bias"]  # + β
    return y


def _apply(spec: LNSpec) -> Apply:
    def apply(params: dict, stats: dict, x: jax.Array, *, train: bool) -> tuple[jax.Array, dict]:
        return layer_norm(x, params, spec=spec), stats

    return apply


class ScratchLayerNorm(LayerAdapter):
    """LayerNorm in raw jax.numpy ops: every spec field honoured (jax.vjp supplies the backward pass).

    Attributes:
        steps: the jitted steps per spec; ``steps.traces`` counts compilations.
    """

    framework = DESCRIPTOR.name
    normalization = "layernorm"
    impl = "scratch"
    native_axis = DESCRIPTOR.native_axis

    def __init__(self) -> None:
        self.steps = StepCache()

    def realize(self, spec: LNSpec, dtype: np.dtype) -> LNSpec:
        framework_dtype(dtype)
        return spec

    def build(self, spec: LNSpec, *, shape: tuple[int, ...], dtype: np.dtype, gamma: np.ndarray,
              beta: np.ndarray, use_defaults: bool) -> JaxLayer:
        spec.param_shape(shape)  # raises ValueError when no batch axis is left
        # A scratch layer has no defaults of its own: "defaults" are the spec it is given.
        dtype = framework_dtype(dtype)
        values = ({"scale": gamma, **({"bias": beta} if spec.bias else {})} if spec.affine else {})
        return scratch_layer(spec, values, dtype=dtype, cache=self.steps, apply=lambda: _apply(spec))
