"""Folding an eval-mode BatchNorm into the convolution or dense layer before it, in float64 NumPy.

In eval mode BatchNorm is a fixed affine map per output channel c of the layer before it,
    BN(z)_c = γ_c (z_c − μ_c) / √(σ²_c + ε) + β_c        (μ, σ²: the running statistics),
and that layer is linear, z_c = Σ W_c·x + b_c. So the two are one layer with
    s_c  = γ_c / √(σ²_c + ε)                            (the per-channel scale)
    W'_c = s_c · W_c                                      (every weight of output channel c)
    b'_c = s_c · (b_c − μ_c) + β_c                        (b_c = 0 for a layer without bias)
Grouped and depthwise convolutions fold the same way: output channel c's weights are W[c] whatever input channels
they read. Negative γ flips the channel; a running variance near 0 makes s large, and with it the rounding of the
folded weights (|s_c| · |W_c| · u), which is what a folded layer in float32 or float16 loses.

Weights are in the canonical layout of bnparity.reference.alexnet: (out, in/groups, kh, kw) for a convolution,
(out, in) for a dense layer; the output channel is axis 0 in both.
"""

from __future__ import annotations

import numpy as np


def bn_scale(gamma: np.ndarray, running_var: np.ndarray, eps: float) -> np.ndarray:
    """s_c = γ_c / √(σ²_c + ε), per output channel."""
    return np.asarray(gamma, dtype=np.float64) / np.sqrt(np.asarray(running_var, dtype=np.float64) + eps)


def fold(weight: np.ndarray, bias: np.ndarray | None, gamma: np.ndarray, beta: np.ndarray,
         running_mean: np.ndarray, running_var: np.ndarray, eps: float) -> tuple[np.ndarray, np.ndarray]:
    """(W', b') of the layer and the eval-mode BatchNorm after it, as one layer (module docstring).

    Raises ValueError when the BN parameters do not have one value per output channel (axis 0 of `weight`).
    """
    weight = np.asarray(weight, dtype=np.float64)
    out = weight.shape[0]
    for name, v in (("gamma", gamma), ("beta", beta), ("running_mean", running_mean), ("running_var", running_var)):
        if np.shape(v) != (out,):
            raise ValueError(f"{name} must have one value per output channel, shape ({out},). "
                             f"Received: {np.shape(v)}")
    s = bn_scale(gamma, running_var, eps)  # s_c
    b = np.zeros(out) if bias is None else np.asarray(bias, dtype=np.float64)
    folded_weight = s.reshape((out,) + (1,) * (weight.ndim - 1)) * weight  # W'_c = s_c · W_c
    folded_bias = s * (b - np.asarray(running_mean, dtype=np.float64)) + np.asarray(beta, dtype=np.float64)
    return folded_weight, folded_bias  # b'_c = s_c (b_c − μ_c) + β_c


def weight_growth(weight: np.ndarray, gamma: np.ndarray, running_var: np.ndarray, eps: float) -> float:
    """max_c |s_c| · max |W_c|: how large the folded weights get, relative to which their rounding is judged."""
    s = np.abs(bn_scale(gamma, running_var, eps))
    w = np.abs(np.asarray(weight, dtype=np.float64)).reshape(np.shape(weight)[0], -1).max(axis=1)
    return float((s * w).max())
