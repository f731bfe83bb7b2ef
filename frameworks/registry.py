"""Which frameworks exist, and loading their adapters lazily so a missing framework is only skipped."""

from __future__ import annotations

import importlib
from dataclasses import dataclass

from .base import BatchNormAdapter

FRAMEWORKS = ("torch", "mxnet", "jax")
IMPLS = ("builtin", "scratch")
_MODULE_OF_IMPL = {"builtin": "bn", "scratch": "scratch"}
_PIP_EXTRA = {"torch": "torch", "mxnet": "mxnet", "jax": "jax"}
# The third-party packages each framework folder imports; a missing one means "not installed".
_DISTRIBUTIONS = {"torch": ("torch",), "mxnet": ("mxnet",), "jax": ("jax", "jaxlib", "flax", "optax")}


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


def import_failure(framework: str, error: BaseException) -> Unavailable:
    """Why `framework` cannot be used: not installed (with the pip command), or installed but broken."""
    missing = getattr(error, "name", None) or ""
    if isinstance(error, ImportError) and missing.split(".")[0] in _DISTRIBUTIONS[framework]:
        return Unavailable(framework, f"{framework} is not installed ({missing} cannot be imported); "
                                      f"pip install 'bnparity[{_PIP_EXTRA[framework]}]'")
    first_line = f"{type(error).__name__}: {error}".splitlines()[0]
    return Unavailable(framework, f"{framework} failed to import: {first_line}")


def load_adapter(framework: str, impl: str) -> BatchNormAdapter | Unavailable:
    """The adapter of `framework` for `impl` ('builtin' or 'scratch'), or why it is unavailable."""
    try:
        module = framework_module(framework, _MODULE_OF_IMPL[impl])
    except Exception as e:  # a framework that is missing, or installed but broken, is reported, not raised
        return import_failure(framework, e)
    return module.ADAPTER()
