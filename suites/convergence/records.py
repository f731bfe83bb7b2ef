"""A training run directory: manifest.json, one JSONL record file per run, checkpoints/, conclusions.json.

Layout of a run directory::

    manifest.json                      what was run, where, with which versions (see command.py)
    <framework>-<variant>-seed<k>.jsonl one record per line, appended and flushed as it happens
                                       (<framework>-<variant>-b<size>-seed<k>.jsonl in a batch-size sweep;
                                       <framework>-<variant>-r<R><local|sync>-seed<k>.jsonl for a data-parallel
                                       run on R replicas, with per-replica or synchronized BatchNorm statistics)
    <name>.interrupted.jsonl           records a --resume dropped (an interrupted epoch), kept for audit
    checkpoints/<name>/epoch<k>.npz    trainer.state() after epoch k plus "__meta__" (JSON); last 2 kept
    logs/<name>.log                    the run process's stdout and stderr
    conclusions.json                   computed from the JSONL files only (see conclusions.py)

A run file's first line is its header, ``{"kind": "header", "format": "bnparity-train-run/2"}``; every other
line is one event of bnparity.suites.schema (StartEvent, IterEvent, ..., one class per kind): ``kind``,
``framework``, ``variant``, ``seed``, ``epoch``, ``iteration``, ``t`` (Unix time) and the kind's fields (see
runner.py). A file without a header is version 1 (the release of 2026-11-29) and reads the same way. Reading is
line by line: a corrupt or half-written line costs that line only and is counted (`RunRecords.unreadable`).
"""

from __future__ import annotations

import json
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bnparity.frameworks.training import BN_SYNC
from bnparity.reference.alexnet import VARIANT_NORMS
from bnparity.suites.output import replacing, write_output
from bnparity.suites.records import read_json, read_jsonl, write_json
from bnparity.suites.schema import (
    TRAIN_EVENTS,
    TRAIN_RUN_VERSION,
    FormatError,
    RunHeader,
    TrainEvent,
    TrainManifest,
    load_train_event,
    load_train_manifest,
    run_file_version,
    to_dict,
)

MANIFEST = "manifest.json"
CONCLUSIONS = "conclusions.json"
TERMINAL_KINDS = ("done", "failed", "skipped")
KEEP_CHECKPOINTS = 2
_META_KEY = "__meta__"
SINGLE = "single"  # the BN_SYNC mode of a run on one device
DP_MODES = tuple(m for m in BN_SYNC if m != SINGLE)  # a data-parallel run's: per-replica or synchronized statistics
# a framework's name may itself have hyphens (keras-jax): the variant is the last part before the options
_NAME = re.compile(rf"^(?P<framework>[a-z0-9]+(?:-[a-z0-9]+)*?)-(?P<variant>{'|'.join(VARIANT_NORMS)})"
                   r"(?:-b(?P<batch>[1-9]\d*))?"
                   rf"(?:-r(?P<replicas>[1-9]\d*)(?P<bn_sync>{'|'.join(DP_MODES)}))?-seed(?P<seed>\d+)$")


@dataclass(frozen=True, order=True)
class RunId:
    """One run: a framework, a variant ("bn", "nobn", "gn") and a seed; in a batch-size sweep also its batch size
    (None: the preset's batch size, the name has no "-b<size>"); a data-parallel run also its number of replicas
    and BatchNorm mode, "local" (per-replica statistics) or "sync" (synchronized), named "-r<R><mode>" (None, None:
    one device, the name has neither; in a data-parallel preset that is the "single" mode)."""

    framework: str
    variant: str
    seed: int
    batch_size: int | None = None
    replicas: int | None = None
    bn_sync: str | None = None

    def __post_init__(self) -> None:
        if (self.replicas is None) != (self.bn_sync is None):
            raise ValueError(f"a data-parallel run needs both replicas and bn_sync. Received: "
                             f"replicas={self.replicas}, bn_sync={self.bn_sync!r}")
        if self.bn_sync is not None and self.bn_sync not in DP_MODES:
            raise ValueError(f"bn_sync must be one of {', '.join(DP_MODES)} (or None: one device). "
                             f"Received: {self.bn_sync!r}")
        if self.replicas is not None and self.replicas < 2:
            raise ValueError(f"replicas must be >= 2 (or None: one device). Received: {self.replicas}")

    @property
    def data_parallel(self) -> bool:
        """Whether this run trains on several replicas."""
        return self.replicas is not None

    @property
    def mode(self) -> str:
        """Its BatchNorm mode among frameworks.training.BN_SYNC: "local", "sync", or "single" (one device)."""
        return self.bn_sync or SINGLE

    @property
    def name(self) -> str:
        batch = "" if self.batch_size is None else f"-b{self.batch_size}"
        replicas = "" if self.replicas is None else f"-r{self.replicas}{self.bn_sync}"
        return f"{self.framework}-{self.variant}{batch}{replicas}-seed{self.seed}"

    @classmethod
    def parse(cls, name: str) -> RunId:
        """'torch-bn-seed0' -> RunId('torch', 'bn', 0); 'torch-bn-b2-seed0' -> RunId('torch', 'bn', 0, 2);
        'torch-bn-r4sync-seed0' -> RunId('torch', 'bn', 0, replicas=4, bn_sync='sync'). Raises ValueError for
        another shape of name."""
        m = _NAME.match(name)
        if m is None:
            raise ValueError(f"expected a run name like 'torch-bn-seed0', 'torch-bn-b2-seed0' or "
                             f"'torch-bn-r4sync-seed0'. Received: {name!r}")
        return cls(m["framework"], m["variant"], int(m["seed"]), int(m["batch"]) if m["batch"] else None,
                   int(m["replicas"]) if m["replicas"] else None, m["bn_sync"])

    def records_path(self, run_dir: Path) -> Path:
        return Path(run_dir) / f"{self.name}.jsonl"

    def checkpoint_dir(self, run_dir: Path) -> Path:
        return Path(run_dir) / "checkpoints" / self.name

    def log_path(self, run_dir: Path) -> Path:
        return Path(run_dir) / "logs" / f"{self.name}.log"


class RecordWriter:
    """Appends one run's records to its JSONL file, one flushed line per record; a new file gets the header first.

    Flushing (not fsync) per record means a crash or kill of the process loses nothing; epoch records
    are also fsynced, so a machine crash loses at most the current epoch.
    """

    def __init__(self, path: Path, run: RunId) -> None:
        self.path = Path(path)
        self.run = run
        self.path.parent.mkdir(parents=True, exist_ok=True)
        _drop_partial_line(self.path)
        new = not self.path.exists() or self.path.stat().st_size == 0
        self._file = self.path.open("a")
        if new:
            self._append(to_dict(RunHeader()), sync=False)

    def write(self, kind: str, *, epoch: int, iteration: int, sync: bool = False, **fields: Any) -> TrainEvent:
        """Append one event of `kind` (its schema class, built from `fields`) with the run's identity, `epoch`,
        `iteration` and the time; returns it. Raises ValueError for an unknown kind, TypeError for a field the
        kind does not have or lacks (a bug in the caller)."""
        cls = TRAIN_EVENTS.get(kind)
        if cls is None:
            raise ValueError(f"kind must be one of {', '.join(TRAIN_EVENTS)}. Received: {kind!r}")
        event = cls(framework=self.run.framework, variant=self.run.variant, seed=self.run.seed, epoch=epoch,
                    iteration=iteration, t=round(time.time(), 3), **fields)
        self._append(to_dict(event), sync=sync)  # a diverged loss (inf, nan) becomes null
        return event

    def _append(self, record: dict[str, Any], *, sync: bool) -> None:
        self._file.write(json.dumps(record, allow_nan=False) + "\n")
        self._file.flush()
        if sync:
            os.fsync(self._file.fileno())

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> RecordWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _drop_partial_line(path: Path) -> None:
    """Cut a last line that a killed process left without its newline, so appending stays valid JSONL."""
    if not path.exists() or path.stat().st_size == 0:
        return
    with path.open("rb+") as f:
        data = f.read()
        if not data.endswith(b"\n"):
            f.truncate(data.rfind(b"\n") + 1)


@dataclass(frozen=True)
class RunRecords:
    """One run file as read: its events in order, and the lines that could not be read.

    Attributes:
        path: the file.
        events: every readable event (the header is not one).
        unreadable: the numbers of the lines that are not a valid event (corrupt, or cut short by a kill).
        cut: the last line has no newline (the writer stopped in the middle of it).
        tail_unreadable: the last non-blank line is unreadable (so the last event may not be the run's last).
        version: the file's format version (1: no header).
    """

    path: Path
    events: list[TrainEvent]
    unreadable: tuple[int, ...] = ()
    cut: bool = False
    tail_unreadable: bool = False
    version: int = TRAIN_RUN_VERSION


def read_run(path: Path) -> RunRecords:
    """Read one run file line by line (no events if it does not exist).

    Raises:
        FormatError: the header declares another family or a newer version than this bnparity reads.
    """
    path = Path(path)
    if not path.exists():
        return RunRecords(path, [])
    lines = read_jsonl(path)
    bad, events, version, last_good = list(lines.bad_lines), [], 1, 0
    for number, data in lines.records:
        where = f"{path.name}:{number}"
        if isinstance(data, dict) and data.get("kind") == "header":
            version = run_file_version(data, where=where)
            continue
        try:
            events.append(load_train_event(data, where=where))
            last_good = number
        except FormatError:
            bad.append(number)
    return RunRecords(path, events, tuple(sorted(bad)), cut=lines.cut,
                      tail_unreadable=bool(bad) and max(bad) > last_good, version=version)


def read_records(path: Path) -> list[TrainEvent]:
    """The readable events of one run file ([] if it does not exist); see `read_run` for what was unreadable."""
    return read_run(path).events


def terminal_record(records: list[TrainEvent]) -> TrainEvent | None:
    """The last record if it ends the run ("done", "failed" or "skipped"), else None."""
    return records[-1] if records and records[-1].kind in TERMINAL_KINDS else None


def write_manifest(run_dir: Path, manifest: TrainManifest) -> None:
    write_json(Path(run_dir) / MANIFEST, to_dict(manifest))


def load_manifest(run_dir: Path) -> TrainManifest:
    """The manifest of `run_dir` (any version this bnparity reads).

    Raises:
        FileNotFoundError: naming the file, when there is none.
        ValueError: it is not valid JSON; FormatError (a ValueError): not a training manifest this version reads.
    """
    path = Path(run_dir) / MANIFEST
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist: not a training run directory")
    return load_train_manifest(read_json(path), where=str(path))


def save_checkpoint(run_dir: Path, run: RunId, *, epoch: int, state: dict[str, np.ndarray],
                    meta: dict[str, Any]) -> Path:
    """Save `state` and `meta` after `epoch` atomically; keep only the last KEEP_CHECKPOINTS epochs."""
    if _META_KEY in state:
        raise ValueError(f"a trainer state key may not be {_META_KEY!r}. Received keys: {sorted(state)}")
    directory = run.checkpoint_dir(run_dir)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"epoch{epoch}.npz"
    arrays = {k: np.asarray(v) for k, v in state.items()}
    arrays[_META_KEY] = np.array(json.dumps(dict(meta, epoch=epoch)))
    with replacing(path) as tmp, tmp.open("wb") as f:  # a file object: np.savez would append ".npz" to a name
        np.savez(f, **arrays)
    for old in checkpoint_epochs(run_dir, run)[:-KEEP_CHECKPOINTS]:
        (directory / f"epoch{old}.npz").unlink(missing_ok=True)
    return path


def checkpoint_epochs(run_dir: Path, run: RunId) -> list[int]:
    """The epochs that have a checkpoint, ascending."""
    directory = run.checkpoint_dir(run_dir)
    if not directory.is_dir():
        return []
    return sorted(int(p.stem[5:]) for p in directory.glob("epoch*.npz") if p.stem[5:].isdigit())


def load_checkpoint(run_dir: Path, run: RunId, epoch: int) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """(trainer state, meta) saved after `epoch`."""
    with np.load(run.checkpoint_dir(run_dir) / f"epoch{epoch}.npz", allow_pickle=False) as z:
        state = {k: z[k] for k in z.files if k != _META_KEY}
        meta = json.loads(str(z[_META_KEY]))
    return state, meta


def resume_point(run_dir: Path, run: RunId) -> int:
    """The last epoch that has both its "epoch" record and its checkpoint (0: start from scratch)."""
    recorded = {r.epoch for r in read_records(run.records_path(run_dir)) if r.kind == "epoch"}
    usable = [e for e in checkpoint_epochs(run_dir, run) if e in recorded]
    return max(usable, default=0)


def truncate_after_epoch(run_dir: Path, run: RunId, epoch: int) -> int:
    """Keep the records up to the end of `epoch` (0: none); move the rest to <name>.interrupted.jsonl.

    Returns how many records were moved. The kept file is replaced atomically.
    """
    path = run.records_path(run_dir)
    if not path.exists():
        return 0
    lines = [line for line in path.read_text().splitlines(keepends=True) if line.strip()]
    keep = 0
    if epoch > 0:
        for i, line in enumerate(lines):
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if record["kind"] == "epoch" and record["epoch"] == epoch:
                keep = i + 1
                break
        else:
            raise ValueError(f"{path} has no record of the end of epoch {epoch}")
    dropped = [line if line.endswith("\n") else line + "\n" for line in lines[keep:]]
    if dropped:
        with (Path(run_dir) / f"{run.name}.interrupted.jsonl").open("a") as f:
            f.writelines(dropped)
    write_output(path, "".join(lines[:keep]))
    return len(dropped)
