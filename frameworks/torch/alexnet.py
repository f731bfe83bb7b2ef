"""AlexNet in PyTorch: a torch.nn.Module of the spec's layers, canonical parameters in and out.

Every framework folder's alexnet.py has the same three names: `AlexNet` (the framework's network),
`from_canonical` (canonical arrays -> the framework's form) and `to_canonical` (back; layout in
bnparity.reference.alexnet).

Module names are the spec's layer names, so the state_dict keys are the canonical names except for BN's and
GN's γ and β, which torch calls "weight" and "bias". Layout is NCHW/OIHW and Linear weights are (out, in): the
canonical layout itself, so conversion is a copy. GroupNorm is torch.nn.GroupNorm(G, C, eps), per-channel γ and
β as the canonical layout; it takes the (N, F) output of a Linear layer as well as (N, C, H, W).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable

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
    GroupNorm,
    Layer,
    LayerShape,
    MaxPool,
    ReLU,
    check_params,
    layer_shapes,
    param_shapes,
)

from .convert import framework_device, framework_dtype, framework_momentum, to_numpy

_BN_NAMES = {"gamma": "weight", "beta": "bias", "running_mean": "running_mean", "running_var": "running_var"}


def _torch_key(name: str) -> str:
    """The state_dict key of a canonical name ('bn1.gamma' -> 'bn1.weight', 'gn1.beta' -> 'gn1.bias')."""
    layer, kind = name.split(".", 1)
    return f"{layer}.{_BN_NAMES.get(kind, kind)}" if layer.startswith(("bn", "gn")) else name


def _module(layer: Layer, shape: LayerShape, spec: AlexNetSpec) -> nn.Module:
    if isinstance(layer, Conv):
        return nn.Conv2d(shape.in_shape[0], layer.out_channels, layer.kernel, stride=layer.stride,
                         padding=layer.padding)
    if isinstance(layer, Dense):
        return nn.Linear(shape.in_shape[0], layer.out_features)
    if isinstance(layer, BatchNorm):
        cls = nn.BatchNorm2d if len(shape.in_shape) == 3 else nn.BatchNorm1d
        return cls(shape.in_shape[0], eps=spec.bn.eps, momentum=framework_momentum(spec.bn))
    if isinstance(layer, GroupNorm):
        gn = spec.gn_spec(layer)
        return nn.GroupNorm(gn.groups, shape.in_shape[0], eps=gn.eps)
    if isinstance(layer, ReLU):
        return nn.ReLU()
    if isinstance(layer, MaxPool):
        return nn.MaxPool2d(layer.kernel, stride=layer.stride)
    if isinstance(layer, Flatten):
        return nn.Flatten()
    if isinstance(layer, Dropout):
        return nn.Dropout(layer.rate)
    raise TypeError(f"unknown layer {layer!r}")


class AlexNet(nn.Module):
    """The spec's AlexNet on NCHW input; `dropout_masks` replace its Dropout layers by multiplications.

    A torch.nn.Module holding the spec's layers in a nn.Sequential (`layers`), named as the spec names them.

    Args:
        spec: the network (its BN must store the unbiased running variance, as torch's does).
    """

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

    def by_name(self) -> dict[str, torch.Tensor]:
        """Canonical name -> the network's parameter or BN running statistic (shared, not copied)."""
        state = dict(self.layers.named_parameters()) | dict(self.layers.named_buffers())
        return {name: state[_torch_key(name)] for name in param_shapes(self.spec)}

    def load(self, params: dict[str, np.ndarray]) -> None:
        """Set the canonical arrays given, in place (names the network does not have are ignored).

        Values are cast to the network's dtype (exactly, when they already have it)."""
        tensors = self.by_name()
        with torch.no_grad():
            for name, value in params.items():
                if name in tensors:
                    tensors[name].copy_(torch.from_numpy(np.array(value, dtype=np.float64)))


def from_canonical(spec: AlexNetSpec, params: dict[str, np.ndarray], *, dtype: np.dtype,
                   device: str = "cpu") -> AlexNet:
    """`params` (canonical layout, checked) as this framework holds them, in `dtype` on `device`.

    Here: an AlexNet module holding them as its parameters and BN buffers.
    """
    check_params(spec, params)
    model = AlexNet(spec).to(device=framework_device(device), dtype=framework_dtype(dtype))
    model.load(params)
    return model


def to_canonical(spec: AlexNetSpec, model: AlexNet, names: Iterable[str] | None = None) -> dict[str, np.ndarray]:
    """Canonical arrays (NumPy copies, in the model's dtype) from what `from_canonical` returns.

    Args:
        spec: the network.
        model: an AlexNet of `spec`.
        names: the canonical names wanted. Default: every parameter and BN running statistic of `spec`.
    """
    tensors = model.by_name()
    return {name: to_numpy(tensors[name]) for name in (param_shapes(spec) if names is None else names)}
