"""`bnparity parity`: the layer-parity suite, a compact table, a JSON record file, the exit code.

Exit 1 when a gated comparison fails, or when a framework named in --frameworks is installed but fails to import
(the others still run); 2 for bad input.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from bnparity.frameworks.registry import IMPLS, Unavailable, baseline, frameworks_help, parse_frameworks
from bnparity.suites.environment import environment
from bnparity.suites.errors import UserError
from bnparity.suites.output import JSON_TARGETS, output_file
from bnparity.suites.records import write_json
from bnparity.suites.schema import (
    PARITY_FORMAT,
    Environment,
    LayerComparison,
    LayerRecord,
    LayerSkip,
    ParityCaseInfo,
    ParityDoc,
    ParityMeta,
    from_dict,
    to_dict,
)

from .cases import ParityCase, hard_cases, standard_cases
from .compare import describe_record
from .harness import MODES, run_parity
from .summary import format_table, gate_failures, gated

FORMAT = PARITY_FORMAT


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--frameworks", help=frameworks_help())
    parser.add_argument("--mode", choices=MODES + ("both",), default="both",
                        help="matched semantics, each framework's defaults, or both (default)")
    parser.add_argument("--impls", default=",".join(IMPLS), help="builtin,scratch (default: both)")
    parser.add_argument("--no-hard", action="store_true", help="skip the hard-input findings")
    parser.add_argument("--cases", help="run only cases whose name contains one of these comma-separated words")
    parser.add_argument("--json", type=output_file, metavar="PATH",
                        help=f"write the records here (format {FORMAT})" + JSON_TARGETS)


def select_cases(*, hard: bool, pattern: str | None) -> list[ParityCase]:
    cases = standard_cases() + (hard_cases() if hard else [])
    if pattern:
        words = [w for w in pattern.split(",") if w]
        cases = [c for c in cases if any(w in c.name for w in words)]
        if not cases:
            raise UserError(f"no case name contains any of {words}")
    return cases


@dataclass
class ParityRun:
    """What run_modes measured: every record, and the frameworks that are installed but failed to import."""

    records: list[LayerRecord] = field(default_factory=list)
    broken: dict[str, str] = field(default_factory=dict)  # framework -> the one-line reason


def case_info(case: ParityCase) -> ParityCaseInfo:
    """How the records describe a case."""
    return ParityCaseInfo(name=case.name, shape=tuple(case.shape), axis=case.axis, dtype=case.dtype, steps=case.steps,
                          gate=case.gate, note=case.note)


def parity_doc(records: list[LayerRecord], *, modes: tuple[str, ...], frameworks: tuple[str, ...],
               impls: tuple[str, ...], cases: list[ParityCase], wall_time_s: float | None, complete: bool,
               input_path: Path | None = None) -> ParityDoc:
    """The parity.json document of a run (the environment is this process's)."""
    meta = ParityMeta(environment=from_dict(Environment, environment(), where="environment"), modes=modes,
                      frameworks=frameworks, impls=impls, baseline=baseline().name, wall_time_s=wall_time_s,
                      complete=complete, cases=tuple(case_info(c) for c in cases),
                      input=None if input_path is None else str(input_path))
    return ParityDoc(meta=meta, records=tuple(records))


def run_modes(*, frameworks: tuple[str, ...], modes: tuple[str, ...], impls: tuple[str, ...],
              cases: list[ParityCase], json_path: Path | None, quiet: bool = False) -> ParityRun:
    """Run the suite, saving the records even when interrupted (meta.complete says which)."""
    run = ParityRun()

    def unavailable(u: Unavailable) -> None:
        if u.installed:
            run.broken.setdefault(u.framework, u.reason)

    start = time.perf_counter()
    complete = False
    try:
        for mode in modes:
            run.records.extend(run_parity(frameworks=frameworks, mode=mode, cases=cases, impls=impls,
                                          on_unavailable=unavailable))
        complete = True
    finally:
        wall = time.perf_counter() - start
        if json_path is not None:
            doc = parity_doc(run.records, modes=modes, frameworks=frameworks, impls=impls, cases=cases,
                             wall_time_s=round(wall, 3), complete=complete)
            write_json(json_path, to_dict(doc))
        if not quiet and not complete:
            print(f"interrupted after {wall:.1f} s; {len(run.records)} records kept", file=sys.stderr)
    return run


def report_unavailable(records: list[LayerRecord], broken: dict[str, str], *, named: bool) -> bool:
    """Print every implementation that did not run; True when a framework the user named explicitly is installed
    but fails to import (the command then exits 1)."""
    for r in records:
        if r.case is None and isinstance(r, LayerSkip):
            print(f"skipped {r.framework}/{r.impl}: {r.reason}")
    if named and broken:
        for framework, reason in broken.items():
            print(f"ERROR {framework} was asked for but is installed and fails to import: {reason}", file=sys.stderr)
        return True
    return False


def explicitly_named(text: str | None) -> bool:
    """Whether --frameworks named frameworks (rather than defaulting to all of them)."""
    return text is not None and text.strip() != "all"


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
    result = run_modes(frameworks=frameworks, modes=modes, impls=impls, cases=cases, json_path=args.json)
    wall = time.perf_counter() - start
    records = result.records
    broken = report_unavailable(records, result.broken, named=explicitly_named(args.frameworks))
    for mode in modes:
        print(f"\n== {mode} ==")
        print(format_table([r for r in records if r.mode == mode]))
    failures = gate_failures(records)
    n_gated = len(gated(records))
    print(f"\n{n_gated - len(failures)} of {n_gated} gated comparisons pass; "
          f"{len(failures)} fail; wall time {wall:.1f} s" + (f"; records in {args.json}" if args.json else ""))
    for r in failures[:20]:
        where = f"{r.framework}/{r.impl} on {r.case} ({r.mode})"
        print(f"FAIL {describe_record(r, where)}" if isinstance(r, LayerComparison)
              else f"FAIL {where}: {r.reason}")
    return 1 if failures or broken else 0
