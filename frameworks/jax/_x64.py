"""JAX's scoped x64 switch, which float64 work needs (JAX alone has one: private to this folder)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import numpy as np
from jax.experimental import enable_x64

from .convert import framework_dtype


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
    if framework_dtype(dtype) == np.float64:
        with enable_x64():
            yield
    else:
        yield
