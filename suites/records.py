"""Reading and writing record files: JSON written atomically (see output.py); JSONL read line by line."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import output
from .output import json_safe, stream_fd

__all__ = ["JsonLines", "json_safe", "read_json", "read_jsonl", "write_json"]


def write_json(path: Path, document: dict[str, Any]) -> None:
    """`output.write_json` (atomic for a regular file), creating the file's folder first.

    Kept for the suites' own record files inside a run directory they lay out (e.g. a training run's
    manifest.json); a path the user gave goes through `output.write_json`, which never creates a folder.
    """
    path = Path(path)
    if stream_fd(path) is None:
        path.parent.mkdir(parents=True, exist_ok=True)
    output.write_json(path, document)


def read_json(path: Path) -> dict[str, Any]:
    """Read a JSON record file. Raises ValueError naming the file when it is not valid JSON."""
    try:
        return json.loads(Path(path).read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not valid JSON: {e}") from None


@dataclass(frozen=True)
class JsonLines:
    """What a JSONL file holds, line by line.

    Attributes:
        records: (1-based line number, parsed value) of every line that is valid JSON.
        bad_lines: the numbers of the non-blank lines that are not (corrupt, or cut short by a kill).
        cut: the file does not end with a newline: its last line was being written when the writer stopped.
    """

    records: list[tuple[int, Any]]
    bad_lines: tuple[int, ...]
    cut: bool


def read_jsonl(path: Path) -> JsonLines:
    """Every line of a JSONL file; a line that is not valid JSON costs that line only (see `bad_lines`)."""
    data = Path(path).read_bytes()
    records, bad = [], []
    for i, line in enumerate(data.split(b"\n"), start=1):
        if not line.strip():
            continue
        try:
            records.append((i, json.loads(line)))
        except ValueError:  # not JSON, or not UTF-8
            bad.append(i)
    return JsonLines(records, tuple(bad), cut=bool(data) and not data.endswith(b"\n"))
