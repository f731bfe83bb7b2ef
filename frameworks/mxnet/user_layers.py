"""Reading a user's own Gluon normalization block: gluon.nn.BatchNorm, LayerNorm, GroupNorm and InstanceNorm.

Every convention is read off the block (its `_kwargs`, its parameters' grad_req and values) into the spec the block
computes, with what MXNet fixes and the block cannot configure taken from convention.py: the running variance is
the biased σ², σ² is two-pass, momentum weighs the old running value and is parsed as a float32 by the BatchNorm
operator, and the LayerNorm, GroupNorm and InstanceNorm operators store ε as a float32.

Gluon's `center=False` / `scale=False` only freeze β / γ (grad_req 'null'): LayerNorm's, GroupNorm's and
InstanceNorm's operators still add β and multiply by γ, so their held values are what applies; BatchNorm's
`scale=False` is the operator's fix_gamma=True, which applies γ = 1 whatever γ holds. The spec is affine unless the
block learns neither and applies γ = 1, β = 0; an affine spec's session reports dγ and dβ for both (its copy learns
them, which changes no y, dx or running statistic), and `conventions["affine"]` says which the block really learns.

The session is a new block built with the same hyperparameters, holding copies of the parameters as they were when
the block was read, hybridized as the block is: the user's block is never run nor written to.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from bnparity.frameworks.base import LayerSession, Unsupported
from bnparity.frameworks.user_layers import UserLayer
from bnparity.frameworks.user_layers import UserLayers as _UserLayersBase
from bnparity.reference.spec import BNSpec, GNSpec, INSpec, LayerSpec, LNSpec

from ._mx import gluon, mx, nd
from .batchnorm import _BuiltinLayer
from .convert import _BlockSession, _check_kernel_dtype, _operator_eps, framework_momentum, to_numpy, to_tensor
from .descriptor import DESCRIPTOR
from .groupnorm import BUILTIN_DTYPES as _GROUPNORM_DTYPES
from .instancenorm import BUILTIN_DTYPES as _INSTANCENORM_DTYPES
from .layernorm import BUILTIN_DTYPES as _LAYERNORM_DTYPES

_KINDS = {gluon.nn.BatchNorm: "mxnet.gluon.nn.BatchNorm", gluon.nn.LayerNorm: "mxnet.gluon.nn.LayerNorm",
          gluon.nn.GroupNorm: "mxnet.gluon.nn.GroupNorm", gluon.nn.InstanceNorm: "mxnet.gluon.nn.InstanceNorm"}
_SUPPORTED = tuple(_KINDS.values())
_ONLY = f"bnparity reads {', '.join(_SUPPORTED)}"


def _is_mxnet(obj: object) -> bool:
    """Whether `obj` is one of MXNet's objects (a gluon block, an NDArray, a symbol, anything from mxnet.*)."""
    return isinstance(obj, gluon.Block | nd.NDArray) or type(obj).__module__.split(".")[0] == "mxnet"


def _held(block: gluon.Block, name: str, kind: str) -> np.ndarray:
    """The NumPy value parameter `name` of `block` holds now (on its first context). Raises TypeError when the
    block's parameters do not exist yet."""
    param = getattr(block, name)
    if param._data is None:
        if param._deferred_init:
            raise TypeError(f"mxnet: this {kind}'s parameters are not created yet (deferred initialization, no "
                            f"in_channels): run it once on an input, or build it with in_channels, then read it")
        raise TypeError(f"mxnet: this {kind} is not initialized: initialize() it first (block.initialize()), "
                        "then read it")
    return to_numpy(param.data(param.list_ctx()[0]))


def _learns(block: gluon.Block, name: str) -> bool:
    return getattr(block, name).grad_req != "null"


def _hybridize_like(copy: gluon.HybridBlock, block: gluon.HybridBlock) -> gluon.HybridBlock:
    """`copy`, hybridized with `block`'s flags when `block` is hybridized (imperative otherwise)."""
    if getattr(block, "_active", False):
        copy.hybridize(**dict(getattr(block, "_flags", ())))
    return copy


def _copy_block(block: gluon.HybridBlock, make: Callable[[], gluon.HybridBlock], values: dict[str, np.ndarray],
                dtype: np.dtype) -> gluon.HybridBlock:
    """A new block `make()`, on the CPU in `dtype`, holding copies of `values` (parameter name -> value)."""
    copy = make()
    copy.initialize(ctx=mx.cpu())
    copy.cast(dtype)  # cast first, then set, so that float64 keeps every digit
    for name, value in values.items():
        getattr(copy, name).set_data(to_tensor(value, dtype))
    return _hybridize_like(copy, block)


def _axis_words(axis: int) -> str:
    return {1: "1 (channels first: NC, NCL, NCHW, NCDHW)", -1: "-1 (channels last)"}.get(axis, str(axis))


def _affine_words(block: gluon.Block, *, gamma_forced: bool = False) -> str:
    """How the block states its γ and β, in Gluon's words."""
    center, scale = _learns(block, "beta"), _learns(block, "gamma")
    gamma = ("scale=True: γ learned" if scale else
             "scale=False: γ fixed at 1 (the operator's fix_gamma=True)" if gamma_forced else
             "scale=False: γ frozen (grad_req 'null') but still applied, as it holds it")
    beta = "center=True: β learned" if center else "center=False: β frozen (grad_req 'null') but still added"
    return f"{gamma}; {beta}"


def _eps_words(eps: float, *, float32: bool) -> str:
    if float32 and float(np.float32(eps)) != eps:
        return f"epsilon={eps!r} (the operator stores it as a float32: {float(np.float32(eps))!r})"
    return f"epsilon={eps!r}"


def _check_dtype(kind: str, dtype: np.dtype, accepted: tuple[str, ...]) -> None:
    try:
        _check_kernel_dtype(kind, dtype, accepted)
    except Unsupported as e:
        raise TypeError(f"{e}: this block cannot run, so it cannot be compared") from None


class UserLayers(_UserLayersBase):
    """Reads mxnet.gluon.nn.BatchNorm, LayerNorm, GroupNorm and InstanceNorm blocks (initialized)."""

    framework = DESCRIPTOR.name
    supported = _SUPPORTED

    def read(self, layer: object, variables: object | None = None) -> UserLayer | None:
        """`layer` read: None when it is no MXNet object; TypeError for an MXNet object that is not one of the
        supported normalization blocks (or one that cannot be compared: not initialized, use_global_stats=True)."""
        if not _is_mxnet(layer):
            return None
        if variables is not None:
            raise TypeError("mxnet: a gluon block holds its own parameters: pass the block alone (variables=None)")
        if isinstance(layer, gluon.contrib.nn.SyncBatchNorm):
            raise TypeError("mxnet: gluon.contrib.nn.SyncBatchNorm synchronizes across contexts, which is the "
                            f"sync-parity suite's (bnparity sync-parity); {_ONLY}")
        kind = _KINDS.get(type(layer))
        if kind is None:
            what = type(layer).__module__ + "." + type(layer).__qualname__
            if isinstance(layer, tuple(_KINDS)):
                raise TypeError(f"mxnet: {what} subclasses a gluon normalization block and may compute something "
                                f"else; {_ONLY} themselves")
            raise TypeError(f"mxnet: {what} is not a normalization layer bnparity reads; {_ONLY}")
        reader = {gluon.nn.BatchNorm: _read_batchnorm, gluon.nn.LayerNorm: _read_layernorm,
                  gluon.nn.GroupNorm: _read_groupnorm, gluon.nn.InstanceNorm: _read_instancenorm}[type(layer)]
        return reader(layer, kind)

    def to_numpy(self, value: object) -> np.ndarray | None:
        """An MXNet NDArray (mx.nd or mx.np) as a NumPy copy; None for anything else."""
        return to_numpy(value) if isinstance(value, nd.NDArray) else None


def _user_layer(kind: str, spec: LayerSpec, dtype: np.dtype, gamma: np.ndarray, beta: np.ndarray,
                session: Callable[[], LayerSession], conventions: dict[str, str]) -> UserLayer:
    return UserLayer(framework=DESCRIPTOR.name, kind=kind, spec=spec, dtype=np.dtype(dtype).name,
                     gamma=np.asarray(gamma, dtype=np.float64), beta=np.asarray(beta, dtype=np.float64),
                     session=session, conventions=conventions)


def _read_batchnorm(block: gluon.nn.BatchNorm, kind: str) -> UserLayer:
    """gluon.nn.BatchNorm: axis, momentum (the old value's weight), epsilon, center/scale, its moving statistics."""
    options = block._kwargs
    if options.get("use_global_stats"):
        raise TypeError("mxnet: this gluon.nn.BatchNorm has use_global_stats=True: it normalizes with its moving "
                        "statistics in training too, which no BatchNorm spec describes; build it with "
                        "use_global_stats=False to compare it")
    held = {name: _held(block, name, kind) for name in ("gamma", "beta", "running_mean", "running_var")}
    dtype = held["gamma"].dtype
    gamma_forced = bool(options["fix_gamma"])  # scale=False: the operator applies γ = 1 whatever γ holds
    gamma = np.ones_like(held["gamma"]) if gamma_forced else held["gamma"]
    beta = held["beta"]
    learns = _learns(block, "beta") or not gamma_forced
    affine = learns or bool(np.any(gamma != 1) or np.any(beta != 0))
    momentum = float(options["momentum"])
    # The operator parses momentum as a float32 (convert.framework_momentum): the spec holds what it computes.
    stated = BNSpec(momentum=momentum, momentum_weighs="old")
    spec = BNSpec(
        axis=int(options["axis"]), eps=float(options["eps"]), affine=affine, variance="two-pass",
        momentum=framework_momentum(stated), momentum_weighs="old", running_var="biased", track_running_stats=True,
        init_running_mean=tuple(float(v) for v in held["running_mean"]),
        init_running_var=tuple(float(v) for v in held["running_var"]),
    )
    channels = held["gamma"].shape[0]
    values = {"gamma": gamma, "beta": beta, "running_mean": held["running_mean"], "running_var": held["running_var"]}

    def session() -> LayerSession:
        # The copy learns γ and β when the spec is affine (scale=True applies the held γ, here the γ it applies).
        copy = _copy_block(block, lambda: gluon.nn.BatchNorm(
            axis=spec.axis, momentum=momentum, epsilon=spec.eps, center=affine, scale=affine,
            use_global_stats=False, in_channels=channels), values, dtype)
        return _BuiltinLayer(copy, dtype=dtype, spec=spec)

    weight = f"{momentum!r} on the old value (running = {momentum!r}·running + (1 − {momentum!r})·batch)"
    if float(np.float32(momentum)) != momentum:
        weight += f"; the operator parses it as a float32: {float(np.float32(momentum))!r}"
    conventions = {
        "momentum": weight,
        "eps": _eps_words(spec.eps, float32=False),
        "running_var": "biased (the batch's σ², not × m/(m−1); not configurable)",
        "axis": _axis_words(spec.axis),
        "affine": _affine_words(block, gamma_forced=gamma_forced),
        "variance": "two-pass (not configurable)",
        "track_running_stats": "always (gluon.nn.BatchNorm has no switch; eval outside autograd.record() "
                               "normalizes with running_mean and running_var)",
    }
    return _user_layer(kind, spec, dtype, gamma, beta, session, conventions)


def _read_layernorm(block: gluon.nn.LayerNorm, kind: str) -> UserLayer:
    """gluon.nn.LayerNorm: one normalized axis (which must be the last), epsilon, center/scale."""
    axis = int(block._axis)
    if axis != -1:
        raise TypeError(f"mxnet: this gluon.nn.LayerNorm normalizes axis {axis}; bnparity's LayerNorm normalizes the "
                        "trailing axis: build it with axis=-1 (move the axis last) to compare it")
    gamma, beta = _held(block, "gamma", kind), _held(block, "beta", kind)
    dtype = gamma.dtype
    _check_dtype(kind, dtype, _LAYERNORM_DTYPES)
    learns_gamma, learns_beta = _learns(block, "gamma"), _learns(block, "beta")
    bias = learns_beta or bool(np.any(beta != 0))
    affine = learns_gamma or bias or bool(np.any(gamma != 1))
    if not affine:
        bias = True  # meaningless without γ (LNSpec's default)
    spec = LNSpec(axis=-1, eps=_operator_eps(block._epsilon), affine=affine, variance="two-pass",
                  normalized_dims=1, params="elementwise", bias=bias)
    channels = gamma.shape[0]
    values = {"gamma": gamma, "beta": beta}

    def session() -> LayerSession:
        copy = _copy_block(block, lambda: gluon.nn.LayerNorm(
            axis=-1, epsilon=block._epsilon, center=affine and bias, scale=affine, in_channels=channels),
            values, dtype)
        return _BlockSession(copy, dtype)

    conventions = {
        "eps": _eps_words(block._epsilon, float32=True),
        "axis": "-1 (the last axis is normalized)",
        "normalized_dims": "1 (gluon.nn.LayerNorm's axis is a single int)",
        "params": f"γ and β of shape ({channels},), one per feature of the normalized axis",
        "affine": _affine_words(block),
        "bias": "β added" if bias else "center=False and β = 0: no β",
        "variance": "two-pass (not configurable)",
    }
    return _user_layer(kind, spec, dtype, gamma if affine else np.ones_like(gamma),
                       beta if affine and bias else np.zeros_like(beta), session, conventions)


def _read_groupnorm(block: gluon.nn.GroupNorm, kind: str) -> UserLayer:
    """gluon.nn.GroupNorm: num_groups, epsilon, center/scale; γ and β one per group, channels at axis 1."""
    gamma, beta = _held(block, "gamma", kind), _held(block, "beta", kind)
    dtype = gamma.dtype
    _check_dtype(kind, dtype, _GROUPNORM_DTYPES)
    affine = _learns(block, "gamma") or _learns(block, "beta") or bool(np.any(gamma != 1) or np.any(beta != 0))
    groups = int(block._num_groups)
    spec = GNSpec(axis=1, eps=_operator_eps(block._epsilon), affine=affine, variance="two-pass", groups=groups,
                  params="group")
    values = {"gamma": gamma, "beta": beta}

    def session() -> LayerSession:
        copy = _copy_block(block, lambda: gluon.nn.GroupNorm(
            num_groups=groups, epsilon=block._epsilon, center=affine, scale=affine), values, dtype)
        return _BlockSession(copy, dtype)

    conventions = {
        "eps": _eps_words(block._epsilon, float32=True),
        "axis": "1 (channels first, rank 3 or more; gluon.nn.GroupNorm has no axis argument)",
        "groups": f"num_groups={groups}",
        "params": f"γ and β one per group, shape ({groups},) (gluon.nn.GroupNorm's, not one per channel)",
        "affine": _affine_words(block),
        "variance": "two-pass (not configurable)",
    }
    return _user_layer(kind, spec, dtype, gamma, beta, session, conventions)


def _read_instancenorm(block: gluon.nn.InstanceNorm, kind: str) -> UserLayer:
    """gluon.nn.InstanceNorm: axis, epsilon, center/scale; no running statistics (float32 only)."""
    gamma, beta = _held(block, "gamma", kind), _held(block, "beta", kind)
    dtype = gamma.dtype
    _check_dtype(kind, dtype, _INSTANCENORM_DTYPES)
    affine = _learns(block, "gamma") or _learns(block, "beta") or bool(np.any(gamma != 1) or np.any(beta != 0))
    axis = int(block._axis)
    spec = INSpec(axis=axis, eps=_operator_eps(block._epsilon), affine=affine, variance="two-pass",
                  track_running_stats=False, running_var="biased")
    channels = gamma.shape[0]
    values = {"gamma": gamma, "beta": beta}

    def session() -> LayerSession:
        copy = _copy_block(block, lambda: gluon.nn.InstanceNorm(
            axis=axis, epsilon=block._epsilon, center=affine, scale=affine, in_channels=channels), values, dtype)
        return _BlockSession(copy, dtype)

    conventions = {
        "eps": _eps_words(block._epsilon, float32=True) + ", added to σ² under the square root",
        "axis": _axis_words(axis),
        "affine": _affine_words(block),
        "track_running_stats": "never (gluon.nn.InstanceNorm keeps no running statistics: eval normalizes with "
                               "the input's own)",
        "variance": "two-pass (not configurable)",
    }
    return _user_layer(kind, spec, dtype, gamma, beta, session, conventions)
