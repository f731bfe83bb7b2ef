"""PyTorch's BatchNorm adapters: torch.nn.BatchNorm1d/2d/3d (builtin) and BatchNorm in raw torch ops (scratch).

The builtin adapter configures the framework's own layer from the spec and never re-implements it. The scratch one
is teaching material: the formulas of bnparity.reference.batchnorm in torch ops, autograd supplying the backward
pass; it follows the spec exactly, so it can store either running-variance estimator, weigh momentum either way and
compute either variance algorithm.
"""

from __future__ import annotations

import numpy as np
import torch

from bnparity.frameworks.base import LayerAdapter, LayerSession, StepResult
from bnparity.reference.spec import BNSpec

from .convert import framework_dtype, framework_momentum, to_numpy, to_tensor
from .descriptor import DESCRIPTOR

_MODULE_OF_RANK = {2: torch.nn.BatchNorm1d, 3: torch.nn.BatchNorm1d, 4: torch.nn.BatchNorm2d,
                   5: torch.nn.BatchNorm3d}


class _BuiltinLayer(LayerSession):
    """A torch BatchNorm module in training mode, then eval mode."""

    def __init__(self, module: torch.nn.Module, dtype: np.dtype) -> None:
        self.module = module
        self.dtype = dtype

    def train_step(self, x: np.ndarray, dy: np.ndarray) -> StepResult:
        self.module.train()
        self.module.zero_grad(set_to_none=True)
        xt = to_tensor(x, self.dtype, requires_grad=True)
        y = self.module(xt)
        y.backward(to_tensor(dy, self.dtype))
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
            return to_numpy(self.module(to_tensor(x, self.dtype)))


class BuiltinBatchNorm(LayerAdapter):
    """torch.nn.BatchNorm{1,2,3}d: channels at axis 1, momentum weighs the new batch, unbiased running var."""

    framework = DESCRIPTOR.name
    normalization = "batchnorm"
    impl = "builtin"
    native_axis = DESCRIPTOR.native_axis

    def realize(self, spec: BNSpec, dtype: np.dtype) -> BNSpec:
        framework_dtype(dtype)  # raises Unsupported for a dtype torch has no float type for
        return spec.replace(running_var="unbiased", variance="two-pass")  # not configurable in torch

    def build(self, spec: BNSpec, *, shape: tuple[int, ...], dtype: np.dtype, gamma: np.ndarray,
              beta: np.ndarray, use_defaults: bool) -> _BuiltinLayer:
        ndim, channels = len(shape), shape[spec.axis]
        options = dict(affine=spec.affine, track_running_stats=spec.track_running_stats)
        if not use_defaults:
            options.update(eps=spec.eps, momentum=framework_momentum(spec))
        # Cast first, then set γ, β and the running statistics, so that float64 keeps every digit.
        module = _MODULE_OF_RANK[ndim](channels, **options).to(framework_dtype(dtype))
        with torch.no_grad():
            if spec.affine:
                module.weight.copy_(to_tensor(gamma, dtype))
                module.bias.copy_(to_tensor(beta, dtype))
            if spec.track_running_stats and not use_defaults:
                module.running_mean.fill_(spec.init_running_mean)
                module.running_var.fill_(spec.init_running_var)
        return _BuiltinLayer(module, dtype)


def batch_norm(x: torch.Tensor, gamma: torch.Tensor, beta: torch.Tensor, running_mean: torch.Tensor | None,
               running_var: torch.Tensor | None, *, spec: BNSpec, training: bool) -> torch.Tensor:
    """y = γ x̂ + β over channel axis `spec.axis`; in training, updates the running statistics in place."""
    axes = [a for a in range(x.dim()) if a != spec.axis % x.dim()]
    shape = [1] * x.dim()
    shape[spec.axis % x.dim()] = -1
    if training or running_mean is None:
        mu = x.mean(dim=axes)  # μ_B
        if spec.variance == "fast":
            var = ((x * x).mean(dim=axes) - mu * mu).clamp_min(0.0)  # σ²_B = max(0, E[x²] − μ_B²)
        else:
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


class _ScratchLayer(LayerSession):
    def __init__(self, spec: BNSpec, channels: int, dtype: np.dtype, gamma: np.ndarray, beta: np.ndarray) -> None:
        self.spec, self.dtype = spec, dtype
        self.gamma = to_tensor(gamma, dtype, requires_grad=spec.affine)
        self.beta = to_tensor(beta, dtype, requires_grad=spec.affine)
        if spec.track_running_stats:
            self.running_mean = to_tensor(np.full(channels, spec.init_running_mean), dtype)
            self.running_var = to_tensor(np.full(channels, spec.init_running_var), dtype)
        else:
            self.running_mean = self.running_var = None

    def train_step(self, x: np.ndarray, dy: np.ndarray) -> StepResult:
        for p in (self.gamma, self.beta):
            p.grad = None
        xt = to_tensor(x, self.dtype, requires_grad=True)
        y = batch_norm(xt, self.gamma, self.beta, self.running_mean, self.running_var,
                       spec=self.spec, training=True)
        y.backward(to_tensor(dy, self.dtype))
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
            return to_numpy(batch_norm(to_tensor(x, self.dtype), self.gamma, self.beta, self.running_mean,
                                       self.running_var, spec=self.spec, training=False))


class ScratchBatchNorm(LayerAdapter):
    """BatchNorm in raw torch ops: any channel axis, every spec field honoured."""

    framework = DESCRIPTOR.name
    normalization = "batchnorm"
    impl = "scratch"
    native_axis = DESCRIPTOR.native_axis

    def realize(self, spec: BNSpec, dtype: np.dtype) -> BNSpec:
        framework_dtype(dtype)
        return spec

    def build(self, spec: BNSpec, *, shape: tuple[int, ...], dtype: np.dtype, gamma: np.ndarray,
              beta: np.ndarray, use_defaults: bool) -> _ScratchLayer:
        channels = shape[spec.axis]
        # A scratch layer has no defaults of its own: "defaults" are the spec it is given.
        return _ScratchLayer(spec, channels, dtype, gamma, beta)
