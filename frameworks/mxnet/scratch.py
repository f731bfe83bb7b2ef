"""BatchNorm from scratch in raw mx.nd ops (teaching material); mx.autograd supplies the backward pass.

Verified by the same parity harness as gluon.nn.BatchNorm. It follows the spec exactly, so it can store
either running-variance estimator, weigh momentum either way, and skip running statistics altogether.
Unlike MXNet's own operator, it updates the running statistics in the forward pass.
"""

from __future__ import annotations

import numpy as np

from bnparity.frameworks.base import BatchNormAdapter, LayerSession, StepResult
from bnparity.reference.spec import BNSpec

from ._mx import autograd, nd
from .convert import mx_dtype, to_nd, to_numpy


def batch_norm(x: nd.NDArray, gamma: nd.NDArray, beta: nd.NDArray, running_mean: nd.NDArray | None,
               running_var: nd.NDArray | None, *, spec: BNSpec, training: bool) -> nd.NDArray:
    """y = γ x̂ + β over channel axis `spec.axis`; in training, updates the running statistics in place.

    Args:
        x: the input, channels at `spec.axis`.
        gamma: γ, shape (C,).
        beta: β, shape (C,).
        running_mean: the running mean (C,), or None when the spec tracks no running statistics.
        running_var: the running variance (C,), or None.
        spec: the conventions to follow (eps, momentum, running-variance estimator).
        training: normalize with the batch's statistics (True) or the running ones (False).
    """
    axis = spec.axis % x.ndim
    axes = tuple(a for a in range(x.ndim) if a != axis)
    shape = tuple(-1 if a == axis else 1 for a in range(x.ndim))
    if training or running_mean is None:
        mu = nd.mean(x, axis=axes)  # μ_B
        var = nd.mean(nd.square(nd.broadcast_sub(x, mu.reshape(shape))), axis=axes)  # σ²_B (biased, two passes)
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


class ScratchLayer(LayerSession):
    """The scratch BatchNorm with its own γ, β and running statistics as NDArrays."""

    def __init__(self, spec: BNSpec, *, channels: int, dtype: np.dtype, gamma: np.ndarray,
                 beta: np.ndarray) -> None:
        self.spec, self.dtype = spec, dtype
        self.gamma = to_nd(gamma, dtype)
        self.beta = to_nd(beta, dtype)
        if spec.affine:
            self.gamma.attach_grad()
            self.beta.attach_grad()
        if spec.track_running_stats:
            self.running_mean = to_nd(np.full(channels, spec.init_running_mean), dtype)
            self.running_var = to_nd(np.full(channels, spec.init_running_var), dtype)
        else:
            self.running_mean = self.running_var = None

    def train_step(self, x: np.ndarray, dy: np.ndarray) -> StepResult:
        xt = to_nd(x, self.dtype)
        xt.attach_grad()
        with autograd.record():
            y = batch_norm(xt, self.gamma, self.beta, self.running_mean, self.running_var,
                           spec=self.spec, training=True)
        y.backward(to_nd(dy, self.dtype))  # grad_req 'write': each step overwrites the gradients
        affine = self.spec.affine
        return StepResult(y=to_numpy(y), dx=to_numpy(xt.grad),
                          dgamma=to_numpy(self.gamma.grad) if affine else None,
                          dbeta=to_numpy(self.beta.grad) if affine else None)

    def running_stats(self) -> tuple[np.ndarray, np.ndarray] | None:
        if self.running_mean is None:
            return None
        return to_numpy(self.running_mean), to_numpy(self.running_var)

    def eval(self, x: np.ndarray) -> np.ndarray:
        return to_numpy(batch_norm(to_nd(x, self.dtype), self.gamma, self.beta, self.running_mean,
                                   self.running_var, spec=self.spec, training=False))


class MXNetScratchBatchNorm(BatchNormAdapter):
    """BatchNorm in raw mx.nd ops: any channel axis, every spec field honoured."""

    framework = "mxnet"
    impl = "scratch"
    native_axis = 1

    def realize(self, spec: BNSpec, dtype: np.dtype) -> BNSpec:
        mx_dtype(dtype)
        return spec

    def build(self, spec: BNSpec, *, ndim: int, channels: int, dtype: np.dtype, gamma: np.ndarray,
              beta: np.ndarray, use_defaults: bool) -> ScratchLayer:
        # A scratch layer has no defaults of its own: "defaults" are the spec it is given.
        return ScratchLayer(spec, channels=channels, dtype=dtype, gamma=gamma, beta=beta)


ADAPTER = MXNetScratchBatchNorm
