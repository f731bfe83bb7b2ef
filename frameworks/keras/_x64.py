"""float64 on the JAX backend: JAX's scoped x64 switch (private to this folder; other backends need nothing)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import numpy as np

from ._backend import BACKEND


@contextlib.contextmanager
def dtype_scope(dtype: np.dtype) -> Iterator[None]:
    """The configuration `dtype` needs for the duration of the block.

    On the JAX backend JAX silently computes in float32 unless x64 is enabled: float64 work runs inside
    `jax.experimental.enable_x64()`, a thread-local switch restored on exit (the global configuration is never
    changed). TensorFlow and PyTorch compute float64 as asked; other dtypes need nothing.
    """
    if BACKEND == "jax" and np.dtype(dtype) == np.float64:
        from jax.experimental import enable_x64

        with enable_x64():
            yield
    else:
        yield
