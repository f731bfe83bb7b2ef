"""PyTorch's GroupNorm adapters: torch.nn.GroupNorm (builtin) and GroupNorm in raw torch ops (scratch).

The builtin adapter configures the framework's own layer from the spec and never re-implements it. It can hand
the layer its input in either memory format, because torch's CPU kernel has two code paths: an input in the default
(contiguous NCHW) memory format gets a two-pass variance; the same input in the channels_last memory format (NHWC
strides, what a channels-last conv net hands the layer) gets E[x²] − E[x]², which cancels on an offset input.
The scratch one is teaching material: the formulas of bnparity.reference.groupnorm in torch ops, autograd supplying
the backward pass; it follows the spec exactly (either variance algorithm, γ and β per channel or per group).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from bnparity.frameworks.base import LayerAdapter, Unsupported
from bnparity.reference.spec import GNSpec

from .convert import _mean_and_variance, _ModuleSession, framework_dtype, to_tensor
from .descriptor import DESCRIPTOR

_MEMORY_FORMATS = {"contiguous": torch.contiguous_format, "channels_last": torch.channels_last}


def _memory_format(name: str, ndim: int) -> torch.memory_format:
    """torch's memory format called `name` for a `ndim`-D input (channels_last is channels_last_3d in 5-D)."""
    if name == "channels_last" and ndim == 5:
        return torch.channels_last_3d
    return _MEMORY_FORMATS[name]


class BuiltinGroupNorm(LayerAdapter):
    """torch.nn.GroupNorm(G, C): channels at axis 1, γ and β per channel, num_groups required.

    Args:
        memory_format: the strides the input is handed over in: "contiguous" (NC..., the default) or
            "channels_last" (NHWC / NDHWC strides of the same NC... tensor; 4-D and 5-D inputs only).
    """

    framework = DESCRIPTOR.name
    normalization = "groupnorm"
    impl = "builtin"
    native_axis = DESCRIPTOR.native_axis
    # memory_format="channels_last" is a second code path (E[x²] − E[x]² on CPU), for 4-D and 5-D inputs only: its
    # build raises Unsupported on the others (a skip in the harness and the contract test).
    variants = {"contiguous": {}, "channels_last": {"memory_format": "channels_last"}}

    def __init__(self, *, memory_format: str = "contiguous") -> None:
        if memory_format not in _MEMORY_FORMATS:
            raise ValueError(f"memory_format must be one of {', '.join(_MEMORY_FORMATS)}. "
                             f"Received: {memory_format!r}")
        self.memory_format = memory_format

    def realize(self, spec: GNSpec, dtype: np.dtype) -> GNSpec:
        framework_dtype(dtype)  # raises Unsupported for a dtype torch has no float type for
        if spec.params == "group":
            raise Unsupported("torch: torch.nn.GroupNorm's γ and β are per channel, shape (C,) "
                              "(torch/nn/modules/normalization.py:316-318); per-group γ and β "
                              "(params='group') do not exist")
        # Not configurable: the CPU kernel's contiguous path computes a two-pass variance, its channels-last
        # path E[x²] − E[x]² (tests/test_torch_norms.py::test_groupnorm_channels_last_uses_the_fast_variance).
        return spec.replace(variance="fast" if self.memory_format == "channels_last" else "two-pass")

    def build(self, spec: GNSpec, *, shape: tuple[int, ...], dtype: np.dtype, gamma: np.ndarray,
              beta: np.ndarray, use_defaults: bool) -> _ModuleSession:
        n, channels, *spatial = shape
        if self.memory_format == "channels_last" and len(shape) not in (4, 5):
            raise Unsupported(f"torch: the channels_last memory format exists for 4-D and 5-D inputs only. "
                              f"Received: a {len(shape)}-D input")
        if n * channels // spec.groups * math.prod(spatial) == 1:
            raise Unsupported("torch: F.group_norm refuses an input whose N·C/G·(spatial size) is 1 "
                              "(torch/nn/functional.py:3038: 'Expected more than 1 value per channel')")
        options = dict(affine=spec.affine)
        if not use_defaults:
            options.update(eps=spec.eps)
        # Cast first, then set γ and β, so that float64 keeps every digit.
        module = torch.nn.GroupNorm(spec.groups, channels, **options).to(framework_dtype(dtype))
        with torch.no_grad():
            if spec.affine:
                module.weight.copy_(to_tensor(gamma, dtype))
                module.bias.copy_(to_tensor(beta, dtype))
        return _ModuleSession(module, dtype, memory_format=_memory_format(self.memory_format, len(shape)))


def group_norm(x: torch.Tensor, gamma: torch.Tensor | None, beta: torch.Tensor | None, *,
               spec: GNSpec) -> torch.Tensor:
    """y = γ x̂ + β, x̂ over each sample's group of C/G consecutive channels and every spatial position.

    Computed on the grouped view (N, G, C/G, *spatial) of x (channels moved from spec.axis to 1). γ and β (None:
    the layer has none) are per channel, shape (C,), or per group, shape (G,).
    """
    x = x.movedim(spec.axis, 1)
    n, channels, *spatial = x.shape
    xg = x.reshape(n, spec.groups, channels // spec.groups, *spatial)  # (N, G, C/G, *spatial)
    mu, var = _mean_and_variance(xg, list(range(2, xg.dim())), spec.variance)  # μ_ng, σ²_ng
    x_hat = (xg - mu) / torch.sqrt(var + spec.eps)  # x̂ = (x − μ_ng)/√(σ²_ng + ε)
    param_shape = (1, spec.groups, -1 if spec.params == "channel" else 1, *[1] * len(spatial))
    y = x_hat if gamma is None else gamma.view(param_shape) * x_hat  # γ x̂
    y = y if beta is None else y + beta.view(param_shape)  # + β
    return y.reshape(x.shape).movedim(1, spec.axis)


class _ScratchModule(torch.nn.Module):
    """group_norm as a torch.nn.Module: γ is `weight` and β `bias` (None when not affine)."""

    def __init__(self, spec: GNSpec, gamma: torch.Tensor, beta: torch.Tensor) -> None:
        super().__init__()
        self.spec = spec
        self.weight = torch.nn.Parameter(gamma) if spec.affine else None
        self.bias = torch.nn.Parameter(beta) if spec.affine else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return group_norm(x, self.weight, self.bias, spec=self.spec)


class ScratchGroupNorm(LayerAdapter):
    """GroupNorm in raw torch ops: every spec field honoured (variance "fast", params "group")."""

    framework = DESCRIPTOR.name
    normalization = "groupnorm"
    impl = "scratch"
    native_axis = DESCRIPTOR.native_axis

    def realize(self, spec: GNSpec, dtype: np.dtype) -> GNSpec:
        framework_dtype(dtype)
        return spec

    def build(self, spec: GNSpec, *, shape: tuple[int, ...], dtype: np.dtype, gamma: np.ndarray,
              beta: np.ndarray, use_defaults: bool) -> _ModuleSession:
        # A scratch layer has no defaults of its own: "defaults" are the spec it is given.
        return _ModuleSession(_ScratchModule(spec, to_tensor(gamma, dtype), to_tensor(beta, dtype)), dtype)
