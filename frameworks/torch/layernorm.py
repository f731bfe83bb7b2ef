"""PyTorch's LayerNorm adapters: torch.nn.LayerNorm (builtin) and LayerNorm in raw torch ops (scratch).

The builtin adapter configures the framework's own layer from the spec and never re-implements it. The scratch one
is teaching material: the formulas of bnparity.reference.layernorm in torch ops, autograd supplying the backward
pass; it follows the spec exactly (either variance algorithm, either shape of γ and β).
"""

from __future__ import annotations

import numpy as np
import torch

from bnparity.frameworks.base import LayerAdapter, Unsupported
from bnparity.reference.spec import LNSpec

from .convert import _mean_and_variance, _ModuleSession, framework_dtype, to_tensor
from .descriptor import DESCRIPTOR


class BuiltinLayerNorm(LayerAdapter):
    """torch.nn.LayerNorm(normalized_shape): statistics over the trailing axes, γ and β of normalized_shape."""

    framework = DESCRIPTOR.name
    normalization = "layernorm"
    impl = "builtin"
    native_axis = -1  # the normalized axes are the trailing ones

    def realize(self, spec: LNSpec, dtype: np.dtype) -> LNSpec:
        framework_dtype(dtype)  # raises Unsupported for a dtype torch has no float type for
        if spec.params == "feature" and spec.normalized_dims > 1:
            raise Unsupported("torch: torch.nn.LayerNorm's γ and β always have the shape of normalized_shape "
                              "(torch/nn/modules/normalization.py:206-212); one per last-axis feature over "
                              f"{spec.normalized_dims} normalized axes (params='feature') does not exist")
        return spec.replace(variance="two-pass")  # not configurable in torch

    def build(self, spec: LNSpec, *, shape: tuple[int, ...], dtype: np.dtype, gamma: np.ndarray,
              beta: np.ndarray, use_defaults: bool) -> _ModuleSession:
        normalized_shape = tuple(shape[len(shape) - spec.normalized_dims:])
        options = dict(elementwise_affine=spec.affine, bias=spec.bias)
        if not use_defaults:
            options.update(eps=spec.eps)
        # Cast first, then set γ and β, so that float64 keeps every digit.
        module = torch.nn.LayerNorm(normalized_shape, **options).to(framework_dtype(dtype))
        with torch.no_grad():
            if module.weight is not None:
                module.weight.copy_(to_tensor(gamma, dtype).reshape(normalized_shape))
            if module.bias is not None:
                module.bias.copy_(to_tensor(beta, dtype).reshape(normalized_shape))
        return _ModuleSession(module, dtype)


def layer_norm(x: torch.Tensor, gamma: torch.Tensor | None, beta: torch.Tensor | None, *,
               spec: LNSpec) -> torch.Tensor:
    """y = γ x̂ + β, x̂ over each sample's last `spec.normalized_dims` axes (γ or β None: the layer has none).

    γ and β align with the trailing axes: shape x.shape[-normalized_dims:] ("elementwise") or (x.shape[-1],)
    ("feature"); broadcasting does the rest.
    """
    dims = list(range(x.dim() - spec.normalized_dims, x.dim()))
    mu, var = _mean_and_variance(x, dims, spec.variance)  # μ, σ² of each sample
    x_hat = (x - mu) / torch.sqrt(var + spec.eps)  # x̂ = (x − μ)/√(σ² + ε)
    y = x_hat if gamma is None else gamma * x_hat  # γ x̂
    return y if beta is None else y + beta  # + β


class _ScratchModule(torch.nn.Module):
    """layer_norm as a torch.nn.Module: γ is `weight` and β `bias` (None when the spec has none)."""

    def __init__(self, spec: LNSpec, gamma: torch.Tensor, beta: torch.Tensor) -> None:
        super().__init__()
        self.spec = spec
        self.weight = torch.nn.Parameter(gamma) if spec.affine else None
        self.bias = torch.nn.Parameter(beta) if spec.affine and spec.bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return layer_norm(x, self.weight, self.bias, spec=self.spec)


class ScratchLayerNorm(LayerAdapter):
    """LayerNorm in raw torch ops: every spec field honoured (variance "fast", params "feature", bias off)."""

    framework = DESCRIPTOR.name
    normalization = "layernorm"
    impl = "scratch"
    native_axis = -1

    def realize(self, spec: LNSpec, dtype: np.dtype) -> LNSpec:
        framework_dtype(dtype)
        return spec

    def build(self, spec: LNSpec, *, shape: tuple[int, ...], dtype: np.dtype, gamma: np.ndarray,
              beta: np.ndarray, use_defaults: bool) -> _ModuleSession:
        # A scratch layer has no defaults of its own: "defaults" are the spec it is given.
        return _ModuleSession(_ScratchModule(spec, to_tensor(gamma, dtype), to_tensor(beta, dtype)), dtype)
