"""`bnparity report RUN_DIR`: report.html, report.md, figures and summary.json from a run's records alone."""

from __future__ import annotations

import argparse
from pathlib import Path

from bnparity.suites.errors import UserError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="a directory written by `bnparity run` "
                        "(or by `bnparity train`)")
    parser.add_argument("--out", type=Path, help="where to write the report (default: RUN_DIR)")
    parser.add_argument("--porting", type=Path, metavar="PATH",
                        help="also write the porting guide (Markdown) here, from RUN_DIR/parity.json "
                        "(and RUN_DIR/pitfalls.json when present)")


def run(args: argparse.Namespace) -> int:
    from .build import build_report

    if args.out is not None and args.out.exists() and not args.out.is_dir():
        raise UserError(f"--out must be a directory (new or existing). Received: {args.out}, an existing file")
    report = build_report(args.run_dir, out_dir=args.out)
    for verdict in report.summary["verdicts"]:
        print(f"- {verdict}")
    print(f"\n{report.html}\n{report.markdown}\n{report.summary_json}")
    if args.porting is not None:
        from .porting import write_porting_guide

        parity = args.run_dir / "parity.json"
        if not parity.exists():
            raise UserError(f"--porting needs RUN_DIR/parity.json. Received: {args.run_dir}, which has none")
        def present(name: str) -> Path | None:
            path = args.run_dir / name
            return path if path.exists() else None

        write_porting_guide(parity_path=parity, out=args.porting, pitfalls_path=present("pitfalls.json"),
                            sync_parity_path=present("sync_parity.json"), dp_parity_path=present("dp_parity.json"))
        print(args.porting)
    if not report.summary["complete"]:
        print("the report is marked INCOMPLETE: " + "; ".join(p["part"] for p in report.summary["incomplete"]))
    return 0
