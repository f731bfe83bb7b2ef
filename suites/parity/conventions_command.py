"""`bnparity conventions`: the conventions registry as a table (no framework is imported)."""

from __future__ import annotations

import argparse
import json

from bnparity.frameworks.conventions import (
    Convention,
    LayerConvention,
    all_conventions,
    all_layer_conventions,
    layer_conventions,
)
from bnparity.frameworks.registry import display_name
from bnparity.reference.normalization import parse_normalizations
from bnparity.suites.errors import UserError
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
    parser.add_argument("--norm", help="only these normalizations, comma-separated: batch,layer,group,instance,rms "
                                       "(default: all)")
    parser.add_argument("--json", action="store_true",
                        help="print the registry as JSON instead (the conventions.json document a run records)")
    parser.add_argument("--citations", action="store_true", help="also print where each field is defined")


def _print_sources(row: Convention | LayerConvention) -> None:
    for name, where in row.citations.items():
        print(f"  [{name}] {where}")
    for name, tests in row.proofs.items():
        print(f"  [{name}] proved by {', '.join(tests)}")


def _print_batchnorm(table: tuple[Convention, ...], *, citations: bool) -> None:
    for row in table:
        print(f"== {row.framework}: batchnorm ==")
        print(f"  {'framework':<31} {display_name(row.framework)}")
        for label, attr in _ROWS:
            print(f"  {label:<31} {getattr(row, attr)}")
        if citations:
            _print_sources(row)
    print("momentum weighs 'new': running = (1 − m)·running + m·batch;  'old': running = m·running + (1 − m)·batch")


def _print_layer(row: LayerConvention, *, citations: bool) -> None:
    print(f"== {row.framework}: {row.normalization} ==")
    print(f"  {'framework':<31} {display_name(row.framework)}")
    print(f"  {'layer':<31} {row.layer}")
    eps = "machine epsilon of the computation dtype" if row.eps_rule == "machine-epsilon" else None
    for name, value in row.defaults.items():
        print(f"  {name + ' (default)':<31} {eps if name == 'eps' and eps else value}")
    for name, fact in row.facts.items():
        print(f"  {name:<31} {fact}")
    if row.constructor:
        print(f"  {'configured':<31} {row.constructor}")
    if citations:
        _print_sources(row)


def run(args: argparse.Namespace) -> int:
    try:
        names = parse_normalizations(args.norm, option="--norm")
    except ValueError as e:
        raise UserError(str(e)) from None
    table = all_conventions() if Convention.normalization in names else ()
    layers = tuple(r for r in all_layer_conventions() if r.normalization in names)
    if args.json:
        print(json.dumps(to_dict(ConventionsDoc(conventions=table, layers=layers)), indent=1, ensure_ascii=False))
        return 0
    if table:
        _print_batchnorm(table, citations=args.citations)
    for name in names:
        for row in layer_conventions(name) if name != Convention.normalization else ():
            _print_layer(row, citations=args.citations)
    return 0
