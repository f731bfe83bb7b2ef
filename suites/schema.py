"""The record schema: one frozen dataclass per record family written to disk, and the versioned files that hold them.

Data flows one way: the suites build these records, the record files hold them (JSON documents and JSONL
streams), and `bnparity.reports` reads them back through the same classes, never by string keys.

Every file names its format and version: a JSON document has a top-level ``"format": "bnparity-<family>/<N>"``;
a JSONL stream's first line is a header record ``{"kind": "header", "format": "bnparity-<family>/<N>"}``.
Files written by the release of 2026-11-29 load too (each section says what its version 1 looked like); a file from a
newer, unknown version is refused with one line naming both versions.

Sections (one per record family; each is owned by the suite that writes it):
- shared machinery: format strings, `from_dict` / `to_dict`, `FormatError`;
- layer parity (bnparity parity / check);
- model parity (bnparity model-parity);
- training runs (bnparity train: JSONL events, the run directory's manifest, conclusions);
- the main job's run manifest (bnparity run);
- pitfalls (bnparity pitfalls);
- cross-replica parity (bnparity sync-parity) and data-parallel step parity (bnparity dp-parity).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from bnparity.frameworks.conventions import Convention, LayerConvention, ReplicaConvention
from bnparity.suites.convergence.presets import TrainPreset

T = TypeVar("T")


# --- shared machinery ---------------------------------------------------------------------------------------------


class FormatError(ValueError):
    """A record file or record that this version of bnparity cannot read; the message is one line."""


def format_string(family: str, version: int) -> str:
    """'bnparity-<family>/<version>', the value of a file's "format" field."""
    return f"bnparity-{family}/{version}"


def parse_format(text: object, *, family: str, current: int, where: str) -> int:
    """The version of a "format" value of `family`: 1..current. Raises FormatError for another family or a
    version newer than `current` (naming both versions)."""
    prefix = f"bnparity-{family}/"
    if not isinstance(text, str) or not text.startswith(prefix) or not text[len(prefix):].isdigit():
        raise FormatError(f"{where}: expected format {format_string(family, current)}. Received: {text!r}")
    version = int(text[len(prefix):])
    if version > current:
        raise FormatError(f"{where} has format {text}, newer than this bnparity reads "
                          f"({format_string(family, current)}); upgrade bnparity to read it")
    if version < 1:
        raise FormatError(f"{where}: format version must be >= 1. Received: {text!r}")
    return version


def _finite_or_none(value: Any) -> Any:
    """JSON has no inf or nan: they are written as null (the record's other fields say what happened)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def to_dict(record: Any) -> Any:
    """A record (dataclass) as JSON-ready data: nested dataclasses as objects, tuples as lists, inf/nan as null."""
    if dataclasses.is_dataclass(record) and not isinstance(record, type):
        return {f.name: to_dict(getattr(record, f.name)) for f in dataclasses.fields(record)}
    if isinstance(record, Mapping):
        return {str(k): to_dict(v) for k, v in record.items()}
    if isinstance(record, (list, tuple)):
        return [to_dict(v) for v in record]
    return _finite_or_none(record)


def _convert(tp: Any, value: Any, where: str) -> Any:
    """`value` (from JSON) as type `tp`: dataclasses, Optional/unions, tuple[...], list[...], dict[str, ...]."""
    origin = typing.get_origin(tp)
    if tp is Any or tp is object:
        return value
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(arg, value, where)
            except FormatError as e:
                errors.append(str(e))
        raise FormatError(errors[0] if errors else f"{where}: unexpected null")
    if origin is typing.Literal:
        if value not in typing.get_args(tp):
            raise FormatError(f"{where}: expected one of {typing.get_args(tp)}. Received: {value!r}")
        return value
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, Mapping):
            raise FormatError(f"{where}: expected an object for {tp.__name__}. Received: {type(value).__name__}")
        return from_dict(tp, value, where=where)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise FormatError(f"{where}: expected a list. Received: {type(value).__name__}")
        args = typing.get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(args[0], v, where) for v in value)
        return tuple(_convert(a, v, where) for a, v in zip(args, value, strict=True))
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise FormatError(f"{where}: expected a list. Received: {type(value).__name__}")
        (arg,) = typing.get_args(tp)
        return [_convert(arg, v, where) for v in value]
    if origin in (dict, Mapping):
        if not isinstance(value, Mapping):
            raise FormatError(f"{where}: expected an object. Received: {type(value).__name__}")
        key_type, value_type = typing.get_args(tp)
        return {k: _convert(value_type, v, where) for k, v in value.items()}
    if tp is float:
        if value is None:  # inf or nan written as null
            return math.nan
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise FormatError(f"{where}: expected a number. Received: {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise FormatError(f"{where}: expected an integer. Received: {value!r}")
        return value
    if tp in (str, bool):
        if not isinstance(value, tp):
            raise FormatError(f"{where}: expected {tp.__name__}. Received: {value!r}")
        return value
    if tp is type(None):
        if value is not None:
            raise FormatError(f"{where}: expected null. Received: {value!r}")
        return None
    raise TypeError(f"schema: no conversion for type {tp!r}")  # a bug in a record class, not bad input


def from_dict(cls: type[T], data: Mapping[str, Any], *, where: str = "record") -> T:
    """A record of class `cls` from JSON data. Unknown keys are ignored (a newer minor addition); a missing key
    takes the field's default, or raises FormatError when the field has none."""
    hints = _hints(cls)
    values = {}
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        if f.name in data:
            values[f.name] = _convert(hints[f.name], data[f.name], f"{where}.{f.name}")
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise FormatError(f"{where}: missing field {f.name!r} of {cls.__name__}")
    try:
        return cls(**values)
    except ValueError as e:  # a record class's own check (e.g. TrainPreset's) refused the values
        if isinstance(e, FormatError):
            raise
        raise FormatError(f"{where}: {e}") from None


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    """The resolved field types of a record class (cached: resolving them costs more than converting a record)."""
    return typing.get_type_hints(cls)


# The environment manifest, shared by the record files that carry one.

@dataclass(frozen=True)
class Environment:
    """The environment manifest a record file carries (bnparity.suites.environment.environment())."""

    time: str = ""
    python: str = ""
    platform: str = ""
    machine: str = ""
    cpu: str = ""
    cpu_count: int | None = None
    threads: dict[str, str | None] = dataclasses.field(default_factory=dict)
    packages: dict[str, str | None] = dataclasses.field(default_factory=dict)
    git_commit: str | None = None


ENVIRONMENT_KEYS = tuple(f.name for f in dataclasses.fields(Environment))


# --- layer parity -------------------------------------------------------------------------------------------------
#
# parity.json (bnparity parity --json, bnparity check --json): {"format": "bnparity-parity/2", "meta": ParityMeta,
# "records": [LayerComparison | LayerSkip, ...]}. A record's "status" says which: "ok" is a comparison, "skipped"
# and "error" are not. Version 1 (the release of 2026-11-29) wrote the same records as plain objects without
# `normalization`, `scale` and `new_weight`, named the defaults-mode reference in the baseline framework's
# convention "<baseline name>-convention", had the environment at the top of meta and no
# meta.baseline; `load_parity` upgrades it.

PARITY_FAMILY = "parity"
PARITY_VERSION = 2
PARITY_FORMAT = format_string(PARITY_FAMILY, PARITY_VERSION)

ParityMode = Literal["matched", "defaults"]
# "matched": the reference with the spec the implementation was configured to; "own-convention": the reference in the
# framework's documented defaults (both judge the layer itself); "baseline-convention": the reference in the
# baseline framework's defaults (the difference a porter sees; never a gate).
ParityReference = Literal["matched", "own-convention", "baseline-convention"]
BASELINE_REFERENCE = "baseline-convention"


@dataclass(frozen=True)
class LayerComparison:
    """One quantity of one implementation on one case, compared with the float64 reference (status "ok").

    Attributes:
        case: the case's name (its description is in the document's meta.cases).
        framework, impl: the framework's descriptor name and "builtin" or "scratch".
        mode: "matched" (configured to the case's semantics) or "defaults" (the layer as shipped).
        reference: which reference run it is compared with (see ParityReference).
        normalization: the plug-in the case belongs to ("batchnorm"; bnparity.reference.normalization).
        dtype, shape, axis, steps, note: the case's dtype, input shape, channel axis, training steps and note.
        gate: whether a failure fails the run (standard cases in matched and own-convention comparisons).
        kappa: the input's condition factor κ (the tolerance grows with it).
        spec: the reference spec, as its fields (the normalization's own spec type).
        spec_adjusted: "field=value" for every field where `spec` differs from the case's canonical spec.
        new_weight: the weight `spec` gives the new batch in the running statistics (None for a normalization that
            keeps none).
        quantity: "y", "dx", "dgamma", "dbeta", "running_mean", "running_var" or "y_eval".
        passed: every element satisfies |got − ref| ≤ atol + rtol·|ref|.
        max_abs_err, max_rel_err: the greatest absolute and relative difference (None: inf or nan).
        worst_index: the index of the element with the greatest error/allowed ratio (None when there is no array).
        n_mismatched, n_total: elements outside the tolerance, and elements compared.
        atol, rtol, scale: the tolerance: rtol = u·(32 + 4κ), atol = rtol·scale, scale the magnitude the error is
            judged against (suites/parity/tolerance.py).
        worst_ratio: the greatest error as a fraction of what was allowed there (≤ 1 passes; None: inf or nan).
        problem: a structural problem (a missing value, a wrong shape) in place of numbers, else None.
        status: always "ok".
    """

    case: str
    framework: str
    impl: str
    mode: ParityMode
    reference: ParityReference
    normalization: str
    dtype: str
    gate: bool
    shape: tuple[int, ...]
    axis: int
    steps: int
    kappa: float
    note: str
    spec: dict[str, Any]
    spec_adjusted: tuple[str, ...]
    new_weight: float | None
    quantity: str
    passed: bool
    max_abs_err: float | None
    max_rel_err: float | None
    worst_index: tuple[int, ...] | None
    n_mismatched: int
    n_total: int
    atol: float
    rtol: float
    scale: float
    worst_ratio: float | None
    problem: str | None = None
    status: Literal["ok"] = "ok"

    @property
    def vs_baseline(self) -> bool:
        """Compared with the baseline framework's convention: a finding about defaults, not a judgement of the layer."""
        return self.reference == BASELINE_REFERENCE

    @property
    def scaled_error(self) -> float | None:
        """max |got − ref| / scale (unlike max_rel_err, finite where the reference is near zero); None: inf or nan."""
        if self.max_abs_err is None:
            return None
        return self.max_abs_err / self.scale if self.scale else self.max_abs_err

    @property
    def ratio(self) -> float:
        """worst_ratio with inf for an error that is inf or nan: the key that orders comparisons by badness."""
        return math.inf if self.worst_ratio is None else self.worst_ratio


@dataclass(frozen=True)
class LayerSkip:
    """An implementation that did not produce a comparison: skipped (with the reason) or crashed (status "error").

    Attributes:
        case: the case's name; None when the framework is not available at all (then one record per implementation).
        framework, impl, mode, normalization: as in LayerComparison.
        gate: whether it counts against the run: an "error" on a gated case fails it, a skip never does.
        status: "skipped" (not installed, not configurable, an unsupported dtype) or "error" (the framework raised).
        reason: one line: why (the pip command, what cannot be configured, the exception).
        reference: the reference it would have been compared with (None when the case never ran).
        dtype: the case's dtype (None when `case` is None).
    """

    case: str | None
    framework: str
    impl: str
    mode: ParityMode
    normalization: str
    gate: bool
    status: Literal["skipped", "error"]
    reason: str
    reference: ParityReference | None = None
    dtype: str | None = None

    @property
    def passed(self) -> bool | None:
        """False for an error (it fails its gate), None for a skip (nothing was judged)."""
        return False if self.status == "error" else None

    @property
    def vs_baseline(self) -> bool:
        return self.reference == BASELINE_REFERENCE


LayerRecord = LayerComparison | LayerSkip


@dataclass(frozen=True)
class ParityCaseInfo:
    """One case of the run, as the reports describe it (suites/parity/cases.py:ParityCase has the rest)."""

    name: str
    shape: tuple[int, ...]
    axis: int
    dtype: str
    steps: int
    gate: bool
    note: str = ""
    normalization: str = "batchnorm"  # (absent from the first release's files, which held BatchNorm only)


@dataclass(frozen=True)
class ParityMeta:
    """The environment the records were measured in, and what was run.

    Attributes:
        environment: the environment manifest (suites/environment.py).
        modes: the modes run, in order.
        frameworks: the frameworks asked for (available or not), in order.
        impls: the implementations asked for.
        baseline: the framework whose defaults "baseline-convention" means (None when the file does not say).
        wall_time_s: seconds the run took (None when not measured).
        complete: False when the run was interrupted (the records are what finished).
        cases: every case asked for, in order (an interrupted run has no records for the last ones).
        input: the user's .npz file (bnparity check), else None.
        normalizations: the normalizations asked for (the first release's files: BatchNorm only).
    """

    environment: Environment
    modes: tuple[ParityMode, ...]
    frameworks: tuple[str, ...]
    impls: tuple[str, ...]
    baseline: str | None
    wall_time_s: float | None
    complete: bool
    cases: tuple[ParityCaseInfo, ...]
    input: str | None = None
    normalizations: tuple[str, ...] = ("batchnorm",)


@dataclass(frozen=True, kw_only=True)
class ParityDoc:
    """parity.json: meta and every record, in the order they were produced."""

    format: str = PARITY_FORMAT
    meta: ParityMeta
    records: tuple[LayerRecord, ...]

    @property
    def comparisons(self) -> list[LayerComparison]:
        return [r for r in self.records if isinstance(r, LayerComparison)]

    @property
    def not_run(self) -> list[LayerSkip]:
        return [r for r in self.records if isinstance(r, LayerSkip)]

    def case_names(self, *, gate: bool) -> list[str]:
        """The gated (standard) or ungated (hard) case names, in the run's order."""
        return [c.name for c in self.meta.cases if c.gate == gate]

    def notes(self) -> dict[str, str]:
        """case name -> what it probes."""
        return {c.name: c.note for c in self.meta.cases}

    def normalizations(self) -> tuple[str, ...]:
        """The normalizations of the run's cases, in the run's order."""
        return tuple(dict.fromkeys(c.normalization for c in self.meta.cases))

    def of_normalization(self, name: str) -> ParityDoc:
        """The part of this document about one normalization: its cases and its records."""
        meta = dataclasses.replace(self.meta, cases=tuple(c for c in self.meta.cases if c.normalization == name),
                                   normalizations=(name,))
        return dataclasses.replace(self, meta=meta, records=tuple(r for r in self.records if r.normalization == name))


def _layer_record(data: object, *, where: str) -> LayerRecord:
    """A version-2 record: a LayerComparison when its status is "ok", else a LayerSkip."""
    if not isinstance(data, Mapping):
        raise FormatError(f"{where}: expected an object. Received: {type(data).__name__}")
    status = data.get("status")
    if status == "ok":
        return from_dict(LayerComparison, data, where=where)
    if status in ("skipped", "error"):
        return from_dict(LayerSkip, data, where=where)
    raise FormatError(f"{where}: status must be 'ok', 'skipped' or 'error'. Received: {status!r}")


def _v1_reference(value: object) -> object:
    """Version 1 named the baseline comparison "<baseline name>-convention"."""
    if isinstance(value, str) and value.endswith("-convention") and value != "own-convention":
        return BASELINE_REFERENCE
    return value


def _v1_new_weight(spec: Mapping[str, Any]) -> float | None:
    momentum, weighs = spec.get("momentum"), spec.get("momentum_weighs")
    if not isinstance(momentum, (int, float)) or weighs not in ("new", "old"):
        return None
    return float(momentum) if weighs == "new" else 1.0 - float(momentum)


def _v1_record(data: Mapping[str, Any]) -> dict[str, Any]:
    """A version-1 record as version 2 writes it (every version-1 record is a BatchNorm one)."""
    out = {**data, "normalization": "batchnorm", "reference": _v1_reference(data.get("reference"))}
    if data.get("status") == "ok":
        atol, rtol = data.get("atol"), data.get("rtol")
        numbers = isinstance(atol, (int, float)) and isinstance(rtol, (int, float)) and rtol
        out["scale"] = atol / rtol if numbers else 0.0  # version 1 set atol = rtol·scale and did not record scale
        spec = data.get("spec")
        out["new_weight"] = _v1_new_weight(spec) if isinstance(spec, Mapping) else None
    return out


def _v1_meta(meta: Mapping[str, Any], records: list[Mapping[str, Any]]) -> dict[str, Any]:
    """Version-1 meta as version 2 writes it: the environment nested, what version 1 left out taken from its records."""
    out: dict[str, Any] = {"environment": {k: meta[k] for k in ENVIRONMENT_KEYS if meta.get(k) is not None}}
    out["modes"] = meta.get("modes") or list(dict.fromkeys(r.get("mode") for r in records))
    out["frameworks"] = meta.get("frameworks") or list(dict.fromkeys(r.get("framework") for r in records))
    out["impls"] = meta.get("impls") or list(dict.fromkeys(r.get("impl") for r in records))
    named = [str(r["reference"])[:-len("-convention")] for r in records
             if _v1_reference(r.get("reference")) == BASELINE_REFERENCE]
    out["baseline"] = named[0] if named else None
    out["wall_time_s"], out["input"], out["complete"] = meta.get("wall_time_s"), meta.get("input"), \
        meta.get("complete", False)
    cases = meta.get("cases")
    if not cases:  # bnparity check wrote no case list: its one case is described by its records
        described = {r["case"]: r for r in records if r.get("case") is not None and "shape" in r}
        cases = [{"name": name, **{k: r.get(k) for k in ("shape", "axis", "dtype", "steps", "gate", "note")}}
                 for name, r in described.items()]
    out["cases"] = cases
    return out


def load_parity(data: object, *, where: str = "parity.json") -> ParityDoc:
    """A parity.json document (version 1 or 2). Raises FormatError (one line, naming `where`) for anything else."""
    if not isinstance(data, Mapping):
        raise FormatError(f"{where}: expected a JSON object. Received: {type(data).__name__}")
    version = parse_format(data.get("format"), family=PARITY_FAMILY, current=PARITY_VERSION, where=where)
    meta, records = data.get("meta"), data.get("records")
    if not isinstance(meta, Mapping) or not isinstance(records, list):
        raise FormatError(f"{where}: expected an object 'meta' and a list 'records'. Received: "
                          f"meta {type(meta).__name__}, records {type(records).__name__}")
    if version == 1:
        if not all(isinstance(r, Mapping) for r in records):
            raise FormatError(f"{where}: every record must be an object")
        meta, records = _v1_meta(meta, records), [_v1_record(r) for r in records]
    return ParityDoc(meta=from_dict(ParityMeta, meta, where=f"{where}: meta"),
                     records=tuple(_layer_record(r, where=f"{where}: records[{i}]") for i, r in enumerate(records)))


# The conventions registry as a run recorded it: conventions.json, {"format": "bnparity-conventions/1",
# "conventions": [Convention, ...]} (frameworks/conventions.py, one row per framework in the registry's order).
# Before it had a format (the release of 2026-11-29) the file was {"conventions": [...]}, its rows without the
# fields added since (constructor, batch_of_one, proofs), which take their defaults.

CONVENTIONS_FAMILY = "conventions"
CONVENTIONS_VERSION = 2  # 2 added `layers`: the other normalizations' rows


@dataclass(frozen=True, kw_only=True)
class ConventionsDoc:
    """conventions.json: the conventions registry's rows as the run recorded them: BatchNorm's (`conventions`) and
    the other normalizations' (`layers`; absent from version 1)."""

    format: str = format_string(CONVENTIONS_FAMILY, CONVENTIONS_VERSION)
    conventions: tuple[Convention, ...]
    layers: tuple[LayerConvention, ...] = ()


def load_conventions(data: object, *, where: str = "conventions.json") -> ConventionsDoc:
    """A conventions.json document (version 1, or the unversioned one of 2026-11-29). Raises FormatError."""
    if isinstance(data, Mapping) and "format" in data:
        parse_format(data["format"], family=CONVENTIONS_FAMILY, current=CONVENTIONS_VERSION, where=where)
    rows = data.get("conventions") if isinstance(data, Mapping) else data
    if not isinstance(rows, list):
        raise FormatError(f"{where}: expected a list 'conventions'. Received: {type(rows).__name__}")
    layers = data.get("layers", []) if isinstance(data, Mapping) else []
    if not isinstance(layers, list):
        raise FormatError(f"{where}: expected a list 'layers'. Received: {type(layers).__name__}")
    return ConventionsDoc(conventions=tuple(_convert(Convention, r, f"{where}: conventions[{i}]")
                                            for i, r in enumerate(rows)),
                          layers=tuple(_convert(LayerConvention, r, f"{where}: layers[{i}]")
                                       for i, r in enumerate(layers)))


# --- model parity -------------------------------------------------------------------------------------------------
# model_parity.json (bnparity model-parity --json), format "bnparity-model-parity/2". Version 1 (2026-11-29) had the
# environment's keys at the top of "meta", the tolerance's keys spelled C_MODEL/D/K, no "anchor" in meta and no
# "rel_err" in a comparison; `load_model_parity` upgrades it.

MODEL_PARITY = "model-parity"
MODEL_PARITY_VERSION = 2


@dataclass(frozen=True)
class ModelComparison:
    """One model-parity comparison (status "ok"): `quantity` of `framework` against `against` ("reference" or the
    anchor framework) for one config, under the model tolerance.

    Attributes (besides the config's preset/variant/dropout/dtype):
        kind: logits, loss, loss_step2, eval_loss, grad, param_step1, param_step2, momentum, running_stats,
            running_var_raw (the stored running variance, never gated).
        gate: whether a mismatch fails the run (float64: all; float32: forward quantities only).
        passed: every element within atol + rtol·|ref|.
        max_abs_err, max_rel_err, worst_ratio: the raw errors (null: inf or nan); worst_ratio = error / allowed.
        scale: the magnitude the error is judged against (the largest |ref| of the quantity's layer).
        rel_err: max_abs_err / scale, the relative error the report shows (max_abs_err itself when scale is 0).
        convention, converted, m, compared, note: what the comparison did (running statistics, parameters).
    """

    preset: str
    variant: str
    dropout: str
    dtype: str
    framework: str
    against: str
    kind: str
    quantity: str
    gate: bool
    passed: bool
    max_abs_err: float | None
    max_rel_err: float | None
    worst_ratio: float | None
    worst_index: tuple[int, ...] | None
    n_mismatched: int
    n_total: int
    atol: float
    rtol: float
    scale: float
    rel_err: float | None
    problem: str | None = None
    convention: str | None = None
    converted: bool | None = None
    m: int | None = None
    compared: str | None = None
    note: str | None = None
    status: Literal["ok"] = "ok"


@dataclass(frozen=True)
class ModelNotRun:
    """A framework that did not run one config: "skipped" (not installed; not a failure) or "error" (it raised;
    a failure: gate true, passed false)."""

    preset: str
    variant: str
    dropout: str
    dtype: str
    framework: str
    status: Literal["skipped", "error"]
    reason: str
    gate: bool
    passed: bool | None


ModelRecord = ModelComparison | ModelNotRun


@dataclass(frozen=True)
class ModelConfigLabel:
    preset: str
    variant: str
    dropout: str
    dtype: str
    batch: int
    seed: int


@dataclass(frozen=True)
class ModelDiagnostics:
    """The reference forward pass's fragility on one config's batch (null margin: no ReLU / max-pool there)."""

    preset: str
    variant: str
    dropout: str
    dtype: str
    batch: int
    relu_min_margin: float | None
    pool_min_margin: float | None
    fragile_below: float
    fragile_count: int


@dataclass(frozen=True)
class SGDRecord:
    lr: float
    momentum: float
    weight_decay: float


@dataclass(frozen=True)
class ModelTolerance:
    """rtol = u·c_model·depth·sqrt(length), atol = rtol·scale (suites/model_parity/tolerance.py)."""

    model: str
    c_model: float
    depth: int
    length: int
    rtol: dict[str, float]


@dataclass(frozen=True)
class ModelParityMeta:
    """How the comparisons were made. anchor: the framework the others were compared with (the baseline when it
    ran), null when no framework ran."""

    environment: Environment
    preset: str
    frameworks: tuple[str, ...]
    anchor: str | None
    configs: tuple[ModelConfigLabel, ...]
    sgd: dict[str, SGDRecord]
    bn_momentum: dict[str, float]
    tolerance: ModelTolerance
    diagnostics: tuple[ModelDiagnostics, ...]
    seconds: dict[str, float]
    compile_counts: dict[str, int | None]
    wall_time_s: float
    complete: bool
    suite: str = "model-parity"


@dataclass(frozen=True, kw_only=True)
class ModelParityDoc:
    """model_parity.json: meta and every record (comparisons, skipped and crashed frameworks)."""

    format: str = format_string(MODEL_PARITY, MODEL_PARITY_VERSION)
    meta: ModelParityMeta
    records: tuple[ModelRecord, ...]

    @property
    def comparisons(self) -> list[ModelComparison]:
        return [r for r in self.records if isinstance(r, ModelComparison)]

    @property
    def not_run(self) -> list[ModelNotRun]:
        return [r for r in self.records if isinstance(r, ModelNotRun)]


def relative_error(max_abs_err: float | None, scale: float) -> float | None:
    """max_abs_err / scale (max_abs_err itself when scale is 0; None when the error is inf or nan)."""
    if max_abs_err is None or not math.isfinite(max_abs_err):
        return None
    return max_abs_err / scale if scale else max_abs_err


def _model_parity_v1(data: Mapping[str, Any]) -> dict[str, Any]:
    """A version-1 model_parity.json in the shape of version 2."""
    meta = dict(data.get("meta") or {})
    environment = {k: meta.pop(k) for k in ENVIRONMENT_KEYS if k in meta}
    tolerance = dict(meta.get("tolerance") or {})
    for old, new in (("C_MODEL", "c_model"), ("D", "depth"), ("K", "length")):
        if old in tolerance:
            tolerance[new] = tolerance.pop(old)
    records = []
    for r in data.get("records") or []:
        if isinstance(r, Mapping) and r.get("status") == "ok" and "rel_err" not in r and "scale" in r:
            err = r.get("max_abs_err")
            r = {**r, "rel_err": relative_error(err if isinstance(err, (int, float)) else None, r["scale"] or 0.0)}
        records.append(r)
    anchors = [r.get("against") for r in records if isinstance(r, Mapping) and r.get("against") not in (None,
                                                                                                        "reference")]
    ran = [r.get("framework") for r in records if isinstance(r, Mapping) and r.get("status") == "ok"]
    meta.update(environment=environment, tolerance=tolerance, anchor=anchors[0] if anchors else (ran[0] if ran
                                                                                                 else None))
    return {**data, "meta": meta, "records": records}


def load_model_parity(data: object, *, where: str = "model_parity.json") -> ModelParityDoc:
    """A model_parity.json document (version 1 or 2). Raises FormatError (one line) for anything else."""
    if not isinstance(data, Mapping):
        raise FormatError(f"{where}: expected a JSON object. Received: {type(data).__name__}")
    version = parse_format(data.get("format"), family=MODEL_PARITY, current=MODEL_PARITY_VERSION, where=where)
    if version == 1:
        data = _model_parity_v1(data)
    doc = from_dict(ModelParityDoc, data, where=where)
    return dataclasses.replace(doc, format=format_string(MODEL_PARITY, MODEL_PARITY_VERSION))


# --- training runs ------------------------------------------------------------------------------------------------
# A training run directory (bnparity train): one JSONL file per run, "bnparity-train-run/2" (its first line is the
# header; version 1, 2026-11-29, had no header, no batch digests and no best accuracy in "done"), manifest.json
# "bnparity-train/2" and conclusions.json "bnparity-train-conclusions/2" (version 1 of both loads: see the loaders).
# A batch-size sweep (preset small-batch) is version 2 too: its runs are named "<framework>-<variant>-b<size>-seed<k>",
# its StartEvent.batch_size is the run's, and the fields it added (TrainPreset.batch_sizes and .variants,
# TrainManifest.batch_sizes, `batch_size` of RunSummary, ConfigSummary and DigestCheck, Conclusions.by_batch_size)
# have defaults, so every earlier file reads as before. So is a data-parallel preset (dp-cpu, dp-gpu): its runs on R
# replicas are named "<framework>-<variant>-r<R><local|sync>-seed<k>" (its single-device runs keep the plain name),
# and the fields it added (TrainPreset.replicas and .bn_sync, TrainManifest.replicas and .bn_sync, `replicas` and
# `bn_sync` of RunSummary, ConfigSummary and DigestCheck, Conclusions.by_bn_sync and .data_parallel) have defaults
# (null or empty: one device); its StartEvent.batch_size is the global batch, its `threads` per replica.

TRAIN_RUN = "train-run"
TRAIN_RUN_VERSION = 2
TRAIN_MANIFEST = "train"
TRAIN_MANIFEST_VERSION = 2
TRAIN_CONCLUSIONS = "train-conclusions"
TRAIN_CONCLUSIONS_VERSION = 2


@dataclass(frozen=True, kw_only=True)
class RunHeader:
    """The first line of a run file: which format the lines after it have."""

    kind: Literal["header"] = "header"
    format: str = format_string(TRAIN_RUN, TRAIN_RUN_VERSION)


@dataclass(frozen=True, kw_only=True)
class TrainEvent:
    """What every training record has: its kind, the run's identity, where in the run, and when (Unix time)."""

    kind: str
    framework: str
    variant: str
    seed: int
    epoch: int
    iteration: int
    t: float


@dataclass(frozen=True, kw_only=True)
class StartEvent(TrainEvent):
    """A run (or a resumed segment of it) began. epochs: the planned number; setup_time: data, model and
    checkpoint loading, seconds; batch_size: the run's (a data-parallel run's global batch); threads: compute
    threads of the process (a data-parallel run's: per replica; its R and BatchNorm mode are in its name)."""

    kind: Literal["start"] = "start"
    preset: str
    iters_per_epoch: int
    epochs: int
    n_train: int
    n_test: int
    batch_size: int
    threads: str | None
    device: str
    pid: int
    resumed_from_epoch: int
    setup_time: float


@dataclass(frozen=True, kw_only=True)
class IterEvent(TrainEvent):
    """One SGD step. loss: the batch mean (null: diverged); batch_digest: 16 hex digits identifying the batch the
    framework trained on (images, labels, dropout masks: suites/convergence/runner.py:batch_digest; null in
    version 1)."""

    kind: Literal["iter"] = "iter"
    loss: float | None
    correct: int
    batch: int
    accuracy: float
    batch_digest: str | None = None


@dataclass(frozen=True, kw_only=True)
class EvalEvent(TrainEvent):
    """An evaluation point. train_loss / train_accuracy: the running average since the previous point (null at
    iteration 0); images_per_s: training throughput since the previous point; times in seconds since the run began
    (resumed segments included)."""

    kind: Literal["eval"] = "eval"
    epochs_done: float
    train_loss: float | None
    train_accuracy: float | None
    test_loss: float | None
    test_accuracy: float | None
    wall_time: float
    train_time: float
    eval_time: float
    images_per_s: float | None


@dataclass(frozen=True, kw_only=True)
class EpochEvent(TrainEvent):
    """The end of an epoch: its training averages, its last evaluation, its checkpoint (relative path) and, for a
    trainer that compiles, how often (JAX: traces of the training step; null elsewhere). epoch_digest: 16 hex
    digits identifying the epoch's batch digests in order (runner.epoch_digest; null in version 1)."""

    kind: Literal["epoch"] = "epoch"
    train_loss: float | None
    train_accuracy: float | None
    test_loss: float | None
    test_accuracy: float | None
    epoch_time: float
    images_per_s: float | None
    wall_time: float
    train_time: float
    checkpoint: str
    compile_count: int | None
    compile_counts: dict[str, int] | None
    epoch_digest: str | None = None


@dataclass(frozen=True, kw_only=True)
class DoneEvent(TrainEvent):
    """The run finished. test_accuracy: the final evaluation's; best_test_accuracy: the highest of any evaluation
    point (null in version 1)."""

    kind: Literal["done"] = "done"
    epochs: int
    wall_time: float
    train_time: float
    test_accuracy: float | None
    images_per_s: float | None
    compile_count: int | None
    compile_counts: dict[str, int] | None
    best_test_accuracy: float | None = None


@dataclass(frozen=True, kw_only=True)
class FailedEvent(TrainEvent):
    """The run raised (error: the exception's last line) or its process died (returncode, written by the
    orchestrator)."""

    kind: Literal["failed"] = "failed"
    error: str
    traceback: str = ""
    returncode: int | None = None


@dataclass(frozen=True, kw_only=True)
class InterruptedEvent(TrainEvent):
    """Ctrl-C or SIGTERM: the run is incomplete; --resume continues it."""

    kind: Literal["interrupted"] = "interrupted"


@dataclass(frozen=True, kw_only=True)
class SkippedEvent(TrainEvent):
    """The framework cannot be loaded here (reason: one line, with the install command)."""

    kind: Literal["skipped"] = "skipped"
    reason: str


TRAIN_EVENTS: dict[str, type[TrainEvent]] = {cls.__dataclass_fields__["kind"].default: cls for cls in (
    StartEvent, IterEvent, EvalEvent, EpochEvent, DoneEvent, FailedEvent, InterruptedEvent, SkippedEvent)}


def run_file_version(line: Mapping[str, Any], *, where: str) -> int:
    """The version a run file's header line declares (FormatError for another family or a newer version)."""
    return parse_format(line.get("format"), family=TRAIN_RUN, current=TRAIN_RUN_VERSION, where=where)


def load_train_event(data: object, *, where: str = "record") -> TrainEvent:
    """One line of a run file (any version) as its event class. Raises FormatError for an unknown kind or a
    missing or mistyped field."""
    if not isinstance(data, Mapping):
        raise FormatError(f"{where}: expected a JSON object. Received: {type(data).__name__}")
    cls = TRAIN_EVENTS.get(data.get("kind"))  # type: ignore[arg-type]
    if cls is None:
        raise FormatError(f"{where}: expected a kind of {', '.join(TRAIN_EVENTS)}. Received: {data.get('kind')!r}")
    return from_dict(cls, data, where=where)


@dataclass(frozen=True)
class ResumedSegment:
    """One `bnparity train --resume` of the directory: when, which runs, with what."""

    time: str
    runs: tuple[str, ...]
    jobs: int
    threads_per_job: int
    thread_env: dict[str, str]
    data_dir: str
    argv: tuple[str, ...]
    environment: Environment


@dataclass(frozen=True, kw_only=True)
class TrainManifest:
    """A training run directory's manifest.json: the configuration every run of the directory trains with.

    Attributes:
        preset: the TrainPreset (with --epochs applied).
        runs: run names ("torch-bn-seed0"; "torch-bn-b2-seed0" in a batch-size sweep; "torch-bn-r4sync-seed0" on
            4 replicas), in order; frameworks, variants, seeds, batch_sizes (a sweep's; () otherwise), bn_sync (a
            data-parallel preset's modes, of "local", "sync", "single"; () otherwise): what they span.
        replicas: the data-parallel runs' R (null: no data-parallel run); preset.replicas says the same (with
            --replicas applied).
        device, verify_data, data_dir: passed to every run (data_dir: the resolved Fashion-MNIST folder).
        jobs, threads_per_job, thread_env, argv, environment: how the first segment ran.
        resumed: every later --resume.
    """

    format: str = format_string(TRAIN_MANIFEST, TRAIN_MANIFEST_VERSION)
    preset: TrainPreset
    runs: tuple[str, ...]
    frameworks: tuple[str, ...] = ()
    variants: tuple[str, ...] = ()
    seeds: tuple[int, ...] = ()
    batch_sizes: tuple[int, ...] = ()
    replicas: int | None = None
    bn_sync: tuple[str, ...] = ()
    device: str = "cpu"
    verify_data: bool = True
    data_dir: str | None = None
    jobs: int | None = None
    threads_per_job: int | None = None
    thread_env: dict[str, str] = dataclasses.field(default_factory=dict)
    argv: tuple[str, ...] = ()
    environment: Environment | None = None
    resumed: tuple[ResumedSegment, ...] = ()


def load_train_manifest(data: object, *, where: str = "manifest.json") -> TrainManifest:
    """A training run directory's manifest (version 1 or 2). Raises FormatError (one line) for anything else."""
    if not isinstance(data, Mapping):
        raise FormatError(f"{where}: expected a JSON object. Received: {type(data).__name__}")
    parse_format(data.get("format"), family=TRAIN_MANIFEST, current=TRAIN_MANIFEST_VERSION, where=where)
    manifest = from_dict(TrainManifest, data, where=where)  # version 2 only added fields with defaults
    return dataclasses.replace(manifest, format=format_string(TRAIN_MANIFEST, TRAIN_MANIFEST_VERSION))


RunStatus = Literal["done", "failed", "skipped", "interrupted", "incomplete", "not started"]


@dataclass(frozen=True)
class RunSummary:
    """One run, from its records. final_test_accuracy: the last evaluation of a finished run (null otherwise);
    last_test_accuracy: the last evaluation so far; best_test_accuracy: the highest of any evaluation;
    epochs_planned: the preset's epochs; unreadable_lines: lines of its file that could not be read; batch_size:
    the run's in a batch-size sweep (null otherwise: the preset's); replicas, bn_sync: a data-parallel run's R and
    BatchNorm mode ("local" or "sync"; null: one device)."""

    framework: str
    variant: str
    seed: int
    status: RunStatus
    epochs_completed: int
    iterations: int
    final_test_accuracy: float | None
    last_test_accuracy: float | None
    best_test_accuracy: float | None
    images_per_s: float | None
    wall_time: float | None
    message: str
    epochs_planned: int | None = None
    unreadable_lines: int = 0
    batch_size: int | None = None
    replicas: int | None = None
    bn_sync: str | None = None


@dataclass(frozen=True)
class AccuracyStat:
    """Mean, sample standard deviation (null with fewer than two) and count over seeds."""

    mean: float | None
    std: float | None
    n: int


@dataclass(frozen=True)
class TargetHit:
    """The first evaluation point at or above a target accuracy."""

    iteration: int
    epochs_done: float | None
    epoch: int
    wall_time: float | None


@dataclass(frozen=True)
class TimeToTarget:
    """How many of the started seeds reached a target, and when (means over those that did)."""

    reached: int
    of: int
    iterations_mean: float | None
    epochs_mean: float | None
    per_seed: dict[str, TargetHit | None] = dataclasses.field(default_factory=dict)


@dataclass(frozen=True)
class ConfigSummary:
    """One framework × variant over its seeds. final_test_accuracy: over the finished seeds' final evaluations;
    best_test_accuracy: the highest evaluation of any seed; best_test_accuracy_mean: the mean over seeds of each
    seed's best (null in version 1); targets: keyed by the target as '%g'; batch_size: in a batch-size sweep, the
    configuration's (null otherwise); replicas, bn_sync: a data-parallel configuration's R and BatchNorm mode
    ("local" or "sync"; null: one device)."""

    framework: str
    variant: str
    seeds: tuple[int, ...]
    seeds_done: int
    final_test_accuracy: AccuracyStat
    best_test_accuracy: float | None
    images_per_s: float | None
    targets: dict[str, TimeToTarget]
    best_test_accuracy_mean: float | None = None
    batch_size: int | None = None
    replicas: int | None = None
    bn_sync: str | None = None


@dataclass(frozen=True)
class Speedup:
    """BN speed-up to a target: mean iterations without / with BN, or a lower bound when no-BN never got there."""

    framework: str
    target: float
    iterations_bn: float | None
    iterations_nobn: float | None
    speedup: float | None
    at_least: float | None


@dataclass(frozen=True)
class AgreementPair:
    variant: str
    frameworks: tuple[str, ...]
    points: int
    outside: int
    max_abs_diff: float
    worst_iteration: int | None
    agree: bool


@dataclass(frozen=True)
class Agreement:
    criterion: str
    k: float
    floor: float
    pairs: tuple[AgreementPair, ...] = ()


@dataclass(frozen=True)
class BatchComparison:
    """A batch-size sweep's comparisons at one batch size: the BN speed-ups and the agreement across frameworks of
    its runs, as Conclusions.bn_speedup and .agreement define them for a directory without a sweep."""

    batch_size: int
    bn_speedup: tuple[Speedup, ...] = ()
    agreement: tuple[AgreementPair, ...] = ()


@dataclass(frozen=True)
class ReplicaModeComparison:
    """A data-parallel preset's comparisons within one mode on R replicas ("local" or "sync"): the BN speed-ups and
    the agreement across frameworks of its runs, as Conclusions.bn_speedup and .agreement define them for the
    single-device runs."""

    replicas: int
    bn_sync: str
    bn_speedup: tuple[Speedup, ...] = ()
    agreement: tuple[AgreementPair, ...] = ()


@dataclass(frozen=True)
class ModeResult:
    """One BatchNorm mode of a framework x variant in a data-parallel directory: test accuracy over its seeds.

    Attributes:
        bn_sync: "local", "sync" or "single" (one device).
        replicas: R (1 for "single").
        seeds: the seeds that trained; seeds_done: how many finished.
        final_test_accuracy: the finished seeds' last evaluations (as ConfigSummary's).
        best_test_accuracy_mean: the mean over seeds of each seed's best evaluation.
    """

    bn_sync: str
    replicas: int
    seeds: tuple[int, ...]
    seeds_done: int
    final_test_accuracy: AccuracyStat
    best_test_accuracy_mean: float | None


@dataclass(frozen=True)
class DataParallelComparison:
    """Per framework x variant of a data-parallel directory: each mode's test accuracy and the differences that
    data parallelism makes, per-replica (local) and synchronized (sync) statistics minus one device (single), of
    the mean final and the mean best test accuracy (null when either side has none).

    Attributes:
        global_batch: the batch every mode trains on per SGD step (each of R replicas gets global_batch / R).
        modes: in frameworks.training.BN_SYNC's order, those that trained.
    """

    framework: str
    variant: str
    replicas: int
    global_batch: int
    modes: tuple[ModeResult, ...]
    final_local_minus_single: float | None = None
    final_sync_minus_single: float | None = None
    best_local_minus_single: float | None = None
    best_sync_minus_single: float | None = None


@dataclass(frozen=True)
class PublishedPoint:
    framework: str
    variant: str
    epoch: int
    published: float
    measured_mean: float | None
    n: int


@dataclass(frozen=True)
class IncompleteRun:
    run: str
    status: RunStatus
    epochs_completed: int
    iterations: int
    message: str


@dataclass(frozen=True)
class DigestCheck:
    """Whether the frameworks' runs of one variant and seed trained on identical batches, iteration by iteration.

    Attributes:
        frameworks: the runs compared (those with batch digests).
        iterations: the iterations at which two or more of them recorded a digest.
        mismatched: how many of those iterations had different digests.
        first_mismatch: the first such iteration (null: none), with each framework's digest there in `digests`.
        batch_size: in a batch-size sweep, the runs' batch size (null otherwise).
        replicas, bn_sync: in a data-parallel directory, the runs' R and mode ("local" or "sync"; null: one device).
    """

    variant: str
    seed: int
    frameworks: tuple[str, ...]
    iterations: int
    mismatched: int
    first_mismatch: int | None
    digests: dict[str, str] = dataclasses.field(default_factory=dict)
    batch_size: int | None = None
    replicas: int | None = None
    bn_sync: str | None = None

    @property
    def identical(self) -> bool:
        return self.mismatched == 0


@dataclass(frozen=True)
class BatchDigests:
    """The identical-batches check over a run directory. recorded: some run has batch digests (version 1 runs
    have none); without_digests: the runs that have none."""

    recorded: bool = False
    checks: tuple[DigestCheck, ...] = ()
    without_digests: tuple[str, ...] = ()

    @property
    def identical(self) -> bool:
        return all(c.identical for c in self.checks)


@dataclass(frozen=True, kw_only=True)
class Conclusions:
    """conclusions.json: what a training run directory shows (suites/convergence/conclusions.py defines each
    figure). epochs: the planned number; unreadable_lines: run file -> lines that could not be read (only > 0);
    by_batch_size: a batch-size sweep's speed-ups and agreement, per batch size (bn_speedup and agreement.pairs
    hold only the runs without a batch size of their own, on one device); by_bn_sync: a data-parallel directory's,
    per mode on R replicas; data_parallel: its per-replica, synchronized and single-device accuracies compared."""

    format: str = format_string(TRAIN_CONCLUSIONS, TRAIN_CONCLUSIONS_VERSION)
    run_dir: str
    preset: str
    targets: tuple[float, ...]
    complete: bool
    runs: dict[str, RunSummary]
    configs: tuple[ConfigSummary, ...]
    bn_speedup: tuple[Speedup, ...]
    agreement: Agreement
    published: tuple[PublishedPoint, ...]
    incomplete: tuple[IncompleteRun, ...]
    skipped: dict[str, str]
    epochs: int | None = None
    batch_digests: BatchDigests = BatchDigests()
    unreadable_lines: dict[str, int] = dataclasses.field(default_factory=dict)
    by_batch_size: tuple[BatchComparison, ...] = ()
    by_bn_sync: tuple[ReplicaModeComparison, ...] = ()
    data_parallel: tuple[DataParallelComparison, ...] = ()


def load_conclusions(data: object, *, where: str = "conclusions.json") -> Conclusions:
    """conclusions.json (version 1 or 2). Raises FormatError (one line) for anything else."""
    if not isinstance(data, Mapping):
        raise FormatError(f"{where}: expected a JSON object. Received: {type(data).__name__}")
    parse_format(data.get("format"), family=TRAIN_CONCLUSIONS, current=TRAIN_CONCLUSIONS_VERSION, where=where)
    conclusions = from_dict(Conclusions, data, where=where)  # version 2 only added fields with defaults
    return dataclasses.replace(conclusions, format=format_string(TRAIN_CONCLUSIONS, TRAIN_CONCLUSIONS_VERSION))




# --- the main job's run manifest ----------------------------------------------------------------------------------
# manifest.json of a `bnparity run` directory, "bnparity-run/2"; version 1 (2026-11-29) had no "format" field.

RUN_MANIFEST = "run"
RUN_MANIFEST_VERSION = 2
StepStatus = Literal["pending", "done", "done-with-differences", "done-with-failed-runs", "failed", "interrupted",
                     "skipped"]


@dataclass(frozen=True, kw_only=True)
class RunManifest:
    """What `bnparity run` did: the command, when, and each requested step's status and seconds.

    Attributes:
        steps: step -> "pending", "done", "done-with-differences" (parity found a mismatch),
            "done-with-failed-runs" (a training run failed), "failed", "interrupted" or "skipped" (after an
            interruption); a step not listed was not requested.
        finished: when the report step began (null: the run did not get there).
        errors: step -> the one-line error of a step that raised.
    """

    format: str = format_string(RUN_MANIFEST, RUN_MANIFEST_VERSION)
    environment: Environment
    command: tuple[str, ...]
    started: str
    finished: str | None
    steps: dict[str, StepStatus]
    step_seconds: dict[str, float] = dataclasses.field(default_factory=dict)
    errors: dict[str, str] = dataclasses.field(default_factory=dict)


def load_run_manifest(data: object, *, where: str = "manifest.json") -> RunManifest:
    """A `bnparity run` manifest (version 1: no "format" field; or 2). Raises FormatError (one line) else."""
    if not isinstance(data, Mapping):
        raise FormatError(f"{where}: expected a JSON object. Received: {type(data).__name__}")
    if "format" in data:
        parse_format(data["format"], family=RUN_MANIFEST, current=RUN_MANIFEST_VERSION, where=where)
    manifest = from_dict(RunManifest, data, where=where)
    return dataclasses.replace(manifest, format=format_string(RUN_MANIFEST, RUN_MANIFEST_VERSION))


# --- pitfalls -----------------------------------------------------------------------------------------------------
# pitfalls.json (bnparity pitfalls): {"format": "bnparity-pitfalls/2", "meta": PitfallsMeta, "records":
# [PitfallRecord, ...]}. Version 1 (2026-11-29) had the environment's keys flattened into meta.

PITFALLS = "pitfalls"
PITFALLS_VERSION = 2


@dataclass(frozen=True)
class PitfallRule:
    """A moving-average rule: the trained network's BN convention with `changes` applied to its spec."""

    name: str
    description: str
    changes: dict[str, float | str]


@dataclass(frozen=True, kw_only=True)
class PitfallsMeta:
    """What was measured: the run and epoch whose weights are used, the batches, the rules, whether it finished."""

    environment: Environment = dataclasses.field(default_factory=Environment)
    run: str
    epoch: int
    preset: str
    batch_size: int
    steps: tuple[int, ...]
    test_images: int
    rules: tuple[PitfallRule, ...]
    complete: bool


@dataclass(frozen=True)
class PitfallRecord:
    """The test set in eval mode with the running statistics of `rule` after `steps` training batches (None: the
    statistics the framework accumulated in training)."""

    rule: str
    steps: int | None
    test_accuracy: float
    test_loss: float


@dataclass(frozen=True, kw_only=True)
class PitfallsDoc:
    format: str = format_string(PITFALLS, PITFALLS_VERSION)
    meta: PitfallsMeta
    records: tuple[PitfallRecord, ...] = ()


def load_pitfalls(data: object, *, where: str = "pitfalls.json") -> PitfallsDoc:
    """A pitfalls.json document (version 1 or 2). Raises FormatError (one line) for anything else."""
    if not isinstance(data, Mapping):
        raise FormatError(f"{where}: expected a JSON object. Received: {type(data).__name__}")
    version = parse_format(data.get("format"), family=PITFALLS, current=PITFALLS_VERSION, where=where)
    meta = dict(data.get("meta") or {})
    if version == 1:
        meta["environment"] = {k: meta.pop(k) for k in ENVIRONMENT_KEYS if k in meta}
    return PitfallsDoc(meta=from_dict(PitfallsMeta, meta, where=f"{where}: meta"),
                       records=tuple(from_dict(PitfallRecord, r, where=f"{where}: records[{i}]")
                                     for i, r in enumerate(data.get("records") or [])))


# The seed tutorial's own MLP experiment (bnparity pitfalls; suites/pitfalls/tutorial.py), a file of its own because
# it needs no trained run: tutorial_mlp.json, format "bnparity-tutorial-mlp/1": {"format", "meta": TutorialMLPMeta,
# "records": [TutorialMLPRecord | TutorialMLPSkip, ...]}.

TUTORIAL_MLP = "tutorial-mlp"
TUTORIAL_MLP_VERSION = 1


@dataclass(frozen=True)
class TutorialMLPRow:
    """One row of the MLP experiment: its name in the records and what it trains and evaluates."""

    name: str
    description: str


@dataclass(frozen=True, kw_only=True)
class TutorialMLPMeta:
    """What was run: the network, the data actually used (and the tutorial's, for comparison), the rows, the time.

    Attributes:
        environment: the environment manifest.
        network, inputs: the tutorial's (bnparity.seeds.facts.TUTORIAL_SETUP).
        dataset: the data used ("Fashion-MNIST": MNIST is not shipped).
        train_images: the class-balanced training subset used (the tutorial: `published_train_images`).
        test_images: the test images every epoch is evaluated on.
        epochs, batch_size, lr, seed: the training used (seed: initial weights, γ/β draw, subset, batch order).
        frameworks: the frameworks asked for (one "builtin" row each), in order.
        rows: every row, in the report's order.
        published_dataset, published_epochs, published_train_images: what the tutorial trained on and for how long.
        wall_time_s: seconds the experiment took (None: not measured).
        complete: False when it was interrupted (the records hold what finished).
    """

    environment: Environment = dataclasses.field(default_factory=Environment)
    network: str
    dataset: str
    inputs: str
    train_images: int
    test_images: int
    epochs: int
    batch_size: int
    lr: float
    seed: int
    frameworks: tuple[str, ...]
    rows: tuple[TutorialMLPRow, ...]
    published_dataset: str
    published_epochs: int
    published_train_images: int
    wall_time_s: float | None = None
    complete: bool


@dataclass(frozen=True)
class TutorialMLPRecord:
    """One row after one epoch (epochs count from 0, as the tutorial's log does), evaluated on the test images.

    Attributes:
        row: a TutorialMLPRow name.
        framework: the framework whose Trainer ran it; None for the float64 NumPy reference.
        epoch: 0-based.
        test_accuracy, test_loss: eval mode (moving statistics), mean cross-entropy.
        train_loss: the mean training-mode loss over the epoch's batches.
        seconds: wall seconds of the row's worker so far (imports excluded).
    """

    row: str
    framework: str | None
    epoch: int
    test_accuracy: float
    test_loss: float
    train_loss: float
    seconds: float
    status: Literal["ok"] = "ok"


@dataclass(frozen=True)
class TutorialMLPSkip:
    """A row that was not measured: "skipped" (a framework not installed) or "error" (it raised, crashed or hung),
    with the one-line reason."""

    row: str
    framework: str | None
    status: Literal["skipped", "error"]
    reason: str


@dataclass(frozen=True, kw_only=True)
class TutorialMLPDoc:
    """tutorial_mlp.json: meta and every record, row by row, epoch by epoch."""

    format: str = format_string(TUTORIAL_MLP, TUTORIAL_MLP_VERSION)
    meta: TutorialMLPMeta
    records: tuple[TutorialMLPRecord | TutorialMLPSkip, ...] = ()

    @property
    def measured(self) -> list[TutorialMLPRecord]:
        return [r for r in self.records if isinstance(r, TutorialMLPRecord)]

    @property
    def not_run(self) -> list[TutorialMLPSkip]:
        return [r for r in self.records if isinstance(r, TutorialMLPSkip)]


def tutorial_mlp_record(data: object, *, where: str = "record") -> TutorialMLPRecord | TutorialMLPSkip:
    """One record of a tutorial_mlp.json (or of a worker's output line): by its status."""
    return by_status(data, where, TutorialMLPRecord, TutorialMLPSkip)


def load_tutorial_mlp(data: object, *, where: str = "tutorial_mlp.json") -> TutorialMLPDoc:
    """A tutorial_mlp.json document. Raises FormatError (one line) for anything else."""
    return _records_doc(data, where=where, family=TUTORIAL_MLP, version=TUTORIAL_MLP_VERSION, doc=TutorialMLPDoc,
                        meta=TutorialMLPMeta, record=tutorial_mlp_record)


# --- cross-replica parity -------------------------------------------------------------------------------------------
# sync_parity.json (bnparity sync-parity --json), format "bnparity-sync-parity/1": {"format", "meta":
# SyncParityMeta, "records": [SyncComparison | SyncSkip, ...]}.

SYNC_PARITY = "sync-parity"
SYNC_PARITY_VERSION = 1

# "global-batch": BatchNorm of the concatenated shards (bnparity.reference.crossreplica.synchronized_step);
# "equal-weight": the replicas' statistics averaged with equal weights (equal_weight_step), what a framework whose
# convention says shard_weighting="equal" computes; "per-replica": each shard its own BatchNorm (per_replica_step).
SyncReference = Literal["global-batch", "equal-weight", "per-replica"]


@dataclass(frozen=True)
class SyncCaseInfo:
    """One cross-replica case (suites/sync_parity/cases.py:SyncCase has the rest)."""

    name: str
    replicas: int
    shape: tuple[int, ...]
    shard_sizes: tuple[int, ...]
    layout: str
    dtype: str
    synchronized: bool
    steps: int
    note: str = ""


@dataclass(frozen=True)
class SyncComparison:
    """One quantity of one implementation on one cross-replica case, compared with a float64 reference.

    Attributes:
        case, framework, impl, variant: what ran ("builtin"/"scratch"; the variant, e.g. "shard_map" or "pmap").
        replicas, shard_sizes, synchronized, dtype, layout: the case's.
        reference: which reference (SyncReference).
        gate: whether a failure fails the run: the comparison with the reference the implementation claims to
            compute; the comparison of an equal-weight implementation with the global batch is a finding.
        quantity: "y" and "dx" (every replica's, concatenated in replica order), "dgamma" and "dbeta" (summed over
            the replicas, as data parallelism all-reduces them), "running_mean" and "running_var" (of `replica`),
            "saved_running_mean" and "saved_running_var" (what the framework's way of saving the model holds).
        replica: the replica of a running statistic (None for the other quantities).
        passed, max_abs_err, max_rel_err, worst_index, n_mismatched, n_total, atol, rtol, scale, worst_ratio, problem:
            as in LayerComparison (the same tolerance model, suites/parity/tolerance.py).
        status: always "ok".
    """

    case: str
    framework: str
    impl: str
    variant: str
    replicas: int
    shard_sizes: tuple[int, ...]
    synchronized: bool
    dtype: str
    layout: str
    reference: SyncReference
    gate: bool
    quantity: str
    replica: int | None
    passed: bool
    max_abs_err: float | None
    max_rel_err: float | None
    worst_index: tuple[int, ...] | None
    n_mismatched: int
    n_total: int
    atol: float
    rtol: float
    scale: float
    worst_ratio: float | None
    problem: str | None = None
    status: Literal["ok"] = "ok"

    @property
    def ratio(self) -> float:
        """worst_ratio with inf for an error that is inf or nan."""
        return math.inf if self.worst_ratio is None else self.worst_ratio

    @property
    def scaled_error(self) -> float | None:
        """max |got − ref| / scale; None: inf or nan."""
        if self.max_abs_err is None:
            return None
        return self.max_abs_err / self.scale if self.scale else self.max_abs_err


@dataclass(frozen=True)
class SyncSkip:
    """An implementation that produced no comparison on a case: skipped (the reason), or failed (status "error":
    it raised, its engine died or hung past the timeout).

    Attributes:
        case: the case (None when the implementation never started: not installed, the engine failed to start).
        framework, impl, variant, replicas: what would have run.
        gate: an "error" on a gated run fails it; a skip never does.
        status: "skipped" or "error".
        reason: one line.
        dtype: the case's dtype (None when `case` is None).
    """

    case: str | None
    framework: str
    impl: str
    variant: str
    replicas: int
    gate: bool
    status: Literal["skipped", "error"]
    reason: str
    dtype: str | None = None

    @property
    def passed(self) -> bool | None:
        return False if self.status == "error" else None


SyncRecord = SyncComparison | SyncSkip


@dataclass(frozen=True)
class SyncParityMeta:
    """What was run, where, and the frameworks' cross-replica conventions as the run used them.

    Attributes:
        environment: the environment manifest.
        frameworks: the frameworks asked for, in order.
        replicas: the replica counts asked for.
        timeout_s: the seconds after which a framework's engine is killed and its unfinished cases recorded as errors.
        wall_time_s: seconds the run took (None: not measured).
        complete: False when the run was interrupted.
        cases: every case asked for.
        conventions: the ReplicaConvention rows of the frameworks that declare one.
    """

    environment: Environment
    frameworks: tuple[str, ...]
    replicas: tuple[int, ...]
    timeout_s: float
    wall_time_s: float | None
    complete: bool
    cases: tuple[SyncCaseInfo, ...]
    conventions: tuple[ReplicaConvention, ...] = ()


@dataclass(frozen=True, kw_only=True)
class SyncParityDoc:
    """sync_parity.json: meta and every record, in the order of the cases, framework by framework."""

    format: str = format_string(SYNC_PARITY, SYNC_PARITY_VERSION)
    meta: SyncParityMeta
    records: tuple[SyncRecord, ...]

    @property
    def comparisons(self) -> list[SyncComparison]:
        return [r for r in self.records if isinstance(r, SyncComparison)]

    @property
    def not_run(self) -> list[SyncSkip]:
        return [r for r in self.records if isinstance(r, SyncSkip)]


def by_status(data: object, where: str, ok: type[T], not_run: type) -> Any:
    """A record of a two-class family: `ok` when its status is "ok", `not_run` when "skipped" or "error"."""
    if not isinstance(data, Mapping):
        raise FormatError(f"{where}: expected an object. Received: {type(data).__name__}")
    status = data.get("status")
    if status == "ok":
        return from_dict(ok, data, where=where)
    if status in ("skipped", "error"):
        return from_dict(not_run, data, where=where)
    raise FormatError(f"{where}: status must be 'ok', 'skipped' or 'error'. Received: {status!r}")


def _records_doc(data: object, *, where: str, family: str, version: int, doc: type[T], meta: type,
                 record: Any) -> T:
    """A {"format", "meta", "records"} document of the current version (FormatError otherwise)."""
    if not isinstance(data, Mapping):
        raise FormatError(f"{where}: expected a JSON object. Received: {type(data).__name__}")
    parse_format(data.get("format"), family=family, current=version, where=where)
    records = data.get("records")
    if not isinstance(records, list):
        raise FormatError(f"{where}: expected a list 'records'. Received: {type(records).__name__}")
    return doc(meta=from_dict(meta, data.get("meta") or {}, where=f"{where}: meta"),
               records=tuple(record(r, where=f"{where}: records[{i}]") for i, r in enumerate(records)))


def sync_record(data: object, *, where: str = "record") -> SyncRecord:
    """One record of a sync_parity.json (or of a worker's output line): by its status."""
    return by_status(data, where, SyncComparison, SyncSkip)


def load_sync_parity(data: object, *, where: str = "sync_parity.json") -> SyncParityDoc:
    """A sync_parity.json document. Raises FormatError (one line) for anything else."""
    return _records_doc(data, where=where, family=SYNC_PARITY, version=SYNC_PARITY_VERSION, doc=SyncParityDoc,
                        meta=SyncParityMeta, record=sync_record)


# --- data-parallel step parity -------------------------------------------------------------------------------------
# dp_parity.json (bnparity dp-parity --json), format "bnparity-dp-parity/1": {"format", "meta": DPParityMeta,
# "records": [DPComparison | DPNotRun, ...]}.

DP_PARITY = "dp-parity"
DP_PARITY_VERSION = 1
DP_KINDS = ("loss", "grad", "param", "running_stats")  # DPComparison.kind


@dataclass(frozen=True)
class DPComparison:
    """One quantity after one data-parallel SGD step, compared with the same framework's single-device step on the
    global batch.

    Attributes:
        framework, preset, variant, dtype: what ran.
        replicas, bn_sync: R, and "sync" (synchronized BN: must equal the single device) or "local" (per-replica BN:
            the measured difference, never a gate).
        kind: "loss", "param" (a parameter after the step), "running_stats" (a BN running statistic) or "grad".
        quantity: the canonical name (bnparity.reference.alexnet) or "loss".
        gate: compared under the tolerance and failing the run when off (synchronized BN in float64).
        passed: within the tolerance (rtol·scale).
        max_abs_err: the greatest |DP − single| (None: inf or nan).
        scale: the largest |single| of the quantity's layer (the error is judged against it).
        rel_err: max_abs_err / scale.
        rtol: the allowed rel_err.
    """

    framework: str
    preset: str
    variant: str
    dtype: str
    replicas: int
    bn_sync: str
    kind: str
    quantity: str
    gate: bool
    passed: bool
    max_abs_err: float | None
    scale: float
    rel_err: float | None
    rtol: float
    status: Literal["ok"] = "ok"


@dataclass(frozen=True)
class DPNotRun:
    """A configuration that did not run: skipped (not installed, no devices) or failed (raised, hung)."""

    framework: str
    replicas: int
    bn_sync: str
    dtype: str
    gate: bool
    status: Literal["skipped", "error"]
    reason: str

    @property
    def passed(self) -> bool | None:
        return False if self.status == "error" else None


DPRecord = DPComparison | DPNotRun


@dataclass(frozen=True)
class DPParityMeta:
    environment: Environment
    frameworks: tuple[str, ...]
    replicas: tuple[int, ...]
    preset: str
    batch: int
    timeout_s: float
    wall_time_s: float | None
    complete: bool


@dataclass(frozen=True, kw_only=True)
class DPParityDoc:
    format: str = format_string(DP_PARITY, DP_PARITY_VERSION)
    meta: DPParityMeta
    records: tuple[DPRecord, ...]

    @property
    def comparisons(self) -> list[DPComparison]:
        return [r for r in self.records if isinstance(r, DPComparison)]

    @property
    def not_run(self) -> list[DPNotRun]:
        return [r for r in self.records if isinstance(r, DPNotRun)]


def dp_record(data: object, *, where: str = "record") -> DPRecord:
    """One record of a dp_parity.json (or of a worker's output line), by its status."""
    return by_status(data, where, DPComparison, DPNotRun)


def load_dp_parity(data: object, *, where: str = "dp_parity.json") -> DPParityDoc:
    """A dp_parity.json document. Raises FormatError (one line) for anything else."""
    return _records_doc(data, where=where, family=DP_PARITY, version=DP_PARITY_VERSION, doc=DPParityDoc,
                        meta=DPParityMeta, record=dp_record)
