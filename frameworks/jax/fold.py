"""Folding an eval-mode BatchNorm into the convolution or dense layer before it, in JAX/Flax (interface:
frameworks/folding.py).

builtin: none. Flax has no fold: flax.linen's Conv, Dense and BatchNorm (flax/linen/linear.py,
flax/linen/normalization.py) have no fusion utility, nor has flax.nnx or JAX; XLA may fuse the operations of a
jitted eval step when it compiles, but never yields folded weights. Hence `Folds.lacks`.

scratch: the fold in jax.numpy on Flax's own layout, where the output channel is the LAST axis of both kernels (Conv
HWIO, Dense (in, out)): kernel' = kernel · s, bias' = (bias − μ)·s + β, s = γ/√(σ² + ε). The folded layer runs with
jax.lax.conv_general_dilated (feature_group_count; dimension numbers ("NHWC", "HWIO", "NHWC"), Flax's, for an
NHWC case and ("NCHW", "HWIO", "NCHW") for an NCHW one) or a jnp.dot, at Precision.HIGHEST. The unfolded layer is
Flax's own: nn.Conv (feature_group_count) + nn.BatchNorm(use_running_average=True) on NHWC; Flax's nn.Conv is
channels-last only, so an NCHW case's unfolded convolution is lax.conv_general_dilated in NCHW followed by
nn.BatchNorm(axis=1). float64 runs under the folder's scoped x64 switch (_x64.dtype_scope).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from bnparity.frameworks import folding
from bnparity.reference.alexnet import AlexNetSpec
from bnparity.reference.fold import bn_pairs, folded_spec

from ._x64 import dtype_scope
from .alexnet import PRECISION, AlexNet, from_canonical, to_canonical
from .convert import framework_dtype, to_numpy

_NO_BUILTIN = ("jax: Flax has no BatchNorm fold (flax.linen Conv/Dense/BatchNorm have no fusion utility; XLA fuses "
               "ops when compiling but exposes no folded weights)")


def _f64(a: jax.Array) -> np.ndarray:
    return to_numpy(a).astype(np.float64)


def _conv(x: jax.Array, kernel: jax.Array, bias: jax.Array | None, *, layout: str, stride: int, padding: int,
          groups: int) -> jax.Array:
    """A convolution with an HWIO kernel on `layout` activations (jax.lax.conv_general_dilated)."""
    y = jax.lax.conv_general_dilated(x, kernel, (stride, stride), ((padding, padding), (padding, padding)),
                                     dimension_numbers=(layout, "HWIO", layout), feature_group_count=groups,
                                     precision=PRECISION)
    if bias is None:
        return y
    return y + (bias if layout == "NHWC" else bias.reshape(1, -1, 1, 1))


class Folds(folding.Folds):
    """bnparity's fold in jax.numpy on Flax's layout (Flax has none of its own: module docstring)."""

    framework = "jax"
    impls = ("scratch",)
    lacks = {"builtin": _NO_BUILTIN}

    @staticmethod
    def _fold(kernel: jax.Array, bias: jax.Array | None, gamma: jax.Array, beta: jax.Array, mean: jax.Array,
              var: jax.Array, eps: float) -> tuple[jax.Array, jax.Array]:
        """(kernel', bias') in jax.numpy, output channel on the LAST axis (Flax's HWIO and (in, out))."""
        s = gamma / jnp.sqrt(var + eps)  # s_c = γ_c / √(σ²_c + ε)
        b = jnp.zeros_like(mean) if bias is None else bias
        return kernel * s, (b - mean) * s + beta

    def fold_layer(self, case: folding.FoldCase, impl: str) -> folding.FoldOutput:
        folding.check_impl(self, impl)
        dtype = framework_dtype(np.dtype(case.dtype))
        with dtype_scope(dtype):
            def arr(a: np.ndarray | None) -> jax.Array | None:
                return None if a is None else jnp.asarray(a, dtype=dtype)

            gamma, beta, mean, var = (arr(v) for v in (case.gamma, case.beta, case.running_mean, case.running_var))
            bias = arr(case.bias)
            stats = {"batch_stats": {"mean": mean, "var": var}}
            if case.kind == "conv":
                kernel = arr(case.weight.transpose(2, 3, 1, 0))  # OIHW -> HWIO
                nhwc = case.layout == "NHWC"
                x = arr(case.x.transpose(0, 2, 3, 1) if nhwc else case.x)
                kw = dict(layout=case.layout, stride=case.stride, padding=case.padding, groups=case.groups)
                p = case.padding
                if nhwc:
                    conv = nn.Conv(kernel.shape[-1], kernel.shape[:2], strides=case.stride, padding=((p, p), (p, p)),
                                   feature_group_count=case.groups, use_bias=case.has_bias, precision=PRECISION,
                                   dtype=dtype, param_dtype=dtype)
                    cparams = {"kernel": kernel} | ({"bias": bias} if case.has_bias else {})
                    z = conv.apply({"params": cparams}, x)
                else:
                    z = _conv(x, kernel, bias, **kw)
                norm = nn.BatchNorm(use_running_average=True, axis=-1 if nhwc else 1, epsilon=case.eps,
                                    dtype=dtype, param_dtype=dtype)
                y_unfolded = norm.apply({"params": {"scale": gamma, "bias": beta}} | stats, z)
                k2, b2 = self._fold(kernel, bias, gamma, beta, mean, var, case.eps)
                y_folded = _conv(x, k2, b2, **kw)
                to_nchw = (lambda a: _f64(a).transpose(0, 3, 1, 2)) if nhwc else _f64
                return folding.FoldOutput(weight=_f64(k2).transpose(3, 2, 0, 1), bias=_f64(b2),
                                          y_folded=to_nchw(y_folded), y_unfolded=to_nchw(y_unfolded))
            kernel, x = arr(case.weight.T), arr(case.x)  # (out, in) -> Flax's (in, out)
            dense = nn.Dense(kernel.shape[1], use_bias=case.has_bias, precision=PRECISION, dtype=dtype,
                             param_dtype=dtype)
            z = dense.apply({"params": {"kernel": kernel} | ({"bias": bias} if case.has_bias else {})}, x)
            norm = nn.BatchNorm(use_running_average=True, axis=-1, epsilon=case.eps, dtype=dtype, param_dtype=dtype)
            y_unfolded = norm.apply({"params": {"scale": gamma, "bias": beta}} | stats, z)
            k2, b2 = self._fold(kernel, bias, gamma, beta, mean, var, case.eps)
            y_folded = jnp.dot(x, k2, precision=PRECISION) + b2
            return folding.FoldOutput(weight=_f64(k2).T, bias=_f64(b2), y_folded=_f64(y_folded),
                                      y_unfolded=_f64(y_unfolded))

    def fold_alexnet(self, spec: AlexNetSpec, params: dict[str, np.ndarray], dtype: str) -> dict[str, np.ndarray]:
        dt = framework_dtype(np.dtype(dtype))
        target = folded_spec(spec)
        with dtype_scope(dt):
            variables = from_canonical(spec, params, dtype=dt)
            folded = {"params": {name: dict(leaves) for name, leaves in variables["params"].items()
                                 if not any(name == bn for _, bn in bn_pairs(spec))}}
            for affine, norm in bn_pairs(spec):
                layer, bn, stats = (variables["params"][affine], variables["params"][norm],
                                    variables["batch_stats"][norm])
                kernel, bias = self._fold(layer["kernel"], layer["bias"], bn["scale"], bn["bias"], stats["mean"],
                                          stats["var"], spec.bn.eps)
                folded["params"][affine] = {"kernel": kernel, "bias": bias}
            return {name: value.astype(np.float64) for name, value in to_canonical(target, folded).items()}

    def logits(self, spec: AlexNetSpec, params: dict[str, np.ndarray], x: np.ndarray, dtype: str) -> np.ndarray:
        dt = framework_dtype(np.dtype(dtype))
        with dtype_scope(dt):
            variables = from_canonical(spec, params, dtype=dt)
            model = AlexNet(spec, dtype=dt)
            return _f64(jax.jit(lambda v, a: model.apply(v, a, train=False))(variables, jnp.asarray(x, dtype=dt)))
