"""The record schema: one frozen dataclass per record family written to disk, and the versioned files that hold them.

Data flows one way: the suites build these records, the record files hold them (JSON documents and JSONL
streams), and `bnparity.reports` reads them back through the same classes, never by string keys.

Every file names its format and version: a JSON document has a top-level ``"format": "bnparity-<family>/<N>"``;
a JSONL stream's first line is a header record ``{"kind": "header", "format": "bnparity-<family>/<N>"}``.
Files written by the release of 2026-11-29 load too (`LEGACY` below says what they looked like); a file from a
newer, unknown version is refused with one line naming both versions.

Sections (one per record family; each is owned by the suite that writes it):
- shared machinery: format strings, `from_dict` / `to_dict`, `FormatError`;
- layer parity (bnparity parity / check);
- model parity (bnparity model-parity);
- training runs (bnparity train: JSONL events, the run directory's manifest, conclusions);
- the main job's run manifest (bnparity run).
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Mapping
from typing import Any, TypeVar

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
    hints = typing.get_type_hints(cls)
    values = {}
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        if f.name in data:
            values[f.name] = _convert(hints[f.name], data[f.name], f"{where}.{f.name}")
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise FormatError(f"{where}: missing field {f.name!r} of {cls.__name__}")
    return cls(**values)


# --- layer parity -------------------------------------------------------------------------------------------------


# --- model parity -------------------------------------------------------------------------------------------------


# --- training runs ------------------------------------------------------------------------------------------------


# --- the main job's run manifest ----------------------------------------------------------------------------------
