"""Wall time of `bnparity sync-parity` (every installed framework, R = 2 and 4) and `bnparity dp-parity`.

The budget of sync-parity is under 60 s on the reference machine (2 cores). Prints, per repeat, the process's wall
time (imports and engine start included), the suite's own `meta.wall_time_s` and the gated comparisons; with --cold
the JAX compilation cache is switched off (BNPARITY_JAX_CACHE=0), as on a fresh machine; --dp also times the
data-parallel step parity. No assertion: a benchmark prints figures.

    .venv/bin/python benchmarks/sync_parity_wall.py [--repeats 2] [--jobs 2] [--cold] [--dp]
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


def _time(command: list[str], out: Path, env: dict[str, str]) -> tuple[float, int, dict]:
    start = time.perf_counter()
    proc = subprocess.run(command, env=env, capture_output=True, text=True)
    return time.perf_counter() - start, proc.returncode, json.loads(out.read_text())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--cold", action="store_true", help="no JAX compilation cache (BNPARITY_JAX_CACHE=0)")
    parser.add_argument("--dp", action="store_true", help="also time bnparity dp-parity")
    args = parser.parse_args()
    env = {**os.environ, **({"BNPARITY_JAX_CACHE": "0"} if args.cold else {})}
    bnparity = str(Path(sys.executable).with_name("bnparity"))
    cold = " (JAX cache off)" if args.cold else ""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "records.json"
        for k in range(args.repeats):
            wall, code, doc = _time([bnparity, "sync-parity", "--jobs", str(args.jobs), "--json", str(out)], out, env)
            gated = [r for r in doc["records"] if r.get("gate") and r["status"] in ("ok", "error")]
            failed = sum(not r["passed"] for r in gated)
            print(f"sync-parity repeat {k + 1}: {wall:.1f} s wall (suite {doc['meta']['wall_time_s']:.1f} s), exit "
                  f"{code}, {len(gated) - failed}/{len(gated)} gated comparisons pass, frameworks "
                  f"{','.join(doc['meta']['frameworks'])}{cold}")
            if args.dp:
                wall, code, doc = _time([bnparity, "dp-parity", "--jobs", str(args.jobs), "--json", str(out)], out,
                                        env)
                gated = [r for r in doc["records"] if r.get("gate")]
                failed = sum(r.get("passed") is False for r in gated)
                print(f"dp-parity repeat {k + 1}: {wall:.1f} s wall (suite {doc['meta']['wall_time_s']:.1f} s), "
                      f"exit {code}, {len(gated) - failed}/{len(gated)} gated comparisons pass{cold}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
