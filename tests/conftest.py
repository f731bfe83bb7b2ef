"""Shared fixtures: skip a test whose framework is not installed, with the reason."""

from __future__ import annotations

import importlib.util

import pytest

_IMPORT_NAME = {"torch": "torch", "mxnet": "mxnet", "jax": "flax"}


def framework_installed(name: str) -> bool:
    return importlib.util.find_spec(_IMPORT_NAME[name]) is not None


def require(name: str) -> None:
    """Skip the calling test when framework `name` is not installed."""
    if not framework_installed(name):
        pytest.skip(f"{name} is not installed (pip install 'bnparity[{name}]')")
