"""The environment manifest names the version of every module a framework imports, whatever installs it."""

from __future__ import annotations

from importlib import metadata

import pytest

from bnparity.suites.environment import package_versions


def test_a_module_installed_by_a_differently_named_distribution_gets_that_distributions_version(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # tensorflow is imported as `tensorflow` but installed by `tensorflow-cpu`: the manifest must not say None
    real_version = metadata.version

    def version(name: str) -> str:
        if name == "numpy":
            raise metadata.PackageNotFoundError(name)
        return "9.9" if name == "numpy-installer" else real_version(name)

    monkeypatch.setattr(metadata, "version", version)
    monkeypatch.setattr(metadata, "packages_distributions", lambda: {"numpy": ["numpy-installer"]})
    assert package_versions()["numpy"] == "9.9"


def test_a_module_nothing_installs_is_none(monkeypatch: pytest.MonkeyPatch) -> None:
    def version(name: str) -> str:
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(metadata, "version", version)
    monkeypatch.setattr(metadata, "packages_distributions", lambda: {})
    assert set(package_versions().values()) == {None}
