"""The worker process of one framework's cross-replica cases: `python -m bnparity.suites.sync_parity.worker JOB`.

The command (command.py) starts one worker per framework and replica count, with the environment the framework's
engine needs set before the framework starts (frameworks/replicas.py: replica_environment), in its own process
group so that a hung engine is killed whole. JOB is a JSON object {"framework", "replicas", "impls", "cases"}
(case names of suites/sync_parity/cases.py). Each record is printed as one line, `MARK` then its JSON, and flushed
as soon as it exists: what a killed worker computed is kept. Anything else a framework prints is ignored.
"""

from __future__ import annotations

import json
import sys

from bnparity.suites.schema import to_dict

from .cases import sync_cases
from .harness import run_framework

MARK = "bnparity-sync-record "


def main(argv: list[str]) -> int:
    job = json.loads(argv[0])
    by_name = {c.name: c for c in sync_cases(int(job["replicas"]))}
    cases = [by_name[name] for name in job["cases"]]
    for record in run_framework(job["framework"], cases, tuple(job["impls"])):
        sys.stdout.write(MARK + json.dumps(to_dict(record)) + "\n")
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
