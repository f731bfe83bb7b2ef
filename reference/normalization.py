"""The normalization plug-in protocol: what a normalization declares so that the shared harness can check it.

A normalization is one module of `bnparity.reference` with a module-level ``NORMALIZATION`` (a `Normalization`):
its spec type, its reference protocol run (the formulas live in that module, each once), its condition factor κ
(how much float rounding the input itself amplifies) and the magnitudes its errors are judged against. The
harness, the tolerance model, the records, the CLI and the reports take these and nothing else, so adding a
normalization adds one reference module (plus one adapter file per framework and its cases) and changes none
of them. BatchNorm (batchnorm.py) is the first plug-in.
"""

from __future__ import annotations

import functools
import importlib
import pkgutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from .spec import LayerSpec
from .steps import LayerInputs, LayerOutputs


@dataclass(frozen=True)
class Normalization:
    """One normalization's plug-in.

    Attributes:
        name: the name in records and on the command line ("batchnorm"); equals its spec type's `normalization`.
        title: the name a reader knows ("BatchNorm").
        spec_type: its spec dataclass.
        run: the reference protocol in float64: k training steps (forward, backward with the given dy, running
            statistics), then one eval pass.
        condition_factor: κ ≥ 1 of the inputs under a spec (1 for well-centred data; see suites/parity/tolerance.py).
        error_scales: per quantity, the magnitude an error is judged against when it is not simply the largest
            |reference| (a sum is judged against the sum of its terms' magnitudes).
        evaluate: the eval-mode output on x of a layer in the spec's state, before any training step (its initial
            running statistics); None for a normalization that keeps no state, whose eval pass is its forward pass.
    """

    name: str
    title: str
    spec_type: type[LayerSpec]
    run: Callable[[LayerSpec, LayerInputs], LayerOutputs]
    condition_factor: Callable[[LayerSpec, Sequence[np.ndarray]], float]
    error_scales: Callable[[LayerSpec, LayerInputs], dict[str, float]]
    evaluate: Callable[[LayerSpec, np.ndarray, np.ndarray, np.ndarray], np.ndarray] | None = None


@functools.cache
def normalizations() -> tuple[Normalization, ...]:
    """Every plug-in: the modules of bnparity.reference that define NORMALIZATION, by name."""
    package = importlib.import_module("bnparity.reference")
    found = []
    for info in pkgutil.iter_modules(package.__path__):
        module = importlib.import_module(f"bnparity.reference.{info.name}")
        plugin = getattr(module, "NORMALIZATION", None)
        if isinstance(plugin, Normalization):
            found.append(plugin)
    return tuple(sorted(found, key=lambda p: p.name))


def normalization(name: str) -> Normalization:
    """The plug-in called `name`. Raises ValueError naming the known ones."""
    for plugin in normalizations():
        if plugin.name == name:
            return plugin
    raise ValueError(f"unknown normalization {name!r}; expected one of {', '.join(p.name for p in normalizations())}")


def short_name(name: str) -> str:
    """The command line's short name of a normalization: "batchnorm" -> "batch"."""
    return name.removesuffix("norm")


def parse_normalizations(text: str | None, *, option: str = "--norms") -> tuple[str, ...]:
    """'batch,layer' (or 'batchnorm,layernorm') -> ('batchnorm', 'layernorm'); None or 'all' -> every one.

    Raises:
        ValueError: an empty item or an unknown name; the message says what was received and what is expected.
    """
    known = tuple(p.name for p in normalizations())
    if text is None or text.strip() == "all":
        return known
    expected = f"expected 'all' or a comma-separated list of {', '.join(short_name(n) for n in known)}"
    names = [n.strip() for n in text.split(",")]
    if not text.strip() or any(not n for n in names):
        raise ValueError(f"{option} has an empty name; {expected}. Received: {text!r}")
    by_name = {**{short_name(n): n for n in known}, **{n: n for n in known}}
    unknown = [n for n in names if n not in by_name]
    if unknown:
        raise ValueError(f"unknown normalization {', '.join(unknown)}; {expected}. Received: {text!r}")
    return tuple(dict.fromkeys(by_name[n] for n in names))


def of_spec(spec: LayerSpec) -> Normalization:
    """The plug-in whose spec `spec` is."""
    return normalization(type(spec).normalization)


def run_reference(spec: LayerSpec, inputs: LayerInputs) -> LayerOutputs:
    """The ground truth for one case: the spec's normalization's protocol, in float64."""
    return of_spec(spec).run(spec, inputs)


def evaluate(spec: LayerSpec, x: np.ndarray, gamma: np.ndarray, beta: np.ndarray) -> np.ndarray:
    """The eval-mode output on `x` of a layer in the spec's state, before any training step, in float64."""
    plugin = of_spec(spec)
    if plugin.evaluate is not None:
        return plugin.evaluate(spec, x, gamma, beta)
    # no state: the protocol's eval pass (after a training step that changes nothing it reads) is the forward pass
    inputs = LayerInputs(xs=(x,), dys=(np.zeros_like(x),), x_eval=x, gamma=gamma, beta=beta)
    return plugin.run(spec, inputs).y_eval
