"""Shared helpers: skip a test whose framework is not installed, with the reason; a fake Fashion-MNIST."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from bnparity.frameworks.registry import descriptor
from bnparity.suites.data.idx import write_idx


def framework_installed(name: str) -> bool:
    """Whether every distribution framework `name`'s descriptor needs can be found (nothing is imported)."""
    return all(importlib.util.find_spec(dist) is not None for dist in descriptor(name).distributions)


def require(name: str) -> None:
    """Skip the calling test when framework `name` is not installed."""
    if not framework_installed(name):
        pytest.skip(f"{name} is not installed ({descriptor(name).install_hint})")


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
