"""PyTorch's RMSNorm adapters: torch.nn.RMSNorm (builtin) and RMSNorm in raw torch ops (scratch).

The builtin adapter configures the framework's own layer from the spec and never re-implements it; at its
defaults (eps=None) ε is the machine epsilon of the computation type, float32's for float16 and bfloat16 inputs
(torch/nn/modules/normalization.py:368-371, torch/_decomp/decompositions.py:1957-1966). The scratch one is
teaching material: the formulas of bnparity.reference.rmsnorm in torch ops, autograd supplying the backward pass;
it follows the spec exactly (either shape of γ).
"""

from __future__ import annotations

import numpy as np
import torch

from bnparity.frameworks.base import LayerAdapter, Unsupported
from bnparity.reference.spec import RMSSpec

from .convert import _ModuleSession, framework_dtype, to_tensor
from .descriptor import DESCRIPTOR


class BuiltinRMSNorm(LayerAdapter):
    """torch.nn.RMSNorm(normalized_shape): y = γ·x/√(mean(x²) + ε) over the trailing axes, γ of normalized_shape."""

    framework = DESCRIPTOR.name
    normalization = "rmsnorm"
    impl = "builtin"
    native_axis = -1  # the normalized axes are the trailing ones

    def realize(self, spec: RMSSpec, dtype: np.dtype) -> RMSSpec:
        framework_dtype(dtype)  # raises Unsupported for a dtype torch has no float type for
        if spec.params == "feature" and spec.normalized_dims > 1:
            raise Unsupported("torch: torch.nn.RMSNorm's γ always has the shape of normalized_shape "
                              "(torch/nn/modules/normalization.py:408-411); one per last-axis feature over "
                              f"{spec.normalized_dims} normalized axes (params='feature') does not exist")
        return spec

    def build(self, spec: RMSSpec, *, shape: tuple[int, ...], dtype: np.dtype, gamma: np.ndarray,
              beta: np.ndarray, use_defaults: bool) -> _ModuleSession:
        normalized_shape = tuple(shape[len(shape) - spec.normalized_dims:])
        options = dict(elementwise_affine=spec.affine)
        if not use_defaults:  # at its defaults eps=None: the machine epsilon of the computation type
            options.update(eps=spec.eps)
        # Cast first, then set γ, so that float64 keeps every digit. There is no β.
        module = torch.nn.RMSNorm(normalized_shape, **options).to(framework_dtype(dtype))
        with torch.no_grad():
            if module.weight is not None:
                module.weight.copy_(to_tensor(gamma, dtype).reshape(normalized_shape))
        return _ModuleSession(module, dtype)


def rms_norm(x: torch.Tensor, gamma: torch.Tensor | None, *, spec: RMSSpec) -> torch.Tensor:
    """y = γ x̂, x̂ = x/√(mean(x²) + ε) over each sample's last `spec.normalized_dims` axes (γ None: not affine).

    γ aligns with the trailing axes: shape x.shape[-normalized_dims:] ("elementwise") or (x.shape[-1],)
    ("feature"). No mean is subtracted and there is no β.
    """
    dims = list(range(x.dim() - spec.normalized_dims, x.dim()))
    rms = torch.sqrt((x * x).mean(dim=dims, keepdim=True) + spec.eps)  # RMS(x) = √(mean(x²) + ε)
    x_hat = x / rms  # x̂ = x / RMS(x)
    return x_hat if gamma is None else gamma * x_hat  # y = γ x̂


class _ScratchModule(torch.nn.Module):
    """rms_norm as a torch.nn.Module: γ is `weight` (None when not affine); there is no β."""

    def __init__(self, spec: RMSSpec, gamma: torch.Tensor) -> None:
        super().__init__()
        self.spec = spec
        self.weight = torch.nn.Parameter(gamma) if spec.affine else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return rms_norm(x, self.weight, spec=self.spec)


class ScratchRMSNorm(LayerAdapter):
    """RMSNorm in raw torch ops: every spec field honoured (params "feature" too)."""

    framework = DESCRIPTOR.name
    normalization = "rmsnorm"
    impl = "scratch"
    native_axis = -1

    def realize(self, spec: RMSSpec, dtype: np.dtype) -> RMSSpec:
        framework_dtype(dtype)
        return spec

    def build(self, spec: RMSSpec, *, shape: tuple[int, ...], dtype: np.dtype, gamma: np.ndarray,
              beta: np.ndarray, use_defaults: bool) -> _ModuleSession:
        # A scratch layer has no defaults of its own: "defaults" are the spec it is given.
        return _ModuleSession(_ScratchModule(spec, to_tensor(gamma, dtype)), dtype)
