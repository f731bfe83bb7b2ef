"""Which frameworks exist, and loading their adapters lazily so a missing framework is only skipped."""

from __future__ import annotations

import importlib
from dataclasses import dataclass

from .base import BatchNormAdapter

FRAMEWORKS = ("torch", "mxnet", "jax")
IMPLS = ("builtin", "scratch")
_MODULE_OF_IMPL = {"builtin": "bn", "scratch": "scratch"}
_PIP_EXTRA = {"torch": "torch", "mxnet": "mxnet", "jax": "jax"}


@dataclass(frozen=True)
class Unavailable:
    """A framework that cannot be loaded here, with the one-line reason."""

    framework: str
    reason: str


def parse_frameworks(text: str | None) -> tuple[str, ...]:
    """'torch,jax' -> ('torch', 'jax'); None or 'all' -> every framework. Raises ValueError if unknown."""
    if text is None or text.strip() in ("", "all"):
        return FRAMEWORKS
    names = tuple(dict.fromkeys(n.strip() for n in text.split(",") if n.strip()))
    unknown = [n for n in names if n not in FRAMEWORKS]
    if unknown:
        raise ValueError(f"unknown framework {', '.join(unknown)}; expected some of {', '.join(FRAMEWORKS)}")
    return names


def framework_module(framework: str, name: str):
    """Import bnparity.frameworks.<framework>.<name>. Raises Unavailable-style ImportError if missing."""
    if framework not in FRAMEWORKS:
        raise ValueError(f"unknown framework {framework!r}; expected one of {', '.join(FRAMEWORKS)}")
    return importlib.import_module(f"bnparity.frameworks.{framework}.{name}")


def load_adapter(framework: str, impl: str) -> BatchNormAdapter | Unavailable:
    """The adapter of `framework` for `impl` ('builtin' or 'scratch'), or why it is unavailable."""
    try:
        module = framework_module(framework, _MODULE_OF_IMPL[impl])
    except ImportError as e:
        missing = getattr(e, "name", None) or str(e)
        return Unavailable(framework, f"{framework} is not installed ({missing} cannot be imported); "
                                      f"pip install 'bnparity[{_PIP_EXTRA[framework]}]'")
    except Exception as e:  # a framework that is installed but broken is reported, not raised
        return Unavailable(framework, f"{framework} failed to import: {type(e).__name__}: {e}".splitlines()[0])
    return module.ADAPTER()
