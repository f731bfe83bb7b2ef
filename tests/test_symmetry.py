"""Framework folders are symmetric: the same public modules and, in each, the same public classes and functions.

A reader who knows one folder knows all. Modules are read with `ast` (no framework is imported), so this runs where
none is installed. A private module (its name starts with "_") may exist in one folder only, and private names
inside a module are not compared.
"""

from __future__ import annotations

import ast
import importlib.util
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from bnparity.frameworks.descriptor import NORMALIZATION_MODULES
from bnparity.frameworks.registry import descriptors


def framework_folder(name: str) -> Path:
    """The folder of framework package `name` (found as Python finds it; nothing in it is imported)."""
    spec = importlib.util.find_spec(f"bnparity.frameworks.{name}")
    if spec is None or not spec.submodule_search_locations:
        raise ValueError(f"a framework must be a package bnparity.frameworks.<name>. Received: {name!r}")
    return Path(next(iter(spec.submodule_search_locations)))


def public_api(folder: Path) -> dict[str, frozenset[str]]:
    """Public module name -> the public top-level classes and functions it defines."""
    api = {}
    for path in sorted(folder.glob("*.py")):
        if path.stem.startswith("_"):
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        api[path.stem] = frozenset(node.name for node in tree.body
                                   if isinstance(node, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
                                   and not node.name.startswith("_"))
    return api


def declared_lacks(name: str) -> set[tuple[str, str]]:
    """(module, class) pairs the descriptors of framework folder `name` declare it does not have (a `Lack`, with
    its reason); a folder with several variants lacks what every variant lacks."""
    modules = {norm: (module, suffix) for norm, module, suffix in NORMALIZATION_MODULES}
    lacks = [{(modules[x.normalization][0], f"{x.impl.capitalize()}{modules[x.normalization][1]}") for x in d.lacks
              if x.normalization in modules} for d in descriptors() if d.package == name]
    return set.intersection(*lacks) if lacks else set()


def asymmetries(folders: dict[str, Path]) -> list[str]:
    """What differs between the folders' public modules and names, one line each (empty: they are symmetric).

    A layer class the folder's descriptor declares as lacking (MXNet 1.9 has no RMSNorm) is not required."""
    apis = {name: public_api(folder) for name, folder in folders.items()}
    problems = []
    for module in sorted(set().union(*apis.values())):
        missing = [name for name, api in apis.items() if module not in api]
        if missing:
            problems.append(f"every folder must have {module}.py; it is missing in {', '.join(missing)}")
            continue
        names = frozenset().union(*(api[module] for api in apis.values()))
        for name, api in apis.items():
            if lacking := sorted(n for n in names - api[module] if (module, n) not in declared_lacks(name)):
                problems.append(f"frameworks/{name}/{module}.py must define the public names the other folders' "
                                f"{module}.py define. Missing: {lacking}")
    return problems


def real_folders() -> dict[str, Path]:
    """Each framework folder once (a folder of several variants, one per backend, is one folder)."""
    return {d.package: framework_folder(d.package) for d in descriptors()}


def test_the_framework_folders_are_symmetric() -> None:
    folders = real_folders()
    assert len(folders) >= 2
    assert asymmetries(folders) == []
    shared = set.intersection(*(set(public_api(f)) for f in folders.values()))
    assert {"descriptor", "convention", "convert", "batchnorm", "alexnet", "train"} <= shared


def _rename_first_class(folder: Path) -> None:
    path = folder / "alexnet.py"
    path.write_text(path.read_text(encoding="utf-8").replace("class AlexNet(", "class OtherNet(", 1),
                    encoding="utf-8")


def _drop_public_module(folder: Path) -> None:
    (folder / "convert.py").unlink()


def _add_public_function(folder: Path) -> None:
    with (folder / "train.py").open("a", encoding="utf-8") as f:
        f.write("\n\ndef extra_helper() -> None:\n    pass\n")


def _add_private_module_and_names(folder: Path) -> None:
    (folder / "_plumbing.py").write_text('"""Private."""\n\n\ndef helper() -> None:\n    pass\n', encoding="utf-8")
    with (folder / "train.py").open("a", encoding="utf-8") as f:
        f.write("\n\ndef _private_helper() -> None:\n    pass\n\n\nclass _Private:\n    pass\n")


@pytest.mark.parametrize(("change", "expected"), [
    (_rename_first_class, ["frameworks/{first}/alexnet.py must define", "Missing: ['AlexNet']",
                           "frameworks/{other}/alexnet.py must define", "Missing: ['OtherNet']"]),
    (_drop_public_module, ["every folder must have convert.py; it is missing in {first}"]),
    (_add_public_function, ["frameworks/{other}/train.py must define", "Missing: ['extra_helper']"]),
    (_add_private_module_and_names, []),
], ids=["renamed class", "missing module", "extra function", "private module and names (allowed)"])
def test_the_check_catches_an_asymmetric_copy(tmp_path: Path, change: Callable[[Path], None],
                                              expected: list[str]) -> None:
    """Copies of the real folders, one of them changed: the check names exactly what the change broke."""
    folders = {name: Path(shutil.copytree(folder, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__")))
               for name, folder in real_folders().items()}
    assert asymmetries(folders) == []  # the copies are as symmetric as the originals
    first, other = list(folders)[:2]
    change(folders[first])
    report = "\n".join(asymmetries(folders))
    for fragment in expected:
        assert fragment.format(first=first, other=other) in report
    assert bool(report) == bool(expected)
