"""MXNet's LayerNorm adapters: mxnet.gluon.nn.LayerNorm (builtin) and LayerNorm in raw mx.nd ops (scratch).

Builtin: gluon.nn.LayerNorm normalizes over ONE axis (its `axis`, -1 here), γ and β of shape (C,) of that axis; it
computes σ² in two passes and stores ε as a float32 (see convention.py). `center=False` / `scale=False` only
freeze β / γ (grad_req 'null'): the operator still adds β and multiplies by γ, so they are set to 0 / 1.
Training and eval compute the same thing; no running statistics.

Scratch (teaching material): the formulas of bnparity.reference.layernorm in mx.nd ops, mx.autograd supplying the
backward; it follows the spec exactly (several normalized axes, either shape of γ, either variance algorithm).
"""

from __future__ import annotations

import numpy as np

from bnparity.frameworks.base import LayerAdapter, Unsupported
from bnparity.reference.spec import LNSpec

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


class BuiltinLayerNorm(LayerAdapter):
    """mxnet.gluon.nn.LayerNorm(axis=-1): statistics over the last axis only, γ and β of shape (C,).

    Args:
        hybridize: run the block hybridized (a cached symbolic graph) rather than imperatively.
    """

    framework = DESCRIPTOR.name
    normalization = "layernorm"
    impl = "builtin"
    native_axis = -1  # the normalized axis is the last one
    variants = {"hybridized": {}, "imperative": {"hybridize": False}}

    def __init__(self, *, hybridize: bool = True) -> None:
        self.hybridize = hybridize

    def realize(self, spec: LNSpec, dtype: np.dtype) -> LNSpec:
        _check_kernel_dtype("gluon.nn.LayerNorm", dtype, BUILTIN_DTYPES)
        if spec.normalized_dims > 1:
            raise Unsupported("mxnet: gluon.nn.LayerNorm normalizes over one axis (its `axis` is an int, "
                              "mxnet/gluon/nn/basic_layers.py:692); normalized_dims="
                              f"{spec.normalized_dims} trailing axes cannot be configured")
        # Not configurable: σ² is always two-pass, ε is stored as a float32.
        return spec.replace(variance="two-pass", eps=_operator_eps(spec.eps))

    def build(self, spec: LNSpec, *, shape: tuple[int, ...], dtype: np.dtype, gamma: np.ndarray,
              beta: np.ndarray, use_defaults: bool) -> _BlockSession:
        self.realize(spec, dtype)  # raises Unsupported with the reason
        learns_beta = spec.affine and spec.bias
        options = dict(axis=-1, center=learns_beta, scale=spec.affine, in_channels=shape[-1])
        if not use_defaults:
            options.update(epsilon=spec.eps)
        block = gluon.nn.LayerNorm(**options)
        block.initialize(ctx=mx.cpu())
        # Cast first, then set γ and β, so that float64 keeps every digit. The operator always adds β: 0 when
        # the layer has none.
        mx_dtype = framework_dtype(dtype)
        block.cast(mx_dtype)
        block.gamma.set_data(to_tensor(gamma, mx_dtype))
        block.beta.set_data(to_tensor(beta if spec.bias else np.zeros_like(beta), mx_dtype))
        if self.hybridize:
            block.hybridize(static_alloc=True)
        return _BlockSession(block, dtype)


def layer_norm(x: nd.NDArray, gamma: nd.NDArray | None, beta: nd.NDArray | None, *, spec: LNSpec) -> nd.NDArray:
    """y = γ x̂ + β, x̂ over each sample's last `spec.normalized_dims` axes (γ or β None: the layer has none).

    γ and β align with the trailing axes: shape x.shape[-normalized_dims:] ("elementwise") or (x.shape[-1],)
    ("feature"), broadcast over the leading axes.
    """
    axes = tuple(range(x.ndim - spec.normalized_dims, x.ndim))
    mu, var = _mean_and_variance(x, axes, spec.variance)  # μ, σ² of each sample
    y = nd.broadcast_div(nd.broadcast_sub(x, mu), nd.sqrt(var + spec.eps))  # x̂ = (x − μ)/√(σ² + ε)
    if gamma is not None:
        y = nd.broadcast_mul(gamma.reshape((1,) * (x.ndim - gamma.ndim) + gamma.shape), y)  # γ x̂
    if beta is not None:
        y = nd.broadcast_add(y, beta.reshape((1,) * (x.ndim - beta.ndim) + beta.shape))  # + β
    return y


class ScratchLayerNorm(LayerAdapter):
    """LayerNorm in raw mx.nd ops: every spec field honoured (normalized_dims, params, bias, variance)."""

    framework = DESCRIPTOR.name
    normalization = "layernorm"
    impl = "scratch"
    native_axis = -1

    def realize(self, spec: LNSpec, dtype: np.dtype) -> LNSpec:
        framework_dtype(dtype)
        return spec

    def build(self, spec: LNSpec, *, shape: tuple[int, ...], dtype: np.dtype, gamma: np.ndarray,
              beta: np.ndarray, use_defaults: bool) -> _ScratchSession:
        # A scratch layer has no defaults of its own: "defaults" are the spec it is given.
        return _ScratchSession(lambda x, g, b: layer_norm(x, g, b, spec=spec), dtype=dtype,
                               gamma=gamma if spec.affine else None,
                               beta=beta if spec.affine and spec.bias else None)
