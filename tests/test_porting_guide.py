"""The porting guide's shape: one conventions table, then per pair only what differs, each line with its fix and an
existing proving test; built from the registry and tests/data/legacy-parity-v1.json (no framework runs)."""

from __future__ import annotations

import dataclasses
import re
from collections import Counter
from pathlib import Path

import pytest

from bnparity.frameworks.conventions import all_conventions, all_layer_conventions, all_replica_conventions
from bnparity.frameworks.registry import display_name
from bnparity.reports.porting import CONVENTIONS_HEADING, guide, proof
from bnparity.reports.porting_facts import ProofRef, missing_tests
from bnparity.reports.porting_pairs import Side, pair_section, sides
from bnparity.seeds.facts import TUTORIAL_FAULTS
from bnparity.suites.records import read_json
from bnparity.suites.schema import load_parity

LEGACY = Path(__file__).resolve().parent / "data" / "legacy-parity-v1.json"
LINK = re.compile(r"\[`([\w.]+)::(\w+)`\]\(\.\./(tests/[\w./]+)\)")
PAIR = re.compile(r"^## .+ ↔ .+$")
NORMALIZATIONS = ("layernorm", "groupnorm", "instancenorm", "rmsnorm")


@pytest.fixture(scope="module")
def text() -> str:
    return guide(parity=load_parity(read_json(LEGACY)), conventions=all_conventions(),
                 layer_conventions=all_layer_conventions(), replica_conventions=all_replica_conventions())


def pair_sections(markdown: str) -> dict[str, list[str]]:
    """heading -> the lines of every '## A ↔ B' section."""
    sections: dict[str, list[str]] = {}
    current = None
    for line in markdown.splitlines():
        if line.startswith("## "):
            current = line if PAIR.match(line) else None
            if current:
                sections[current] = []
        elif current and line:
            sections[current].append(line)
    return sections


def difference_lines(lines: list[str]) -> list[str]:
    """The lines that state a difference (not 'Nothing differs', not the configured constructors, not a layer only
    one side has)."""
    return [line for line in lines if line.startswith("- **") and ", configured**" not in line
            and " has the layer; " not in line]


def refs(line: str) -> list[ProofRef]:
    return [ProofRef(target, name) for _, name, target in LINK.findall(line)]


def test_exactly_one_conventions_table_before_any_pair_section(text: str) -> None:
    lines = text.splitlines()
    first_pair = next(i for i, line in enumerate(lines) if PAIR.match(line))
    head = lines[:first_pair]
    assert CONVENTIONS_HEADING in head
    assert sum(line.startswith("|---") for line in head) == 1
    table = [line for line in head if line.startswith("|")]
    assert all(display_name(c.framework) in table[0] for c in all_conventions())
    for title in ("BatchNorm", "LayerNorm", "GroupNorm", "InstanceNorm", "RMSNorm"):
        assert any(line.startswith(f"| **{title}** |") for line in table), title


def test_every_framework_pair_has_a_section_and_no_long_line_repeats_across_them(text: str) -> None:
    sections = pair_sections(text)
    groups = sides(all_conventions(), all_layer_conventions())
    assert len(sections) == len(groups) * (len(groups) - 1) // 2 > 0
    counts = Counter(line for lines in sections.values() for line in lines if len(line) > 80)
    assert [line for line, n in counts.items() if n > 1] == []
    # the explanation common to every pair is said once, above the pairs
    assert text.count("r' = a + (r − a)·factor") == 1


def test_every_difference_line_links_an_existing_test(text: str) -> None:
    lines = [line for section in pair_sections(text).values() for line in difference_lines(section)]
    assert lines
    for line in lines:
        assert " — " in line and refs(line), line  # what differs — the fix, then its proof
    assert missing_tests([r for line in lines for r in refs(line)]) == []
    assert missing_tests(refs(text)) == [] and len(refs(text)) > 20


def _as(row, framework: str, **changes):  # noqa: ANN001, ANN202 (a Convention or LayerConvention)
    return dataclasses.replace(row, framework=framework, **changes)


def _side(bn, layers=()) -> Side:  # noqa: ANN001 (fabricated rows)
    return Side((bn,), tuple(layers))


def test_a_pair_whose_conventions_match_states_no_difference() -> None:
    first, second = (c.framework for c in all_conventions()[:2])
    row = all_conventions()[0]
    layers = [r for r in all_layer_conventions() if r.framework == first]
    a, b = _side(row, layers), _side(_as(row, second), [_as(r, second) for r in layers])
    lines = pair_section(a, b, cite=proof, normalizations=NORMALIZATIONS)
    assert difference_lines(lines[2:]) == []
    (nothing,) = lines[2:]
    assert nothing.startswith("- Nothing differs in BatchNorm, ")
    assert all(t in nothing for t in ("LayerNorm", "GroupNorm", "InstanceNorm", "RMSNorm"))
    # and the guide groups such frameworks into one side instead of writing a pair section for them
    assert [len(s.rows) for s in sides([a.bn, b.bn], [*a.layers, *b.layers])] == [2]


def test_a_changed_field_shows_in_the_pair_section_with_its_fix_and_proof() -> None:
    first, second = (c.framework for c in all_conventions()[:2])
    row = all_conventions()[0]
    wider = row.eps * 100
    bn_lines = difference_lines(pair_section(_side(row), _side(_as(row, second, eps=wider)), cite=proof)[2:])
    (eps_line,) = bn_lines
    assert eps_line.startswith("- **BatchNorm ε**: ") and f"{wider:g}" in eps_line and "=" in eps_line.split(" — ")[1]
    assert refs(eps_line) and missing_tests(refs(eps_line)) == []

    layer = next(r for r in all_layer_conventions() if r.framework == first and r.normalization == "layernorm")
    changed = _as(layer, second, defaults={**layer.defaults, "eps": 0.25})
    lines = difference_lines(pair_section(_side(row, [layer]), _side(_as(row, second), [changed]), cite=proof,
                                          normalizations=("layernorm",))[2:])
    (line,) = lines
    assert line.startswith("- **LayerNorm eps**: ") and "=0.25` in " in line and refs(line)


def test_the_tutorial_faults_are_stated_as_the_seed_facts_state_them(text: str) -> None:
    for fault in TUTORIAL_FAULTS:
        assert f"**{fault.name}**: {fault.statement}." in text
