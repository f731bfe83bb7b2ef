"""What a framework folder declares about itself, once: `frameworks/<name>/descriptor.py` holds one `DESCRIPTOR`
(or, for a library with several backends, `DESCRIPTORS`: one variant per backend, see `Framework.folder`).

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
class Lack:
    """A layer implementation a framework does not have, and why (a parity run records it as a skip with `reason`).

    Attributes:
        normalization: the plug-in it would implement.
        impl: "builtin" or "scratch".
        reason: one line a reader understands, e.g. "MXNet 1.9 has no RMSNorm layer".
    """

    normalization: str
    impl: str
    reason: str


def standard_layers(normalizations: tuple[tuple[str, str, str], ...]) -> tuple[LayerImpl, ...]:
    """The LayerImpl rows of framework folders that follow the naming rule: for each (normalization, module, class
    suffix), ``Builtin<suffix>`` and ``Scratch<suffix>`` in ``frameworks/<name>/<module>.py``."""
    return tuple(LayerImpl(norm, impl, module, f"{impl.capitalize()}{suffix}")
                 for norm, module, suffix in normalizations for impl in ("builtin", "scratch"))


# Every normalization a framework folder may implement: (plug-in name, module, class suffix).
NORMALIZATION_MODULES = (
    ("batchnorm", "batchnorm", "BatchNorm"),
    ("layernorm", "layernorm", "LayerNorm"),
    ("groupnorm", "groupnorm", "GroupNorm"),
    ("instancenorm", "instancenorm", "InstanceNorm"),
    ("rmsnorm", "rmsnorm", "RMSNorm"),
)


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
        lacks: the layer implementations it does not have, each with the reason.
        parity_cost: the relative wall time of its layer-parity cases (1 for an eager framework; JAX traces and
            compiles every configuration), which orders the pieces of a parallel `bnparity parity` run.
        replica_impls: the cross-replica BatchNorm implementations of its ``replicas.py`` (frameworks/replicas.py):
            "builtin" (``BuiltinSyncBatchNorm``) and/or "scratch" (``ScratchSyncBatchNorm``).
        replica_env: (variable, value) pairs its distributed engine needs set before the framework starts, the
            value a `str.format` template of {replicas} and {existing} (the variable's value already set, to append
            to): JAX's host device count, for instance.
        folder: the folder under frameworks/ that holds its code; default: `name`. Several descriptors of one
            folder (its descriptor.py's DESCRIPTORS) are variants of one library, e.g. one per backend of a library
            that runs on several, each a framework of its own on the command line and in records.
        environment: (variable, value) pairs its library reads once, when it is first imported (a backend
            choice); the registry sets them before the folder's code is imported, and worker processes get them.
        fixed_at_import: the module whose import fixes `environment` for the rest of the process; once it is
            imported with other values, this framework cannot run in that process (registry.ProcessConflict).
        imported_with: "module:function" that returns, once `fixed_at_import` is imported, the value its library
            fixed for the first `environment` variable (Keras: "keras.config:backend"), so that the registry can tell
            which variant an already imported library runs, whoever imported it and however it was configured.
        main_job: whether `bnparity run` without --frameworks runs it. False for a variant that would take the
            main job over its time budget; `--frameworks all` (or its name) runs it too.
        main_job_sits_out: the steps of `bnparity run` (without --frameworks) it sits out, because they would take
            the main job over its budget (e.g. ("train",): its convergence runs); it runs the others.
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
    lacks: tuple[Lack, ...] = ()
    parity_cost: float = 1.0
    replica_impls: tuple[str, ...] = ()
    replica_env: tuple[tuple[str, str], ...] = ()
    folder: str = ""
    environment: tuple[tuple[str, str], ...] = ()
    fixed_at_import: str = ""
    imported_with: str = ""
    main_job: bool = True
    main_job_sits_out: tuple[str, ...] = ()

    @property
    def package(self) -> str:
        """The folder under frameworks/ that holds its code."""
        return self.folder or self.name

    def layer(self, normalization: str, impl: str) -> LayerImpl | None:
        """The implementation of `normalization` as `impl`, or None if the framework has none."""
        return next((x for x in self.layers if x.normalization == normalization and x.impl == impl), None)

    def lack(self, normalization: str, impl: str) -> Lack | None:
        """Why the framework has no `impl` of `normalization`, if it declares so."""
        return next((x for x in self.lacks if x.normalization == normalization and x.impl == impl), None)

    @property
    def install_hint(self) -> str:
        return f"pip install 'bnparity[{self.pip_extra}]'"
