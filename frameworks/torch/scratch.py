"""BatchNorm from scratch in raw torch ops (teaching material); autograd supplies the backward pass.

Verified by the same parity harness as torch.nn.BatchNorm2d. It follows the spec exactly, so it can
store either running-variance estimator and weigh momentum either way.
"""

from __future__ import annotations

import numpy as np
import torch

from bnparity.frameworks.base import BatchNormAdapter, LayerSession, StepResult
from bnparity.reference.spec import BNSpec

from .convert import to_numpy, to_torch, torch_dtype


def batch_norm(x: torch.Tensor, gamma: torch.Tensor, beta: torch.Tensor, running_mean: torch.Tensor | None,
               running_var: torch.Tensor | None, *, spec: BNSpec, training: bool) -> torch.Tensor:
    """y = γ x̂ + β over channel axis `spec.axis`; in training, updates the running statistics in place."""
    axes = [a for a in range(x.dim()) if a != spec.axis % x.dim()]
    shape = [1] * x.dim()
    shape[spec.axis % x.dim()] = -1
    if training or running_mean is None:
        mu = x.mean(dim=axes)  # μ_B
        var = ((x - mu.view(shape)) ** 2).mean(dim=axes)  # σ²_B (biased, two passes)
        if training and running_mean is not None:
            m = x.numel() // x.shape[spec.axis % x.dim()]
            stored_var = var * (m / (m - 1) if m > 1 else float("nan")) if spec.running_var == "unbiased" else var
            w = spec.new_weight  # weight of the new batch statistic
            with torch.no_grad():
                running_mean.mul_(1 - w).add_(w * mu)
                running_var.mul_(1 - w).add_(w * stored_var)
    else:
        mu, var = running_mean, running_var
    x_hat = (x - mu.view(shape)) / torch.sqrt(var.view(shape) + spec.eps)  # x̂
    return gamma.view(shape) * x_hat + beta.view(shape)  # y = γ x̂ + β


class ScratchLayer(LayerSession):
    def __init__(self, spec: BNSpec, channels: int, dtype: np.dtype, gamma: np.ndarray, beta: np.ndarray) -> None:
        self.spec, self.dtype = spec, dtype
        self.gamma = to_torch(gamma, dtype, requires_grad=spec.affine)
        self.beta = to_torch(beta, dtype, requires_grad=spec.affine)
        if spec.track_running_stats:
            self.running_mean = to_torch(np.full(channels, spec.init_running_mean), dtype)
            self.running_var = to_torch(np.full(channels, spec.init_running_var), dtype)
        else:
            self.running_mean = self.running_var = None

    def train_step(self, x: np.ndarray, dy: np.ndarray) -> StepResult:
        for p in (self.gamma, self.beta):
            p.grad = None
        xt = to_torch(x, self.dtype, requires_grad=True)
        y = batch_norm(xt, self.gamma, self.beta, self.running_mean, self.running_var,
                       spec=self.spec, training=True)
        y.backward(to_torch(dy, self.dtype))
        affine = self.spec.affine
        return StepResult(y=to_numpy(y), dx=to_numpy(xt.grad),
                          dgamma=to_numpy(self.gamma.grad) if affine else None,
                          dbeta=to_numpy(self.beta.grad) if affine else None)

    def running_stats(self) -> tuple[np.ndarray, np.ndarray] | None:
        if self.running_mean is None:
            return None
        return to_numpy(self.running_mean), to_numpy(self.running_var)

    def eval(self, x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return to_numpy(batch_norm(to_torch(x, self.dtype), self.gamma, self.beta, self.running_mean,
                                       self.running_var, spec=self.spec, training=False))


class TorchScratchBatchNorm(BatchNormAdapter):
    """BatchNorm in raw torch ops: any channel axis, every spec field honoured."""

    framework = "torch"
    impl = "scratch"
    native_axis = 1

    def realize(self, spec: BNSpec, dtype: np.dtype) -> BNSpec:
        torch_dtype(dtype)
        return spec

    def build(self, spec: BNSpec, *, ndim: int, channels: int, dtype: np.dtype, gamma: np.ndarray,
              beta: np.ndarray, use_defaults: bool) -> ScratchLayer:
        # A scratch layer has no defaults of its own: "defaults" are the spec it is given.
        return ScratchLayer(spec, channels, dtype, gamma, beta)


ADAPTER = TorchScratchBatchNorm
