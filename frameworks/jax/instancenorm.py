"""Flax's InstanceNorm adapters: flax.linen.InstanceNorm or flax.nnx.InstanceNorm (builtin), raw jax.numpy ops
(scratch).

Flax is channels-last: each sample's channel is normalized over every axis but the leading (batch) axis and the
feature axis (``feature_axes=-1``); γ (scale) and β (bias) are per channel. Flax keeps no running statistics:
training and eval compute the same thing, the input's own statistics. dx, dγ and dβ come from `jax.vjp`; the base
class moves the channels last and back.

Scratch (teaching material) honours every spec field, running statistics included: like Flax's BatchNorm, it is a
pure function that returns the updated statistics.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from bnparity.frameworks.base import LayerAdapter, Unsupported
from bnparity.reference.spec import INSpec

from ._session import Apply, JaxLayer, StepCache, stateless_layer
from ._x64 import dtype_scope
from .convert import _mean_and_variance, framework_dtype, to_tensor
from .descriptor import DESCRIPTOR

APIS = ("linen", "nnx")
# Where each API computes the statistics: always the input's own; the layer holds parameters only.
_NO_RUNNING_STATS = {
    "linen": "flax/linen/normalization.py:918-927: InstanceNorm.__call__ normalizes with _compute_stats(x, ...) "
             "and creates no batch_stats collection",
    "nnx": "flax/nnx/nn/normalization.py:970-978: InstanceNorm.__call__ normalizes with _compute_stats(x, ...) "
           "and the layer has no BatchStat variable",
}


# Where each API takes the reduction axes: every axis but the batch (0) and the feature axes.
_REDUCTION_AXES = {"linen": "flax/linen/normalization.py:916", "nnx": "flax/nnx/nn/normalization.py:968"}


def _require_spatial_axis(shape: tuple[int, ...], api: str) -> None:
    if len(shape) < 3:
        raise Unsupported(f"jax: flax {api}.InstanceNorm of a 2-D input reduces over no axis (its reduction axes "
                          f"are all but the batch and feature axes, {_REDUCTION_AXES[api]}) and returns β for "
                          f"every input. Received: x.shape={shape}")


class BuiltinInstanceNorm(LayerAdapter):
    """flax.linen.InstanceNorm (or flax.nnx.InstanceNorm): channels last, γ and β per channel, no running stats.

    Args:
        api: "linen" (flax.linen.InstanceNorm, the default) or "nnx" (flax.nnx.InstanceNorm, its own copy of the
            statistics and normalization code in flax/nnx/nn/normalization.py).

    Attributes:
        steps: the jitted steps per configuration; ``steps.traces`` counts compilations.
    """

    framework = DESCRIPTOR.name
    normalization = "instancenorm"
    impl = "builtin"
    native_axis = DESCRIPTOR.native_axis
    variants = {"linen": {}, "nnx": {"api": "nnx"}}

    def __init__(self, *, api: str = "linen") -> None:
        if api not in APIS:
            raise ValueError(f"api must be one of {', '.join(APIS)}. Received: {api!r}")
        self.api = api
        self.steps = StepCache()

    def realize(self, spec: INSpec, dtype: np.dtype) -> INSpec:
        framework_dtype(dtype)  # raises Unsupported for a dtype JAX has no float type for
        if spec.track_running_stats:
            raise Unsupported(f"jax: flax {self.api}.InstanceNorm keeps no running statistics "
                              f"({_NO_RUNNING_STATS[self.api]}). Received: track_running_stats=True")
        return spec  # ε, use_fast_variance and both parameters are arguments

    def _options(self, spec: INSpec, dtype: np.dtype, use_defaults: bool) -> dict[str, Any]:
        # affine is structure: set in both modes (Flax's default is use_scale=use_bias=True, PyTorch's affine=False).
        options: dict[str, Any] = dict(feature_axes=-1, use_scale=spec.affine, use_bias=spec.affine,
                                       dtype=jnp.dtype(dtype), param_dtype=jnp.dtype(dtype))
        if not use_defaults:  # else Flax's ε = 1e-6 and E[x²] − E[x]²
            options.update(epsilon=spec.eps, use_fast_variance=spec.variance == "fast")
        return options

    def build(self, spec: INSpec, *, shape: tuple[int, ...], dtype: np.dtype, gamma: np.ndarray,
              beta: np.ndarray, use_defaults: bool) -> JaxLayer:
        self.realize(spec, dtype)  # refuses running statistics
        _require_spatial_axis(shape, self.api)
        channels = shape[spec.axis]
        dtype = framework_dtype(dtype)
        options = self._options(spec, dtype, use_defaults)
        return stateless_layer(self.api, (nn.InstanceNorm, nnx.InstanceNorm), param_shape=(channels,),
                               options=options, values={"scale": gamma, "bias": beta}, dtype=dtype, cache=self.steps)

def instance_norm(x: jax.Array, params: dict[str, jax.Array], stats: dict[str, jax.Array], *, spec: INSpec,
                  training: bool) -> tuple[jax.Array, dict[str, jax.Array]]:
    """y = γ x̂ + β, x̂ standardized per sample and channel over the spatial axes; and the running statistics
    after this call.

    Args:
        x: the input, channels last: (N, *spatial, C), at least one spatial axis.
        params: {"scale": γ, "bias": β}, shape (C,) each; empty when the spec is not affine.
        stats: {"mean": running mean, "var": running variance}, shape (C,); empty when the spec tracks none.
        spec: the conventions to follow (eps, variance algorithm, momentum, running-variance estimator).
        training: normalize with each sample's own statistics and update `stats` (True), or normalize with
            `stats` (False; with the sample's own statistics when `stats` is empty).
    """
    axes = tuple(range(1, x.ndim - 1))  # the spatial axes
    new_stats = stats
    if training or not stats:
        mu, var = _mean_and_variance(x, axes, spec.variance)  # μ_nc and σ²_nc, shape (N, 1, ..., C)
        if training and stats:
            m = x.size // (x.shape[0] * x.shape[-1])  # values per sample's channel: the spatial size
            stored_var = var * (m / (m - 1) if m > 1 else float("nan")) if spec.running_var == "unbiased" else var
            w = spec.new_weight  # weight of the new statistic: the batch's average of the per-sample ones
            batch_mu = mu.reshape(-1, x.shape[-1]).mean(axis=0)  # 1/N Σ_n μ_nc
            batch_var = stored_var.reshape(-1, x.shape[-1]).mean(axis=0)  # 1/N Σ_n σ²_nc (in the estimator)
            new_stats = {"mean": (1 - w) * stats["mean"] + w * batch_mu,
                         "var": (1 - w) * stats["var"] + w * batch_var}
    else:
        mu, var = stats["mean"], stats["var"]  # (C,): broadcast along the last axis
    y = (x - mu) / jnp.sqrt(var + spec.eps)  # x̂
    if "scale" in params:
        y = params["scale"] * y  # γ x̂ (γ per channel, the last axis)
    if "bias" in params:
        y = y + params["bias"]  # + β
    return y, new_stats


def _apply(spec: INSpec) -> Apply:
    def apply(params: dict, stats: dict, x: jax.Array, *, train: bool) -> tuple[jax.Array, dict]:
        return instance_norm(x, params, stats, spec=spec, training=train)

    return apply


class ScratchInstanceNorm(LayerAdapter):
    """InstanceNorm in raw jax.numpy ops, channels last: every spec field honoured, running statistics included.

    Attributes:
        steps: the jitted steps per spec; ``steps.traces`` counts compilations.
    """

    framework = DESCRIPTOR.name
    normalization = "instancenorm"
    impl = "scratch"
    native_axis = DESCRIPTOR.native_axis

    def __init__(self) -> None:
        self.steps = StepCache()

    def realize(self, spec: INSpec, dtype: np.dtype) -> INSpec:
        framework_dtype(dtype)
        return spec

    def build(self, spec: INSpec, *, shape: tuple[int, ...], dtype: np.dtype, gamma: np.ndarray,
              beta: np.ndarray, use_defaults: bool) -> JaxLayer:
        if len(shape) < 3:
            raise ValueError(f"InstanceNorm needs a spatial axis: expected a 3-D to 5-D input. Received: {shape}")
        channels = shape[spec.axis]
        # A scratch layer has no defaults of its own: "defaults" are the spec it is given.
        dtype = framework_dtype(dtype)
        with dtype_scope(dtype):
            params = {"scale": to_tensor(gamma, dtype), "bias": to_tensor(beta, dtype)} if spec.affine else {}
            stats = ({"mean": to_tensor(np.full(channels, spec.init_running_mean), dtype),
                      "var": to_tensor(np.full(channels, spec.init_running_var), dtype)}
                     if spec.track_running_stats else {})
        # The initial statistics are arguments of the steps, not part of their configuration.
        key = spec.replace(init_running_mean=0.0, init_running_var=1.0)
        steps = self.steps.get(key, lambda: _apply(spec))
        return JaxLayer(steps, params=params, stats=stats, dtype=dtype,
                        track_running_stats=spec.track_running_stats, to_dict=dict)
