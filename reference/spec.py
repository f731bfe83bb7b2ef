"""Specs: every convention that implementations of a normalization disagree on, as one explicit record.

`LayerSpec` holds what every normalization has (the channel axis, ε, whether γ and β exist); each normalization's
spec adds its own conventions (BNSpec below: momentum and what it weighs, the running-variance estimator, ...).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import ClassVar, Literal

MomentumWeighs = Literal["new", "old"]
VarianceEstimator = Literal["unbiased", "biased"]


@dataclass(frozen=True)
class LayerSpec:
    """What every normalization's spec has.

    Attributes:
        axis: the channel (feature) axis of the input. 1 for NCHW/NC/NCL, -1 for channels-last.
        eps: added to the variance before the square root. Default: 1e-5.
        affine: learnable γ and β. When False, γ = 1 and β = 0 and no gradients exist for them. Default: True.
    """

    normalization: ClassVar[str]  # the plug-in's name (bnparity.reference.normalization)

    axis: int = 1
    eps: float = 1e-5
    affine: bool = True

    def __post_init__(self) -> None:
        if not self.eps > 0:
            raise ValueError(f"eps must be > 0. Received: eps={self.eps}")

    @property
    def track_running_stats(self) -> bool:
        """Whether the layer keeps running statistics (False unless the normalization says otherwise)."""
        return False

    def replace(self, **changes: object) -> LayerSpec:
        """A copy with some fields changed."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, object]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class BNSpec(LayerSpec):
    """What a BatchNorm layer computes, with no default left implicit.

    Attributes:
        axis: the channel (feature) axis of the input. 1 for NCHW/NC/NCL, -1 for channels-last.
        eps: added to σ²_B before the square root. Default: 1e-5.
        affine: learnable γ and β. When False, γ = 1 and β = 0 and no gradients exist for them.
            Default: True.
        momentum: the running-statistics weight. What it weighs is ``momentum_weighs``. Default: 0.1.
        momentum_weighs: ``"new"``: running = (1 − momentum)·running + momentum·batch (PyTorch);
            ``"old"``: running = momentum·running + (1 − momentum)·batch (MXNet, Flax, Keras).
            Default: ``"new"``.
        running_var: the estimator stored in the running variance: ``"unbiased"`` (× m/(m−1), PyTorch)
            or ``"biased"`` (the σ²_B used to normalize; MXNet, Flax). The normalization itself always
            uses the biased σ²_B. Default: ``"unbiased"``.
        track_running_stats: keep running statistics. When False, eval mode normalizes with batch
            statistics, as PyTorch does. Default: True.
        init_running_mean: initial value of every running mean. Default: 0.0.
        init_running_var: initial value of every running variance. Default: 1.0.
    """

    normalization: ClassVar[str] = "batchnorm"

    momentum: float = 0.1
    momentum_weighs: MomentumWeighs = "new"
    running_var: VarianceEstimator = "unbiased"
    track_running_stats: bool = True
    init_running_mean: float = 0.0
    init_running_var: float = 1.0

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0.0 <= self.momentum <= 1.0:
            raise ValueError(f"momentum must be in [0, 1]. Received: momentum={self.momentum}")
        if self.momentum_weighs not in ("new", "old"):
            raise ValueError(f"momentum_weighs must be 'new' or 'old'. Received: {self.momentum_weighs!r}")
        if self.running_var not in ("unbiased", "biased"):
            raise ValueError(f"running_var must be 'unbiased' or 'biased'. Received: {self.running_var!r}")
        if self.init_running_var < 0:
            raise ValueError(f"init_running_var must be >= 0. Received: {self.init_running_var}")

    @property
    def new_weight(self) -> float:
        """The weight the running estimate gives the new batch statistic, whatever the convention."""
        return self.momentum if self.momentum_weighs == "new" else 1.0 - self.momentum
