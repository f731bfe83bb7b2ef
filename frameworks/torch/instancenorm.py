"""PyTorch's InstanceNorm adapters: torch.nn.InstanceNorm1d/2d/3d (builtin) and InstanceNorm in raw torch ops
(scratch).

The builtin adapter configures the framework's own layer from the spec and never re-implements it. The scratch one
is teaching material: the formulas of bnparity.reference.instancenorm in torch ops, autograd supplying the backward
pass; it follows the spec exactly, so it can store either running-variance estimator, weigh momentum either way
and compute either variance algorithm.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from bnparity.frameworks.base import LayerAdapter, Unsupported
from bnparity.reference.spec import INSpec

from .convert import _mean_and_variance, _ModuleSession, framework_dtype, framework_momentum, to_tensor
from .descriptor import DESCRIPTOR

# By rank: InstanceNorm1d takes (N, C, L), 2d (N, C, H, W), 3d (N, C, D, H, W). A 2-D input has no module:
# InstanceNorm1d reads (C, L) as ONE unbatched sample (torch/nn/modules/instancenorm.py:130-131, 207-208).
_MODULE_OF_RANK = {3: torch.nn.InstanceNorm1d, 4: torch.nn.InstanceNorm2d, 5: torch.nn.InstanceNorm3d}


class BuiltinInstanceNorm(LayerAdapter):
    """torch.nn.InstanceNorm{1,2,3}d: channels at axis 1, momentum weighs the new batch, unbiased running var."""

    framework = DESCRIPTOR.name
    normalization = "instancenorm"
    impl = "builtin"
    native_axis = DESCRIPTOR.native_axis

    def realize(self, spec: INSpec, dtype: np.dtype) -> INSpec:
        framework_dtype(dtype)  # raises Unsupported for a dtype torch has no float type for
        # Not configurable: batch_norm's unbiased running variance and two-pass σ² on the (1, N·C, ...) view.
        return spec.replace(running_var="unbiased", variance="two-pass")

    def build(self, spec: INSpec, *, shape: tuple[int, ...], dtype: np.dtype, gamma: np.ndarray,
              beta: np.ndarray, use_defaults: bool) -> _ModuleSession:
        if len(shape) not in _MODULE_OF_RANK:
            raise Unsupported(f"torch: no InstanceNorm for a {len(shape)}-D input: InstanceNorm1d reads a 2-D "
                              "input as one unbatched (C, L) sample (torch/nn/modules/instancenorm.py:130-131)")
        if math.prod(shape[2:]) == 1:
            raise Unsupported("torch: F.instance_norm refuses one spatial value in training "
                              "(torch/nn/functional.py:2911-2919: 'Expected more than 1 spatial element')")
        options = dict(affine=spec.affine, track_running_stats=spec.track_running_stats)
        if not use_defaults:
            options.update(eps=spec.eps, momentum=framework_momentum(spec))
        # Cast first, then set γ, β and the running statistics, so that float64 keeps every digit.
        module = _MODULE_OF_RANK[len(shape)](shape[1], **options).to(framework_dtype(dtype))
        with torch.no_grad():
            if spec.affine:
                module.weight.copy_(to_tensor(gamma, dtype))
                module.bias.copy_(to_tensor(beta, dtype))
            if spec.track_running_stats and not use_defaults:
                module.running_mean.fill_(spec.init_running_mean)
                module.running_var.fill_(spec.init_running_var)
        return _ModuleSession(module, dtype)


def instance_norm(x: torch.Tensor, gamma: torch.Tensor | None, beta: torch.Tensor | None,
                  running_mean: torch.Tensor | None, running_var: torch.Tensor | None, *, spec: INSpec,
                  training: bool) -> torch.Tensor:
    """y = γ x̂ + β, x̂ over each sample's channel (its spatial positions); channels at spec.axis.

    In training, updates the running statistics (if kept) in place with the batch's average of the per-sample
    statistics; in eval, normalizes with them (if kept). γ and β (None: not affine) have shape (C,).
    """
    c = spec.axis % x.dim()
    spatial = [a for a in range(1, x.dim()) if a != c]  # one sample's channel: every axis but N and C
    if not spatial:
        raise ValueError(f"InstanceNorm needs a spatial axis: expected a 3-D to 5-D input. Received: x.ndim={x.dim()}")
    shape = [1] * x.dim()
    shape[c] = -1  # a (C,) vector, broadcast along the channel axis
    if training or running_mean is None:
        mu, var = _mean_and_variance(x, spatial, spec.variance)  # μ_nc, σ²_nc
        if training and running_mean is not None:
            m = math.prod(x.shape[a] for a in spatial)
            stored_var = var * (m / (m - 1) if m > 1 else float("nan")) if spec.running_var == "unbiased" else var
            w = spec.new_weight  # weight of the new statistic
            per_channel = [a for a in range(x.dim()) if a != c]
            with torch.no_grad():
                running_mean.mul_(1 - w).add_(w * mu.mean(dim=per_channel))  # with 1/N Σ_n μ_nc
                running_var.mul_(1 - w).add_(w * stored_var.mean(dim=per_channel))  # with 1/N Σ_n σ²_nc
    else:
        mu, var = running_mean.view(shape), running_var.view(shape)
    x_hat = (x - mu) / torch.sqrt(var + spec.eps)  # x̂
    y = x_hat if gamma is None else gamma.view(shape) * x_hat  # γ x̂
    return y if beta is None else y + beta.view(shape)  # + β


class _ScratchModule(torch.nn.Module):
    """instance_norm as a torch.nn.Module: γ `weight`, β `bias` (None when not affine), running statistics as the
    buffers `running_mean` and `running_var` (None when not kept)."""

    def __init__(self, spec: INSpec, gamma: torch.Tensor, beta: torch.Tensor) -> None:
        super().__init__()
        self.spec = spec
        self.weight = torch.nn.Parameter(gamma) if spec.affine else None
        self.bias = torch.nn.Parameter(beta) if spec.affine else None
        if spec.track_running_stats:
            self.register_buffer("running_mean", torch.full_like(gamma, spec.init_running_mean))
            self.register_buffer("running_var", torch.full_like(gamma, spec.init_running_var))
        else:
            self.running_mean = self.running_var = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return instance_norm(x, self.weight, self.bias, self.running_mean, self.running_var, spec=self.spec,
                             training=self.training)


class ScratchInstanceNorm(LayerAdapter):
    """InstanceNorm in raw torch ops: any channel axis, every spec field honoured."""

    framework = DESCRIPTOR.name
    normalization = "instancenorm"
    impl = "scratch"
    native_axis = DESCRIPTOR.native_axis

    def realize(self, spec: INSpec, dtype: np.dtype) -> INSpec:
        framework_dtype(dtype)
        return spec

    def build(self, spec: INSpec, *, shape: tuple[int, ...], dtype: np.dtype, gamma: np.ndarray,
              beta: np.ndarray, use_defaults: bool) -> _ModuleSession:
        # A scratch layer has no defaults of its own: "defaults" are the spec it is given.
        return _ModuleSession(_ScratchModule(spec, to_tensor(gamma, dtype), to_tensor(beta, dtype)), dtype)
