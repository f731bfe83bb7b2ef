"""`bnparity sync-parity`: BatchNorm across data-parallel replicas on every framework's real engine, vs the reference.

One worker process per framework and replica count (worker.py), with the engine's environment set before the
framework starts and a deadline after which its process group is killed and its unfinished work recorded as an
error. A table, a JSON record file (format bnparity-sync-parity/1), the exit code: 1 when a gated comparison fails,
an engine fails or nothing could be compared (every framework skipped), 2 for bad input.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from bnparity.frameworks.conventions import replica_convention
from bnparity.frameworks.registry import display_name, frameworks_help, parse_frameworks, sort_key
from bnparity.frameworks.replicas import IMPLS
from bnparity.suites.environment import environment
from bnparity.suites.errors import UserError
from bnparity.suites.output import JSON_TARGETS, output_file
from bnparity.suites.parity.compare import describe_record
from bnparity.suites.records import write_json
from bnparity.suites.schema import (
    SYNC_PARITY,
    SYNC_PARITY_VERSION,
    Environment,
    SyncComparison,
    SyncParityDoc,
    SyncParityMeta,
    SyncRecord,
    SyncSkip,
    format_string,
    from_dict,
    sync_record,
    to_dict,
)
from bnparity.suites.workers import check_engine_arguments, failure_reason, run_pieces, run_worker, worker_env

from .cases import REPLICAS, SyncCase, sync_cases
from .summary import format_summary, gate_failures, gated, implementation
from .worker import MARK

TIMEOUT_S = 120.0
WORKER = "bnparity.suites.sync_parity.worker"


def parse_replicas(text: str | None) -> tuple[int, ...]:
    """'2,4' -> (2, 4). Raises UserError for anything but integers ≥ 2."""
    if text is None:
        return REPLICAS
    try:
        values = tuple(dict.fromkeys(int(v) for v in text.split(",")))
    except ValueError:
        raise UserError(f"--replicas takes comma-separated integers >= 2. Received: {text!r}") from None
    if not values or any(v < 2 for v in values):
        raise UserError(f"--replicas takes comma-separated integers >= 2. Received: {text!r}")
    return values


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--replicas", help=f"comma-separated replica counts (default: {','.join(map(str, REPLICAS))})")
    parser.add_argument("--frameworks", help=frameworks_help())
    parser.add_argument("--impls", default=",".join(IMPLS), help="builtin,scratch (default: both)")
    parser.add_argument("--cases", help="run only cases whose name contains one of these comma-separated words")
    parser.add_argument("--timeout", type=float, default=TIMEOUT_S,
                        help=f"seconds before a framework's engine is killed (default: {TIMEOUT_S:g})")
    parser.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1),
                        help="framework engines running at once (default: min(2, CPUs))")
    parser.add_argument("--json", type=output_file, metavar="PATH",
                        help=f"write the records here (format {format_string(SYNC_PARITY, SYNC_PARITY_VERSION)})"
                             + JSON_TARGETS)


def select_cases(replicas: Sequence[int], pattern: str | None) -> list[SyncCase]:
    cases = [c for r in replicas for c in sync_cases(r)]
    if pattern:
        words = [w for w in pattern.split(",") if w]
        cases = [c for c in cases if any(w in c.name for w in words)]
        if not cases:
            raise UserError(f"no case name contains any of {words}")
    return cases


def _piece(cases: list[SyncCase], framework: str, impls: tuple[str, ...], timeout: float,
           register: Callable[[subprocess.Popen], None]) -> list[SyncRecord]:
    """One framework at one replica count, in its worker process."""
    replicas = cases[0].replicas
    job = {"framework": framework, "replicas": replicas, "impls": list(impls), "cases": [c.name for c in cases]}
    output = run_worker(WORKER, job, env=worker_env(framework, replicas), timeout=timeout, mark=MARK,
                        parse=sync_record, register=register)
    records: list[SyncRecord] = list(output.records)  # type: ignore[arg-type]
    reason = failure_reason(output, timeout)
    if reason is not None:
        records.append(SyncSkip(case=None, framework=framework, impl="+".join(impls), variant="-", replicas=replicas,
                                gate=True, status="error", reason=reason))
    return records


def run_sync_parity(*, frameworks: tuple[str, ...], cases: list[SyncCase], impls: tuple[str, ...], timeout: float,
                    jobs: int, json_path: Path | None) -> list[SyncRecord]:
    """Every framework × replica count in worker processes, `jobs` at a time; the records saved even when
    interrupted (meta.complete says which), in case order, framework by framework."""
    start = time.perf_counter()
    by_replicas: dict[int, list[SyncCase]] = {}
    for c in cases:
        by_replicas.setdefault(c.replicas, []).append(c)
    pieces = [(fw, mine) for mine in by_replicas.values() for fw in frameworks]
    done: list[list[SyncRecord]] = [[] for _ in pieces]
    complete = False
    try:
        run_pieces(pieces, lambda piece, register: _piece(piece[1], piece[0], impls, timeout, register), jobs=jobs,
                   done=done)
        complete = True
    finally:
        records = [r for piece in done for r in piece]
        if json_path is not None:
            meta = SyncParityMeta(
                environment=from_dict(Environment, environment(), where="environment"), frameworks=frameworks,
                replicas=tuple(by_replicas), timeout_s=timeout, wall_time_s=round(time.perf_counter() - start, 3),
                complete=complete, cases=tuple(c.info() for c in cases),
                conventions=tuple(_conventions(frameworks)))
            write_json(json_path, to_dict(SyncParityDoc(meta=meta, records=tuple(records))))
        if not complete:
            print(f"interrupted; {len(records)} records kept", file=sys.stderr)
    return records


def _conventions(frameworks: tuple[str, ...]) -> list:
    rows = []
    for fw in frameworks:
        try:
            rows.append(replica_convention(fw))
        except LookupError:
            continue
    return rows


def run(args: argparse.Namespace) -> int:
    try:
        frameworks = tuple(sorted(parse_frameworks(args.frameworks), key=sort_key))
    except ValueError as e:
        raise UserError(str(e)) from None
    replicas = parse_replicas(args.replicas)
    impls = tuple(i for i in args.impls.split(",") if i)
    if not impls or any(i not in IMPLS for i in impls):
        raise UserError(f"--impls takes some of {', '.join(IMPLS)}. Received: {args.impls!r}")
    check_engine_arguments(args.jobs, args.timeout)
    cases = select_cases(replicas, args.cases)
    start = time.perf_counter()
    records = run_sync_parity(frameworks=frameworks, cases=cases, impls=impls, timeout=args.timeout, jobs=args.jobs,
                              json_path=args.json)
    wall = time.perf_counter() - start
    for r in records:
        if isinstance(r, SyncSkip) and r.case is None:
            word = "ERROR" if r.status == "error" else "skipped"
            print(f"{word} {display_name(r.framework)} {r.impl} (R={r.replicas}): {r.reason}")
    print(format_summary(records))
    failures = gate_failures(records)
    n_gated = len(gated(records))
    if n_gated == 0:
        print("nothing was compared: no framework could run here (the skips above say why)", file=sys.stderr)
        return 1
    print(f"\n{n_gated - len(failures)} of {n_gated} gated comparisons pass; {len(failures)} fail; "
          f"wall time {wall:.1f} s" + (f"; records in {args.json}" if args.json else ""))
    for r in failures[:20]:
        where = f"{implementation(r)} on {r.case or 'every case'}"
        if isinstance(r, SyncComparison):
            replica = "" if r.replica is None else f" of replica {r.replica}"
            print(f"FAIL {describe_record(r, f'{where}{replica} (vs {r.reference})')}")
        else:
            print(f"FAIL {where}: {r.reason}")
    return 1 if failures else 0
