"""`bnparity parity`: the layer-parity suite, a compact table, a JSON record file, the exit code.

Exit 1 when a gated comparison fails, when nothing could be compared (no framework ran a gated case: a gate that
passes on nothing proves nothing), or when a framework named in --frameworks is installed but fails to import (the
others still run); 2 for bad input.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

from bnparity.frameworks.registry import (
    IMPLS,
    Unavailable,
    baseline,
    descriptor,
    framework_environment,
    frameworks_help,
    named_frameworks,
    parse_frameworks,
    sort_key,
)
from bnparity.reference.normalization import parse_normalizations, short_name
from bnparity.suites.convergence.runner import thread_env
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

from .cases import ParityCase, case_normalizations, hard_cases, standard_cases
from .compare import describe_record
from .harness import MODES, run_parity
from .summary import format_table, gate_failures, gated

FORMAT = PARITY_FORMAT


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--frameworks", help=frameworks_help())
    parser.add_argument("--norms", help="comma-separated, some of "
                        f"{','.join(short_name(n) for n in case_normalizations())} (default: all)")
    parser.add_argument("--mode", choices=MODES + ("both",), default="both",
                        help="matched semantics, each framework's defaults, or both (default)")
    parser.add_argument("--impls", default=",".join(IMPLS), help="builtin,scratch (default: both)")
    parser.add_argument("--no-hard", action="store_true", help="skip the hard-input findings")
    parser.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1),
                        help="worker processes, one per framework × normalization at a time (default: "
                             "min(2, CPUs)); 1 runs everything in this process")
    parser.add_argument("--cases", help="run only cases whose name contains one of these comma-separated words")
    parser.add_argument("--json", type=output_file, metavar="PATH",
                        help=f"write the records here (format {FORMAT})" + JSON_TARGETS)


def select_cases(*, hard: bool, pattern: str | None, normalizations: tuple[str, ...] | None = None) -> list[ParityCase]:
    """The cases of the given normalizations (default: all), standard then hard, filtered by name."""
    cases = [c for name in normalizations or case_normalizations()
             for c in standard_cases([name]) + (hard_cases([name]) if hard else [])]
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
                          gate=case.gate, note=case.note, normalization=case.normalization)


def parity_doc(records: list[LayerRecord], *, modes: tuple[str, ...], frameworks: tuple[str, ...],
               impls: tuple[str, ...], cases: list[ParityCase], wall_time_s: float | None, complete: bool,
               input_path: Path | None = None) -> ParityDoc:
    """The parity.json document of a run (the environment is this process's)."""
    meta = ParityMeta(environment=from_dict(Environment, environment(), where="environment"), modes=modes,
                      frameworks=frameworks, impls=impls, baseline=baseline().name, wall_time_s=wall_time_s,
                      complete=complete, cases=tuple(case_info(c) for c in cases),
                      input=None if input_path is None else str(input_path),
                      normalizations=tuple(dict.fromkeys(c.normalization for c in cases)))
    return ParityDoc(meta=meta, records=tuple(records))


def _run_part(frameworks: tuple[str, ...], modes: tuple[str, ...], impls: tuple[str, ...],
              cases: list[ParityCase]) -> ParityRun:
    """Every mode of `cases` through `frameworks` (in this process)."""
    part = ParityRun()

    def unavailable(u: Unavailable) -> None:
        if u.installed:
            part.broken.setdefault(u.framework, u.reason)

    for mode in modes:
        part.records.extend(run_parity(frameworks=frameworks, mode=mode, cases=cases, impls=impls,
                                       on_unavailable=unavailable))
    return part


def _init_worker(environment: dict[str, str]) -> None:
    """A worker computes on one thread (the workers, not each framework's thread pool, share the cores), with the
    variables its frameworks read at import (registry.framework_environment: a backend choice)."""
    os.environ.update(environment)
    os.environ.update(thread_env(1, dict(os.environ)))


def _by_environment(parts: list[_Part]) -> list[tuple[dict[str, str], list[_Part]]]:
    """The parts grouped by the environment their framework needs, in order of first appearance: the frameworks
    of one group can share a worker process, two variants of one library on different backends cannot."""
    groups: dict[tuple[tuple[str, str], ...], list[_Part]] = {}
    for part in parts:
        env = {k: v for fw in part.frameworks for k, v in framework_environment(fw).items()}
        groups.setdefault(tuple(sorted(env.items())), []).append(part)
    return [(dict(key), members) for key, members in groups.items()]


@dataclass(frozen=True)
class _Part:
    """An independent piece of a run: one framework, one normalization, one mode."""

    frameworks: tuple[str, ...]
    modes: tuple[str, ...]
    cases: list[ParityCase]

    @property
    def cost(self) -> float:
        """Its expected wall time, in units of one eager implementation on one case."""
        impls = 1 if self.modes == ("defaults",) else 2  # defaults mode runs the builtin layers only
        return len(self.cases) * impls * sum(descriptor(f).parity_cost for f in self.frameworks)


def _parts(frameworks: tuple[str, ...], modes: tuple[str, ...], cases: list[ParityCase]) -> list[_Part]:
    """The pieces of a run, most expensive first (so that the last to finish are small ones)."""
    by_norm: dict[str, list[ParityCase]] = {}
    for case in cases:
        by_norm.setdefault(case.normalization, []).append(case)
    parts = [_Part((fw,), (mode,), mine) for fw in frameworks for mine in by_norm.values() for mode in modes]
    return sorted(parts, key=lambda p: -p.cost)


def _record_order(modes: tuple[str, ...], cases: list[ParityCase]):  # noqa: ANN202 (a sort key)
    """Records in the order a single process writes them: by mode, then case (skips of whole implementations
    first), then framework and implementation; a part's own order otherwise."""
    case_index = {c.name: i for i, c in enumerate(cases)}

    def key(item: tuple[int, LayerRecord]) -> tuple:
        n, r = item
        return (modes.index(r.mode), -1 if r.case is None else case_index.get(r.case, len(cases)),
                sort_key(r.framework), IMPLS.index(r.impl) if r.impl in IMPLS else len(IMPLS), n)
    return key


def run_modes(*, frameworks: tuple[str, ...], modes: tuple[str, ...], impls: tuple[str, ...],
              cases: list[ParityCase], json_path: Path | None, quiet: bool = False, jobs: int = 1) -> ParityRun:
    """Run the suite, saving the records even when interrupted (meta.complete says which).

    With jobs > 1 the pieces (one per framework, normalization and mode) run in that many worker processes, one compute
    thread each; the same records in the same order as with jobs = 1 (a multi-threaded reduction may round differently).
    """
    run = ParityRun()
    start = time.perf_counter()
    complete = False
    done: list[tuple[int, LayerRecord]] = []
    try:
        parts = _parts(frameworks, modes, cases)
        if jobs <= 1 or len(parts) <= 1:
            for piece in parts:
                part = _run_part(piece.frameworks, piece.modes, impls, piece.cases)
                done.extend(enumerate(part.records, start=len(done)))
                for fw, reason in part.broken.items():
                    run.broken.setdefault(fw, reason)
        else:
            context = multiprocessing.get_context("spawn")  # no framework state is inherited
            for environment, group in _by_environment(parts):
                with ProcessPoolExecutor(max_workers=min(jobs, len(group)), mp_context=context,
                                         initializer=_init_worker, initargs=(environment,)) as pool:
                    futures = [pool.submit(_run_part, p.frameworks, p.modes, impls, p.cases) for p in group]
                    for future in as_completed(futures):
                        part = future.result()
                        done.extend(enumerate(part.records, start=len(done)))
                        for fw, reason in part.broken.items():
                            run.broken.setdefault(fw, reason)
        complete = True
    finally:
        run.records = [r for _, r in sorted(done, key=_record_order(modes, cases))]
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
            print(f"skipped {r.framework}/{r.impl} {r.normalization}: {r.reason}")
    if named and broken:
        for framework, reason in broken.items():
            print(f"ERROR {framework} was asked for but is installed and fails to import: {reason}", file=sys.stderr)
        return True
    return False


def run(args: argparse.Namespace) -> int:
    try:
        frameworks = parse_frameworks(args.frameworks)
    except ValueError as e:
        raise UserError(str(e)) from None
    impls = tuple(i for i in args.impls.split(",") if i)
    if not impls or any(i not in IMPLS for i in impls):
        raise UserError(f"--impls takes some of {', '.join(IMPLS)}. Received: {args.impls!r}")
    modes = MODES if args.mode == "both" else (args.mode,)
    try:
        normalizations = parse_normalizations(args.norms)
    except ValueError as e:
        raise UserError(str(e)) from None
    missing = [n for n in normalizations if n not in case_normalizations()]
    if missing:
        raise UserError(f"no parity cases for {', '.join(missing)}")
    cases = select_cases(hard=not args.no_hard, pattern=args.cases, normalizations=normalizations)
    start = time.perf_counter()
    if args.jobs < 1:
        raise UserError(f"--jobs must be >= 1. Received: {args.jobs}")
    result = run_modes(frameworks=frameworks, modes=modes, impls=impls, cases=cases, json_path=args.json,
                       jobs=args.jobs)
    wall = time.perf_counter() - start
    records = result.records
    broken = report_unavailable(records, result.broken, named=bool(named_frameworks(args.frameworks)))
    for mode in modes:
        print(f"\n== {mode} ==")
        print(format_table([r for r in records if r.mode == mode]))
    failures = gate_failures(records)
    n_gated = len(gated(records))
    if n_gated == 0:
        print("nothing was compared: no framework could run a gated case here (the skips above say why)",
              file=sys.stderr)
        return 1
    print(f"\n{n_gated - len(failures)} of {n_gated} gated comparisons pass; "
          f"{len(failures)} fail; wall time {wall:.1f} s" + (f"; records in {args.json}" if args.json else ""))
    for r in failures[:20]:
        where = f"{r.framework}/{r.impl} on {r.case} ({r.mode})"
        print(f"FAIL {describe_record(r, where)}" if isinstance(r, LayerComparison)
              else f"FAIL {where}: {r.reason}")
    return 1 if failures or broken else 0
