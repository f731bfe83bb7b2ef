"""AlexNet as one declarative spec: layers, presets, canonical parameter layout, initialization, .npz files.

Architecture (the seed blog's MXNet AlexNet, channels-first):

    Conv(96, 11, stride 4) [BN] ReLU MaxPool(3, 2)  Conv(256, 5, pad 2) [BN] ReLU MaxPool(3, 2)
    Conv(384, 3, pad 1) [BN] ReLU  Conv(384, 3, pad 1) [BN] ReLU  Conv(256, 3, pad 1) [BN] ReLU MaxPool(3, 2)
    Flatten  Dense(4096) [BN] ReLU Dropout(0.5)  Dense(4096) [BN] ReLU Dropout(0.5)  Dense(10)

The variants differ only by the bracketed normalization layers (after the affine layer, before the ReLU):
BatchNorm ("bn"), none ("nobn"), or GroupNorm ("gn", Wu & He 2018) in exactly BatchNorm's places; every other
layer, and the initial weights of a seed, are the same (`variant_spec` maps a variant name to its spec).

GroupNorm's group rule (`gn_groups`), for a layer whose input has C channels (features after a Dense) and
P positions per channel (H·W after a Conv, 1 after a Dense): G = gcd(32, C), halved while a group would hold
fewer than 8 values ((C/G)·P < 8). That is Wu & He's G = 32 wherever 32 divides C, otherwise the largest power
of two dividing C (so G always divides C); the halving only acts after a narrow Dense layer (tiny's 64 features):
    paper: 96/256/384/384/256, Dense 4096      -> G = 32 everywhere
    cpu:   24/64/96/96/64,     Dense 1024      -> G = 8 (3 channels per group), then 32 everywhere
    tiny:  6/16/24/24/16,      Dense 64        -> G = 2, 16, 8, 8, 16, then 8 and 8 (8 features per group)
Why not G = min(32, C): it would turn the cpu preset's first layer (24 channels) into InstanceNorm (one channel
per group), which Wu & He find worse than GroupNorm. Why at least 8 values: a group of 2 values normalizes to
x̂ = ±1 whatever they are, and its gradient is then only the ε-term, left after a cancellation (GN's backward
removes the mean and x̂ directions, which span all of a 2-value group): tiny's Dense layers at G = 32 made the
float64 gradients of torch and JAX differ from the reference by 3e-12 of a layer's largest (10x the model-parity
tolerance), against 5e-15 with 8 values per group (measured, seed 0, batch 8).

Deviations from the blog, on purpose:
- The blog, besides adding BN, also changed one layer width and one dropout rate in its BN network. We keep
  the widths above and dropout 0.5 in both variants, so that BN is the only difference between them.
- Inputs are single-channel (Fashion-MNIST); "paper" runs them at 224x224 as the blog does (upsampled),
  "cpu" and "tiny" at the native 28x28, with the first convolution adapted (3x3, stride 1, pad 1) so that
  the three 3x3/2 max-pools leave a 2x2 map. "cpu" is quarter width with Dense(1024); "tiny" is 1/16 width
  with Dense(64), for tests.

Canonical parameter layout (every framework converts from and to it; an .npz file holds exactly it):
- "convK.weight" (out, in, kh, kw) (OIHW), "convK.bias" (out,) for K = 1..5;
- "fcK.weight" (out, in), "fcK.bias" (out,) for K = 1..3;
- "bnK.gamma", "bnK.beta", "bnK.running_mean", "bnK.running_var" (C,): bn1..bn5 follow conv1..conv5, bn6 and
  bn7 follow fc1 and fc2. The running variance is stored in the spec's BN convention (PyTorch's: unbiased).
- "gnK.gamma", "gnK.beta" (C,), per channel (PyTorch's and Flax's layout), in the gn variant: gn1..gn7 where
  bn1..bn7 are. GroupNorm keeps no running statistics (eval mode normalizes with the input's own groups).
- The input of fc1 is the last feature map flattened in (C, H, W) order (NCHW). A channels-last framework
  flattens (H, W, C) and must permute fc1's input columns: `dense_columns_chw_to_hwc`.
- Trainer checkpoints add "momentum.<name>" (PyTorch's SGD buffer v, see frameworks/training.py) and
  framework-specific "rng.*" entries.

BN convention: the spec's `bn` is PyTorch's (eps 1e-5, momentum 0.1 weighing the new batch, unbiased running
variance). MXNet and Flax are configured with momentum 0.9 (weighing the old value), the same update; their
running variance stays biased (σ²_B, not σ²_B·m/(m−1)), which no argument changes: a known difference that the
model-parity suite measures and converts (× m/(m−1), m = values per channel) before comparing.

GN convention: the spec's `gn` is PyTorch's torch.nn.GroupNorm (ε = 1e-5, two-pass variance, γ and β per
channel); its `groups` is the rule's 32, and each GroupNorm layer holds its own G (`gn_groups`;
`AlexNetSpec.gn_spec(layer)` is the layer's full GNSpec).
"""

from __future__ import annotations

import dataclasses
import math
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .spec import BNSpec, GNSpec


@dataclass(frozen=True)
class Conv:
    """A 2-D convolution with bias (square kernel, symmetric zero padding)."""

    name: str
    out_channels: int
    kernel: int
    stride: int = 1
    padding: int = 0


@dataclass(frozen=True)
class BatchNorm:
    """BatchNorm over the channels (after a Conv) or the features (after a Dense)."""

    name: str


@dataclass(frozen=True)
class GroupNorm:
    """GroupNorm over the channels (after a Conv) or the features (after a Dense), in `groups` groups of
    consecutive channels; γ and β per channel, no running statistics."""

    name: str
    groups: int


@dataclass(frozen=True)
class ReLU:
    name: str


@dataclass(frozen=True)
class MaxPool:
    """Max-pooling without padding; the output size is floor((size − kernel) / stride) + 1."""

    name: str
    kernel: int
    stride: int


@dataclass(frozen=True)
class Flatten:
    """(C, H, W) -> C·H·W in C, H, W order."""

    name: str = "flatten"


@dataclass(frozen=True)
class Dense:
    name: str
    out_features: int


@dataclass(frozen=True)
class Dropout:
    """Inverted dropout: kept values are scaled by 1/(1 − rate)."""

    name: str
    rate: float


Layer = Conv | BatchNorm | GroupNorm | ReLU | MaxPool | Flatten | Dense | Dropout


GN_GROUPS = 32  # Wu & He's G
GN_MIN_GROUP_VALUES = 8  # the fewest values one GroupNorm group may normalize (see the module docstring)


@dataclass(frozen=True)
class AlexNetSpec:
    """One AlexNet, fully declared. Build it with `alexnet_spec`.

    Attributes:
        name: the preset's name.
        image_size: input height and width.
        in_channels: input channels. Default: 1.
        num_classes: output classes. Default: 10.
        width: the multiplier applied to the channel counts 96/256/384/384/256.
        batch_norm: whether the BN layers are present.
        dropout: the rate of both dropout layers.
        bn: the BatchNorm convention (PyTorch's semantics; see the module docstring).
        layers: the layers in order.
        group_norm: whether the GN layers are present (the "gn" variant). Default: False.
        gn: the GroupNorm convention (PyTorch's); its `groups` is the G of the group rule (32); each GroupNorm
            layer holds its own G (see the module docstring and `gn_spec`).
    """

    name: str
    image_size: int
    width: float
    batch_norm: bool
    dropout: float
    layers: tuple[Layer, ...]
    in_channels: int = 1
    num_classes: int = 10
    bn: BNSpec = BNSpec()
    group_norm: bool = False
    gn: GNSpec = GNSpec(axis=1, eps=1e-5, variance="two-pass", groups=GN_GROUPS)

    def __post_init__(self) -> None:
        names = [layer.name for layer in self.layers]
        if len(set(names)) != len(names):
            raise ValueError(f"layer names must be unique. Received: {names}")
        has_bn = any(isinstance(layer, BatchNorm) for layer in self.layers)
        if has_bn != self.batch_norm:
            raise ValueError(f"batch_norm={self.batch_norm} but the layers {'do' if has_bn else 'do not'} "
                             "contain BatchNorm")
        has_gn = any(isinstance(layer, GroupNorm) for layer in self.layers)
        if has_gn != self.group_norm:
            raise ValueError(f"group_norm={self.group_norm} but the layers {'do' if has_gn else 'do not'} "
                             "contain GroupNorm")
        if self.batch_norm and self.group_norm:
            raise ValueError("a spec has BatchNorm or GroupNorm layers, not both")
        if self.gn.axis != 1 or self.gn.params != "channel" or not self.gn.affine:
            raise ValueError(f"the canonical layout is channels-first with per-channel γ and β: gn must have axis 1, "
                             f"params 'channel' and affine. Received: {self.gn}")
        rates = {layer.rate for layer in self.layers if isinstance(layer, Dropout)}
        if rates - {self.dropout}:
            raise ValueError(f"every Dropout layer must have rate {self.dropout}. Received: {sorted(rates)}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1). Received: {self.dropout}")
        if self.bn.axis != 1:
            raise ValueError(f"the canonical layout is channels-first: bn.axis must be 1. Received: {self.bn.axis}")
        last = self.layers[-1] if self.layers else None
        if not isinstance(last, Dense) or last.out_features != self.num_classes:
            raise ValueError(f"the last layer must be Dense({self.num_classes}). Received: {last}")
        for s in layer_shapes(self):  # raises ValueError when a feature map shrinks below 1x1
            if isinstance(s.layer, GroupNorm):
                self.gn_spec(s.layer).param_shape((1, *s.in_shape))  # raises ValueError when G does not divide C

    @property
    def norm(self) -> str:
        """The normalization layers present: "bn", "gn" or "none"."""
        return "bn" if self.batch_norm else "gn" if self.group_norm else "none"

    def gn_spec(self, layer: GroupNorm) -> GNSpec:
        """The full GNSpec of one GroupNorm layer: the spec's `gn` with the layer's own G."""
        return self.gn.replace(groups=layer.groups)  # type: ignore[return-value]

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of one example."""
        return (self.in_channels, self.image_size, self.image_size)

    @property
    def dropout_layers(self) -> tuple[Dropout, ...]:
        return tuple(layer for layer in self.layers if isinstance(layer, Dropout))

    def with_dropout(self, rate: float) -> AlexNetSpec:
        """The same network with every dropout layer at `rate` (0 turns dropout off)."""
        layers = tuple(dataclasses.replace(la, rate=rate) if isinstance(la, Dropout) else la for la in self.layers)
        return dataclasses.replace(self, dropout=rate, layers=layers)


@dataclass(frozen=True)
class ArchPreset:
    """What differs between the AlexNet presets.

    Attributes:
        image_size: input height and width.
        width: channel multiplier of 96/256/384/384/256.
        dense: width of the two hidden Dense layers.
        conv1: (kernel, stride, padding) of the first convolution.
        dropout: rate of both dropout layers.
        note: what the preset is for.
    """

    image_size: int
    width: float
    dense: int
    conv1: tuple[int, int, int]
    dropout: float = 0.5
    note: str = ""


BASE_CHANNELS = (96, 256, 384, 384, 256)

ARCH_PRESETS: dict[str, ArchPreset] = {
    "tiny": ArchPreset(image_size=28, width=1 / 16, dense=64, conv1=(3, 1, 1),
                       note="tests: 28x28, channels 6/16/24/24/16, Dense(64)"),
    "cpu": ArchPreset(image_size=28, width=1 / 4, dense=1024, conv1=(3, 1, 1),
                      note="CPU training: 28x28, channels 24/64/96/96/64, Dense(1024)"),
    "paper": ArchPreset(image_size=224, width=1.0, dense=4096, conv1=(11, 4, 0),
                        note="the blog's AlexNet: 224x224, channels 96/256/384/384/256, Dense(4096)"),
}


def _channels(width: float) -> tuple[int, ...]:
    return tuple(max(1, round(c * width)) for c in BASE_CHANNELS)


def gn_groups(in_shape: tuple[int, ...], groups: int = GN_GROUPS) -> int:
    """The group rule for a GroupNorm layer seeing (C, H, W) or (C,) per example: G = gcd(groups, C), halved
    while a group would hold fewer than GN_MIN_GROUP_VALUES values ((C/G)·H·W, or C/G)."""
    channels, positions = in_shape[0], int(np.prod(in_shape[1:]))
    g = math.gcd(groups, channels)
    while g > 1 and channels // g * positions < GN_MIN_GROUP_VALUES:
        g //= 2  # still divides C: gcd(32, C) is a power of two
    return g


NORMS = ("bn", "gn", "none")
VARIANT_NORMS = {"bn": "bn", "nobn": "none", "gn": "gn"}  # variant name -> the normalization layers it has


def alexnet_spec(preset: str, *, norm: str | None = None, batch_norm: bool | None = None) -> AlexNetSpec:
    """The AlexNet of a preset with BatchNorm, GroupNorm or no normalization. Raises ValueError for an unknown
    preset or norm.

    Args:
        preset: a key of ARCH_PRESETS ("tiny", "cpu", "paper").
        norm: "bn" (BatchNorm), "gn" (GroupNorm, G = gn_groups(C)) or "none": the layer added after every Conv
            and hidden Dense layer.
        batch_norm: the older spelling: True is norm="bn", False norm="none". Give `norm` or `batch_norm`.
    """
    if (norm is None) == (batch_norm is None):
        raise ValueError(f"give norm or batch_norm, not both or neither. Received: norm={norm!r}, "
                         f"batch_norm={batch_norm!r}")
    if norm is None:
        norm = "bn" if batch_norm else "none"
    if norm not in NORMS:
        raise ValueError(f"unknown norm {norm!r}; expected one of {', '.join(NORMS)}")
    if preset not in ARCH_PRESETS:
        raise ValueError(f"unknown AlexNet preset {preset!r}; expected one of {', '.join(ARCH_PRESETS)}")
    p = ARCH_PRESETS[preset]
    c1, c2, c3, c4, c5 = _channels(p.width)
    k, s, pad = p.conv1
    layers: list[Layer] = []

    def block(affine: Conv | Dense, index: int) -> None:
        layers.append(affine)
        if norm == "bn":
            layers.append(BatchNorm(f"bn{index}"))
        elif norm == "gn":
            layers.append(GroupNorm(f"gn{index}", GN_GROUPS))  # G: set by the group rule below
        layers.append(ReLU(f"relu{index}"))

    block(Conv("conv1", c1, k, stride=s, padding=pad), 1)
    layers.append(MaxPool("pool1", 3, 2))
    block(Conv("conv2", c2, 5, padding=2), 2)
    layers.append(MaxPool("pool2", 3, 2))
    block(Conv("conv3", c3, 3, padding=1), 3)
    block(Conv("conv4", c4, 3, padding=1), 4)
    block(Conv("conv5", c5, 3, padding=1), 5)
    layers += [MaxPool("pool5", 3, 2), Flatten()]
    block(Dense("fc1", p.dense), 6)
    layers.append(Dropout("drop6", p.dropout))
    block(Dense("fc2", p.dense), 7)
    layers.append(Dropout("drop7", p.dropout))
    layers.append(Dense("fc3", 10))
    if norm == "gn":
        shapes = _layer_shapes(tuple(layers), (1, p.image_size, p.image_size))
        layers = [GroupNorm(la.name, gn_groups(sh.in_shape)) if isinstance(la, GroupNorm) else la
                  for la, sh in zip(layers, shapes, strict=True)]
    return AlexNetSpec(name=preset, image_size=p.image_size, width=p.width, batch_norm=norm == "bn",
                       dropout=p.dropout, layers=tuple(layers), group_norm=norm == "gn")


def variant_spec(preset: str, variant: str) -> AlexNetSpec:
    """The AlexNet of a convergence / model-parity variant ("bn", "nobn", "gn"; see VARIANT_NORMS).

    Raises ValueError for an unknown variant or preset.
    """
    if variant not in VARIANT_NORMS:
        raise ValueError(f"unknown variant {variant!r}; expected one of {', '.join(VARIANT_NORMS)}")
    return alexnet_spec(preset, norm=VARIANT_NORMS[variant])


@dataclass(frozen=True)
class LayerShape:
    """A layer with the per-example shapes it sees: (C, H, W) before Flatten, (features,) after."""

    layer: Layer
    in_shape: tuple[int, ...]
    out_shape: tuple[int, ...]


def _out_size(size: int, kernel: int, stride: int, padding: int) -> int:
    return (size + 2 * padding - kernel) // stride + 1


def layer_shapes(spec: AlexNetSpec) -> list[LayerShape]:
    """Every layer's input and output shape. Raises ValueError when a feature map becomes empty."""
    return _layer_shapes(spec.layers, spec.input_shape)


def _layer_shapes(layers: tuple[Layer, ...], input_shape: tuple[int, ...]) -> list[LayerShape]:
    shape: tuple[int, ...] = input_shape
    result = []
    for layer in layers:
        if isinstance(layer, (Conv, MaxPool)):
            if len(shape) != 3:
                raise ValueError(f"{layer.name} needs a (C, H, W) input. Received: {shape}")
            pad = layer.padding if isinstance(layer, Conv) else 0
            size = _out_size(shape[1], layer.kernel, layer.stride, pad)
            if size < 1:
                raise ValueError(f"{layer.name} needs an input of at least {layer.kernel - 2 * pad} pixels. "
                                 f"Received: {shape[1]}x{shape[2]}")
            channels = layer.out_channels if isinstance(layer, Conv) else shape[0]
            out: tuple[int, ...] = (channels, size, size)
        elif isinstance(layer, Flatten):
            out = (int(np.prod(shape)),)
        elif isinstance(layer, Dense):
            if len(shape) != 1:
                raise ValueError(f"{layer.name} needs a flat input. Received: {shape}")
            out = (layer.out_features,)
        else:
            out = shape
        result.append(LayerShape(layer, shape, out))
        shape = out
    return result


def flatten_shape(spec: AlexNetSpec) -> tuple[int, int, int]:
    """(C, H, W) of the feature map that Flatten turns into fc1's input."""
    for s in layer_shapes(spec):
        if isinstance(s.layer, Flatten):
            return s.in_shape  # type: ignore[return-value]
    raise ValueError(f"spec {spec.name!r} has no Flatten layer")


def _param_entries(spec: AlexNetSpec) -> Iterator[tuple[str, tuple[int, ...], bool]]:
    """(name, shape, trainable) in canonical order."""
    for s in layer_shapes(spec):
        layer = s.layer
        if isinstance(layer, Conv):
            yield f"{layer.name}.weight", (layer.out_channels, s.in_shape[0], layer.kernel, layer.kernel), True
            yield f"{layer.name}.bias", (layer.out_channels,), True
        elif isinstance(layer, Dense):
            yield f"{layer.name}.weight", (layer.out_features, s.in_shape[0]), True
            yield f"{layer.name}.bias", (layer.out_features,), True
        elif isinstance(layer, BatchNorm):
            c = (s.in_shape[0],)
            yield f"{layer.name}.gamma", c, True
            yield f"{layer.name}.beta", c, True
            yield f"{layer.name}.running_mean", c, False
            yield f"{layer.name}.running_var", c, False
        elif isinstance(layer, GroupNorm):
            c = (s.in_shape[0],)  # per channel (gn.params "channel")
            yield f"{layer.name}.gamma", c, True
            yield f"{layer.name}.beta", c, True


def param_shapes(spec: AlexNetSpec) -> dict[str, tuple[int, ...]]:
    """Every canonical array (trainable parameters and BN running statistics) with its shape, in order."""
    return {name: shape for name, shape, _ in _param_entries(spec)}


def trainable_names(spec: AlexNetSpec) -> tuple[str, ...]:
    """The names of the parameters SGD updates (weights, biases, γ, β), in canonical order."""
    return tuple(name for name, _, trainable in _param_entries(spec) if trainable)


def running_names(spec: AlexNetSpec) -> tuple[str, ...]:
    """The names of the BN running statistics, in canonical order (empty without BN)."""
    return tuple(name for name, _, trainable in _param_entries(spec) if not trainable)


def layer_of(name: str) -> str:
    """'conv1.weight' -> 'conv1': the layer a canonical array belongs to."""
    return name.split(".", 1)[0]


def momentum_key(name: str) -> str:
    """The checkpoint key of a parameter's SGD momentum buffer (PyTorch's v)."""
    return f"momentum.{name}"


def init_params(spec: AlexNetSpec, *, seed: int) -> dict[str, np.ndarray]:
    """Canonical float32 initial parameters, drawn in canonical order from np.random.default_rng(seed).

    Weights: Glorot/Xavier uniform, U(−√(6/(fan_in + fan_out)), +√(…)) with fan_in = in·kh·kw and
    fan_out = out·kh·kw (MXNet's init.Xavier(), the seed blog's initializer). Biases: 0 (Gluon's default).
    BN: γ = 1, β = 0, running mean = bn.init_running_mean, running variance = bn.init_running_var. GN: γ = 1,
    β = 0. Only the weights draw from the generator, so every variant of a seed has the same weights.

    Why not He/Kaiming (measured on the cpu preset, no BN, lr 0.01, momentum 0.9, Fashion-MNIST): He uniform
    with PyTorch's bias init gave an initial loss of 13.7 (dropout doubles the logits' second moment twice),
    and in a 5-epoch run MXNet never left chance level while torch and JAX did; PyTorch's default
    (U(±1/√fan_in)) shrinks the activations 6x per layer and had learned nothing after 150 steps (loss 2.2).
    With this init every framework starts at loss 2.30 and reaches 0.69 training accuracy in 150 steps.
    """
    rng = np.random.default_rng(seed)
    params: dict[str, np.ndarray] = {}
    for name, shape, _ in _param_entries(spec):
        kind = name.split(".", 1)[1]
        if kind == "weight":
            receptive = int(np.prod(shape[2:]))  # kh·kw for a convolution, 1 for a Dense layer
            bound = np.sqrt(6.0 / ((shape[1] + shape[0]) * receptive))
            values = rng.uniform(-bound, bound, size=shape)
        else:
            fill = {"bias": 0.0, "gamma": 1.0, "beta": 0.0, "running_mean": spec.bn.init_running_mean,
                    "running_var": spec.bn.init_running_var}[kind]
            values = np.full(shape, fill)
        params[name] = values.astype(np.float32)
    return params


def _norm_label(spec: AlexNetSpec) -> str:
    """How error messages name the variant (batch_norm=True/False as before GroupNorm existed)."""
    return "norm='gn'" if spec.group_norm else f"batch_norm={spec.batch_norm}"


def check_params(spec: AlexNetSpec, params: dict[str, np.ndarray]) -> None:
    """Raise ValueError unless `params` holds exactly the canonical arrays of `spec` with their shapes."""
    expected = param_shapes(spec)
    missing = [n for n in expected if n not in params]
    extra = [n for n in params if n not in expected]
    if missing or extra:
        raise ValueError(f"parameters must match AlexNet {spec.name!r} ({_norm_label(spec)}). "
                         f"Missing: {missing or 'none'}; unexpected: {extra or 'none'}")
    for name, shape in expected.items():
        if tuple(np.shape(params[name])) != shape:
            raise ValueError(f"{name} must have shape {shape}. Received: {tuple(np.shape(params[name]))}")


def save_params(path: Path, params: dict[str, np.ndarray]) -> None:
    """Write canonical arrays to an .npz file (uncompressed, names as keys)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as f:
        np.savez(f, **{name: np.asarray(a) for name, a in params.items()})


def load_params(path: Path, *, spec: AlexNetSpec | None = None) -> dict[str, np.ndarray]:
    """Read an .npz file written by `save_params`; with `spec`, check that it holds that network's arrays."""
    with np.load(Path(path), allow_pickle=False) as data:
        params = {name: data[name] for name in data.files}
    if spec is not None:
        check_params(spec, params)
    return params


def dense_columns_chw_to_hwc(weight: np.ndarray, chw: tuple[int, int, int]) -> np.ndarray:
    """Permute a (out, C·H·W) Dense weight's input columns from (C, H, W) to (H, W, C) order.

    A channels-last framework flattens its (H, W, C) feature map in that order; with the permuted weight its
    Dense layer computes exactly what the canonical channels-first network computes.
    """
    c, h, w = chw
    out = weight.shape[0]
    return np.ascontiguousarray(weight.reshape(out, c, h, w).transpose(0, 2, 3, 1).reshape(out, h * w * c))


def dense_columns_hwc_to_chw(weight: np.ndarray, chw: tuple[int, int, int]) -> np.ndarray:
    """The inverse of `dense_columns_chw_to_hwc`."""
    c, h, w = chw
    out = weight.shape[0]
    return np.ascontiguousarray(weight.reshape(out, h, w, c).transpose(0, 3, 1, 2).reshape(out, c * h * w))


def training_dtype(dtype: str) -> np.dtype:
    """The NumPy dtype a Trainer computes in: float32 (training) or float64 (parity checks).

    Raises ValueError for any other dtype.
    """
    if str(dtype) not in ("float32", "float64"):
        raise ValueError(f"dtype must be 'float32' or 'float64'. Received: {dtype!r}")
    return np.dtype(str(dtype))


def params_fingerprint(params: dict[str, np.ndarray]) -> int:
    """A 32-bit number that identifies a set of arrays (CRC-32 of names and bytes), e.g. to seed dropout."""
    crc = 0
    for name in sorted(params):
        crc = zlib.crc32(name.encode(), crc)
        crc = zlib.crc32(np.ascontiguousarray(params[name]).tobytes(), crc)
    return crc
