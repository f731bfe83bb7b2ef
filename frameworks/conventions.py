"""The conventions registry: each framework's defaults, one frozen record per framework and normalization.

BatchNorm's row (`Convention`, the first release's) names each of its conventions as a field; the other
normalizations' rows (`LayerConvention`) hold their defaults as spec fields, so that one class serves every
normalization. `frameworks/<name>/convention.py` holds the framework's rows: CONVENTION (BatchNorm) and
LAYER_CONVENTIONS (the others).

The records are data (no framework is imported here); each field cites where the framework defines it,
and the tests named in its `proofs` run the framework to prove them. A difference between frameworks lives
here and in the reports, never in a widened tolerance. A run records the rows it used in conventions.json
(suites/schema.py: ConventionsDoc).
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from types import ModuleType
from typing import Any, ClassVar

import numpy as np

from bnparity.reference.normalization import normalization as plugin
from bnparity.reference.spec import BNSpec, LayerSpec, MomentumWeighs, VarianceEstimator

from .registry import descriptor, framework_names, module_name


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

    normalization: ClassVar[str] = "batchnorm"

    def spec(self, *, axis: int | None = None, dtype: np.dtype | None = None, **structure: object) -> BNSpec:
        """The reference spec that reproduces this framework's defaults (channel axis and the spec's STRUCTURE
        fields overridable; `dtype` is accepted for symmetry with LayerConvention and changes nothing)."""
        return BNSpec(
            axis=self.channel_axis if axis is None else axis,
            eps=self.eps,
            momentum=self.momentum,
            momentum_weighs=self.momentum_weighs,
            running_var=self.running_var,
            variance="fast" if self.variance_algorithm == "fast" else "two-pass",
        ).replace(**structure)

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


EPS_RULES = ("fixed", "machine-epsilon")


@dataclass(frozen=True)
class LayerConvention:
    """One framework's layer of one normalization (other than BatchNorm), as a user who changes nothing gets it.

    Attributes:
        framework: the framework's descriptor name.
        normalization: the reference plug-in ("layernorm", "groupnorm", "instancenorm", "rmsnorm").
        layer: the layer the builtin adapter drives, e.g. "torch.nn.GroupNorm".
        defaults: spec field -> the layer's default, for every field of the normalization's spec the layer has a
            default for (JSON values: numbers, strings, booleans). A structural field without a default (PyTorch's
            required `num_groups`) is absent and described in `facts`.
        facts: spec field (or another convention's name) -> what a porter must know, in one sentence.
        citations: spec field (or fact) -> where the framework's source defines it: "path/to/file.py:LINE: what".
        proofs: spec field (or fact) -> the tests that run the framework to prove it, "tests/<file>.py::<function>".
        constructor: the layer built with its defaults, as written in the framework (for the porting guide).
        eps_rule: "fixed" (ε is defaults["eps"]) or "machine-epsilon" (ε is the machine epsilon of the computation
            dtype, float32 for half-precision inputs: PyTorch's RMSNorm(eps=None)).
    """

    framework: str
    normalization: str
    layer: str
    defaults: dict[str, object]
    facts: dict[str, str]
    citations: dict[str, str]
    proofs: dict[str, tuple[str, ...]] = field(default_factory=dict)
    constructor: str = ""
    eps_rule: str = "fixed"

    def __post_init__(self) -> None:
        if self.eps_rule not in EPS_RULES:
            raise ValueError(f"eps_rule must be one of {', '.join(EPS_RULES)}. Received: {self.eps_rule!r}")

    def eps(self, dtype: np.dtype | None = None) -> float:
        """ε for inputs of `dtype` (needed when eps_rule is "machine-epsilon")."""
        if self.eps_rule == "fixed":
            return float(self.defaults["eps"])
        if dtype is None:
            raise ValueError(f"{self.layer}: ε depends on the input dtype; pass dtype")
        computed = np.float32 if np.dtype(dtype).itemsize < 4 else dtype  # half precision computes in float32
        return float(np.finfo(computed).eps)

    def spec(self, *, dtype: np.dtype | None = None, **structure: object) -> LayerSpec:
        """The reference spec of this layer's defaults, with the given STRUCTURE fields (axis, groups, ...)."""
        spec_type = plugin(self.normalization).spec_type
        known = {f for f in spec_type.__dataclass_fields__}
        fields = {k: v for k, v in self.defaults.items() if k in known}
        if "eps" in known:
            fields["eps"] = self.eps(dtype)
        return spec_type(**{**fields, **structure})

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def convention(framework: str, normalization: str = "batchnorm") -> Convention | LayerConvention:
    """The row of one framework's `normalization` (imports only its data module, never the framework).

    Raises ValueError for an unknown framework and LookupError when the framework has no such layer.
    """
    descriptor(framework)  # ValueError for an unknown framework
    module = importlib.import_module(module_name(framework, "convention"))
    if normalization == Convention.normalization:
        return _own(module.CONVENTION, framework)
    for row in _rows(module, "LAYER_CONVENTIONS", framework):
        if row.normalization == normalization:
            return row
    raise LookupError(f"{framework} has no {normalization} conventions row")


def _own(row: Any, framework: str) -> Any:
    """A convention module's row for `framework`: the row itself, or (a folder of several variants) its entry in
    the mapping variant name -> row. Raises LookupError when the folder has no row for it."""
    if isinstance(row, Mapping):
        if framework not in row:
            raise LookupError(f"{framework} has no row in its folder's convention.py")
        return row[framework]
    return row


def _rows(module: ModuleType, attribute: str, framework: str) -> tuple[Any, ...]:
    """The rows of a convention module's tuple `attribute` that belong to `framework` (a folder of several
    variants lists the rows of each)."""
    return tuple(row for row in getattr(module, attribute, ()) if row.framework == framework)


def all_conventions() -> tuple[Convention, ...]:
    """BatchNorm's table, one row per framework, in the registry's order."""
    return tuple(convention(f) for f in framework_names())


def all_layer_conventions() -> tuple[LayerConvention, ...]:
    """Every framework's rows of every normalization but BatchNorm, framework by framework."""
    rows: list[LayerConvention] = []
    for f in framework_names():
        rows.extend(_rows(importlib.import_module(module_name(f, "convention")), "LAYER_CONVENTIONS", f))
    return tuple(rows)


def layer_conventions(normalization: str) -> tuple[LayerConvention, ...]:
    """One normalization's table (other than BatchNorm): the row of every framework that has the layer."""
    rows = []
    for f in framework_names():
        try:
            rows.append(convention(f, normalization))
        except LookupError:
            continue
    return tuple(rows)


@dataclass(frozen=True)
class ReplicaConvention:
    """One framework's BatchNorm across data-parallel replicas: how a user turns synchronization on, and what it does.

    Attributes:
        framework: the framework's descriptor name.
        layer: the synchronized layer ("torch.nn.SyncBatchNorm").
        switch: how a porter turns synchronized statistics on in an existing model, as code.
        engine: the data-parallel engine the suite runs it on here.
        shard_weighting: how the synchronized statistics weight the shards: "count" (by each shard's number of
            values: the global batch's statistics, also when shards differ in size) or "equal" (the mean of the
            per-replica statistics: wrong when they differ).
        saved_running: the running statistics a per-replica (unsynchronized) run's saved model holds: "replica0"
            (replica 0's own) or "mean" (the mean over the replicas).
        cpu: whether the synchronized layer runs on CPU tensors ("yes", or what it does instead).
        facts: further sentences the porting guide prints.
        citations: field name -> where the framework's source defines it (file:line).
        proofs: field name -> the tests that prove it, "tests/<file>.py::<function>".
    """

    framework: str
    layer: str
    switch: str
    engine: str
    shard_weighting: str
    saved_running: str
    cpu: str
    facts: tuple[str, ...] = ()
    citations: dict[str, str] = field(default_factory=dict)
    proofs: dict[str, tuple[str, ...]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.shard_weighting not in ("count", "equal"):
            raise ValueError(f"shard_weighting must be 'count' or 'equal'. Received: {self.shard_weighting!r}")
        if self.saved_running not in ("replica0", "mean"):
            raise ValueError(f"saved_running must be 'replica0' or 'mean'. Received: {self.saved_running!r}")

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def replica_convention(framework: str) -> ReplicaConvention:
    """`framework`'s cross-replica row (REPLICA_CONVENTION of its convention.py). Raises LookupError if it has none."""
    descriptor(framework)  # ValueError for an unknown framework
    row = getattr(importlib.import_module(module_name(framework, "convention")), "REPLICA_CONVENTION", None)
    row = row.get(framework) if isinstance(row, Mapping) else row
    if row is None:
        raise LookupError(f"{framework} declares no cross-replica BatchNorm convention")
    return row


def all_replica_conventions() -> tuple[ReplicaConvention, ...]:
    """The cross-replica table: the row of every framework that declares one, in the registry's order."""
    rows = []
    for f in framework_names():
        try:
            rows.append(replica_convention(f))
        except LookupError:
            continue
    return tuple(rows)
