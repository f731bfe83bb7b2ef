"""No framework is spelled outside frameworks/: suites, reports and the reference read names from the registry.

A string literal (or an f-string's literal part) equal to a framework's descriptor name, "flax" or "gluon", or
starting with one followed by a non-letter ("torch/builtin", "jax-convention"), is an offence; docstrings and
comments are prose and may name frameworks. tests/ and benchmarks/ (which may import frameworks) are exempt.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

from bnparity.frameworks.registry import descriptors

ROOT = Path(__file__).resolve().parents[1]
EXEMPT = ("frameworks", "tests", "benchmarks")
EXTRA_NAMES = ("flax", "gluon", "keras", "tensorflow")  # libraries a framework folder drives, not descriptor names


def framework_names() -> tuple[str, ...]:
    return tuple(d.name for d in descriptors()) + EXTRA_NAMES


def _pattern(names: tuple[str, ...]) -> re.Pattern[str]:
    return re.compile(rf"^(?:{'|'.join(map(re.escape, names))})(?![A-Za-z])")


def _docstrings(tree: ast.AST) -> set[int]:
    """The ids of every docstring constant (module, class, function)."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and \
                    isinstance(first.value.value, str):
                found.add(id(first.value))
    return found


def offences(source: str, names: tuple[str, ...], *, filename: str = "<source>") -> list[tuple[int, str]]:
    """(line, literal) of every string literal in `source` that spells a framework name."""
    tree = ast.parse(source, filename=filename)
    pattern, docstrings = _pattern(names), _docstrings(tree)
    return sorted((node.lineno, node.value) for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings
            and pattern.match(node.value))


def checked_files() -> list[Path]:
    return sorted(p for p in ROOT.rglob("*.py")
                  if not any(part.startswith(".") for part in p.relative_to(ROOT).parts)
                  and p.relative_to(ROOT).parts[0] not in EXEMPT)


def test_the_checker_finds_literals_and_f_string_parts_but_not_prose():
    names = ("torch", "mxnet")
    source = '''"""A docstring that names torch is prose."""
x = "torch"
y = f"mxnet/{x}"
z = "torch-convention"
ok = ["torchvision", "PyTorch", "the torch layer", "mxnetic"]  # a comment: torch


def f():
    """torch again, in a docstring."""
    return {"mxnet": 1}
'''
    assert offences(source, names) == [(2, "torch"), (3, "mxnet/"), (4, "torch-convention"), (10, "mxnet")]


def test_no_framework_name_outside_frameworks_tests_and_benchmarks():
    names = framework_names()
    assert set(EXTRA_NAMES) < set(names) and len(names) > len(EXTRA_NAMES)
    files = checked_files()
    assert any(p.parts[-2] == "reports" for p in files) and any(p.parts[-2] == "suites" for p in files)
    found = {str(p.relative_to(ROOT)): offences(p.read_text(), names, filename=str(p)) for p in files}
    assert {path: lines for path, lines in found.items() if lines} == {}
