"""Running one framework's worker process in its own process group, with a deadline, and reading back its records.

The worker is started with `start_new_session` (a process group of its own: every process its engine starts,
torch.distributed ranks included, belongs to it) and the environment its engine needs set before the framework
starts. When the deadline passes the whole group is killed and what the worker printed so far is kept; after a
normal exit the group is killed too, so that no rank is ever left behind.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from typing import TypeVar

from bnparity.frameworks.registry import framework_environment
from bnparity.frameworks.replicas import replica_environment
from bnparity.suites.convergence.runner import thread_env
from bnparity.suites.errors import UserError

T = TypeVar("T")


@dataclass(frozen=True)
class WorkerOutput:
    """What a worker left: its record lines (parsed), whether it was killed at the deadline, its exit code and the
    last line of its stderr."""

    records: list[object]
    timed_out: bool
    returncode: int | None
    last_error: str


def worker_env(framework: str, replicas: int, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """`base` (this process's environment), `framework`'s own variables (a backend choice), one compute thread per
    process, and what `framework`'s engine needs
    to run `replicas` replicas (frameworks/replicas.py: replica_environment; flags appended to those set)."""
    env = dict(os.environ if base is None else base)
    env.update(framework_environment(framework))
    env.update(thread_env(1, env))
    env.update(replica_environment(framework, replicas, env))
    return env


def kill_group(pid: int) -> None:
    """SIGKILL every process of the group `pid` leads (nothing when it has already gone)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


def run_worker(module: str, job: Mapping[str, object], *, env: Mapping[str, str], timeout: float, mark: str,
               parse: Callable[[object], T], register: Callable[[subprocess.Popen], None] | None = None,
               ) -> WorkerOutput:
    """Run `python -m module JOB` until it exits or `timeout` seconds pass; the lines starting with `mark` are
    records (JSON after the mark, read with `parse`)."""
    proc = subprocess.Popen([sys.executable, "-m", module, json.dumps(job)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=dict(env), start_new_session=True)
    if register is not None:
        register(proc)
    timed_out = False
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        timed_out = True
        kill_group(proc.pid)
        out, err = proc.communicate()
    finally:
        kill_group(proc.pid)  # ranks or threads the worker left behind
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    records = [parse(json.loads(line[len(mark):])) for line in out.splitlines() if line.startswith(mark)]
    lines = [line.strip() for line in err.splitlines() if line.strip()]
    return WorkerOutput(records=records, timed_out=timed_out, returncode=proc.returncode,
                        last_error=lines[-1][:300] if lines else "")


def failure_reason(output: WorkerOutput, timeout: float) -> str | None:
    """One line saying why a worker did not finish, or None when it did."""
    if output.timed_out:
        return (f"the engine did not finish within {timeout:g} s and was killed; {len(output.records)} records kept"
                + (f"; last stderr line: {output.last_error}" if output.last_error else ""))
    if output.returncode:
        return (f"the worker exited with code {output.returncode}; {len(output.records)} records kept"
                + (f"; {output.last_error}" if output.last_error else ""))
    return None


def run_pieces(pieces: Sequence[T], work: Callable[[T, Callable[[subprocess.Popen], None]], list],
               *, jobs: int, done: list[list]) -> None:
    """`work(piece, register)` for every piece, `jobs` at a time (threads, each waiting on its worker process);
    `done[i]` receives piece i's records as it finishes. Interrupted (Ctrl-C) or failing, every worker started so
    far is killed with its process group before the exception propagates: nothing is left running, and `done`
    holds what finished."""
    procs: list[subprocess.Popen] = []
    lock = threading.Lock()

    def register(proc: subprocess.Popen) -> None:
        with lock:
            procs.append(proc)

    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        futures = {pool.submit(work, piece, register): i for i, piece in enumerate(pieces)}
        try:
            for future in as_completed(futures):
                done[futures[future]] = future.result()
        except BaseException:
            for f in futures:
                f.cancel()
            with lock:
                for proc in procs:
                    kill_group(proc.pid)
            raise


def check_engine_arguments(jobs: int, timeout: float) -> None:
    """--jobs ≥ 1 and --timeout > 0, or a UserError."""
    if jobs < 1:
        raise UserError(f"--jobs must be >= 1. Received: {jobs}")
    if not timeout > 0:
        raise UserError(f"--timeout must be > 0. Received: {timeout}")
