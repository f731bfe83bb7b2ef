"""The layer protocol every implementation runs: k training steps, then one eval pass.

`LayerInputs` goes in, `LayerOutputs` comes out, as NumPy arrays, whatever the normalization. The reference runs
it in float64 (each normalization's module, see normalization.py); each framework adapter runs the same protocol
on its own layer (see bnparity.frameworks.base).
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np

from .spec import LayerSpec

QUANTITIES = ("y", "dx", "dgamma", "dbeta", "running_mean", "running_var", "y_eval")


@dataclass(frozen=True)
class LayerInputs:
    """The data of one parity case.

    Attributes:
        xs: one input per training step, all of the same shape, channel axis at ``spec.axis``.
        dys: the upstream gradient dL/dy of each training step, shapes as ``xs``.
        x_eval: the input of the eval pass after the training steps.
        gamma: γ, of the spec's `param_shape` ((C,) for BatchNorm). Ignored (taken as ones) when the spec is not affine.
        beta: β, shaped as γ. Ignored (taken as zeros) when the spec is not affine (or has no β).
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
        if any(n == 0 for n in shape):
            raise ValueError(f"expected a non-empty input. Received: x.shape={shape}")

    @property
    def steps(self) -> int:
        return len(self.xs)

    @property
    def dtype(self) -> np.dtype:
        return self.xs[0].dtype

    def affine_params(self, spec: LayerSpec) -> tuple[np.ndarray, np.ndarray]:
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
