"""NumPy <-> torch: dtypes, devices and arrays, including bfloat16 (an ml_dtypes NumPy dtype torch cannot read).

Every framework folder's convert.py has these three functions and `framework_device`, under the same names.
"""

from __future__ import annotations

import numpy as np
import torch

from bnparity.frameworks.base import Unsupported
from bnparity.reference.spec import BNSpec

_TORCH_DTYPES = {"float64": torch.float64, "float32": torch.float32, "float16": torch.float16,
                 "bfloat16": torch.bfloat16}
_DEVICES = {"cpu": "cpu", "gpu": "cuda", "cuda": "cuda"}


def framework_momentum(spec: BNSpec) -> float:
    """PyTorch's momentum for `spec`: the weight of the *new* batch statistic (running = (1 − m)·running + m·batch)."""
    return spec.new_weight


def framework_dtype(dtype: np.dtype) -> torch.dtype:
    """The framework's dtype for a NumPy float dtype. Raises Unsupported for other dtypes.

    Args:
        dtype: a NumPy dtype (float64, float32, float16 or ml_dtypes' bfloat16).
    """
    try:
        return _TORCH_DTYPES[np.dtype(dtype).name]
    except KeyError:
        raise Unsupported(f"torch: no float dtype for {np.dtype(dtype).name}") from None


def framework_device(device: str) -> torch.device:
    """The framework's device for 'cpu' or 'gpu'. Raises ValueError otherwise."""
    if device not in _DEVICES:
        raise ValueError(f"device must be one of {', '.join(_DEVICES)}. Received: {device!r}")
    return torch.device(_DEVICES[device])


def to_tensor(a: np.ndarray, dtype: np.dtype, *, requires_grad: bool = False) -> torch.Tensor:
    """A new framework array holding `a` rounded to `dtype` (exact when `a` already has that dtype).

    Args:
        a: values (any float dtype).
        dtype: the NumPy dtype of the result.
        requires_grad: whether autograd records operations on the result.
    """
    t = torch.from_numpy(np.ascontiguousarray(np.asarray(a, dtype=np.float64))).to(framework_dtype(dtype))
    return t.requires_grad_(requires_grad)


def to_numpy(t: torch.Tensor) -> np.ndarray:
    """A NumPy copy of `t`; bfloat16 comes back as float32 (exact)."""
    t = t.detach().cpu()
    if t.dtype == torch.bfloat16:
        t = t.float()
    return t.numpy().copy()
