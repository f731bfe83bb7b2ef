"""Several training runs as separate processes, --jobs at a time; one crashing run never stops the others.

Each run is `python -m bnparity.suites.convergence.runner` in its own session (so a terminal's Ctrl-C
reaches only this process, which then stops every child with SIGINT and waits for its last records),
with its thread environment set before any framework is imported, and its output in logs/<name>.log.
A process that dies without a final record (a crash in native code, a kill) gets a "failed" record
written here with the last line of its log.

Threads: --jobs is the number of runs at a time, data-parallel or not; each job's share of the CPUs is
`threads_per_job`. A run on one device gets that share; a data-parallel run on R replicas runs R compute engines at
once (processes, devices or contexts, one per replica), so each replica gets the share split R ways, at least one
thread (`run_threads`): the run uses max(R, share) threads, more than its share when R exceeds it (dp-cpu's R = 4
on 2 cores oversubscribes them by 2x even with --jobs 1). Its process environment also gets the variables the
framework's engine needs before it starts (frameworks.replicas.replica_environment: JAX's host device count,
MXNet's worker threads): `run_environment`.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from bnparity.frameworks.registry import framework_environment
from bnparity.frameworks.replicas import replica_environment
from bnparity.suites.schema import DoneEvent, FailedEvent, InterruptedEvent, SkippedEvent

from .progress import ProgressDisplay
from .records import RecordWriter, RunId, read_records, resume_point, truncate_after_epoch
from .runner import thread_env

STOP_GRACE_S = 30.0
POLL_S = 0.2


@dataclass(frozen=True)
class RunOutcome:
    """How one run ended: status "done", "failed", "skipped" or "interrupted", with a one-line message."""

    run: RunId
    status: str
    message: str = ""


def threads_per_job(jobs: int, cpus: int | None = None) -> int:
    """Compute threads for each of `jobs` parallel runs: the CPUs shared evenly, at least one."""
    return max(1, (cpus or os.cpu_count() or 1) // max(1, jobs))


def run_threads(run: RunId, threads: int) -> int:
    """Compute threads of `run`'s process given a job's share `threads`: all of it on one device; a data-parallel
    run's per replica: the share split over its R replicas, at least one each."""
    return threads if run.replicas is None else max(1, threads // run.replicas)


def run_environment(run: RunId, threads: int, base: Mapping[str, str]) -> dict[str, str]:
    """The environment of `run`'s process: `base`, its framework's own variables (registry.framework_environment:
    a backend choice), for a data-parallel run its framework's replica variables
    (replica_environment), and the thread variables of `run_threads` (runner.thread_env), set before the framework
    is imported; output unbuffered. Flag variables (XLA_FLAGS) collect both: thread_env appends to what is set."""
    env = dict(base)
    env.update(framework_environment(run.framework))
    if run.replicas is not None:
        env.update(replica_environment(run.framework, run.replicas, env))
    env.update(thread_env(run_threads(run, threads), env))
    env["PYTHONUNBUFFERED"] = "1"
    return env


def runner_command(run_dir: Path, run: RunId, *, threads: int, resume: bool) -> list[str]:
    """The command line of `run`'s process (runner.main's arguments)."""
    cmd = [sys.executable, "-m", "bnparity.suites.convergence.runner", "--run-dir", str(run_dir),
           "--framework", run.framework, "--variant", run.variant, "--seed", str(run.seed),
           "--threads", str(run_threads(run, threads)), "--parent-pid", str(os.getpid())]
    if resume:
        cmd.append("--resume")
    if run.batch_size is not None:
        cmd += ["--batch-size", str(run.batch_size)]
    if run.replicas is not None:
        cmd += ["--replicas", str(run.replicas), "--bn-sync", str(run.bn_sync)]
    return cmd


def _last_log_line(path: Path) -> str:
    try:
        lines = [line.strip() for line in path.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return ""
    return lines[-1] if lines else ""


def _outcome(run_dir: Path, run: RunId, returncode: int) -> RunOutcome:
    """The outcome of a finished run process, from its records (writing "failed" if it wrote no end)."""
    records = read_records(run.records_path(run_dir))
    last = records[-1] if records else None
    if isinstance(last, DoneEvent):
        return RunOutcome(run, "done", f"test accuracy {last.test_accuracy}")
    if isinstance(last, FailedEvent):
        return RunOutcome(run, "failed", last.error)
    if isinstance(last, SkippedEvent):
        return RunOutcome(run, "skipped", last.reason)
    if isinstance(last, InterruptedEvent):
        return RunOutcome(run, "interrupted", f"interrupted in epoch {last.epoch}")
    log_line = _last_log_line(run.log_path(run_dir))
    error = f"the run process exited with code {returncode} without a final record" + (
        f"; last output: {log_line}" if log_line else "")
    epoch, iteration = (last.epoch, last.iteration) if last else (0, 0)
    with RecordWriter(run.records_path(run_dir), run) as out:
        out.write("failed", epoch=epoch, iteration=iteration, sync=True, error=error, returncode=returncode)
    return RunOutcome(run, "failed", error)


def _launch(run_dir: Path, run: RunId, *, threads: int, resume: bool) -> tuple[subprocess.Popen, IO]:
    log_path = run.log_path(run_dir)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log = log_path.open("a")
    proc = subprocess.Popen(runner_command(run_dir, run, threads=threads, resume=resume), stdin=subprocess.DEVNULL,
                            stdout=log, stderr=subprocess.STDOUT, env=run_environment(run, threads, os.environ),
                            start_new_session=True)
    return proc, log


def _stop(active: dict[RunId, tuple[subprocess.Popen, IO]], grace: float) -> None:
    """SIGINT every child, wait up to `grace` seconds in all, then kill what is left."""
    for proc, _ in active.values():
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
    deadline = time.monotonic() + grace
    for proc, log in active.values():
        try:
            proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def run_all(*, run_dir: Path, runs: list[RunId], jobs: int, threads: int, resume: bool = False,
            display: ProgressDisplay | None = None, stop_grace: float = STOP_GRACE_S) -> list[RunOutcome]:
    """Run every run of `runs`, `jobs` processes at a time, and say how each ended.

    With `resume`, each run continues from its last usable checkpoint (the records of its interrupted
    epoch are moved aside before its process starts). Once a framework's trainer is found unavailable, its other
    runs of the same kind (one device, or data-parallel: another class) are recorded as skipped without starting
    a process. `threads` is each job's share of the CPUs (see `run_threads`). Ctrl-C stops every child, then
    re-raises.
    """
    run_dir = Path(run_dir)
    pending = deque(runs)
    active: dict[RunId, tuple[subprocess.Popen, IO]] = {}
    outcomes: dict[RunId, RunOutcome] = {}
    unavailable: dict[tuple[str, bool], str] = {}  # (framework, data-parallel) -> why its trainer cannot load
    in_main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, signal.default_int_handler) if in_main else None
    try:
        while pending or active:
            while pending and len(active) < jobs:
                run = pending.popleft()
                if resume:
                    truncate_after_epoch(run_dir, run, resume_point(run_dir, run))
                reason = unavailable.get((run.framework, run.data_parallel))
                if reason is not None:
                    with RecordWriter(run.records_path(run_dir), run) as out:
                        out.write("skipped", epoch=0, iteration=0, reason=reason)
                    outcomes[run] = RunOutcome(run, "skipped", reason)
                    continue
                active[run] = _launch(run_dir, run, threads=threads, resume=resume)
                if display:
                    display.event(run, "started" + (" (resumed)" if resume else ""))
            for run, (proc, log) in list(active.items()):
                if proc.poll() is None:
                    continue
                log.close()
                del active[run]
                outcome = outcomes[run] = _outcome(run_dir, run, proc.returncode)
                if outcome.status == "skipped":
                    unavailable[run.framework, run.data_parallel] = outcome.message
                if display:
                    display.event(run, f"{outcome.status}: {outcome.message}".rstrip(": "))
            if display:
                display.update()
            time.sleep(POLL_S)
    except KeyboardInterrupt:
        _stop(active, stop_grace)
        raise
    finally:
        if in_main:
            signal.signal(signal.SIGTERM, previous)
        if display:
            display.close()
    return [outcomes[run] for run in runs]
