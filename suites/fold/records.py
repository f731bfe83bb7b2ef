"""The records of `bnparity fold`: fold.json, format "bnparity-fold/1".

{"format": "bnparity-fold/1", "meta": FoldMeta, "records": [FoldComparison | FoldSkip, ...],
 "alexnet": [AlexNetFoldRecord | FoldSkip, ...]}. Written with bnparity.suites.schema's helpers and read back by
the report through these classes (`load_fold`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from bnparity.suites.schema import Environment, FormatError, by_status, format_string, from_dict, parse_format

FOLD = "fold"
FOLD_VERSION = 1
FORMAT = format_string(FOLD, FOLD_VERSION)
FILENAME = "fold.json"


@dataclass(frozen=True, kw_only=True)
class FoldComparison:
    """One layer case folded by one implementation, against the float64 reference (suites/fold/tolerance.py).

    Each ratio is max over the elements of |got − reference| / allowed; the case passes when every one is ≤ 1.

    Attributes:
        framework: the descriptor name.
        impl: "builtin" (the framework's own fold) or "scratch" (bnparity's in the framework's ops).
        case: the case's name ("tiny-variance/float16/NHWC").
        case_class: its class ("tiny-variance").
        kind: "conv" or "dense".
        dtype: the computation dtype.
        layout: "NCHW", "NHWC" or "NC".
        groups: the convolution's groups.
        bias: whether the layer had a bias.
        max_scale: max |s| = |γ|/√(σ² + ε) over the channels (what the folded weights' rounding grows with).
        y_error: max |y_folded − y_ref|.
        y_ratio: y_folded's error / allowed.
        unfolded_ratio: the framework's own unfolded layer + BatchNorm eval: error / allowed (the same bound).
        weight_ratio: the folded weight against reference.fold's W': error / allowed.
        bias_ratio: the folded bias against b'.
        passed: every ratio ≤ 1.
    """

    status: Literal["ok"] = "ok"
    framework: str
    impl: str
    case: str
    case_class: str
    kind: str
    dtype: str
    layout: str
    groups: int
    bias: bool
    max_scale: float
    y_error: float
    y_ratio: float
    unfolded_ratio: float
    weight_ratio: float
    bias_ratio: float
    passed: bool

    @property
    def worst_ratio(self) -> float:
        return max(self.y_ratio, self.unfolded_ratio, self.weight_ratio, self.bias_ratio)


@dataclass(frozen=True, kw_only=True)
class FoldSkip:
    """A case (or a whole framework, case None) not run: "skipped" with the framework's one-line reason (a dtype or
    layout it cannot compute here, an implementation it lacks, not installed), or "error" when it raised."""

    status: Literal["skipped", "error"] = "skipped"
    framework: str
    impl: str
    case: str | None
    reason: str


@dataclass(frozen=True, kw_only=True)
class AlexNetFoldRecord:
    """A trained BN AlexNet (a run's checkpoint) folded in one framework and evaluated on the run's test images.

    Attributes:
        framework: the framework that folded and evaluated.
        impl: the fold it used ("builtin" where it has one, else "scratch").
        run: the run whose checkpoint was folded ("<framework>-bn-seed0").
        epoch: the checkpoint's epoch.
        dtype: the evaluation dtype (the training dtype, float32).
        test_images: how many test images the framework evaluated.
        reference_images: how many of them (the first) the float64 reference evaluated.
        max_logit_error: max |folded − unfolded| logits, both in the framework in `dtype`.
        max_logit_error_folded_ref: max |folded (framework) − unfolded (float64 reference)|.
        max_logit_error_unfolded_ref: max |unfolded (framework) − unfolded (float64 reference)|.
        logit_scale: max |logit| of the reference.
        allowed_logit_error: the stated bound for `max_logit_error` (see suites/fold/alexnet.py).
        max_weight_ratio: the framework's folded weights and biases against reference.fold's, error / allowed.
        accuracy_unfolded: the framework's unfolded network's test accuracy.
        accuracy_folded: the folded network's.
        accuracy_reference: the float64 reference's (unfolded).
        argmax_changes: test images whose predicted class differs between folded and unfolded (0: identical).
        flip_margins: for each changed prediction, the unfolded network's margin between its top two logits.
        passed: logit error within the bound and no prediction changed.
    """

    status: Literal["ok"] = "ok"
    framework: str
    impl: str
    run: str
    epoch: int
    dtype: str
    test_images: int
    reference_images: int
    max_logit_error: float
    max_logit_error_folded_ref: float
    max_logit_error_unfolded_ref: float
    logit_scale: float
    allowed_logit_error: float
    max_weight_ratio: float
    accuracy_unfolded: float
    accuracy_folded: float
    accuracy_reference: float
    argmax_changes: int
    flip_margins: tuple[float, ...] = ()
    passed: bool


@dataclass(frozen=True, kw_only=True)
class FoldMeta:
    """What was run: the frameworks, the run directory (None: layer cases only), the wall time, complete or not."""

    environment: Environment = dataclasses.field(default_factory=Environment)
    frameworks: tuple[str, ...]
    run_dir: str | None = None
    test_images: int | None = None
    wall_time_s: float | None = None
    complete: bool = True
    tolerance_c: float = 2.0


FoldRecord = FoldComparison | FoldSkip
AlexNetRecord = AlexNetFoldRecord | FoldSkip


@dataclass(frozen=True, kw_only=True)
class FoldDoc:
    """fold.json: meta, the layer cases' records, and the AlexNet folds' records."""

    format: str = FORMAT
    meta: FoldMeta
    records: tuple[FoldRecord, ...] = ()
    alexnet: tuple[AlexNetRecord, ...] = ()

    @property
    def comparisons(self) -> list[FoldComparison]:
        return [r for r in self.records if isinstance(r, FoldComparison)]

    @property
    def skips(self) -> list[FoldSkip]:
        return [r for r in (*self.records, *self.alexnet) if isinstance(r, FoldSkip)]

    @property
    def networks(self) -> list[AlexNetFoldRecord]:
        return [r for r in self.alexnet if isinstance(r, AlexNetFoldRecord)]


def load_fold(data: object, *, where: str = FILENAME) -> FoldDoc:
    """A fold.json document. Raises FormatError (one line) for anything else."""
    if not isinstance(data, Mapping):
        raise FormatError(f"{where}: expected a JSON object. Received: {type(data).__name__}")
    parse_format(data.get("format"), family=FOLD, current=FOLD_VERSION, where=where)
    lists = {}
    for key in ("records", "alexnet"):
        value = data.get(key, [])
        if not isinstance(value, list):
            raise FormatError(f"{where}: expected a list {key!r}. Received: {type(value).__name__}")
        lists[key] = value
    return FoldDoc(meta=from_dict(FoldMeta, data.get("meta") or {}, where=f"{where}: meta"),
                   records=tuple(by_status(r, f"{where}: records[{i}]", FoldComparison, FoldSkip)
                                 for i, r in enumerate(lists["records"])),
                   alexnet=tuple(by_status(r, f"{where}: alexnet[{i}]", AlexNetFoldRecord, FoldSkip)
                                 for i, r in enumerate(lists["alexnet"])))
