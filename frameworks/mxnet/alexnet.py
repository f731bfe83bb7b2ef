"""AlexNet in MXNet Gluon: a hybridized nn.HybridSequential of the spec's layers, canonical parameters in and out.

Gluon is channels-first with OIHW convolution kernels and (out, in) Dense weights, and its BatchNorm names
γ, β and the running statistics as the canonical layout does: conversion is a copy. BN is configured with
momentum = 1 − spec.bn.new_weight (Gluon's momentum weighs the old value); its running variance is the
biased σ²_B whatever the spec says (batch_norm.cc), the difference the model-parity suite measures.
"""

from __future__ import annotations

import numpy as np

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
    layer_of,
    layer_shapes,
    param_shapes,
)

from ._mx import gluon, mx, nd

nn = gluon.nn


def _block(layer: Layer, shape: LayerShape, spec: AlexNetSpec) -> gluon.HybridBlock:
    if isinstance(layer, Conv):
        return nn.Conv2D(layer.out_channels, layer.kernel, strides=layer.stride, padding=layer.padding,
                         in_channels=shape.in_shape[0])
    if isinstance(layer, Dense):
        return nn.Dense(layer.out_features, in_units=shape.in_shape[0])
    if isinstance(layer, BatchNorm):
        return nn.BatchNorm(axis=1, momentum=1.0 - spec.bn.new_weight, epsilon=spec.bn.eps,
                            in_channels=shape.in_shape[0])
    if isinstance(layer, ReLU):
        return nn.Activation("relu")
    if isinstance(layer, MaxPool):
        return nn.MaxPool2D(pool_size=layer.kernel, strides=layer.stride)
    if isinstance(layer, Flatten):
        return nn.Flatten()  # (C, H, W) order, as the canonical layout
    if isinstance(layer, Dropout):
        return nn.Dropout(layer.rate)
    raise TypeError(f"unknown layer {layer!r}")


class GluonAlexNet:
    """The hybridized network, its blocks by layer name, and a forward pass that can inject dropout masks.

    Args:
        spec: the network.
        params: canonical parameters (checked).
        ctx: the MXNet context.
        dtype: float32 or float64 (parameters, inputs and outputs).
    """

    def __init__(self, spec: AlexNetSpec, params: dict[str, np.ndarray], *, ctx: mx.Context,
                 dtype: str = "float32") -> None:
        check_params(spec, params)
        self.spec, self.ctx, self.dtype = spec, ctx, np.dtype(dtype)
        self.net = nn.HybridSequential()
        self.blocks: dict[str, gluon.HybridBlock] = {}
        with self.net.name_scope():
            for s in layer_shapes(spec):
                block = _block(s.layer, s, spec)
                self.blocks[s.layer.name] = block
                self.net.add(block)
        self.net.initialize(ctx=ctx)
        self.net.cast(self.dtype.name)
        self.load(params)
        self.net.hybridize(static_alloc=True)

    def parameter(self, name: str) -> gluon.Parameter:
        """The gluon Parameter of a canonical name ('bn1.gamma' -> the BN block's gamma)."""
        return getattr(self.blocks[layer_of(name)], name.split(".", 1)[1])

    def load(self, params: dict[str, np.ndarray]) -> None:
        """Set the canonical arrays given (names not in the network are ignored)."""
        for name in param_shapes(self.spec):
            if name in params:
                values = np.asarray(params[name], dtype=self.dtype)
                self.parameter(name).set_data(nd.array(values, ctx=self.ctx, dtype=self.dtype))

    def canonical(self) -> dict[str, np.ndarray]:
        """Parameters and BN running statistics, canonical layout, copies in the network's dtype."""
        return {name: self.parameter(name).data(self.ctx).asnumpy() for name in param_shapes(self.spec)}

    def __call__(self, x: nd.NDArray, dropout_masks: list[nd.NDArray] | None = None) -> nd.NDArray:
        """The logits. Without masks: the whole hybridized network (its own Dropout layers). With masks:
        block by block (each hybridized on its own), every Dropout replaced by a multiplication by its mask."""
        if dropout_masks is None:
            return self.net(x)
        masks = iter(dropout_masks)
        for block in self.blocks.values():
            x = x * next(masks) if isinstance(block, nn.Dropout) else block(x)
        return x
