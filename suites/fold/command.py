"""`bnparity fold [--frameworks ...] [--run RUN_DIR] [--json PATH]`: folding eval-mode BatchNorm, verified.

The layer cases (suites/fold/cases.py) always: each framework's builtin fold (where it has one) and bnparity's in its
own ops, against the float64 unfolded reference with the derived bound (suites/fold/tolerance.py). With --run, also
the run's trained BN AlexNets folded in each framework (suites/fold/alexnet.py). Records go to --json, by default
RUN_DIR/fold.json when --run is given (format bnparity-fold/1); without either they are only printed. Exit code 1
when a comparison fails, when nothing could be compared, or when a framework named in --frameworks is installed but
fails to import; 2 for bad input.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

from bnparity.frameworks.registry import display_name, frameworks_help, named_frameworks, parse_frameworks, sort_key
from bnparity.suites.environment import environment
from bnparity.suites.errors import UserError
from bnparity.suites.output import JSON_TARGETS, output_file
from bnparity.suites.records import write_json
from bnparity.suites.schema import Environment, from_dict, to_dict

from .records import FILENAME, FORMAT, AlexNetFoldRecord, AlexNetRecord, FoldComparison, FoldDoc, FoldMeta, FoldRecord
from .tolerance import C

TEST_IMAGES = 1000


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--frameworks", help=frameworks_help())
    parser.add_argument("--run", type=Path, metavar="RUN_DIR",
                        help="also fold the trained BN AlexNets of this `bnparity run` (or `bnparity train`) directory")
    parser.add_argument("--test-images", type=int, default=TEST_IMAGES,
                        help=f"with --run: evaluate on the first N test images (default: {TEST_IMAGES})")
    parser.add_argument("--reference-images", type=int, default=250,
                        help="with --run: the float64 reference evaluates the first N of them (default: 250)")
    parser.add_argument("--json", type=output_file, metavar="PATH",
                        help=f"write the records here (format {FORMAT}; default: RUN_DIR/{FILENAME} with --run)"
                             + JSON_TARGETS)


def format_table(records: list[FoldRecord]) -> str:
    """One line per framework, impl and case class: the worst ratio, the cases passed, the skips."""
    rows: dict[tuple[str, str, str], list[FoldComparison]] = {}
    skipped: dict[tuple[str, str, str], int] = {}
    lines = [f"{'framework':<12} {'impl':<8} {'case':<16} {'pass':>7} {'skip':>5} {'worst err/allowed':>18} "
             f"{'max |s|':>8}"]
    for r in records:
        cls = r.case_class if isinstance(r, FoldComparison) else (r.case or "-").split("/", 1)[0]
        key = (r.framework, r.impl, cls)
        if isinstance(r, FoldComparison):
            rows.setdefault(key, []).append(r)
        else:
            skipped[key] = skipped.get(key, 0) + 1
    for key in sorted(set(rows) | set(skipped), key=lambda k: (sort_key(k[0]), k[1], k[2])):
        found = rows.get(key, [])
        worst = max((c.worst_ratio for c in found), default=None)
        scale = max((c.max_scale for c in found), default=None)
        lines.append(f"{display_name(key[0]):<12} {key[1]:<8} {key[2]:<16} "
                     f"{sum(c.passed for c in found):>3}/{len(found):<3} {skipped.get(key, 0):>5} "
                     f"{'-' if worst is None else f'{worst:.3f}':>18} {'-' if scale is None else f'{scale:.1f}':>8}")
    return "\n".join(lines)


def format_alexnet(records: list[AlexNetRecord]) -> str:
    lines = []
    for r in records:
        if isinstance(r, AlexNetFoldRecord):
            lines.append(f"{display_name(r.framework)} ({r.impl}) {r.run} epoch {r.epoch}, {r.test_images} test "
                         f"images, {r.dtype}: max |folded − unfolded| logit {r.max_logit_error:.2g} (allowed "
                         f"{r.allowed_logit_error:.2g}, logits up to {r.logit_scale:.3g}); accuracy unfolded "
                         f"{r.accuracy_unfolded:.4f}, folded {r.accuracy_folded:.4f}, {r.argmax_changes} changed "
                         f"predictions; folded weights {r.max_weight_ratio:.3f} of allowed "
                         f"{'PASS' if r.passed else 'FAIL'}")
        else:
            lines.append(f"{display_name(r.framework)} AlexNet {r.status}: {r.reason}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from .alexnet import load_run_data, run_alexnet
    from .cases import fold_cases
    from .harness import run_frameworks

    try:
        frameworks = tuple(sorted(parse_frameworks(args.frameworks), key=sort_key))
    except ValueError as e:
        raise UserError(str(e)) from None
    if args.test_images < 1 or args.reference_images < 1:
        raise UserError(f"--test-images and --reference-images must be >= 1. Received: {args.test_images}, "
                        f"{args.reference_images}")
    data = None
    if args.run is not None:
        if not Path(args.run).is_dir():
            raise UserError(f"--run must be a bnparity run directory. Received: {args.run}, which "
                            f"{'is not a directory' if Path(args.run).exists() else 'does not exist'}")
        data = load_run_data(args.run, test_images=args.test_images)  # UserError when it holds no training run
    json_path = args.json or (Path(args.run) / FILENAME if args.run is not None else None)
    start = time.perf_counter()
    meta = FoldMeta(environment=from_dict(Environment, environment(), where="environment"), frameworks=frameworks,
                    run_dir=None if args.run is None else str(args.run),
                    test_images=None if data is None else len(data.labels), complete=False, tolerance_c=C)
    records: list[FoldRecord] = []
    networks: list[AlexNetRecord] = []

    def save(complete: bool) -> None:
        if json_path is not None:
            done = dataclasses.replace(meta, complete=complete, wall_time_s=round(time.perf_counter() - start, 3))
            write_json(json_path, to_dict(FoldDoc(meta=done, records=tuple(records), alexnet=tuple(networks))))

    try:
        records = run_frameworks(frameworks, fold_cases())
        print(format_table(records))
        if data is not None:
            save(False)
            networks = run_alexnet(frameworks, data, reference_images=args.reference_images)
            print()
            print(format_alexnet(networks))
    finally:
        save(complete=bool(records) and (data is None or bool(networks)))
    comparisons = [r for r in records if isinstance(r, FoldComparison)]
    nets = [r for r in networks if isinstance(r, AlexNetFoldRecord)]
    named = set(named_frameworks(args.frameworks))
    broken = [r for r in (*records, *networks) if r.status == "error" and r.framework in named and r.impl == "-"]
    for r in broken:
        print(f"ERROR {r.framework} was asked for but is installed and fails to import: {r.reason}", file=sys.stderr)
    if not comparisons and not nets:
        print("nothing was compared: no framework could fold here (the skips above say why)", file=sys.stderr)
        return 1
    failures = [r for r in comparisons if not r.passed] + [r for r in nets if not r.passed]
    errors = [r for r in (*records, *networks) if r.status == "error"]
    print(f"\n{len(comparisons) - sum(not c.passed for c in comparisons)} of {len(comparisons)} layer cases pass"
          + (f"; {len(nets) - sum(not n.passed for n in nets)} of {len(nets)} AlexNet folds pass" if data else "")
          + f"; wall time {time.perf_counter() - start:.1f} s" + (f"; records in {json_path}" if json_path else ""))
    for r in failures[:20]:
        print(f"FAIL {r.framework}/{r.impl} {getattr(r, 'case', getattr(r, 'run', ''))}")
    for r in errors[:20]:
        print(f"ERROR {r.framework}/{r.impl} {r.case}: {r.reason}")
    return 1 if failures or broken or errors else 0
