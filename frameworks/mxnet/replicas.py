"""MXNet Gluon's BatchNorm across data-parallel replicas on real CPU _contexts: gluon.contrib.nn.SyncBatchNorm
(builtin) and the all-reduce written in mx.nd ops (scratch).

The engine: R contexts mx.cpu(0) … mx.cpu(R−1) of one process, driven as Gluon's multi-device recipe drives them:
the block is initialized on the list of _contexts (one copy of every parameter per context), shard r lives on
context r, and under `autograd.record()` the block runs on every context's shard (`[net(x) for x in shards]`),
then `autograd.backward(outputs, head_grads)`. MXNet's default engine, ThreadedEnginePerDevice (src/engine/
engine.cc:34), gives every CPU context its own worker pool of MXNET_CPU_WORKER_NTHREADS threads (default 1,
src/initialize.cc:91; src/engine/threaded_engine_perdevice.cc:105-120 `cpu_normal_workers_.Get(dev_id, ...)`), so
the contexts' operators run concurrently: one thread per context is enough (measured with 1 and with R).

The builtin adapter: SyncBatchNorm (operator `_contrib_SyncBatchNorm`) for synchronized cases, plain
gluon.nn.BatchNorm on the same contexts for per-replica ones (what multi-context Gluon training gives without
SyncBN). What the operator computes (mxnet 1.9.1 src/operator/contrib/sync_batch_norm-inl.h; measured, see
tests/test_mxnet_replicas.py):
- each context computes its shard's E[x] and E[x²] (scale = C/size = 1/m_r, :272-273, :307-308); a barrier keyed by
  the block's prefix (:299-300, :320) waits until all `num_devices` contexts have written theirs, and every context
  takes their plain mean, sum / ndev (SharedND::MeanReady, :153-156): *equal* weights 1/R whatever the shard sizes.
  Then σ² = E[x²] − μ² (:327: one pass, not clipped). With unequal shards that is
  bnparity.reference.crossreplica.equal_weight_step, not the global batch;
- the backward pass averages Σ dy and Σ dy·(x − μ) over the contexts the same way (:402-419) and scales them by the
  local 1/m_r (:357-358, :435-440): dx is equal_weight_step's too; dγ and dβ are each context's own sums (:426-441);
- moving_mean/moving_var are updated in the backward pass (:397-398) with that biased σ²; ε and momentum are C
  floats (:49-50), and every tensor is read as float32 (real_t, :277-292): float64 has no kernel, and on several
  contexts its refusal can crash the process, so it is asked on one context (`_float64_kernel_refusal`);
- the barrier blocks a worker thread until every context arrives: if one context never runs the block, or the
  engine runs operators one at a time (MXNET_ENGINE_TYPE=NaiveEngine, src/engine/naive_engine.cc:149-152: its
  PushAsync is synchronous), it waits forever (measured). This adapter refuses NaiveEngine up front and bounds every
  step with a deadline (`step_deadline`) that ends the process with a one-line message: a hang fails fast.

The scratch adapter (teaching material): bnparity.reference.crossreplica's formulas in mx.nd ops on the same
_contexts. Each context computes its count m_r, mean μ_r and centred sum M₂,r; the all-reduce is explicit copies to
context 0 (`as_in_context`), Chan's count-weighted combination there, and copies back; the backward pass either
all-reduces Σ dy and Σ dy·x̂ the same way and applies the closed form (variant "closed-form"), or lets mx.autograd
differentiate through the copies (variant "autograd": MXNet records cross-context copies, measured). It follows
the spec exactly (momentum either way, the running variance unbiased or biased over the *global* m).

What a data-parallel run saves (`ReplicaResult.saved_running`) is what `Block.save_parameters` writes: every
parameter's `Parameter._reduce()`, the MEAN of its copies over the _contexts (gluon/parameter.py:387-396: add_n of
the copies / len; gluon/block.py:450); `run` saves the block to a file and loads it back.
"""

from __future__ import annotations

import itertools
import os
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import numpy as np

from bnparity.frameworks.base import Unsupported
from bnparity.frameworks.replicas import ReplicaAdapter, ReplicaCase, ReplicaResult, ReplicaSkip
from bnparity.reference.spec import BNSpec

from ._mx import autograd, gluon, mx, nd
from .convert import _operator_eps, framework_dtype, framework_momentum, to_numpy
from .descriptor import DESCRIPTOR

DTYPES = ("float32", "float64")
STEP_TIMEOUT = 60.0  # seconds one training step may take before the process is ended (steps take milliseconds)
HUNG_EXIT = 70  # the exit status of a process whose step missed its deadline
_BLOCKS = itertools.count()  # SyncBatchNorm's barrier is keyed by the block's prefix: every block gets its own


def _contexts(replicas: int) -> list[mx.Context]:
    """The R CPU contexts mx.cpu(0) … mx.cpu(R−1)."""
    return [mx.cpu(r) for r in range(replicas)]


@contextmanager
def _step_deadline(what: str, seconds: float | None) -> Iterator[None]:
    """Run the body with a deadline: past `seconds`, print one line to stderr and end the process (HUNG_EXIT).

    An MXNet barrier that waits forever cannot be interrupted from Python, and the engine is unusable after it, so
    ending the process is the only way to fail fast. None: no deadline.
    """
    if seconds is None:
        yield
        return

    def abort() -> None:
        sys.stderr.write(f"mxnet: {what} did not finish within {seconds:g} s (an engine barrier waits for a context "
                         "that never arrives); ending the process\n")
        sys.stderr.flush()
        os._exit(HUNG_EXIT)

    timer = threading.Timer(seconds, abort)
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        timer.cancel()


def _check_dtype(dtype: np.dtype | str) -> np.dtype:
    """The MXNet dtype of a float32 or float64 case. Raises Unsupported for any other dtype."""
    framework_dtype(dtype)  # Unsupported for a dtype MXNet has no float type for
    name = np.dtype(dtype).name
    if name not in DTYPES:
        raise Unsupported(f"mxnet: the cross-replica adapters run {' and '.join(DTYPES)}. Received: {name}")
    return np.dtype(name)


def _check_spec(spec: BNSpec) -> None:
    """Raise Unsupported for what a ReplicaResult cannot report (no γ/β gradients, no running statistics)."""
    if not spec.affine:
        raise Unsupported("mxnet: the cross-replica adapters run affine layers (ReplicaResult reports dγ and dβ)")
    if not spec.track_running_stats:
        raise Unsupported("mxnet: gluon.nn.BatchNorm and SyncBatchNorm have no track_running_stats=False; they "
                          "always keep moving statistics")


def _on(a: np.ndarray, dtype: np.dtype, ctx: mx.Context) -> nd.NDArray:
    """A new NDArray holding `a` in `dtype` on context `ctx` (a synchronous copy: nothing left in the engine)."""
    return nd.ndarray.array(np.ascontiguousarray(np.asarray(a).astype(dtype)), ctx=ctx, dtype=dtype)


def _saved_running(block: gluon.Block) -> tuple[np.ndarray, np.ndarray]:
    """(running mean, running variance) as `block.save_parameters` writes them: each Parameter._reduce()d."""
    with tempfile.TemporaryDirectory(prefix="bnparity-mx-") as tmp:
        path = os.path.join(tmp, "replicas.params")
        block.save_parameters(path)
        saved = nd.load(path)
    return to_numpy(saved["running_mean"]), to_numpy(saved["running_var"])


def _run_steps(case: ReplicaCase, ctxs: list[mx.Context], step: Callable[[list, list], list], *,
               timeout: float | None) -> tuple[list, list]:
    """Every training step of `case`: `step(xs, dys)` on the shards (NDArrays on their _contexts, xs with
    gradients attached), under a deadline, the engine drained after each. Returns the last step's (xs, ys)."""
    dtype = np.dtype(case.dtype)
    xs: list[nd.NDArray] = []
    ys: list[nd.NDArray] = []
    for index, (step_x, step_dy) in enumerate(zip(case.xs, case.dys, strict=True)):
        xs = [_on(x, dtype, ctx) for x, ctx in zip(step_x, ctxs, strict=True)]
        for x in xs:
            x.attach_grad()
        dys = [_on(dy, dtype, ctx) for dy, ctx in zip(step_dy, ctxs, strict=True)]
        with _step_deadline(f"step {index + 1} of case {case.name!r}", timeout):
            ys = step(xs, dys)
            nd.waitall()  # a step's engine errors surface here, before the next step queues more work
    return xs, ys


# --- the builtin layer: gluon.contrib.nn.SyncBatchNorm ----------------------------------------------------------

class BuiltinSyncBatchNorm(ReplicaAdapter):
    """gluon.contrib.nn.SyncBatchNorm on R CPU _contexts (synchronized cases), gluon.nn.BatchNorm on the same _contexts
    (per-replica cases): channels at axis 1, momentum weighs the old value, biased running variance.

    Args:
        hybridize: run the block hybridized (a cached graph per context) rather than imperatively.
        step_timeout: seconds a training step may take before the process is ended (`step_deadline`); None: none.
    """

    framework = DESCRIPTOR.name
    impl = "builtin"
    native_axis = 1
    variants = {"imperative": {}, "hybridized": {"hybridize": True}}

    def __init__(self, *, hybridize: bool = False, step_timeout: float | None = STEP_TIMEOUT) -> None:
        self.hybridize = hybridize
        self.step_timeout = step_timeout
        self._float64_refusal: str | None = None

    def realize(self, spec: BNSpec, dtype: np.dtype) -> BNSpec:
        _check_dtype(dtype)
        _check_spec(spec)
        # The stored variance is the biased σ² and the momentum a float32 (nn.BatchNorm and SyncBatchNorm alike);
        # SyncBatchNorm's ε is a C float too (sync_batch_norm-inl.h:49; per-replica cases pass nn.BatchNorm the same
        # rounded ε) and its σ² = E[x²] − μ² is one pass: "fast" (nn.BatchNorm's two-pass σ² is the more accurate).
        m = framework_momentum(spec)
        momentum = m if spec.momentum_weighs == "old" else 1.0 - m  # 1 − m is exact (Sterbenz)
        return spec.replace(running_var="biased", momentum=momentum, eps=_operator_eps(spec.eps), variance="fast")

    def run(self, cases: Sequence[ReplicaCase]) -> Iterator[ReplicaResult | ReplicaSkip]:
        for case in cases:
            dtype = _check_dtype(case.dtype)
            if case.synchronized and dtype == np.float64:
                refusal = self._float64_kernel_refusal()
                if refusal is not None:
                    yield ReplicaSkip(f"mxnet: gluon.contrib.nn.SyncBatchNorm has no float64 kernel: {refusal}")
                    continue
            yield self._run_case(case)

    def _float64_kernel_refusal(self) -> str | None:
        """MXNet's own error for a float64 SyncBatchNorm, or None if it runs. Asked once, on one context
        (num_devices=1: no barrier), since on several contexts the refusal can crash the process (measured: a
        segmentation fault, once in 7 runs)."""
        if self._float64_refusal is None:
            block = gluon.contrib.nn.SyncBatchNorm(in_channels=1, num_devices=1,
                                                   prefix=f"bnparity_replicas{next(_BLOCKS)}_probe_")
            block.initialize(ctx=mx.cpu(0))
            block.cast(np.float64)
            x = _on(np.zeros((2, 1)), np.dtype(np.float64), mx.cpu(0))
            try:
                with autograd.record():
                    y = block(x)
                y.wait_to_read()
                self._float64_refusal = ""
            except mx.base.MXNetError as e:
                lines = [line for line in str(e).strip().splitlines() if line.strip()]
                self._float64_refusal = lines[-1] if lines else type(e).__name__
        return self._float64_refusal or None

    def _block(self, case: ReplicaCase, channels: int) -> gluon.HybridBlock:
        spec = case.spec
        prefix = f"bnparity_replicas{next(_BLOCKS)}_"
        if case.synchronized:
            if os.environ.get("MXNET_ENGINE_TYPE", "") == "NaiveEngine":
                raise RuntimeError("mxnet: SyncBatchNorm hangs under MXNET_ENGINE_TYPE=NaiveEngine (the first context "
                                   "waits in the barrier for contexts that never run); use ThreadedEnginePerDevice")
            return gluon.contrib.nn.SyncBatchNorm(in_channels=channels, num_devices=case.replicas,
                                                  momentum=framework_momentum(spec), epsilon=spec.eps, prefix=prefix)
        return gluon.nn.BatchNorm(axis=1, in_channels=channels, momentum=framework_momentum(spec), epsilon=spec.eps,
                                  prefix=prefix)

    def _run_case(self, case: ReplicaCase) -> ReplicaResult:
        spec, dtype = case.spec, np.dtype(case.dtype)
        if spec.axis != 1:
            raise ValueError(f"mxnet: the replica adapters run channels at axis 1. Received: axis={spec.axis}")
        ctxs = _contexts(case.replicas)
        channels = int(case.gamma.shape[0])
        block = self._block(case, channels)
        block.initialize(ctx=ctxs)  # one copy of every parameter per context
        block.cast(dtype)
        for param, value in ((block.gamma, case.gamma), (block.beta, case.beta),
                             (block.running_mean, np.full(channels, spec.init_running_mean)),
                             (block.running_var, np.full(channels, spec.init_running_var))):
            param.set_data(_on(value, dtype, mx.cpu()))  # copied to every context
        if self.hybridize:
            block.hybridize(static_alloc=True)

        def step(xs: list[nd.NDArray], dys: list[nd.NDArray]) -> list[nd.NDArray]:
            with autograd.record():
                ys = [block(x) for x in xs]  # Gluon's data-parallel loop: the block on every context's shard
            autograd.backward(ys, dys)  # also where MXNet updates the moving statistics
            return ys

        xs, ys = _run_steps(case, ctxs, step, timeout=self.step_timeout)
        return ReplicaResult(
            ys=tuple(to_numpy(y) for y in ys), dxs=tuple(to_numpy(x.grad) for x in xs),
            dgammas=tuple(to_numpy(g) for g in block.gamma.list_grad()),
            dbetas=tuple(to_numpy(g) for g in block.beta.list_grad()),
            running_means=tuple(to_numpy(a) for a in block.running_mean.list_data()),
            running_vars=tuple(to_numpy(a) for a in block.running_var.list_data()),
            saved_running=_saved_running(block))


# --- the scratch layer: the all-reduce in mx.nd ops -------------------------------------------------------------

def _col(v: nd.NDArray, ndim: int) -> nd.NDArray:
    """A per-channel vector (C,) shaped to broadcast against an (N, C, ...) input."""
    return v.reshape((1, -1) + (1,) * (ndim - 2))


def _reduce_axes(ndim: int) -> tuple[int, ...]:
    return tuple(a for a in range(ndim) if a != 1)


def _all_reduce_sum(parts: Sequence[nd.NDArray], ctxs: Sequence[mx.Context]) -> list[nd.NDArray]:
    """Σ over the contexts of one (C,) array each, back on every context: copies to context 0, add_n, copies back."""
    root = ctxs[0]
    total = nd.add_n(*(p.as_in_context(root) for p in parts))
    return [total.as_in_context(c) for c in ctxs]


def _shard_moments(x: nd.NDArray, spec: BNSpec) -> tuple[int, nd.NDArray, nd.NDArray]:
    """One context's contribution to the all-reduce, per channel: m_r, μ_r and M₂,r = Σ (x − μ_r)²."""
    axes = _reduce_axes(x.ndim)
    count = x.size // x.shape[1]  # m_r
    mean = nd.mean(x, axis=axes)  # μ_r
    if spec.variance == "two-pass":
        m2 = nd.sum(nd.square(nd.broadcast_sub(x, _col(mean, x.ndim))), axis=axes)  # M₂,r = Σ (x − μ_r)²
    else:
        m2 = nd.maximum(nd.sum(nd.square(x), axis=axes) - count * nd.square(mean), 0.0)  # Σ x² − m_r μ_r²
    return count, mean, m2


def _combine_moments(moments: Sequence[tuple[int, nd.NDArray, nd.NDArray]],
                    ctxs: Sequence[mx.Context]) -> tuple[int, list[nd.NDArray], list[nd.NDArray]]:
    """The all-reduce of the shards' (m_r, μ_r, M₂,r): gathered on context 0, combined by Chan's count-weighted
    formulas, and the global (m, μ, M₂) copied back to every context."""
    root = ctxs[0]
    counts = [c for c, _, _ in moments]
    means = [mu.as_in_context(root) for _, mu, _ in moments]  # gather to context 0
    m2s = [m2.as_in_context(root) for _, _, m2 in moments]
    m = sum(counts)  # m = Σ m_r
    mu = nd.add_n(*(m_r * mu_r for m_r, mu_r in zip(counts, means, strict=True))) / m  # μ = Σ m_r μ_r / m
    m2 = nd.add_n(*(m2_r + m_r * nd.square(mu_r - mu)  # M₂ = Σ [M₂,r + m_r (μ_r − μ)²]
                    for m_r, mu_r, m2_r in zip(counts, means, m2s, strict=True)))
    return m, [mu.as_in_context(c) for c in ctxs], [m2.as_in_context(c) for c in ctxs]  # broadcast back


class _ScratchState(gluon.Block):
    """The scratch layer's parameters, one copy per context as Gluon keeps a multi-context model: γ and β
    (learned), the running mean and variance (not): saved with save_parameters like the builtin's."""

    def __init__(self, channels: int, dtype: np.dtype, prefix: str) -> None:
        super().__init__(prefix=prefix)
        with self.name_scope():
            self.gamma = self.params.get("gamma", shape=(channels,), dtype=dtype)
            self.beta = self.params.get("beta", shape=(channels,), dtype=dtype)
            self.running_mean = self.params.get("running_mean", shape=(channels,), dtype=dtype, grad_req="null",
                                                differentiable=False)
            self.running_var = self.params.get("running_var", shape=(channels,), dtype=dtype, grad_req="null",
                                               differentiable=False)


def _scratch_forward(xs: Sequence[nd.NDArray], state: gluon.Block, ctxs: Sequence[mx.Context],
                    spec: BNSpec, synchronized: bool) -> tuple[list[nd.NDArray], tuple]:
    """y = γ x̂ + β on every context, with the global batch's statistics (synchronized) or each shard's own;
    updates the running statistics. Returns the ys and what the closed-form backward needs.

    `state`: a block with the Parameters gamma, beta, running_mean and running_var on the contexts (_ScratchState,
    or an nn.BatchNorm: frameworks/mxnet/data_parallel.py)."""
    ndim = xs[0].ndim
    moments = [_shard_moments(x, spec) for x in xs]  # (m_r, μ_r, M₂,r) on each context
    if synchronized:
        m, mus, m2s = _combine_moments(moments, ctxs)
        counts = [m] * len(xs)
    else:
        counts, mus, m2s = [c for c, _, _ in moments], [mu for _, mu, _ in moments], [v for _, _, v in moments]
    ys, x_hats, invstds = [], [], []
    w = spec.new_weight  # the weight of the new batch statistic
    for r, (x, ctx) in enumerate(zip(xs, ctxs, strict=True)):
        m, mu, m2 = counts[r], mus[r], m2s[r]
        var = m2 / m  # σ² = M₂ / m (biased: what normalizes)
        invstd = 1.0 / nd.sqrt(var + spec.eps)  # 1/√(σ² + ε)
        x_hat = nd.broadcast_mul(nd.broadcast_sub(x, _col(mu, ndim)), _col(invstd, ndim))  # x̂
        gamma, beta = state.gamma.data(ctx), state.beta.data(ctx)
        ys.append(nd.broadcast_add(nd.broadcast_mul(_col(gamma, ndim), x_hat), _col(beta, ndim)))  # γ x̂ + β
        x_hats.append(x_hat)
        invstds.append(invstd)
        with autograd.pause():  # running ← (1 − w)·running + w·batch; unbiased: M₂/(m − 1), the (global) m
            stored = (m2 / (m - 1) if m > 1 else var * float("nan")) if spec.running_var == "unbiased" else var
            running_mean, running_var = state.running_mean.data(ctx), state.running_var.data(ctx)
            running_mean[:] = running_mean * (1 - w) + mu.detach() * w
            running_var[:] = running_var * (1 - w) + stored.detach() * w
    return ys, (x_hats, invstds, counts)


def _scratch_backward(dys: Sequence[nd.NDArray], saved: tuple, state: gluon.Block, ctxs: Sequence[mx.Context],
                      synchronized: bool) -> tuple[list[nd.NDArray], list[nd.NDArray], list[nd.NDArray]]:
    """(dxs, dγs, dβs): dx_i = γ/√(σ² + ε) · (dy_i − Σ dy / m − x̂_i · Σ dy·x̂ / m), the two sums all-reduced over
    every shard when synchronized; dγ = Σ dy·x̂ and dβ = Σ dy each context's own."""
    x_hats, invstds, counts = saved
    ndim = dys[0].ndim
    axes = _reduce_axes(ndim)
    sum_dy = [nd.sum(dy, axis=axes) for dy in dys]  # Σ dy over each shard
    sum_dy_xhat = [nd.sum(dy * xh, axis=axes) for dy, xh in zip(dys, x_hats, strict=True)]  # Σ dy·x̂
    dgammas, dbetas = list(sum_dy_xhat), list(sum_dy)  # each context's own: data parallelism all-reduces them
    if synchronized:
        sum_dy, sum_dy_xhat = _all_reduce_sum(sum_dy, ctxs), _all_reduce_sum(sum_dy_xhat, ctxs)
    dxs = []
    for r, (dy, ctx) in enumerate(zip(dys, ctxs, strict=True)):
        m = counts[r]
        scale = _col(state.gamma.data(ctx) * invstds[r], ndim)  # γ/√(σ² + ε)
        dxs.append(nd.broadcast_mul(scale, nd.broadcast_sub(
            nd.broadcast_sub(dy, _col(sum_dy[r] / m, ndim)),
            nd.broadcast_mul(x_hats[r], _col(sum_dy_xhat[r] / m, ndim)))))
    return dxs, dgammas, dbetas


class ScratchSyncBatchNorm(ReplicaAdapter):
    """BatchNorm across the contexts in mx.nd ops: count-weighted all-reduce, channels at axis 1, every spec field
    honoured (module docstring).

    Args:
        backward: "closed-form" (Σ dy and Σ dy·x̂ all-reduced, then dx written out) or "autograd" (mx.autograd
            through the forward pass's cross-context copies).
        step_timeout: seconds a training step may take before the process is ended; None: none.
    """

    framework = DESCRIPTOR.name
    impl = "scratch"
    native_axis = 1
    variants = {"closed-form": {}, "autograd": {"backward": "autograd"}}

    def __init__(self, *, backward: str = "closed-form", step_timeout: float | None = STEP_TIMEOUT) -> None:
        if backward not in ("closed-form", "autograd"):
            raise ValueError(f"backward must be 'closed-form' or 'autograd'. Received: {backward!r}")
        self.backward = backward
        self.step_timeout = step_timeout

    def realize(self, spec: BNSpec, dtype: np.dtype) -> BNSpec:
        _check_dtype(dtype)
        _check_spec(spec)
        return spec

    def run(self, cases: Sequence[ReplicaCase]) -> Iterator[ReplicaResult]:
        for case in cases:
            yield self._run_case(case)

    def _run_case(self, case: ReplicaCase) -> ReplicaResult:
        spec, dtype = case.spec, _check_dtype(case.dtype)
        if spec.axis != 1:
            raise ValueError(f"mxnet: the replica adapters run channels at axis 1. Received: axis={spec.axis}")
        ctxs = _contexts(case.replicas)
        channels = int(case.gamma.shape[0])
        state = _ScratchState(channels, dtype, prefix=f"bnparity_replicas{next(_BLOCKS)}_")
        state.initialize(ctx=ctxs)
        for param, value in ((state.gamma, case.gamma), (state.beta, case.beta),
                             (state.running_mean, np.full(channels, spec.init_running_mean)),
                             (state.running_var, np.full(channels, spec.init_running_var))):
            param.set_data(_on(value, dtype, mx.cpu()))
        grads: dict[str, list[nd.NDArray]] = {}

        def step(xs: list[nd.NDArray], dys: list[nd.NDArray]) -> list[nd.NDArray]:
            if self.backward == "autograd":
                with autograd.record():
                    ys, _ = self._forward(xs, state, ctxs, spec, case.synchronized)
                autograd.backward(ys, dys)  # through the copies: each x's gradient crosses the _contexts
                grads["dgamma"], grads["dbeta"] = state.gamma.list_grad(), state.beta.list_grad()
                return ys
            ys, saved = self._forward(xs, state, ctxs, spec, case.synchronized)
            dxs, grads["dgamma"], grads["dbeta"] = self._backward(dys, saved, state, ctxs, case.synchronized)
            for x, dx in zip(xs, dxs, strict=True):
                x.grad[:] = dx
            return ys

        xs, ys = _run_steps(case, ctxs, step, timeout=self.step_timeout)
        return ReplicaResult(
            ys=tuple(to_numpy(y) for y in ys), dxs=tuple(to_numpy(x.grad) for x in xs),
            dgammas=tuple(to_numpy(g) for g in grads["dgamma"]), dbetas=tuple(to_numpy(g) for g in grads["dbeta"]),
            running_means=tuple(to_numpy(a) for a in state.running_mean.list_data()),
            running_vars=tuple(to_numpy(a) for a in state.running_var.list_data()),
            saved_running=_saved_running(state))

    # The layer's passes (module level: frameworks/mxnet/data_parallel.py runs them on nn.BatchNorm blocks too).
    _forward = staticmethod(_scratch_forward)
    _backward = staticmethod(_scratch_backward)
