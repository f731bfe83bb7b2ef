"""NumPy <-> JAX conversion for float64, float32, float16 and bfloat16, and the scoped x64 switch float64 needs."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
from jax.experimental import enable_x64

from bnparity.frameworks.base import Unsupported


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


def jax_dtype(dtype: np.dtype) -> np.dtype:
    """The NumPy dtype JAX computes in for `dtype` (bfloat16 is ml_dtypes'). Raises Unsupported otherwise.

    Args:
        dtype: a NumPy dtype (float64, float32, float16 or ml_dtypes' bfloat16).
    """
    name = np.dtype(dtype).name
    try:
        return _JAX_DTYPES[name]
    except KeyError:
        raise Unsupported(f"jax: expected a float64, float32, float16 or bfloat16 dtype. Received: {name}") \
            from None


@contextlib.contextmanager
def dtype_scope(dtype: np.dtype) -> Iterator[None]:
    """The JAX configuration `dtype` needs, for the duration of the block.

    JAX silently computes in float32 unless x64 is enabled. float64 work runs inside
    `jax.experimental.enable_x64()`, a thread-local switch restored on exit (it is part of jax.jit's cache
    key, so a step traced under x64 is never reused without it); the global configuration is never changed.
    Other dtypes need nothing.

    Args:
        dtype: the dtype of the arrays the block creates and computes with.
    """
    if jax_dtype(dtype) == np.float64:
        with enable_x64():
            yield
    else:
        yield


def to_jax(a: np.ndarray, dtype: np.dtype) -> jax.Array:
    """A new JAX array holding `a` rounded to `dtype` (exact when `a` already has that dtype).

    float64 must be converted inside `dtype_scope(float64)`; outside it JAX would round to float32.

    Args:
        a: values (any float dtype).
        dtype: the dtype of the result.

    Raises:
        RuntimeError: float64 was asked for outside `dtype_scope`.
    """
    target = jax_dtype(dtype)
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
