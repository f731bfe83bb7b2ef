"""Shared helpers: skip a test whose framework is not installed, with the reason; a fake Fashion-MNIST."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import numpy as np
import pytest

from bnparity.frameworks.registry import descriptor
from bnparity.suites.data.idx import write_idx

# Set by tests/test_framework_processes.py in the pytest process it starts for one framework that needs an
# environment of its own (one Keras backend): only that framework's tests run there.
ONLY = "BNPARITY_TESTS_FRAMEWORK"
# The environment this pytest process started with (the registry sets a variant's variables when a test loads it;
# that must not make the variant's tests run here).
STARTED_WITH = dict(os.environ)


def runs_elsewhere(name: str) -> str | None:
    """Why framework `name`'s tests do not run in this pytest process, or None if they do.

    A framework whose library fixes an environment at import (Keras' backend) is tested in a pytest process of its
    own, started by tests/test_framework_processes.py with that environment set; this process runs only the
    frameworks whose environment it already has (all of them when it holds none).
    """
    only = STARTED_WITH.get(ONLY)
    if only:
        return None if name == only else f"{name} is tested in the main pytest process, not in {only}'s"
    wanted = descriptor(name).environment
    if wanted and any(STARTED_WITH.get(variable) != value for variable, value in wanted[:1]):
        return f"{name} runs in a pytest process of its own (tests/test_framework_processes.py)"
    return None


def framework_installed(name: str) -> bool:
    """Whether every distribution framework `name`'s descriptor needs can be found (nothing is imported) and its
    tests run in this pytest process (`runs_elsewhere`)."""
    return runs_elsewhere(name) is None and \
        all(importlib.util.find_spec(dist) is not None for dist in descriptor(name).distributions)


def require(name: str) -> None:
    """Skip the calling test (or, called at import, the test module) when framework `name` is not installed, or is
    tested in another pytest process."""
    if reason := runs_elsewhere(name):
        pytest.skip(reason, allow_module_level=True)
    if not framework_installed(name):
        pytest.skip(f"{name} is not installed ({descriptor(name).install_hint})", allow_module_level=True)


def write_fake_fashion_mnist(root: Path) -> Path:
    """A small Fashion-MNIST look-alike (30 train and 15 test images per class) whose classes are learnable.

    Its checksums are not the official ones: load it with verification off (`--no-verify-data`).
    """
    rng = np.random.default_rng(0)
    for split, per_class in (("train", 30), ("t10k", 15)):
        labels = np.repeat(np.arange(10, dtype=np.uint8), per_class)
        rng.shuffle(labels)
        images = rng.integers(0, 60, (len(labels), 28, 28)).astype(np.uint8)
        for i, label in enumerate(labels):  # class c: a bright band at rows 2c..2c+5
            images[i, 2 * label:2 * label + 6] += 150
        write_idx(root / f"{split}-images-idx3-ubyte.gz", images)
        write_idx(root / f"{split}-labels-idx1-ubyte.gz", labels)
    return root
