"""PyTorch checkpoints: `.pt` state dicts, read with torch.load(weights_only=True) and written with torch.save.

Keys are `<module path>.<leaf>`: BatchNorm's `weight` (γ), `bias` (β), `running_mean`, `running_var` (unbiased,
frameworks/torch/convention.py) and `num_batches_tracked`; Conv2d's `weight` (O, I, kh, kw) and Linear's (out, in),
the canonical layout itself. torch.load(weights_only=True) refuses any pickle that is not plain tensors and containers
(torch/_weights_only_unpickler.py), so a pickled model or arbitrary object is an error here, never executed.
"""

from __future__ import annotations

import pickle
import re
import warnings
import zipfile
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch

from bnparity.frameworks.checkpoints import BNState, CheckpointError, check_tensors
from bnparity.frameworks.checkpoints import CheckpointFormat as _CheckpointFormat
from bnparity.reference.alexnet import AlexNetSpec

from .alexnet import AlexNet, from_canonical, to_canonical
from .convention import CONVENTION
from .convert import to_numpy
from .descriptor import DESCRIPTOR

_BN_OF_RANK = {2: torch.nn.BatchNorm1d, 3: torch.nn.BatchNorm1d, 4: torch.nn.BatchNorm2d, 5: torch.nn.BatchNorm3d}


def _first_line(e: BaseException) -> str:
    return next((line.strip() for line in str(e).splitlines() if line.strip()), type(e).__name__)


class CheckpointFormat(_CheckpointFormat):
    """torch state dicts (`.pt`): module-path keys, OIHW convolution and (out, in) dense weights."""

    framework = DESCRIPTOR.name
    suffixes = (".pt", ".pth")
    bn_leaves = {"gamma": "weight", "beta": "bias", "running_mean": "running_mean", "running_var": "running_var",
                 "batches_tracked": "num_batches_tracked"}
    weight_leaves = {"weight": "weight", "bias": "bias"}
    flatten_order = "CHW"
    conv_layout = "OIHW"
    dense_layout = "(out, in)"
    cumulative_average = True

    def read(self, path: Path) -> dict[str, np.ndarray]:
        path = Path(path)
        if not path.is_file():
            raise CheckpointError(f"{path}: no such file")
        with path.open("rb") as f:
            head = f.read(2)
        if not zipfile.is_zipfile(path) and head[:1] != b"\x80":  # torch.save's zip archive, or a legacy pickle
            raise CheckpointError(f"{path}: not a PyTorch checkpoint (neither a torch.save archive nor a pickle)")
        try:
            with warnings.catch_warnings():  # a protocol-4 pickle warns before it is refused
                warnings.simplefilter("ignore", UserWarning)
                state = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as e:
            found = re.search(r"Unsupported global: GLOBAL (\S+)", str(e))
            what = f"it needs {found[1]}" if found else "it holds what is not tensors and plain containers"
            raise CheckpointError(f"{path}: torch.load(weights_only=True) refused it ({what}): a pickle of objects, "
                                  "not a state dict; save model.state_dict()") from None
        except Exception as e:  # noqa: BLE001 (a truncated or foreign file: torch raises several types)
            raise CheckpointError(f"{path}: not a PyTorch checkpoint ({type(e).__name__}: {_first_line(e)})") from None
        if not isinstance(state, dict):
            raise CheckpointError(f"{path}: expected a state dict (name -> tensor). Received: {type(state).__name__}")
        out = {}
        for key, value in state.items():
            if not isinstance(value, torch.Tensor):
                raise CheckpointError(f"{path}: {key!r} holds a {type(value).__name__}, not a tensor: save "
                                      "model.state_dict() itself, not a dict around it")
            out[str(key)] = to_numpy(value)
        return out

    def write(self, path: Path, tensors: dict[str, np.ndarray]) -> None:
        torch.save(OrderedDict((k, torch.from_numpy(np.array(v, order="C"))) for k, v in tensors.items()), path)

    def split_key(self, key: str) -> tuple[str, str]:
        layer, dot, leaf = key.rpartition(".")
        if not dot or not layer:
            raise CheckpointError(f"unknown key {key!r}: a state dict key is <module path>.<tensor>")
        return layer, leaf

    def native_key(self, layer: str, leaf: str) -> str:
        return f"{layer}.{leaf}"

    def weight_to_canonical(self, weight: np.ndarray) -> np.ndarray:
        return np.array(weight)  # OIHW and (out, in): the canonical layout

    def weight_from_canonical(self, weight: np.ndarray) -> np.ndarray:
        return np.array(weight)

    def bn_layer(self, state: BNState, ndim: int) -> tuple[torch.nn.Module, None]:
        c = state.conventions
        layer = _BN_OF_RANK[ndim](state.channels, eps=c.eps, momentum=c.momentum)
        layer = layer.to(torch.from_numpy(np.asarray(state.gamma)).dtype)
        with torch.no_grad():
            for name, value in (("weight", state.gamma), ("bias", state.beta), ("running_mean", state.running_mean),
                                ("running_var", state.running_var)):
                getattr(layer, name).copy_(torch.from_numpy(np.asarray(value, dtype=np.float64)))
            layer.num_batches_tracked.fill_(state.batches_tracked or 0)
        return layer, None

    def constructor(self, state: BNState) -> str:
        m = state.conventions.momentum
        text = CONVENTION.constructor.replace("(C,", f"({state.channels},").replace("{m:g}", "None" if m is None
                                                                                     else "{m:g}")
        return text.format(m=m, eps=state.conventions.eps)

    def alexnet_read(self, arch: AlexNetSpec, tensors: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray],
                                                                                        dict[str, int]]:
        model = AlexNet(arch)
        check_tensors({k: to_numpy(v) for k, v in model.state_dict().items()}, tensors, f"the {arch.name} AlexNet")
        model.load_state_dict({k: torch.from_numpy(np.array(v, order="C")) for k, v in tensors.items()})
        batches = {name: int(t) for name, t in ((k.split(".")[-2], v) for k, v in model.state_dict().items()
                                                if k.endswith(".num_batches_tracked"))}
        return to_canonical(arch, model), batches

    def alexnet_write(self, arch: AlexNetSpec, params: dict[str, np.ndarray],
                      batches_tracked: dict[str, int]) -> dict[str, np.ndarray]:
        model = from_canonical(arch, params, dtype=np.dtype(np.float32))
        for name, module in model.layers.named_children():
            if name in batches_tracked:
                module.num_batches_tracked.fill_(batches_tracked[name])
        return {k: to_numpy(v) for k, v in model.state_dict().items()}

    def alexnet_logits(self, arch: AlexNetSpec, params: dict[str, np.ndarray], x: np.ndarray) -> np.ndarray:
        model = from_canonical(arch, params, dtype=np.dtype(np.float32)).eval()
        with torch.no_grad():
            return to_numpy(model(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))))
