"""Which frameworks exist (discovered from their descriptors), and loading their code lazily.

A framework is a folder `frameworks/<name>/` with a `descriptor.py` (see descriptor.py). Discovery imports only
the descriptors, never a framework, so every command can list, parse and report frameworks that are not
installed; a missing framework is a skip with its one-line reason, an installed but broken one an error.
"""

from __future__ import annotations

import functools
import importlib
import os
import pkgutil
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from types import ModuleType

from .base import LayerAdapter
from .descriptor import Framework

IMPLS = ("builtin", "scratch")
_PACKAGE = "bnparity.frameworks"


@dataclass(frozen=True)
class Unavailable:
    """A framework that cannot be used here, with the one-line reason.

    Attributes:
        framework: its name.
        reason: why, in one line (with the pip command when it is not installed).
        installed: False when its packages are missing; True when they are there but fail to import
            (a command asked to run it explicitly exits non-zero).
    """

    framework: str
    reason: str
    installed: bool = False


@functools.cache
def descriptors() -> tuple[Framework, ...]:
    """Every framework folder's descriptor, in their declared order (cached: the folders do not change)."""
    package = importlib.import_module(_PACKAGE)
    found = []
    for info in pkgutil.iter_modules(package.__path__):
        if not info.ispkg:
            continue
        try:
            module = importlib.import_module(f"{_PACKAGE}.{info.name}.descriptor")
        except ModuleNotFoundError as e:
            if e.name == f"{_PACKAGE}.{info.name}.descriptor":
                continue  # a sub-package that is not a framework folder
            raise
        declared: tuple[Framework, ...] = getattr(module, "DESCRIPTORS", None) or (module.DESCRIPTOR,)
        for d in declared:
            if d.package != info.name:
                raise RuntimeError(f"frameworks/{info.name}/descriptor.py must declare frameworks of folder "
                                   f"{info.name!r} (name or folder). Received: {d.name!r} in {d.package!r}")
        found.extend(declared)
    if sum(d.baseline for d in found) != 1:
        raise RuntimeError("exactly one framework descriptor must set baseline=True. Received: "
                           f"{[d.name for d in found if d.baseline]}")
    return tuple(sorted(found, key=lambda d: (d.order, d.name)))


def framework_names() -> tuple[str, ...]:
    """The names of every framework, in order."""
    return tuple(d.name for d in descriptors())


def descriptor(name: str) -> Framework:
    """The descriptor of framework `name`. Raises ValueError naming the known ones."""
    for d in descriptors():
        if d.name == name:
            return d
    raise ValueError(f"unknown framework {name!r}; expected one of {', '.join(framework_names())}")


def baseline() -> Framework:
    """The framework whose defaults are the canonical convention (the one the others are compared with)."""
    return next(d for d in descriptors() if d.baseline)


def display_name(name: str) -> str:
    """The reader's name of a framework; a name no folder declares (an old record's) is shown as it is."""
    return next((d.display_name for d in descriptors() if d.name == name), name)


def sort_key(name: str) -> tuple[int, str]:
    """Order frameworks as their descriptors do; unknown names last, alphabetically."""
    rank = {d.name: i for i, d in enumerate(descriptors())}
    return rank.get(name, len(rank)), name


def parse_frameworks(text: str | None) -> tuple[str, ...]:
    """'torch,jax' -> ('torch', 'jax'); None or 'all' -> every framework.

    Raises:
        ValueError: an empty list or item ('' or 'torch,,jax'), or an unknown name; the message says what was
            received and what is expected.
    """
    known = framework_names()
    if text is None or text.strip() == "all":
        return known
    expected = f"expected 'all' or a comma-separated list of {', '.join(known)}"
    names = [n.strip() for n in text.split(",")]
    if not text.strip() or any(not n for n in names):
        raise ValueError(f"--frameworks has an empty name; {expected}. Received: {text!r}")
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ValueError(f"unknown framework {', '.join(unknown)}; {expected}. Received: {text!r}")
    return tuple(dict.fromkeys(names))


def named_frameworks(text: str | None) -> tuple[str, ...]:
    """The frameworks the user named in --frameworks: none when it is absent or 'all' (ValueError if malformed)."""
    return () if text is None or text.strip() == "all" else parse_frameworks(text)


class ProcessConflict(ImportError):
    """A framework whose library this process already imported with another environment (another backend)."""


def module_name(framework: str, name: str) -> str:
    """The import name of module `name` of `framework`'s folder: bnparity.frameworks.<folder>.<name>."""
    return f"{_PACKAGE}.{descriptor(framework).package}.{name}"


def framework_environment(framework: str) -> dict[str, str]:
    """The variables a process must have set before `framework`'s library is imported (worker processes)."""
    return dict(descriptor(framework).environment)


def _prepare_environment(d: Framework) -> None:
    """Set `d.environment` in this process before its library is imported; ProcessConflict if it was imported with
    other values. The library reads these variables from the process environment, once: that is the only place a
    backend can be chosen, and it is the process's own state, not bnparity's."""
    imported = bool(d.fixed_at_import) and d.fixed_at_import in sys.modules
    if imported and d.imported_with and d.environment:
        # the library says what it runs with (it may have read a configuration file, not the environment)
        module, function = d.imported_with.split(":")
        (variable, value), running = d.environment[0], str(getattr(importlib.import_module(module), function)())
        if running != value:
            raise ProcessConflict(f"{d.name} needs {variable}={value}, but this process imported "
                                  f"{d.fixed_at_import} with {running}: run {d.name} in a process of its own")
        return
    for variable, value in d.environment:
        current = os.environ.get(variable)
        if current == value:
            continue
        if imported:
            raise ProcessConflict(f"{d.name} needs {variable}={value}, but this process imported "
                                  f"{d.fixed_at_import} with {variable}={current}: run {d.name} in a process of "
                                  "its own")
        os.environ[variable] = value


def framework_module(framework: str, name: str) -> ModuleType:
    """Import module `name` of `framework`'s folder, its environment set first (ImportError when the framework is
    missing, ProcessConflict when its library was imported here with another environment)."""
    d = descriptor(framework)  # ValueError for an unknown framework
    _prepare_environment(d)
    return importlib.import_module(module_name(framework, name))


def load_class(framework: str, module: str, cls: str, absent: str) -> type | Unavailable:
    """Class `cls` of `framework`'s module `module`, or why it is unavailable here: `absent` (one line) when the
    folder has no such module (a skip, not an error), else not installed, a process of its own, or broken."""
    try:
        return getattr(framework_module(framework, module), cls)
    except ModuleNotFoundError as e:
        if e.name == module_name(framework, module):
            return Unavailable(framework, absent)
        return import_failure(framework, e)
    except Exception as e:  # noqa: BLE001 (a framework that is missing or broken is reported, not raised)
        return import_failure(framework, e)


def _has_environment(d: Framework) -> bool:
    return bool(d.environment) and all(os.environ.get(variable) == value for variable, value in d.environment[:1])


def load_every(module: str, cls: str, absent: str, *, frameworks: Iterable[str] | None = None,
               imported_only: bool = False) -> tuple[list, list[Unavailable]]:
    """An instance of class `cls` of module `module` of every framework (of `frameworks`, if given) that has it here,
    and why the others are unavailable (`absent`, a template of {framework}, for a folder without the module).

    With `imported_only`, a framework whose library this process has not imported is not loaded (it is unavailable,
    with that reason): what reads or audits a user's object needs only the libraries that could have made it, and
    importing the others would cost seconds (and, for a library with backends, fix one).
    """
    found, missing = [], []
    chosen = descriptors() if frameworks is None else tuple(descriptor(name) for name in frameworks)
    # variants whose environment this process already has go first: a user's KERAS_BACKEND chooses the backend
    for d in sorted(chosen, key=lambda d: not _has_environment(d)):
        if imported_only and d.distributions[0] not in sys.modules:
            missing.append(Unavailable(d.name, f"{d.name}: {d.distributions[0]} is not imported in this process, so "
                                               "the object cannot be one of its"))
            continue
        loaded = load_class(d.name, module, cls, absent.format(framework=d.name))
        if isinstance(loaded, Unavailable):
            missing.append(loaded)
        else:
            found.append(loaded())
    return found, missing


def import_failure(framework: str, error: BaseException) -> Unavailable:
    """Why `framework` cannot be used: not installed (with the pip command), needing a process of its own, or
    installed but broken."""
    d = descriptor(framework)
    if isinstance(error, ProcessConflict):
        return Unavailable(framework, str(error))
    missing = getattr(error, "name", None) or ""
    if isinstance(error, ImportError) and missing.split(".")[0] in d.distributions:
        return Unavailable(framework, f"{framework} is not installed ({missing} cannot be imported); "
                                      f"{d.install_hint}")
    first_line = f"{type(error).__name__}: {error}".splitlines()[0]
    return Unavailable(framework, f"{framework} failed to import: {first_line}", installed=True)


def load_adapter(framework: str, impl: str, normalization: str = "batchnorm") -> LayerAdapter | Unavailable:
    """The adapter of `framework`'s `impl` of `normalization`, or why it is unavailable here."""
    d = descriptor(framework)
    layer = d.layer(normalization, impl)
    if layer is None:
        # a layer the framework does not have is a skip with its reason (the descriptor's, if it gives one)
        lack = d.lack(normalization, impl)
        return Unavailable(framework, lack.reason if lack else f"{framework} has no {impl} {normalization}")
    try:
        module = framework_module(framework, layer.module)
    except Exception as e:  # a framework that is missing, or installed but broken, is reported, not raised
        return import_failure(framework, e)
    return getattr(module, layer.cls)()


def frameworks_help(default: str = "all") -> str:
    """The --frameworks help text of every command, listing the frameworks the registry knows."""
    return f"comma-separated, some of {','.join(framework_names())} (default: {default})"
