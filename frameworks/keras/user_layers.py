"""Reading a user's own Keras 3 normalization layer: keras.layers.BatchNormalization, LayerNormalization,
GroupNormalization (groups=-1: Keras' instance normalization) and RMSNormalization, on this process's backend.

A Keras layer holds its state (γ, β, the moving statistics) once it is built, so an unbuilt layer is refused. Every
convention is read off the layer: ε (`epsilon`), momentum (Keras' weighs the OLD value:
keras/src/layers/normalization/batch_normalization.py:385-391, `moving_mean * momentum + mean * (1 - momentum)`), the
channel axis (`axis`), γ and β (`scale`, `center`), the normalized axes of LayerNormalization and RMSNormalization,
GroupNormalization's groups. What no argument configures is Keras' on this backend, as frameworks/keras/convention.py
states it: the biased moving variance (the σ²_B of `ops.moments`, batch_normalization.py:388-391) and the variance
algorithm (`ops.moments` differs per backend). The session runs a copy (`from_config` + `build_from_config`, the
layer's values copied to NumPy when it is read and assigned to the copy), through _session.KerasLayerSession: the
user's layer is never called or modified.

A layer with `trainable = False` is frozen: Keras runs a frozen BatchNormalization in inference mode even when called
with training=True (batch_normalization.py:363, `if training and self.trainable:`). Its copy is made trainable, so
that a training step compares batch statistics; the conventions say so.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np

from bnparity.frameworks.base import LayerSession
from bnparity.frameworks.conventions import convention
from bnparity.frameworks.user_layers import UserLayer
from bnparity.frameworks.user_layers import UserLayers as _UserLayersBase
from bnparity.reference.spec import BNSpec, GNSpec, LayerSpec, LNSpec, RMSSpec

from ._backend import DESCRIPTOR
from ._session import KerasLayerSession
from ._x64 import dtype_scope
from .convert import to_numpy

_SRC = "keras/src/layers/normalization"
_KINDS: dict[type, str] = {keras.layers.BatchNormalization: "BatchNormalization",
                           keras.layers.LayerNormalization: "LayerNormalization",
                           keras.layers.GroupNormalization: "GroupNormalization",
                           keras.layers.RMSNormalization: "RMSNormalization"}
_NORMALIZATION = {"BatchNormalization": "batchnorm", "LayerNormalization": "layernorm",
                  "GroupNormalization": "groupnorm", "RMSNormalization": "rmsnorm"}
_SUPPORTED = tuple(f"keras.layers.{kind}" for kind in _KINDS.values())
# (γ's variable name, β's, the moving statistics') per kind: the add_weight names of each layer's build()
_NAMES: dict[str, tuple[str | None, str | None, tuple[str, str] | None]] = {
    "BatchNormalization": ("gamma", "beta", ("moving_mean", "moving_variance")),
    "LayerNormalization": ("gamma", "beta", None),
    "GroupNormalization": ("gamma", "beta", None),
    "RMSNormalization": ("scale", None, None),
}


def _refuse(kind: str, what: str, fix: str) -> TypeError:
    return TypeError(f"{DESCRIPTOR.name}: cannot compare keras.layers.{kind}: {what}; {fix}")


def _variance(normalization: str) -> str:
    """The variance algorithm of this backend's layer, as frameworks/keras/convention.py states it."""
    row = convention(DESCRIPTOR.name, normalization)
    algorithm = row.variance_algorithm if normalization == "batchnorm" else row.defaults.get("variance", "two-pass")
    return "fast" if algorithm == "fast" else "two-pass"


def _variance_words(variance: str) -> str:
    formula = "E[x²] − E[x]²" if variance == "fast" else "two passes, mean((x − μ)²)"
    return f"{formula} (keras.ops.moments on the {DESCRIPTOR.name.removeprefix('keras-')} backend; not configurable)"


def _eps(layer: keras.layers.Layer) -> tuple[float, str]:
    """ε and its wording; epsilon=None is keras.config.epsilon() (keras/src/ops/nn.py: `backend.epsilon()`)."""
    if layer.epsilon is None:
        eps = float(keras.config.epsilon())
        return eps, f"epsilon=None (keras.config.epsilon() = {eps:g})"
    return float(layer.epsilon), f"epsilon={float(layer.epsilon):g}"


def _build_shape(layer: keras.layers.Layer, kind: str) -> tuple[int | None, ...]:
    config = layer.get_build_config() or {}
    shape = config.get("input_shape")
    if shape is None:
        raise _refuse(kind, "it records no single input shape it was built for",
                      "build it by calling it on one input (or layer.build(input_shape))")
    return tuple(shape)


def _trailing(kind: str, axis: Any, ndim: int) -> int:
    """The number of trailing axes `axis` (an int or a list, as LayerNormalization/RMSNormalization hold it)
    names; TypeError when they are not the trailing axes."""
    axes = sorted(int(a) - ndim if int(a) >= 0 else int(a) for a in (axis if isinstance(axis, (list, tuple))
                                                                      else [axis]))
    if axes != list(range(-len(axes), 0)):
        raise _refuse(kind, f"axis={axis!r} of a {ndim}-D input are not its trailing axes",
                      "bnparity compares normalizations over the last axes (e.g. axis=-1 or axis=[-2, -1])")
    return len(axes)


def _affine(kind: str, scale: bool, center: bool) -> bool:
    if bool(scale) != bool(center):
        raise _refuse(kind, f"scale={scale} with center={center} (γ without β or β without γ)",
                      "the spec has γ and β both or neither: set scale == center")
    return bool(scale)


def _kind(layer: keras.layers.Layer) -> tuple[str, str]:
    """(the Keras class it is, how the object is named: "keras.layers.BatchNormalization", or its own class for a
    subclass of one)."""
    for cls, kind in _KINDS.items():
        if type(layer) is cls:
            return kind, f"keras.layers.{kind}"
    for cls, kind in _KINDS.items():
        if isinstance(layer, cls):
            return kind, f"{type(layer).__module__}.{type(layer).__qualname__} (a keras.layers.{kind})"
    raise TypeError(f"{DESCRIPTOR.name}: {type(layer).__module__}.{type(layer).__qualname__} is not a normalization "
                    f"layer bnparity reads. Supported: {', '.join(_SUPPORTED)}")


def _is_keras_object(obj: object) -> bool:
    return isinstance(obj, (keras.layers.Layer, keras.Variable, keras.KerasTensor)) or \
        type(obj).__module__.split(".")[0] == "keras"


class _CopySession(KerasLayerSession):
    """A copy of the user's layer (its class from its config, built for its build shape, holding the values read),
    through the layer protocol; trainable even when the user's layer is frozen."""

    def __init__(self, layer: keras.layers.Layer, values: dict[str, np.ndarray], dtype: np.dtype,
                 kind: str) -> None:
        gamma, beta, stats = _NAMES[kind]
        with dtype_scope(dtype):
            copy = type(layer).from_config(layer.get_config())
            copy.build_from_config(layer.get_build_config())
            copy.trainable = True
            for v in copy.variables:
                v.assign(values[v.name].astype(keras.backend.standardize_dtype(v.dtype)))
        present = {v.name for v in copy.variables}
        super().__init__(copy, dtype, gamma=gamma if gamma in present else None,
                         beta=beta if beta in present else None, stats=stats)


class UserLayers(_UserLayersBase):
    """Reads built keras.layers normalization layers: their spec, γ and β, moving statistics, a session on a copy."""

    framework = DESCRIPTOR.name
    supported = _SUPPORTED

    def read(self, layer: object, variables: object | None = None) -> UserLayer | None:
        """`layer` read, None when it is no Keras object; TypeError for a Keras object that is no supported layer."""
        if not _is_keras_object(layer):
            return None
        if not isinstance(layer, keras.layers.Layer):
            raise TypeError(f"{DESCRIPTOR.name}: a {type(layer).__name__} is not a normalization layer; expected one "
                            f"of {', '.join(_SUPPORTED)}")
        kind, name = _kind(layer)
        if variables is not None:
            raise TypeError(f"{DESCRIPTOR.name}: a keras.layers.{kind} holds its own state: pass variables=None")
        if not layer.built:
            raise _refuse(kind, "it is not built yet (it has no γ, β or statistics)",
                          "call it once on an input, or layer.build(input_shape)")
        values = {v.name: np.array(to_numpy(v)) for v in layer.variables}  # the state, as read now
        spec, words, gamma_shape = getattr(self, f"_{_NORMALIZATION[kind]}")(layer, kind, values)
        dtype = np.dtype(keras.backend.standardize_dtype(layer.compute_dtype))
        if dtype.name == "bfloat16":
            import ml_dtypes

            dtype = np.dtype(ml_dtypes.bfloat16)
        g, b, _ = _NAMES[kind]
        gamma = values[g].astype(np.float64).reshape(gamma_shape) if g in values else np.ones(gamma_shape)
        beta = values[b].astype(np.float64).reshape(gamma_shape) if b in values else np.zeros(gamma_shape)
        if not layer.trainable:
            words["trainable"] = ("trainable=False (frozen: Keras runs it in inference mode even with training=True, "
                                  f"{_SRC}/batch_normalization.py:363); the copy is trainable, so a training step "
                                  "compares batch statistics") if kind == "BatchNormalization" else \
                "trainable=False (γ, β frozen in fit(); the copy is trainable, so dγ and dβ are compared)"
        if layer.dtype_policy.name != layer.compute_dtype:
            words["dtype"] = (f"dtype policy {layer.dtype_policy.name!r}: variables in {layer.variable_dtype}, "
                              f"computed in {layer.compute_dtype}")
        source = layer

        def session() -> LayerSession:
            return _CopySession(source, values, dtype, kind)

        return UserLayer(framework=self.framework, kind=name, spec=spec, dtype=str(dtype.name), gamma=gamma,
                         beta=beta, session=session, conventions=words)

    def to_numpy(self, value: object) -> np.ndarray | None:
        """A NumPy copy of a keras.Variable or a tensor of this backend (bfloat16 as float32), else None."""
        if isinstance(value, keras.Variable) or (not isinstance(value, np.ndarray) and keras.ops.is_tensor(value)):
            return to_numpy(value)
        return None

    @staticmethod
    def _batchnorm(layer: keras.layers.BatchNormalization, kind: str, values: dict[str, np.ndarray]
                   ) -> tuple[LayerSpec, dict[str, str], tuple[int, ...]]:
        if layer.renorm:
            raise _refuse(kind, "renorm=True (batch renormalization: r and d corrections in training)",
                          "bnparity compares plain batch normalization: build it with renorm=False")
        if layer.synchronized:
            raise _refuse(kind, "synchronized=True (statistics across replicas)",
                          "cross-replica statistics are the sync-parity suite's: build it with synchronized=False")
        eps, eps_words = _eps(layer)
        variance = _variance("batchnorm")
        momentum = float(layer.momentum)
        ndim = len(_build_shape(layer, kind))
        axis = int(layer.axis)
        spec = BNSpec(axis=axis, eps=eps, affine=_affine(kind, layer.scale, layer.center), variance=variance,
                      momentum=momentum, momentum_weighs="old", running_var="biased", track_running_stats=True,
                      init_running_mean=tuple(float(v) for v in values["moving_mean"].reshape(-1)),
                      init_running_var=tuple(float(v) for v in values["moving_variance"].reshape(-1)))
        words = {"eps": eps_words,
                 "momentum": f"{momentum:g} on the old value (momentum={momentum:g}; "
                             f"{_SRC}/batch_normalization.py:385-391)",
                 "running_var": "biased (σ²_B of keras.ops.moments, the variance it normalizes with)",
                 "affine": f"scale={layer.scale}, center={layer.center}",
                 "axis": f"axis={axis} of a {ndim}-D input" + (" (channels last)" if axis in (-1, ndim - 1) else ""),
                 "track_running_stats": "always (moving_mean, moving_variance)",
                 "init_running_mean": "the layer's moving_mean", "init_running_var": "the layer's moving_variance",
                 "variance": _variance_words(variance)}
        return spec, words, (values["moving_mean"].size,)

    @staticmethod
    def _layernorm(layer: keras.layers.LayerNormalization, kind: str, values: dict[str, np.ndarray]
                   ) -> tuple[LayerSpec, dict[str, str], tuple[int, ...]]:
        if getattr(layer, "rms_scaling", False):
            raise _refuse(kind, "rms_scaling=True (deprecated: it scales by the variance, not the root mean square)",
                          "use keras.layers.RMSNormalization")
        if layer.center and not layer.scale:
            raise _refuse(kind, "center=True with scale=False (β without γ)", "set scale=True")
        shape = _build_shape(layer, kind)
        dims = _trailing(kind, layer.axis, len(shape))
        eps, eps_words = _eps(layer)
        variance = _variance("layernorm")
        spec = LNSpec(eps=eps, affine=bool(layer.scale), variance=variance, normalized_dims=dims,
                      params="elementwise", bias=bool(layer.center))
        normalized = tuple(int(n) for n in shape[-dims:])
        words = {"eps": eps_words, "affine": f"scale={layer.scale}", "bias": f"center={layer.center}",
                 "normalized_dims": f"axis={layer.axis!r} ({dims} trailing axes)",
                 "params": f"γ and β of the normalized shape {normalized}", "axis": "-1 (the trailing axes)",
                 "variance": _variance_words(variance)}
        return spec, words, normalized

    @staticmethod
    def _groupnorm(layer: keras.layers.GroupNormalization, kind: str, values: dict[str, np.ndarray]
                   ) -> tuple[LayerSpec, dict[str, str], tuple[int, ...]]:
        shape = _build_shape(layer, kind)
        axis = int(layer.axis)
        channels = int(shape[axis])
        groups = int(layer.groups)  # build() resolved groups=-1 to the channel count
        eps, eps_words = _eps(layer)
        variance = _variance("groupnorm")
        spec = GNSpec(axis=axis, eps=eps, affine=_affine(kind, layer.scale, layer.center), variance=variance,
                      groups=groups, params="channel")
        instance = " (one per channel: instance normalization, Keras' groups=-1)" if groups == channels else ""
        words = {"eps": eps_words, "groups": f"groups={groups}{instance}", "affine": f"scale={layer.scale}, "
                 f"center={layer.center}", "params": f"γ and β per channel ({channels},)",
                 "axis": f"axis={axis} of a {len(shape)}-D input", "variance": _variance_words(variance)}
        return spec, words, (channels,)

    @staticmethod
    def _rmsnorm(layer: keras.layers.RMSNormalization, kind: str, values: dict[str, np.ndarray]
                 ) -> tuple[LayerSpec, dict[str, str], tuple[int, ...]]:
        shape = _build_shape(layer, kind)
        dims = _trailing(kind, layer.axis, len(shape))
        eps, eps_words = _eps(layer)
        normalized = tuple(int(n) for n in shape[-dims:])
        spec = RMSSpec(eps=eps, affine=True, normalized_dims=dims, params="elementwise")
        words = {"eps": eps_words, "affine": "always (a `scale` weight; no β)",
                 "normalized_dims": f"axis={layer.axis!r} ({dims} trailing axes)",
                 "params": f"γ (`scale`) of the normalized shape {normalized}, no β",
                 "axis": "-1 (the trailing axes)"}
        return spec, words, normalized
