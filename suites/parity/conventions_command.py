"""`bnparity conventions`: the conventions registry as a table (no framework is imported)."""

from __future__ import annotations

import argparse
import json

from bnparity.frameworks.conventions import all_conventions
from bnparity.frameworks.registry import display_name
from bnparity.suites.schema import ConventionsDoc, to_dict

_ROWS = [
    ("layer", "layer"),
    ("momentum (default)", "momentum"),
    ("momentum weighs", "momentum_weighs"),
    ("weight of the new batch", "new_weight"),
    ("eps (default)", "eps"),
    ("running variance stored", "running_var"),
    ("running variance configurable", "running_var_configurable"),
    ("channel axis (default)", "channel_axis"),
    ("variance algorithm (default)", "variance_algorithm"),
    ("train / eval switch", "train_eval_switch"),
    ("turning γ off", "scale_switch"),
    ("running statistics written", "running_stats_written"),
    ("a 1-D batch of one", "batch_of_one"),
    ("configured (template)", "constructor"),
]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true",
                        help="print the registry as JSON instead (the conventions.json document a run records)")
    parser.add_argument("--citations", action="store_true", help="also print where each field is defined")


def run(args: argparse.Namespace) -> int:
    table = all_conventions()
    if args.json:
        print(json.dumps(to_dict(ConventionsDoc(conventions=table)), indent=1, ensure_ascii=False))
        return 0
    for convention in table:
        print(f"== {convention.framework} ==")
        print(f"  {'framework':<31} {display_name(convention.framework)}")
        for label, attr in _ROWS:
            print(f"  {label:<31} {getattr(convention, attr)}")
        if args.citations:
            for field, where in convention.citations.items():
                print(f"  [{field}] {where}")
            for field, tests in convention.proofs.items():
                print(f"  [{field}] proved by {', '.join(tests)}")
    print("momentum weighs 'new': running = (1 − m)·running + m·batch;  'old': running = m·running + (1 − m)·batch")
    return 0
