"""The AlexNet forward pass in float64 NumPy: the ground truth for logits, loss and BN statistics.

Convolution is an im2col (a strided window view) contracted with the weight by np.tensordot; max-pooling is
a max over the same window view; BatchNorm is bnparity.reference.batchnorm (one copy of the formulas).
Dropout multiplies by injected masks (values 0 or 1/(1 − rate)), so the reference is deterministic.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from . import batchnorm as bn
from .alexnet import AlexNetSpec, BatchNorm, Conv, Dense, Dropout, Flatten, MaxPool, ReLU, layer_shapes
from .spec import BNSpec


def conv2d(x: np.ndarray, weight: np.ndarray, bias: np.ndarray, *, stride: int, padding: int) -> np.ndarray:
    """y[n, o, i, j] = b[o] + Σ_{c,u,v} w[o, c, u, v] · x_pad[n, c, i·stride + u, j·stride + v] (NCHW, OIHW)."""
    x = np.asarray(x, dtype=np.float64)
    w = np.asarray(weight, dtype=np.float64)
    if padding:
        x = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    kh, kw = w.shape[2:]
    windows = sliding_window_view(x, (kh, kw), axis=(2, 3))[:, :, ::stride, ::stride]  # (N, C, Ho, Wo, kh, kw)
    y = np.tensordot(windows, w, axes=([1, 4, 5], [1, 2, 3]))  # (N, Ho, Wo, O)
    return y.transpose(0, 3, 1, 2) + np.asarray(bias, dtype=np.float64).reshape(1, -1, 1, 1)


def max_pool2d(x: np.ndarray, *, kernel: int, stride: int) -> np.ndarray:
    """The maximum over each kernel x kernel window, windows `stride` apart, no padding (NCHW)."""
    windows = sliding_window_view(np.asarray(x, dtype=np.float64), (kernel, kernel), axis=(2, 3))
    return windows[:, :, ::stride, ::stride].max(axis=(-2, -1))


def dense(x: np.ndarray, weight: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """y = x Wᵀ + b with W of shape (out, in)."""
    return np.asarray(x, dtype=np.float64) @ np.asarray(weight, dtype=np.float64).T + np.asarray(bias, np.float64)


def relu(x: np.ndarray) -> np.ndarray:
    return np.maximum(x, 0.0)


def per_example_loss(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Softmax cross-entropy of each example: logsumexp(z) − z[label] (shifted by max z for stability)."""
    z = np.asarray(logits, dtype=np.float64)
    shifted = z - z.max(axis=1, keepdims=True)
    log_norm = np.log(np.exp(shifted).sum(axis=1))
    return log_norm - shifted[np.arange(len(z)), np.asarray(labels)]


def cross_entropy(logits: np.ndarray, labels: np.ndarray) -> float:
    """The mean softmax cross-entropy over the batch (what every trainer minimizes)."""
    return float(per_example_loss(logits, labels).mean())


@dataclass(frozen=True)
class BatchStats:
    """One BN layer's batch statistics in a training forward pass."""

    mean: np.ndarray  # μ_B
    var: np.ndarray  # σ²_B, biased
    count: int  # m: values per channel


@dataclass(frozen=True)
class ForwardResult:
    logits: np.ndarray
    batch_stats: dict[str, BatchStats]


def _check_masks(spec: AlexNetSpec, masks: list[np.ndarray] | None, train: bool) -> None:
    n_drop = len(spec.dropout_layers)
    if masks is None:
        if train and spec.dropout > 0:
            raise ValueError(f"the reference needs dropout_masks in training mode when dropout > 0. "
                             f"Received: dropout={spec.dropout}, no masks")
    elif len(masks) != n_drop:
        raise ValueError(f"expected one dropout mask per dropout layer ({n_drop}). Received: {len(masks)}")


def forward(spec: AlexNetSpec, params: dict[str, np.ndarray], x: np.ndarray, *, train: bool,
            dropout_masks: list[np.ndarray] | None = None,
            activations: dict[str, np.ndarray] | None = None) -> ForwardResult:
    """The network on a NCHW batch, in float64.

    Args:
        spec: the network.
        params: canonical parameters (bnparity.reference.alexnet layout).
        x: input of shape (N, C, H, W).
        train: BN normalizes with batch statistics (and reports them) and dropout uses the masks; otherwise
            BN uses the running statistics in `params` and dropout is the identity.
        dropout_masks: one (N, features) mask per dropout layer, values 0 or 1/(1 − rate). Required in
            training mode when the dropout rate is not 0; ignored in eval mode.
        activations: if given, filled with every layer's output, by layer name.
    """
    _check_masks(spec, dropout_masks, train)
    h = np.asarray(x, dtype=np.float64)
    stats: dict[str, BatchStats] = {}
    drop_index = 0
    for layer in spec.layers:
        def p(key: str, name: str = layer.name) -> np.ndarray:
            return params[f"{name}.{key}"]

        if isinstance(layer, Conv):
            h = conv2d(h, p("weight"), p("bias"), stride=layer.stride, padding=layer.padding)
        elif isinstance(layer, Dense):
            h = dense(h, p("weight"), p("bias"))
        elif isinstance(layer, BatchNorm):
            eps = spec.bn.eps
            if train:
                h, cache = bn.forward_train(h, p("gamma"), p("beta"), eps=eps, axis=1)
                stats[layer.name] = BatchStats(cache.mu, cache.var, bn.count_per_channel(h.shape, 1))
            else:
                h = bn.forward_eval(h, p("gamma"), p("beta"), p("running_mean"), p("running_var"), eps=eps, axis=1)
        elif isinstance(layer, ReLU):
            h = relu(h)
        elif isinstance(layer, MaxPool):
            h = max_pool2d(h, kernel=layer.kernel, stride=layer.stride)
        elif isinstance(layer, Flatten):
            h = h.reshape(h.shape[0], -1)  # (C, H, W) order
        elif isinstance(layer, Dropout):
            if train and dropout_masks is not None:
                mask = np.asarray(dropout_masks[drop_index], dtype=np.float64)
                if mask.shape != h.shape:
                    raise ValueError(f"dropout mask {drop_index} must have shape {h.shape}. Received: {mask.shape}")
                h = h * mask
            drop_index += 1
        else:
            raise TypeError(f"unknown layer {layer!r}")
        if activations is not None:
            activations[layer.name] = h
    return ForwardResult(logits=h, batch_stats=stats)


def running_after_step(spec: AlexNetSpec, params: dict[str, np.ndarray], stats: dict[str, BatchStats], *,
                       convention: BNSpec) -> dict[str, np.ndarray]:
    """The BN running statistics after one training step with batch statistics `stats`, in `convention`.

    Args:
        spec: the network.
        params: the running statistics before the step (canonical names).
        stats: the batch statistics of the step (from `forward(..., train=True)`).
        convention: the framework's BN convention (momentum direction, running-variance estimator).
    """
    out: dict[str, np.ndarray] = {}
    for name, s in stats.items():
        out[f"{name}.running_mean"] = bn.running_update(params[f"{name}.running_mean"], s.mean, convention)
        stored = bn.variance_for_running(s.var, s.count, convention)
        out[f"{name}.running_var"] = bn.running_update(params[f"{name}.running_var"], stored, convention)
    return out


def dropout_masks(spec: AlexNetSpec, *, batch: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Random float32 masks for every dropout layer: 0 with probability `rate`, else 1/(1 − rate)."""
    rate = spec.dropout
    return [((rng.random((batch, *s.in_shape)) >= rate) / (1.0 - rate)).astype(np.float32)
            for s in layer_shapes(spec) if isinstance(s.layer, Dropout)]
