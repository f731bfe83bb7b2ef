"""AlexNet in Flax (linen): the spec's layers channels-last, canonical parameters converted in and out.

Every framework folder's alexnet.py has the same three names: `AlexNet` (the framework's network),
`from_canonical` (canonical arrays -> the framework's form) and `to_canonical` (back; layout in
bnparity.reference.alexnet).

Flax runs NHWC, so the conversion is not a copy:
- convolution kernels: canonical OIHW <-> Flax HWIO;
- Dense kernels: canonical (out, in) <-> Flax (in, out);
- fc1, the Dense after Flatten, additionally has its input rows permuted: Flax flattens its (H, W, C) map in
  H, W, C order, the canonical network (C, H, W) (`dense_columns_chw_to_hwc`, the classic porting bug);
- BN: gamma/beta <-> "scale"/"bias" (collection "params"), running_mean/var <-> "mean"/"var" (collection
  "batch_stats"). Flax's momentum is set to 1 − spec.bn.new_weight (it weighs the old value; Flax's default
  is 0.99); its running variance is the biased σ²_B whatever the spec says (flax/linen/normalization.py);
  use_fast_variance=False selects the two-pass variance of torch and MXNet instead of Flax's default
  E[x²] − E[x]² (which the layer-parity suite measures; in this network, in float64, it made the gradients
  differ from torch's by up to 5.1e-14 of a layer's largest, against 2.1e-14 with two passes).
- GN: gamma/beta <-> "scale"/"bias" (collection "params"), per channel as the canonical layout. nn.GroupNorm
  (num_groups=G, epsilon=ε, use_fast_variance=False: two passes, as for BN) normalizes channels-last; on the
  (N, F) output of a Dense layer its default reduction axes are the features alone (flax/linen/normalization.py,
  GroupNorm.__call__: range(1, ndim − 1) + [-1]), i.e. per sample and group, as torch does.
The same maps convert gradients, which transform like the parameters (they are pure re-layouts).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from bnparity.reference.alexnet import (
    AlexNetSpec,
    BatchNorm,
    Conv,
    Dense,
    Dropout,
    Flatten,
    GroupNorm,
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

# Full float32 products on every backend (TPUs and some GPUs would otherwise use bfloat16/TF32 passes).
PRECISION = jax.lax.Precision.HIGHEST


class AlexNet(nn.Module):
    """The spec's AlexNet on NCHW input; `dropout_masks` replace its Dropout layers by multiplications.

    A flax.linen Module: it holds no arrays, its variables are what `from_canonical` returns. The input is
    transposed to NHWC inside.

    Attributes:
        spec: the network.
        dtype: the computation and parameter dtype (float32, or float64 under x64).
        axis_name: the mapped axis (jax.shard_map, jax.pmap) over which BatchNorm averages its batch statistics
            (synchronized BN); None: each device's own batch.
    """

    spec: AlexNetSpec
    dtype: Any = jnp.float32
    axis_name: str | None = None

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool, dropout_masks: list[jax.Array] | None = None) -> jax.Array:
        x = jnp.transpose(x, (0, 2, 3, 1))  # NCHW -> NHWC
        masks = None if dropout_masks is None else iter(dropout_masks)
        kw = dict(dtype=self.dtype, param_dtype=self.dtype)
        for layer in self.spec.layers:
            if isinstance(layer, Conv):
                p = layer.padding
                x = nn.Conv(layer.out_channels, (layer.kernel, layer.kernel), strides=(layer.stride, layer.stride),
                            padding=((p, p), (p, p)), precision=PRECISION, name=layer.name, **kw)(x)
            elif isinstance(layer, Dense):
                x = nn.Dense(layer.out_features, precision=PRECISION, name=layer.name, **kw)(x)
            elif isinstance(layer, BatchNorm):
                # Two-pass variance, as torch and MXNet (Flax's default is E[x²] − E[x]²).
                x = nn.BatchNorm(use_running_average=not train, axis=-1, momentum=framework_momentum(self.spec.bn),
                                 epsilon=self.spec.bn.eps, use_fast_variance=False, axis_name=self.axis_name,
                                 name=layer.name, **kw)(x)
            elif isinstance(layer, GroupNorm):
                gn = self.spec.gn_spec(layer)
                x = nn.GroupNorm(num_groups=gn.groups, epsilon=gn.eps, use_fast_variance=gn.variance == "fast",
                                 name=layer.name, **kw)(x)
            elif isinstance(layer, ReLU):
                x = nn.relu(x)
            elif isinstance(layer, MaxPool):
                x = nn.max_pool(x, (layer.kernel, layer.kernel), strides=(layer.stride, layer.stride),
                                padding="VALID")
            elif isinstance(layer, Flatten):
                x = x.reshape((x.shape[0], -1))  # (H, W, C) order: fc1's kernel rows are permuted to match
            elif isinstance(layer, Dropout):
                if masks is not None:
                    x = x * next(masks)
                else:
                    x = nn.Dropout(layer.rate, deterministic=not train, name=layer.name)(x)
            else:
                raise TypeError(f"unknown layer {layer!r}")
        return x


def _dense_after_flatten(spec: AlexNetSpec) -> str | None:
    """The name of the Dense layer that reads the flattened feature map (fc1), if any."""
    after_flatten = False
    for s in layer_shapes(spec):
        if isinstance(s.layer, Flatten):
            after_flatten = True
        elif isinstance(s.layer, Dense) and after_flatten:
            return s.layer.name
    return None


def _to_flax(spec: AlexNetSpec, name: str, value: np.ndarray) -> tuple[str, str, str, np.ndarray]:
    """(collection, layer, leaf, array) of one canonical array in Flax's layout."""
    layer, kind = layer_of(name), name.split(".", 1)[1]
    if kind == "weight" and value.ndim == 4:
        return "params", layer, "kernel", value.transpose(2, 3, 1, 0)  # OIHW -> HWIO
    if kind == "weight":
        if layer == _dense_after_flatten(spec):
            value = dense_columns_chw_to_hwc(value, flatten_shape(spec))
        return "params", layer, "kernel", value.T  # (out, in) -> (in, out)
    leaf = {"bias": "bias", "gamma": "scale", "beta": "bias", "running_mean": "mean", "running_var": "var"}[kind]
    collection = "batch_stats" if kind.startswith("running_") else "params"
    return collection, layer, leaf, value


def _from_flax(spec: AlexNetSpec, name: str, value: np.ndarray) -> np.ndarray:
    """A canonical array from its Flax-layout value (the inverse of `_to_flax`)."""
    layer, kind = layer_of(name), name.split(".", 1)[1]
    if kind == "weight" and value.ndim == 4:
        return value.transpose(3, 2, 0, 1)  # HWIO -> OIHW
    if kind == "weight":
        value = value.T
        if layer == _dense_after_flatten(spec):
            value = dense_columns_hwc_to_chw(value, flatten_shape(spec))
        return value
    return value


def from_canonical(spec: AlexNetSpec, params: dict[str, np.ndarray], *, dtype: np.dtype,
                   device: str = "cpu") -> dict[str, dict]:
    """`params` (canonical layout, checked) as this framework holds them, in `dtype` on `device`.

    Here: the Flax variables {"params": ..., "batch_stats": ...} of AlexNet (a linen Module holds no arrays).
    A dict of canonical arrays of the same shapes (momentum buffers, say) converts the same way.
    """
    check_params(spec, params)
    dtype = framework_dtype(dtype)
    variables: dict[str, dict] = {"params": {}, "batch_stats": {}}
    for name in param_shapes(spec):
        collection, layer, leaf, value = _to_flax(spec, name, np.asarray(params[name]))
        variables[collection].setdefault(layer, {})[leaf] = np.ascontiguousarray(value, dtype=dtype)
    with dtype_scope(dtype):
        return jax.device_put(variables, framework_device(device))


def to_canonical(spec: AlexNetSpec, variables: dict[str, dict],
                 names: Iterable[str] | None = None) -> dict[str, np.ndarray]:
    """Canonical arrays (NumPy copies, in the model's dtype) from what `from_canonical` returns.

    Gradients and optimizer buffers convert the same way, as {"params": tree} with their `names`: they transform
    like the parameters (pure re-layouts).

    Args:
        spec: the network.
        variables: Flax variables of AlexNet(spec), or a tree of the same form holding only `names`.
        names: the canonical names wanted. Default: every parameter and BN running statistic of `spec`.
    """
    shapes = param_shapes(spec)
    out = {}
    for name in shapes if names is None else names:
        collection, layer, leaf, _ = _to_flax(spec, name, np.zeros(shapes[name]))
        out[name] = np.ascontiguousarray(_from_flax(spec, name, to_numpy(variables[collection][layer][leaf])))
    return out
