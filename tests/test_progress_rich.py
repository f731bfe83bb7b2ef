"""The progress display of parallel runs: a live rich table on a terminal, plain lines otherwise."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path
from typing import Any

import pytest
from fabricate import event
from rich.console import Console

from bnparity.suites.convergence.progress import ProgressDisplay
from bnparity.suites.convergence.records import RunId

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def _write(path: Path, records: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as f:
        for r in records:
            f.write(json.dumps(r) + "\n")


def _runs(run_dir: Path) -> tuple[RunId, RunId, RunId]:
    """A running run, a finished one and one that has not started."""
    running, done, waiting = RunId("torch", "nobn", 0), RunId("jax", "bn", 1), RunId("torch", "bn", 2)
    _write(running.records_path(run_dir), [
        event("start", framework="torch", variant="nobn", epochs=2, iters_per_epoch=10),
        event("iter", framework="torch", variant="nobn", epoch=1, iteration=1, t=100.0, loss=2.3),
        event("iter", framework="torch", variant="nobn", epoch=1, iteration=5, t=104.0, loss=1.25),
        event("eval", framework="torch", variant="nobn", epoch=1, iteration=5, test_accuracy=0.5,
              images_per_s=321.0)])
    _write(done.records_path(run_dir), [
        event("start", framework="jax", seed=1, epochs=1, iters_per_epoch=4),
        event("iter", framework="jax", seed=1, epoch=1, iteration=4, t=10.0, loss=0.75),
        event("epoch", framework="jax", seed=1, epoch=1, iteration=4, test_accuracy=0.875, images_per_s=654.0),
        event("done", framework="jax", seed=1, epoch=1, iteration=4, test_accuracy=0.875)])
    return running, done, waiting


def _plain(console: Console) -> str:
    file = console.file
    assert isinstance(file, io.StringIO)
    return ANSI.sub("", file.getvalue())


def test_terminal_shows_every_run_as_a_table_row_with_its_numbers(tmp_path: Path) -> None:
    running, done, waiting = _runs(tmp_path)
    console = Console(file=io.StringIO(), force_terminal=True, width=120)
    display = ProgressDisplay(tmp_path, [running, done, waiting], console=console)
    assert display.tty
    display.event(running, "started")
    display.update(force=True)
    display.close()
    assert display._live is None  # the live display ended
    text = _plain(console)
    assert "torch-nobn-seed0: started" in text
    rows = {name: next(line for line in reversed(text.splitlines()) if line.strip().startswith(name))
            for name in (running.name, done.name, waiting.name)}
    for header in ("run", "status", "epoch", "it", "loss", "test", "img/s", "ETA"):
        assert header in text
    assert re.search(r"running\s+1/2\s+5/20\s+1\.2500\s+0\.5000\s+321\s+0m15s", rows[running.name])
    assert re.search(r"done\s+1/1\s+4/4\s+0\.7500\s+0\.8750\s+654\s+-\s+test accuracy 0\.8750", rows[done.name])
    assert "waiting" in rows[waiting.name]


def test_ctrl_c_ends_the_live_display(tmp_path: Path) -> None:
    running, done, waiting = _runs(tmp_path)
    console = Console(file=io.StringIO(), force_terminal=True, width=120)
    with pytest.raises(KeyboardInterrupt), ProgressDisplay(tmp_path, [running, done, waiting],
                                                           console=console) as display:
        display.update(force=True)
        assert display._live is not None and display._live.is_started
        raise KeyboardInterrupt
    assert display._live is None
    assert "\x1b[?25h" in console.file.getvalue()  # the cursor is shown again


def test_not_a_terminal_prints_the_plain_lines_unchanged(tmp_path: Path) -> None:
    running, done, waiting = _runs(tmp_path)
    stream = io.StringIO()
    display = ProgressDisplay(tmp_path, [running, done, waiting], stream=stream, interval=0)
    assert not display.tty  # a StringIO is not a terminal
    display.event(running, "started")
    display.update(force=True)
    display.close()
    lines = stream.getvalue().splitlines()
    assert "\x1b" not in stream.getvalue()
    assert lines[0] == "torch-nobn-seed0: started"
    assert re.fullmatch(r"\[\d+m\d\ds\]", lines[1])
    assert lines[2] == ("torch-nobn-seed0       running     epoch 1/2  it 5/20  loss 1.2500  test 0.5000  321 img/s"
                        "  ETA 0m15s")
    assert lines[-2] == "jax-bn-seed1           done        test accuracy 0.8750"
    assert lines[-1] == "torch-bn-seed2         waiting"
