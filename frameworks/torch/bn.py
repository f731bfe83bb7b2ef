"""The PyTorch adapter: torch.nn.BatchNorm1d/2d/3d, configured from the spec, never re-implemented."""

from __future__ import annotations

import numpy as np
import torch

from bnparity.frameworks.base import BatchNormAdapter, LayerSession, StepResult
from bnparity.reference.spec import BNSpec

from .convert import to_numpy, to_torch, torch_dtype

_MODULE_OF_RANK = {2: torch.nn.BatchNorm1d, 3: torch.nn.BatchNorm1d, 4: torch.nn.BatchNorm2d,
                   5: torch.nn.BatchNorm3d}


class TorchLayer(LayerSession):
    """A torch BatchNorm module in training mode, then eval mode."""

    def __init__(self, module: torch.nn.Module, dtype: np.dtype) -> None:
        self.module = module
        self.dtype = dtype

    def train_step(self, x: np.ndarray, dy: np.ndarray) -> StepResult:
        self.module.train()
        self.module.zero_grad(set_to_none=True)
        xt = to_torch(x, self.dtype, requires_grad=True)
        y = self.module(xt)
        y.backward(to_torch(dy, self.dtype))
        w, b = self.module.weight, self.module.bias
        return StepResult(
            y=to_numpy(y), dx=to_numpy(xt.grad),
            dgamma=None if w is None else to_numpy(w.grad),
            dbeta=None if b is None else to_numpy(b.grad),
        )

    def running_stats(self) -> tuple[np.ndarray, np.ndarray] | None:
        if self.module.running_mean is None:
            return None
        return to_numpy(self.module.running_mean), to_numpy(self.module.running_var)

    def eval(self, x: np.ndarray) -> np.ndarray:
        self.module.eval()
        with torch.no_grad():
            return to_numpy(self.module(to_torch(x, self.dtype)))


class TorchBatchNorm(BatchNormAdapter):
    """torch.nn.BatchNorm{1,2,3}d: channels at axis 1, momentum weighs the new batch, unbiased running var."""

    framework = "torch"
    impl = "builtin"
    native_axis = 1

    def realize(self, spec: BNSpec, dtype: np.dtype) -> BNSpec:
        torch_dtype(dtype)  # raises Unsupported for a dtype torch has no float type for
        return spec.replace(running_var="unbiased")  # not configurable in torch

    def build(self, spec: BNSpec, *, ndim: int, channels: int, dtype: np.dtype, gamma: np.ndarray,
              beta: np.ndarray, use_defaults: bool) -> TorchLayer:
        options = dict(affine=spec.affine, track_running_stats=spec.track_running_stats)
        if not use_defaults:
            # torch's momentum is the weight of the new batch statistic.
            options.update(eps=spec.eps, momentum=spec.new_weight)
        # Cast first, then set γ, β and the running statistics, so that float64 keeps every digit.
        module = _MODULE_OF_RANK[ndim](channels, **options).to(torch_dtype(dtype))
        with torch.no_grad():
            if spec.affine:
                module.weight.copy_(to_torch(gamma, dtype))
                module.bias.copy_(to_torch(beta, dtype))
            if spec.track_running_stats and not use_defaults:
                module.running_mean.fill_(spec.init_running_mean)
                module.running_var.fill_(spec.init_running_var)
        return TorchLayer(module, dtype)


ADAPTER = TorchBatchNorm
