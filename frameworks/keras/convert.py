"""NumPy <-> Keras: dtypes, devices and tensors, on whichever backend this process runs.

Every framework folder's convert.py has `framework_momentum`, `framework_dtype`, `framework_device`, `to_tensor` and
`to_numpy`, under the same names. Keras names dtypes with strings ("float32"); its tensors are the backend's own
(tf.Tensor, jax.Array, torch.Tensor), made and read through `keras.ops`. float64 on the JAX backend needs JAX's x64
switch: convert inside `_x64.dtype_scope(float64)`.
"""

from __future__ import annotations

from typing import Any

import keras
import ml_dtypes
import numpy as np

from bnparity.frameworks.base import Unsupported
from bnparity.reference.spec import BNSpec

from ._backend import BACKEND

_KERAS_DTYPES = {"float64": "float64", "float32": "float32", "float16": "float16", "bfloat16": "bfloat16"}
_NUMPY_DTYPES = {"float64": np.dtype(np.float64), "float32": np.dtype(np.float32), "float16": np.dtype(np.float16),
                 "bfloat16": np.dtype(ml_dtypes.bfloat16)}
_DEVICES = {"cpu": "cpu:0", "gpu": "gpu:0", "cuda": "gpu:0"}


def framework_momentum(spec: BNSpec) -> float:
    """Keras' momentum for `spec`: the weight of the *old* moving value (moving = m·moving + (1 − m)·batch)."""
    return 1.0 - spec.new_weight


def framework_dtype(dtype: np.dtype) -> str:
    """The framework's dtype (Keras' name) for a NumPy float dtype. Raises Unsupported for other dtypes.

    Args:
        dtype: a NumPy dtype (float64, float32, float16 or ml_dtypes' bfloat16).
    """
    name = np.dtype(dtype).name
    try:
        return _KERAS_DTYPES[name]
    except KeyError:
        raise Unsupported(f"keras-{BACKEND}: expected a float64, float32, float16 or bfloat16 dtype. "
                          f"Received: {name}") from None


def framework_device(device: str) -> str:
    """The framework's device name for 'cpu' or 'gpu' (the argument of `keras.device`). Raises ValueError otherwise."""
    if device not in _DEVICES:
        raise ValueError(f"device must be one of {', '.join(_DEVICES)}. Received: {device!r}")
    return _DEVICES[device]


def check_device(device: str) -> str | None:
    """None when `device` ('cpu', 'gpu' or 'cuda') can be used here, else why not, in one line: asked of the backend
    this process runs (TensorFlow's physical devices, JAX's devices, torch.cuda). Raises ValueError for another name."""
    if framework_device(device).startswith("cpu"):
        return None
    if BACKEND == "tensorflow":
        import tensorflow as tf

        if tf.config.list_physical_devices("GPU"):
            return None
        build = "" if tf.test.is_built_with_cuda() else "; tensorflow-cpu, the keras extra's, is installed"
        return (f"Keras on TensorFlow {tf.__version__} sees no GPU (tf.config.list_physical_devices('GPU') is empty"
                f"{build}: see constraints-gpu.txt)")
    if BACKEND == "jax":
        import jax

        try:
            jax.devices("gpu")
        except RuntimeError:
            platforms = ", ".join(sorted({d.platform for d in jax.devices()}))
            return (f"Keras on JAX {jax.__version__} sees no GPU (jax.devices('gpu') fails; platforms here: "
                    f"{platforms}); its CUDA build is jax[cuda12]: see constraints-gpu.txt")
        return None
    import torch

    if torch.cuda.is_available():
        return None
    build = "a CUDA build, but no GPU or driver is visible" if torch.version.cuda else "the CPU wheel: see " \
        "constraints-gpu.txt"
    return f"Keras on PyTorch {torch.__version__} sees no CUDA device (torch.cuda.is_available() is False; {build})"


def to_tensor(a: np.ndarray, dtype: np.dtype) -> Any:
    """A new backend tensor holding `a` rounded to `dtype` (exact when `a` already has that dtype).

    Args:
        a: values (any float dtype).
        dtype: the NumPy dtype of the result.

    Raises:
        RuntimeError: float64 on the JAX backend outside `_x64.dtype_scope(float64)` (JAX would round to float32).
    """
    name = framework_dtype(dtype)
    rounded = np.asarray(a, dtype=np.float64).astype(_NUMPY_DTYPES[name])
    tensor = keras.ops.convert_to_tensor(rounded, dtype=name)
    if keras.backend.standardize_dtype(tensor.dtype) != name:
        raise RuntimeError(f"keras-{BACKEND}: a {name} tensor came back as "
                           f"{keras.backend.standardize_dtype(tensor.dtype)}; convert float64 inside "
                           "dtype_scope(float64)")
    return tensor


def to_numpy(t: Any) -> np.ndarray:
    """A NumPy copy of backend tensor (or Keras variable) `t`; bfloat16 comes back as float32 (exact)."""
    out = np.array(keras.ops.convert_to_numpy(t))
    if out.dtype == _NUMPY_DTYPES["bfloat16"]:
        out = out.astype(np.float32)
    return out
