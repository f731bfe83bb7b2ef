"""The MXNet DataParallelTrainer: one Gluon AlexNet on R real contexts (mx.cpu(0)…mx.cpu(R−1)), gluon.Trainer with
a kvstore.

Each step is the single-device Trainer's (frameworks/mxnet/train.py: the same AlexNet, SoftmaxCrossEntropyLoss,
SGD formulation and checkpoint keys) spread over the contexts, as Gluon's own multi-device recipe does it:

- the model is initialized on every context (Parameter.initialize(ctx=[...]): one copy per context) from the
  canonical parameters. Which BatchNorm runs when:
  - bn_sync="local", any dtype: nn.BatchNorm (each context normalizes with its own shard's statistics and updates
    its own running statistics);
  - "sync", float32: gluon.contrib.nn.SyncBatchNorm(num_devices=R) (frameworks/mxnet/alexnet.py,
    `AlexNet(spec, sync_devices=R)`): the operator sums every context's shard mean and mean of squares in a
    barrier keyed by the block's prefix and divides by R (equal weights: with equal shards, the global batch's
    statistics), so every context's running statistics stay the same;
  - "sync", float64: SyncBatchNorm has no float64 kernel (Limits below), so the network keeps its nn.BatchNorm
    blocks (they hold γ, β and the running statistics on every context, saved and loaded as usual) but the pass
    (`_layerwise_pass`) never calls them: at each BN layer it runs the scratch cross-context BatchNorm of
    frameworks/mxnet/replicas.py (`_scratch_forward`, `_scratch_backward`, ScratchSyncBatchNorm's closed form) on
    every context's input at once, in mx.nd ops. Each context computes its count m_r, mean μ_r and centred sum
    M₂,r = Σ (x − μ_r)²; they are copied to context 0, combined there by Chan's count-weighted formulas
    (μ = Σ m_r μ_r / m, M₂ = Σ [M₂,r + m_r (μ_r − μ)²]) and the global μ and σ² = M₂/m copied back, so every
    context normalizes with the global batch's statistics. The backward is dx = γ/√(σ²+ε)·(dy − Σdy/m −
    x̂·Σdy·x̂/m) with Σdy and Σdy·x̂ all-reduced the same way; dγ = Σdy·x̂ and dβ = Σdy are each context's own
    (written into the Parameters' gradients), which the kvstore sums like every other gradient. The running
    statistics move with the GLOBAL batch's μ and biased σ² in nn.BatchNorm's convention (momentum a float32
    weighing the old value, ε a double, two-pass σ²: `_scratch_bn_spec`), the same arrays on every context. Being
    count-weighted it is the global batch's BatchNorm for any shards, so with the equal shards used here it is
    also what SyncBatchNorm computes (in exact arithmetic: SyncBatchNorm's one-pass σ² = E[x²] − μ² rounds
    differently), and in float64 one step equals the single-device step to rounding
    (tests/test_mxnet_data_parallel.py: measured ≤ 4e-14 of each layer's magnitude, R = 2 and 4);
- the global batch (and its dropout masks) is split into R equal shards in order
  (bnparity.reference.crossreplica.shard_sizes; a batch that R does not divide raises ValueError), shard r
  copied to context r; under autograd.record() each context runs its forward pass and per-example losses, then
  autograd.backward on every context's losses (each context's gradient: the sum over its shard); in "sync" mode
  the same pass layer by layer (see the deadlocks below);
- `gluon.Trainer(..., kvstore="device", update_on_kvstore=False)`.step(global batch): the kvstore sums the
  contexts' gradients (pushpull) into every context, and each context's updater applies MXNet's SGD with
  rescale_grad = 1/global batch: the gradient of the global batch's mean loss, the same update on every copy.
  update_on_kvstore=False keeps the optimizer state per context, as the single-device Trainer holds it
  (Trainer._updaters), and lets `gradients` read the reduced gradients (Trainer.allreduce_grads) without an
  update. The SGD mapping (mom = −lr·v) and weight decay on every parameter are train.py's.

The saved model (`state`, `evaluate`) is what `Block.save_parameters` writes: every parameter's
`Parameter._reduce()`, the MEAN of its copies over the contexts (gluon/parameter.py `_reduce`: add_n of the copies
/ R; gluon/block.py save_parameters). For the running statistics that is the mean over the contexts
(SAVED_RUNNING = "mean"; in "sync" mode the copies are equal). For the learned parameters, which every context
holds alike, `state` returns context 0's copy instead: the mean of R equal copies is not always the copy (the sum
rounds when R is not a power of two: for R = 3, _reduce() moves 15% of the tiny AlexNet's float32 weights by an
ulp, measured; none of its float64 ones), and a resumed run must continue exactly. `evaluate` runs the saved
model on a single-context copy of the network (plain nn.BatchNorm in inference mode: SyncBatchNorm's inference is
the same formula), so evaluating changes no context's state; `load_state` gives every context the state.

Limits of MXNet 1.9.1, measured here:
- SyncBatchNorm has no float64 kernel (its operator reads every tensor as float32: "TBlob.get_with_shape: data
  type do not match specified type"): bn_sync="sync" in float64 runs the scratch BatchNorm above instead.
  SyncBatchNorm parses ε as a float32 (nn.BatchNorm's is a double) and computes σ² = E[x²] − μ² (one
  pass): in float32 it differs from the single-device nn.BatchNorm step by ~1e-5 of a layer's largest value,
  already with one context (tests/test_mxnet_data_parallel.py).
- Deadlocks. SyncBatchNorm's forward and backward block in an engine worker thread until all R contexts reach the
  layer's barrier (keyed by the block's prefix). Every CPU context draws its temporary workspace from ONE pool of
  MXNET_CPU_TEMP_COPY copies (default 4), handed out round-robin, and the engine runs the operators that share a
  copy in push order. Pushing context 0's whole pass before context 1's (Gluon's usual loop, and
  autograd.backward over every context's losses) therefore deadlocks: an operator of context 0 after a barrier
  holds a copy that an operator of context 1 before the same barrier waits for (measured: the tiny AlexNet's
  first training step hangs, forward and backward, whichever hybridization; the random resource of Dropout is
  shared the same way). So in "sync" mode the pass goes layer by layer (`_layerwise_pass`): every context's copy
  of a layer, forward and then backward, before the next layer. Then only the R barrier operators of one layer
  are pushed in a row, and they must not share a workspace copy: MXNET_CPU_TEMP_COPY ≥ R (R = 8 hangs with the
  default 4, runs with 8). R = 4 also hangs with MXNET_CPU_WORKER_NTHREADS=1 (runs with 2 and 4). Both are read
  when MXNet starts; the constructor refuses (RuntimeError, one line) a "sync" run on CPU whose environment
  sets either below R (unset: MXNet's defaults 4 and 1) rather than hang, and so does MXNET_ENGINE_TYPE=NaiveEngine
  (synchronous: the first barrier waits forever, measured). The float64 "sync" pass has no barrier (its
  all-reduce is copies pushed from Python, after every context's input is pushed), so none of this applies to it;
  it runs layer by layer only because a BN layer needs every context's input at once. bn_sync="local" has no
  barrier and runs each context's network whole (its hybridized graph), as the single-device Trainer.
- Dropout without given masks: the generator is re-seeded before every training-mode pass from (seed, passes so
  far), context by context, as train.py does; the contexts draw different masks, the same ones again after
  load_state.
`mx.nd.waitall()` ends every step, so a step's errors surface in it.
"""

from __future__ import annotations

import os

import numpy as np

from bnparity.frameworks import training
from bnparity.reference.alexnet import (
    AlexNetSpec,
    check_params,
    param_shapes,
    params_fingerprint,
    running_names,
    trainable_names,
    training_dtype,
)
from bnparity.reference.crossreplica import shard_sizes
from bnparity.reference.spec import BNSpec

from ._mx import autograd, gluon, mx, nd
from .alexnet import AlexNet, from_canonical
from .convert import framework_momentum, to_numpy
from .descriptor import DESCRIPTOR
from .replicas import _scratch_backward, _scratch_forward
from .train import _load_counters, _load_momentum, _save_counters, _save_momentum

SAVED_RUNNING = "mean"  # what `state` saves of the per-context running statistics (Parameter._reduce)
KVSTORE = "device"  # gluon.Trainer's default; "local" reduces on the CPU instead (same sums)


def _contexts(device: str, replicas: int) -> list[mx.Context]:
    """mx.cpu(0)…mx.cpu(R−1), or the first R GPUs. Raises RuntimeError (one line) when there are too few GPUs."""
    if device == "cpu":
        return [mx.cpu(i) for i in range(replicas)]
    if device in ("gpu", "cuda"):
        gpus = mx.context.num_gpus()
        if gpus == 0:
            raise RuntimeError(f"--device {device}: MXNet sees no GPU here (mx.context.num_gpus() is 0)")
        if gpus < replicas:
            raise RuntimeError(f"mxnet: {replicas} replicas need {replicas} GPUs, MXNet sees {gpus}; "
                               "use fewer replicas")
        return [mx.gpu(i) for i in range(replicas)]
    raise ValueError(f"device must be 'cpu' or 'gpu'. Received: {device!r}")


# What SyncBatchNorm on R CPU contexts needs of the engine (the module docstring): variable -> (MXNet's default).
SYNC_ENGINE_ENV = {"MXNET_CPU_TEMP_COPY": 4, "MXNET_CPU_WORKER_NTHREADS": 1}


def _check_sync_engine(device: str, replicas: int) -> None:
    """Raise RuntimeError (one line) where SyncBatchNorm over `replicas` contexts would hang (the module docstring)."""
    if os.environ.get("MXNET_ENGINE_TYPE", "") == "NaiveEngine":
        raise RuntimeError("mxnet: SyncBatchNorm hangs under MXNET_ENGINE_TYPE=NaiveEngine (each context's barrier "
                           "waits for contexts that never run); unset it")
    if device != "cpu":
        return
    low = {k: int(os.environ.get(k, default)) for k, default in SYNC_ENGINE_ENV.items()}
    low = {k: v for k, v in low.items() if v < replicas}
    if low:
        now = ", ".join(f"{k}={v}" for k, v in low.items())
        need = " ".join(f"{k}={replicas}" for k in low)
        raise RuntimeError(f"mxnet: SyncBatchNorm on {replicas} CPU contexts hangs with {now}; start Python with "
                           f"{need} (read when MXNet starts)")


def _scratch_bn_spec(bn: BNSpec) -> BNSpec:
    """What the single-device Trainer's nn.BatchNorm computes, as the BNSpec the scratch BatchNorm follows: MXNet's
    momentum (rounded to float32, weighing the old value), the biased σ² stored, a two-pass σ², ε as given (the
    operator's is a double)."""
    return bn.replace(momentum=framework_momentum(bn), momentum_weighs="old", running_var="biased",
                      variance="two-pass")


class DataParallelTrainer(training.DataParallelTrainer):
    """AlexNet in MXNet Gluon on R contexts with gluon.Trainer('sgd') over a kvstore (module docstring).

    Args:
        arch: the AlexNetSpec.
        params: canonical initial parameters (every context gets them).
        sgd: learning rate, momentum, weight decay.
        replicas: R, the number of contexts.
        bn_sync: "sync" (the global batch's statistics over the R contexts: gluon.contrib.nn.SyncBatchNorm in
            float32, the scratch count-weighted all-reduce BatchNorm in float64) or "local" (nn.BatchNorm: each
            context's own shard's statistics).
        device: "cpu" (mx.cpu(0)…mx.cpu(R−1)) or "gpu" (mx.gpu(0)…mx.gpu(R−1)).
        dtype: "float32" (training) or "float64" (parity checks).
        seed: the dropout seed (re-applied with the pass number before every training-mode pass). Default:
            derived from `params`, as the single-device Trainer.

    Raises:
        ValueError: an unknown bn_sync, dtype or device, or replicas < 1.
        RuntimeError: device="gpu" with fewer than R GPUs (none: "MXNet sees no GPU here"); bn_sync="sync" in
            float32 where SyncBatchNorm would hang: on CPU with MXNET_CPU_TEMP_COPY or MXNET_CPU_WORKER_NTHREADS
            below R, or under MXNET_ENGINE_TYPE=NaiveEngine. Each one line.
    """

    framework = DESCRIPTOR.name
    saved_running = SAVED_RUNNING

    def __init__(self, *, arch: AlexNetSpec, params: dict[str, np.ndarray], sgd: training.SGDConfig, replicas: int,
                 bn_sync: str, device: str = "cpu", dtype: str = "float32", seed: int | None = None) -> None:
        replicas, bn_sync = self.checked(replicas, bn_sync)
        check_params(arch, params)
        self.arch, self.sgd, self.replicas, self.bn_sync = arch, sgd, replicas, bn_sync
        self.dtype = training_dtype(dtype)
        # float64 "sync": the scratch BatchNorm on nn.BatchNorm blocks (SyncBatchNorm has no float64 kernel).
        self._scratch_bn = bn_sync == "sync" and self.dtype == np.float64
        self._bn_spec = _scratch_bn_spec(arch.bn)
        builtin_sync = bn_sync == "sync" and not self._scratch_bn
        if builtin_sync:
            _check_sync_engine(device, self.replicas)
        self.device_name = device
        self.ctxs = _contexts(device, self.replicas)
        if self.dtype == np.float64:
            # As train.py: oneDNN has no float64 kernels, and each fallback logs a multi-line warning unless 0.
            os.environ.setdefault("MXNET_STORAGE_FALLBACK_LOG_VERBOSE", "0")
        self.seed = params_fingerprint(params) if seed is None else int(seed)
        self.model = AlexNet(arch, sync_devices=self.replicas if builtin_sync else None)
        self.model.initialize(ctx=self.ctxs)
        self.model.cast(self.dtype.name)
        self.model.load(params)  # Parameter.set_data writes every context's copy
        self.model.hybridize(static_alloc=True)
        self._trainable = trainable_names(arch)
        self._running = running_names(arch)
        parameters = self.model.by_name()
        self._params = [parameters[n] for n in self._trainable]  # index i of the optimizer
        self.trainer = gluon.Trainer(self._params, "sgd", {"learning_rate": sgd.lr, "momentum": sgd.momentum,
                                                           "wd": sgd.weight_decay},
                                     kvstore=KVSTORE, update_on_kvstore=False)
        self.loss_fn = gluon.loss.SoftmaxCrossEntropyLoss()  # per example, from logits, integer labels
        self._eval_model: AlexNet | None = None  # a single-context copy for `evaluate`, built on first use
        self.steps = 0
        self.draws = 0  # training-mode passes that drew their own dropout masks
        self._closed = False

    # --- the pieces of a step ---

    def _shards(self, x: np.ndarray, labels: np.ndarray,
                masks: list[np.ndarray] | None) -> tuple[list[nd.NDArray], list[nd.NDArray], list | None]:
        """Shard r of x, labels and masks on context r: R equal shards of the global batch, in order."""
        n = int(np.shape(x)[0])
        sizes = shard_sizes(n, self.replicas)
        if len(set(sizes)) != 1:
            raise ValueError(f"mxnet data-parallel: a global batch of {n} does not split into {self.replicas} equal "
                             f"shards (shard_sizes gives {sizes}); use a batch that {self.replicas} divides")
        bounds = np.cumsum((0, *sizes))
        cuts = list(zip(bounds[:-1], bounds[1:], strict=True))
        x, labels = np.asarray(x), np.asarray(labels)
        xs = [nd.array(x[a:b], ctx=c, dtype=self.dtype) for (a, b), c in zip(cuts, self.ctxs, strict=True)]
        ys = [nd.array(labels[a:b], ctx=c, dtype=self.dtype) for (a, b), c in zip(cuts, self.ctxs, strict=True)]
        if masks is None:
            return xs, ys, None
        ms = [[nd.array(np.asarray(m)[a:b], ctx=c, dtype=self.dtype) for m in masks]
              for (a, b), c in zip(cuts, self.ctxs, strict=True)]
        return xs, ys, ms

    def _whole_pass(self, xs: list[nd.NDArray], ys: list[nd.NDArray],
                    ms: list | None) -> tuple[list[nd.NDArray], list[nd.NDArray]]:
        """Each context's network whole (its hybridized graph), as the single-device Trainer; then autograd.backward
        of every context's losses. (logits, per-example losses), per context."""
        with autograd.record(train_mode=True):
            logits = [self.model(x) if ms is None else self.model(x, m)
                      for x, m in zip(xs, ms or [None] * len(xs), strict=True)]
            losses = [self.loss_fn(z, y) for z, y in zip(logits, ys, strict=True)]
        autograd.backward(losses)  # every context: the gradient of the sum of its shard's per-example losses
        return logits, losses

    def _layerwise_pass(self, xs: list[nd.NDArray], ys: list[nd.NDArray],
                        ms: list | None) -> tuple[list[nd.NDArray], list[nd.NDArray]]:
        """The same pass pushed to the engine layer by layer, every context's copy of a layer before the next layer,
        forward and backward (what SyncBatchNorm needs here: the module docstring). Each block is recorded on its
        own, its input a detached copy with a gradient; the backward runs the blocks top down, context by context
        within a block, each from the gradient its successor gave its input: the chain rule of the whole graph,
        with the same operators. In float64 "sync" mode a BN layer is the scratch cross-context BatchNorm instead
        (the module docstring): its forward on every context's input at once, unrecorded, and its closed-form
        backward, which writes each context's dγ and dβ. (logits, per-example losses), per context."""
        blocks = list(self.model._blocks.values())
        drop = [i for i, b in enumerate(blocks) if isinstance(b, gluon.nn.Dropout)]
        masks = {} if ms is None else {i: [m[k] for m in ms] for k, i in enumerate(drop)}
        scratch = {i for i, b in enumerate(blocks) if self._scratch_bn and isinstance(b, gluon.nn.BatchNorm)}
        stages: list[tuple[list[nd.NDArray], list[nd.NDArray], tuple | None]] = []  # (inputs, outputs, BN saved)
        h = xs
        with autograd.record(train_mode=True):
            for i, block in enumerate(blocks):
                if i:  # the data needs no gradient; every later input does
                    h = [a.detach() for a in h]
                    for a in h:
                        a.attach_grad()
                saved = None
                if i in scratch:
                    with autograd.pause(train_mode=True):  # differentiated in closed form below
                        out, saved = _scratch_forward(h, block, self.ctxs, self._bn_spec, True)
                elif i in masks:
                    out = [a * m for a, m in zip(h, masks[i], strict=True)]
                else:
                    out = [block(a) for a in h]
                stages.append((h, out, saved))
                h = out
            logits = [a.detach() for a in h]
            for a in logits:
                a.attach_grad()
            losses = [self.loss_fn(z, y) for z, y in zip(logits, ys, strict=True)]
        for loss in losses:
            loss.backward()  # the gradient of the sum of the shard's per-example losses, w.r.t. its logits
        upstream = [a.grad for a in logits]
        for i in range(len(stages) - 1, -1, -1):
            inputs, outputs, saved = stages[i]
            if saved is not None:
                upstream = self._scratch_bn_backward(blocks[i], upstream, saved)
                continue
            for out, grad in zip(outputs, upstream, strict=True):
                out.backward(out_grad=grad)
            if i:
                upstream = [a.grad for a in inputs]
        return logits, losses

    def _scratch_bn_backward(self, block: gluon.nn.BatchNorm, dys: list[nd.NDArray],
                             saved: tuple) -> list[nd.NDArray]:
        """The scratch BatchNorm's closed-form backward (Σdy and Σdy·x̂ all-reduced): writes every context's own dγ
        and dβ into the block's gradients (grad_req "write", as a backward would) and returns the dxs."""
        dxs, dgammas, dbetas = _scratch_backward(dys, saved, block, self.ctxs, True)
        for param, grads in ((block.gamma, dgammas), (block.beta, dbetas)):
            for ctx, grad in zip(self.ctxs, grads, strict=True):
                param.grad(ctx)[:] = grad
                param.data(ctx)._fresh_grad = True  # what autograd.backward sets; gluon.Trainer.step checks it
        return dxs

    def _record(self, x: np.ndarray, labels: np.ndarray,
                masks: list[np.ndarray] | None) -> tuple[list[nd.NDArray], list[nd.NDArray], list[nd.NDArray]]:
        """Training-mode forward and backward on every context: (logits, per-example losses, labels), per context."""
        xs, ys, ms = self._shards(x, labels, masks)
        if masks is None and self.arch.dropout > 0:
            for r, ctx in enumerate(self.ctxs):
                seed = np.random.SeedSequence([self.seed, self.draws, r]).generate_state(1)[0]
                mx.random.seed(int(seed) % 2**31, ctx=ctx)
            self.draws += 1
        run = self._layerwise_pass if self.bn_sync == "sync" else self._whole_pass
        logits, losses = run(xs, ys, ms)
        return logits, losses, ys

    def _stats(self, logits: list[nd.NDArray], losses: list[nd.NDArray],
               ys: list[nd.NDArray]) -> tuple[np.ndarray, float, int]:
        """The global batch's logits, mean loss and number correct."""
        correct = sum(int((z.argmax(axis=1) == y).sum().asscalar()) for z, y in zip(logits, ys, strict=True))
        loss = np.concatenate([to_numpy(v) for v in losses]).mean()
        return np.concatenate([to_numpy(z) for z in logits]), float(loss), correct

    # --- the Trainer interface ---

    def train_step(self, x: np.ndarray, labels: np.ndarray, *,
                   dropout_masks: list[np.ndarray] | None = None) -> training.StepStats:
        """One SGD step on the global batch: kvstore-summed gradients, rescaled by 1/global batch."""
        logits, losses, ys = self._record(x, labels, dropout_masks)
        self.trainer.step(int(np.shape(x)[0]))
        mx.nd.waitall()
        self.steps += 1
        _, loss, correct = self._stats(logits, losses, ys)
        return training.StepStats(loss=loss, correct=correct)

    def gradients(self, x: np.ndarray, labels: np.ndarray, *,
                  dropout_masks: list[np.ndarray] | None = None) -> training.Gradients:
        """The kvstore-reduced gradients (Trainer.allreduce_grads: the sum over the contexts) / global batch, the
        global logits and mean loss; the running statistics update as in a step, the parameters do not."""
        logits, losses, ys = self._record(x, labels, dropout_masks)
        self.trainer.allreduce_grads()
        mx.nd.waitall()
        batch = self.dtype.type(int(np.shape(x)[0]))
        grads = {n: p.grad(self.ctxs[0]).asnumpy() / batch for n, p in zip(self._trainable, self._params, strict=True)}
        all_logits, loss, _ = self._stats(logits, losses, ys)
        return training.Gradients(logits=all_logits, loss=loss, grads=grads)

    def _saved(self) -> dict[str, np.ndarray]:
        """The saved model, canonical: context 0's parameters and the contexts' mean running statistics
        (Parameter._reduce, as Block.save_parameters)."""
        parameters = self.model.by_name()
        saved = {n: to_numpy(parameters[n].data(self.ctxs[0])) for n in self._trainable}
        saved.update({n: to_numpy(parameters[n]._reduce()) for n in self._running})
        return saved

    def replica_running(self) -> list[dict[str, np.ndarray]]:
        """Every context's own BN running statistics (canonical names and layout), context order."""
        parameters = self.model.by_name()
        return [{n: to_numpy(parameters[n].data(ctx)) for n in self._running} for ctx in self.ctxs]

    def evaluate(self, x: np.ndarray, labels: np.ndarray) -> tuple[float, int]:
        """The saved model in eval mode (running statistics, no dropout) on a single-context copy; any batch size."""
        saved = self._saved()
        if self._eval_model is None:
            self._eval_model = from_canonical(self.arch, saved, dtype=self.dtype,
                                              device="cpu" if self.device_name == "cpu" else "gpu")
        else:
            self._eval_model.load(saved)
        ctx = self.ctxs[0]
        xs = nd.array(x, ctx=ctx, dtype=self.dtype)
        ys = nd.array(np.asarray(labels), ctx=ctx, dtype=self.dtype)
        logits = self._eval_model(xs)  # outside autograd.record(): inference mode
        loss = float(self.loss_fn(logits, ys).sum().asscalar())
        return loss, int((logits.argmax(axis=1) == ys).sum().asscalar())

    def state(self) -> dict[str, np.ndarray]:
        """The saved model (`_saved`), momentum buffers v = −mom/lr (context 0's updater), seed, passes, steps."""
        state = self._saved()
        if self.sgd.momentum:  # one updater per context (gluon has no public accessor); they are alike
            _save_momentum(state, self.trainer._updaters[0], self._trainable, self.dtype, self.sgd.lr)
        return _save_counters(state, self)

    def load_state(self, state: dict[str, np.ndarray]) -> None:
        """Every context gets `state`: parameters, running statistics and (every updater) momentum buffers."""
        check_params(self.arch, {n: state[n] for n in param_shapes(self.arch) if n in state})
        self.model.load(state)
        if self.sgd.momentum:
            for updater, ctx in zip(self.trainer._updaters, self.ctxs, strict=True):
                _load_momentum(state, updater, ctx, self._trainable, self.dtype, self.sgd.lr)
        mx.nd.waitall()
        _load_counters(state, self)

    def close(self) -> None:
        """Waits for the engine and drops the contexts' arrays (MXNet's engine threads live with the process);
        idempotent."""
        if self._closed:
            return
        self._closed = True
        mx.nd.waitall()
        self.trainer = self.model = self._eval_model = None
        self._params = []
