"""NumPy <-> MXNet: dtypes, contexts and NDArrays, including bfloat16 (ml_dtypes in NumPy, MXNet's own type).

Every framework folder's convert.py has `framework_dtype`, `framework_device`, `to_tensor` and `to_numpy`, under the
same names. `_param_dtype` is MXNet's alone (gluon's BatchNorm parameters for reduced-precision inputs); batchnorm.py
uses it.
"""

from __future__ import annotations

import numpy as np

from bnparity.frameworks.base import Unsupported
from bnparity.reference.spec import BNSpec

from ._mx import mx, nd

# MXNet 1.9.1 spells bfloat16 as this structured NumPy dtype (mxnet/ndarray/ndarray.py, _DTYPE_NP_TO_MX);
# its values are the upper 16 bits of a float32, the same bits as ml_dtypes.bfloat16.
MX_BFLOAT16 = np.dtype([("bfloat16", np.uint16)])
_MX_DTYPES = {"float64": np.dtype(np.float64), "float32": np.dtype(np.float32),
              "float16": np.dtype(np.float16), "bfloat16": MX_BFLOAT16}
# gluon's BatchNorm keeps γ, β and the moving statistics in float32 for reduced-precision inputs
# (batch_norm.cc: BatchNormType; gluon/nn/basic_layers.py: _BatchNorm.cast maps float16 to float32).
_PARAM_DTYPES = {"float64": np.dtype(np.float64), "float32": np.dtype(np.float32),
                 "float16": np.dtype(np.float32), "bfloat16": np.dtype(np.float32)}


def framework_momentum(spec: BNSpec) -> float:
    """MXNet's momentum (the weight of the *old* running value) for `spec`, as the operator stores it.

    The BatchNorm operator parses `momentum` as a float32 (batch_norm-inl.h: BatchNormParam `float momentum`),
    so the value is rounded to float32 whatever the data's dtype.
    """
    return float(np.float32(1.0 - spec.new_weight))


def framework_dtype(dtype: np.dtype) -> np.dtype:
    """The framework's dtype for a NumPy float dtype. Raises Unsupported for other dtypes.

    MXNet names its dtypes with NumPy dtypes; bfloat16 is MXNet's own structured dtype (MX_BFLOAT16).

    Args:
        dtype: a NumPy dtype (float64, float32, float16 or ml_dtypes' bfloat16).
    """
    name = np.dtype(dtype).name
    try:
        return _MX_DTYPES[name]
    except KeyError:
        raise Unsupported(f"mxnet: expected a float64, float32, float16 or bfloat16 dtype. Received: {name}") \
            from None


def _param_dtype(dtype: np.dtype) -> np.dtype:
    """The dtype of a BatchNorm layer's γ, β and moving statistics for inputs of `dtype`."""
    framework_dtype(dtype)
    return _PARAM_DTYPES[np.dtype(dtype).name]


def framework_device(device: str) -> mx.Context:
    """The framework's device for 'cpu' or 'gpu'. Raises ValueError otherwise."""
    if device == "cpu":
        return mx.cpu()
    if device in ("gpu", "cuda"):
        return mx.gpu(0)
    raise ValueError(f"device must be 'cpu' or 'gpu'. Received: {device!r}")


def to_tensor(a: np.ndarray, dtype: np.dtype) -> nd.NDArray:
    """A new framework array holding `a` rounded to `dtype` (exact when `a` already has that dtype).

    Args:
        a: values (any float dtype).
        dtype: the NumPy dtype of the result (bfloat16 becomes MXNet's own bfloat16).
    """
    target = framework_dtype(dtype)
    if target == MX_BFLOAT16:
        # Round to nearest in NumPy first: MXNet's float32 -> bfloat16 cast truncates. The values are then
        # exact bfloat16 numbers, so the float32 hop and MXNet's cast change nothing.
        rounded = np.asarray(a, dtype=np.float64).astype(np.dtype(dtype)).astype(np.float32)
        return _dense(rounded, np.dtype(np.float32)).astype(MX_BFLOAT16)
    return _dense(np.asarray(a, dtype=np.float64).astype(target), target)


def _dense(values: np.ndarray, dtype: np.dtype) -> nd.NDArray:
    # nd.ndarray.array is the dense constructor behind nd.array, without nd.array's sparse-input probe
    # (which trips a SciPy deprecation warning on every call).
    return nd.ndarray.array(np.ascontiguousarray(values), dtype=dtype)


def to_numpy(t: nd.NDArray) -> np.ndarray:
    """A NumPy copy of `t`; bfloat16 comes back as float32 (exact)."""
    if t.dtype == MX_BFLOAT16:
        t = t.astype(np.float32)
    return t.asnumpy()
