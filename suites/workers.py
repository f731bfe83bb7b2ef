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
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TypeVar

from bnparity.frameworks.replicas import replica_environment
from bnparity.suites.convergence.runner import thread_env

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
    """`base` (this process's environment), one compute thread per process, and what `framework`'s engine needs
    to run `replicas` replicas (frameworks/replicas.py: replica_environment; flags appended to those set)."""
    env = dict(os.environ if base is None else base)
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
