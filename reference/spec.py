"""Specs: every convention that implementations of a normalization disagree on, as one explicit record.

`LayerSpec` holds what every normalization has (the channel or feature axis, ε, whether γ and β exist, how the
variance is computed); each normalization's spec adds its own conventions: BatchNorm's and InstanceNorm's running
statistics (`RunningStatsSpec`), GroupNorm's groups, LayerNorm's and RMSNorm's normalized trailing axes. A spec's
defaults are the baseline framework's (PyTorch's) wherever it has one; every parity case sets its fields explicitly.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import ClassVar, Literal

import numpy as np

from .layout import channel_axis

MomentumWeighs = Literal["new", "old"]
VarianceEstimator = Literal["unbiased", "biased"]
VarianceAlgorithm = Literal["two-pass", "fast"]


@dataclass(frozen=True)
class LayerSpec:
    """What every normalization's spec has.

    Attributes:
        axis: the channel (feature) axis of the input. 1 for NCHW/NC/NCL, -1 for channels-last.
        eps: added to the variance (or mean square) before the square root. Default: 1e-5.
        affine: learnable γ and β. When False, γ = 1 and β = 0 and no gradients exist for them. Default: True.
        variance: how the variance is computed: ``"two-pass"`` (mean of the squared deviations from the mean,
            PyTorch, MXNet) or ``"fast"`` (E[x²] − E[x]², Flax's ``use_fast_variance=True`` default). Equal in exact
            arithmetic; the fast one cancels catastrophically when the mean is large relative to the spread.
            Default: ``"two-pass"``.
    """

    normalization: ClassVar[str]  # the plug-in's name (bnparity.reference.normalization)
    # The fields a parity case fixes in "defaults" mode too (the layer's shape and switches); every other field
    # is a numerical convention that mode takes from the framework's conventions row.
    STRUCTURE: ClassVar[tuple[str, ...]] = ("axis", "affine")

    axis: int = 1
    eps: float = 1e-5
    affine: bool = True
    variance: VarianceAlgorithm = "two-pass"

    def __post_init__(self) -> None:
        if not self.eps > 0:
            raise ValueError(f"eps must be > 0. Received: eps={self.eps}")
        if self.variance not in ("two-pass", "fast"):
            raise ValueError(f"variance must be 'two-pass' or 'fast'. Received: {self.variance!r}")

    @property
    def track_running_stats(self) -> bool:
        """Whether the layer keeps running statistics (False unless the normalization says otherwise)."""
        return False

    def param_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        """The shape of γ and β for inputs of `shape`: (C,), one per channel, unless the normalization says so."""
        return (shape[channel_axis(len(shape), self.axis)],)

    def at_axis(self, axis: int, ndim: int) -> LayerSpec:
        """This spec with its channel axis moved to `axis` (an index of an ndim-D input, made non-negative)."""
        return self.replace(axis=channel_axis(ndim, axis))

    def structure(self) -> dict[str, object]:
        """The fields named by STRUCTURE, with their values."""
        return {name: getattr(self, name) for name in self.STRUCTURE}

    def replace(self, **changes: object) -> LayerSpec:
        """A copy with some fields changed."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, object]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class RunningStatsSpec(LayerSpec):
    """A normalization that can keep running estimates of its statistics for eval mode (BatchNorm, InstanceNorm).

    Attributes:
        momentum: the running-statistics weight. What it weighs is ``momentum_weighs``. None: the cumulative average
            of every batch statistic so far (PyTorch's ``momentum=None``: the k-th batch since the layer was created
            gets weight 1/k, k counted from ``batches_tracked``). Default: 0.1.
        momentum_weighs: ``"new"``: running = (1 − momentum)·running + momentum·batch (PyTorch);
            ``"old"``: running = momentum·running + (1 − momentum)·batch (MXNet, Flax, Keras).
            Default: ``"new"``.
        running_var: the estimator stored in the running variance: ``"unbiased"`` (× m/(m−1), PyTorch)
            or ``"biased"`` (the σ² used to normalize; MXNet, Flax). The normalization itself always
            uses the biased σ². Default: ``"unbiased"``.
        track_running_stats: keep running statistics. When False, eval mode normalizes with the statistics
            of the eval input itself, as PyTorch does. Default: True.
        init_running_mean: initial value of every running mean, or one per channel (a tuple, e.g. a user's layer's
            current statistics). Default: 0.0.
        init_running_var: initial value of every running variance, or one per channel. Default: 1.0.
        batches_tracked: the batches the running statistics have already averaged (PyTorch's
            ``num_batches_tracked``); only the cumulative average (momentum None) reads it. Default: 0.
    """

    STRUCTURE: ClassVar[tuple[str, ...]] = ("axis", "affine", "track_running_stats")

    momentum: float | None = 0.1
    momentum_weighs: MomentumWeighs = "new"
    running_var: VarianceEstimator = "unbiased"
    track_running_stats: bool = True
    init_running_mean: float | tuple[float, ...] = 0.0
    init_running_var: float | tuple[float, ...] = 1.0
    batches_tracked: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.momentum is not None and not 0.0 <= self.momentum <= 1.0:
            raise ValueError(f"momentum must be in [0, 1] or None. Received: momentum={self.momentum}")
        if self.momentum_weighs not in ("new", "old"):
            raise ValueError(f"momentum_weighs must be 'new' or 'old'. Received: {self.momentum_weighs!r}")
        if self.running_var not in ("unbiased", "biased"):
            raise ValueError(f"running_var must be 'unbiased' or 'biased'. Received: {self.running_var!r}")
        if np.any(np.asarray(self.init_running_var, dtype=np.float64) < 0):
            raise ValueError(f"init_running_var must be >= 0. Received: {self.init_running_var}")
        if self.batches_tracked < 0:
            raise ValueError(f"batches_tracked must be >= 0. Received: {self.batches_tracked}")

    @property
    def new_weight(self) -> float:
        """The weight the running estimate gives the new batch statistic, whatever the convention. Raises
        ValueError for the cumulative average (momentum None), whose weight depends on the step: `weight_at`."""
        if self.momentum is None:
            raise ValueError("a cumulative average (momentum=None) weighs each batch by its step: use weight_at(step)")
        return self.momentum if self.momentum_weighs == "new" else 1.0 - self.momentum

    def weight_at(self, step: int) -> float:
        """The new batch's weight in training step `step` (0 for the first step of this run): `new_weight`, or
        1/(batches_tracked + step + 1) for the cumulative average."""
        if self.momentum is None:
            return 1.0 / (self.batches_tracked + step + 1)
        return self.new_weight


@dataclass(frozen=True)
class BNSpec(RunningStatsSpec):
    """What a BatchNorm layer computes, with no default left implicit (Ioffe & Szegedy, 2015).

    Statistics per channel over the batch and every spatial position. The fields are LayerSpec's and
    RunningStatsSpec's: axis, eps (1e-5), affine, variance, momentum (0.1, weighing the new batch), running_var
    ("unbiased"), track_running_stats (True), init_running_mean (0), init_running_var (1).
    """

    normalization: ClassVar[str] = "batchnorm"


@dataclass(frozen=True)
class INSpec(RunningStatsSpec):
    """What an InstanceNorm layer computes (Ulyanov et al., 2016): statistics per sample and channel over the
    spatial positions.

    The fields are RunningStatsSpec's, with PyTorch's InstanceNorm defaults: no γ and β (affine=False) and no
    running statistics (track_running_stats=False: eval mode uses the eval input's own statistics). With running
    statistics, each step's estimate is the batch's average of the per-sample statistics (the variance in
    running_var's estimator over the m spatial values of one sample), as torch.nn.InstanceNorm2d keeps them.
    """

    normalization: ClassVar[str] = "instancenorm"

    affine: bool = False
    track_running_stats: bool = False


@dataclass(frozen=True)
class GNSpec(LayerSpec):
    """What a GroupNorm layer computes (Wu & He, 2018): channels split into `groups` consecutive groups,
    statistics per sample and group over the group's channels and every spatial position.

    Attributes:
        groups: G, the number of groups; must divide the number of channels. Channel c belongs to group
            c // (C / G) whatever the layout. Required in PyTorch; 32 by default in Flax, 1 in MXNet. Default: 1.
        params: the shape of γ and β: ``"channel"`` (C,), PyTorch and Flax, or ``"group"`` (G,), MXNet 1.9's
            gluon.nn.GroupNorm. Default: ``"channel"``.
    """

    normalization: ClassVar[str] = "groupnorm"
    STRUCTURE: ClassVar[tuple[str, ...]] = ("axis", "affine", "groups", "params")

    groups: int = 1
    params: Literal["channel", "group"] = "channel"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.groups < 1:
            raise ValueError(f"groups must be >= 1. Received: groups={self.groups}")
        if self.params not in ("channel", "group"):
            raise ValueError(f"params must be 'channel' or 'group'. Received: {self.params!r}")

    def param_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        channels = shape[channel_axis(len(shape), self.axis)]
        if channels % self.groups:
            raise ValueError(f"groups={self.groups} does not divide the {channels} channels")
        return (self.groups,) if self.params == "group" else (channels,)


@dataclass(frozen=True)
class TrailingSpec(LayerSpec):
    """A normalization over the trailing axes of each sample (LayerNorm, RMSNorm); the feature axis is the last.

    Attributes:
        axis: the feature axis; always -1 (the normalized axes are the last `normalized_dims`).
        normalized_dims: how many trailing axes the statistics run over (the length of PyTorch's
            `normalized_shape`; Flax's `reduction_axes`). Default: 1.
        params: the shape of γ (and β): ``"elementwise"``, one per element of the normalized axes (PyTorch's
            `elementwise_affine`), or ``"feature"``, one per feature of the last axis (Flax's default
            `feature_axes=-1`). The same when normalized_dims is 1. Default: ``"elementwise"``.
    """

    STRUCTURE: ClassVar[tuple[str, ...]] = ("axis", "affine", "normalized_dims", "params")

    axis: int = -1
    normalized_dims: int = 1
    params: Literal["elementwise", "feature"] = "elementwise"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.axis != -1:
            raise ValueError(f"{type(self).__name__} normalizes trailing axes: axis must be -1. Received: {self.axis}")
        if self.normalized_dims < 1:
            raise ValueError(f"normalized_dims must be >= 1. Received: {self.normalized_dims}")
        if self.params not in ("elementwise", "feature"):
            raise ValueError(f"params must be 'elementwise' or 'feature'. Received: {self.params!r}")

    def at_axis(self, axis: int, ndim: int) -> TrailingSpec:
        """The feature axis is always the last: `axis` must be it."""
        if channel_axis(ndim, axis) != ndim - 1:
            raise ValueError(f"{type(self).__name__} normalizes trailing axes: its feature axis cannot move to {axis}")
        return self

    def param_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        if self.normalized_dims >= len(shape):
            raise ValueError(f"normalized_dims={self.normalized_dims} leaves no batch axis in a {len(shape)}-D input")
        return tuple(shape[-self.normalized_dims:]) if self.params == "elementwise" else (shape[-1],)


@dataclass(frozen=True)
class LNSpec(TrailingSpec):
    """What a LayerNorm layer computes (Ba et al., 2016): statistics per sample over the trailing
    `normalized_dims` axes; training and eval are the same (no running statistics).

    Attributes:
        bias: β exists (PyTorch's `bias=False`, Flax's `use_bias=False`, MXNet's `center=False` remove it).
            Only meaningful when affine. Default: True.
    """

    normalization: ClassVar[str] = "layernorm"
    STRUCTURE: ClassVar[tuple[str, ...]] = ("axis", "affine", "normalized_dims", "params", "bias")

    bias: bool = True


@dataclass(frozen=True)
class RMSSpec(TrailingSpec):
    """What an RMSNorm layer computes (Zhang & Sennrich, 2019): y = γ·x/√(mean(x²) + ε) over the trailing
    `normalized_dims` axes, with no mean subtracted and no β. `variance` does not apply (there is no mean).

    ε has no single default: PyTorch's `torch.nn.RMSNorm(eps=None)` uses the machine epsilon of its computation
    type, Flax's `RMSNorm` 1e-6. Default here: 1e-6; the parity cases set it explicitly.
    """

    normalization: ClassVar[str] = "rmsnorm"

    eps: float = 1e-6
