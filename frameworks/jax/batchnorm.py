"""Flax's BatchNorm adapters: flax.linen.BatchNorm or flax.nnx.BatchNorm (builtin), raw jax.numpy ops (scratch).

Builtin: training applies the layer with ``use_running_average=False`` (linen: ``mutable=['batch_stats']``, the
updated statistics come back as the mutated collection); eval with ``use_running_average=True``. dx, dγ (d scale)
and dβ (d bias) come from `jax.vjp` of that same apply function with the given dy. Flax is channels-last
(``axis=-1``); the base class moves the data there and back.

Scratch (teaching material): jax.vjp supplies the backward pass; it follows the spec exactly. Like Flax, it is a
pure function: the updated running statistics are returned, not written in place.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from bnparity.frameworks.base import LayerAdapter, Unsupported
from bnparity.reference.spec import BNSpec

from ._session import Apply, JaxLayer, StepCache
from ._x64 import dtype_scope
from .convert import framework_dtype, framework_momentum, to_tensor
from .descriptor import DESCRIPTOR

APIS = ("linen", "nnx")


def _stats_dtype(dtype: np.dtype) -> np.dtype:
    """The dtype Flax keeps batch statistics in for inputs of `dtype`: at least float32.

    linen (force_float32_reductions=True) and nnx reduce in jnp.promote_types(dtype, float32) and create
    batch_stats in float32; after one float64 update they are float64, so float64 starts there.
    """
    return np.promote_types(framework_dtype(dtype), np.float32)


def _linen_apply(module: nn.BatchNorm) -> Apply:
    def apply(params: dict, stats: dict, x: jax.Array, *, train: bool) -> tuple[jax.Array, dict]:
        variables = {"params": params, "batch_stats": stats}
        if train:
            y, updated = module.apply(variables, x, use_running_average=False, mutable=["batch_stats"])
            return y, updated["batch_stats"]
        return module.apply(variables, x, use_running_average=True), stats

    return apply


def _nnx_apply(graphdef: Any) -> Apply:
    def apply(params: nnx.State, stats: nnx.State, x: jax.Array, *, train: bool) -> tuple[jax.Array, nnx.State]:
        layer = nnx.merge(graphdef, params, stats)
        y = layer(x, use_running_average=not train)  # training writes layer.mean / layer.var in place
        return y, nnx.state(layer, nnx.BatchStat)

    return apply


def _as_dict(tree: Any) -> dict[str, jax.Array]:
    return nnx.to_pure_dict(tree) if isinstance(tree, nnx.State) else dict(tree)


class BuiltinBatchNorm(LayerAdapter):
    """flax.linen.BatchNorm (or flax.nnx.BatchNorm): channels last, momentum weighs the old value, biased σ².

    Args:
        api: "linen" (flax.linen.BatchNorm, the default) or "nnx" (flax.nnx.BatchNorm, its own copy of the
            statistics and normalization code in flax/nnx/nn/normalization.py).

    Attributes:
        steps: the jitted steps per configuration; ``steps.traces`` counts compilations.
    """

    framework = DESCRIPTOR.name
    normalization = "batchnorm"
    impl = "builtin"
    native_axis = DESCRIPTOR.native_axis
    variants = {"linen": {}, "nnx": {"api": "nnx"}}

    def __init__(self, *, api: str = "linen") -> None:
        if api not in APIS:
            raise ValueError(f"api must be one of {', '.join(APIS)}. Received: {api!r}")
        self.api = api
        self.steps = StepCache()

    def realize(self, spec: BNSpec, dtype: np.dtype) -> BNSpec:
        framework_dtype(dtype)  # raises Unsupported for a dtype JAX has no float type for
        # Flax stores the σ²_B it normalizes with (a mean over the m values); no argument changes that.
        # spec.variance is kept: use_fast_variance configures it.
        return spec.replace(running_var="biased")

    def _options(self, spec: BNSpec, dtype: np.dtype, use_defaults: bool) -> dict[str, Any]:
        options: dict[str, Any] = dict(axis=spec.axis, use_bias=spec.affine, use_scale=spec.affine,
                                       dtype=jnp.dtype(dtype), param_dtype=jnp.dtype(dtype))
        if not use_defaults:
            # σ²_B as the spec says: two passes (the canonical semantics) or E[x²] − E[x]² (Flax's default).
            options.update(momentum=framework_momentum(spec), epsilon=spec.eps,
                           use_fast_variance=spec.variance == "fast")
        return options

    def build(self, spec: BNSpec, *, shape: tuple[int, ...], dtype: np.dtype, gamma: np.ndarray,
              beta: np.ndarray, use_defaults: bool) -> JaxLayer:
        ndim, channels = len(shape), shape[spec.axis]
        if spec.running_var != "biased":
            raise Unsupported(f"jax: flax {self.api}.BatchNorm always stores the biased running variance. "
                              f"Received: running_var={spec.running_var!r}")
        dtype = framework_dtype(dtype)
        options = self._options(spec, dtype, use_defaults)
        key = (self.api, channels, tuple(sorted((k, str(v)) for k, v in options.items())))
        sdtype = _stats_dtype(dtype)
        with dtype_scope(dtype):
            if self.api == "linen":
                module = nn.BatchNorm(**options)
                params = {"scale": to_tensor(gamma, dtype), "bias": to_tensor(beta, dtype)} if spec.affine else {}
                if use_defaults:  # the statistics Flax's own init creates
                    probe = jnp.zeros((1,) * (ndim - 1) + (channels,), dtype)
                    stats = module.init(jax.random.key(0), probe, use_running_average=True)["batch_stats"]
                    stats = {k: jnp.asarray(v, sdtype) for k, v in stats.items()}
                else:
                    stats = self._initial_stats(spec, channels, sdtype)
                steps = self.steps.get(key, lambda: _linen_apply(module))
            else:
                layer = nnx.BatchNorm(channels, rngs=nnx.Rngs(0), **options)
                if spec.affine:
                    layer.scale.value = to_tensor(gamma, dtype)
                    layer.bias.value = to_tensor(beta, dtype)
                initial = (dict(mean=layer.mean.value, var=layer.var.value) if use_defaults
                           else self._initial_stats(spec, channels, sdtype))
                layer.mean.value = jnp.asarray(initial["mean"], sdtype)
                layer.var.value = jnp.asarray(initial["var"], sdtype)
                graphdef, params, stats = nnx.split(layer, nnx.Param, nnx.BatchStat)
                steps = self.steps.get(key, lambda: _nnx_apply(graphdef))
        return JaxLayer(steps, params=params, stats=stats, dtype=dtype,
                        track_running_stats=spec.track_running_stats, to_dict=_as_dict)

    @staticmethod
    def _initial_stats(spec: BNSpec, channels: int, sdtype: np.dtype) -> dict[str, jax.Array]:
        return {name: jnp.asarray(np.full(channels, value, dtype=sdtype))
                for name, value in (("mean", spec.init_running_mean), ("var", spec.init_running_var))}


def batch_norm(x: jax.Array, params: dict[str, jax.Array], stats: dict[str, jax.Array], *, spec: BNSpec,
               training: bool) -> tuple[jax.Array, dict[str, jax.Array]]:
    """y = γ x̂ + β over channel axis `spec.axis`, and the running statistics after this call.

    Args:
        x: the input, channels at `spec.axis`.
        params: {"scale": γ, "bias": β}, shape (C,) each; empty when the spec is not affine.
        stats: {"mean": running mean, "var": running variance}; empty when the spec tracks none.
        spec: the conventions to follow (eps, variance algorithm, momentum, running-variance estimator).
        training: normalize with the batch's statistics and update `stats` (True), or normalize with
            `stats` (False; with the batch's statistics when `stats` is empty).
    """
    axis = spec.axis % x.ndim
    axes = tuple(a for a in range(x.ndim) if a != axis)
    shape = tuple(-1 if a == axis else 1 for a in range(x.ndim))
    new_stats = stats
    if training or not stats:
        mu = jnp.mean(x, axis=axes)  # μ_B
        if spec.variance == "fast":  # σ²_B = E[x²] − μ_B², clipped at 0 as Flax does (rounding can make it < 0)
            var = jnp.maximum(0.0, jnp.mean(jnp.square(x), axis=axes) - jnp.square(mu))
        else:
            var = jnp.mean(jnp.square(x - mu.reshape(shape)), axis=axes)  # σ²_B (biased, two passes)
        if training and stats:
            m = x.size // x.shape[axis]
            if spec.running_var == "unbiased":
                stored_var = var * (m / (m - 1) if m > 1 else float("nan"))
            else:
                stored_var = var
            w = spec.new_weight  # weight of the new batch statistic
            new_stats = {"mean": (1 - w) * stats["mean"] + w * mu, "var": (1 - w) * stats["var"] + w * stored_var}
    else:
        mu, var = stats["mean"], stats["var"]
    y = (x - mu.reshape(shape)) / jnp.sqrt(var.reshape(shape) + spec.eps)  # x̂
    if "scale" in params:
        y = params["scale"].reshape(shape) * y  # γ x̂
    if "bias" in params:
        y = y + params["bias"].reshape(shape)  # + β
    return y, new_stats


def _apply(spec: BNSpec) -> Apply:
    def apply(params: dict, stats: dict, x: jax.Array, *, train: bool) -> tuple[jax.Array, dict]:
        return batch_norm(x, params, stats, spec=spec, training=train)

    return apply


class ScratchBatchNorm(LayerAdapter):
    """BatchNorm in raw jax.numpy ops: any channel axis, every spec field honoured.

    Attributes:
        steps: the jitted steps per spec; ``steps.traces`` counts compilations.
    """

    framework = DESCRIPTOR.name
    normalization = "batchnorm"
    impl = "scratch"
    native_axis = DESCRIPTOR.native_axis

    def __init__(self) -> None:
        self.steps = StepCache()

    def realize(self, spec: BNSpec, dtype: np.dtype) -> BNSpec:
        framework_dtype(dtype)
        return spec

    def build(self, spec: BNSpec, *, shape: tuple[int, ...], dtype: np.dtype, gamma: np.ndarray,
              beta: np.ndarray, use_defaults: bool) -> JaxLayer:
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
