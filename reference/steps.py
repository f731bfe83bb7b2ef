"""The layer protocol every implementation runs: k training steps, then one eval pass.

`LayerInputs` goes in, `LayerOutputs` comes out, as NumPy arrays. The reference runs it here in float64;
each framework adapter runs the same protocol on its own BatchNorm layer (see bnparity.frameworks.base).
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np

from . import batchnorm as bn
from .spec import BNSpec

QUANTITIES = ("y", "dx", "dgamma", "dbeta", "running_mean", "running_var", "y_eval")


@dataclass(frozen=True)
class LayerInputs:
    """The data of one parity case.

    Attributes:
        xs: one input per training step, all of the same shape, channel axis at ``spec.axis``.
        dys: the upstream gradient dL/dy of each training step, shapes as ``xs``.
        x_eval: the input of the eval pass after the training steps.
        gamma: γ, shape (C,). Ignored (taken as ones) when the spec is not affine.
        beta: β, shape (C,). Ignored (taken as zeros) when the spec is not affine.
    """

    xs: tuple[np.ndarray, ...]
    dys: tuple[np.ndarray, ...]
    x_eval: np.ndarray
    gamma: np.ndarray
    beta: np.ndarray

    def __post_init__(self) -> None:
        if not self.xs or len(self.xs) != len(self.dys):
            raise ValueError(f"expected as many dys as xs (at least one). Received: {len(self.xs)} xs, "
                             f"{len(self.dys)} dys")
        shape = self.xs[0].shape
        for a in (*self.xs, *self.dys):
            if a.shape != shape:
                raise ValueError(f"every x and dy must have shape {shape}. Received: {a.shape}")

    @property
    def steps(self) -> int:
        return len(self.xs)

    @property
    def dtype(self) -> np.dtype:
        return self.xs[0].dtype

    def affine_params(self, spec: BNSpec) -> tuple[np.ndarray, np.ndarray]:
        """(γ, β) as the layer uses them: the given ones, or (1, 0) when the spec is not affine."""
        if spec.affine:
            return self.gamma, self.beta
        return np.ones_like(self.gamma), np.zeros_like(self.beta)


@dataclass(frozen=True)
class LayerOutputs:
    """What an implementation computed, as NumPy arrays (None where a quantity does not exist).

    y, dx, dgamma, dbeta are those of the *last* training step; running_mean and running_var are the
    running statistics after all training steps; y_eval is the eval-mode output on ``x_eval``.
    """

    y: np.ndarray
    dx: np.ndarray
    dgamma: np.ndarray | None
    dbeta: np.ndarray | None
    running_mean: np.ndarray | None
    running_var: np.ndarray | None
    y_eval: np.ndarray

    def as_dict(self) -> dict[str, np.ndarray | None]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


def run_reference(spec: BNSpec, inputs: LayerInputs) -> LayerOutputs:
    """The ground truth for one case: the protocol above, in float64."""
    gamma, beta = inputs.affine_params(spec)
    channels = gamma.shape[0]
    running_mean = np.full(channels, spec.init_running_mean, dtype=np.float64)
    running_var = np.full(channels, spec.init_running_var, dtype=np.float64)
    for x, dy in zip(inputs.xs, inputs.dys, strict=True):
        y, cache = bn.forward_train(x, gamma, beta, eps=spec.eps, axis=spec.axis)
        dx, dgamma, dbeta = bn.backward(dy, cache, gamma)
        m = bn.count_per_channel(x.shape, spec.axis)
        running_mean = bn.running_update(running_mean, cache.mu, spec)
        running_var = bn.running_update(running_var, bn.variance_for_running(cache.var, m, spec), spec)
    if spec.track_running_stats:
        y_eval = bn.forward_eval(inputs.x_eval, gamma, beta, running_mean, running_var,
                                 eps=spec.eps, axis=spec.axis)
    else:
        # Without running statistics, eval mode normalizes with the eval batch's own statistics.
        y_eval, _ = bn.forward_train(inputs.x_eval, gamma, beta, eps=spec.eps, axis=spec.axis)
    return LayerOutputs(
        y=y, dx=dx,
        dgamma=dgamma if spec.affine else None,
        dbeta=dbeta if spec.affine else None,
        running_mean=running_mean if spec.track_running_stats else None,
        running_var=running_var if spec.track_running_stats else None,
        y_eval=y_eval,
    )
