"""Which Keras backend this process runs, and so which of this folder's frameworks it is (private to this folder).

Keras reads KERAS_BACKEND once, at its first import; the registry sets it from the variant's descriptor before any
module of this folder is imported. Every module of the folder takes its framework's descriptor from here.
"""

from __future__ import annotations

import keras

from .descriptor import DESCRIPTORS

BACKEND: str = keras.config.backend()  # "tensorflow", "jax" or "torch"
DESCRIPTOR = next((d for d in DESCRIPTORS if dict(d.environment)["KERAS_BACKEND"] == BACKEND), None)
if DESCRIPTOR is None:
    raise ImportError(f"bnparity runs Keras on the tensorflow, jax or torch backend. Received: {BACKEND!r}")


def _keep_jax_compilations_on_disk() -> None:
    """On the JAX backend, let XLA keep compiled programs in the user cache between runs (BNPARITY_JAX_CACHE=0
    turns it off), as the JAX folder does: the parity suite compiles a program per layer, shape and dtype. Nothing
    numeric changes (a cached program is the same program); a cache directory the user configured is left alone."""
    import os
    from pathlib import Path

    import jax

    if os.environ.get("BNPARITY_JAX_CACHE", "1") == "0" or jax.config.jax_compilation_cache_dir:
        return
    root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "bnparity" / "jax-compilation-cache"
    jax.config.update("jax_compilation_cache_dir", str(root))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


if BACKEND == "jax":
    _keep_jax_compilations_on_disk()
