"""The conventions registry: each framework's BatchNorm defaults, one frozen record per framework.

The records are data (no framework is imported here); each field cites where the framework defines it,
and the tests named in its `proofs` run the framework to prove them. A difference between frameworks lives
here and in the reports, never in a widened tolerance. A run records the rows it used in conventions.json
(suites/schema.py: ConventionsDoc).
"""

from __future__ import annotations

import importlib
from dataclasses import asdict, dataclass, field

from bnparity.reference.spec import BNSpec, MomentumWeighs, VarianceEstimator

from .registry import descriptor, framework_names


@dataclass(frozen=True)
class Convention:
    """One framework's BatchNorm, as a user who changes nothing gets it.

    Attributes:
        framework: the framework's descriptor name.
        layer: the layer the adapter drives.
        momentum: the default momentum value.
        momentum_weighs: what momentum weighs: "new" (the batch statistic) or "old" (the running value).
        eps: the default ε.
        running_var: the estimator stored in the running variance: "unbiased" or "biased".
        running_var_configurable: whether any argument of the layer changes that estimator.
        channel_axis: the default channel axis (1: channels-first, -1: channels-last).
        variance_algorithm: how σ²_B is computed: "two-pass" (E[(x − μ)²]) or "fast" (E[x²] − E[x]²).
        train_eval_switch: how training (batch statistics) and eval (running statistics) are selected.
        scale_switch: how γ is turned off (and the pitfall, if any).
        running_stats_written: when the running statistics change (forward or backward pass).
        citations: field name -> where the framework's source or documentation defines it.
        constructor: the layer configured by a porter, as a `str.format` template: {m} the momentum argument, {eps}
            ε, {fast} whether to compute σ²_B as E[x²] − E[x]² (the porting guide fills them in).
        batch_of_one: what a training step on a 1-D batch of one (σ²_B = 0, m − 1 = 0) does, as a phrase that
            follows the framework's name ("raises ...", "normalizes to β").
        proofs: field name (or "batch_of_one") -> the tests that prove it, "tests/<file>.py::<function>"; the
            porting guide links them (reports/porting_facts.py holds the proofs shared by every framework).
    """

    framework: str
    layer: str
    momentum: float
    momentum_weighs: MomentumWeighs
    eps: float
    running_var: VarianceEstimator
    running_var_configurable: bool
    channel_axis: int
    variance_algorithm: str
    train_eval_switch: str
    scale_switch: str
    running_stats_written: str
    citations: dict[str, str]
    constructor: str = ""
    batch_of_one: str = ""
    proofs: dict[str, tuple[str, ...]] = field(default_factory=dict)

    def spec(self, *, axis: int | None = None) -> BNSpec:
        """The reference spec that reproduces this framework's defaults (channel axis overridable)."""
        return BNSpec(
            axis=self.channel_axis if axis is None else axis,
            eps=self.eps,
            momentum=self.momentum,
            momentum_weighs=self.momentum_weighs,
            running_var=self.running_var,
        )

    @property
    def new_weight(self) -> float:
        """The weight given to the new batch statistic, comparable across frameworks (rounded to 12 digits:
        1 − 0.9 is 0.09999999999999998 in binary, and is PyTorch's 0.1)."""
        return round(self.spec().new_weight, 12)

    def momentum_for(self, weight: float) -> float:
        """The momentum argument that makes this layer give the new batch `weight` (rounded like new_weight)."""
        return round(weight if self.momentum_weighs == "new" else 1.0 - weight, 12)

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def convention(framework: str) -> Convention:
    """The record of one framework (imports only its data module, never the framework)."""
    descriptor(framework)  # ValueError for an unknown framework
    return importlib.import_module(f"bnparity.frameworks.{framework}.convention").CONVENTION


def all_conventions() -> tuple[Convention, ...]:
    """The whole table, one row per framework, in the registry's order."""
    return tuple(convention(f) for f in framework_names())
