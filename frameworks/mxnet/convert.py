"""NumPy <-> MXNet NDArray conversion, including bfloat16 (ml_dtypes on the NumPy side, MXNet's own type)."""

from __future__ import annotations

import numpy as np

from bnparity.frameworks.base import Unsupported

from ._mx import nd

# MXNet 1.9.1 spells bfloat16 as this structured NumPy dtype (mxnet/ndarray/ndarray.py, _DTYPE_NP_TO_MX);
# its values are the upper 16 bits of a float32, the same bits as ml_dtypes.bfloat16.
MX_BFLOAT16 = np.dtype([("bfloat16", np.uint16)])
_MX_DTYPES = {"float64": np.dtype(np.float64), "float32": np.dtype(np.float32),
              "float16": np.dtype(np.float16), "bfloat16": MX_BFLOAT16}
# gluon's BatchNorm keeps γ, β and the moving statistics in float32 for reduced-precision inputs
# (batch_norm.cc: BatchNormType; gluon/nn/basic_layers.py: _BatchNorm.cast maps float16 to float32).
_PARAM_DTYPES = {"float64": np.dtype(np.float64), "float32": np.dtype(np.float32),
                 "float16": np.dtype(np.float32), "bfloat16": np.dtype(np.float32)}


def mx_dtype(dtype: np.dtype) -> np.dtype:
    """The dtype MXNet stores a NumPy float dtype in. Raises Unsupported for other dtypes.

    Args:
        dtype: a NumPy dtype (float64, float32, float16 or ml_dtypes' bfloat16).
    """
    name = np.dtype(dtype).name
    try:
        return _MX_DTYPES[name]
    except KeyError:
        raise Unsupported(f"mxnet: expected a float64, float32, float16 or bfloat16 dtype. Received: {name}") \
            from None


def param_dtype(dtype: np.dtype) -> np.dtype:
    """The dtype of a BatchNorm layer's γ, β and moving statistics for inputs of `dtype`."""
    mx_dtype(dtype)
    return _PARAM_DTYPES[np.dtype(dtype).name]


def to_nd(a: np.ndarray, dtype: np.dtype) -> nd.NDArray:
    """A new NDArray holding `a` rounded to `dtype` (exact when `a` already has that dtype).

    Args:
        a: values (any float dtype).
        dtype: the NumPy dtype of the result (bfloat16 becomes MXNet's own bfloat16).
    """
    target = mx_dtype(dtype)
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
