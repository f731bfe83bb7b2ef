"""Frameworks that need an environment of their own (one Keras backend each) are tested in pytest processes of
their own.

Keras fixes its backend when it is first imported, so one process can run one backend only. For each such framework
that is installed, this test starts pytest on the framework's own test files and the contract tests every framework
passes, with the framework's environment set (`registry.framework_environment`) and conftest.ONLY naming it, so that
only its tests run there. A failure there fails here, with that process's report.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ONLY

from bnparity.frameworks.registry import descriptors, framework_environment

TESTS = Path(__file__).resolve().parent

# The tests every framework passes (each is parametrized over the registry's frameworks).
CONTRACT_FILES = ("test_adapter_contract.py", "test_alexnet.py", "test_checkpoint_contract.py", "test_convergence.py")


def files_for(name: str) -> list[str]:
    """The contract files and framework `name`'s folder's own test files (tests/test_<folder>_*.py)."""
    folder = next(d.package for d in descriptors() if d.name == name)
    own = sorted(p.name for p in TESTS.glob(f"test_{folder}_*.py"))
    return [f"tests/{f}" for f in (*CONTRACT_FILES, *own)]


SEPARATE = [d.name for d in descriptors() if d.environment]


@pytest.mark.slow
@pytest.mark.skipif(bool(os.environ.get(ONLY)), reason="already inside one framework's own pytest process")
@pytest.mark.parametrize("name", SEPARATE)
def test_framework_in_a_process_of_its_own(name: str) -> None:
    d = next(d for d in descriptors() if d.name == name)
    if any(importlib.util.find_spec(dist) is None for dist in d.distributions):
        pytest.skip(f"{name} is not installed ({d.install_hint})")
    env = {**os.environ, **framework_environment(name), ONLY: name}
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *files_for(name)]
    done = subprocess.run(cmd, cwd=TESTS.parent, env=env, capture_output=True, text=True, timeout=1800, check=False)
    report = (done.stdout + done.stderr)[-6000:]
    assert done.returncode == 0, f"pytest for {name} exited {done.returncode}:\n{report}"
    assert " passed" in done.stdout, f"pytest for {name} ran no test:\n{report}"
