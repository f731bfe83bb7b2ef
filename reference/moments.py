"""Standardizing over a set of axes: the moments every normalization with a mean shares, each formula once.

Over the m values of one statistic group (which values form a group is each normalization's business: the
axes passed here):
    μ   = 1/m Σ x_i                                      mean
    σ²  = 1/m Σ (x_i − μ)²          ("two-pass")         biased variance
        = max(0, 1/m Σ x_i² − μ²)   ("fast")             the same in exact arithmetic
    x̂_i = (x_i − μ) / √(σ² + ε)                          standardized input
and, with g = dL/dx̂ (γ·dy for y = γ x̂ + β), the gradient through μ and σ²:
    dx_i = 1/√(σ² + ε) · (g_i − mean(g) − x̂_i · mean(g · x̂))
Every statistic keeps its reduced axes (keepdims), so it broadcasts against x.
"""

from __future__ import annotations

import numpy as np

from .spec import LayerSpec
from .steps import LayerInputs

Axes = tuple[int, ...]


def mean_and_variance(x: np.ndarray, axes: Axes, variance: str = "two-pass") -> tuple[np.ndarray, np.ndarray]:
    """(μ, σ²) over `axes`, kept as size-1 axes; σ² biased, by the spec's algorithm ("two-pass" or "fast")."""
    x = np.asarray(x, dtype=np.float64)
    mu = x.mean(axis=axes, keepdims=True)  # μ
    if variance == "two-pass":
        var = ((x - mu) ** 2).mean(axis=axes, keepdims=True)  # σ² = mean((x − μ)²)
    elif variance == "fast":
        # σ² = E[x²] − E[x]², clipped at 0 (rounding can make it negative), exactly as Flax does:
        # flax/linen/normalization.py:142: var = jnp.maximum(0.0, mu2 - _abs_sq(mu))
        var = np.maximum(0.0, (x**2).mean(axis=axes, keepdims=True) - mu**2)
    else:
        raise ValueError(f"variance must be 'two-pass' or 'fast'. Received: {variance!r}")
    return mu, var


def normalize_with(x: np.ndarray, mu: np.ndarray, var: np.ndarray, eps: float) -> tuple[np.ndarray, np.ndarray]:
    """(x̂, 1/√(σ² + ε)) for given statistics μ, σ² (the input's own, or running estimates), broadcast against x."""
    inv_std = 1.0 / np.sqrt(np.asarray(var, dtype=np.float64) + eps)  # 1/√(σ² + ε)
    x_hat = (np.asarray(x, dtype=np.float64) - mu) * inv_std  # x̂ = (x − μ)/√(σ² + ε)
    return x_hat, inv_std


def standardize(x: np.ndarray, axes: Axes, eps: float, variance: str = "two-pass") -> tuple[np.ndarray, np.ndarray]:
    """(x̂, 1/√(σ² + ε)) with x̂ = (x − μ)/√(σ² + ε), the statistics over `axes` of x itself."""
    mu, var = mean_and_variance(x, axes, variance)
    return normalize_with(x, mu, var, eps)


def standardize_backward(g: np.ndarray, x_hat: np.ndarray, inv_std: np.ndarray, axes: Axes) -> np.ndarray:
    """dx from g = dL/dx̂ when μ and σ² are x's own statistics over `axes`:
    dx = 1/√(σ² + ε) · (g − mean(g) − x̂ · mean(g · x̂)).

    The closed form of the two-pass σ²; a "fast" σ² is the same function of x in exact arithmetic, so its
    gradient is the same (the clip at 0 only acts on a constant group, where x̂ = 0 anyway).
    """
    g = np.asarray(g, dtype=np.float64)
    mean_g = g.mean(axis=axes, keepdims=True)  # mean(g): through μ
    mean_g_xhat = (g * x_hat).mean(axis=axes, keepdims=True)  # mean(g · x̂): through σ²
    return inv_std * (g - mean_g - x_hat * mean_g_xhat)


def standardize_backward_magnitude(g: np.ndarray, x_hat: np.ndarray, inv_std: np.ndarray, axes: Axes) -> np.ndarray:
    """The magnitude of dx's terms, |1/√(σ² + ε)| · (|g| + |mean(g)| + |x̂|·|mean(g · x̂)|): what an error in dx is
    judged against, so that a dx which cancels to near zero is not judged by its small value."""
    g = np.asarray(g, dtype=np.float64)
    return np.abs(inv_std) * (np.abs(g) + np.abs(g.mean(axis=axes, keepdims=True))
                              + np.abs(x_hat) * np.abs((g * x_hat).mean(axis=axes, keepdims=True)))


def sum_over_broadcast(a: np.ndarray, param: np.ndarray) -> np.ndarray:
    """Σ of `a` over every axis along which `param` is repeated when broadcast against `a` (NumPy's rule: aligned
    with a's trailing axes, missing or size-1 axes repeated), in param's shape:
    dγ = sum_over_broadcast(dy·x̂, γ), dβ = sum_over_broadcast(dy, β)."""
    a = np.asarray(a, dtype=np.float64)
    shape = np.shape(param)
    if len(shape) > a.ndim:
        raise ValueError(f"a parameter of shape {shape} does not broadcast against shape {a.shape}")
    aligned = (1,) * (a.ndim - len(shape)) + tuple(shape)  # param's shape with its missing leading axes as 1
    axes = tuple(i for i, n in enumerate(aligned) if n == 1)
    return a.sum(axis=axes, keepdims=True).reshape(shape)


def checked_params(spec: LayerSpec, inputs: LayerInputs, shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """(γ, β) as the layer uses them (inputs.affine_params(spec)), as float64, after checking that both have the
    shape spec.param_shape(shape). Raises ValueError naming the expected and received shapes."""
    expected = tuple(spec.param_shape(tuple(shape)))
    for name, value in (("gamma", inputs.gamma), ("beta", inputs.beta)):
        if tuple(np.shape(value)) != expected:
            raise ValueError(f"{type(spec).__name__}: {name} must have shape {expected} for inputs of shape "
                             f"{tuple(shape)}. Received: {tuple(np.shape(value))}")
    gamma, beta = inputs.affine_params(spec)
    return np.asarray(gamma, dtype=np.float64), np.asarray(beta, dtype=np.float64)
