"""The package layout: every sub-package is installed, and only frameworks/ imports a framework."""

from __future__ import annotations

import re
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parents[1]
TOP = ("reference", "frameworks", "suites", "reports", "testing", "seeds")
FRAMEWORK_IMPORT = re.compile(r"^\s*(import|from)\s+(torch|mxnet|jax|jaxlib|flax|optax|keras|tensorflow)\b", re.M)


def test_every_sub_package_is_listed_in_pyproject():
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {"bnparity." + ".".join(p.parent.relative_to(ROOT).parts)
             for top in TOP for p in (ROOT / top).rglob("__init__.py")}
    assert found == listed


def test_no_framework_import_outside_frameworks():
    offenders = [str(p.relative_to(ROOT)) for top in ("reference", "suites", "reports", "testing", "seeds")
                 for p in (ROOT / top).rglob("*.py") if FRAMEWORK_IMPORT.search(p.read_text())]
    assert offenders == []
