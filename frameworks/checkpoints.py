"""Checkpoint files of BatchNorm networks: the interface of frameworks/<fw>/checkpoint.py (`CheckpointFormat`).

`bnparity convert` (issue 12) reads one framework's native checkpoint (a PyTorch state dict, a Gluon .params file, a
Flax variables file) and writes another's. Each framework folder says how its files are read and written, how it
names a layer's tensors (its `bn_leaves` and `weight_leaves`: a role -> the key's last part), and the layout of its
convolution and dense weights; it builds its own BatchNorm layer from a `BNState` (for the verification) and, for the
AlexNet of a reference preset, maps the file to and from the canonical layout with its alexnet.py. Everything else
(grouping keys by layer, telling BN layers from convolution and dense ones, what cannot be mapped) is here, once,
framework-free. Momentum and ε are constructor arguments, in no file: the caller gives them (`BNConventions`).

Canonical layout (bnparity.reference.alexnet): convolution weights (O, I, *spatial), dense weights (out, in), layer
names with "." between the parts of a path; the running variance is in the source's estimator until converted.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np

from bnparity.reference.spec import BNSpec, MomentumWeighs, VarianceEstimator

from .registry import Unavailable, load_class

MODULE = "checkpoint"
CLASS = "CheckpointFormat"
BN_ROLES = ("gamma", "beta", "running_mean", "running_var", "batches_tracked")
WEIGHT_ROLES = ("weight", "bias")


class CheckpointError(ValueError):
    """A checkpoint bnparity cannot read or map (unreadable, pickled, an unknown key, a shape mismatch): one line."""


@dataclass(frozen=True)
class BNConventions:
    """What a BatchNorm layer's constructor (not its file) says: momentum, what it weighs, ε, the estimator.

    Attributes:
        momentum: the momentum argument; None: PyTorch's cumulative average.
        momentum_weighs: "new" (the batch statistic) or "old" (the running value).
        eps: ε.
        running_var: the estimator its running variance stores ("unbiased" or "biased").
    """

    momentum: float | None
    momentum_weighs: MomentumWeighs
    eps: float
    running_var: VarianceEstimator


@dataclass(frozen=True)
class BNState:
    """One BatchNorm layer's state and conventions.

    Attributes:
        name: the layer's name (canonical: "." between path parts).
        gamma, beta, running_mean, running_var: per channel, shape (C,), in the file's dtype.
        batches_tracked: PyTorch's num_batches_tracked, or None where the framework keeps none.
        conventions: momentum and its meaning, ε, the running-variance estimator.
    """

    name: str
    gamma: np.ndarray
    beta: np.ndarray
    running_mean: np.ndarray
    running_var: np.ndarray
    batches_tracked: int | None
    conventions: BNConventions

    @property
    def channels(self) -> int:
        return int(self.gamma.shape[0])

    def spec(self, axis: int = 1) -> BNSpec:
        """The reference spec of this layer: its conventions, its running statistics as the initial ones."""
        c = self.conventions
        return BNSpec(axis=axis, eps=c.eps, momentum=c.momentum, momentum_weighs=c.momentum_weighs,
                      running_var=c.running_var, batches_tracked=self.batches_tracked or 0,
                      init_running_mean=tuple(float(v) for v in self.running_mean),
                      init_running_var=tuple(float(v) for v in self.running_var))


@dataclass(frozen=True)
class WeightTensor:
    """The weight (and bias) of a convolution or dense layer, canonical layout.

    Attributes:
        name: the layer's name.
        kind: "conv" ((O, I, *spatial)) or "dense" ((out, in)).
        weight: the weight, canonical layout.
        bias: the bias (out,), or None.
        native_layout: the source file's layout ("OIHW", "HWIO", "(out, in)", "(in, out)").
    """

    name: str
    kind: str
    weight: np.ndarray
    bias: np.ndarray | None
    native_layout: str


@dataclass(frozen=True)
class Unmapped:
    """A tensor (or layer) that was not converted, and why."""

    name: str
    reason: str


@dataclass(frozen=True)
class LayerList:
    """A checkpoint read into layers, in file order.

    Attributes:
        layers: BN states and convolution/dense weights, in the order of the file.
        unmapped: the tensors that could not be mapped, by name, with the reason.
    """

    layers: tuple[BNState | WeightTensor, ...]
    unmapped: tuple[Unmapped, ...] = ()

    @property
    def bn(self) -> tuple[BNState, ...]:
        return tuple(la for la in self.layers if isinstance(la, BNState))


@dataclass(frozen=True)
class ConvertedCheckpoint:
    """A conversion: the source's layers, the target's, and what was not mapped.

    Attributes:
        source, target: the frameworks.
        source_layers: what was read.
        target_layers: what was written (BN states in the target's conventions).
        unmapped: tensors of the source not written, by name, with the reason.
        approximations: what is not exact, one sentence each (layer name first).
    """

    source: str
    target: str
    source_layers: LayerList
    target_layers: LayerList
    unmapped: tuple[Unmapped, ...]
    approximations: tuple[str, ...]


def channels_last_weight_to_canonical(weight: np.ndarray) -> np.ndarray:
    """A channels-last framework's weight (conv kernel (*S, I, O), e.g. HWIO; dense kernel (in, out)) in the canonical
    layout ((O, I, *S), e.g. OIHW; (out, in)): Flax's and Keras' layout."""
    w = np.asarray(weight)
    if w.ndim == 2:
        return np.ascontiguousarray(w.T)  # (in, out) -> (out, in)
    n = w.ndim
    return np.ascontiguousarray(w.transpose(n - 1, n - 2, *range(n - 2)))  # (*S, I, O) -> (O, I, *S)


def channels_last_weight_from_canonical(weight: np.ndarray) -> np.ndarray:
    """A canonical weight in a channels-last framework's layout (the inverse of channels_last_weight_to_canonical)."""
    w = np.asarray(weight)
    if w.ndim == 2:
        return np.ascontiguousarray(w.T)  # (out, in) -> (in, out)
    return np.ascontiguousarray(w.transpose(*range(2, w.ndim), 1, 0))  # (O, I, *S) -> (*S, I, O)


class CheckpointFormat(ABC):
    """One framework's native checkpoint files and tensor naming.

    Class attributes:
        framework: the descriptor's name.
        suffixes: the file name endings it reads and writes (".pt", ".params", ".msgpack", ".npz").
        bn_leaves: role ("gamma", "beta", "running_mean", "running_var", "batches_tracked") -> the last part of the
            key (torch: "weight", "bias", "running_mean", ...); a role the framework does not store is absent.
        weight_leaves: role ("weight", "bias") -> the last part of the key of a convolution or dense layer.
        flatten_order: the order its Flatten lays out a (C, H, W) map: "CHW" or "HWC".
        conv_layout, dense_layout: the layout names of its weights, for messages.
        cumulative_average: whether its BatchNorm can hold PyTorch's momentum=None (cumulative average).
    """

    framework: ClassVar[str]
    suffixes: ClassVar[tuple[str, ...]]
    bn_leaves: ClassVar[dict[str, str]]
    weight_leaves: ClassVar[dict[str, str]]
    flatten_order: ClassVar[str]
    conv_layout: ClassVar[str]
    dense_layout: ClassVar[str]
    cumulative_average: ClassVar[bool] = False

    @abstractmethod
    def read(self, path: Path) -> dict[str, np.ndarray]:
        """The tensors of the file, by native key (a nested file flattened with "/"), in file order. Raises
        CheckpointError for a file it cannot read (or will not: a pickle that is not plain tensors)."""

    @abstractmethod
    def write(self, path: Path, tensors: dict[str, np.ndarray]) -> None:
        """Write native tensors (keys as `read` returns them) in the framework's own file format."""

    @abstractmethod
    def split_key(self, key: str) -> tuple[str, str]:
        """(layer name with "." between path parts, leaf) of a native key. Raises CheckpointError for a key of no
        form it knows."""

    @abstractmethod
    def native_key(self, layer: str, leaf: str) -> str:
        """The native key of `leaf` of `layer` (the inverse of `split_key`)."""

    @abstractmethod
    def weight_to_canonical(self, weight: np.ndarray) -> np.ndarray:
        """A native convolution (ndim ≥ 3) or dense (ndim 2) weight in the canonical layout."""

    @abstractmethod
    def weight_from_canonical(self, weight: np.ndarray) -> np.ndarray:
        """A canonical convolution or dense weight in the native layout."""

    @abstractmethod
    def bn_layer(self, state: BNState, ndim: int) -> tuple[object, object | None]:
        """The framework's own BatchNorm layer holding `state`, for inputs of `ndim` dimensions, and its variables
        (None for a framework whose layers hold their state): what frameworks/<fw>/user_layers.py reads."""

    @abstractmethod
    def constructor(self, state: BNState) -> str:
        """The constructor call a user writes to build this layer with `state`'s conventions."""

    @abstractmethod
    def alexnet_read(self, arch: object, tensors: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray],
                                                                                   dict[str, int]]:
        """(canonical arrays, BN layer -> batches tracked) of the AlexNet `arch` (an AlexNetSpec) held in `tensors`,
        through the framework's alexnet.py. Raises CheckpointError for missing, unknown or misshapen tensors."""

    @abstractmethod
    def alexnet_write(self, arch: object, params: dict[str, np.ndarray],
                      batches_tracked: dict[str, int]) -> dict[str, np.ndarray]:
        """The native tensors of the AlexNet `arch` holding canonical `params`, as the framework's model saves them."""

    @abstractmethod
    def alexnet_logits(self, arch: object, params: dict[str, np.ndarray], x: np.ndarray) -> np.ndarray:
        """The eval-mode logits of the framework's AlexNet holding `params` on NCHW float32 images `x`."""


def load_format(framework: str) -> CheckpointFormat | Unavailable:
    """`framework`'s CheckpointFormat, or why it is unavailable here (one line)."""
    cls = load_class(framework, MODULE, CLASS,
                     f"{framework} has no checkpoint format (frameworks/{framework}/{MODULE}.py)")
    return cls if isinstance(cls, Unavailable) else cls()


def _shape(a: np.ndarray) -> tuple[int, ...]:
    return tuple(int(n) for n in np.shape(a))


def read_layers(fmt: CheckpointFormat, tensors: dict[str, np.ndarray], conventions: BNConventions) -> LayerList:
    """The layers of a checkpoint with no architecture given: keys grouped by layer in file order; a layer with a
    running mean and variance is BatchNorm, one with a weight of ≥ 2 dimensions a convolution or dense layer.

    Raises CheckpointError for a key of no known form or leaf, and for a shape mismatch inside a layer. A layer
    that is neither (a LayerNorm's or GroupNorm's γ and β, say) is listed in `unmapped`, never dropped."""
    grouped: dict[str, dict[str, str]] = {}
    known = set(fmt.bn_leaves.values()) | set(fmt.weight_leaves.values())
    for key in tensors:
        layer, leaf = fmt.split_key(key)
        if leaf not in known:
            raise CheckpointError(f"unknown key {key!r}: a {fmt.framework} BatchNorm, convolution or dense layer has "
                                  f"only {', '.join(sorted(known))}")
        grouped.setdefault(layer, {})[leaf] = key
    layers: list[BNState | WeightTensor] = []
    unmapped: list[Unmapped] = []
    bn_role = {leaf: role for role, leaf in fmt.bn_leaves.items()}
    w_role = {leaf: role for role, leaf in fmt.weight_leaves.items()}
    for layer, leaves in grouped.items():
        if fmt.bn_leaves["running_mean"] in leaves and fmt.bn_leaves["running_var"] in leaves:
            roles = {bn_role[leaf]: tensors[key] for leaf, key in leaves.items() if leaf in bn_role}
            extra = [key for leaf, key in leaves.items() if leaf not in bn_role]
            unmapped += [Unmapped(key, "not a BatchNorm tensor") for key in extra]
            layers.append(_bn_state(layer, roles, conventions))
            continue
        weight = tensors.get(leaves.get(fmt.weight_leaves["weight"], ""))
        if weight is None or np.ndim(weight) < 2:
            unmapped += [Unmapped(key, "a layer with neither running statistics nor a convolution or dense weight "
                                       "(a LayerNorm's or GroupNorm's γ and β?)") for key in leaves.values()]
            continue
        roles = {w_role[leaf]: tensors[key] for leaf, key in leaves.items() if leaf in w_role}
        unmapped += [Unmapped(key, "not a convolution or dense tensor") for leaf, key in leaves.items()
                     if leaf not in w_role]
        canonical = fmt.weight_to_canonical(np.asarray(weight))
        bias = roles.get("bias")
        if bias is not None and _shape(bias) != (canonical.shape[0],):
            raise CheckpointError(f"shape mismatch in {layer}: its bias has shape {_shape(bias)}, its weight "
                                  f"{_shape(weight)} has {canonical.shape[0]} outputs")
        kind = "conv" if canonical.ndim >= 3 else "dense"
        layers.append(WeightTensor(layer, kind, canonical, None if bias is None else np.asarray(bias),
                                   fmt.conv_layout if kind == "conv" else fmt.dense_layout))
    return LayerList(tuple(layers), tuple(unmapped))


def _bn_state(layer: str, roles: dict[str, np.ndarray], conventions: BNConventions) -> BNState:
    shape = _shape(roles["running_mean"])
    if len(shape) != 1:
        raise CheckpointError(f"shape mismatch in {layer}: a running mean must have one value per channel. "
                              f"Received: shape {shape}")
    c = shape[0]
    gamma = roles.get("gamma", np.ones(c, dtype=roles["running_mean"].dtype))  # no γ (affine=False): 1
    beta = roles.get("beta", np.zeros(c, dtype=roles["running_mean"].dtype))
    for role, value in (("gamma", gamma), ("beta", beta), ("running_var", roles["running_var"])):
        if _shape(value) != (c,):
            raise CheckpointError(f"shape mismatch in {layer}: {role} has shape {_shape(value)}, the running mean "
                                  f"({c},)")
    tracked = roles.get("batches_tracked")
    return BNState(layer, np.asarray(gamma), np.asarray(beta), np.asarray(roles["running_mean"]),
                   np.asarray(roles["running_var"]), None if tracked is None else int(np.asarray(tracked)),
                   conventions)


def write_layers(fmt: CheckpointFormat, layers: LayerList) -> tuple[dict[str, np.ndarray], tuple[Unmapped, ...]]:
    """The native tensors of `layers` in `fmt`'s naming and layout, and what `fmt` has no place for (a BN layer's
    batches_tracked where the format keeps none: it is in the sidecar record instead)."""
    out: dict[str, np.ndarray] = {}
    dropped: list[Unmapped] = []
    for la in layers.layers:
        if isinstance(la, BNState):
            for role in BN_ROLES:
                if role == "batches_tracked":
                    if "batches_tracked" in fmt.bn_leaves:
                        out[fmt.native_key(la.name, fmt.bn_leaves[role])] = np.asarray(la.batches_tracked or 0,
                                                                                       dtype=np.int64)
                    elif la.batches_tracked is not None:
                        dropped.append(Unmapped(f"{la.name}.num_batches_tracked",
                                                f"{fmt.framework} keeps no batch count ({la.batches_tracked}; "
                                                "recorded in the sidecar JSON)"))
                    continue
                out[fmt.native_key(la.name, fmt.bn_leaves[role])] = getattr(la, role)
        else:
            out[fmt.native_key(la.name, fmt.weight_leaves["weight"])] = fmt.weight_from_canonical(la.weight)
            if la.bias is not None:
                out[fmt.native_key(la.name, fmt.weight_leaves["bias"])] = la.bias
    return out, tuple(dropped)


def flatten_ambiguous(layers: LayerList) -> tuple[str, ...]:
    """The dense layers whose input columns' order depends on a feature map's (H, W) when no architecture is given:
    the first dense layer after a convolution, unless its inputs are exactly that convolution's channels (a 1×1 map,
    whose flattening is the same in every order)."""
    ambiguous, conv_channels = [], None
    for la in layers.layers:
        if isinstance(la, WeightTensor) and la.kind == "conv":
            conv_channels = la.weight.shape[0]
        elif isinstance(la, WeightTensor) and la.kind == "dense" and conv_channels is not None:
            if la.weight.shape[1] != conv_channels:
                ambiguous.append(la.name)
            conv_channels = None
    return tuple(ambiguous)


def alexnet_layers(arch: object, params: dict[str, np.ndarray], batches_tracked: dict[str, int],
                   conventions: BNConventions, *, native_layouts: tuple[str, str]) -> LayerList:
    """The layers of an AlexNet's canonical arrays (bnparity.reference.alexnet), in the network's order."""
    from bnparity.reference.alexnet import BatchNorm, Conv, Dense, layer_shapes

    layers: list[BNState | WeightTensor] = []
    for s in layer_shapes(arch):  # type: ignore[arg-type]
        name = s.layer.name
        if isinstance(s.layer, BatchNorm):
            layers.append(BNState(name, params[f"{name}.gamma"], params[f"{name}.beta"],
                                  params[f"{name}.running_mean"], params[f"{name}.running_var"],
                                  batches_tracked.get(name), conventions))
        elif isinstance(s.layer, (Conv, Dense)):
            kind = "conv" if isinstance(s.layer, Conv) else "dense"
            layers.append(WeightTensor(name, kind, params[f"{name}.weight"], params[f"{name}.bias"],
                                       native_layouts[0] if kind == "conv" else native_layouts[1]))
    return LayerList(tuple(layers))


def alexnet_params(layers: LayerList) -> tuple[dict[str, np.ndarray], dict[str, int]]:
    """Canonical arrays and batch counts of an AlexNet's layers (the inverse of `alexnet_layers`)."""
    params: dict[str, np.ndarray] = {}
    batches: dict[str, int] = {}
    for la in layers.layers:
        if isinstance(la, BNState):
            for role in BN_ROLES[:4]:
                params[f"{la.name}.{role}"] = getattr(la, role)
            if la.batches_tracked is not None:
                batches[la.name] = la.batches_tracked
        else:
            params[f"{la.name}.weight"] = la.weight
            params[f"{la.name}.bias"] = la.bias
    return params, batches


def check_tensors(expected: dict[str, np.ndarray], got: dict[str, np.ndarray], what: str) -> None:
    """Raise CheckpointError unless `got` has exactly `expected`'s keys and shapes (one line, the first problems)."""
    missing = [k for k in expected if k not in got]
    unknown = [k for k in got if k not in expected]
    if unknown:
        raise CheckpointError(f"unknown key{'s' if len(unknown) > 1 else ''} for {what}: {', '.join(unknown[:4])}"
                              + (f" (and {len(unknown) - 4} more)" if len(unknown) > 4 else ""))
    if missing:
        raise CheckpointError(f"{what} is missing {', '.join(missing[:4])}"
                              + (f" (and {len(missing) - 4} more)" if len(missing) > 4 else ""))
    for k, v in expected.items():
        if _shape(got[k]) != _shape(v):
            raise CheckpointError(f"shape mismatch for {k} of {what}: expected {_shape(v)}. Received: {_shape(got[k])}")
