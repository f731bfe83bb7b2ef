"""MXNet's RMSNorm adapter: RMSNorm in raw mx.nd ops (scratch). MXNet 1.9 has no RMSNorm layer (gluon.nn has
LayerNorm, GroupNorm and InstanceNorm; the descriptor declares the builtin as lacking), so there is no builtin.

Scratch (teaching material): the formula of bnparity.reference.rmsnorm (Zhang & Sennrich, 2019) in mx.nd ops,
mx.autograd supplying the backward; it follows the spec exactly (several normalized axes, either shape of γ).
"""

from __future__ import annotations

import numpy as np

from bnparity.frameworks.base import LayerAdapter
from bnparity.reference.spec import RMSSpec

from ._mx import nd
from .convert import _ScratchSession, framework_dtype
from .descriptor import DESCRIPTOR


def rms_norm(x: nd.NDArray, gamma: nd.NDArray | None, *, spec: RMSSpec) -> nd.NDArray:
    """y = γ · x / √(mean(x²) + ε), the mean over each sample's last `spec.normalized_dims` axes; no mean is
    subtracted and there is no β (γ None: the layer has none).

    γ aligns with the trailing axes: shape x.shape[-normalized_dims:] ("elementwise") or (x.shape[-1],)
    ("feature"), broadcast over the leading axes.
    """
    axes = tuple(range(x.ndim - spec.normalized_dims, x.ndim))
    mean_sq = nd.mean(nd.square(x), axis=axes, keepdims=True)  # mean(x²) of each sample
    y = nd.broadcast_div(x, nd.sqrt(mean_sq + spec.eps))  # x / √(mean(x²) + ε)
    if gamma is not None:
        y = nd.broadcast_mul(gamma.reshape((1,) * (x.ndim - gamma.ndim) + gamma.shape), y)  # γ · x / RMS
    return y


class ScratchRMSNorm(LayerAdapter):
    """RMSNorm in raw mx.nd ops: every spec field honoured (normalized_dims, params, affine)."""

    framework = DESCRIPTOR.name
    normalization = "rmsnorm"
    impl = "scratch"
    native_axis = -1  # the normalized axes are the trailing ones

    def realize(self, spec: RMSSpec, dtype: np.dtype) -> RMSSpec:
        framework_dtype(dtype)  # raises Unsupported for a dtype MXNet has no float type for
        return spec

    def build(self, spec: RMSSpec, *, shape: tuple[int, ...], dtype: np.dtype, gamma: np.ndarray,
              beta: np.ndarray, use_defaults: bool) -> _ScratchSession:
        # A scratch layer has no defaults of its own: "defaults" are the spec it is given. RMSNorm has no β.
        return _ScratchSession(lambda x, g, _: rms_norm(x, g, spec=spec), dtype=dtype,
                               gamma=gamma if spec.affine else None, beta=None)
