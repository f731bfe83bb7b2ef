"""NumPy <-> JAX: dtypes, devices and arrays for float64, float32, float16 and bfloat16.

Every framework folder's convert.py has `framework_dtype`, `framework_device`, `to_tensor` and `to_numpy`, under the
same names. float64 arrays need JAX's x64 switch, `_x64.dtype_scope`. Importing this module (every module of this
folder that runs JAX does) also points XLA's persistent compilation cache at the user cache. Its private helpers turn
a stateless Flax layer (LayerNorm, GroupNorm, InstanceNorm, RMSNorm) into the pure function the jitted steps take.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
from flax import nnx

from bnparity.frameworks.base import Unsupported
from bnparity.reference.spec import BNSpec


def _keep_compilations_on_disk() -> None:
    """Let XLA keep compiled programs in the user cache between runs (BNPARITY_JAX_CACHE=0 turns it off).

    The parity suite compiles about 130 small programs (one per shape, dtype and configuration); on two
    cores that is ~18 s cold and ~2.4 s warm. Nothing numeric changes: a cached program is the same
    program. A cache directory the user configured already is left alone.
    """
    if os.environ.get("BNPARITY_JAX_CACHE", "1") == "0" or jax.config.jax_compilation_cache_dir:
        return
    root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "bnparity" / "jax-compilation-cache"
    jax.config.update("jax_compilation_cache_dir", str(root))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


_keep_compilations_on_disk()

_JAX_DTYPES = {"float64": np.dtype(np.float64), "float32": np.dtype(np.float32),
               "float16": np.dtype(np.float16), "bfloat16": np.dtype(ml_dtypes.bfloat16)}


def framework_momentum(spec: BNSpec) -> float:
    """Flax's momentum for `spec`: the weight of the *old* running value (running = m·running + (1 − m)·batch)."""
    return 1.0 - spec.new_weight


def framework_dtype(dtype: np.dtype) -> np.dtype:
    """The framework's dtype for a NumPy float dtype. Raises Unsupported for other dtypes.

    JAX names its dtypes with NumPy dtypes; bfloat16 is ml_dtypes'.

    Args:
        dtype: a NumPy dtype (float64, float32, float16 or ml_dtypes' bfloat16).
    """
    name = np.dtype(dtype).name
    try:
        return _JAX_DTYPES[name]
    except KeyError:
        raise Unsupported(f"jax: expected a float64, float32, float16 or bfloat16 dtype. Received: {name}") \
            from None


def framework_device(device: str) -> jax.Device:
    """The framework's device for 'cpu' or 'gpu'. Raises ValueError otherwise."""
    if device not in ("cpu", "gpu", "cuda"):
        raise ValueError(f"device must be 'cpu' or 'gpu'. Received: {device!r}")
    return jax.devices("cpu" if device == "cpu" else "gpu")[0]


def check_device(device: str) -> str | None:
    """None when `device` ('cpu', 'gpu' or 'cuda') can be used here, else why not, in one line. Raises ValueError for
    another name."""
    if device not in ("cpu", "gpu", "cuda"):
        raise ValueError(f"device must be 'cpu' or 'gpu'. Received: {device!r}")
    if device == "cpu":
        return None
    try:
        jax.devices("gpu")
    except RuntimeError:
        platforms = ", ".join(sorted({d.platform for d in jax.devices()}))
        return (f"JAX {jax.__version__} sees no GPU (jax.devices('gpu') fails; platforms here: {platforms}); its "
                "CUDA build is jax[cuda12]: see constraints-gpu.txt")
    return None


def to_tensor(a: np.ndarray, dtype: np.dtype) -> jax.Array:
    """A new framework array holding `a` rounded to `dtype` (exact when `a` already has that dtype).

    float64 must be converted inside `_x64.dtype_scope(float64)`; outside it JAX would round to float32.

    Args:
        a: values (any float dtype).
        dtype: the dtype of the result.

    Raises:
        RuntimeError: float64 was asked for outside `dtype_scope`.
    """
    target = framework_dtype(dtype)
    if target == np.float64 and not jax.config.x64_enabled:
        raise RuntimeError("jax: float64 arrays need x64; convert inside dtype_scope(float64). "
                           "Received: a float64 conversion with x64 disabled")
    return jnp.asarray(np.asarray(a, dtype=np.float64).astype(target))


def to_numpy(a: jax.Array) -> np.ndarray:
    """A NumPy copy of `a`; bfloat16 comes back as float32 (exact)."""
    out = np.array(a)
    if out.dtype == _JAX_DTYPES["bfloat16"]:
        out = out.astype(np.float32)
    return out


# Private helpers shared by this folder's stateless layer modules (layernorm, groupnorm, instancenorm, rmsnorm): a
# Flax layer turned into the pure function ``apply(params, stats, x, *, train) -> (y, stats)`` that
# _session.jit_steps compiles. These layers keep no statistics: `stats` passes through unchanged.


def _linen_apply(module: nn.Module) -> Callable[..., tuple[jax.Array, Any]]:
    """A flax.linen layer with only a 'params' collection as a pure apply function (training = eval)."""

    def apply(params: dict, stats: Any, x: jax.Array, *, train: bool) -> tuple[jax.Array, Any]:
        return module.apply({"params": params}, x), stats

    return apply


def _nnx_apply(graphdef: Any) -> Callable[..., tuple[jax.Array, Any]]:
    """A flax.nnx layer split into (graphdef, nnx.Param state) as a pure apply function (training = eval)."""

    def apply(params: nnx.State, stats: Any, x: jax.Array, *, train: bool) -> tuple[jax.Array, Any]:
        return nnx.merge(graphdef, params)(x), stats

    return apply


def _as_dict(tree: Any) -> dict[str, jax.Array]:
    """A params or stats tree (a dict, or a flax.nnx.State) as a flat dict of arrays."""
    return nnx.to_pure_dict(tree) if isinstance(tree, nnx.State) else dict(tree)


def _param_names(options: dict[str, Any]) -> tuple[str, ...]:
    """The parameters of a Flax layer built with keyword `options`: "scale" (γ) and "bias" (β), when switched on."""
    return tuple(name for name, switch in (("scale", "use_scale"), ("bias", "use_bias")) if options.get(switch))


def _mean_and_variance(x: jax.Array, axes: tuple[int, ...], variance: str) -> tuple[jax.Array, jax.Array]:
    """(μ, σ²) of x over `axes`, kept as size-1 axes; σ² biased, by the spec's algorithm (shared by the scratch layers).

    "two-pass": σ² = mean((x − μ)²); "fast": σ² = max(0, mean(x²) − μ²), clipped at 0 as Flax does (rounding can
    make it negative; bnparity.reference.moments has the same).
    """
    mu = jnp.mean(x, axis=axes, keepdims=True)  # μ
    if variance == "fast":
        return mu, jnp.maximum(0.0, jnp.mean(jnp.square(x), axis=axes, keepdims=True) - jnp.square(mu))
    return mu, jnp.mean(jnp.square(x - mu), axis=axes, keepdims=True)  # σ² = mean((x − μ)²), two passes
