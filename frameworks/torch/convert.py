"""NumPy <-> torch: dtypes, devices and arrays, including bfloat16 (an ml_dtypes NumPy dtype torch cannot read).

Every framework folder's convert.py has these three functions and `framework_device`, under the same names. The
private `_mean_and_variance` and `_ModuleSession` at the end are shared by this folder's layer modules.
"""

from __future__ import annotations

import numpy as np
import torch

from bnparity.frameworks.base import LayerSession, StepResult, Unsupported
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


def check_device(device: str) -> str | None:
    """None when `device` ('cpu', 'gpu' or 'cuda') can be used here, else why not, in one line. Raises ValueError for
    another name."""
    if framework_device(device).type == "cpu" or torch.cuda.is_available():
        return None
    version = torch.__version__
    build = (f"the CUDA {torch.version.cuda} build torch {version} is installed: no GPU or driver is visible"
             if torch.version.cuda else f"the CPU wheel torch {version} is installed: see constraints-gpu.txt")
    return f"PyTorch sees no CUDA device (torch.cuda.is_available() is False; {build})"


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


# --- shared by the torch layer modules other than batchnorm.py (private: the other folders need no such thing) ---

def _mean_and_variance(x: torch.Tensor, dims: list[int], variance: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(μ, σ²) of x over `dims`, kept as size-1 axes; σ² biased, by the spec's algorithm.

    "two-pass": σ² = mean((x − μ)²); "fast": σ² = max(0, mean(x²) − μ²), as bnparity.reference.moments has it.
    """
    mu = x.mean(dim=dims, keepdim=True)  # μ
    if variance == "fast":
        return mu, ((x * x).mean(dim=dims, keepdim=True) - mu * mu).clamp_min(0.0)  # σ² = max(0, E[x²] − μ²)
    return mu, ((x - mu) ** 2).mean(dim=dims, keepdim=True)  # σ² = mean((x − μ)²)


class _ModuleSession(LayerSession):
    """A torch.nn.Module through the layer protocol: training-mode steps (forward, backward with dy), then eval.

    The builtin layers and the scratch ones (torch.nn.Modules written in raw ops) alike: γ is the module's `weight`
    and β its `bias` (absent or None when the layer has none); the running statistics are its `running_mean` and
    `running_var` buffers when it keeps them. Inputs are handed over in `memory_format` (the strides the layer sees;
    the values and the logical NC... layout are the same).
    """

    def __init__(self, module: torch.nn.Module, dtype: np.dtype, *,
                 memory_format: torch.memory_format = torch.contiguous_format) -> None:
        self.module, self.dtype, self.memory_format = module, dtype, memory_format

    def _tensor(self, a: np.ndarray) -> torch.Tensor:
        return to_tensor(a, self.dtype).contiguous(memory_format=self.memory_format)

    def train_step(self, x: np.ndarray, dy: np.ndarray) -> StepResult:
        self.module.train()
        self.module.zero_grad(set_to_none=True)
        xt = self._tensor(x).requires_grad_(True)
        y = self.module(xt)
        y.backward(self._tensor(dy))
        w, b = getattr(self.module, "weight", None), getattr(self.module, "bias", None)
        return StepResult(y=to_numpy(y), dx=to_numpy(xt.grad),
                          dgamma=None if w is None else to_numpy(w.grad),
                          dbeta=None if b is None else to_numpy(b.grad))

    def running_stats(self) -> tuple[np.ndarray, np.ndarray] | None:
        mean, var = getattr(self.module, "running_mean", None), getattr(self.module, "running_var", None)
        if mean is None:
            return None
        return to_numpy(mean), to_numpy(var)

    def eval(self, x: np.ndarray) -> np.ndarray:
        self.module.eval()
        with torch.no_grad():
            return to_numpy(self.module(self._tensor(x)))
