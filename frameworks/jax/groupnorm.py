"""Flax's GroupNorm adapters: flax.linen.GroupNorm or flax.nnx.GroupNorm (builtin), raw jax.numpy ops (scratch).

Flax is channels-last: the C channels are the last axis, split into `num_groups` groups of C/G consecutive
channels (``x.reshape(x.shape[:-1] + (G, C // G))``); each sample's group is normalized over its channels and
every spatial position. γ (scale) and β (bias) are per channel. There are no running statistics: training and
eval compute the same thing. dx, dγ and dβ come from `jax.vjp`; the base class moves the channels last and back.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from bnparity.frameworks.base import LayerAdapter, Unsupported
from bnparity.reference.spec import GNSpec

from ._session import Apply, JaxLayer, StepCache, scratch_layer, stateless_layer
from .convert import _mean_and_variance, framework_dtype
from .descriptor import DESCRIPTOR

APIS = ("linen", "nnx")


# Where each API fixes γ and β to one per channel, shape (C,).
_PER_CHANNEL = {
    "linen": "flax/linen/normalization.py:810: _normalize(..., (feature_axis,), ...), feature_axis = -1",
    "nnx": "flax/nnx/nn/normalization.py:761: feature_shape = (num_features,)",
}


def _refuse_group_params(spec: GNSpec, api: str) -> None:
    if spec.params == "group":
        raise Unsupported(f"jax: flax {api}.GroupNorm has one scale and bias per channel, shape (C,) "
                          f"({_PER_CHANNEL[api]}); no argument makes them per group. Received: params='group'")


class BuiltinGroupNorm(LayerAdapter):
    """flax.linen.GroupNorm (or flax.nnx.GroupNorm): channels last, consecutive groups, γ and β per channel.

    Args:
        api: "linen" (flax.linen.GroupNorm, the default) or "nnx" (flax.nnx.GroupNorm, its own copy of the
            statistics and normalization code in flax/nnx/nn/normalization.py).

    Attributes:
        steps: the jitted steps per configuration; ``steps.traces`` counts compilations.
    """

    framework = DESCRIPTOR.name
    normalization = "groupnorm"
    impl = "builtin"
    native_axis = DESCRIPTOR.native_axis
    variants = {"linen": {}, "nnx": {"api": "nnx"}}

    def __init__(self, *, api: str = "linen") -> None:
        if api not in APIS:
            raise ValueError(f"api must be one of {', '.join(APIS)}. Received: {api!r}")
        self.api = api
        self.steps = StepCache()

    def realize(self, spec: GNSpec, dtype: np.dtype) -> GNSpec:
        framework_dtype(dtype)  # raises Unsupported for a dtype JAX has no float type for
        _refuse_group_params(spec, self.api)
        return spec  # ε, use_fast_variance, num_groups and both parameters are all arguments

    def _options(self, spec: GNSpec, dtype: np.dtype, use_defaults: bool) -> dict[str, Any]:
        # num_groups is structure: set in both modes (Flax's default is 32).
        options: dict[str, Any] = dict(num_groups=spec.groups, use_scale=spec.affine, use_bias=spec.affine,
                                       dtype=jnp.dtype(dtype), param_dtype=jnp.dtype(dtype))
        if not use_defaults:  # else Flax's ε = 1e-6 and E[x²] − E[x]²
            options.update(epsilon=spec.eps, use_fast_variance=spec.variance == "fast")
        return options

    def build(self, spec: GNSpec, *, shape: tuple[int, ...], dtype: np.dtype, gamma: np.ndarray,
              beta: np.ndarray, use_defaults: bool) -> JaxLayer:
        _refuse_group_params(spec, self.api)
        channels = shape[spec.axis]
        spec.param_shape(shape)  # raises ValueError when the groups do not divide the channels
        dtype = framework_dtype(dtype)
        options = self._options(spec, dtype, use_defaults)
        return stateless_layer(self.api, (nn.GroupNorm, nnx.GroupNorm), param_shape=(channels,), options=options,
                               values={"scale": gamma, "bias": beta}, dtype=dtype, cache=self.steps)

def group_norm(x: jax.Array, params: dict[str, jax.Array], *, spec: GNSpec) -> jax.Array:
    """y = γ x̂ + β, x̂ standardized per sample and group of C/G consecutive channels (G = `spec.groups`).

    Args:
        x: the input, channels last: (N, *spatial, C).
        params: {"scale": γ, "bias": β}, shape (C,) each ("channel") or (G,) ("group"); empty when the spec
            is not affine.
        spec: the conventions to follow (groups, params, eps, variance algorithm).
    """
    groups = spec.groups
    xg = x.reshape(x.shape[:-1] + (groups, x.shape[-1] // groups))  # (N, *spatial, G, C/G): channel c in c // (C/G)
    axes = (*range(1, x.ndim - 1), xg.ndim - 1)  # each group's spatial positions and channels
    mu, var = _mean_and_variance(xg, axes, spec.variance)  # μ and σ² of each sample's group
    y = (xg - mu) / jnp.sqrt(var + spec.eps)  # x̂
    param_shape = (groups, -1 if spec.params == "channel" else 1)  # γ, β against the (G, C/G) axes
    if "scale" in params:
        y = params["scale"].reshape(param_shape) * y  # γ x̂
    if "bias" in params:
        y = y + params["bias"].reshape(param_shape)  # + β
    return y.reshape(x.shape)  # back to (N, *spatial, C)


def _apply(spec: GNSpec) -> Apply:
    def apply(params: dict, stats: dict, x: jax.Array, *, train: bool) -> tuple[jax.Array, dict]:
        return group_norm(x, params, spec=spec), stats

    return apply


class ScratchGroupNorm(LayerAdapter):
    """GroupNorm in raw jax.numpy ops, channels last: every spec field honoured (γ and β per channel or per group).

    Attributes:
        steps: the jitted steps per spec; ``steps.traces`` counts compilations.
    """

    framework = DESCRIPTOR.name
    normalization = "groupnorm"
    impl = "scratch"
    native_axis = DESCRIPTOR.native_axis

    def __init__(self) -> None:
        self.steps = StepCache()

    def realize(self, spec: GNSpec, dtype: np.dtype) -> GNSpec:
        framework_dtype(dtype)
        return spec

    def build(self, spec: GNSpec, *, shape: tuple[int, ...], dtype: np.dtype, gamma: np.ndarray,
              beta: np.ndarray, use_defaults: bool) -> JaxLayer:
        spec.param_shape(shape)  # raises ValueError when the groups do not divide the channels
        # A scratch layer has no defaults of its own: "defaults" are the spec it is given.
        dtype = framework_dtype(dtype)
        values = {"scale": gamma, "bias": beta} if spec.affine else {}
        return scratch_layer(spec, values, dtype=dtype, cache=self.steps, apply=lambda: _apply(spec))
