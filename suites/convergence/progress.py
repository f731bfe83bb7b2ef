"""Progress of the running trainings, read from their JSONL files: one line per run, refreshed.

On a terminal, `rich` keeps a live table of the runs (one row each) redrawn in place every second; otherwise
(a log file, CI) every run's line is printed every `interval` seconds, plus one line whenever a run starts or
ends. The runs are only ever observed through their record files, so the display costs the training processes
nothing.
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from rich import box
from rich.console import Console
from rich.live import Live
from rich.table import Table
from rich.text import Text

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

    def _finished_with_message(self) -> bool:
        return self.state == "waiting" or (self.state != "running" and bool(self.message))

    def cells(self) -> tuple[str, ...]:
        """The row of the terminal table: name, status, epoch, iteration, loss, test accuracy, img/s, ETA, note."""
        if self.state == "waiting":
            return (self.run.name, self.state, "", "", "", "", "", "", self.message)
        eta = _duration(self.eta()) if self.state == "running" else "-"
        return (self.run.name, self.state, f"{self.epoch}/{self.epochs or '?'}", f"{self.iteration}/{self._total()}",
                _num(self.loss, ".4f"), _num(self.test_accuracy, ".4f"), _num(self.images_per_s, ".0f"), eta,
                self.message)

    def _total(self) -> int | str:
        return self.iters_per_epoch * self.epochs if self.iters_per_epoch and self.epochs else "?"

    def line(self) -> str:
        head = f"{self.run.name:<{self.width}} {self.state:<11}"
        if self._finished_with_message():
            return f"{head} {self.message}".rstrip()
        parts = [f"epoch {self.epoch}/{self.epochs or '?'}", f"it {self.iteration}/{self._total()}",
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


TABLE_COLUMNS = (("run", "left"), ("status", "left"), ("epoch", "right"), ("it", "right"), ("loss", "right"),
                 ("test", "right"), ("img/s", "right"), ("ETA", "right"), ("", "left"))


class ProgressDisplay:
    """One line per run: a live `rich` table on a terminal, lines printed periodically otherwise.

    Args:
        run_dir: where the runs' JSONL files are.
        runs: the runs to show, in order.
        stream: where to write (default stdout).
        tty: draw the live table; default: whether `stream` (or `console`) is a terminal (and TERM is not "dumb").
        interval: seconds between refreshes (default 1 on a terminal, 30 otherwise).
        console: the `rich` console of the live table (default: one writing to `stream`); its file is the stream.

    `close()` (or leaving a `with` block) ends the live table and restores the terminal; the run loop calls it
    in a `finally`, so a Ctrl-C tears the display down too.
    """

    def __init__(self, run_dir: Path, runs: list[RunId], *, stream: TextIO | None = None, tty: bool | None = None,
                 interval: float | None = None, console: Console | None = None) -> None:
        self.stream = console.file if console is not None else (stream or sys.stdout)
        if tty is None:
            tty = console.is_terminal if console is not None else \
                (self.stream.isatty() and os.environ.get("TERM") != "dumb")
        self.tty = tty
        self.interval = interval if interval is not None else (1.0 if self.tty else 30.0)
        width = max([22, *(len(run.name) for run in runs)])
        self.status = {run: RunStatus(run, width=width) for run in runs}
        self._tails = {run: RecordTail(run.records_path(run_dir)) for run in runs}
        self._console = console
        self._live: Live | None = None
        self._closed = False
        self._last_draw = float("-inf")
        self._began = time.monotonic()

    def __enter__(self) -> ProgressDisplay:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def poll(self) -> None:
        """Read what every run wrote since the last poll."""
        for run, tail in self._tails.items():
            for record in tail.read_new():
                self.status[run].consume(record)

    def event(self, run: RunId, text: str) -> None:
        """A run started or ended: one line that stays (above the live table on a terminal)."""
        self.poll()
        if self.tty:
            self._live_view().console.print(f"{run.name}: {text}", markup=False, highlight=False)
            self._draw(force=True)
        else:
            self.stream.write(f"{run.name}: {text}\n")
            self.stream.flush()

    def update(self, *, force: bool = False) -> None:
        """Poll the record files and refresh the display if `interval` has passed."""
        if force or time.monotonic() - self._last_draw >= self.interval:
            self.poll()
            self._draw(force=True)

    def close(self) -> None:
        """A last refresh; on a terminal the final table stays and the live display ends. Once only."""
        if self._closed:
            return
        self._closed = True
        try:
            self.poll()
            self._draw(force=True, final=True)
        finally:
            if self._live is not None:
                live, self._live = self._live, None
                live.stop()

    def table(self) -> Table:
        """The terminal view: one row per run."""
        table = Table(title=f"elapsed {_duration(time.monotonic() - self._began)}", title_justify="left",
                      box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, collapse_padding=True)
        # Every column keeps to one line; on a narrow terminal the note (a message) is the first to give way.
        *numbers, note = TABLE_COLUMNS
        for header, justify in numbers:
            table.add_column(header, justify=justify, no_wrap=True, overflow="ellipsis")
        table.add_column(note[0], justify=note[1], no_wrap=False, overflow="ellipsis")
        for status in self.status.values():
            *cells, message = status.cells()
            table.add_row(*cells, Text(message, no_wrap=True, overflow="ellipsis"))
        return table

    def _active(self) -> list[RunStatus]:
        return [s for s in self.status.values() if s.state == "running"]

    def _live_view(self) -> Live:
        if self._live is None:
            console = self._console or Console(file=self.stream, force_terminal=True)
            self._live = Live(self.table(), console=console, auto_refresh=False, transient=False,
                              redirect_stdout=False, redirect_stderr=False)
            self._live.start()
        return self._live

    def _draw(self, *, force: bool = False, final: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last_draw < self.interval:
            return
        self._last_draw = now
        if self.tty:
            self._live_view().update(self.table(), refresh=True)
            return
        shown = list(self.status.values()) if final else self._active()
        if not shown:
            return
        self.stream.write(f"[{_duration(now - self._began)}]\n")
        for status in shown:
            self.stream.write(status.line() + "\n")
        self.stream.flush()
