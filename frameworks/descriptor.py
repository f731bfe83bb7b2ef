"""What a framework folder declares about itself, once: `frameworks/<name>/descriptor.py` holds one `DESCRIPTOR`.

The registry (registry.py) discovers the descriptors; suites, reports, the CLI, the environment manifest, the
porting guide and the figures read them, and never spell a framework's name themselves. A descriptor module
imports no framework: it is data, readable where the framework is not installed.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class LayerImpl:
    """One layer implementation a framework folder provides.

    Attributes:
        normalization: the plug-in it implements (a `bnparity.reference` normalization name, e.g. "batchnorm").
        impl: "builtin" (the framework's own layer) or "scratch" (written in the framework's raw ops).
        module: the module of the framework folder that holds it (``frameworks/<name>/<module>.py``).
        cls: the adapter class in that module (the same class name in every framework folder).
    """

    normalization: str
    impl: str
    module: str
    cls: str


@dataclass(frozen=True)
class ModelLayout:
    """How the framework stores the AlexNet's tensors, for the porting guide's model-level table."""

    conv_kernel: str
    dense_weight: str
    bn_params: str
    bn_stats: str
    activations: str


@dataclass(frozen=True)
class Framework:
    """One framework, as the rest of bnparity sees it.

    Attributes:
        name: the name used on the command line, in records and in run names ("torch").
        display_name: the name a reader knows ("PyTorch").
        order: where it sorts in tables and figures (ascending).
        pip_extra: the extra of `pip install 'bnparity[<extra>]'` that installs it.
        distributions: the PyPI distributions its folder imports; one missing means "not installed".
        color: its colour in every figure (a colour-blind-safe palette across frameworks).
        native_axis: the channel axis its layers run with: 1 (channels-first) or -1 (channels-last).
        layers: the layer implementations the folder provides, and where.
        model_layout: how its AlexNet stores weights and activations.
        baseline: whether its defaults are the canonical convention the others are compared against
            (exactly one framework says so).
    """

    name: str
    display_name: str
    order: int
    pip_extra: str
    distributions: tuple[str, ...]
    color: str
    native_axis: int
    layers: tuple[LayerImpl, ...]
    model_layout: ModelLayout
    baseline: bool = False

    def layer(self, normalization: str, impl: str) -> LayerImpl | None:
        """The implementation of `normalization` as `impl`, or None if the framework has none."""
        return next((x for x in self.layers if x.normalization == normalization and x.impl == impl), None)

    @property
    def install_hint(self) -> str:
        return f"pip install 'bnparity[{self.pip_extra}]'"
