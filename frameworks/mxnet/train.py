"""The MXNet Trainer: the hybridized Gluon AlexNet under autograd.record(), gluon.Trainer('sgd').

The update equals PyTorch's (frameworks.training.SGDConfig), checked against torch by the model-parity suite:
- MXNet's SGD keeps mom ← μ·mom − lr·(g + λ·w), w ← w + mom (optimizer_op-inl.h, SGDMomKernel): for a
  constant lr, mom = −lr·v with PyTorch's v, so the steps are the same. Checkpoints store v = −mom/lr.
- The loss is SoftmaxCrossEntropyLoss per example; backward of that vector sums the gradients and
  Trainer.step(batch_size) rescales them by 1/batch_size: the gradient of the batch-mean loss, as torch.
- Weight decay applies to every parameter: Gluon's wd_mult is 1.0 on every Parameter, BN's γ and β and the
  biases included (gluon/nn/basic_layers.py sets none), and the running statistics (grad_req="null") are
  never updated by the optimizer.
Dropout uses MXNet's global generator, re-seeded before every training-mode pass from (seed, passes so far):
MXNet cannot save a generator's state, and this way a resumed run draws the same masks as an uninterrupted one.
"""

from __future__ import annotations

import os

import numpy as np

from bnparity.frameworks import training
from bnparity.reference.alexnet import (
    AlexNetSpec,
    check_params,
    momentum_key,
    param_shapes,
    params_fingerprint,
    trainable_names,
    training_dtype,
)

from ._mx import autograd, gluon, mx, nd
from .alexnet import AlexNet, from_canonical, to_canonical
from .convert import framework_device

SEED_KEY = "rng.mxnet_seed"
DRAWS_KEY = "rng.mxnet_draws"
STEP_KEY = "step"


class Trainer(training.Trainer):
    """AlexNet in MXNet Gluon with gluon.Trainer('sgd').

    Args:
        arch: the AlexNetSpec.
        params: canonical initial parameters.
        sgd: learning rate, momentum, weight decay.
        device: "cpu" or "gpu".
        seed: the dropout seed (re-applied with the step number before every step). Default: derived from
            `params`.
        dtype: "float32" (training) or "float64" (model-parity checks); arrays come back in it.
    """

    framework = "mxnet"

    def __init__(self, *, arch: AlexNetSpec, params: dict[str, np.ndarray], sgd: training.SGDConfig,
                 device: str = "cpu", seed: int | None = None, dtype: str = "float32") -> None:
        check_params(arch, params)
        self.arch, self.sgd = arch, sgd
        self.ctx = framework_device(device)
        self.dtype = training_dtype(dtype)
        if self.dtype == np.float64:
            # oneDNN has no float64 kernels: every op falls back to MXNet's own, which is correct but logs a
            # multi-line warning per operator unless this is 0 (read once, at the first fallback).
            os.environ.setdefault("MXNET_STORAGE_FALLBACK_LOG_VERBOSE", "0")
        self.seed = params_fingerprint(params) if seed is None else int(seed)
        self.model: AlexNet = from_canonical(arch, params, dtype=self.dtype, device=device)
        self._trainable = trainable_names(arch)
        parameters = self.model.by_name()
        self._params = [parameters[n] for n in self._trainable]  # index i of the optimizer
        self.trainer = gluon.Trainer(self._params, "sgd", {"learning_rate": sgd.lr, "momentum": sgd.momentum,
                                                           "wd": sgd.weight_decay})
        self.loss_fn = gluon.loss.SoftmaxCrossEntropyLoss()  # per example, from logits, integer labels
        self.steps = 0
        self.draws = 0  # training-mode passes that drew their own dropout masks

    def _arrays(self, x: np.ndarray, labels: np.ndarray) -> tuple[nd.NDArray, nd.NDArray]:
        """The batch as NDArrays of the network's dtype (labels too: the loss picks with them)."""
        return (nd.array(x, ctx=self.ctx, dtype=self.dtype),
                nd.array(np.asarray(labels), ctx=self.ctx, dtype=self.dtype))

    def _record(self, x: np.ndarray, labels: np.ndarray,
                masks: list[np.ndarray] | None) -> tuple[nd.NDArray, nd.NDArray, nd.NDArray]:
        """Training-mode forward and backward: (logits, per-example losses, labels)."""
        xs, ys = self._arrays(x, labels)
        ms = None if masks is None else [nd.array(m, ctx=self.ctx, dtype=self.dtype) for m in masks]
        if masks is None and self.arch.dropout > 0:
            seed = np.random.SeedSequence([self.seed, self.draws]).generate_state(1)[0]
            mx.random.seed(int(seed) % 2**31, ctx=self.ctx)
            self.draws += 1
        with autograd.record(train_mode=True):
            logits = self.model(xs, ms)
            losses = self.loss_fn(logits, ys)
        losses.backward()  # the gradient of the sum of the per-example losses
        return logits, losses, ys

    @staticmethod
    def _correct(logits: nd.NDArray, ys: nd.NDArray) -> int:
        return int((logits.argmax(axis=1) == ys).sum().asscalar())

    def train_step(self, x: np.ndarray, labels: np.ndarray, *,
                   dropout_masks: list[np.ndarray] | None = None) -> training.StepStats:
        logits, losses, ys = self._record(x, labels, dropout_masks)
        self.trainer.step(len(labels))  # rescales the summed gradients by 1/batch: the mean's gradient
        self.steps += 1
        return training.StepStats(loss=float(losses.mean().asscalar()), correct=self._correct(logits, ys))

    def evaluate(self, x: np.ndarray, labels: np.ndarray) -> tuple[float, int]:
        xs, ys = self._arrays(x, labels)
        logits = self.model(xs)  # outside autograd.record(): inference mode, running statistics
        return float(self.loss_fn(logits, ys).sum().asscalar()), self._correct(logits, ys)

    def gradients(self, x: np.ndarray, labels: np.ndarray, *,
                  dropout_masks: list[np.ndarray] | None = None) -> training.Gradients:
        logits, losses, _ = self._record(x, labels, dropout_masks)
        batch = len(labels)
        grads = {n: p.grad(self.ctx).asnumpy() / self.dtype.type(batch)
                 for n, p in zip(self._trainable, self._params, strict=True)}
        return training.Gradients(logits=logits.asnumpy(), loss=float(losses.mean().asscalar()), grads=grads)

    def _updater(self) -> mx.optimizer.Updater:
        return self.trainer._updaters[0]  # one context: one updater; gluon has no public accessor

    def state(self) -> dict[str, np.ndarray]:
        state = to_canonical(self.arch, self.model)
        if self.sgd.momentum:
            _save_momentum(state, self._updater(), self._trainable, self.dtype, self.sgd.lr)
        return _save_counters(state, self)

    def load_state(self, state: dict[str, np.ndarray]) -> None:
        check_params(self.arch, {n: state[n] for n in param_shapes(self.arch) if n in state})
        self.model.load(state)
        if self.sgd.momentum:
            _load_momentum(state, self._updater(), self.ctx, self._trainable, self.dtype, self.sgd.lr)
        _load_counters(state, self)


# --- checkpoint helpers, shared with data_parallel.py (one updater per context there) ---

def _save_momentum(state: dict[str, np.ndarray], updater: mx.optimizer.Updater, trainable: list[str],
                   dtype: np.dtype, lr: float) -> None:
    """The momentum buffers v of `updater` into `state`: MXNet's mom is −lr·v (see the module docstring)."""
    for i, n in enumerate(trainable):
        mom = updater.states.get(i)
        state[momentum_key(n)] = np.zeros_like(state[n]) if mom is None else mom.asnumpy() / dtype.type(-lr)


def _load_momentum(state: dict[str, np.ndarray], updater: mx.optimizer.Updater, ctx: mx.Context,
                   trainable: list[str], dtype: np.dtype, lr: float) -> None:
    """`state`'s momentum buffers into `updater` (on `ctx`), as mom = −lr·v."""
    for i, n in enumerate(trainable):
        mom = np.asarray(state[momentum_key(n)], dtype=dtype) * dtype.type(-lr)
        updater.states[i] = nd.array(mom, ctx=ctx, dtype=dtype)
        updater.states_synced[i] = True


def _save_counters(state: dict[str, np.ndarray], trainer: object) -> dict[str, np.ndarray]:
    """The dropout seed, the draws made from it and the step count into `state` (a resumed run continues them)."""
    state[SEED_KEY] = np.array(trainer.seed, dtype=np.int64)
    state[DRAWS_KEY] = np.array(trainer.draws, dtype=np.int64)
    state[STEP_KEY] = np.array(trainer.steps, dtype=np.int64)
    return state


def _load_counters(state: dict[str, np.ndarray], trainer: object) -> None:
    trainer.seed = int(state[SEED_KEY])
    trainer.draws = int(state[DRAWS_KEY])
    trainer.steps = int(state[STEP_KEY])
