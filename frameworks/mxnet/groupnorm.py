"""MXNet's GroupNorm adapters: mxnet.gluon.nn.GroupNorm (builtin) and GroupNorm in raw mx.nd ops (scratch).

Builtin: gluon.nn.GroupNorm(num_groups) takes (N, C, ...) inputs of rank 3 or more, and its γ and β are one per
GROUP, shape (num_groups,) (mxnet/gluon/nn/basic_layers.py:834-839), not one per channel as in PyTorch and Flax:
GNSpec(params="group") is what it computes, params="channel" with affine cannot be configured. It computes σ² in
two passes and stores ε as a float32 (see convention.py). `center=False` / `scale=False` only freeze β / γ: the
operator still adds β and multiplies by γ, so they are set to 0 / 1. No running statistics.

Scratch (teaching material): the formulas of bnparity.reference.groupnorm in mx.nd ops on channels-first input,
mx.autograd supplying the backward; either shape of γ and β, either variance algorithm, any rank from 2.
"""

from __future__ import annotations

import numpy as np

from bnparity.frameworks.base import LayerAdapter, Unsupported
from bnparity.reference.spec import GNSpec

from ._mx import gluon, mx, nd
from .convert import (
    _BlockSession,
    _check_kernel_dtype,
    _mean_and_variance,
    _operator_eps,
    _ScratchSession,
    framework_dtype,
    to_tensor,
)
from .descriptor import DESCRIPTOR

# The dtypes the operator has a CPU kernel for (bfloat16: "MXNetError: Unknown type enum 12").
BUILTIN_DTYPES = ("float64", "float32", "float16")


class BuiltinGroupNorm(LayerAdapter):
    """mxnet.gluon.nn.GroupNorm(num_groups): channels at axis 1, γ and β one per group.

    Args:
        hybridize: run the block hybridized (a cached symbolic graph) rather than imperatively.
    """

    framework = DESCRIPTOR.name
    normalization = "groupnorm"
    impl = "builtin"
    native_axis = DESCRIPTOR.native_axis
    variants = {"hybridized": {}, "imperative": {"hybridize": False}}

    def __init__(self, *, hybridize: bool = True) -> None:
        self.hybridize = hybridize

    def realize(self, spec: GNSpec, dtype: np.dtype) -> GNSpec:
        _check_kernel_dtype("gluon.nn.GroupNorm", dtype, BUILTIN_DTYPES)
        if spec.affine and spec.params == "channel":
            raise Unsupported("mxnet: gluon.nn.GroupNorm's γ and β are one per group, shape (num_groups,) "
                              "(mxnet/gluon/nn/basic_layers.py:834-839); per-channel γ and β "
                              "(params='channel') cannot be configured")
        # Not configurable: σ² is always two-pass, ε is stored as a float32.
        return spec.replace(variance="two-pass", eps=_operator_eps(spec.eps))

    def build(self, spec: GNSpec, *, shape: tuple[int, ...], dtype: np.dtype, gamma: np.ndarray,
              beta: np.ndarray, use_defaults: bool) -> _BlockSession:
        self.realize(spec, dtype)  # raises Unsupported with the reason
        if len(shape) < 3:
            raise Unsupported(f"mxnet: gluon.nn.GroupNorm needs an (N, C, ...) input of rank 3 or more "
                              f"(the operator checks dshape.ndim() >= 3). Received: a {len(shape)}-D input")
        options = dict(num_groups=spec.groups, center=spec.affine, scale=spec.affine)
        if not use_defaults:
            options.update(epsilon=spec.eps)
        block = gluon.nn.GroupNorm(**options)
        block.initialize(ctx=mx.cpu())
        if not spec.affine:  # the operator still multiplies by γ and adds β, shape (G,): 1 and 0
            gamma, beta = np.ones(spec.groups), np.zeros(spec.groups)
        # Cast first, then set γ and β, so that float64 keeps every digit.
        mx_dtype = framework_dtype(dtype)
        block.cast(mx_dtype)
        block.gamma.set_data(to_tensor(gamma, mx_dtype))
        block.beta.set_data(to_tensor(beta, mx_dtype))
        if self.hybridize:
            block.hybridize(static_alloc=True)
        return _BlockSession(block, dtype)


def group_norm(x: nd.NDArray, gamma: nd.NDArray | None, beta: nd.NDArray | None, *, spec: GNSpec) -> nd.NDArray:
    """y = γ x̂ + β for channels-first x (N, C, ...), statistics per sample over each group of C/G consecutive
    channels and every position (γ, β None: the layer has none; shape (C,) or (G,) by spec.params)."""
    n, channels = x.shape[:2]
    xg = x.reshape((n, spec.groups, -1))  # (N, G, C/G · positions): one group's values on the last axis
    mu, var = _mean_and_variance(xg, (2,), spec.variance)  # μ_ng, σ²_ng
    x_hat = nd.broadcast_div(nd.broadcast_sub(xg, mu), nd.sqrt(var + spec.eps))  # x̂ = (x − μ)/√(σ² + ε)
    if spec.params == "channel":  # γ_c, β_c: back to (N, C, ...), parameters broadcast along axis 1
        x_hat = x_hat.reshape(x.shape)
        param_shape = (1, channels) + (1,) * (x.ndim - 2)
    else:  # γ_g, β_g: one value for all of a group's channels, in the grouped view
        param_shape = (1, spec.groups, 1)
    y = x_hat if gamma is None else nd.broadcast_mul(gamma.reshape(param_shape), x_hat)  # γ x̂
    y = y if beta is None else nd.broadcast_add(y, beta.reshape(param_shape))  # + β
    return y.reshape(x.shape)


class ScratchGroupNorm(LayerAdapter):
    """GroupNorm in raw mx.nd ops: every spec field honoured (params "channel" or "group", variance, rank 2)."""

    framework = DESCRIPTOR.name
    normalization = "groupnorm"
    impl = "scratch"
    native_axis = DESCRIPTOR.native_axis

    def realize(self, spec: GNSpec, dtype: np.dtype) -> GNSpec:
        framework_dtype(dtype)
        return spec

    def build(self, spec: GNSpec, *, shape: tuple[int, ...], dtype: np.dtype, gamma: np.ndarray,
              beta: np.ndarray, use_defaults: bool) -> _ScratchSession:
        spec.param_shape(shape)  # raises ValueError when the groups do not divide the channels
        # A scratch layer has no defaults of its own: "defaults" are the spec it is given.
        return _ScratchSession(lambda x, g, b: group_norm(x, g, b, spec=spec), dtype=dtype,
                               gamma=gamma if spec.affine else None, beta=beta if spec.affine else None)
