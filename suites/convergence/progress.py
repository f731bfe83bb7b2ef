"""Progress of the running trainings, read from their JSONL files: one line per run, refreshed.

On a terminal the lines are redrawn in place every second; otherwise (a log file, CI) every run's line is
printed every `interval` seconds, plus one line whenever a run starts or ends. The runs are only ever
observed through their record files, so the display costs the training processes nothing.
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from bnparity.suites.schema import (
    DoneEvent,
    EpochEvent,
    EvalEvent,
    FailedEvent,
    InterruptedEvent,
    IterEvent,
    SkippedEvent,
    StartEvent,
    TrainEvent,
    load_train_event,
)

from .records import RunId


class RecordTail:
    """Reads the complete lines appended to a JSONL file since the last call (restarting if it was replaced)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._offset = 0
        self._inode: int | None = None

    def read_new(self) -> list[TrainEvent]:
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            return []
        if stat.st_ino != self._inode or stat.st_size < self._offset:
            self._inode, self._offset = stat.st_ino, 0
        with self.path.open("rb") as f:
            f.seek(self._offset)
            data = f.read()
        end = data.rfind(b"\n") + 1
        self._offset += end
        records = []
        for line in data[:end].splitlines():
            try:
                value = json.loads(line)
                if not (isinstance(value, dict) and value.get("kind") == "header"):
                    records.append(load_train_event(value))
            except ValueError:  # a corrupt line (FormatError is a ValueError): the display skips it
                continue
        return records


@dataclass
class RunStatus:
    """What is known of one run from its records so far."""

    run: RunId
    state: str = "waiting"
    epoch: int = 0
    epochs: int | None = None
    iteration: int = 0
    iters_per_epoch: int | None = None
    loss: float | None = None
    test_accuracy: float | None = None
    images_per_s: float | None = None
    message: str = ""
    width: int = 22  # of the name column (the longest name of the display's runs)
    _base: tuple[float, int] | None = field(default=None, repr=False)  # (t, iteration) at the first step seen
    _last_t: float | None = field(default=None, repr=False)

    def consume(self, record: TrainEvent) -> None:
        self.epoch, self.iteration = record.epoch, record.iteration
        if isinstance(record, StartEvent):
            self.state, self.epochs, self.iters_per_epoch = "running", record.epochs, record.iters_per_epoch
            self._base = None
        elif isinstance(record, IterEvent):
            self.loss = record.loss
            if self._base is None:
                self._base = (record.t, record.iteration)
            self._last_t = record.t
        elif isinstance(record, (EvalEvent, EpochEvent)):
            self.test_accuracy = record.test_accuracy
            self.images_per_s = record.images_per_s or self.images_per_s
        elif isinstance(record, DoneEvent):
            self.state, self.message = "done", f"test accuracy {_num(record.test_accuracy, '.4f')}"
        elif isinstance(record, FailedEvent):
            self.state, self.message = "failed", record.error
        elif isinstance(record, SkippedEvent):
            self.state, self.message = "skipped", record.reason
        elif isinstance(record, InterruptedEvent):
            self.state = "interrupted"

    def eta(self) -> float | None:
        """Seconds left at the pace of this process so far (evaluation pauses included), or None."""
        if self._base is None or self._last_t is None or not self.epochs or not self.iters_per_epoch:
            return None
        done = self.iteration - self._base[1]
        elapsed = self._last_t - self._base[0]
        if done <= 0 or elapsed <= 0:
            return None
        return (self.epochs * self.iters_per_epoch - self.iteration) * elapsed / done

    def line(self) -> str:
        head = f"{self.run.name:<{self.width}} {self.state:<11}"
        if self.state in ("waiting",) or (self.state != "running" and self.message):
            return f"{head} {self.message}".rstrip()
        total = self.iters_per_epoch * self.epochs if self.iters_per_epoch and self.epochs else "?"
        parts = [f"epoch {self.epoch}/{self.epochs or '?'}", f"it {self.iteration}/{total}",
                 f"loss {_num(self.loss, '.4f')}", f"test {_num(self.test_accuracy, '.4f')}",
                 f"{_num(self.images_per_s, '.0f')} img/s", f"ETA {_duration(self.eta())}"]
        return f"{head} " + "  ".join(parts)


def _num(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = int(round(seconds))
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 60}m{seconds % 60:02d}s"


class ProgressDisplay:
    """One line per run, redrawn in place on a terminal, printed periodically otherwise.

    Args:
        run_dir: where the runs' JSONL files are.
        runs: the runs to show, in order.
        stream: where to write (default stdout).
        tty: redraw in place; default: whether `stream` is a terminal (and TERM is not "dumb").
        interval: seconds between refreshes (default 1 on a terminal, 30 otherwise).
    """

    def __init__(self, run_dir: Path, runs: list[RunId], *, stream: TextIO | None = None, tty: bool | None = None,
                 interval: float | None = None) -> None:
        self.stream = stream or sys.stdout
        self.tty = (self.stream.isatty() and os.environ.get("TERM") != "dumb") if tty is None else tty
        self.interval = interval if interval is not None else (1.0 if self.tty else 30.0)
        width = max([22, *(len(run.name) for run in runs)])
        self.status = {run: RunStatus(run, width=width) for run in runs}
        self._tails = {run: RecordTail(run.records_path(run_dir)) for run in runs}
        self._drawn = 0
        self._last_draw = float("-inf")
        self._began = time.monotonic()

    def poll(self) -> None:
        """Read what every run wrote since the last poll."""
        for run, tail in self._tails.items():
            for record in tail.read_new():
                self.status[run].consume(record)

    def event(self, run: RunId, text: str) -> None:
        """A run started or ended: one line that stays (above the live block on a terminal)."""
        self.poll()
        self._erase()
        self.stream.write(f"{run.name}: {text}\n")
        if self.tty:
            self._draw(force=True)
        else:
            self.stream.flush()

    def update(self, *, force: bool = False) -> None:
        """Poll the record files and refresh the display if `interval` has passed."""
        if force or time.monotonic() - self._last_draw >= self.interval:
            self.poll()
            self._erase()
            self._draw(force=True)

    def close(self) -> None:
        """A last refresh; on a terminal the final lines stay."""
        self.poll()
        self._erase()
        self._draw(force=True, final=True)
        self._drawn = 0

    def _active(self) -> list[RunStatus]:
        return [s for s in self.status.values() if s.state == "running"]

    def _erase(self) -> None:
        if self.tty and self._drawn:
            self.stream.write(f"\x1b[{self._drawn}F\x1b[J")
            self._drawn = 0

    def _draw(self, *, force: bool = False, final: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last_draw < self.interval:
            return
        self._last_draw = now
        shown = list(self.status.values()) if (self.tty or final) else self._active()
        if not shown:
            return
        if not self.tty:
            self.stream.write(f"[{_duration(now - self._began)}]\n")
        for status in shown:
            self.stream.write(status.line() + "\n")
        self._drawn = len(shown) if self.tty and not final else 0
        self.stream.flush()
