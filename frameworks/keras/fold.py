"""Folding an eval-mode BatchNorm into the convolution or dense layer before it, in Keras 3 (interface:
frameworks/folding.py), on whichever backend this process runs.

builtin: none. Keras 3 has no fold: keras.layers.Conv2D, Dense and BatchNormalization (keras/src/layers/) have no
fusion utility, nor has keras.ops or keras.export. TensorFlow's graph tool `fold_batch_norms`
(tensorflow/python/tools/optimize_for_inference_lib.py:277, private and TensorFlow-only) folds only FusedBatchNorm,
FusedBatchNormV3 and BatchNormWithGlobalNormalization nodes fed by Conv2D or DepthwiseConv2dNative (lines 310-315,
328), and Keras 3's BatchNormalization never emits them: it calls tf.nn.batch_normalization
(keras/src/backend/tensorflow/nn.py:1564), plain Rsqrt/Mul/Add ops; XLA and the TFLite converter may fuse when they
compile, but expose no folded weights to Keras. Hence `Folds.lacks`.

scratch: the fold in keras.ops on Keras' own layout, where the output channel is the LAST axis of both kernels
(Conv2D HWIO, Dense (in, out), as frameworks/keras/alexnet.py maps them): kernel' = kernel · s,
bias' = (bias − μ)·s + β, s = γ/√(σ² + ε). The folded layer runs with keras.ops.conv (grouped when the kernel's
input channels are fewer than the input's: every backend infers the groups so; on TensorFlow a grouped
convolution runs under XLA, keras/src/backend/tensorflow/nn.py:844-852) or keras.ops.matmul. The unfolded layer is
Keras' own: keras.layers.Conv2D(groups=...) (after a ZeroPadding2D for the padding) or Dense, then
keras.layers.BatchNormalization called with training=False; an NCHW case runs both with
data_format="channels_first" and BatchNormalization(axis=1).

Skips: on the JAX and PyTorch backends keras.layers.BatchNormalization computes in float32 whatever its dtype
(batch_normalization.py:345, `backend.result_type(inputs.dtype, "float32")`, which keras/src/backend/common/
dtypes.py:240 maps float64 to float32 on every backend but TensorFlow), so a float64 case's unfolded layer would be a
float32 one; and TensorFlow's CPU Conv2D kernel has no float64 NCHW, nor float16 NCHW without AVX-512 (such an
ungrouped channels_first convolution raises "The Conv2D op currently only supports the NHWC tensor format on the
CPU"; _nchw_conv_problem asks). On PyTorch even the scratch dense fold would not be float64: keras.ops.matmul
computes in `dtypes.result_type(x1.dtype, x2.dtype)` (keras/src/backend/torch/numpy.py:141), float32 for two float64
operands (measured: the folded dense output 1e7 times its float64 bound). float64 runs under the folder's scoped x64
switch on JAX (_x64.dtype_scope).
"""

from __future__ import annotations

import functools
from typing import Any

import keras
import numpy as np

from bnparity.frameworks import folding
from bnparity.frameworks.base import Unsupported
from bnparity.reference.alexnet import AlexNetSpec, param_shapes
from bnparity.reference.fold import bn_pairs, folded_spec

from ._backend import BACKEND, DESCRIPTOR
from ._x64 import dtype_scope
from .alexnet import from_canonical, to_canonical
from .convert import framework_dtype, to_numpy, to_tensor

_NO_BUILTIN = (f"{DESCRIPTOR.name}: Keras 3 has no BatchNorm fold (keras.layers and keras.ops have no fusion "
               "utility; TensorFlow's optimize_for_inference_lib.fold_batch_norms folds only FusedBatchNorm graph "
               "nodes, which Keras 3's BatchNormalization never emits)")


def _f64(a: Any) -> np.ndarray:
    return to_numpy(a).astype(np.float64)


def _check(case: folding.FoldCase) -> None:
    """Unsupported for what this backend cannot compute here (module docstring)."""
    if case.dtype == "float64" and BACKEND != "tensorflow":
        raise Unsupported(f"{DESCRIPTOR.name}: keras.layers.BatchNormalization computes in float32 on the {BACKEND} "
                          "backend whatever its dtype (batch_normalization.py:345; keras/src/backend/common/"
                          f"dtypes.py:240): the float64 unfolded layer would be float32 ({case.name})")
    if BACKEND == "tensorflow" and case.kind == "conv" and case.layout == "NCHW" and case.groups == 1:
        problem = _nchw_conv_problem(case.dtype)
        if problem is not None:
            raise Unsupported(f"{DESCRIPTOR.name}: TensorFlow's CPU Conv2D has no {case.dtype} NCHW kernel on this "
                              f"machine (\"{problem}\") ({case.name})")


_NCHW_MESSAGE = "The Conv2D op currently only supports the NHWC tensor format on the CPU"


@functools.cache
def _nchw_conv_problem(dtype: str) -> str | None:
    """Why an ungrouped channels_first Conv2D of `dtype` cannot run on this machine's CPU, or None when it can.

    TensorFlow's CPU kernels compute NCHW in float32 only, and in float16 where oneDNN handles half precision
    (AVX-512; elsewhere it falls back to Eigen, NHWC only); float64 NCHW always raises UnimplementedError. So it is
    asked once per dtype, on a 1×1 convolution, rather than assumed."""
    try:
        keras.layers.Conv2D(1, 1, data_format="channels_first", dtype=dtype)(np.ones((1, 1, 1, 1), dtype=dtype))
    except Exception as e:  # noqa: BLE001 (TensorFlow's UnimplementedError, wrapped by Keras)
        return _NCHW_MESSAGE if _NCHW_MESSAGE in str(e) else f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"
    return None


def _built(layer: keras.layers.Layer, shape: tuple[int, ...], values: dict[str, np.ndarray | None],
           dtype: np.dtype) -> keras.layers.Layer:
    """`layer` built for inputs of `shape`, its variables (by name) holding `values`."""
    layer.build(shape)
    for v in layer.variables:
        v.assign(to_tensor(values[v.name], dtype))
    return layer


class Folds(folding.Folds):
    """bnparity's fold in keras.ops on Keras' layout (Keras has none of its own: module docstring)."""

    framework = DESCRIPTOR.name
    impls = ("scratch",)
    lacks = {"builtin": _NO_BUILTIN}

    @staticmethod
    def _fold(kernel: Any, bias: Any | None, gamma: Any, beta: Any, mean: Any, var: Any,
              eps: float) -> tuple[Any, Any]:
        """(kernel', bias') in keras.ops, output channel on the LAST axis (Keras' HWIO and (in, out))."""
        s = gamma / keras.ops.sqrt(var + eps)  # s_c = γ_c / √(σ²_c + ε)
        b = keras.ops.zeros_like(mean) if bias is None else bias
        return kernel * s, (b - mean) * s + beta

    def fold_layer(self, case: folding.FoldCase, impl: str) -> folding.FoldOutput:
        folding.check_impl(self, impl)
        _check(case)
        dtype = np.dtype(case.dtype)
        name = framework_dtype(dtype)
        with dtype_scope(dtype):
            def arr(a: np.ndarray | None) -> Any:
                return None if a is None else to_tensor(a, dtype)

            bn_values = {"gamma": case.gamma, "beta": case.beta, "moving_mean": case.running_mean,
                         "moving_variance": case.running_var}
            gamma, beta, mean, var = (arr(v) for v in bn_values.values())
            if case.kind == "conv":
                nhwc = case.layout == "NHWC"
                fmt = "channels_last" if nhwc else "channels_first"
                kernel = case.weight.transpose(2, 3, 1, 0)  # OIHW -> HWIO
                x_np = case.x.transpose(0, 2, 3, 1) if nhwc else case.x
                x = arr(x_np)
                p = case.padding
                pad = keras.layers.ZeroPadding2D(p, data_format=fmt, dtype=name)
                xp = pad(x) if p else x
                conv = keras.layers.Conv2D(kernel.shape[-1], kernel.shape[:2], strides=case.stride, padding="valid",
                                           groups=case.groups, use_bias=case.has_bias, data_format=fmt, dtype=name)
                _built(conv, tuple(xp.shape), {"kernel": kernel, "bias": case.bias}, dtype)
                norm = _built(keras.layers.BatchNormalization(axis=-1 if nhwc else 1, epsilon=case.eps, dtype=name),
                              tuple(xp.shape[:1]) + tuple(conv.compute_output_shape(tuple(xp.shape))[1:]),
                              bn_values, dtype)
                y_unfolded = norm(conv(xp), training=False)
                k2, b2 = self._fold(arr(kernel), arr(case.bias), gamma, beta, mean, var, case.eps)
                y_folded = keras.ops.conv(xp, k2, strides=case.stride, padding="valid", data_format=fmt)
                y_folded = y_folded + (b2 if nhwc else keras.ops.reshape(b2, (1, -1, 1, 1)))
                to_nchw = (lambda a: _f64(a).transpose(0, 3, 1, 2)) if nhwc else _f64
                return folding.FoldOutput(weight=_f64(k2).transpose(3, 2, 0, 1), bias=_f64(b2),
                                          y_folded=to_nchw(y_folded), y_unfolded=to_nchw(y_unfolded))
            kernel, x = case.weight.T, arr(case.x)  # (out, in) -> Keras' (in, out)
            dense = _built(keras.layers.Dense(kernel.shape[1], use_bias=case.has_bias, dtype=name), tuple(x.shape),
                           {"kernel": kernel, "bias": case.bias}, dtype)
            norm = _built(keras.layers.BatchNormalization(axis=-1, epsilon=case.eps, dtype=name),
                          (x.shape[0], kernel.shape[1]), bn_values, dtype)
            y_unfolded = norm(dense(x), training=False)
            k2, b2 = self._fold(arr(kernel), arr(case.bias), gamma, beta, mean, var, case.eps)
            y_folded = keras.ops.matmul(x, k2) + b2
            return folding.FoldOutput(weight=_f64(k2).T, bias=_f64(b2), y_folded=_f64(y_folded),
                                      y_unfolded=_f64(y_unfolded))

    def fold_alexnet(self, spec: AlexNetSpec, params: dict[str, np.ndarray], dtype: str) -> dict[str, np.ndarray]:
        dt = np.dtype(dtype)
        with dtype_scope(dt):
            model = from_canonical(spec, params, dtype=dt)
            for affine, norm in bn_pairs(spec):
                layer, bn = model.layers_by_name[affine], model.layers_by_name[norm]
                kernel, bias = self._fold(layer.kernel.value, layer.bias.value, bn.gamma.value, bn.beta.value,
                                          bn.moving_mean.value, bn.moving_variance.value, spec.bn.eps)
                layer.kernel.assign(kernel)
                layer.bias.assign(bias)
            # the BN-free network's arrays, canonical: alexnet.py's maps (fc1's row permutation among them)
            folded = to_canonical(spec, model, names=param_shapes(folded_spec(spec)))
        return {name: value.astype(np.float64) for name, value in folded.items()}

    def logits(self, spec: AlexNetSpec, params: dict[str, np.ndarray], x: np.ndarray, dtype: str) -> np.ndarray:
        dt = np.dtype(dtype)
        with dtype_scope(dt):
            model = from_canonical(spec, params, dtype=dt)
            return _f64(model(to_tensor(x, dt), training=False))
