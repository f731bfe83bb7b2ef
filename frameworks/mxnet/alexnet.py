"""AlexNet in MXNet Gluon: a hybridized nn.HybridSequential of the spec's layers, canonical parameters in and out.

Every framework folder's alexnet.py has the same three names: `AlexNet` (the framework's network),
`from_canonical` (canonical arrays -> the framework's form) and `to_canonical` (back; layout in
bnparity.reference.alexnet).

Gluon is channels-first with OIHW convolution kernels and (out, in) Dense weights, and its BatchNorm names
γ, β and the running statistics as the canonical layout does: conversion is a copy. BN is configured with
momentum = 1 − spec.bn.new_weight (Gluon's momentum weighs the old value); its running variance is the
biased σ²_B whatever the spec says (batch_norm.cc), the difference the model-parity suite measures.

GroupNorm: Gluon's nn.GroupNorm has one γ and one β per GROUP, shape (num_groups,) (mxnet/gluon/nn/
basic_layers.py:834-839), where the canonical layout (and torch, Flax) has them per channel. So a GroupNorm layer
here is `_GroupNorm`: nn.GroupNorm with its own γ = 1, β = 0 frozen, then a per-channel γ·x̂ + β. Its
center=False, scale=False do NOT drop γ and β: they only set grad_req "null"; hybrid_forward still passes both to
the operator (basic_layers.py:841), so they must stay at their initial ones and zeros. The operator needs at least
3 dimensions (group_norm.cc:45, "dshape.ndim() >= 3"): after a Dense layer the (N, F) input is reshaped to
(N, F, 1). Its ε is parsed as a float32 (ndarray/gen_op.py:1206, "eps : float"; BatchNorm's is a double).
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

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
    layer_of,
    layer_shapes,
    param_shapes,
)

from ._mx import gluon, nd
from .convert import framework_device, framework_dtype, framework_momentum, to_numpy

nn = gluon.nn


class _GroupNorm(gluon.HybridBlock):
    """GroupNorm with per-channel γ and β (canonical "gamma", "beta", shape (C,)) on (N, C, H, W) or (N, F).

    y = γ_c · x̂ + β_c, x̂ from nn.GroupNorm(G) whose per-group γ = 1 and β = 0 are frozen (see the module
    docstring)."""

    def __init__(self, groups: int, channels: int, eps: float, ndim: int) -> None:
        super().__init__()
        self._ndim = ndim  # of the input, with the batch axis: 4 after a Conv, 2 after a Dense
        with self.name_scope():
            self.norm = nn.GroupNorm(num_groups=groups, epsilon=eps, center=False, scale=False)
            self.gamma = self.params.get("gamma", shape=(channels,), init="ones")
            self.beta = self.params.get("beta", shape=(channels,), init="zeros")

    def hybrid_forward(self, F, x, gamma, beta):  # noqa: N803 (Gluon's signature)
        if self._ndim == 2:
            x_hat = F.reshape(self.norm(F.expand_dims(x, axis=2)), shape=(0, -1))  # (N, F, 1) -> (N, F)
        else:
            x_hat = self.norm(x)
        per_channel = (1, -1) + (1,) * (self._ndim - 2)
        return F.broadcast_add(F.broadcast_mul(x_hat, F.reshape(gamma, shape=per_channel)),
                               F.reshape(beta, shape=per_channel))  # y = γ x̂ + β


def _block(layer: Layer, shape: LayerShape, spec: AlexNetSpec, sync_devices: int | None = None) -> gluon.HybridBlock:
    if isinstance(layer, Conv):
        return nn.Conv2D(layer.out_channels, layer.kernel, strides=layer.stride, padding=layer.padding,
                         in_channels=shape.in_shape[0])
    if isinstance(layer, Dense):
        return nn.Dense(layer.out_features, in_units=shape.in_shape[0])
    if isinstance(layer, BatchNorm) and sync_devices is not None:
        return gluon.contrib.nn.SyncBatchNorm(num_devices=sync_devices, momentum=framework_momentum(spec.bn),
                                              epsilon=spec.bn.eps, in_channels=shape.in_shape[0])
    if isinstance(layer, BatchNorm):
        return nn.BatchNorm(axis=1, momentum=framework_momentum(spec.bn), epsilon=spec.bn.eps,
                            in_channels=shape.in_shape[0])
    if isinstance(layer, GroupNorm):
        gn = spec.gn_spec(layer)
        return _GroupNorm(gn.groups, shape.in_shape[0], gn.eps, ndim=1 + len(shape.in_shape))
    if isinstance(layer, ReLU):
        return nn.Activation("relu")
    if isinstance(layer, MaxPool):
        return nn.MaxPool2D(pool_size=layer.kernel, strides=layer.stride)
    if isinstance(layer, Flatten):
        return nn.Flatten()  # (C, H, W) order, as the canonical layout
    if isinstance(layer, Dropout):
        return nn.Dropout(layer.rate)
    raise TypeError(f"unknown layer {layer!r}")


class AlexNet(nn.HybridSequential):
    """The spec's AlexNet on NCHW input; `dropout_masks` replace its Dropout layers by multiplications.

    A gluon HybridSequential of the spec's layers. Without masks it runs as one hybridized graph (its own
    Dropout layers); with masks block by block (each child hybridized on its own), every Dropout replaced by a
    multiplication by its mask.

    Args:
        spec: the network.
        sync_devices: None (default): BN layers are nn.BatchNorm. R: gluon.contrib.nn.SyncBatchNorm(num_devices=R)
            (statistics synchronized over the R contexts it runs on; frameworks/mxnet/data_parallel.py).
    """

    def __init__(self, spec: AlexNetSpec, *, sync_devices: int | None = None) -> None:
        super().__init__()
        self.spec = spec
        self._blocks: dict[str, gluon.HybridBlock] = {}  # by layer name
        with self.name_scope():
            for s in layer_shapes(spec):
                block = _block(s.layer, s, spec, sync_devices)
                self._blocks[s.layer.name] = block
                self.add(block)

    def forward(self, x: nd.NDArray, dropout_masks: list[nd.NDArray] | None = None) -> nd.NDArray:
        if dropout_masks is None:
            return super().forward(x)
        masks = iter(dropout_masks)
        for block in self._blocks.values():
            x = x * next(masks) if isinstance(block, nn.Dropout) else block(x)
        return x

    def by_name(self) -> dict[str, gluon.Parameter]:
        """Canonical name -> the network's parameter or BN running statistic (shared, not copied)."""
        return {name: getattr(self._blocks[layer_of(name)], name.split(".", 1)[1])
                for name in param_shapes(self.spec)}

    def load(self, params: dict[str, np.ndarray]) -> None:
        """Set the canonical arrays given, in place (names the network does not have are ignored).

        Values are cast to the network's dtype (exactly, when they already have it)."""
        for name, parameter in self.by_name().items():
            if name in params:
                dtype = np.dtype(parameter.dtype)
                values = np.asarray(params[name], dtype=dtype)
                parameter.set_data(nd.array(values, ctx=parameter.list_ctx()[0], dtype=dtype))


def from_canonical(spec: AlexNetSpec, params: dict[str, np.ndarray], *, dtype: np.dtype,
                   device: str = "cpu") -> AlexNet:
    """`params` (canonical layout, checked) as this framework holds them, in `dtype` on `device`.

    Here: a hybridized (static_alloc) AlexNet block holding them as its parameters.
    """
    check_params(spec, params)
    dtype = framework_dtype(dtype)
    model = AlexNet(spec)
    model.initialize(ctx=framework_device(device))
    model.cast(dtype.name)
    model.load(params)
    model.hybridize(static_alloc=True)
    return model


def to_canonical(spec: AlexNetSpec, model: AlexNet, names: Iterable[str] | None = None) -> dict[str, np.ndarray]:
    """Canonical arrays (NumPy copies, in the model's dtype) from what `from_canonical` returns.

    Args:
        spec: the network.
        model: an AlexNet of `spec`.
        names: the canonical names wanted. Default: every parameter and BN running statistic of `spec`.
    """
    parameters = model.by_name()
    return {name: to_numpy(parameters[name].data()) for name in (param_shapes(spec) if names is None else names)}
