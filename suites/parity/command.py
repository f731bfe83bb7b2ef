"""`bnparity parity`: the layer-parity suite, a compact table, a JSON record file, the exit code."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from bnparity.frameworks.registry import IMPLS, parse_frameworks
from bnparity.suites.environment import environment
from bnparity.suites.errors import UserError
from bnparity.suites.records import write_json

from .cases import ParityCase, hard_cases, standard_cases
from .compare import describe_record
from .harness import MODES, run_parity
from .summary import format_table, gate_failures

FORMAT = "bnparity-parity/1"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--frameworks", help="comma-separated: torch,mxnet,jax (default: all)")
    parser.add_argument("--mode", choices=MODES + ("both",), default="both",
                        help="matched semantics, each framework's defaults, or both (default)")
    parser.add_argument("--impls", default=",".join(IMPLS), help="builtin,scratch (default: both)")
    parser.add_argument("--no-hard", action="store_true", help="skip the hard-input findings")
    parser.add_argument("--cases", help="run only cases whose name contains one of these comma-separated words")
    parser.add_argument("--json", type=Path, help="write the records here (format bnparity-parity/1)")


def select_cases(*, hard: bool, pattern: str | None) -> list[ParityCase]:
    cases = standard_cases() + (hard_cases() if hard else [])
    if pattern:
        words = [w for w in pattern.split(",") if w]
        cases = [c for c in cases if any(w in c.name for w in words)]
        if not cases:
            raise UserError(f"no case name contains any of {words}")
    return cases


def run_modes(*, frameworks: tuple[str, ...], modes: tuple[str, ...], impls: tuple[str, ...],
              cases: list[ParityCase], json_path: Path | None, quiet: bool = False) -> list[dict]:
    """Run the suite, saving the records even when interrupted (meta.complete says which)."""
    records: list[dict] = []
    start = time.perf_counter()
    complete = False
    try:
        for mode in modes:
            records.extend(run_parity(frameworks=frameworks, mode=mode, cases=cases, impls=impls))
        complete = True
    finally:
        wall = time.perf_counter() - start
        if json_path is not None:
            meta = {**environment(), "modes": list(modes), "frameworks": list(frameworks), "impls": list(impls),
                    "wall_time_s": round(wall, 3), "complete": complete,
                    "cases": [{"name": c.name, "shape": list(c.shape), "axis": c.axis, "dtype": c.dtype,
                               "steps": c.steps, "gate": c.gate, "note": c.note} for c in cases]}
            write_json(json_path, {"format": FORMAT, "meta": meta, "records": records})
        if not quiet and not complete:
            print(f"interrupted after {wall:.1f} s; {len(records)} records kept", file=sys.stderr)
    return records


def run(args: argparse.Namespace) -> int:
    try:
        frameworks = parse_frameworks(args.frameworks)
    except ValueError as e:
        raise UserError(str(e)) from None
    impls = tuple(i for i in args.impls.split(",") if i)
    if not impls or any(i not in IMPLS for i in impls):
        raise UserError(f"--impls takes some of {', '.join(IMPLS)}. Received: {args.impls!r}")
    modes = MODES if args.mode == "both" else (args.mode,)
    cases = select_cases(hard=not args.no_hard, pattern=args.cases)
    start = time.perf_counter()
    records = run_modes(frameworks=frameworks, modes=modes, impls=impls, cases=cases, json_path=args.json)
    wall = time.perf_counter() - start
    for r in records:
        if r.get("case") is None:
            print(f"skipped {r['framework']}/{r['impl']}: {r['reason']}")
    for mode in modes:
        print(f"\n== {mode} ==")
        print(format_table([r for r in records if r.get("mode") == mode]))
    failures = gate_failures(records)
    gated = sum(1 for r in records if r.get("gate") and r.get("status") == "ok")
    print(f"\n{gated - len(failures)} of {gated} gated comparisons pass; "
          f"{len(failures)} fail; wall time {wall:.1f} s" + (f"; records in {args.json}" if args.json else ""))
    for r in failures[:20]:
        where = f"{r['framework']}/{r['impl']} on {r['case']} ({r['mode']})"
        print(f"FAIL {r.get('quantity') or ''} of {where}: {r['reason']}" if r.get("reason")
              else f"FAIL {describe_record(r, where)}")
    return 1 if failures else 0


