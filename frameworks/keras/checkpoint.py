"""Keras 3 checkpoints: the `.weights.h5` file of `model.save_weights` / `model.load_weights`, read and written with
h5py, in the layout keras/src/saving/saving_lib.py gives it.

The file addresses a layer by its class and position, not by its name: `layers/<class in snake case>[_k]/vars/<i>`
(saving_lib.py:957-986, `_save_container_state`; line 979: "Do NOT address the saveable via `saveable.name`"), the
name kept only as the `name` attribute of the `vars` group (saving_lib.py:798), and a layer's variables are numbered
in the order its build() creates them (`save_own_variables`, keras/src/layers/layer.py). So the keys here are
`<layer name>/<variable name>` ("bn1/gamma", "conv1/kernel"; nested layers' names joined with "/"), the names given
by the class's build order: BatchNormalization `gamma`, `beta`, `moving_mean`, `moving_variance`
(keras/src/layers/normalization/batch_normalization.py:242-275; the first two only with scale/center), Conv and
Dense `kernel`, `bias` (keras/src/layers/convolutional/base_conv.py:200-216, keras/src/layers/core/dense.py:134-150).
A BatchNormalization with three variables (scale or center off) is refused: the file does not say which of γ and β
it kept. Writing rebuilds the same paths for a flat model of the layers in key order (class counters as Keras
counts them), which `load_weights` of a Sequential, functional or this folder's AlexNet model accepts.

Layouts: Conv kernels (*spatial, I, O) (HWIO), Dense kernels (in, out); BatchNormalization's moving variance is the
biased σ²_B and its momentum weighs the old value (frameworks/keras/convention.py); no batch count. A file Keras wrote
lists its layers class by class (h5py's order: every BatchNormalization, then every Conv2D, ...): without --arch the
network's order across classes is not in the file. Files written here keep their order (track_order).
"""

from __future__ import annotations

import re
from pathlib import Path

import h5py
import keras
import ml_dtypes
import numpy as np

from bnparity.frameworks.checkpoints import (
    BNState,
    CheckpointError,
    channels_last_weight_from_canonical,
    channels_last_weight_to_canonical,
    check_tensors,
)
from bnparity.frameworks.checkpoints import CheckpointFormat as _CheckpointFormat
from bnparity.frameworks.conventions import convention
from bnparity.reference.alexnet import AlexNetSpec, param_shapes

from ._backend import DESCRIPTOR
from ._x64 import dtype_scope
from .alexnet import AlexNet, from_canonical, to_canonical
from .convert import to_numpy, to_tensor

_SUFFIX = ".weights.h5"  # keras/src/models/model.py: save_weights/load_weights require it
_BN_VARIABLES = ("gamma", "beta", "moving_mean", "moving_variance")
_COUNTER = re.compile(r"^(.*?)(?:_(\d+))?$")


def _variable_names(cls: str, count: int, where: str) -> list[str]:
    """The names of a layer's `count` variables, by its class (the snake-case path part) and build order."""
    if cls == "batch_normalization":
        if count == 3:
            raise CheckpointError(f"{where}: a BatchNormalization with 3 variables (scale or center was off): the "
                                  "file does not say whether it kept γ or β; pass --arch, or save it with both")
        return list(_BN_VARIABLES[4 - count:]) if count in (2, 4) else [str(i) for i in range(count)]
    if re.fullmatch(r"conv[123]d|dense", cls) and count <= 2:
        return ["kernel", "bias"][:count]
    if cls in ("layer_normalization", "group_normalization") and count == 2:
        return ["gamma", "beta"]
    if cls == "rms_normalization" and count == 1:
        return ["scale"]
    return [str(i) for i in range(count)]  # a class bnparity does not map: its indices (read_layers refuses them)


def _natural(name: str) -> tuple[str, int]:
    base, k = _COUNTER.match(name).groups()
    return base, int(k or 0)


def _children(group: h5py.Group) -> list[str]:
    """A group's members in their order: creation order when it tracks it (files written here), else Keras'
    class counters (h5py's alphabetical order would put batch_normalization_10 before _2)."""
    names = list(group.keys())
    if group.id.get_create_plist().get_link_creation_order():
        return names
    return sorted(names, key=_natural)


def _dataset(ds: h5py.Dataset) -> np.ndarray:
    value = np.array(ds[()])
    if ds.attrs.get("dtype") == "bfloat16":  # saving_lib.py: H5IOStore stores bfloat16 with a dtype attribute
        value = value.view(ml_dtypes.bfloat16)
    return value


def _walk(group: h5py.Group, names: tuple[str, ...], path: str, out: dict[str, np.ndarray]) -> None:
    """Every saveable under `group`: its variables under "<names>/<variable>", depth first, in order."""
    own = group.get("vars")
    if isinstance(own, h5py.Group) and len(own) and names:
        cls = _natural(path.rsplit("/", 1)[-1])[0]
        datasets = sorted(own.keys(), key=int)
        for index, name in zip(datasets, _variable_names(cls, len(datasets), path), strict=True):
            out["/".join((*names, name))] = _dataset(own[index])
    for child in _children(group):
        node = group[child]
        if child == "vars" or not isinstance(node, h5py.Group):
            continue
        vars_group = node.get("vars")
        label = vars_group.attrs.get("name") if isinstance(vars_group, h5py.Group) else None
        _walk(node, names + ((str(label),) if label is not None else ()), f"{path}/{child}", out)


def _class_of(leaves: dict[str, np.ndarray], layer: str) -> str:
    """The Keras class (snake case) a layer's variables belong to, as the file names its group."""
    if "moving_mean" in leaves and "moving_variance" in leaves:
        return "batch_normalization"
    kernel = leaves.get("kernel")
    if kernel is not None and kernel.ndim == 2:
        return "dense"
    if kernel is not None and 3 <= kernel.ndim <= 5:
        return f"conv{kernel.ndim - 2}d"
    raise CheckpointError(f"{layer}: no Keras layer holds {', '.join(leaves)} (bnparity writes BatchNormalization, "
                          "Conv and Dense layers)")


class CheckpointFormat(_CheckpointFormat):
    """Keras `.weights.h5` files: HWIO convolution and (in, out) dense kernels, layers addressed by class."""

    framework = DESCRIPTOR.name
    suffixes = (_SUFFIX,)
    bn_leaves = {"gamma": "gamma", "beta": "beta", "running_mean": "moving_mean", "running_var": "moving_variance"}
    weight_leaves = {"weight": "kernel", "bias": "bias"}
    flatten_order = "HWC"
    conv_layout = "HWIO"
    dense_layout = "(in, out)"

    def read(self, path: Path) -> dict[str, np.ndarray]:
        path = Path(path)
        if not path.is_file():
            raise CheckpointError(f"{path}: no such file")
        if not h5py.is_hdf5(path):
            raise CheckpointError(f"{path}: not an HDF5 file (a Keras .weights.h5 is one)")
        out: dict[str, np.ndarray] = {}
        with h5py.File(path, "r") as f:
            if "layers" not in f and "vars" not in f:
                raise CheckpointError(f"{path}: not a Keras 3 weights file (no 'layers' or 'vars' group; a Keras 2 "
                                      "legacy .h5 is not read)")
            _walk(f, (), "", out)
        return out

    def write(self, path: Path, tensors: dict[str, np.ndarray]) -> None:
        layers: dict[str, dict[str, np.ndarray]] = {}
        for key, value in tensors.items():
            layer, leaf = key.rsplit("/", 1)
            layers.setdefault(layer, {})[leaf] = np.asarray(value)
        used: dict[str, int] = {}
        with h5py.File(path, "w", track_order=True) as f:
            root = f.create_group("layers", track_order=True)
            for layer, leaves in layers.items():
                cls = _class_of(leaves, layer)
                k = used.get(cls, 0)
                used[cls] = k + 1
                group = root.create_group(cls if k == 0 else f"{cls}_{k}", track_order=True)
                own = group.create_group("vars", track_order=True)
                own.attrs["name"] = layer
                order = _BN_VARIABLES if cls == "batch_normalization" else ("kernel", "bias")
                unknown = set(leaves) - set(order)
                if unknown:
                    raise CheckpointError(f"{layer}: a Keras {cls} layer has no variable {', '.join(sorted(unknown))}")
                for i, name in enumerate(n for n in order if n in leaves):
                    own[str(i)] = leaves[name]

    def split_key(self, key: str) -> tuple[str, str]:
        parts = key.split("/")
        if len(parts) < 2 or not all(parts):
            raise CheckpointError(f"unknown key {key!r}: a Keras weights key is <layer name>/<variable name>")
        return ".".join(parts[:-1]), parts[-1]

    def native_key(self, layer: str, leaf: str) -> str:
        return f"{layer.replace('.', '/')}/{leaf}"

    def weight_to_canonical(self, weight: np.ndarray) -> np.ndarray:
        return channels_last_weight_to_canonical(weight)

    def weight_from_canonical(self, weight: np.ndarray) -> np.ndarray:
        return channels_last_weight_from_canonical(weight)

    def bn_layer(self, state: BNState, ndim: int) -> tuple[keras.layers.BatchNormalization, None]:
        c = state.conventions
        if c.momentum is None:
            raise CheckpointError(f"{self.framework}: keras.layers.BatchNormalization has no cumulative average "
                                  "(momentum=None)")
        momentum = c.momentum if c.momentum_weighs == "old" else 1.0 - c.momentum
        dtype = np.asarray(state.gamma).dtype
        with dtype_scope(dtype):
            layer = keras.layers.BatchNormalization(axis=-1, momentum=momentum, epsilon=c.eps, dtype=dtype.name)
            layer.build((None,) * (ndim - 1) + (state.channels,))
            for name, value in zip(_BN_VARIABLES, (state.gamma, state.beta, state.running_mean, state.running_var),
                                   strict=True):
                getattr(layer, name).assign(to_tensor(np.asarray(value), dtype))
        return layer, None

    def constructor(self, state: BNState) -> str:
        return convention(self.framework).constructor.format(m=state.conventions.momentum, eps=state.conventions.eps,
                                                             fast=False)

    @staticmethod
    def _native(model: AlexNet) -> dict[str, keras.Variable]:
        """The network's parameters and moving statistics by key, in the network's order (a Dropout's seed
        generator state is no weight: save_weights leaves it out)."""
        return {f"{name.split('.', 1)[0]}/{v.name}": v for name, v in model.by_name().items()}

    def alexnet_read(self, arch: AlexNetSpec, tensors: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray],
                                                                                        dict[str, int]]:
        zeros = {name: np.zeros(shape, np.float32) for name, shape in param_shapes(arch).items()}
        model = from_canonical(arch, zeros, dtype=np.dtype(np.float32))
        variables = self._native(model)
        check_tensors({k: to_numpy(v) for k, v in variables.items()}, tensors, f"the {arch.name} AlexNet")
        for key, v in variables.items():
            v.assign(np.asarray(tensors[key], dtype=np.float32))
        return to_canonical(arch, model), {}

    def alexnet_write(self, arch: AlexNetSpec, params: dict[str, np.ndarray],
                      batches_tracked: dict[str, int]) -> dict[str, np.ndarray]:
        model = from_canonical(arch, params, dtype=np.dtype(np.float32))
        return {key: to_numpy(v) for key, v in self._native(model).items()}

    def alexnet_logits(self, arch: AlexNetSpec, params: dict[str, np.ndarray], x: np.ndarray) -> np.ndarray:
        model = from_canonical(arch, params, dtype=np.dtype(np.float32))
        return to_numpy(model(keras.ops.convert_to_tensor(np.asarray(x, dtype=np.float32)), training=False))
