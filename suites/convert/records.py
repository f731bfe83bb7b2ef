"""The records of `bnparity convert` (format "bnparity-convert/1"): what was converted, what is approximated, and
the verification's numbers. The same document is the sidecar JSON written next to the converted file (the
constructor arguments a user must pass: momentum and ε are in no checkpoint file)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from bnparity.frameworks.checkpoints import Unmapped
from bnparity.suites.schema import format_string, from_dict, parse_format, to_dict

FAMILY = "convert"
VERSION = 1
FORMAT = format_string(FAMILY, VERSION)


@dataclass(frozen=True)
class BNConventionsRecord:
    """A BatchNorm layer's constructor conventions: momentum (None: cumulative average) and what it weighs, ε,
    the running-variance estimator, and the batch count where the framework keeps one."""

    momentum: float | None
    momentum_weighs: str
    eps: float
    running_var: str
    batches_tracked: int | None


@dataclass(frozen=True)
class BNLayerRecord:
    """One converted BatchNorm layer.

    Attributes:
        name: the layer's name.
        channels: C.
        count: m, the values per channel of a training batch the variance conversion used (None: not given).
        source, target: the conventions in the source and in the target.
        constructor: the target framework's constructor call with the target conventions.
        exact: whether k training steps after the conversion equal k steps before it, converted.
    """

    name: str
    channels: int
    count: int | None
    source: BNConventionsRecord
    target: BNConventionsRecord
    constructor: str
    exact: bool


@dataclass(frozen=True)
class Agreement:
    """One measured agreement between the source and the target framework.

    Attributes:
        layer: the BN layer's name, or "alexnet" for the whole network's logits.
        quantity: "y_eval" (eval output), "running_mean" / "running_var" (after `steps` training steps, the target's
            converted to the source's convention), "logits", or "*_estimator_shift" (what the estimators' difference
            alone changes: reported, not gated).
        steps: training steps before the comparison (0 for eval).
        count: m of the verification's batches.
        max_abs_err: the largest |source − target|.
        scale: the largest |source value|.
        allowed: the largest error allowed anywhere (atol + rtol·|ref|, its maximum) plus any stated bound.
        gated: whether it decides the exit code.
        passed: every element within what is allowed.
        source_value, target_value: the first element on each side, to print both frameworks' numbers.
        note: what was compared.
    """

    layer: str
    quantity: str
    steps: int
    count: int
    max_abs_err: float
    scale: float
    allowed: float
    gated: bool
    passed: bool
    source_value: float
    target_value: float
    note: str = ""


@dataclass(frozen=True)
class ConvertDoc:
    """What one `bnparity convert` did."""

    format: str
    source_framework: str
    target_framework: str
    source_path: str
    target_path: str
    arch: str | None
    count: int | None
    steps: int
    bn_layers: tuple[BNLayerRecord, ...]
    weights: tuple[str, ...]
    unmapped: tuple[Unmapped, ...]
    approximations: tuple[str, ...]
    agreement: tuple[Agreement, ...]

    @property
    def passed(self) -> bool:
        return all(a.passed for a in self.agreement if a.gated)


def load_convert(data: object, *, where: str = "convert record") -> ConvertDoc:
    """A ConvertDoc from its JSON data (FormatError for another format or version)."""
    if not isinstance(data, dict):
        raise ValueError(f"{where}: expected a JSON object")
    parse_format(data.get("format"), family=FAMILY, current=VERSION, where=where)
    return from_dict(ConvertDoc, data, where=where)


def read_convert(path: Path) -> ConvertDoc:
    return load_convert(json.loads(Path(path).read_text(encoding="utf-8")), where=str(path))


def as_json(doc: ConvertDoc) -> dict[str, object]:
    return to_dict(doc)
