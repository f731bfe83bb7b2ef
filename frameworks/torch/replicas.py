"""PyTorch's BatchNorm across data-parallel replicas on torch.distributed: torch.nn.SyncBatchNorm (builtin) and an
all-gather / all-reduce written in torch ops (scratch), every replica one OS process of a gloo process group.

The engine: `run` starts R processes (forkserver, else spawn; one thread each) that rendezvous over
tcp://127.0.0.1:<free port>, runs every case in every rank in order, and gathers what each rank computed through a
queue. The process group is started once per replica count of the list; the ranks always end (joined, else
terminated, else killed).

The builtin adapter drives torch's own layers: torch.nn.SyncBatchNorm for synchronized cases (it refuses CPU tensors
in its forward pass, and that refusal is the case's ReplicaSkip, with torch's message; with CUDA it runs on
cuda:rank over nccl) and torch.nn.BatchNorm1d/2d/3d per rank for per-replica cases (what DistributedDataParallel
gives without SyncBatchNorm). The scratch one, `_CrossReplicaBatchNorm`, is teaching code: bnparity.reference.
crossreplica's formulas in torch ops as a torch.autograd.Function, its backward written out; it follows the spec
exactly, and the data-parallel trainer (data_parallel.py) uses it as its synchronized BatchNorm on CPU.

What a data-parallel run saves (`ReplicaResult.saved_running`) is rank 0's running statistics: DDP broadcasts rank
0's buffers to every rank at the start of each forward pass and a checkpoint is rank 0's state_dict (see
REPLICA_CONVENTION in convention.py).
"""

from __future__ import annotations

import multiprocessing as mp
import queue
import socket
import time
import traceback
from collections.abc import Iterator, Sequence
from datetime import timedelta
from multiprocessing.process import BaseProcess

import numpy as np
import torch
import torch.distributed as dist

from bnparity.frameworks.base import Unsupported
from bnparity.frameworks.replicas import ReplicaAdapter, ReplicaCase, ReplicaResult, ReplicaSkip
from bnparity.reference.spec import BNSpec

from .batchnorm import _MODULE_OF_RANK, BuiltinBatchNorm
from .convert import framework_dtype, framework_momentum, to_numpy, to_tensor
from .descriptor import DESCRIPTOR

TIMEOUT = 120.0  # seconds the parent waits for any rank's next message before it gives up
_REFUSAL = "SyncBatchNorm expected input tensor to be on"  # the start of torch's CPU refusal (nn/modules/batchnorm.py)


# --- the scratch layer: cross-replica BatchNorm in torch ops -----------------------------------------------------

class _CrossReplicaFunction(torch.autograd.Function):
    """BatchNorm over every replica's shard, channel axis 1: forward all-gathers (m_r, μ_r, M₂,r), backward
    all-reduces (Σ dy, Σ dy·x̂). With `group=None` it is each replica's own BatchNorm (no collective)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, running_mean: torch.Tensor,
                running_var: torch.Tensor, eps: float, new_weight: float, unbiased: bool,
                group: object | None) -> torch.Tensor:
        dims = [d for d in range(x.dim()) if d != 1]
        shape = [1, -1] + [1] * (x.dim() - 2)
        channels = x.shape[1]
        m_r = x.numel() // channels  # the shard's count per channel
        mu_r = x.sum(dim=dims) / max(m_r, 1)  # μ_r (an empty shard contributes nothing)
        m2_r = ((x - mu_r.view(shape)) ** 2).sum(dim=dims)  # M₂,r = Σ (x − μ_r)²
        if group is None:
            m, mu, m2 = m_r, mu_r, m2_r
        else:
            mine = torch.cat([x.new_full((1,), float(m_r)), mu_r, m2_r])  # (1 + 2C,): m_r, μ_r, M₂,r
            gathered = [torch.empty_like(mine) for _ in range(dist.get_world_size(group))]
            dist.all_gather(gathered, mine, group=group)
            stats = torch.stack(gathered)  # (R, 1 + 2C)
            counts, means, m2s = stats[:, :1], stats[:, 1:1 + channels], stats[:, 1 + channels:]
            m = int(round(counts.sum().item()))  # m = Σ m_r
            mu = (counts * means).sum(dim=0) / m  # μ = Σ m_r μ_r / m
            m2 = (m2s + counts * (means - mu) ** 2).sum(dim=0)  # M₂ = Σ [M₂,r + m_r (μ_r − μ)²]
        var = m2 / m  # σ² = M₂ / m (biased: what normalizes)
        invstd = torch.rsqrt(var + eps)  # 1/√(σ² + ε)
        x_hat = (x - mu.view(shape)) * invstd.view(shape)  # x̂
        with torch.no_grad():  # running ← (1 − w)·running + w·batch, the global batch's statistics
            stored = (m2 / (m - 1) if m > 1 else var * float("nan")) if unbiased else var  # M₂/(m − 1) or σ²
            running_mean.mul_(1 - new_weight).add_(new_weight * mu)
            running_var.mul_(1 - new_weight).add_(new_weight * stored)
        ctx.save_for_backward(x_hat, invstd, weight)
        ctx.count, ctx.group, ctx.dims, ctx.shape = m, group, dims, shape
        return weight.view(shape) * x_hat + bias.view(shape)  # y = γ x̂ + β

    @staticmethod
    def backward(ctx, dy: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x_hat, invstd, weight = ctx.saved_tensors
        dims, shape, m = ctx.dims, ctx.shape, ctx.count
        sum_dy = dy.sum(dim=dims)  # Σ dy over this shard
        sum_dy_xhat = (dy * x_hat).sum(dim=dims)  # Σ dy·x̂ over this shard
        dgamma, dbeta = sum_dy_xhat.clone(), sum_dy.clone()  # the shard's own: data parallelism all-reduces them
        if ctx.group is not None:
            sums = torch.cat([sum_dy, sum_dy_xhat])
            dist.all_reduce(sums, op=dist.ReduceOp.SUM, group=ctx.group)  # Σ over every shard
            sum_dy, sum_dy_xhat = sums.split(sum_dy.shape[0])
        # dx_i = γ/√(σ² + ε) · (dy_i − Σ dy / m − x̂_i · Σ dy·x̂ / m)
        dx = (weight * invstd).view(shape) * (dy - (sum_dy / m).view(shape) - x_hat * (sum_dy_xhat / m).view(shape))
        return dx, dgamma, dbeta, None, None, None, None, None, None


class _CrossReplicaBatchNorm(torch.nn.Module):
    """A BatchNorm whose statistics are those of every replica's batch: any input of rank ≥ 2, channels at axis 1.

    Training mode normalizes with the global batch's μ and biased σ² (each shard weighted by its count: unequal
    shards are right) and updates the running statistics with them; eval mode normalizes with the running
    statistics, no collective. Unsynchronized, or when torch.distributed is not initialized or has one rank, it is
    each replica's own BatchNorm. γ and β receive each replica's own gradient sums, as torch.nn.SyncBatchNorm
    leaves them for DistributedDataParallel to average.

    Args:
        num_features: C.
        eps: ε. Default: 1e-5.
        momentum: the running-statistics weight; what it weighs is `momentum_weighs`. Default: 0.1.
        momentum_weighs: "new" (PyTorch: running = (1 − momentum)·running + momentum·batch) or "old". Default: "new".
        running_var: the estimator the running variance stores, "unbiased" (over the global count m) or "biased".
            Default: "unbiased".
        synchronized: combine the replicas' statistics. Default: True.
        process_group: the group to combine over. Default: the world.
        device, dtype: of the parameters and buffers.
    """

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float = 0.1, *, momentum_weighs: str = "new",
                 running_var: str = "unbiased", synchronized: bool = True, process_group: object | None = None,
                 device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> None:
        super().__init__()
        # BNSpec validates momentum, its direction and the estimator, and turns them into the new batch's weight.
        self.spec = BNSpec(axis=1, eps=eps, momentum=momentum, momentum_weighs=momentum_weighs,
                           running_var=running_var)
        self.num_features, self.synchronized, self.process_group = num_features, synchronized, process_group
        factory = dict(device=device, dtype=dtype)
        self.weight = torch.nn.Parameter(torch.ones(num_features, **factory))
        self.bias = torch.nn.Parameter(torch.zeros(num_features, **factory))
        self.register_buffer("running_mean", torch.zeros(num_features, **factory))
        self.register_buffer("running_var", torch.ones(num_features, **factory))

    @classmethod
    def from_spec(cls, spec: BNSpec, num_features: int, *, synchronized: bool, **factory: object
                  ) -> _CrossReplicaBatchNorm:
        """The layer of `spec` (its axis must be 1), running statistics at the spec's initial values."""
        if spec.axis != 1:
            raise ValueError(f"the cross-replica layer has its channels at axis 1. Received: axis={spec.axis}")
        layer = cls(num_features, spec.eps, spec.momentum, momentum_weighs=spec.momentum_weighs,
                    running_var=spec.running_var, synchronized=synchronized, **factory)
        with torch.no_grad():
            layer.running_mean.fill_(spec.init_running_mean)
            layer.running_var.fill_(spec.init_running_var)
        return layer

    def _group(self) -> object | None:
        """The group to all-reduce over, or None for this replica's own statistics."""
        if not (self.synchronized and dist.is_available() and dist.is_initialized()):
            return None
        group = self.process_group or dist.group.WORLD
        return group if dist.get_world_size(group) > 1 else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() < 2:
            raise ValueError(f"expected an input of rank >= 2 (N, C, ...). Received: x.dim()={x.dim()}")
        if not self.training:
            shape = [1, -1] + [1] * (x.dim() - 2)
            x_hat = (x - self.running_mean.view(shape)) * torch.rsqrt(self.running_var.view(shape) + self.spec.eps)
            return self.weight.view(shape) * x_hat + self.bias.view(shape)
        return _CrossReplicaFunction.apply(x, self.weight, self.bias, self.running_mean, self.running_var,
                                           self.spec.eps, self.spec.new_weight, self.spec.running_var == "unbiased",
                                           self._group())

    def extra_repr(self) -> str:
        return (f"{self.num_features}, eps={self.spec.eps}, momentum={self.spec.momentum} "
                f"(weighs {self.spec.momentum_weighs}), running_var={self.spec.running_var}, "
                f"synchronized={self.synchronized}")


def _convert_cross_replica(module: torch.nn.Module, *, synchronized: bool = True) -> torch.nn.Module:
    """`module` with every torch.nn.BatchNorm1d/2d/3d replaced by a `_CrossReplicaBatchNorm` that shares its γ, β
    and running statistics (torch's convention: momentum weighs the new batch, unbiased running variance); as
    torch.nn.SyncBatchNorm.convert_sync_batchnorm, for CPU tensors."""
    if isinstance(module, torch.nn.modules.batchnorm._BatchNorm) and not isinstance(module, torch.nn.SyncBatchNorm):
        if not (module.affine and module.track_running_stats) or module.momentum is None:
            raise ValueError(f"only affine BatchNorm layers with running statistics and a momentum convert. "
                             f"Received: {module}")
        layer = _CrossReplicaBatchNorm(module.num_features, module.eps, module.momentum, synchronized=synchronized,
                                       device=module.weight.device, dtype=module.weight.dtype)
        layer.weight, layer.bias = module.weight, module.bias  # the same Parameters: optimizers built before agree
        layer.running_mean, layer.running_var = module.running_mean, module.running_var
        layer.train(module.training)
        return layer
    for name, child in module.named_children():
        module.add_module(name, _convert_cross_replica(child, synchronized=synchronized))
    return module


# --- the engine: R processes of a process group ------------------------------------------------------------------

def _free_port() -> int:
    """A TCP port on 127.0.0.1 nobody listens on now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _context() -> mp.context.BaseContext:
    """The way ranks start: "forkserver" where it exists (a server process imports this module, torch and
    torch._dynamo, which DistributedDataParallel imports on construction, once; every rank is a fork of it, ~0.1 s
    in place of a fresh interpreter's 3-7 s of imports on a busy machine; the server ends with the calling process),
    else "spawn". Never a plain fork of the caller, whose threads may hold locks."""
    if "forkserver" in mp.get_all_start_methods():
        ctx = mp.get_context("forkserver")
        ctx.set_forkserver_preload([__name__, "torch._dynamo"])
        return ctx
    return mp.get_context("spawn")


def _one_line(e: BaseException) -> str:
    """`Type: message` of an exception, on one line."""
    return " ".join(f"{type(e).__name__}: {e}".split())


def _stop_processes(processes: Sequence[BaseProcess], *, grace: float = 10.0) -> None:
    """Join every process; terminate those still alive after `grace` seconds, then kill the stubborn ones."""
    deadline = time.monotonic() + grace
    for p in processes:
        if p.pid is not None:
            p.join(timeout=max(0.0, deadline - time.monotonic()))
    for p in processes:
        if p.is_alive():
            p.terminate()
            p.join(timeout=5.0)
        if p.is_alive():
            p.kill()
            p.join(timeout=5.0)


def _engine(impl: str, replicas: int) -> tuple[str, str]:
    """(backend, device type) for `impl`: torch.nn.SyncBatchNorm on cuda:rank over nccl when there are enough CUDA
    devices; otherwise gloo on CPU tensors."""
    if impl == "builtin" and torch.cuda.is_available() and torch.cuda.device_count() >= replicas:
        return "nccl", "cuda"
    return "gloo", "cpu"


class _Refused(Exception):
    """torch refused the case's configuration; the message is the ReplicaSkip's reason."""


def _layer(impl: str, case: ReplicaCase, device: torch.device) -> torch.nn.Module:
    """The case's layer on this rank, γ, β and the running statistics set, in the case's dtype."""
    spec, channels = case.spec, int(case.gamma.shape[0])
    if impl == "scratch":
        layer = _CrossReplicaBatchNorm.from_spec(spec, channels, synchronized=case.synchronized)
    else:
        layer = _MODULE_OF_RANK[case.xs[0][0].ndim](channels, eps=spec.eps, momentum=framework_momentum(spec))
        if case.synchronized:
            layer = torch.nn.SyncBatchNorm.convert_sync_batchnorm(layer)
    # Cast first, then set γ, β and the running statistics, so that float64 keeps every digit.
    layer = layer.to(device=device, dtype=framework_dtype(case.dtype))
    with torch.no_grad():
        layer.weight.copy_(to_tensor(case.gamma, case.dtype))
        layer.bias.copy_(to_tensor(case.beta, case.dtype))
        layer.running_mean.fill_(spec.init_running_mean)
        layer.running_var.fill_(spec.init_running_var)
    return layer.train()


def _run_case(impl: str, case: ReplicaCase, rank: int, device: torch.device) -> dict[str, np.ndarray]:
    """Every training step of `case` on this rank's shards; the last step's arrays and the running statistics."""
    layer = _layer(impl, case, device)
    out: dict[str, np.ndarray] = {}
    for xs, dys in zip(case.xs, case.dys, strict=True):
        layer.zero_grad(set_to_none=True)
        x = to_tensor(xs[rank], case.dtype).to(device).requires_grad_(True)
        try:
            y = layer(x)
        except ValueError as e:  # torch.nn.SyncBatchNorm refuses CPU tensors in its forward pass
            if isinstance(layer, torch.nn.SyncBatchNorm) and str(e).startswith(_REFUSAL):
                raise _Refused(f"torch.nn.SyncBatchNorm on CPU: {' '.join(str(e).split())}") from e
            raise
        y.backward(to_tensor(dys[rank], case.dtype).to(device))
        out = {"y": to_numpy(y), "dx": to_numpy(x.grad), "dgamma": to_numpy(layer.weight.grad),
               "dbeta": to_numpy(layer.bias.grad)}
    out.update(running_mean=to_numpy(layer.running_mean), running_var=to_numpy(layer.running_var))
    return out


def _rank_main(rank: int, world: int, port: int, impl: str, cases: Sequence[ReplicaCase],
               results: mp.Queue, timeout: float) -> None:
    """One rank: join the process group, run every case in order, put (index, rank, kind, payload) per case."""
    torch.set_num_threads(1)
    backend, device_type = _engine(impl, world)
    device = torch.device(device_type, rank) if device_type == "cuda" else torch.device("cpu")
    if device_type == "cuda":
        torch.cuda.set_device(device)
    try:
        dist.init_process_group(backend, init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world,
                                timeout=timedelta(seconds=timeout))
        try:
            for index, case in enumerate(cases):
                try:
                    results.put((index, rank, "result", _run_case(impl, case, rank, device)))
                except _Refused as e:
                    results.put((index, rank, "skip", str(e)))
        finally:
            dist.destroy_process_group()
    except Exception as e:  # reported to the parent, which stops every rank
        where = traceback.extract_tb(e.__traceback__)[-1]
        results.put((-1, rank, "error", f"{_one_line(e)} (at {where.filename}:{where.lineno})"))


def _gather(processes: Sequence[BaseProcess], results: mp.Queue, count: int, timeout: float
            ) -> dict[tuple[int, int], tuple[str, object]]:
    """(case index, rank) -> (kind, payload) for every case and rank. Raises RuntimeError when a rank reports an
    error, dies before it has reported every case, or nothing arrives for `timeout` seconds."""
    world = len(processes)
    got: dict[tuple[int, int], tuple[str, object]] = {}
    last, gone_since = time.monotonic(), None
    while len(got) < count * world:
        try:
            index, rank, kind, payload = results.get(timeout=1.0)
        except queue.Empty:
            now = time.monotonic()
            missing = sorted({r for i in range(count) for r in range(world) if (i, r) not in got})
            dead = [r for r in missing if not processes[r].is_alive()]
            if dead:  # a rank that ended flushes its queue first: allow its last messages a moment to arrive
                gone_since = gone_since or now
                if now - gone_since > 5.0:
                    codes = ", ".join(f"rank {r} exit code {processes[r].exitcode}" for r in dead)
                    raise RuntimeError(f"torch replicas: a rank ended before reporting every case ({codes})") from None
            if now - last > timeout:
                raise RuntimeError(f"torch replicas: no result from rank(s) {missing} within {timeout:g} s") from None
            continue
        if kind == "error":
            raise RuntimeError(f"torch replicas: rank {rank} failed: {payload}")
        got[(index, rank)] = (kind, payload)
        last = time.monotonic()
    return got


def _assemble(case: ReplicaCase, parts: list[tuple[str, object]]) -> ReplicaResult | ReplicaSkip:
    """One case's result from every rank's part (rank order)."""
    kinds = {kind for kind, _ in parts}
    if kinds == {"skip"}:
        return ReplicaSkip(str(parts[0][1]))
    if kinds != {"result"}:
        raise RuntimeError(f"torch replicas: case {case.name!r}: some ranks refused it and others ran it")
    outs: list[dict[str, np.ndarray]] = [payload for _, payload in parts]  # type: ignore[misc]

    def each(key: str) -> tuple[np.ndarray, ...]:
        return tuple(o[key] for o in outs)

    return ReplicaResult(ys=each("y"), dxs=each("dx"), dgammas=each("dgamma"), dbetas=each("dbeta"),
                         running_means=each("running_mean"), running_vars=each("running_var"),
                         saved_running=(outs[0]["running_mean"], outs[0]["running_var"]))  # rank 0's: DDP's


def _run_group(impl: str, cases: Sequence[ReplicaCase], world: int,
               timeout: float) -> list[ReplicaResult | ReplicaSkip]:
    """Every case on one process group of `world` ranks, started once; the ranks always end."""
    ctx = _context()
    results = ctx.Queue()
    port = _free_port()
    processes = [ctx.Process(target=_rank_main, args=(rank, world, port, impl, list(cases), results, timeout),
                             name=f"bnparity-torch-replica-{rank}", daemon=True) for rank in range(world)]
    grace = 0.0  # a failed run's ranks may wait in a collective forever: stop them at once
    try:
        for p in processes:
            p.start()
        got = _gather(processes, results, len(cases), timeout)
        grace = 10.0  # every rank has reported: let them destroy the process group and exit
    finally:
        _stop_processes(processes, grace=grace)
        results.close()
        results.cancel_join_thread()
    return [_assemble(case, [got[(i, r)] for r in range(world)]) for i, case in enumerate(cases)]


class _ProcessGroupAdapter(ReplicaAdapter):
    """Runs the cases on one process group per replica count (the ranks of `impl`)."""

    framework = DESCRIPTOR.name
    native_axis = DESCRIPTOR.native_axis
    timeout: float = TIMEOUT

    def run(self, cases: Sequence[ReplicaCase]) -> Iterator[ReplicaResult | ReplicaSkip]:
        cases = list(cases)
        for case in cases:
            if case.spec.axis % case.xs[0][0].ndim != 1:
                raise ValueError(f"torch's layers have their channels at axis 1. Received: case {case.name!r} "
                                 f"with axis {case.spec.axis}")
        done: dict[int, ReplicaResult | ReplicaSkip] = {}
        for world in dict.fromkeys(c.replicas for c in cases):  # the replica counts, in order of appearance
            indices = [i for i, c in enumerate(cases) if c.replicas == world]
            done.update(zip(indices, _run_group(self.impl, [cases[i] for i in indices], world, self.timeout),
                            strict=True))
        for i in range(len(cases)):
            yield done[i]


def _check_runnable(spec: BNSpec, dtype: np.dtype) -> None:
    """Raise Unsupported for what a ReplicaResult cannot hold: no γ and β, or no running statistics."""
    if np.dtype(dtype).name not in ("float32", "float64"):
        raise Unsupported(f"torch replicas: float32 and float64 only. Received: {np.dtype(dtype).name}")
    if not (spec.affine and spec.track_running_stats):
        raise Unsupported("torch replicas: affine layers with running statistics only")


class BuiltinSyncBatchNorm(_ProcessGroupAdapter):
    """torch.nn.SyncBatchNorm (synchronized cases; it refuses CPU tensors) and torch.nn.BatchNorm1d/2d/3d per rank
    (per-replica cases), on torch.distributed: momentum weighs the new batch, unbiased running variance."""

    impl = "builtin"

    def realize(self, spec: BNSpec, dtype: np.dtype) -> BNSpec:
        _check_runnable(spec, dtype)
        return BuiltinBatchNorm().realize(spec, dtype)  # torch's layers store the unbiased running variance


class ScratchSyncBatchNorm(_ProcessGroupAdapter):
    """Cross-replica BatchNorm in torch ops (all_gather of m_r, μ_r, M₂,r; all_reduce of Σ dy, Σ dy·x̂) on gloo:
    ε, momentum either way and either running-variance estimator as the spec says; σ² always by centred sums."""

    impl = "scratch"

    def realize(self, spec: BNSpec, dtype: np.dtype) -> BNSpec:
        _check_runnable(spec, dtype)
        return spec.replace(variance="two-pass")  # M₂,r = Σ (x − μ_r)²: the two-pass variance, whatever asked
