"""NumPy <-> torch conversion, including bfloat16 (an ml_dtypes NumPy dtype that torch cannot read)."""

from __future__ import annotations

import numpy as np
import torch

from bnparity.frameworks.base import Unsupported

_TORCH_DTYPES = {"float64": torch.float64, "float32": torch.float32, "float16": torch.float16,
                 "bfloat16": torch.bfloat16}


def torch_dtype(dtype: np.dtype) -> torch.dtype:
    """The torch dtype of a NumPy dtype name. Raises Unsupported for other dtypes."""
    try:
        return _TORCH_DTYPES[np.dtype(dtype).name]
    except KeyError:
        raise Unsupported(f"torch: no float dtype for {np.dtype(dtype).name}") from None


def to_torch(a: np.ndarray, dtype: np.dtype, *, requires_grad: bool = False) -> torch.Tensor:
    """A new tensor holding `a` in `dtype` (values cast exactly when `a` already has that dtype)."""
    t = torch.from_numpy(np.ascontiguousarray(np.asarray(a, dtype=np.float64))).to(torch_dtype(dtype))
    return t.requires_grad_(requires_grad)


def to_numpy(t: torch.Tensor) -> np.ndarray:
    """A NumPy copy of `t`; bfloat16 comes back as float32 (exact)."""
    t = t.detach().cpu()
    if t.dtype == torch.bfloat16:
        t = t.float()
    return t.numpy().copy()
