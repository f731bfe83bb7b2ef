"""Reading a user's own PyTorch normalization layer: torch.nn.BatchNorm1d/2d/3d (and SyncBatchNorm, lazy ones once
initialized), InstanceNorm1d/2d/3d, LayerNorm, GroupNorm and RMSNorm.

Every convention is read off the module (ε, momentum and what it weighs, affine, running statistics, the
num_batches_tracked of a cumulative average, the shapes of γ and β); those torch does not let a module configure
(the unbiased running variance, the two-pass σ²) are torch's, as frameworks/torch/convention.py states them. The
session runs a deep copy of the module (its current parameters and buffers), so the user's module is never touched.
"""

from __future__ import annotations

import copy

import numpy as np
import torch

from bnparity.frameworks.base import LayerSession
from bnparity.frameworks.user_layers import UserLayer, another_frameworks_object
from bnparity.frameworks.user_layers import UserLayers as _UserLayersBase
from bnparity.reference.spec import BNSpec, GNSpec, INSpec, LayerSpec, LNSpec, RMSSpec

from .convert import _ModuleSession, to_numpy
from .descriptor import DESCRIPTOR

_BatchNorm = torch.nn.modules.batchnorm._BatchNorm
_InstanceNorm = torch.nn.modules.instancenorm._InstanceNorm

_LAYOUTS = {"BatchNorm1d": "NC or NCL", "BatchNorm2d": "NCHW", "BatchNorm3d": "NCDHW", "InstanceNorm1d": "NCL",
            "InstanceNorm2d": "NCHW", "InstanceNorm3d": "NCDHW", "SyncBatchNorm": "NC..."}
_TWO_PASS = "two-pass (torch's CPU kernel; not configurable)"


class _CopySession(_ModuleSession):
    """A deep copy of the user's module through the layer protocol, inputs cast to its parameters' dtype and
    moved to its device (any torch float dtype, bfloat16 included)."""

    def __init__(self, module: torch.nn.Module, dtype: torch.dtype, device: torch.device) -> None:
        module = copy.deepcopy(module)
        for p in (getattr(module, "weight", None), getattr(module, "bias", None)):
            if isinstance(p, torch.nn.Parameter):
                p.requires_grad_(True)  # dγ and dβ even when the user froze them (on the copy only)
        super().__init__(module, np.dtype("float64"))
        self.torch_dtype, self.device = dtype, device

    def _tensor(self, a: np.ndarray) -> torch.Tensor:
        t = torch.from_numpy(np.ascontiguousarray(np.asarray(a, dtype=np.float64)))
        return t.to(device=self.device, dtype=self.torch_dtype).contiguous(memory_format=self.memory_format)


def _values(t: torch.Tensor | None) -> np.ndarray | None:
    """A parameter or buffer as float64 NumPy (None stays None)."""
    return None if t is None else to_numpy(t).astype(np.float64)


def _per_channel(t: torch.Tensor) -> tuple[float, ...]:
    return tuple(float(v) for v in _values(t).reshape(-1))


def _kind(layer: torch.nn.Module, base: str) -> str:
    """How the object is named: "torch.nn.BatchNorm2d", or its own class for a subclass of one."""
    cls = type(layer)
    if getattr(torch.nn, cls.__name__, None) is cls:
        return f"torch.nn.{cls.__name__}"
    return f"{cls.__module__}.{cls.__qualname__} (a torch.nn.{base})"


def _base_name(layer: torch.nn.Module, bases: tuple[str, ...]) -> str:
    """The first torch.nn class among `bases` that `layer` is an instance of."""
    for name in bases:
        if isinstance(layer, getattr(torch.nn, name)):
            return name
    return bases[-1]


def _tensors(layer: torch.nn.Module) -> list[torch.Tensor]:
    return [t for t in (*layer.parameters(recurse=False), *layer.buffers(recurse=False)) if t.is_floating_point()]


def _dtype_and_device(layer: torch.nn.Module) -> tuple[torch.dtype, torch.device]:
    """The parameters' (else the buffers', else torch's default) dtype, and the module's device."""
    tensors = _tensors(layer)
    if not tensors:
        return torch.get_default_dtype(), torch.device("cpu")
    return tensors[0].dtype, tensors[0].device


def _running(layer: torch.nn.Module, *, instance: bool) -> tuple[dict[str, object], dict[str, str]]:
    """The RunningStatsSpec fields of a BatchNorm or InstanceNorm module, and their wording.

    What the module does is read, not only its flags: a BatchNorm whose track_running_stats was switched off after
    construction still normalizes with its buffers in eval (they are frozen: momentum 0); one whose buffers are None
    uses batch statistics in eval. An InstanceNorm uses its buffers only when track_running_stats is True.
    """
    flag, buffers = bool(layer.track_running_stats), layer.running_mean is not None
    tracked = buffers and (flag or not instance)
    fields: dict[str, object] = {"running_var": "unbiased", "track_running_stats": tracked}
    words = {"track_running_stats": f"track_running_stats={flag}",
             "running_var": "unbiased (× m/(m − 1); torch always stores it so)"}
    momentum = layer.momentum
    if tracked and not flag:
        fields.update(momentum=0.0, momentum_weighs="new")
        words["momentum"] = "frozen (track_running_stats=False with running buffers: eval uses them, never updated)"
    elif momentum is None and instance:
        # F.instance_norm gets `momentum if not None else 0.0`: the running statistics are frozen.
        fields.update(momentum=0.0, momentum_weighs="new")
        words["momentum"] = "None (InstanceNorm: weight 0.0 on the new value, the running statistics stay frozen)"
    elif momentum is None:
        batches = int(layer.num_batches_tracked) if getattr(layer, "num_batches_tracked", None) is not None else 0
        fields.update(momentum=None, momentum_weighs="new", batches_tracked=batches)
        words["momentum"] = f"None (cumulative average: 1/k on the new value, num_batches_tracked={batches})"
    else:
        fields.update(momentum=float(momentum), momentum_weighs="new")
        words["momentum"] = f"{float(momentum):g} on the new value"
    if tracked:
        fields.update(init_running_mean=_per_channel(layer.running_mean),
                      init_running_var=_per_channel(layer.running_var))
        words["init_running_mean"] = "the module's running_mean buffer"
        words["init_running_var"] = "the module's running_var buffer"
    elif flag:
        words["track_running_stats"] = "track_running_stats=True but running_mean is None (batch statistics in eval)"
    return fields, words


class UserLayers(_UserLayersBase):
    """Reads torch.nn normalization modules: their spec, γ and β, running statistics, and a session on a copy."""

    framework = DESCRIPTOR.name
    supported = ("torch.nn.BatchNorm1d", "torch.nn.BatchNorm2d", "torch.nn.BatchNorm3d", "torch.nn.SyncBatchNorm",
                 "torch.nn.InstanceNorm1d", "torch.nn.InstanceNorm2d", "torch.nn.InstanceNorm3d",
                 "torch.nn.LayerNorm", "torch.nn.GroupNorm", "torch.nn.RMSNorm")

    def read(self, layer: object, variables: object | None = None) -> UserLayer | None:
        """`layer` read, None when it is no torch object; TypeError for a torch object that is no supported layer."""
        if not isinstance(layer, torch.nn.Module):
            if isinstance(layer, torch.Tensor) or type(layer).__module__.split(".")[0] == "torch":
                raise TypeError(f"torch: a {type(layer).__name__} is not a normalization layer; expected one of "
                                f"{', '.join(self.supported)}")
            return None
        if another_frameworks_object(layer, self.framework):  # Keras 3's layers are torch Modules on its torch backend
            return None
        if isinstance(layer, torch.nn.modules.lazy.LazyModuleMixin) and layer.has_uninitialized_params():
            raise TypeError(f"torch: {type(layer).__name__} is not initialized yet: run one forward pass first")
        if isinstance(layer, _BatchNorm):
            spec, words, base, gamma_shape = self._batch_norm(layer)
        elif isinstance(layer, _InstanceNorm):
            spec, words, base, gamma_shape = self._instance_norm(layer)
        elif isinstance(layer, torch.nn.LayerNorm):
            spec, words, base, gamma_shape = self._layer_norm(layer)
        elif isinstance(layer, torch.nn.GroupNorm):
            spec, words, base, gamma_shape = self._group_norm(layer)
        elif isinstance(layer, torch.nn.RMSNorm):
            spec, words, base, gamma_shape = self._rms_norm(layer)
        else:
            raise TypeError(f"torch: {type(layer).__module__}.{type(layer).__qualname__} is not a supported "
                            f"normalization layer; expected one of {', '.join(self.supported)}")
        dtype, device = _dtype_and_device(layer)
        weight, bias = getattr(layer, "weight", None), getattr(layer, "bias", None)
        gamma = np.ones(gamma_shape) if weight is None else _values(weight).reshape(gamma_shape)
        beta = np.zeros(gamma_shape) if bias is None else _values(bias).reshape(gamma_shape)
        module = layer  # the session's closure holds the user's module and copies it on each call

        def session() -> LayerSession:
            return _CopySession(module, dtype, device)

        return UserLayer(framework=self.framework, kind=_kind(layer, base), spec=spec,
                         dtype=str(dtype).removeprefix("torch."), gamma=gamma, beta=beta, session=session,
                         conventions=words)

    def to_numpy(self, value: object) -> np.ndarray | None:
        """A torch.Tensor (a Parameter, one requiring grad, bfloat16 as float32) as a NumPy copy, else None."""
        return to_numpy(value) if isinstance(value, torch.Tensor) else None

    @staticmethod
    def _batch_norm(layer: torch.nn.Module) -> tuple[LayerSpec, dict[str, str], str, tuple[int, ...]]:
        base = _base_name(layer, ("SyncBatchNorm", "BatchNorm1d", "BatchNorm2d", "BatchNorm3d"))
        affine = layer.weight is not None
        fields, words = _running(layer, instance=False)
        spec = BNSpec(axis=1, eps=float(layer.eps), affine=affine, variance="two-pass", **fields)
        words.update(eps=f"{layer.eps:g}", affine=f"affine={affine}", axis=f"1 ({_LAYOUTS.get(base, 'NC...')})",
                     variance=_TWO_PASS)
        return spec, words, base, (layer.num_features,)

    @staticmethod
    def _instance_norm(layer: torch.nn.Module) -> tuple[LayerSpec, dict[str, str], str, tuple[int, ...]]:
        base = _base_name(layer, ("InstanceNorm1d", "InstanceNorm2d", "InstanceNorm3d"))
        affine = layer.weight is not None
        fields, words = _running(layer, instance=True)
        spec = INSpec(axis=1, eps=float(layer.eps), affine=affine, variance="two-pass", **fields)
        axis = f"1 ({_LAYOUTS[base]})"
        if base == "InstanceNorm1d":
            axis += "; a 2-D input is read as ONE unbatched (C, L) sample"
        words.update(eps=f"{layer.eps:g}", affine=f"affine={affine}", axis=axis, variance=_TWO_PASS)
        return spec, words, base, (layer.num_features,)

    @staticmethod
    def _layer_norm(layer: torch.nn.LayerNorm) -> tuple[LayerSpec, dict[str, str], str, tuple[int, ...]]:
        shape = tuple(layer.normalized_shape)
        affine = layer.weight is not None
        bias = layer.bias is not None if affine else True
        spec = LNSpec(axis=-1, eps=float(layer.eps), affine=affine, variance="two-pass",
                      normalized_dims=len(shape), params="elementwise", bias=bias)
        words = {"eps": f"{layer.eps:g}", "affine": f"elementwise_affine={affine}", "bias": f"bias={bias}",
                 "normalized_dims": f"normalized_shape={shape}", "params": f"γ and β of normalized_shape {shape}",
                 "axis": "-1 (the trailing normalized_shape axes)", "variance": _TWO_PASS}
        return spec, words, "LayerNorm", shape

    @staticmethod
    def _group_norm(layer: torch.nn.GroupNorm) -> tuple[LayerSpec, dict[str, str], str, tuple[int, ...]]:
        affine = layer.weight is not None
        spec = GNSpec(axis=1, eps=float(layer.eps), affine=affine, variance="two-pass", groups=int(layer.num_groups),
                      params="channel")
        words = {"eps": f"{layer.eps:g}", "affine": f"affine={affine}", "groups": f"num_groups={layer.num_groups}",
                 "params": f"γ and β per channel ({layer.num_channels},)", "axis": "1 (NC...)",
                 "variance": "two-pass on a contiguous input (a channels_last one gets E[x²] − E[x]² on CPU)"}
        return spec, words, "GroupNorm", (layer.num_channels,)

    @staticmethod
    def _rms_norm(layer: torch.nn.RMSNorm) -> tuple[LayerSpec, dict[str, str], str, tuple[int, ...]]:
        shape = tuple(layer.normalized_shape)
        affine = layer.weight is not None
        dtype, _ = _dtype_and_device(layer)
        if layer.eps is None:  # the machine epsilon of the computation type: float32's below float64
            eps = float(torch.finfo(torch.float64 if dtype == torch.float64 else torch.float32).eps)
            eps_words = f"None (machine epsilon of the computation type: {eps:g})"
        else:
            eps, eps_words = float(layer.eps), f"{layer.eps:g}"
        spec = RMSSpec(axis=-1, eps=eps, affine=affine, normalized_dims=len(shape), params="elementwise")
        words = {"eps": eps_words, "affine": f"elementwise_affine={affine}",
                 "normalized_dims": f"normalized_shape={shape}", "params": f"γ of normalized_shape {shape}, no β",
                 "axis": "-1 (the trailing normalized_shape axes)"}
        return spec, words, "RMSNorm", shape
