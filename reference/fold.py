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

import dataclasses

import numpy as np

from .alexnet import AlexNetSpec, BatchNorm, Conv, Dense, check_params, param_shapes, variant_spec
from .alexnet_numpy import conv2d


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


def grouped_conv2d(x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None, *, stride: int, padding: int,
                   groups: int) -> np.ndarray:
    """A grouped convolution (NCHW, weight (out, in/groups, kh, kw)) as `groups` ordinary ones, in float64.

    Group g reads input channels [g·C/G, (g+1)·C/G) and writes output channels [g·O/G, (g+1)·O/G);
    groups = C is the depthwise convolution. groups = 1 is bnparity.reference.alexnet_numpy.conv2d itself.
    """
    x = np.asarray(x, dtype=np.float64)
    w = np.asarray(weight, dtype=np.float64)
    out = w.shape[0]
    b = np.zeros(out) if bias is None else np.asarray(bias, dtype=np.float64)
    if x.shape[1] % groups or out % groups or w.shape[1] != x.shape[1] // groups:
        raise ValueError(f"groups={groups} must divide the {x.shape[1]} input and {out} output channels, and the "
                         f"weight must read {x.shape[1] // max(groups, 1)} input channels. Received: {w.shape}")
    c_in, c_out = x.shape[1] // groups, out // groups
    return np.concatenate([conv2d(x[:, g * c_in:(g + 1) * c_in], w[g * c_out:(g + 1) * c_out],
                                  b[g * c_out:(g + 1) * c_out], stride=stride, padding=padding)
                           for g in range(groups)], axis=1)


def bn_pairs(spec: AlexNetSpec) -> list[tuple[str, str]]:
    """(affine layer, BatchNorm layer) of every BatchNorm of `spec`, in order: the Conv or Dense it follows.

    Raises ValueError when a BatchNorm does not directly follow a Conv or Dense layer (nothing to fold it into).
    """
    pairs, before = [], None
    for layer in spec.layers:
        if isinstance(layer, BatchNorm):
            if not isinstance(before, Conv | Dense):
                raise ValueError(f"{layer.name} must follow a Conv or Dense layer to be folded. Received: {before}")
            pairs.append((before.name, layer.name))
        before = layer
    return pairs


def folded_spec(spec: AlexNetSpec) -> AlexNetSpec:
    """The network `spec` without its BatchNorm layers: what folding every BatchNorm leaves.

    It is the preset's "nobn" variant (bnparity.reference.alexnet.variant_spec) when that has the same layers in
    the same order; otherwise `spec` with the BatchNorm layers dropped.
    """
    layers = tuple(la for la in spec.layers if not isinstance(la, BatchNorm))
    try:
        nobn = variant_spec(spec.name, "nobn")
    except ValueError:  # a spec of no preset
        nobn = None
    if nobn is not None and nobn.layers == layers and nobn.input_shape == spec.input_shape:
        return nobn
    return dataclasses.replace(spec, layers=layers, batch_norm=False)


def fold_network(spec: AlexNetSpec, params: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Every BatchNorm of `spec` folded into the layer before it (`fold`), in float64: the canonical parameters of
    `folded_spec(spec)`, whose eval forward pass computes what `spec`'s does."""
    check_params(spec, params)
    out = {name: np.asarray(params[name], dtype=np.float64) for name in param_shapes(folded_spec(spec))}
    for affine, norm in bn_pairs(spec):
        out[f"{affine}.weight"], out[f"{affine}.bias"] = fold(
            params[f"{affine}.weight"], params[f"{affine}.bias"], params[f"{norm}.gamma"], params[f"{norm}.beta"],
            params[f"{norm}.running_mean"], params[f"{norm}.running_var"], spec.bn.eps)
    return out
