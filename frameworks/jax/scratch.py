"""BatchNorm from scratch in raw jax.numpy ops (teaching material); jax.vjp supplies the backward pass.

Verified by the same parity harness as flax.linen.BatchNorm. It follows the spec exactly, so it can store
either running-variance estimator, weigh momentum either way, and skip running statistics altogether.
Like Flax, it is a pure function: the updated running statistics are returned, not written in place.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from bnparity.frameworks.base import BatchNormAdapter
from bnparity.reference.spec import BNSpec

from .convert import dtype_scope, jax_dtype, to_jax
from .session import Apply, JaxLayer, StepCache


def batch_norm(x: jax.Array, params: dict[str, jax.Array], stats: dict[str, jax.Array], *, spec: BNSpec,
               training: bool) -> tuple[jax.Array, dict[str, jax.Array]]:
    """y = γ x̂ + β over channel axis `spec.axis`, and the running statistics after this call.

    Args:
        x: the input, channels at `spec.axis`.
        params: {"scale": γ, "bias": β}, shape (C,) each; empty when the spec is not affine.
        stats: {"mean": running mean, "var": running variance}; empty when the spec tracks none.
        spec: the conventions to follow (eps, momentum, running-variance estimator).
        training: normalize with the batch's statistics and update `stats` (True), or normalize with
            `stats` (False; with the batch's statistics when `stats` is empty).
    """
    axis = spec.axis % x.ndim
    axes = tuple(a for a in range(x.ndim) if a != axis)
    shape = tuple(-1 if a == axis else 1 for a in range(x.ndim))
    new_stats = stats
    if training or not stats:
        mu = jnp.mean(x, axis=axes)  # μ_B
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


class JaxScratchBatchNorm(BatchNormAdapter):
    """BatchNorm in raw jax.numpy ops: any channel axis, every spec field honoured.

    Attributes:
        steps: the jitted steps per spec; ``steps.traces`` counts compilations.
    """

    framework = "jax"
    impl = "scratch"
    native_axis = -1  # channels last, as Flax

    def __init__(self) -> None:
        self.steps = StepCache()

    def realize(self, spec: BNSpec, dtype: np.dtype) -> BNSpec:
        jax_dtype(dtype)
        return spec

    def build(self, spec: BNSpec, *, ndim: int, channels: int, dtype: np.dtype, gamma: np.ndarray,
              beta: np.ndarray, use_defaults: bool) -> JaxLayer:
        # A scratch layer has no defaults of its own: "defaults" are the spec it is given.
        dtype = jax_dtype(dtype)
        with dtype_scope(dtype):
            params = {"scale": to_jax(gamma, dtype), "bias": to_jax(beta, dtype)} if spec.affine else {}
            stats = ({"mean": to_jax(np.full(channels, spec.init_running_mean), dtype),
                      "var": to_jax(np.full(channels, spec.init_running_var), dtype)}
                     if spec.track_running_stats else {})
        # The initial statistics are arguments of the steps, not part of their configuration.
        key = spec.replace(init_running_mean=0.0, init_running_var=1.0)
        steps = self.steps.get(key, lambda: _apply(spec))
        return JaxLayer(steps, params=params, stats=stats, dtype=dtype,
                        track_running_stats=spec.track_running_stats, to_dict=dict)


ADAPTER = JaxScratchBatchNorm
