"""AlexNet in PyTorch: a torch.nn.Sequential of the spec's layers, canonical parameters in and out.

Module names are the spec's layer names, so the state_dict keys are the canonical names except for BN's
γ and β, which torch calls "weight" and "bias". Layout is NCHW/OIHW and Linear weights are (out, in): the
canonical layout itself, so conversion is a copy.
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np
import torch
from torch import nn

from bnparity.reference.alexnet import (
    AlexNetSpec,
    BatchNorm,
    Conv,
    Dense,
    Dropout,
    Flatten,
    Layer,
    LayerShape,
    MaxPool,
    ReLU,
    check_params,
    layer_shapes,
    param_shapes,
)

_BN_NAMES = {"gamma": "weight", "beta": "bias", "running_mean": "running_mean", "running_var": "running_var"}


def torch_name(name: str) -> str:
    """The state_dict key of a canonical name ('bn1.gamma' -> 'bn1.weight')."""
    layer, kind = name.split(".", 1)
    return f"{layer}.{_BN_NAMES.get(kind, kind)}" if layer.startswith("bn") else name


def _module(layer: Layer, shape: LayerShape, spec: AlexNetSpec) -> nn.Module:
    if isinstance(layer, Conv):
        return nn.Conv2d(shape.in_shape[0], layer.out_channels, layer.kernel, stride=layer.stride,
                         padding=layer.padding)
    if isinstance(layer, Dense):
        return nn.Linear(shape.in_shape[0], layer.out_features)
    if isinstance(layer, BatchNorm):
        cls = nn.BatchNorm2d if len(shape.in_shape) == 3 else nn.BatchNorm1d
        # torch's momentum is the weight of the new batch statistic.
        return cls(shape.in_shape[0], eps=spec.bn.eps, momentum=spec.bn.new_weight)
    if isinstance(layer, ReLU):
        return nn.ReLU()
    if isinstance(layer, MaxPool):
        return nn.MaxPool2d(layer.kernel, stride=layer.stride)
    if isinstance(layer, Flatten):
        return nn.Flatten()
    if isinstance(layer, Dropout):
        return nn.Dropout(layer.rate)
    raise TypeError(f"unknown layer {layer!r}")


class TorchAlexNet(nn.Module):
    """The spec's layers in a nn.Sequential; `forward` can replace dropout by injected masks."""

    def __init__(self, spec: AlexNetSpec) -> None:
        super().__init__()
        if spec.bn.running_var != "unbiased":
            raise ValueError(f"torch's BatchNorm stores the unbiased running variance; the spec asks for "
                             f"{spec.bn.running_var!r}")
        self.spec = spec
        self.layers = nn.Sequential(OrderedDict(
            (s.layer.name, _module(s.layer, s, spec)) for s in layer_shapes(spec)))

    def forward(self, x: torch.Tensor, dropout_masks: list[torch.Tensor] | None = None) -> torch.Tensor:
        if dropout_masks is None:
            return self.layers(x)
        masks = iter(dropout_masks)
        for module in self.layers:
            x = x * next(masks) if isinstance(module, nn.Dropout) else module(x)
        return x


def tensors_by_name(model: TorchAlexNet) -> dict[str, torch.Tensor]:
    """Canonical name -> the model's parameter or buffer tensor (shared, not copied)."""
    state = dict(model.layers.named_parameters()) | dict(model.layers.named_buffers())
    return {name: state[torch_name(name)] for name in param_shapes(model.spec)}


def build_model(spec: AlexNetSpec, params: dict[str, np.ndarray], *, device: torch.device,
                dtype: torch.dtype = torch.float32) -> TorchAlexNet:
    """A TorchAlexNet in `dtype` on `device` holding `params` (canonical layout, checked)."""
    check_params(spec, params)
    model = TorchAlexNet(spec).to(device=device, dtype=dtype)
    load_canonical(model, params)
    return model


def load_canonical(model: TorchAlexNet, params: dict[str, np.ndarray]) -> None:
    """Copy canonical arrays into the model's parameters and BN buffers (names not given are left as they are).

    Values are cast to the model's dtype (exactly, when they already have it)."""
    tensors = tensors_by_name(model)
    with torch.no_grad():
        for name, value in params.items():
            if name in tensors:
                tensors[name].copy_(torch.from_numpy(np.array(value, dtype=np.float64)))


def canonical_params(model: TorchAlexNet) -> dict[str, np.ndarray]:
    """The model's parameters and BN running statistics, canonical layout, copies in the model's dtype."""
    return {name: t.detach().cpu().numpy().copy() for name, t in tensors_by_name(model).items()}
