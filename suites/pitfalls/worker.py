"""The worker process of one share of the tutorial MLP experiment: `python -m bnparity.suites.pitfalls.worker JOB`.

Started by tutorial.py in its own process group, with a framework's own environment (its Keras backend, say) or,
for a reference training, this one; one compute thread. JOB: {"training", "framework", "data_dir", "verify",
"config"} (tutorial.job). Each record is one line, `MARK` then its JSON, flushed as soon as it exists.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from bnparity.suites.data.fashion_mnist import load_fashion_mnist
from bnparity.suites.schema import to_dict

from .tutorial import MARK, Config, Piece, run_piece


def main(argv: list[str]) -> int:
    job = json.loads(argv[0])
    data = load_fashion_mnist(Path(job["data_dir"]), allow_download=False, verify=bool(job["verify"]))
    piece = Piece(job["training"], job["framework"])
    for record in run_piece(piece, data, Config(**job["config"])):
        sys.stdout.write(MARK + json.dumps(to_dict(record)) + "\n")
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
