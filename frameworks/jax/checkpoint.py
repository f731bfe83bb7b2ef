"""JAX/Flax checkpoints: a linen variables dict {"params": {layer: {...}}, "batch_stats": {layer: {...}}} as msgpack
(flax.serialization.msgpack_serialize / msgpack_restore) or as `.npz` with "/"-joined keys ("params/bn1/scale").

BatchNorm: params "scale" (γ) and "bias" (β), batch_stats "mean" and "var" (biased, frameworks/jax/convention.py; no
batch count); nn.Conv's "kernel" is (kh, kw, I, O) (HWIO, flax/linen/linear.py: kernel_shape = kernel_size +
(in_features // feature_group_count, features)), nn.Dense's "kernel" (in, out) (linear.py: Dense.__call__,
(jnp.shape(inputs)[-1], self.features)): the maps of frameworks/jax/alexnet.py (_to_flax / _from_flax), for any
number of spatial axes. A nested module's path is the layer name's "."-separated parts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import serialization

from bnparity.frameworks.checkpoints import (
    BNState,
    CheckpointError,
    channels_last_weight_from_canonical,
    channels_last_weight_to_canonical,
    check_tensors,
)
from bnparity.frameworks.checkpoints import CheckpointFormat as _CheckpointFormat
from bnparity.reference.alexnet import AlexNetSpec, param_shapes

from .alexnet import AlexNet, from_canonical, to_canonical
from .convention import CONVENTION
from .convert import to_numpy
from .descriptor import DESCRIPTOR

_COLLECTIONS = ("params", "batch_stats")


def _flatten(tree: Any, prefix: str = "") -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if hasattr(value, "items"):
            out |= _flatten(value, f"{name}/")
        else:
            out[name] = np.asarray(to_numpy(value) if isinstance(value, jax.Array) else value)
    return out


def _nest(flat: dict[str, np.ndarray]) -> dict[str, Any]:
    tree: dict[str, Any] = {}
    for key, value in flat.items():
        *path, leaf = key.split("/")
        node = tree
        for part in path:
            node = node.setdefault(part, {})
        node[leaf] = value
    return tree


class CheckpointFormat(_CheckpointFormat):
    """Flax variables files (`.msgpack`, `.npz`): HWIO convolution and (in, out) dense kernels."""

    framework = DESCRIPTOR.name
    suffixes = (".msgpack", ".npz")
    bn_leaves = {"gamma": "params/scale", "beta": "params/bias", "running_mean": "batch_stats/mean",
                 "running_var": "batch_stats/var"}
    weight_leaves = {"weight": "params/kernel", "bias": "params/bias"}
    flatten_order = "HWC"
    conv_layout = "HWIO"
    dense_layout = "(in, out)"

    def read(self, path: Path) -> dict[str, np.ndarray]:
        path = Path(path)
        if not path.is_file():
            raise CheckpointError(f"{path}: no such file")
        if path.suffix == ".npz":
            try:
                with np.load(path, allow_pickle=False) as data:
                    return {name: data[name] for name in data.files}
            except Exception as e:  # noqa: BLE001 (not a zip, or pickled object arrays)
                raise CheckpointError(f"{path}: not a .npz of plain arrays ({type(e).__name__}: {e})") from None
        try:
            tree = serialization.msgpack_restore(path.read_bytes())
        except Exception as e:  # noqa: BLE001 (msgpack raises several types for a foreign file)
            raise CheckpointError(f"{path}: not a Flax msgpack file ({type(e).__name__}: {e})") from None
        if not isinstance(tree, dict):
            raise CheckpointError(f"{path}: expected a variables dict. Received: {type(tree).__name__}")
        return _flatten(tree)

    def write(self, path: Path, tensors: dict[str, np.ndarray]) -> None:
        path = Path(path)
        if path.suffix == ".npz":
            with path.open("wb") as f:
                np.savez(f, **tensors)
        else:
            path.write_bytes(serialization.msgpack_serialize(_nest(tensors)))

    def split_key(self, key: str) -> tuple[str, str]:
        parts = key.split("/")
        if len(parts) < 3 or parts[0] not in _COLLECTIONS or not all(parts):
            raise CheckpointError(f"unknown key {key!r}: a Flax variable is <collection>/<module path>/<name>, the "
                                  f"collection one of {', '.join(_COLLECTIONS)}")
        return ".".join(parts[1:-1]), f"{parts[0]}/{parts[-1]}"

    def native_key(self, layer: str, leaf: str) -> str:
        collection, name = leaf.split("/")
        return f"{collection}/{layer.replace('.', '/')}/{name}"

    def weight_to_canonical(self, weight: np.ndarray) -> np.ndarray:
        return channels_last_weight_to_canonical(weight)

    def weight_from_canonical(self, weight: np.ndarray) -> np.ndarray:
        return channels_last_weight_from_canonical(weight)

    def bn_layer(self, state: BNState, ndim: int) -> tuple[nn.BatchNorm, dict[str, dict[str, jax.Array]]]:
        c = state.conventions
        if c.momentum is None:
            raise CheckpointError("jax: flax.linen.BatchNorm has no cumulative average (momentum=None)")
        dtype = np.asarray(state.gamma).dtype
        layer = nn.BatchNorm(use_running_average=None, axis=-1, momentum=c.momentum, epsilon=c.eps,
                             use_fast_variance=False, dtype=dtype, param_dtype=dtype)
        variables = {"params": {"scale": jnp.asarray(state.gamma), "bias": jnp.asarray(state.beta)},
                     "batch_stats": {"mean": jnp.asarray(state.running_mean), "var": jnp.asarray(state.running_var)}}
        return layer, variables

    def constructor(self, state: BNState) -> str:
        return CONVENTION.constructor.format(m=state.conventions.momentum, eps=state.conventions.eps, fast=False)

    def _expected(self, arch: AlexNetSpec) -> dict[str, np.ndarray]:
        zeros = {name: np.zeros(shape, np.float32) for name, shape in param_shapes(arch).items()}
        return _flatten(from_canonical(arch, zeros, dtype=np.dtype(np.float32)))

    def alexnet_read(self, arch: AlexNetSpec, tensors: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray],
                                                                                        dict[str, int]]:
        check_tensors(self._expected(arch), tensors, f"the {arch.name} AlexNet")
        return to_canonical(arch, _nest(tensors)), {}

    def alexnet_write(self, arch: AlexNetSpec, params: dict[str, np.ndarray],
                      batches_tracked: dict[str, int]) -> dict[str, np.ndarray]:
        return _flatten(from_canonical(arch, params, dtype=np.dtype(np.float32)))

    def alexnet_logits(self, arch: AlexNetSpec, params: dict[str, np.ndarray], x: np.ndarray) -> np.ndarray:
        variables = from_canonical(arch, params, dtype=np.dtype(np.float32))
        y = AlexNet(spec=arch).apply(variables, jnp.asarray(np.asarray(x, dtype=np.float32)), train=False)
        return to_numpy(y)
