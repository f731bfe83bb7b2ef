"""MXNet's InstanceNorm adapters: mxnet.gluon.nn.InstanceNorm (builtin) and InstanceNorm in raw mx.nd ops (scratch).

Builtin: gluon.nn.InstanceNorm runs the legacy InstanceNorm operator, which has a float32 kernel only (its
InferType accepts the default type alone: include/mxnet/operator.h:226-227), takes inputs of rank 3 or more and
keeps no running statistics: eval mode normalizes with the eval input's own statistics, as in training. Its
defaults are center=True, scale=False (β learned, γ frozen); `scale=False` / `center=False` only freeze γ / β,
the operator still multiplies by γ and adds β, so they are set to 1 / 0. The docstrings' "/ (√Var + ε)" is not
what it computes: ε is added to σ² under the square root, as everywhere else (see convention.py).

Scratch (teaching material): the formulas of bnparity.reference.instancenorm in mx.nd ops on channels-first input,
mx.autograd supplying the backward; it can keep running statistics (either estimator, momentum either way) and
computes σ² either way.
"""

from __future__ import annotations

import numpy as np

from bnparity.frameworks.base import LayerAdapter, LayerSession, StepResult, Unsupported
from bnparity.reference.spec import INSpec

from ._mx import autograd, gluon, mx, nd
from .convert import (
    _BlockSession,
    _check_kernel_dtype,
    _mean_and_variance,
    _operator_eps,
    framework_dtype,
    to_numpy,
    to_tensor,
)
from .descriptor import DESCRIPTOR

BUILTIN_DTYPES = ("float32",)  # float64: "Unsupported data type 1", float16: 2, bfloat16: 12


def _spatial_axes(ndim: int) -> tuple[int, ...]:
    """The axes of a channels-first input one sample's channel statistics run over: every position."""
    if ndim < 3:
        raise ValueError(f"InstanceNorm needs a spatial axis: expected a 3-D to 5-D input. Received: x.ndim={ndim}")
    return tuple(range(2, ndim))


class BuiltinInstanceNorm(LayerAdapter):
    """mxnet.gluon.nn.InstanceNorm(axis=1): float32 only, no running statistics.

    Args:
        hybridize: run the block hybridized (a cached symbolic graph) rather than imperatively.
    """

    framework = DESCRIPTOR.name
    normalization = "instancenorm"
    impl = "builtin"
    native_axis = DESCRIPTOR.native_axis
    variants = {"hybridized": {}, "imperative": {"hybridize": False}}

    def __init__(self, *, hybridize: bool = True) -> None:
        self.hybridize = hybridize

    def realize(self, spec: INSpec, dtype: np.dtype) -> INSpec:
        _check_kernel_dtype("gluon.nn.InstanceNorm", dtype, BUILTIN_DTYPES)
        if spec.track_running_stats:
            raise Unsupported("mxnet: gluon.nn.InstanceNorm keeps no running statistics (its only parameters "
                              "are gamma and beta, mxnet/gluon/nn/basic_layers.py:655-660); eval mode uses the "
                              "input's own statistics, so track_running_stats=True cannot be configured")
        # Not configurable: σ² is always two-pass, ε is stored as a float32.
        return spec.replace(variance="two-pass", eps=_operator_eps(spec.eps))

    def build(self, spec: INSpec, *, shape: tuple[int, ...], dtype: np.dtype, gamma: np.ndarray,
              beta: np.ndarray, use_defaults: bool) -> _BlockSession:
        self.realize(spec, dtype)  # raises Unsupported with the reason
        if len(shape) < 3:
            raise Unsupported("mxnet: gluon.nn.InstanceNorm needs an input of rank 3 or more (the operator: "
                              f"'InstanceNorm only supports input tensors of rank >= 3'). Received: a "
                              f"{len(shape)}-D input")
        options = dict(axis=1, center=spec.affine, scale=spec.affine, in_channels=shape[1])
        if not use_defaults:
            options.update(epsilon=spec.eps)
        block = gluon.nn.InstanceNorm(**options)
        block.initialize(ctx=mx.cpu())
        mx_dtype = framework_dtype(dtype)
        block.cast(mx_dtype)
        block.gamma.set_data(to_tensor(gamma, mx_dtype))  # 1 when not affine: the operator always multiplies
        block.beta.set_data(to_tensor(beta, mx_dtype))  # 0 when not affine: the operator always adds
        if self.hybridize:
            block.hybridize(static_alloc=True)
        return _BlockSession(block, dtype)


def instance_norm(x: nd.NDArray, gamma: nd.NDArray | None, beta: nd.NDArray | None,
                  running_mean: nd.NDArray | None, running_var: nd.NDArray | None, *, spec: INSpec,
                  training: bool) -> nd.NDArray:
    """y = γ x̂ + β for channels-first x (N, C, ...), statistics per sample and channel over the positions.

    In training, updates the running statistics (shape (C,), None when not kept) in place with the batch's
    average of the per-sample statistics; in eval, normalizes with them when kept, else with x's own.
    """
    axes = _spatial_axes(x.ndim)
    channel = (1, -1) + (1,) * (x.ndim - 2)  # a (C,) vector broadcast along axis 1
    if training or running_mean is None:
        mu, var = _mean_and_variance(x, axes, spec.variance)  # μ_nc, σ²_nc (biased), shape (N, C, 1, ...)
        if training and running_mean is not None:
            m = int(np.prod(x.shape[2:]))  # values per sample and channel
            stored_var = var * (m / (m - 1) if m > 1 else float("nan")) if spec.running_var == "unbiased" else var
            w = spec.new_weight  # weight of the new batch statistic
            with autograd.pause():  # the running statistics are not part of the graph
                running_mean[:] = running_mean * (1 - w) + nd.mean(mu.detach(), axis=0).reshape((-1,)) * w
                running_var[:] = running_var * (1 - w) + nd.mean(stored_var.detach(), axis=0).reshape((-1,)) * w
    else:
        mu, var = running_mean.reshape(channel), running_var.reshape(channel)
    y = nd.broadcast_div(nd.broadcast_sub(x, mu), nd.sqrt(var + spec.eps))  # x̂ = (x − μ)/√(σ² + ε)
    if gamma is not None:
        y = nd.broadcast_mul(gamma.reshape(channel), y)  # γ x̂
    if beta is not None:
        y = nd.broadcast_add(y, beta.reshape(channel))  # + β
    return y


class _ScratchLayer(LayerSession):
    """The scratch InstanceNorm with its own γ, β and running statistics as NDArrays (None: not kept)."""

    def __init__(self, spec: INSpec, *, channels: int, dtype: np.dtype, gamma: np.ndarray,
                 beta: np.ndarray) -> None:
        self.spec, self.dtype = spec, dtype
        self.gamma = self.beta = self.running_mean = self.running_var = None
        if spec.affine:
            self.gamma, self.beta = to_tensor(gamma, dtype), to_tensor(beta, dtype)
            self.gamma.attach_grad()
            self.beta.attach_grad()
        if spec.track_running_stats:
            self.running_mean = to_tensor(np.full(channels, spec.init_running_mean), dtype)
            self.running_var = to_tensor(np.full(channels, spec.init_running_var), dtype)

    def _forward(self, x: nd.NDArray, *, training: bool) -> nd.NDArray:
        return instance_norm(x, self.gamma, self.beta, self.running_mean, self.running_var, spec=self.spec,
                             training=training)

    def train_step(self, x: np.ndarray, dy: np.ndarray) -> StepResult:
        xt = to_tensor(x, self.dtype)
        xt.attach_grad()
        with autograd.record():
            y = self._forward(xt, training=True)
        y.backward(to_tensor(dy, self.dtype))  # grad_req 'write': each step overwrites the gradients
        affine = self.spec.affine
        return StepResult(y=to_numpy(y), dx=to_numpy(xt.grad),
                          dgamma=to_numpy(self.gamma.grad) if affine else None,
                          dbeta=to_numpy(self.beta.grad) if affine else None)

    def running_stats(self) -> tuple[np.ndarray, np.ndarray] | None:
        if self.running_mean is None:
            return None
        return to_numpy(self.running_mean), to_numpy(self.running_var)

    def eval(self, x: np.ndarray) -> np.ndarray:
        return to_numpy(self._forward(to_tensor(x, self.dtype), training=False))


class ScratchInstanceNorm(LayerAdapter):
    """InstanceNorm in raw mx.nd ops: every spec field honoured, running statistics included."""

    framework = DESCRIPTOR.name
    normalization = "instancenorm"
    impl = "scratch"
    native_axis = DESCRIPTOR.native_axis

    def realize(self, spec: INSpec, dtype: np.dtype) -> INSpec:
        framework_dtype(dtype)
        return spec

    def build(self, spec: INSpec, *, shape: tuple[int, ...], dtype: np.dtype, gamma: np.ndarray,
              beta: np.ndarray, use_defaults: bool) -> _ScratchLayer:
        _spatial_axes(len(shape))  # raises ValueError for an input without positions
        # A scratch layer has no defaults of its own: "defaults" are the spec it is given.
        return _ScratchLayer(spec, channels=shape[1], dtype=dtype, gamma=gamma, beta=beta)
