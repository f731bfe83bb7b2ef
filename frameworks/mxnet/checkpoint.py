"""MXNet Gluon checkpoints: `.params` files, read with mx.nd.load and written with mx.nd.save.

Keys are those of `block.save_parameters` (`<child path>.<leaf>`: "1.gamma", "features.3.running_var") or of
`block.collect_params().save` (`<prefix><leaf>`: "hybridsequential0_batchnorm0_gamma"); a Module/export file's
"arg:" and "aux:" prefixes are dropped. BatchNorm: `gamma`, `beta`, `running_mean`, `running_var` (biased,
frameworks/mxnet/convention.py; no batch count); Conv2D `weight` (O, I, kh, kw) and Dense `weight` (out, in): the
canonical layout (mxnet/gluon/nn/conv_layers.py, basic_layers.py). Files are written in the save_parameters form,
which `block.load_parameters` reads back into a block with the same children.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from bnparity.frameworks.checkpoints import BNState, CheckpointError, check_tensors
from bnparity.frameworks.checkpoints import CheckpointFormat as _CheckpointFormat
from bnparity.reference.alexnet import AlexNetSpec

from ._mx import gluon, mx, nd
from .alexnet import AlexNet, from_canonical, to_canonical
from .convention import CONVENTION
from .convert import to_numpy
from .descriptor import DESCRIPTOR

_LEAVES = ("running_mean", "running_var", "gamma", "beta", "weight", "bias")  # longest first for prefix names


def _last_line(e: BaseException) -> str:
    """MXNet's errors start with a C++ traceback: the last non-empty line says what failed."""
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    return lines[-1] if lines else type(e).__name__


def _load(path: Path) -> dict[str, np.ndarray]:
    try:
        loaded = nd.load(str(path))
    except mx.base.MXNetError as e:
        raise CheckpointError(f"{path}: not an MXNet .params file ({_last_line(e)})") from None
    if not isinstance(loaded, dict):
        raise CheckpointError(f"{path}: the file holds an unnamed list of {len(loaded)} arrays, not named parameters")
    return {str(k): to_numpy(v) for k, v in loaded.items()}


class CheckpointFormat(_CheckpointFormat):
    """Gluon `.params` files: save_parameters names, OIHW convolution and (out, in) dense weights."""

    framework = DESCRIPTOR.name
    suffixes = (".params",)
    bn_leaves = {"gamma": "gamma", "beta": "beta", "running_mean": "running_mean", "running_var": "running_var"}
    weight_leaves = {"weight": "weight", "bias": "bias"}
    flatten_order = "CHW"
    conv_layout = "OIHW"
    dense_layout = "(out, in)"

    def read(self, path: Path) -> dict[str, np.ndarray]:
        path = Path(path)
        if not path.is_file():
            raise CheckpointError(f"{path}: no such file")
        return _load(path)

    def write(self, path: Path, tensors: dict[str, np.ndarray]) -> None:
        nd.save(str(path), {k: nd.array(np.asarray(v), dtype=np.asarray(v).dtype) for k, v in tensors.items()})

    def split_key(self, key: str) -> tuple[str, str]:
        name = key.split(":", 1)[1] if key.startswith(("arg:", "aux:")) else key
        layer, dot, leaf = name.rpartition(".")
        if dot and layer:
            return layer, leaf
        for leaf in _LEAVES:
            if name.endswith(f"_{leaf}") and len(name) > len(leaf) + 1:
                return name[:-len(leaf) - 1], leaf
        raise CheckpointError(f"unknown key {key!r}: a Gluon parameter name is <child path>.<leaf> or <prefix><leaf> "
                              f"with a leaf among {', '.join(_LEAVES)}")

    def native_key(self, layer: str, leaf: str) -> str:
        return f"{layer}.{leaf}"

    def weight_to_canonical(self, weight: np.ndarray) -> np.ndarray:
        return np.array(weight)  # OIHW and (out, in): the canonical layout

    def weight_from_canonical(self, weight: np.ndarray) -> np.ndarray:
        return np.array(weight)

    def bn_layer(self, state: BNState, ndim: int) -> tuple[gluon.nn.BatchNorm, None]:
        c = state.conventions
        if c.momentum is None:
            raise CheckpointError("mxnet: gluon.nn.BatchNorm has no cumulative average (momentum=None)")
        block = gluon.nn.BatchNorm(axis=1, momentum=c.momentum, epsilon=c.eps, in_channels=state.channels)
        block.initialize(ctx=mx.cpu())
        dtype = np.asarray(state.gamma).dtype
        block.cast(dtype.name)
        for name in ("gamma", "beta", "running_mean", "running_var"):
            getattr(block, name).set_data(nd.array(np.asarray(getattr(state, name)), dtype=dtype))
        return block, None

    def constructor(self, state: BNState) -> str:
        return CONVENTION.constructor.format(m=state.conventions.momentum, eps=state.conventions.eps)

    def alexnet_read(self, arch: AlexNetSpec, tensors: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray],
                                                                                        dict[str, int]]:
        model = AlexNet(arch)
        model.initialize(ctx=mx.cpu())
        with tempfile.TemporaryDirectory() as tmp:
            file = Path(tmp) / "model.params"
            model.save_parameters(str(file))
            check_tensors(_load(file), tensors, f"the {arch.name} AlexNet")
            self.write(file, tensors)
            model.load_parameters(str(file), ctx=mx.cpu())
        return to_canonical(arch, model), {}

    def alexnet_write(self, arch: AlexNetSpec, params: dict[str, np.ndarray],
                      batches_tracked: dict[str, int]) -> dict[str, np.ndarray]:
        model = from_canonical(arch, params, dtype=np.dtype(np.float32))
        with tempfile.TemporaryDirectory() as tmp:
            file = Path(tmp) / "model.params"
            model.save_parameters(str(file))
            return _load(file)

    def alexnet_logits(self, arch: AlexNetSpec, params: dict[str, np.ndarray], x: np.ndarray) -> np.ndarray:
        model = from_canonical(arch, params, dtype=np.dtype(np.float32))
        return to_numpy(model(nd.array(np.asarray(x, dtype=np.float32))))  # outside autograd.record: eval mode
