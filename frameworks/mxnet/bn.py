"""The MXNet adapter: mxnet.gluon.nn.BatchNorm, configured from the spec, never re-implemented.

Training is a forward under `autograd.record()` (train_mode) followed by `y.backward(dy)`; eval is a
forward outside `record()`. MXNet 1.9.1 writes moving_mean/moving_var in the *backward* pass on CPU
(see convention.py), so the running statistics are read after `backward`, never between forward and backward.
"""

from __future__ import annotations

import numpy as np

from bnparity.frameworks.base import BatchNormAdapter, LayerSession, StepResult, Unsupported
from bnparity.reference.spec import BNSpec

from ._mx import autograd, gluon, mx
from .convert import mx_dtype, param_dtype, to_nd, to_numpy


def mx_momentum(spec: BNSpec) -> float:
    """MXNet's momentum (the weight of the *old* running value) for `spec`, as the operator stores it.

    The BatchNorm operator parses `momentum` as a float32 (batch_norm-inl.h: BatchNormParam `float momentum`),
    so the value is rounded to float32 whatever the data's dtype.
    """
    return float(np.float32(1.0 - spec.new_weight))


class GluonLayer(LayerSession):
    """A gluon BatchNorm block: training steps under autograd.record(), eval outside it."""

    def __init__(self, block: gluon.nn.BatchNorm, *, dtype: np.dtype, spec: BNSpec) -> None:
        self.block = block
        self.dtype = dtype
        self.spec = spec

    def train_step(self, x: np.ndarray, dy: np.ndarray) -> StepResult:
        xt = to_nd(x, self.dtype)
        xt.attach_grad()
        with autograd.record():  # train_mode=True: normalize with the batch's own statistics
            y = self.block(xt)
        y.backward(to_nd(dy, self.dtype))  # also where MXNet updates moving_mean/moving_var on CPU
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
        return to_numpy(self.block(to_nd(x, self.dtype)))


class GluonBatchNorm(BatchNormAdapter):
    """mxnet.gluon.nn.BatchNorm: channels at axis 1, momentum weighs the old value, biased running variance.

    Args:
        hybridize: run the block hybridized (a cached symbolic graph) rather than imperatively.
    """

    framework = "mxnet"
    impl = "builtin"
    native_axis = 1  # gluon's default axis=1 (NCHW)

    def __init__(self, *, hybridize: bool = True) -> None:
        self.hybridize = hybridize

    def realize(self, spec: BNSpec, dtype: np.dtype) -> BNSpec:
        mx_dtype(dtype)  # raises Unsupported for a dtype MXNet has no float type for
        if not spec.track_running_stats:
            raise Unsupported("mxnet: gluon.nn.BatchNorm has no track_running_stats=False; it always keeps "
                              "moving statistics and normalizes with them outside autograd.record()")
        # The stored variance is always the biased σ²_B (not configurable), and the momentum is a float32.
        m = mx_momentum(spec)
        momentum = m if spec.momentum_weighs == "old" else 1.0 - m  # 1 − m is exact (Sterbenz)
        return spec.replace(running_var="biased", momentum=momentum)

    def build(self, spec: BNSpec, *, ndim: int, channels: int, dtype: np.dtype, gamma: np.ndarray,
              beta: np.ndarray, use_defaults: bool) -> GluonLayer:
        if not spec.track_running_stats:
            self.realize(spec, dtype)  # raises Unsupported with the reason
        # scale=False sets fix_gamma=True (γ forced to 1, zero gradient). center=False only freezes β
        # (grad_req='null'): the operator still adds β, which is why β is set (to 0 when not affine) below.
        options = dict(axis=1, center=spec.affine, scale=spec.affine, use_global_stats=False,
                       in_channels=channels)
        if not use_defaults:
            options.update(momentum=mx_momentum(spec), epsilon=spec.eps)
        block = gluon.nn.BatchNorm(**options)
        block.initialize(ctx=mx.cpu())
        # Cast first, then set γ, β and the moving statistics, so that float64 keeps every digit.
        pdtype = param_dtype(dtype)
        block.cast(pdtype)
        block.gamma.set_data(to_nd(gamma, pdtype))
        block.beta.set_data(to_nd(beta, pdtype))
        if not use_defaults:
            block.running_mean.set_data(to_nd(np.full(channels, spec.init_running_mean), pdtype))
            block.running_var.set_data(to_nd(np.full(channels, spec.init_running_var), pdtype))
        if self.hybridize:
            block.hybridize(static_alloc=True)  # as alexnet.py hybridizes its network
        return GluonLayer(block, dtype=dtype, spec=spec)


# Hybridized by default: the AlexNet that trains (alexnet.py) runs hybridized (static_alloc=True) for speed,
# so the layer compared here is the one that trains. tests/test_mxnet_adapter.py runs the imperative block too.
ADAPTER = GluonBatchNorm
