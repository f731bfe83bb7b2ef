"""`bnparity model-parity`: the same AlexNet in every framework, a per-parameter table, JSON, the exit code.

Exit code 0 when every gated comparison passes (skipped frameworks aside), 1 on any mismatch or crash,
2 for bad input.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from bnparity.frameworks.registry import parse_frameworks
from bnparity.suites.environment import environment
from bnparity.suites.errors import UserError
from bnparity.suites.records import write_json

from .harness import (
    BATCH,
    BN_MOMENTUM,
    DTYPES,
    PRESETS,
    SGD,
    VARIANTS,
    ParityConfig,
    configs,
    failures,
    run_model_parity,
)
from .summary import format_findings, format_table
from .tolerance import C_MODEL, depth_and_length, model_rtol

FORMAT = "bnparity-model-parity/1"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--preset", choices=PRESETS, default="cpu", help="the AlexNet preset (default: cpu)")
    parser.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated: bn,nobn (default: both)")
    parser.add_argument("--frameworks", help="comma-separated: torch,mxnet,jax (default: all)")
    parser.add_argument("--dtypes", default=",".join(DTYPES), help="comma-separated: float32,float64 (default: both)")
    parser.add_argument("--batch", type=int, help=f"batch size, a power of two (default: {BATCH})")
    parser.add_argument("--seed", type=int, default=0, help="seed of the weights and data (default: 0)")
    parser.add_argument("--json", type=Path, help=f"write the records here (format {FORMAT})")


def _choices(text: str, allowed: tuple[str, ...], flag: str) -> tuple[str, ...]:
    names = tuple(dict.fromkeys(n.strip() for n in text.split(",") if n.strip()))
    unknown = [n for n in names if n not in allowed]
    if unknown or not names:
        raise UserError(f"--{flag} must be some of {','.join(allowed)}. Received: {text!r}")
    return names


def _meta(args: argparse.Namespace, cfgs: list[ParityConfig], frameworks: tuple[str, ...], result, wall: float,
          complete: bool) -> dict:
    spec, batch = cfgs[0].spec(), cfgs[0].batch
    depth, length = depth_and_length(spec, batch=batch)
    return {**environment(), "suite": "model-parity", "preset": args.preset, "frameworks": list(frameworks),
            "configs": [c.labels() | {"batch": c.batch, "seed": c.seed} for c in cfgs],
            "sgd": {dt: vars(sgd) for dt, sgd in SGD.items()}, "bn_momentum": BN_MOMENTUM,
            "tolerance": {"model": "|got - ref| <= atol + rtol*|ref|, rtol = u*C_MODEL*D*sqrt(K), atol = rtol*scale",
                          "C_MODEL": C_MODEL, "D": depth, "K": length,
                          "rtol": {dt: model_rtol(spec, dt, batch=batch) for dt in ("float32", "float64")}},
            "diagnostics": result.diagnostics if result else [],
            "seconds": {fw: round(s, 3) for fw, s in (result.seconds.items() if result else [])},
            "compile_counts": result.compile_counts if result else {},
            "wall_time_s": round(wall, 3), "complete": complete}


def run(args: argparse.Namespace) -> int:
    try:
        frameworks = parse_frameworks(args.frameworks)
    except ValueError as e:
        raise UserError(str(e)) from None
    variants = _choices(args.variants, VARIANTS, "variants")
    dtypes = _choices(args.dtypes, DTYPES, "dtypes")
    if args.batch is not None and (args.batch < 2 or args.batch & (args.batch - 1)):
        raise UserError(f"--batch must be a power of two >= 2 (MXNet rescales by 1/batch in float32). "
                        f"Received: {args.batch}")
    cfgs = configs(preset=args.preset, variants=variants, dtypes=dtypes, batch=args.batch, seed=args.seed)
    start, result, complete = time.perf_counter(), None, False
    try:
        result = run_model_parity(configs=cfgs, frameworks=frameworks,
                                  on_config=lambda c: print(f"  {c.preset} {c.variant} dropout={c.dropout} {c.dtype}",
                                                            file=sys.stderr, flush=True))
        complete = True
    finally:
        wall = time.perf_counter() - start
        if args.json is not None:
            write_json(args.json, {"format": FORMAT, "meta": _meta(args, cfgs, frameworks, result, wall, complete),
                                   "records": result.records if result else []})
    records = result.records
    print(format_table(records))
    findings = format_findings(records)
    if findings:
        print("\nNot gated (float32 gradient-derived quantities; raw running variance):")
        print(findings)
    for r in records:
        if r.get("status") == "skipped":
            print(f"skipped {r['framework']}: {r['reason']}")
            break
    print("\nseconds per framework: " + ", ".join(f"{fw} {s:.1f}" for fw, s in result.seconds.items())
          + f"; wall {wall:.1f} s")
    bad = failures(records)
    for r in bad[:20]:
        where = f"{r['framework']} {r['dtype']} {r['variant']} dropout={r['dropout']}"
        print(f"FAIL {where} {r.get('kind', '')} {r.get('quantity', '')} vs {r.get('against', '')}: "
              f"{r.get('reason') or 'max_abs_err ' + format(r['max_abs_err'] or float('inf'), '.3g')}")
    print(f"\n{len(bad)} gated mismatches" if bad else "\nall gated comparisons pass")
    return 1 if bad else 0
