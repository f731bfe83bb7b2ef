"""`bnparity dp-parity`: one data-parallel SGD step of the AlexNet on R replicas vs one device, in every framework.

One worker process per framework (worker.py) with the engine's environment for the largest R, killed with its
process group after --timeout. A table, a JSON record file (format bnparity-dp-parity/1), the exit code: 1 when a
gated comparison fails, a gated configuration fails to run or nothing could be compared (every framework
skipped), 2 for bad input.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from bnparity.frameworks.registry import display_name, frameworks_help, parse_frameworks, sort_key
from bnparity.suites.environment import environment
from bnparity.suites.errors import UserError
from bnparity.suites.output import JSON_TARGETS, output_file
from bnparity.suites.records import write_json
from bnparity.suites.schema import (
    DP_KINDS,
    DP_PARITY,
    DP_PARITY_VERSION,
    DPComparison,
    DPNotRun,
    DPParityDoc,
    DPParityMeta,
    DPRecord,
    Environment,
    dp_record,
    format_string,
    from_dict,
    to_dict,
)
from bnparity.suites.sync_parity.command import parse_replicas
from bnparity.suites.workers import check_engine_arguments, failure_reason, run_pieces, run_worker, worker_env

from .harness import BATCH, BN_SYNC, DTYPES, PRESET
from .worker import MARK

TIMEOUT_S = 300.0
WORKER = "bnparity.suites.dp_parity.worker"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--replicas", help="comma-separated replica counts (default: 2,4)")
    parser.add_argument("--frameworks", help=frameworks_help())
    parser.add_argument("--dtypes", default=",".join(DTYPES), help=f"some of {','.join(DTYPES)} (default: both)")
    parser.add_argument("--timeout", type=float, default=TIMEOUT_S,
                        help=f"seconds before a framework's worker is killed (default: {TIMEOUT_S:g})")
    parser.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1),
                        help="frameworks running at once (default: min(2, CPUs))")
    parser.add_argument("--json", type=output_file, metavar="PATH",
                        help=f"write the records here (format {format_string(DP_PARITY, DP_PARITY_VERSION)})"
                             + JSON_TARGETS)


def _piece(framework: str, replicas: tuple[int, ...], dtypes: tuple[str, ...], timeout: float,
           register: Callable[[subprocess.Popen], None]) -> list[DPRecord]:
    """One framework, every replica count, in its worker process (the engine's environment for the largest R)."""
    job = {"framework": framework, "replicas": list(replicas), "bn_sync": list(BN_SYNC), "dtypes": list(dtypes),
           "preset": PRESET, "batch": BATCH}
    output = run_worker(WORKER, job, env=worker_env(framework, max(replicas)), timeout=timeout, mark=MARK,
                        parse=dp_record, register=register)
    records: list[DPRecord] = list(output.records)  # type: ignore[arg-type]
    reason = failure_reason(output, timeout)
    if reason is not None:
        records.append(DPNotRun(framework=framework, replicas=max(replicas), bn_sync="-", dtype="-", gate=True,
                                status="error", reason=reason))
    return records


def run_dp_parity(*, frameworks: tuple[str, ...], replicas: tuple[int, ...], dtypes: tuple[str, ...],
                  timeout: float, jobs: int, json_path: Path | None) -> list[DPRecord]:
    """Every framework in its worker, `jobs` at a time; the records saved even when interrupted."""
    start = time.perf_counter()
    done: list[list[DPRecord]] = [[] for _ in frameworks]
    complete = False
    try:
        run_pieces(frameworks, lambda fw, register: _piece(fw, replicas, dtypes, timeout, register), jobs=jobs,
                   done=done)
        complete = True
    finally:
        records = [r for piece in done for r in piece]
        if json_path is not None:
            meta = DPParityMeta(environment=from_dict(Environment, environment(), where="environment"),
                                frameworks=frameworks, replicas=replicas, preset=PRESET, batch=BATCH,
                                timeout_s=timeout, wall_time_s=round(time.perf_counter() - start, 3),
                                complete=complete)
            write_json(json_path, to_dict(DPParityDoc(meta=meta, records=tuple(records))))
        if not complete:
            print(f"interrupted; {len(records)} records kept", file=sys.stderr)
    return records


def format_table(records: list[DPRecord]) -> str:
    """One line per framework × dtype × R × BN mode: the worst rel_err per kind and the verdict."""
    width = max([len("framework"), *(len(display_name(r.framework)) for r in records)])
    lines = [f"{'framework':<{width}} {'dtype':<8} {'R':>2} {'BN':<6} {'loss':>9} {'grad':>9} {'param':>9} "
             f"{'running':>9}  verdict"]
    groups: dict[tuple, list[DPRecord]] = {}
    for r in records:
        groups.setdefault((r.framework, r.dtype, r.replicas, r.bn_sync), []).append(r)
    for (fw, dtype, replicas, mode), mine in groups.items():
        errors = [r for r in mine if isinstance(r, DPNotRun)]
        if errors:
            lines.extend(f"{display_name(fw):<{width}} {dtype:<8} {replicas:>2} {mode:<6} {e.status}: {e.reason}"
                         for e in errors)
            continue
        worst = {k: max((r.rel_err if r.rel_err is not None else float("inf")) for r in mine if r.kind == k)
                 for k in DP_KINDS}
        gated = [r for r in mine if r.gate]
        verdict = ("pass" if all(r.passed for r in gated) else "FAIL") if gated else "finding"
        lines.append(f"{display_name(fw):<{width}} {dtype:<8} {replicas:>2} {mode:<6} " +
                     " ".join(f"{v:>9.2e}" for v in worst.values()) + f"  {verdict}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    try:
        frameworks = tuple(sorted(parse_frameworks(args.frameworks), key=sort_key))
    except ValueError as e:
        raise UserError(str(e)) from None
    replicas = parse_replicas(args.replicas)
    dtypes = tuple(d for d in args.dtypes.split(",") if d)
    if not dtypes or any(d not in DTYPES for d in dtypes):
        raise UserError(f"--dtypes takes some of {', '.join(DTYPES)}. Received: {args.dtypes!r}")
    check_engine_arguments(args.jobs, args.timeout)
    start = time.perf_counter()
    records = run_dp_parity(frameworks=frameworks, replicas=replicas, dtypes=dtypes, timeout=args.timeout,
                            jobs=args.jobs, json_path=args.json)
    print(format_table(records))
    failures = [r for r in records if r.gate and r.passed is False]
    n_gated = sum(1 for r in records if r.gate)
    if n_gated == 0:
        print("nothing was compared: no framework could run here (the skips above say why)", file=sys.stderr)
        return 1
    print(f"\n{n_gated - len(failures)} of {n_gated} gated comparisons pass; {len(failures)} fail; wall time "
          f"{time.perf_counter() - start:.1f} s" + (f"; records in {args.json}" if args.json else ""))
    for r in failures[:20]:
        if isinstance(r, DPComparison):
            print(f"FAIL {r.framework} R={r.replicas} {r.bn_sync} {r.dtype}: {r.kind} {r.quantity}: "
                  f"rel err {r.rel_err} > {r.rtol:.2g}")
        else:
            print(f"FAIL {r.framework} R={r.replicas} {r.bn_sync} {r.dtype}: {r.reason}")
    return 1 if failures else 0
