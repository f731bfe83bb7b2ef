"""The one small interface every layer adapter implements, whatever its framework and normalization.

An adapter turns a spec (a `bnparity.reference` normalization's spec) into a framework layer (`build`) and says
which spec the framework really computes (`realize`). The protocol itself (k training steps, then eval) and the
layout conversion to the framework's native channel axis are written once, here, in `LayerAdapter.run`, for
every normalization: a normalization only changes which spec the adapter is given.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from bnparity.reference.layout import channel_axis
from bnparity.reference.spec import LayerSpec
from bnparity.reference.steps import LayerInputs, LayerOutputs


class Unsupported(Exception):
    """This framework cannot run this configuration. The message names the framework and the reason."""


@dataclass(frozen=True)
class StepResult:
    """One training step's results, as NumPy arrays in the framework's native layout."""

    y: np.ndarray
    dx: np.ndarray
    dgamma: np.ndarray | None
    dbeta: np.ndarray | None


class LayerSession(ABC):
    """One framework layer, built and holding its parameters and running statistics."""

    @abstractmethod
    def train_step(self, x: np.ndarray, dy: np.ndarray) -> StepResult:
        """Training-mode forward on x, backward with upstream gradient dy (running stats update)."""

    @abstractmethod
    def running_stats(self) -> tuple[np.ndarray, np.ndarray] | None:
        """(running mean, running variance) as the framework stores them now, or None if not tracked."""

    @abstractmethod
    def eval(self, x: np.ndarray) -> np.ndarray:
        """Eval-mode (inference) forward on x."""


class LayerAdapter(ABC):
    """Runs one framework's implementation of one normalization through the layer protocol.

    Each framework folder has one module per normalization (``batchnorm.py``, ...) holding the classes
    ``Builtin<Norm>`` (the framework's *own* layer, ``impl = "builtin"``) and ``Scratch<Norm>`` (written in the
    framework's raw ops, ``impl = "scratch"``); the folder's descriptor lists them.
    """

    framework: ClassVar[str]  # the descriptor's name
    normalization: ClassVar[str]  # the reference plug-in it implements, e.g. "batchnorm"
    impl: ClassVar[str]  # "builtin" or "scratch"
    native_axis: ClassVar[int]  # the channel axis the layer is run with: 1 (NC...) or -1 (...C)
    # Ways to build the same layer that the contract test must cover too (name -> constructor keywords), e.g.
    # a hybridized and an imperative block; the first is the one the registry loads.
    variants: ClassVar[dict[str, dict[str, object]]] = {"default": {}}

    @abstractmethod
    def realize(self, spec: LayerSpec, dtype: np.dtype) -> LayerSpec:
        """The spec this implementation computes when asked for `spec`.

        Equal to `spec` except for conventions the framework cannot configure (PyTorch's running
        variance is always unbiased, MXNet's and Flax's always biased), which are taken from the
        framework's convention. Raises Unsupported when the configuration or dtype cannot run at all.
        """

    @abstractmethod
    def build(self, spec: LayerSpec, *, shape: tuple[int, ...], dtype: np.dtype, gamma: np.ndarray,
              beta: np.ndarray, use_defaults: bool) -> LayerSession:
        """A fresh layer for inputs of `shape` and `spec` (whose axis is the native one), with γ and β set.

        With `use_defaults`, the layer is built with the framework's own defaults for momentum, eps and
        the variance algorithm; only the channel axis, affine and running-statistics switches are set.
        """

    def run(self, inputs: LayerInputs, *, spec: LayerSpec, use_defaults: bool = False) -> LayerOutputs:
        """Run `inputs.steps` training steps (forward and backward with the given dy), then eval.

        The inputs' channel axis is ``spec.axis``; they are moved to the framework's native axis
        before the layer sees them and the results are moved back, so the outputs are in the
        inputs' layout.
        """
        ndim = inputs.xs[0].ndim
        axis = channel_axis(ndim, spec.axis)
        native = channel_axis(ndim, self.native_axis)

        def to_native(a: np.ndarray) -> np.ndarray:
            return np.ascontiguousarray(np.moveaxis(a, axis, native))

        def from_native(a: np.ndarray) -> np.ndarray:
            return np.moveaxis(a, native, axis)

        gamma, beta = inputs.affine_params(spec)
        session = self.build(spec.at_axis(native, ndim), shape=to_native(inputs.xs[0]).shape, dtype=inputs.dtype,
                             gamma=gamma, beta=beta, use_defaults=use_defaults)
        for x, dy in zip(inputs.xs, inputs.dys, strict=True):
            step = session.train_step(to_native(x), to_native(dy))
        stats = session.running_stats()
        return LayerOutputs(
            y=from_native(step.y),
            dx=from_native(step.dx),
            dgamma=step.dgamma if spec.affine else None,
            dbeta=step.dbeta if spec.affine else None,
            running_mean=None if stats is None else stats[0],
            running_var=None if stats is None else stats[1],
            y_eval=from_native(session.eval(to_native(inputs.x_eval))),
        )
