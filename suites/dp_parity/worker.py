"""The worker process of one framework's data-parallel step parity: `python -m bnparity.suites.dp_parity.worker JOB`.

Started by command.py in its own process group with the engine's environment for the largest replica count
(see suites/sync_parity/worker.py for the protocol). JOB: {"framework", "replicas", "bn_sync", "dtypes", "preset",
"batch"}. Each record is one line, `MARK` then its JSON, flushed as soon as it exists.
"""

from __future__ import annotations

import json
import sys

from bnparity.suites.schema import to_dict

from .harness import run_framework

MARK = "bnparity-dp-record "


def main(argv: list[str]) -> int:
    job = json.loads(argv[0])
    for record in run_framework(job["framework"], replicas=tuple(job["replicas"]), bn_sync=tuple(job["bn_sync"]),
                                dtypes=tuple(job["dtypes"]), preset=job["preset"], batch=int(job["batch"])):
        sys.stdout.write(MARK + json.dumps(to_dict(record)) + "\n")
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
