"""Reading a user's own Flax normalization layer: flax.linen modules with their variables, flax.nnx modules.

A flax.linen module holds only its hyperparameters; its state (γ, β and the running statistics) is the
``variables`` dict that ``init``/``apply`` returned, so both are read together. A flax.nnx module holds its state.
Every convention is read off the module's fields (ε, momentum and what it weighs, the channel axis, the variance
algorithm, the axes of LayerNorm and RMSNorm, GroupNorm's groups); the current state becomes the spec's initial
running statistics and the γ, β of the comparison. The session runs a copy: the state is copied to NumPy when the
layer is read, and every session starts from new JAX arrays made from that copy, run through this folder's jitted
steps (_session.JaxLayer). Inputs and outputs are in the module's own layout (its channel axis is the spec's).
"""

from __future__ import annotations

import copy
from typing import Any

import flax.linen as nn
import jax
import numpy as np
from flax import nnx

from bnparity.frameworks.base import LayerSession
from bnparity.frameworks.user_layers import UserLayer
from bnparity.frameworks.user_layers import UserLayers as _UserLayers
from bnparity.reference.spec import BNSpec, GNSpec, INSpec, LayerSpec, LNSpec, RMSSpec

from ._session import JaxLayer, jit_steps
from ._x64 import dtype_scope
from .batchnorm import _linen_apply as _linen_bn_apply
from .batchnorm import _nnx_apply as _nnx_bn_apply
from .convert import _as_dict, _linen_apply, _nnx_apply, framework_dtype, to_numpy
from .descriptor import DESCRIPTOR

_KINDS = ("BatchNorm", "LayerNorm", "GroupNorm", "InstanceNorm", "RMSNorm")
_SUPPORTED = tuple(f"flax.{api}.{kind}" for api in ("linen", "nnx") for kind in _KINDS)
_LINEN = {getattr(nn, kind): kind for kind in _KINDS}
_NNX = {getattr(nnx, kind): kind for kind in _KINDS}


def _refuse(kind: str, what: str, fix: str) -> TypeError:
    return TypeError(f"jax: cannot compare {kind}: {what}; {fix}")


def _float(x: float) -> str:
    return f"{x:g}"


def _copy_tree(tree: Any) -> dict[str, np.ndarray]:
    """A flat dict of NumPy copies of a params or batch_stats collection (a dict, FrozenDict or nnx.State)."""
    return {str(k): np.array(v) for k, v in _as_dict(tree).items()}


def _to_jax(values: dict[str, np.ndarray]) -> dict[str, jax.Array]:
    """New JAX arrays of `values`, each in its own dtype (call inside dtype_scope(float64) for float64 ones)."""
    return {k: jax.numpy.array(v, dtype=v.dtype) for k, v in values.items()}


def _needs_x64(*trees: dict[str, np.ndarray]) -> bool:
    return any(v.dtype == np.float64 for tree in trees for v in tree.values())


def _axes_tuple(axes: Any) -> tuple[int, ...]:
    return tuple(int(a) for a in axes) if isinstance(axes, (tuple, list)) else (int(axes),)


def _trailing(kind: str, reduction_axes: Any, feature_axes: Any) -> tuple[int, str]:
    """(normalized_dims, params) of a LayerNorm or RMSNorm's reduction and feature axes; TypeError otherwise."""
    reduction, features = sorted(_axes_tuple(reduction_axes)), sorted(_axes_tuple(feature_axes))
    dims = len(reduction)
    if reduction != list(range(-dims, 0)):
        raise _refuse(kind, f"reduction_axes={reduction_axes!r} are not the trailing axes counted from the end",
                      "bnparity reads them as negative trailing axes, e.g. reduction_axes=(-2, -1)")
    if features == reduction:
        return dims, "elementwise"
    if features == [-1]:
        return dims, "feature"
    raise _refuse(kind, f"feature_axes={feature_axes!r} are neither the reduction axes nor the last axis",
                  "use feature_axes=-1 or feature_axes=reduction_axes")


def _affine(kind: str, use_scale: bool, use_bias: bool) -> bool:
    if use_scale != use_bias:
        raise _refuse(kind, f"use_scale={use_scale} with use_bias={use_bias} (γ without β or β without γ)",
                      "the spec has γ and β both or neither: set use_scale == use_bias")
    return bool(use_scale)


def _common(layer: Any, kind: str) -> dict[str, str]:
    """Refuses cross-replica statistics; the conventions every module states the same way."""
    if getattr(layer, "axis_name", None) is not None:
        raise _refuse(kind, f"axis_name={layer.axis_name!r} (statistics across replicas)",
                      "cross-replica statistics are the sync-parity suite's: build the layer with axis_name=None")
    conventions = {"eps": f"epsilon={_float(layer.epsilon)}"}
    if kind != "RMSNorm" and hasattr(layer, "use_fast_variance"):
        conventions["variance"] = ("E[x²] − E[x]² (use_fast_variance=True)" if layer.use_fast_variance
                                   else "two passes, mean((x − μ)²) (use_fast_variance=False)")
    if not getattr(layer, "force_float32_reductions", True):
        conventions["dtype"] = "force_float32_reductions=False (statistics reduced in the input's dtype)"
    return conventions


def _spec(layer: Any, kind: str, params: dict[str, np.ndarray], stats: dict[str, np.ndarray]
          ) -> tuple[LayerSpec, dict[str, str]]:
    """The spec `layer` (linen or nnx: the same field names) computes, and its conventions in Flax's words."""
    conventions = _common(layer, kind)
    eps, fast = float(layer.epsilon), "fast" if getattr(layer, "use_fast_variance", False) else "two-pass"
    if kind == "BatchNorm":
        axes = _axes_tuple(layer.axis)
        if len(axes) != 1:
            raise _refuse(kind, f"axis={layer.axis!r} names several feature axes", "bnparity compares one channel axis")
        if "mean" not in stats or "var" not in stats:
            raise _refuse(kind, "its variables have no batch_stats 'mean' and 'var'",
                          "pass the whole dict init/apply returned: {'params': ..., 'batch_stats': ...}")
        momentum = float(layer.momentum)
        conventions.update(momentum=f"{_float(momentum)} on the old value (momentum={_float(momentum)})",
                           running_var="biased (σ²_B, the variance it normalizes with)",
                           axis=f"axis={axes[0]}" + (" (channels last)" if axes[0] == -1 else ""),
                           track_running_stats="always (batch_stats 'mean', 'var')")
        spec: LayerSpec = BNSpec(
            axis=axes[0], eps=eps, affine=_affine(kind, layer.use_scale, layer.use_bias), variance=fast,
            momentum=momentum, momentum_weighs="old", running_var="biased", track_running_stats=True,
            init_running_mean=tuple(float(v) for v in np.ravel(stats["mean"])),
            init_running_var=tuple(float(v) for v in np.ravel(stats["var"])))
    elif kind == "LayerNorm":
        dims, shape = _trailing(kind, layer.reduction_axes, layer.feature_axes)
        if layer.use_bias and not layer.use_scale:
            raise _refuse(kind, "use_bias=True with use_scale=False (β without γ)", "set use_scale=True")
        conventions.update(normalized_dims=f"reduction_axes={layer.reduction_axes!r}",
                           params=f"feature_axes={layer.feature_axes!r}", bias=f"use_bias={layer.use_bias}")
        spec = LNSpec(eps=eps, affine=bool(layer.use_scale), variance=fast, normalized_dims=dims, params=shape,
                      bias=bool(layer.use_bias))
    elif kind == "RMSNorm":
        dims, shape = _trailing(kind, layer.reduction_axes, layer.feature_axes)
        conventions.update(normalized_dims=f"reduction_axes={layer.reduction_axes!r}",
                           params=f"feature_axes={layer.feature_axes!r}")
        spec = RMSSpec(eps=eps, affine=bool(layer.use_scale), normalized_dims=dims, params=shape)
    elif kind == "GroupNorm":
        if getattr(layer, "reduction_axes", None) is not None:
            raise _refuse(kind, f"reduction_axes={layer.reduction_axes!r}",
                          "bnparity compares the default (every axis but the batch axis)")
        affine = _affine(kind, layer.use_scale, layer.use_bias)
        groups = layer.num_groups
        if groups is None:  # linen's group_size: the channels come from γ
            if not affine:
                raise _refuse(kind, f"group_size={layer.group_size} without γ, β: the channels are unknown",
                              "give num_groups instead")
            groups = params["scale"].size // int(layer.group_size)
        conventions.update(groups=f"num_groups={layer.num_groups}" if layer.num_groups is not None
                           else f"group_size={layer.group_size} ({groups} groups)",
                           params="per channel, shape (C,)", axis="-1 (channels last)")
        spec = GNSpec(axis=-1, eps=eps, affine=affine, variance=fast, groups=int(groups), params="channel")
    else:  # InstanceNorm
        axes = _axes_tuple(layer.feature_axes)
        if len(axes) != 1:
            raise _refuse(kind, f"feature_axes={layer.feature_axes!r} names several axes",
                          "bnparity compares one channel axis")
        conventions.update(axis=f"feature_axes={layer.feature_axes!r}",
                           track_running_stats="never (Flax's InstanceNorm keeps no running statistics)")
        spec = INSpec(axis=axes[0], eps=eps, affine=_affine(kind, layer.use_scale, layer.use_bias), variance=fast,
                      track_running_stats=False)
    return spec, conventions


def _gamma_beta(spec: LayerSpec, params: dict[str, np.ndarray], features: int | None
                ) -> tuple[np.ndarray, np.ndarray]:
    """γ and β as float64 (ones, zeros where the layer has none), shaped as the layer holds them.

    A layer without parameters has them of shape (features,); a flax.linen one without parameters knows no feature
    count before it sees an input (features None): its γ and β are then empty, shape (0,), and the caller makes
    them `spec.param_shape(x.shape)` ones and zeros (they are unused: the spec is not affine).
    """
    ref = params.get("scale", params.get("bias"))
    if ref is None:
        stats = getattr(spec, "init_running_mean", None)
        n = len(stats) if isinstance(stats, tuple) else features
        shape = (0,) if n is None else (int(n),)
        return np.ones(shape), np.zeros(shape)
    gamma = np.asarray(params.get("scale", np.ones(ref.shape)), np.float64)
    beta = np.asarray(params.get("bias", np.zeros(ref.shape)), np.float64)
    return gamma, beta


def _layer_dtype(layer: Any, params: dict[str, np.ndarray]) -> np.dtype:
    """The dtype the session feeds the layer: its parameters' dtype (its param_dtype when it has none)."""
    if params:
        return framework_dtype(next(iter(params.values())).dtype)
    return framework_dtype(np.dtype(layer.dtype if layer.dtype is not None else layer.param_dtype))


class UserLayers(_UserLayers):
    """Reads flax.linen normalization modules (with their variables) and flax.nnx normalization modules."""

    framework = DESCRIPTOR.name
    supported = _SUPPORTED

    def read(self, layer: object, variables: object | None = None) -> UserLayer | None:
        """`layer` read, or None when it is not a Flax module; TypeError for an unsupported Flax module."""
        if isinstance(layer, nn.Module):
            return self._read_linen(layer, variables)
        if isinstance(layer, nnx.Module):
            return self._read_nnx(layer, variables)
        return None

    def to_numpy(self, value: object) -> np.ndarray | None:
        """A NumPy copy of a jax.Array (bfloat16 as float32), else None."""
        return to_numpy(value) if isinstance(value, jax.Array) else None

    @staticmethod
    def _kind(layer: object, table: dict[type, str]) -> str:
        kind = next((k for cls, k in table.items() if type(layer) is cls), None)
        if kind is None:
            raise TypeError(f"jax: {type(layer).__module__}.{type(layer).__qualname__} is not a normalization layer "
                            f"bnparity reads. Supported: {', '.join(_SUPPORTED)}")
        return kind

    def _read_linen(self, layer: nn.Module, variables: object | None) -> UserLayer:
        kind = self._kind(layer, _LINEN)
        if variables is None:
            raise TypeError(f"jax: a flax.linen.{kind} holds no state: pass its variables too, the dict "
                            f"module.init(...) or module.apply(..., mutable=True) returned "
                            f"({{'params': ..., 'batch_stats': ...}})")
        if not hasattr(variables, "get"):
            raise TypeError(f"jax: expected the variables of a flax.linen.{kind} as a dict "
                            f"{{'params': ..., 'batch_stats': ...}}. Received: {type(variables).__name__}")
        params = _copy_tree(variables.get("params", {}))
        stats = _copy_tree(variables.get("batch_stats", {}))
        spec, conventions = _spec(layer, kind, params, stats)
        self._check_params(kind, spec, params)
        module = layer.clone()
        if kind == "BatchNorm":
            if layer.use_running_average:
                raise _refuse(kind, "it was built with use_running_average=True: it never trains",
                              "build it with use_running_average=False (or None) to compare a training step")
            if layer.use_running_average is not None:  # fixed in the module: the copy takes it per call instead
                conventions["use_running_average"] = ("use_running_average=False (the copy's eval pass uses "
                                                      "its running statistics)")
            module = layer.clone(use_running_average=None)
            apply = _linen_bn_apply(module)
        else:
            apply = _linen_apply(module)
        dtype = _layer_dtype(layer, params)
        steps = jit_steps(apply, on_trace=lambda name: None)
        track = kind == "BatchNorm"

        def session() -> LayerSession:
            with dtype_scope(np.dtype(np.float64) if _needs_x64(params, stats) else dtype):
                p, s = _to_jax(params), _to_jax(stats) if track else {}
            return JaxLayer(steps, params=p, stats=s, dtype=dtype, track_running_stats=track, to_dict=dict)

        gamma, beta = _gamma_beta(spec, params, None)
        return UserLayer(framework=self.framework, kind=f"flax.linen.{kind}", spec=spec, dtype=dtype.name,
                         gamma=gamma, beta=beta, session=session, conventions=conventions)

    def _read_nnx(self, layer: nnx.Module, variables: object | None) -> UserLayer:
        kind = self._kind(layer, _NNX)
        if variables is not None:
            raise TypeError(f"jax: a flax.nnx.{kind} holds its own state: pass variables=None")
        if kind in ("LayerNorm", "RMSNorm") and len(_axes_tuple(layer.feature_axes)) > 1:
            raise _refuse(f"flax.nnx.{kind}", f"feature_axes={layer.feature_axes!r}: nnx holds γ flattened, "
                          "(num_features,), whose shape over the feature axes is not known before an input",
                          "use flax.linen's, or feature_axes=-1")
        state = copy.deepcopy(layer)  # the user's module is never split or run
        params = _copy_tree(nnx.state(state, nnx.Param))
        stats = _copy_tree(nnx.state(state, nnx.BatchStat))
        spec, conventions = _spec(layer, kind, params, stats)
        if kind == "BatchNorm" and layer.use_running_average is not None:
            conventions["use_running_average"] = (f"use_running_average={layer.use_running_average} (overridden per "
                                                  "call: the copy trains with batch statistics)")
        dtype = _layer_dtype(layer, params)
        track = kind == "BatchNorm"
        split = (nnx.Param, nnx.BatchStat) if track else (nnx.Param,)
        graphdef = nnx.split(state, *split)[0]
        steps = jit_steps(_nnx_bn_apply(graphdef) if track else _nnx_apply(graphdef), on_trace=lambda name: None)

        def session() -> LayerSession:
            _, p, *s = nnx.split(copy.deepcopy(state), *split)  # new arrays: the snapshot is never consumed
            return JaxLayer(steps, params=p, stats=s[0] if track else {}, dtype=dtype, track_running_stats=track,
                            to_dict=_as_dict)

        features = getattr(layer, "num_features", None)
        if features is None and kind == "GroupNorm":
            features = layer.num_groups * layer.group_size
        gamma, beta = _gamma_beta(spec, params, features)
        return UserLayer(framework=self.framework, kind=f"flax.nnx.{kind}", spec=spec, dtype=dtype.name,
                         gamma=gamma, beta=beta, session=session, conventions=conventions)

    @staticmethod
    def _check_params(kind: str, spec: LayerSpec, params: dict[str, np.ndarray]) -> None:
        """The params collection holds what the module's switches create."""
        expected = {"scale"} if spec.affine else set()
        if spec.affine and (not isinstance(spec, (LNSpec, RMSSpec)) or getattr(spec, "bias", False)):
            expected.add("bias")
        if set(params) != expected:
            raise TypeError(f"jax: the variables do not match flax.linen.{kind}: expected params "
                            f"{sorted(expected) or 'none'}. Received: {sorted(params) or 'none'}")

