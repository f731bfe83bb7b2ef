"""`bnparity model-parity`: the same AlexNet in every framework, a per-parameter table, JSON, the exit code.

With --device gpu (or cuda) every framework's trainer runs on the GPU (the float64 reference stays in NumPy); each
framework is asked first whether it sees one: one that does not is left out with its reason, and when none does (or
one named in --frameworks does not) the command stops at once with that one line and exit code 2.

Exit code 0 when every gated comparison passes (skipped frameworks aside), 1 on any mismatch or crash, or when
a framework named in --frameworks is installed but fails to import (after running the others), 2 for bad input.
"""

from __future__ import annotations

import argparse
import sys
import time

from bnparity.frameworks.registry import frameworks_help, named_frameworks, parse_frameworks
from bnparity.frameworks.training import DEVICES, broken_frameworks, canonical_device
from bnparity.suites.devices import on_device
from bnparity.suites.environment import environment
from bnparity.suites.errors import UserError
from bnparity.suites.output import JSON_TARGETS, output_file, write_json
from bnparity.suites.schema import (
    MODEL_PARITY,
    MODEL_PARITY_VERSION,
    Environment,
    ModelConfigLabel,
    ModelNotRun,
    ModelParityDoc,
    ModelParityMeta,
    ModelTolerance,
    SGDRecord,
    format_string,
    from_dict,
    to_dict,
)

from .harness import (
    BATCH,
    BN_MOMENTUM,
    DTYPES,
    PRESETS,
    SGD,
    VARIANTS,
    ParityConfig,
    ParityResult,
    configs,
    failures,
    run_model_parity,
)
from .summary import format_findings, format_table
from .tolerance import C_MODEL, depth_and_length, model_rtol

FORMAT = format_string(MODEL_PARITY, MODEL_PARITY_VERSION)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--preset", choices=PRESETS, default="cpu", help="the AlexNet preset (default: cpu)")
    parser.add_argument("--variants", default=",".join(VARIANTS),
                        help=f"comma-separated: some of {','.join(VARIANTS)} (default: all)")
    parser.add_argument("--frameworks", help=frameworks_help())
    parser.add_argument("--dtypes", default=",".join(DTYPES), help="comma-separated: float32,float64 (default: both)")
    parser.add_argument("--batch", type=int, help=f"batch size, a power of two (default: {BATCH})")
    parser.add_argument("--seed", type=int, default=0, help="seed of the weights and data (default: 0)")
    parser.add_argument("--device", choices=DEVICES, default="cpu",
                        help="where every framework's trainer runs; cuda is another name of gpu (default: cpu)")
    parser.add_argument("--json", type=output_file, metavar="PATH",
                        help=f"write the records here (format {FORMAT})" + JSON_TARGETS)


def _choices(text: str, allowed: tuple[str, ...], flag: str) -> tuple[str, ...]:
    names = tuple(dict.fromkeys(n.strip() for n in text.split(",") if n.strip()))
    unknown = [n for n in names if n not in allowed]
    if unknown or not names:
        raise UserError(f"--{flag} must be some of {','.join(allowed)}. Received: {text!r}")
    return names


def _meta(args: argparse.Namespace, cfgs: list[ParityConfig], frameworks: tuple[str, ...],
          result: ParityResult | None, wall: float, complete: bool) -> ModelParityMeta:
    spec, batch = cfgs[0].spec(), cfgs[0].batch
    depth, length = depth_and_length(spec, batch=batch)
    tolerance = ModelTolerance(
        model="|got - ref| <= atol + rtol*|ref|, rtol = u*c_model*depth*sqrt(length), atol = rtol*scale",
        c_model=C_MODEL, depth=depth, length=length,
        rtol={dt: model_rtol(spec, dt, batch=batch) for dt in ("float32", "float64")})
    return ModelParityMeta(
        environment=from_dict(Environment, environment(), where="environment"), preset=args.preset,
        frameworks=frameworks, anchor=result.anchor if result else None,
        configs=tuple(ModelConfigLabel(**c.labels(), batch=c.batch, seed=c.seed) for c in cfgs),
        sgd={dt: SGDRecord(lr=sgd.lr, momentum=sgd.momentum, weight_decay=sgd.weight_decay) for dt, sgd in SGD.items()},
        bn_momentum=dict(BN_MOMENTUM), tolerance=tolerance,
        diagnostics=tuple(result.diagnostics) if result else (),
        seconds={fw: round(s, 3) for fw, s in (result.seconds.items() if result else [])},
        compile_counts=dict(result.compile_counts) if result else {}, wall_time_s=round(wall, 3), complete=complete)



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
    frameworks = on_device(frameworks, args.device, args.frameworks)
    start, result, complete = time.perf_counter(), None, False
    try:
        result = run_model_parity(configs=cfgs, frameworks=frameworks,
                                  on_config=lambda c: print(f"  {c.preset} {c.variant} dropout={c.dropout} {c.dtype}",
                                                            file=sys.stderr, flush=True),
                                  device=canonical_device(args.device))
        complete = True
    finally:
        wall = time.perf_counter() - start
        if args.json is not None:
            doc = ModelParityDoc(meta=_meta(args, cfgs, frameworks, result, wall, complete),
                                 records=tuple(result.records) if result else ())
            write_json(args.json, to_dict(doc))
    records = result.records
    print(format_table(records))
    findings = format_findings(records)
    if findings:
        print("\nNot gated (float32 gradient-derived quantities; raw running variance):")
        print(findings)
    skipped = {r.framework: r.reason for r in records if isinstance(r, ModelNotRun) and r.status == "skipped"}
    for fw, reason in skipped.items():
        print(f"skipped {fw}: {reason}")
    broken = broken_frameworks(fw for fw in named_frameworks(args.frameworks) if fw in skipped)
    for reason in broken.values():
        print(f"bnparity model-parity: {reason} (asked for with --frameworks)", file=sys.stderr)
    print("\nseconds per framework: " + ", ".join(f"{fw} {s:.1f}" for fw, s in result.seconds.items())
          + f"; wall {wall:.1f} s")
    bad = failures(records)
    for r in bad[:20]:
        where = f"{r.framework} {r.dtype} {r.variant} dropout={r.dropout}"
        if isinstance(r, ModelNotRun):
            print(f"FAIL {where}: {r.reason}")
        else:
            err = "inf or nan" if r.max_abs_err is None else format(r.max_abs_err, ".3g")
            print(f"FAIL {where} {r.kind} {r.quantity} vs {r.against}: max_abs_err {err}")
    print(f"\n{len(bad)} gated mismatches" if bad else "\nall gated comparisons pass")
    return 1 if bad or broken else 0
