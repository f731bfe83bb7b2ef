"""MXNet's BatchNorm adapters: mxnet.gluon.nn.BatchNorm (builtin) and BatchNorm in raw mx.nd ops (scratch).

Builtin: training is a forward under `autograd.record()` (train_mode) followed by `y.backward(dy)`; eval is a
forward outside `record()`. MXNet 1.9.1 writes moving_mean/moving_var in the *backward* pass on CPU (see
convention.py), so the running statistics are read after `backward`, never between forward and backward.

Scratch (teaching material): mx.autograd supplies the backward pass; it follows the spec exactly, so it can store
either running-variance estimator, weigh momentum either way, compute σ²_B either way, and skip running statistics
altogether. Unlike MXNet's own operator, it updates the running statistics in the forward pass.
"""

from __future__ import annotations

import numpy as np

from bnparity.frameworks.base import LayerAdapter, LayerSession, StepResult, Unsupported
from bnparity.reference.spec import BNSpec

from ._mx import autograd, gluon, mx, nd
from .convert import _mean_and_variance, _param_dtype, framework_dtype, framework_momentum, to_numpy, to_tensor
from .descriptor import DESCRIPTOR


class _BuiltinLayer(LayerSession):
    """A gluon BatchNorm block: training steps under autograd.record(), eval outside it."""

    def __init__(self, block: gluon.nn.BatchNorm, *, dtype: np.dtype, spec: BNSpec) -> None:
        self.block = block
        self.dtype = dtype
        self.spec = spec

    def train_step(self, x: np.ndarray, dy: np.ndarray) -> StepResult:
        xt = to_tensor(x, self.dtype)
        xt.attach_grad()
        with autograd.record():  # train_mode=True: normalize with the batch's own statistics
            y = self.block(xt)
        y.backward(to_tensor(dy, self.dtype))  # also where MXNet updates moving_mean/moving_var on CPU
        affine = self.spec.affine
        return StepResult(
            y=to_numpy(y), dx=to_numpy(xt.grad),
            dgamma=to_numpy(self.block.gamma.grad()) if affine else None,
            dbeta=to_numpy(self.block.beta.grad()) if affine else None,
        )

    def running_stats(self) -> tuple[np.ndarray, np.ndarray]:
        return to_numpy(self.block.running_mean.data()), to_numpy(self.block.running_var.data())

    def eval(self, x: np.ndarray) -> np.ndarray:
        # Outside autograd.record() gluon runs in predict mode: the moving statistics normalize.
        return to_numpy(self.block(to_tensor(x, self.dtype)))


class BuiltinBatchNorm(LayerAdapter):
    """mxnet.gluon.nn.BatchNorm: channels at axis 1, momentum weighs the old value, biased running variance.

    Args:
        hybridize: run the block hybridized (a cached symbolic graph) rather than imperatively.
    """

    framework = DESCRIPTOR.name
    normalization = "batchnorm"
    impl = "builtin"
    native_axis = DESCRIPTOR.native_axis
    variants = {"hybridized": {}, "imperative": {"hybridize": False}}

    def __init__(self, *, hybridize: bool = True) -> None:
        self.hybridize = hybridize

    def realize(self, spec: BNSpec, dtype: np.dtype) -> BNSpec:
        framework_dtype(dtype)  # raises Unsupported for a dtype MXNet has no float type for
        if not spec.track_running_stats:
            raise Unsupported("mxnet: gluon.nn.BatchNorm has no track_running_stats=False; it always keeps "
                              "moving statistics and normalizes with them outside autograd.record()")
        # The stored variance is always the biased σ²_B and σ²_B is always two-pass (not configurable), and the
        # momentum is a float32.
        m = framework_momentum(spec)
        momentum = m if spec.momentum_weighs == "old" else 1.0 - m  # 1 − m is exact (Sterbenz)
        return spec.replace(running_var="biased", momentum=momentum, variance="two-pass")

    def build(self, spec: BNSpec, *, shape: tuple[int, ...], dtype: np.dtype, gamma: np.ndarray,
              beta: np.ndarray, use_defaults: bool) -> _BuiltinLayer:
        channels = shape[spec.axis]
        if not spec.track_running_stats:
            self.realize(spec, dtype)  # raises Unsupported with the reason
        # scale=False sets fix_gamma=True (γ forced to 1, zero gradient). center=False only freezes β
        # (grad_req='null'): the operator still adds β, which is why β is set (to 0 when not affine) below.
        options = dict(axis=1, center=spec.affine, scale=spec.affine, use_global_stats=False,
                       in_channels=channels)
        if not use_defaults:
            options.update(momentum=framework_momentum(spec), epsilon=spec.eps)
        block = gluon.nn.BatchNorm(**options)
        block.initialize(ctx=mx.cpu())
        # Cast first, then set γ, β and the moving statistics, so that float64 keeps every digit.
        pdtype = _param_dtype(dtype)
        block.cast(pdtype)
        block.gamma.set_data(to_tensor(gamma, pdtype))
        block.beta.set_data(to_tensor(beta, pdtype))
        if not use_defaults:
            block.running_mean.set_data(to_tensor(np.full(channels, spec.init_running_mean), pdtype))
            block.running_var.set_data(to_tensor(np.full(channels, spec.init_running_var), pdtype))
        if self.hybridize:
            block.hybridize(static_alloc=True)  # as alexnet.py hybridizes its network
        return _BuiltinLayer(block, dtype=dtype, spec=spec)


# Hybridized by default: the AlexNet that trains (alexnet.py) runs hybridized (static_alloc=True) for speed,
# so the layer compared here is the one that trains. tests/test_mxnet_adapter.py runs the imperative block too.


def batch_norm(x: nd.NDArray, gamma: nd.NDArray, beta: nd.NDArray, running_mean: nd.NDArray | None,
               running_var: nd.NDArray | None, *, spec: BNSpec, training: bool) -> nd.NDArray:
    """y = γ x̂ + β over channel axis `spec.axis`; in training, updates the running statistics in place.

    Args:
        x: the input, channels at `spec.axis`.
        gamma: γ, shape (C,).
        beta: β, shape (C,).
        running_mean: the running mean (C,), or None when the spec tracks no running statistics.
        running_var: the running variance (C,), or None.
        spec: the conventions to follow (eps, variance algorithm, momentum, running-variance estimator).
        training: normalize with the batch's statistics (True) or the running ones (False).
    """
    axis = spec.axis % x.ndim
    axes = tuple(a for a in range(x.ndim) if a != axis)
    shape = tuple(-1 if a == axis else 1 for a in range(x.ndim))
    if training or running_mean is None:
        mu, var = _mean_and_variance(x, axes, spec.variance)  # μ_B, σ²_B (biased), kept as size-1 axes
        mu, var = mu.reshape((-1,)), var.reshape((-1,))
        if training and running_mean is not None:
            m = x.size // x.shape[axis]
            stored_var = var * (m / (m - 1) if m > 1 else float("nan")) if spec.running_var == "unbiased" else var
            w = spec.new_weight  # weight of the new batch statistic
            with autograd.pause():  # the running statistics are not part of the graph
                running_mean[:] = running_mean * (1 - w) + mu.detach() * w
                running_var[:] = running_var * (1 - w) + stored_var.detach() * w
    else:
        mu, var = running_mean, running_var
    x_hat = nd.broadcast_div(nd.broadcast_sub(x, mu.reshape(shape)),
                             nd.sqrt(var.reshape(shape) + spec.eps))  # x̂
    return nd.broadcast_add(nd.broadcast_mul(gamma.reshape(shape), x_hat), beta.reshape(shape))  # γ x̂ + β


class _ScratchLayer(LayerSession):
    """The scratch BatchNorm with its own γ, β and running statistics as NDArrays."""

    def __init__(self, spec: BNSpec, *, channels: int, dtype: np.dtype, gamma: np.ndarray,
                 beta: np.ndarray) -> None:
        self.spec, self.dtype = spec, dtype
        self.gamma = to_tensor(gamma, dtype)
        self.beta = to_tensor(beta, dtype)
        if spec.affine:
            self.gamma.attach_grad()
            self.beta.attach_grad()
        if spec.track_running_stats:
            self.running_mean = to_tensor(np.full(channels, spec.init_running_mean), dtype)
            self.running_var = to_tensor(np.full(channels, spec.init_running_var), dtype)
        else:
            self.running_mean = self.running_var = None

    def train_step(self, x: np.ndarray, dy: np.ndarray) -> StepResult:
        xt = to_tensor(x, self.dtype)
        xt.attach_grad()
        with autograd.record():
            y = batch_norm(xt, self.gamma, self.beta, self.running_mean, self.running_var,
                           spec=self.spec, training=True)
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
        return to_numpy(batch_norm(to_tensor(x, self.dtype), self.gamma, self.beta, self.running_mean,
                                   self.running_var, spec=self.spec, training=False))


class ScratchBatchNorm(LayerAdapter):
    """BatchNorm in raw mx.nd ops: any channel axis, every spec field honoured."""

    framework = DESCRIPTOR.name
    normalization = "batchnorm"
    impl = "scratch"
    native_axis = DESCRIPTOR.native_axis

    def realize(self, spec: BNSpec, dtype: np.dtype) -> BNSpec:
        framework_dtype(dtype)
        return spec

    def build(self, spec: BNSpec, *, shape: tuple[int, ...], dtype: np.dtype, gamma: np.ndarray,
              beta: np.ndarray, use_defaults: bool) -> _ScratchLayer:
        channels = shape[spec.axis]
        # A scratch layer has no defaults of its own: "defaults" are the spec it is given.
        return _ScratchLayer(spec, channels=channels, dtype=dtype, gamma=gamma, beta=beta)
