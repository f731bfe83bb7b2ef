"""The AlexNet forward and backward passes in float64 NumPy: the ground truth for logits, loss, BN statistics
and gradients.

Convolution is an im2col (a strided window view) contracted with the weight by np.tensordot; max-pooling is
a max over the same window view; BatchNorm is bnparity.reference.batchnorm and GroupNorm
bnparity.reference.groupnorm (one copy of each normalization's formulas, forward and backward).
Dropout multiplies by injected masks (values 0 or 1/(1 − rate)), so the reference is deterministic.
`gradients` is the training-mode backward pass of the batch-mean cross-entropy, layer by layer in reverse.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from . import batchnorm as bn
from . import groupnorm as gn
from .alexnet import (
    AlexNetSpec,
    BatchNorm,
    Conv,
    Dense,
    Dropout,
    Flatten,
    GroupNorm,
    MaxPool,
    ReLU,
    layer_shapes,
    trainable_names,
)
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


def conv2d_backward(dy: np.ndarray, x: np.ndarray, weight: np.ndarray, *, stride: int,
                    padding: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(dx, dw, db) of `conv2d` given dL/dy:
    dw[o, c, u, v] = Σ_{n,i,j} dy[n, o, i, j] · x_pad[n, c, i·stride + u, j·stride + v],  db[o] = Σ_{n,i,j} dy,
    dx_pad[n, c, i·stride + u, j·stride + v] += Σ_o dy[n, o, i, j] · w[o, c, u, v]  (then the padding is cut)."""
    dy = np.asarray(dy, dtype=np.float64)
    x = np.asarray(x, dtype=np.float64)
    w = np.asarray(weight, dtype=np.float64)
    if padding:
        x = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    kh, kw = w.shape[2:]
    ho, wo = dy.shape[2:]
    windows = sliding_window_view(x, (kh, kw), axis=(2, 3))[:, :, ::stride, ::stride]  # (N, C, Ho, Wo, kh, kw)
    dw = np.tensordot(dy, windows, axes=([0, 2, 3], [0, 2, 3]))  # (O, C, kh, kw)
    dx = np.zeros_like(x)
    for u in range(kh):
        for v in range(kw):
            rows, cols = slice(u, u + stride * (ho - 1) + 1, stride), slice(v, v + stride * (wo - 1) + 1, stride)
            dx[:, :, rows, cols] += np.einsum("noij,oc->ncij", dy, w[:, :, u, v])
    if padding:
        dx = dx[:, :, padding:-padding, padding:-padding]
    return dx, dw, dy.sum(axis=(0, 2, 3))


def max_pool2d_backward(dy: np.ndarray, x: np.ndarray, *, kernel: int, stride: int) -> np.ndarray:
    """dx of `max_pool2d`: each window's dy goes to its maximum (the first in row-major order on a tie, as
    PyTorch's CPU kernel picks it); overlapping windows add up."""
    x = np.asarray(x, dtype=np.float64)
    windows = sliding_window_view(x, (kernel, kernel), axis=(2, 3))[:, :, ::stride, ::stride]
    n, c, ho, wo = windows.shape[:4]
    u, v = np.divmod(windows.reshape(n, c, ho, wo, kernel * kernel).argmax(axis=-1), kernel)  # offsets of the max
    ni, ci, i, j = np.indices((n, c, ho, wo))
    dx = np.zeros_like(x)
    np.add.at(dx, (ni, ci, i * stride + u, j * stride + v), np.asarray(dy, dtype=np.float64))
    return dx


def dense(x: np.ndarray, weight: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """y = x Wᵀ + b with W of shape (out, in)."""
    return np.asarray(x, dtype=np.float64) @ np.asarray(weight, dtype=np.float64).T + np.asarray(bias, np.float64)


def relu(x: np.ndarray) -> np.ndarray:
    return np.maximum(x, 0.0)


def cross_entropy_backward(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """dL/dz of the batch-mean cross-entropy: (softmax(z) − onehot(label)) / N."""
    z = np.asarray(logits, dtype=np.float64)
    p = np.exp(z - z.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)  # softmax(z)
    p[np.arange(len(z)), np.asarray(labels)] -= 1.0
    return p / len(z)


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


@dataclass(frozen=True)
class TapeEntry:
    """What the backward pass needs of one layer of a training forward pass: its input and the cache of its
    normalization (BN's TrainCache, GN's (x̂, 1/√(σ² + ε))) or dropout mask."""

    layer: object
    x: np.ndarray
    cache: object = None


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
            activations: dict[str, np.ndarray] | None = None,
            tape: list[TapeEntry] | None = None) -> ForwardResult:
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
        tape: if given, filled with one TapeEntry per layer, in order (what `backward` needs).
    """
    _check_masks(spec, dropout_masks, train)
    h = np.asarray(x, dtype=np.float64)
    stats: dict[str, BatchStats] = {}
    drop_index = 0
    for layer in spec.layers:
        def p(key: str, name: str = layer.name) -> np.ndarray:
            return params[f"{name}.{key}"]

        h_in, cache = h, None

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
        elif isinstance(layer, GroupNorm):  # the same in training and eval mode: the input's own groups
            h, x_hat, inv_std = gn.forward(h, p("gamma"), p("beta"), spec.gn_spec(layer))
            cache = (x_hat, inv_std)
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
                h, cache = h * mask, mask
            drop_index += 1
        else:
            raise TypeError(f"unknown layer {layer!r}")
        if activations is not None:
            activations[layer.name] = h
        if tape is not None:
            tape.append(TapeEntry(layer, h_in, cache))
    return ForwardResult(logits=h, batch_stats=stats)


def backward(spec: AlexNetSpec, params: dict[str, np.ndarray], tape: list[TapeEntry],
             dlogits: np.ndarray) -> dict[str, np.ndarray]:
    """dL/dp of every trainable parameter (canonical names and order), given dL/dlogits and the tape of a
    training-mode `forward` (BN with batch statistics)."""
    grads: dict[str, np.ndarray] = {}
    d = np.asarray(dlogits, dtype=np.float64)
    for entry in reversed(tape):
        layer, x, cache = entry.layer, entry.x, entry.cache
        name = layer.name
        if isinstance(layer, Conv):
            d, grads[f"{name}.weight"], grads[f"{name}.bias"] = conv2d_backward(
                d, x, params[f"{name}.weight"], stride=layer.stride, padding=layer.padding)
        elif isinstance(layer, Dense):
            grads[f"{name}.weight"], grads[f"{name}.bias"] = d.T @ x, d.sum(axis=0)  # dW = dyᵀ x, db = Σ dy
            d = d @ np.asarray(params[f"{name}.weight"], dtype=np.float64)  # dx = dy W
        elif isinstance(layer, BatchNorm):
            d, grads[f"{name}.gamma"], grads[f"{name}.beta"] = bn.backward(d, cache, params[f"{name}.gamma"])
        elif isinstance(layer, GroupNorm):
            x_hat, inv_std = cache
            d, grads[f"{name}.gamma"], grads[f"{name}.beta"] = gn.backward(
                d, x_hat, inv_std, params[f"{name}.gamma"], spec.gn_spec(layer))
        elif isinstance(layer, ReLU):
            d = d * (x > 0)
        elif isinstance(layer, MaxPool):
            d = max_pool2d_backward(d, x, kernel=layer.kernel, stride=layer.stride)
        elif isinstance(layer, Flatten):
            d = d.reshape(x.shape)
        elif isinstance(layer, Dropout):
            d = d if cache is None else d * cache
        else:
            raise TypeError(f"unknown layer {layer!r}")
    return {n: grads[n] for n in trainable_names(spec)}


@dataclass(frozen=True)
class GradientResult:
    """A training-mode forward and backward pass: logits, batch-mean loss, dL/dp, BN batch statistics."""

    logits: np.ndarray
    loss: float
    grads: dict[str, np.ndarray]
    batch_stats: dict[str, BatchStats]


def gradients(spec: AlexNetSpec, params: dict[str, np.ndarray], x: np.ndarray, labels: np.ndarray, *,
              dropout_masks: list[np.ndarray] | None = None,
              activations: dict[str, np.ndarray] | None = None) -> GradientResult:
    """The gradient of the batch-mean cross-entropy in training mode (what every Trainer's `gradients` returns).

    `dropout_masks` and `activations` are `forward`'s."""
    tape: list[TapeEntry] = []
    result = forward(spec, params, x, train=True, dropout_masks=dropout_masks, activations=activations, tape=tape)
    grads = backward(spec, params, tape, cross_entropy_backward(result.logits, labels))
    return GradientResult(logits=result.logits, loss=cross_entropy(result.logits, labels), grads=grads,
                          batch_stats=result.batch_stats)


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


def sgd_step(params: dict[str, np.ndarray], grads: dict[str, np.ndarray], *, lr: float, momentum: float = 0.0,
             weight_decay: float = 0.0, buffers: dict[str, np.ndarray] | None = None,
             ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """One SGD step on the parameters named in `grads`, in float64 (PyTorch's formulation, frameworks.training's
    SGDConfig): v ← μ·v + (g + λ·p),  p ← p − lr·v, with v = 0 before the first step.

    Args:
        params: canonical parameters (others, e.g. BN running statistics, are passed through unchanged).
        grads: dL/dp of the parameters to update.
        lr: the learning rate.
        momentum: μ (0: plain SGD, p ← p − lr·(g + λ·p)).
        weight_decay: λ.
        buffers: v of the previous step, by parameter name (None: the first step).

    Returns:
        (parameters after the step, v after the step).
    """
    new = dict(params)
    velocity: dict[str, np.ndarray] = {}
    for name, g in grads.items():
        p = np.asarray(params[name], dtype=np.float64)
        d = np.asarray(g, dtype=np.float64) + weight_decay * p  # g + λ·p
        v = d if buffers is None or name not in buffers else momentum * buffers[name] + d
        velocity[name] = v
        new[name] = p - lr * v
    return new, velocity
