"""The PyTorch DataParallelTrainer: torch.nn.parallel.DistributedDataParallel over R processes of a process group.

The trainer lives in the calling process and drives R ranks (started once, in __init__: forkserver, else spawn; one
thread each; gloo over tcp://127.0.0.1:<free port> on CPU, nccl with one CUDA device per rank on GPU) through one
pipe per rank: commands and NumPy arrays out, NumPy arrays back, every reply awaited with a timeout. Each rank holds
the single-device Trainer's model (frameworks/torch/alexnet.py: the same AlexNet, canonical parameters, dtype),
wrapped in DistributedDataParallel (its defaults: broadcast_buffers=True), and torch.optim.SGD as train.py has it:

- the global batch (and its dropout masks) is split into R equal shards in order
  (bnparity.reference.crossreplica.shard_sizes; a batch that R does not divide raises ValueError), shard r to
  rank r, which runs forward and backward on it with F.cross_entropy (the mean over its shard). DDP all-reduces
  the gradients and divides by R: with equal shards, the gradient of the global batch's mean loss;
- bn_sync="local": torch.nn.BatchNorm1d/2d, each rank its own shard's statistics (what DDP gives without
  SyncBatchNorm); "sync": every BatchNorm replaced by replicas.py's cross-replica layer on CPU (torch.nn.
  SyncBatchNorm refuses CPU tensors) or by torch.nn.SyncBatchNorm (convert_sync_batchnorm) on GPU;
- dropout: given masks are split like x; without masks rank r draws its own from torch's generator, seeded with
  seed + r (`seed` defaults to the parameters' fingerprint, as in train.py).

The saved model (`state`, `evaluate`) is rank 0's, what a DDP user checkpoints: the parameters (alike on every
rank) and rank 0's running statistics (SAVED_RUNNING = "replica0"; DDP broadcasts rank 0's buffers to every rank at
the start of each forward pass, so the other ranks' copies hold their last shard's update of rank 0's). `load_state`
gives every rank the state. `close` ends the ranks; a trainer that is garbage-collected or alive at interpreter
exit is closed too.
"""

from __future__ import annotations

import time
import weakref
from collections.abc import Iterable, Mapping
from datetime import timedelta
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from typing import NoReturn

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F

from bnparity.frameworks import training
from bnparity.reference.alexnet import (
    AlexNetSpec,
    check_params,
    momentum_key,
    param_shapes,
    params_fingerprint,
    running_names,
    trainable_names,
    training_dtype,
)
from bnparity.reference.crossreplica import shard_sizes, split

from .alexnet import from_canonical, to_canonical
from .convert import framework_device, to_numpy
from .descriptor import DESCRIPTOR
from .replicas import TIMEOUT, _context, _convert_cross_replica, _free_port, _one_line, _stop_processes
from .train import RNG_KEY, STEP_KEY

SAVED_RUNNING = "replica0"  # what `state` saves of the per-rank running statistics: rank 0's


def _rng_key(rank: int) -> str:
    """The state key of rank r's generator: train.py's for rank 0 (a single-device Trainer can resume it)."""
    return RNG_KEY if rank == 0 else f"{RNG_KEY}.rank{rank}"


class _Rank:
    """One rank: its process group membership, the DDP-wrapped AlexNet and its SGD."""

    def __init__(self, *, rank: int, world: int, port: int, arch: AlexNetSpec, params: dict[str, np.ndarray],
                 sgd: training.SGDConfig, bn_sync: str, cuda: bool, dtype: np.dtype, seed: int,
                 timeout: float) -> None:
        self.rank, self.arch, self.dtype = rank, arch, dtype
        if cuda:
            torch.cuda.set_device(rank)  # "cuda" is cuda:rank from here on
        self.device = torch.device("cuda", rank) if cuda else torch.device("cpu")
        dist.init_process_group("nccl" if cuda else "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                                world_size=world, timeout=timedelta(seconds=timeout))
        torch.manual_seed(seed + rank)
        model = from_canonical(arch, params, dtype=dtype, device="gpu" if cuda else "cpu")
        if bn_sync == "sync":
            model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model) if cuda else _convert_cross_replica(model)
        self.model = model
        self.ddp = torch.nn.parallel.DistributedDataParallel(model, device_ids=[rank] if cuda else None)
        self.tensors = model.by_name()  # after the conversion: the layers that run
        self.trainable = trainable_names(arch)
        self.optimizer = torch.optim.SGD([self.tensors[n] for n in self.trainable], lr=sgd.lr,
                                         momentum=sgd.momentum, weight_decay=sgd.weight_decay)
        self.momentum = bool(sgd.momentum)

    def _tensor(self, a: np.ndarray, dtype: np.dtype) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(a, dtype=dtype)).to(self.device)

    def step(self, x: np.ndarray, labels: np.ndarray, masks: list[np.ndarray] | None,
             update: bool) -> dict[str, object]:
        """Forward and backward of this rank's shard through DDP (gradients all-reduced); SGD if `update`."""
        xt, yt = self._tensor(x, self.dtype), self._tensor(labels, np.int64)
        mt = None if masks is None else [self._tensor(m, self.dtype) for m in masks]
        self.ddp.train()
        self.optimizer.zero_grad(set_to_none=True)
        logits = self.ddp(xt, mt)
        loss = F.cross_entropy(logits, yt)  # the mean over this shard
        loss.backward()  # DDP: every gradient all-reduced and divided by R
        reply: dict[str, object] = {"loss": float(loss.item()), "correct": int((logits.argmax(1) == yt).sum().item())}
        if update:
            self.optimizer.step()
        else:
            reply["logits"] = to_numpy(logits)
            if self.rank == 0:  # alike on every rank after the all-reduce
                reply["grads"] = {n: to_numpy(self.tensors[n].grad) for n in self.trainable}
        return reply

    def evaluate(self, x: np.ndarray, labels: np.ndarray) -> tuple[float, int]:
        """Eval mode on this rank's model alone (no DDP, no collective): (sum of losses, number correct)."""
        xt, yt = self._tensor(x, self.dtype), self._tensor(labels, np.int64)
        self.model.eval()
        with torch.no_grad():
            logits = self.model(xt)
            loss_sum = F.cross_entropy(logits, yt, reduction="sum")
        return float(loss_sum.item()), int((logits.argmax(1) == yt).sum().item())

    def running(self) -> dict[str, np.ndarray]:
        return {n: to_numpy(self.tensors[n]) for n in running_names(self.arch)}

    def state(self, full: bool) -> dict[str, np.ndarray]:
        """This rank's generator state; with `full`, its parameters, running statistics and momentum buffers."""
        state = {_rng_key(self.rank): torch.get_rng_state().numpy().copy()}
        if full:
            state.update(to_canonical(self.arch, self.model))
            if self.momentum:
                for n in self.trainable:
                    buf = self.optimizer.state.get(self.tensors[n], {}).get("momentum_buffer")
                    state[momentum_key(n)] = np.zeros_like(state[n]) if buf is None else to_numpy(buf)
        return state

    def load(self, state: dict[str, np.ndarray]) -> None:
        self.model.load(state)
        if self.momentum:
            for n in self.trainable:
                buf = self._tensor(np.array(state[momentum_key(n)]), self.dtype)
                self.optimizer.state[self.tensors[n]]["momentum_buffer"] = buf
        if _rng_key(self.rank) in state:
            torch.set_rng_state(torch.from_numpy(np.asarray(state[_rng_key(self.rank)], dtype=np.uint8)))

    def close(self) -> None:
        if dist.is_initialized():
            dist.destroy_process_group()


def _rank_main(conn: Connection, config: dict[str, object]) -> None:
    """One rank's loop: build, reply "ready", then run (command, args) until "close" or the parent goes away."""
    torch.set_num_threads(1)
    rank: _Rank | None = None
    try:
        rank = _Rank(**config)
        conn.send(("ready", None))
        while True:
            command, args = conn.recv()
            if command == "close":
                break
            conn.send(("ok", getattr(rank, command)(*args)))
    except EOFError:  # the parent is gone
        pass
    except Exception as e:  # a rank that fails leaves its peers mid-collective: the parent stops them all
        try:
            conn.send(("error", _one_line(e)))
        except OSError:
            pass
    finally:
        if rank is not None:
            rank.close()
        conn.close()


def _shutdown(processes: list[BaseProcess], conns: list[Connection]) -> None:
    """Ask every rank to close, then join (terminate, kill) them: DataParallelTrainer.close and its finalizer."""
    for conn in conns:
        try:
            conn.send(("close", ()))
        except OSError:
            pass
    _stop_processes(processes)
    for conn in conns:
        conn.close()
    processes.clear()
    conns.clear()


class DataParallelTrainer(training.DataParallelTrainer):
    """AlexNet in PyTorch trained by DistributedDataParallel on R processes (module docstring).

    Args:
        arch: the AlexNetSpec.
        params: canonical initial parameters (every rank gets them).
        sgd: learning rate, momentum, weight decay.
        replicas: R, the number of ranks.
        bn_sync: "sync" (BatchNorm with the global batch's statistics) or "local" (each rank its own shard's).
        device: "cpu" or "gpu" (one CUDA device per rank).
        dtype: "float32" (training) or "float64" (parity checks); arrays come back in it.
        seed: rank r seeds torch's generator with seed + r (dropout). Default: derived from `params`.
        timeout: seconds to wait for any rank's reply before giving up. Default: 120.

    Raises:
        ValueError: an unknown bn_sync, dtype or device, or replicas < 1.
        RuntimeError: device="gpu" without R CUDA devices, or a rank that fails, dies or times out (one line; the
            ranks are stopped).
    """

    framework = DESCRIPTOR.name
    saved_running = SAVED_RUNNING

    def __init__(self, *, arch: AlexNetSpec, params: dict[str, np.ndarray], sgd: training.SGDConfig, replicas: int,
                 bn_sync: str, device: str = "cpu", dtype: str = "float32", seed: int | None = None,
                 timeout: float = TIMEOUT) -> None:
        replicas, bn_sync = self.checked(replicas, bn_sync)
        check_params(arch, params)
        self.arch, self.sgd, self.replicas, self.bn_sync = arch, sgd, replicas, bn_sync
        self.dtype = training_dtype(dtype)
        self.timeout = float(timeout)
        cuda = framework_device(device).type == "cuda"  # ValueError for an unknown device
        if cuda and not torch.cuda.is_available():
            raise RuntimeError(f"--device {device}: no CUDA device is available here "
                               "(torch.cuda.is_available() is False)")
        if cuda and torch.cuda.device_count() < self.replicas:
            raise RuntimeError(f"--device {device}: {self.replicas} replicas need one CUDA device each; "
                               f"torch.cuda.device_count() is {torch.cuda.device_count()}")
        self.steps = 0
        self._trainable = trainable_names(arch)
        self._processes: list[BaseProcess] = []
        self._conns: list[Connection] = []
        # Closes the ranks when the trainer is collected or the interpreter exits, if close() was not called.
        self._finalizer = weakref.finalize(self, _shutdown, self._processes, self._conns)
        ctx, port = _context(), _free_port()
        base = dict(world=self.replicas, port=port, arch=arch, params=params, sgd=sgd, bn_sync=bn_sync, cuda=cuda,
                    dtype=self.dtype, seed=params_fingerprint(params) if seed is None else int(seed),
                    timeout=self.timeout)
        try:
            for rank in range(self.replicas):
                mine, theirs = ctx.Pipe()
                process = ctx.Process(target=_rank_main, args=(theirs, {**base, "rank": rank}),
                                      name=f"bnparity-torch-ddp-{rank}", daemon=True)
                process.start()
                theirs.close()
                self._processes.append(process)
                self._conns.append(mine)
            self._collect(range(self.replicas), "start")
        except BaseException:
            self.close()
            raise

    # --- talking to the ranks ---

    def _fail(self, message: str) -> NoReturn:
        """Kill every rank at once (the others may wait in a collective for the failed one, or be stuck) and raise."""
        for process in self._processes:
            if process.is_alive():
                process.kill()
        self.close()
        raise RuntimeError(message)

    def _collect(self, ranks: Iterable[int], command: str) -> dict[int, object]:
        """Every rank's reply to `command`; RuntimeError (the ranks stopped) when one fails, dies or times out."""
        pending = {self._conns[r]: r for r in ranks}
        replies: dict[int, object] = {}
        deadline = time.monotonic() + self.timeout
        while pending:
            ready = wait(list(pending), timeout=max(0.0, deadline - time.monotonic()))
            if not ready:
                self._fail(f"torch DDP: no reply from rank(s) {sorted(pending.values())} to {command!r} "
                           f"within {self.timeout:g} s")
            for conn in ready:
                r = pending.pop(conn)
                try:
                    kind, payload = conn.recv()
                except (EOFError, OSError):
                    self._processes[r].join(timeout=5.0)
                    self._fail(f"torch DDP: rank {r} ended during {command!r} "
                               f"(exit code {self._processes[r].exitcode})")
                if kind == "error":
                    self._fail(f"torch DDP: rank {r} failed during {command!r}: {payload}")
                replies[r] = payload
        return replies

    def _call(self, command: str, per_rank: Mapping[int, tuple]) -> dict[int, object]:
        """Send `command` with each rank's arguments to the ranks named; their replies."""
        if not self._finalizer.alive:
            raise RuntimeError("torch DDP: the trainer is closed")
        for r, args in per_rank.items():
            try:
                self._conns[r].send((command, args))
            except OSError as e:
                self._fail(f"torch DDP: rank {r} cannot be reached ({_one_line(e)})")
        return self._collect(per_rank, command)

    def _all(self, command: str, *args: object) -> dict[int, object]:
        return self._call(command, {r: args for r in range(self.replicas)})

    def _shards(self, x: np.ndarray, labels: np.ndarray,
                masks: list[np.ndarray] | None) -> dict[int, tuple]:
        """Rank -> (x, labels, masks) of its shard, in order. ValueError when R does not divide the batch."""
        n = int(np.shape(x)[0])
        sizes = shard_sizes(n, self.replicas)  # ValueError when a replica would get no sample
        if len(set(sizes)) != 1:
            raise ValueError(f"a global batch of {n} does not split into {self.replicas} equal shards "
                             f"(shard_sizes: {sizes})")
        xs = split(np.asarray(x, dtype=self.dtype), sizes)
        ys = split(np.asarray(labels, dtype=np.int64), sizes)
        ms = [None] * self.replicas if masks is None else list(zip(*(split(np.asarray(m, dtype=self.dtype), sizes)
                                                                     for m in masks), strict=True))
        return {r: (xs[r], ys[r], None if ms[r] is None else list(ms[r])) for r in range(self.replicas)}

    # --- the Trainer interface ---

    def train_step(self, x: np.ndarray, labels: np.ndarray, *,
                   dropout_masks: list[np.ndarray] | None = None) -> training.StepStats:
        replies = self._call("step", {r: (*a, True) for r, a in self._shards(x, labels, dropout_masks).items()})
        self.steps += 1
        return training.StepStats(loss=float(np.mean([replies[r]["loss"] for r in range(self.replicas)])),
                                  correct=sum(int(replies[r]["correct"]) for r in range(self.replicas)))

    def gradients(self, x: np.ndarray, labels: np.ndarray, *,
                  dropout_masks: list[np.ndarray] | None = None) -> training.Gradients:
        """The all-reduced gradients, the global batch's logits and mean loss; running statistics update."""
        replies = self._call("step", {r: (*a, False) for r, a in self._shards(x, labels, dropout_masks).items()})
        ordered = [replies[r] for r in range(self.replicas)]
        return training.Gradients(logits=np.concatenate([o["logits"] for o in ordered]),
                                  loss=float(np.mean([o["loss"] for o in ordered])), grads=ordered[0]["grads"])

    def evaluate(self, x: np.ndarray, labels: np.ndarray) -> tuple[float, int]:
        """The saved model (rank 0's) in eval mode, any batch size: (sum of per-example losses, number correct)."""
        x, labels = np.asarray(x, dtype=self.dtype), np.asarray(labels, dtype=np.int64)
        return self._call("evaluate", {0: (x, labels)})[0]  # type: ignore[return-value]

    def replica_running(self) -> list[dict[str, np.ndarray]]:
        """Every rank's own BN running statistics (canonical names and layout), rank order."""
        replies = self._all("running")
        return [replies[r] for r in range(self.replicas)]  # type: ignore[misc]

    def state(self) -> dict[str, np.ndarray]:
        """Rank 0's parameters, running statistics and momentum buffers; every rank's generator; the step."""
        replies = self._call("state", {r: (r == 0,) for r in range(self.replicas)})
        state: dict[str, np.ndarray] = {}
        for r in range(self.replicas):
            state.update(replies[r])  # type: ignore[arg-type]
        state[STEP_KEY] = np.array(self.steps, dtype=np.int64)
        return state

    def load_state(self, state: dict[str, np.ndarray]) -> None:
        """Every rank gets `state` (and its own generator's, where the state has one); the step count too."""
        check_params(self.arch, {n: state[n] for n in param_shapes(self.arch) if n in state})
        self._all("load", dict(state))
        self.steps = int(state[STEP_KEY])

    def close(self) -> None:
        """End every rank (asked, then terminated, then killed); idempotent."""
        self._finalizer()
