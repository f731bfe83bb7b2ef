"""AlexNet in Keras 3: a keras.Model of the spec's layers channels-last, canonical parameters converted in and out.

Every framework folder's alexnet.py has the same three names: `AlexNet` (the framework's network),
`from_canonical` (canonical arrays -> the framework's form) and `to_canonical` (back; layout in
bnparity.reference.alexnet).

Keras runs NHWC (Conv2D's data_format defaults to keras.config.image_data_format(), "channels_last",
keras/src/backend/config.py:13), so the conversion is the one of the JAX folder:
- convolution kernels: canonical OIHW <-> Keras HWIO (`Conv2D.kernel`, (kh, kw, in, out),
  keras/src/layers/convolutional/base_conv.py:192-207);
- Dense kernels: canonical (out, in) <-> Keras (in, out) (`Dense.kernel`, keras/src/layers/core/dense.py:136);
- fc1, the Dense after Flatten, additionally has its input rows permuted: the network flattens its (H, W, C) map
  in H, W, C order, the canonical network (C, H, W) (`dense_columns_chw_to_hwc`);
- BN: gamma/beta/running_mean/running_var <-> `gamma`, `beta`, `moving_mean`, `moving_variance`
  (keras/src/layers/normalization/batch_normalization.py:243-275). Keras' momentum weighs the old value
  (moving = m·moving + (1 − m)·batch, ibid.:384-390), set to 1 − spec.bn.new_weight (convert.framework_momentum);
  its moving variance is the biased σ²_B whatever the spec says (ops.moments, ibid.:436); ε is spec.bn.eps.
- GN: gamma/beta <-> `gamma`, `beta` of keras.layers.GroupNormalization(groups=G, axis=-1, epsilon=ε), per channel
  as the canonical layout (keras/src/layers/normalization/group_normalization.py:133-154); on the (N, F) output of a
  Dense layer it normalizes each sample's groups of features, as torch does.
Every canonical array maps to one Keras variable (`AlexNet.by_name`); gradients, which transform like the
parameters, convert through the same maps (`_to_keras`, `_from_keras`).

float64: the network holds float64 variables on every backend, but computes float64 only on TensorFlow. Keras'
type promotion maps float64 to float32 on the JAX and PyTorch backends (keras/src/backend/common/dtypes.py:235-242,
:276), so there BatchNormalization and GroupNormalization compute in float32 (they cast to
`result_type(x.dtype, "float32")`, batch_normalization.py:345, group_normalization.py:181), and on PyTorch Dense
too (ops.matmul, keras/src/backend/torch/numpy.py:137-143). The Trainer refuses those (train._float64_problem).
On the JAX backend float64 needs x64: build and call the network inside `_x64.dtype_scope(float64)`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from typing import Any

import keras
import numpy as np

from bnparity.reference.alexnet import (
    AlexNetSpec,
    BatchNorm,
    Conv,
    Dense,
    Dropout,
    Flatten,
    GroupNorm,
    Layer,
    LayerShape,
    MaxPool,
    ReLU,
    check_params,
    dense_columns_chw_to_hwc,
    dense_columns_hwc_to_chw,
    flatten_shape,
    layer_of,
    layer_shapes,
    param_shapes,
)

from ._x64 import dtype_scope
from .convert import framework_device, framework_dtype, framework_momentum, to_numpy

# canonical kind -> the Keras variable's attribute on its layer
_ATTRIBUTES = {"weight": "kernel", "bias": "bias", "gamma": "gamma", "beta": "beta", "running_mean": "moving_mean",
               "running_var": "moving_variance"}


def _nhwc(shape: tuple[int, ...]) -> tuple[int | None, ...]:
    """A per-example canonical shape, (C, H, W) or (F,), as the batched channels-last shape Keras builds with."""
    return (None, *shape[1:], shape[0]) if len(shape) == 3 else (None, *shape)


def _padding(layer: Conv) -> str:
    """Keras' padding mode of a Conv: "valid" (no padding) or "same" (stride 1, symmetric k//2 on each side);
    any other padding goes to a ZeroPadding2D before it (`_layers`)."""
    return "same" if layer.padding and layer.stride == 1 and 2 * layer.padding == layer.kernel - 1 else "valid"


def _keras_layer(layer: Layer, shape: LayerShape, spec: AlexNetSpec, dtype: str, seed: int) -> Any:
    if isinstance(layer, Conv):
        return keras.layers.Conv2D(layer.out_channels, layer.kernel, strides=layer.stride, padding=_padding(layer),
                                   name=layer.name, dtype=dtype)
    if isinstance(layer, Dense):
        return keras.layers.Dense(layer.out_features, name=layer.name, dtype=dtype)
    if isinstance(layer, BatchNorm):
        return keras.layers.BatchNormalization(axis=-1, momentum=framework_momentum(spec.bn), epsilon=spec.bn.eps,
                                               name=layer.name, dtype=dtype)
    if isinstance(layer, GroupNorm):
        gn = spec.gn_spec(layer)
        return keras.layers.GroupNormalization(groups=gn.groups, axis=-1, epsilon=gn.eps, name=layer.name,
                                               dtype=dtype)
    if isinstance(layer, ReLU):
        return keras.layers.ReLU(name=layer.name, dtype=dtype)
    if isinstance(layer, MaxPool):
        return keras.layers.MaxPooling2D(layer.kernel, strides=layer.stride, padding="valid", name=layer.name,
                                         dtype=dtype)
    if isinstance(layer, Flatten):  # (H, W, C) order: fc1's kernel rows are permuted to match
        return keras.layers.Flatten(name=layer.name, dtype=dtype)
    if isinstance(layer, Dropout):
        return keras.layers.Dropout(layer.rate, seed=seed, name=layer.name, dtype=dtype)
    raise TypeError(f"unknown layer {layer!r}")


class AlexNet(keras.Model):
    """The spec's AlexNet on NCHW input; `dropout_masks` replace its Dropout layers by multiplications.

    A keras.Model holding the spec's layers (`layers_by_name`, named as the spec names them), built at construction.
    The input is transposed to NHWC inside.

    Args:
        spec: the network.
        dtype: the variables' and computation's dtype, "float32" or "float64" (a NumPy dtype is accepted).
        seed: seeds the Dropout layers' generators (keras.random.SeedGenerator; layer i gets seed + i). Always a
            seed: with seed=None the PyTorch backend ignores the generator's state and draws from torch's global
            generator instead (keras/src/backend/torch/random.py:144-148), so a checkpoint could not hold it.
            Default: 0.
    """

    def __init__(self, spec: AlexNetSpec, *, dtype: Any = "float32", seed: int = 0) -> None:
        net_dtype = framework_dtype(np.dtype(dtype))
        # The model's own dtype too: Layer.__call__ casts floating inputs to it (keras/src/layers/layer.py:851-897)
        super().__init__(name="alexnet", dtype=net_dtype)
        self.spec, self.net_dtype = spec, net_dtype
        self._order: list[Any] = []
        with dtype_scope(np.dtype(self.net_dtype)):
            for s in layer_shapes(spec):
                if isinstance(s.layer, Conv) and s.layer.padding and _padding(s.layer) == "valid":
                    pad = keras.layers.ZeroPadding2D(s.layer.padding, name=f"{s.layer.name}_pad", dtype=self.net_dtype)
                    pad.build(_nhwc(s.in_shape))
                    self._order.append(pad)
                built = _keras_layer(s.layer, s, spec, self.net_dtype, seed + len(self._order))
                padded = (s.in_shape[0], s.in_shape[1] + 2 * s.layer.padding, s.in_shape[2] + 2 * s.layer.padding) \
                    if isinstance(s.layer, Conv) and _padding(s.layer) == "valid" else s.in_shape
                built.build(_nhwc(padded))
                self._order.append(built)
        self.layers_by_name = {la.name: la for la in self._order}
        self.built = True

    def call(self, x: Any, training: bool = False, dropout_masks: list[Any] | None = None) -> Any:
        x = keras.ops.transpose(x, (0, 2, 3, 1))  # NCHW -> NHWC
        masks = None if dropout_masks is None else iter(dropout_masks)
        for layer in self._order:
            if isinstance(layer, keras.layers.Dropout) and masks is not None:
                x = x * next(masks)
            elif isinstance(layer, (keras.layers.Dropout, keras.layers.BatchNormalization)):
                x = layer(x, training=training)
            else:
                x = layer(x)
        return x

    def by_name(self) -> dict[str, keras.Variable]:
        """Canonical name -> the network's variable (shared, not copied)."""
        return {name: getattr(self.layers_by_name[layer_of(name)], _ATTRIBUTES[name.split(".", 1)[1]])
                for name in param_shapes(self.spec)}

    def load(self, params: dict[str, np.ndarray]) -> None:
        """Set the canonical arrays given, in place (names the network does not have are ignored).

        Values are cast to the network's dtype (exactly, when they already have it)."""
        variables = self.by_name()
        with dtype_scope(np.dtype(self.net_dtype)):
            for name, value in params.items():
                if name in variables:
                    variables[name].assign(_to_keras(self.spec, name, value).astype(self.net_dtype))


def _dense_after_flatten(spec: AlexNetSpec) -> str | None:
    """The name of the Dense layer that reads the flattened feature map (fc1), if any."""
    after_flatten = False
    for s in layer_shapes(spec):
        if isinstance(s.layer, Flatten):
            after_flatten = True
        elif isinstance(s.layer, Dense) and after_flatten:
            return s.layer.name
    return None


def _to_keras(spec: AlexNetSpec, name: str, value: np.ndarray) -> np.ndarray:
    """One canonical array (or a gradient or momentum buffer of that parameter) in its Keras variable's layout."""
    value = np.asarray(value)
    kind = name.split(".", 1)[1]
    if kind == "weight" and value.ndim == 4:
        return np.ascontiguousarray(value.transpose(2, 3, 1, 0))  # OIHW -> HWIO
    if kind == "weight":
        if layer_of(name) == _dense_after_flatten(spec):
            value = dense_columns_chw_to_hwc(value, flatten_shape(spec))
        return np.ascontiguousarray(value.T)  # (out, in) -> (in, out)
    return value


def _from_keras(spec: AlexNetSpec, name: str, value: np.ndarray) -> np.ndarray:
    """The canonical array from its Keras-layout value (the inverse of `_to_keras`)."""
    value = np.asarray(value)
    kind = name.split(".", 1)[1]
    if kind == "weight" and value.ndim == 4:
        return np.ascontiguousarray(value.transpose(3, 2, 0, 1))  # HWIO -> OIHW
    if kind == "weight":
        value = value.T
        if layer_of(name) == _dense_after_flatten(spec):
            value = dense_columns_hwc_to_chw(value, flatten_shape(spec))
        return np.ascontiguousarray(value)
    return value


def from_canonical(spec: AlexNetSpec, params: dict[str, np.ndarray], *, dtype: np.dtype,
                   device: str = "cpu") -> AlexNet:
    """`params` (canonical layout, checked) as this framework holds them, in `dtype` on `device`.

    Here: an AlexNet keras.Model holding them as its variables.
    """
    check_params(spec, params)
    with _device_scope(device):
        model = AlexNet(spec, dtype=dtype)
        model.load(params)
    return model


def _device_scope(device: str) -> contextlib.AbstractContextManager:
    """`keras.device` for a GPU; nothing for the CPU, every backend's default device on a CPU-only machine.

    Not `keras.device("cpu:0")` on the CPU: on the PyTorch backend a variable created inside it is a plain tensor,
    not a torch.nn.Parameter (`Parameter(...).to(get_device())` returns a copy,
    keras/src/backend/torch/core.py:110-113), and a layer holding one fails to build ("Only Tensors of floating
    point ... can require gradients").
    """
    name = framework_device(device)
    return contextlib.nullcontext() if name.startswith("cpu") else keras.device(name)


def to_canonical(spec: AlexNetSpec, model: AlexNet, names: Iterable[str] | None = None) -> dict[str, np.ndarray]:
    """Canonical arrays (NumPy copies, in the model's dtype) from what `from_canonical` returns.

    Args:
        spec: the network.
        model: an AlexNet of `spec`.
        names: the canonical names wanted. Default: every parameter and BN running statistic of `spec`.
    """
    variables = model.by_name()
    with dtype_scope(np.dtype(model.net_dtype)):
        return {name: _from_keras(spec, name, to_numpy(variables[name]))
                for name in (param_shapes(spec) if names is None else names)}
