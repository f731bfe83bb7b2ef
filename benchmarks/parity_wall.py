"""Wall time of `bnparity parity`: every normalization, every installed framework, matched and defaults modes.

The budget is under 30 s on the reference machine (2 cores). Prints, per repeat, the process's wall time (imports
included), the suite's own `meta.wall_time_s`, and the number of gated comparisons; with --cold the JAX compilation
cache is switched off (BNPARITY_JAX_CACHE=0), as on a fresh machine. No assertion: a benchmark prints figures.

    .venv/bin/python benchmarks/parity_wall.py [--repeats 2] [--jobs 2] [--cold] [--no-hard]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--cold", action="store_true", help="no JAX compilation cache (BNPARITY_JAX_CACHE=0)")
    parser.add_argument("--no-hard", action="store_true", help="the gated cases only")
    args = parser.parse_args()
    env = {**os.environ, **({"BNPARITY_JAX_CACHE": "0"} if args.cold else {})}
    bnparity = Path(sys.executable).with_name("bnparity")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "parity.json"
        for k in range(args.repeats):
            command = [str(bnparity), "parity", "--jobs", str(args.jobs), "--json", str(out),
                       *(["--no-hard"] if args.no_hard else [])]
            start = time.perf_counter()
            proc = subprocess.run(command, env=env, capture_output=True, text=True)
            wall = time.perf_counter() - start
            doc = json.loads(out.read_text())
            gated = [r for r in doc["records"] if r.get("gate") and r["status"] in ("ok", "error")]
            failed = sum(not r["passed"] for r in gated)
            suite = doc["meta"]["wall_time_s"]
            print(f"repeat {k + 1}: {wall:.1f} s wall (suite {suite:.1f} s), exit {proc.returncode}, "
                  f"{len(gated) - failed}/{len(gated)} gated comparisons pass, normalizations "
                  f"{','.join(doc['meta']['normalizations'])}, frameworks {','.join(doc['meta']['frameworks'])}"
                  f"{' (JAX cache off)' if args.cold else ''}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
