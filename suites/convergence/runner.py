"""One training run (framework x variant x seed) in its own process, recorded as JSONL as it happens.

Run as ``python -m bnparity.suites.convergence.runner --run-dir DIR --framework F --variant V --seed K``
(the orchestrator does); the run's configuration is the run directory's manifest.json, so every run of a
directory trains alike — except, in a batch-size sweep (``--batch-size B``), its batch size and linearly scaled
learning rate (TrainPreset.at_batch). The framework is reached only through frameworks.training.load_trainer.

A data-parallel run (``--replicas R --bn-sync local|sync``, a data-parallel preset's) trains through
frameworks.training.load_data_parallel_trainer's class instead, on R replicas with per-replica ("local") or
synchronized ("sync") BatchNorm statistics, on the same global batches (each split into R shards by the trainer),
dropout masks, learning rate and schedule as the preset's single-device runs; the trainer is closed (its engine
stopped) however the run ends. Its process needs the framework's replica environment set before the framework is
imported (orchestrate.run_environment does it).

Records (bnparity.suites.schema's event classes, one per kind; besides the common
kind/framework/variant/seed/epoch/iteration/t; times in seconds):
  start        preset, iters_per_epoch, epochs, n_train, n_test, batch_size (the run's; a data-parallel run's
               global batch), threads (a data-parallel run's: per replica), device, pid, resumed_from_epoch (0 on a
               fresh start), setup_time (data + model + checkpoint loading)
  iter         loss (batch mean), correct, batch, accuracy, batch_digest (`batch_digest`: what the framework
               trained on, images, labels and dropout masks) — after every SGD step
  eval         epochs_done (iteration / iters_per_epoch), train_loss and train_accuracy (running average
               over the iterations since the previous eval point; null at iteration 0), test_loss,
               test_accuracy, wall_time (since the run began, resumed segments included), train_time
               (training only, cumulative), eval_time, images_per_s (training throughput since the previous
               point, evaluation excluded)
  epoch        train_loss, train_accuracy (over the epoch), test_loss, test_accuracy (the epoch-end eval),
               epoch_time, images_per_s (over the epoch, evaluation excluded), wall_time, train_time,
               checkpoint (path relative to the run directory), compile_count and compile_counts (the
               trainer's attributes when it has them — JAX: traces of the training step, and per function —
               else null), epoch_digest (`epoch_digest` of the epoch's batch digests)
  done         epochs, wall_time, train_time, test_accuracy (the final evaluation), best_test_accuracy (the
               highest evaluation, resumed segments included), images_per_s, compile_count, compile_counts
  failed       error (the exception's last line), traceback
  interrupted  (Ctrl-C) nothing else; the run is incomplete and --resume continues it
  skipped      reason (the framework cannot be loaded here)

Dropout: the masks come from here (``dropout_masks``, drawn per epoch from ``mask_rng(seed, epoch)``), the
same for every framework, as the batches are (pipeline.batches with the run's seed).

Evaluation points: iteration 0 (before training, fresh runs only), then evals_per_epoch evenly spaced points
per epoch, the last one at the epoch's end (that one is also summarized by the "epoch" record).

--resume continues after the last epoch that has both its "epoch" record and its checkpoint: the records of
the interrupted epoch are moved to <name>.interrupted.jsonl, so the run file holds one continuous curve.

Failure injection (for tests): BNPARITY_TRAIN_FAIL="<run name>@<iteration>[:exit],..." makes that run raise
RuntimeError right after that global iteration (":exit": the process dies with os._exit(70) instead, writing
nothing, as a crash in native code would).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import math
import os
import signal
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from bnparity.frameworks.registry import Unavailable
from bnparity.frameworks.training import SGDConfig, Trainer, load_data_parallel_trainer, load_trainer
from bnparity.suites.schema import EpochEvent, EvalEvent, TrainManifest

if TYPE_CHECKING:
    from bnparity.suites.data.pipeline import Split

from .presets import VARIANTS, TrainPreset
from .records import (
    DP_MODES,
    RecordWriter,
    RunId,
    load_checkpoint,
    load_manifest,
    read_records,
    resume_point,
    save_checkpoint,
    truncate_after_epoch,
)

FAIL_ENV = "BNPARITY_TRAIN_FAIL"
THREADS_ENV = "BNPARITY_THREADS"


def thread_env(threads: int, base: dict[str, str] | None = None) -> dict[str, str]:
    """Environment variables that hold every framework of a process to `threads` compute threads.

    OMP/MKL/OpenBLAS cover PyTorch (its intra-op default follows OMP_NUM_THREADS) and MXNet; XLA's CPU
    backend is single-threaded only with --xla_cpu_multi_thread_eigen=false (added for threads == 1);
    BNPARITY_THREADS is for trainers that set their framework's thread count explicitly.
    """
    env = {k: str(threads) for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                                      THREADS_ENV)}
    xla = (base or {}).get("XLA_FLAGS", "")
    if threads == 1 and "xla_cpu_multi_thread_eigen" not in xla:
        xla = f"{xla} --xla_cpu_multi_thread_eigen=false".strip()
    if xla:
        env["XLA_FLAGS"] = xla
    return env


def eval_points(iters_per_epoch: int, evals_per_epoch: int) -> list[int]:
    """The iterations of an epoch (1-based, local) after which to evaluate; the last is the epoch's end."""
    n = min(evals_per_epoch, iters_per_epoch)
    return sorted({math.ceil((k + 1) * iters_per_epoch / n) for k in range(n)})


def evaluate(trainer: Trainer, images: np.ndarray, labels: np.ndarray, *, batch_size: int) -> tuple[float, float]:
    """(mean loss, accuracy) of `trainer` in eval mode over all of `images`, in batches of `batch_size`."""
    loss_sum, correct = 0.0, 0
    for start in range(0, len(labels), batch_size):
        batch_loss, batch_correct = trainer.evaluate(images[start:start + batch_size], labels[start:start + batch_size])
        loss_sum += float(batch_loss)
        correct += int(batch_correct)
    return loss_sum / len(labels), correct / len(labels)


def dropout_shapes(arch: object) -> list[tuple[tuple[int, ...], float]]:
    """(per-example input shape, rate) of every Dropout layer of `arch` with a rate above 0, in order."""
    from bnparity.reference.alexnet import Dropout, layer_shapes

    return [(s.in_shape, s.layer.rate) for s in layer_shapes(arch) if isinstance(s.layer, Dropout) and s.layer.rate > 0]


def dropout_masks(shapes: list[tuple[tuple[int, ...], float]], *, batch: int,
                  rng: np.random.Generator) -> list[np.ndarray] | None:
    """One inverted-dropout multiplier per layer of `shapes`: 0 or 1/(1 − rate), float32 (batch, *shape).

    Every framework gets the same masks, drawn here from `rng`, so dropout is no difference between them.
    None when there is no dropout.
    """
    if not shapes:
        return None
    return [(rng.random((batch, *shape), dtype=np.float32) >= np.float32(rate)).astype(np.float32)
            * np.float32(1.0 / (1.0 - rate)) for shape, rate in shapes]


def batch_digest(x: np.ndarray, labels: np.ndarray, masks: list[np.ndarray] | None) -> str:
    """16 hex digits identifying a training batch: BLAKE2b (8-byte digest) over its images as float32, its labels
    as int64 and, per dropout layer, which units its mask keeps (bit-packed) and the mask's scale 1/(1 − rate).

    The same batch gives the same digest in every framework. Cost, measured on the cpu preset (batch 128, PyTorch,
    one thread, median of 15 steps on a busy 2-core machine): 2.3 ms against an 850 ms step (0.27%); SHA-256 over
    the same bytes took 0.78%, over the unpacked float32 masks 2.2%.
    """
    h = hashlib.blake2b(np.ascontiguousarray(x, dtype=np.float32), digest_size=8)
    h.update(np.ascontiguousarray(labels, dtype=np.int64))
    for mask in masks or ():
        h.update(np.packbits(mask != 0))
        h.update(np.float32(mask.max(initial=0.0)).tobytes())
    return h.hexdigest()


def epoch_digest(digests: list[str]) -> str:
    """16 hex digits identifying an epoch's batches: BLAKE2b (8 bytes) of its batch digests, in order."""
    return hashlib.blake2b("".join(digests).encode("ascii"), digest_size=8).hexdigest()


def mask_rng(*, seed: int, epoch: int) -> np.random.Generator:
    """The dropout-mask generator of one epoch (0-based), independent of the batch order's generator."""
    return np.random.default_rng([seed, epoch, 1])


def _injected_failure(run: RunId) -> tuple[int, bool] | None:
    """(iteration, hard exit) requested for `run` by BNPARITY_TRAIN_FAIL, or None."""
    for item in os.environ.get(FAIL_ENV, "").split(","):
        name, _, where = item.strip().partition("@")
        if name == run.name and where:
            iteration, _, mode = where.partition(":")
            return int(iteration), mode == "exit"
    return None


@dataclass
class _Window:
    """Training statistics accumulated since the last evaluation point."""

    start: float
    loss_sum: float = 0.0
    correct: int = 0
    images: int = 0
    steps: int = 0

    def add(self, loss: float, correct: int, batch: int) -> None:
        self.loss_sum += loss
        self.correct += correct
        self.images += batch
        self.steps += 1

    def summary(self, train_seconds: float) -> dict[str, float | None]:
        return {"train_loss": self.loss_sum / self.steps if self.steps else None,
                "train_accuracy": self.correct / self.images if self.images else None,
                "images_per_s": self.images / train_seconds if self.images and train_seconds > 0 else None}


@dataclass
class _Clock:
    """Wall and training time of a run, continued across resumed segments."""

    wall_offset: float = 0.0
    train_time: float = 0.0
    began: float = field(default_factory=time.perf_counter)

    def wall(self) -> float:
        return self.wall_offset + time.perf_counter() - self.began


@dataclass
class _Position:
    epoch: int = 0
    iteration: int = 0


def _build(run: RunId, preset: TrainPreset, manifest: TrainManifest, trainer_cls: type[Trainer]):
    from bnparity.reference.alexnet import init_params, variant_spec
    from bnparity.suites.data.fashion_mnist import load_fashion_mnist
    from bnparity.suites.data.pipeline import prepare

    if manifest.data_dir is None:
        raise ValueError("the run directory's manifest.json must name data_dir. Received: none")
    data = load_fashion_mnist(Path(manifest.data_dir), allow_download=False, verify=manifest.verify_data)
    train, test = prepare(data, image_size=preset.image_size, train_subset=preset.train_subset,
                          test_subset=preset.test_subset, subset_seed=preset.subset_seed)
    arch = variant_spec(preset.arch, run.variant)
    sgd = SGDConfig(lr=preset.lr, momentum=preset.momentum, weight_decay=preset.weight_decay)
    replicas = {} if run.replicas is None else {"replicas": run.replicas, "bn_sync": run.bn_sync}
    trainer = trainer_cls(arch=arch, params=init_params(arch, seed=run.seed), sgd=sgd, device=manifest.device,
                          **replicas)
    return trainer, arch, train, test


def _train(out: RecordWriter, pos: _Position, *, run_dir: Path, run: RunId, manifest: TrainManifest,
           trainer_cls: type[Trainer], start_epoch: int, parent_pid: int | None) -> None:
    preset = manifest.preset.at_batch(run.batch_size)
    clock = _Clock()
    trainer, arch, train, test = _build(run, preset, manifest, trainer_cls)
    close = getattr(trainer, "close", None)  # a DataParallelTrainer's engine (processes, threads)
    try:
        _epochs(out, pos, trainer, arch=arch, train=train, test=test, preset=preset, clock=clock, run_dir=run_dir,
                run=run, manifest=manifest, start_epoch=start_epoch, parent_pid=parent_pid)
    except BaseException:
        if close is not None:
            with contextlib.suppress(Exception):  # the run's own error is the one to report
                close()
        raise
    if close is not None:
        close()


def _epochs(out: RecordWriter, pos: _Position, trainer: Trainer, *, arch: object, train: Split, test: Split,
            preset: TrainPreset, clock: _Clock, run_dir: Path, run: RunId, manifest: TrainManifest,
            start_epoch: int, parent_pid: int | None) -> None:
    from bnparity.suites.data.pipeline import batches

    if start_epoch:
        state, meta = load_checkpoint(run_dir, run, start_epoch)
        trainer.load_state(state)
        clock.wall_offset, clock.train_time = meta["wall_time"], meta["train_time"]
        pos.iteration = meta["iteration"]
    pos.epoch = start_epoch
    iters_per_epoch = len(train.labels) // preset.batch_size
    fail = _injected_failure(run)
    out.write("start", epoch=pos.epoch, iteration=pos.iteration, preset=preset.name,
              iters_per_epoch=iters_per_epoch, epochs=preset.epochs, n_train=len(train.labels),
              n_test=len(test.labels), batch_size=preset.batch_size, threads=os.environ.get(THREADS_ENV),
              device=manifest.device, pid=os.getpid(), resumed_from_epoch=start_epoch,
              setup_time=time.perf_counter() - clock.began)

    def eval_record(window: _Window, window_train: float) -> EvalEvent:
        t0 = time.perf_counter()
        test_loss, test_acc = evaluate(trainer, test.images, test.labels, batch_size=preset.eval_batch_size)
        eval_time = time.perf_counter() - t0
        event = out.write("eval", epoch=pos.epoch, iteration=pos.iteration, **window.summary(window_train),
                          test_loss=test_loss, test_accuracy=test_acc, epochs_done=pos.iteration / iters_per_epoch,
                          wall_time=clock.wall(), train_time=clock.train_time, eval_time=eval_time)
        assert isinstance(event, EvalEvent)
        if test_acc is not None and math.isfinite(test_acc):
            accuracies.append(test_acc)
        return event

    last: EvalEvent | EpochEvent | None = None
    accuracies: list[float] = []  # every evaluation's test accuracy, the resumed-from segments' too
    if start_epoch == 0:
        last = eval_record(_Window(start=time.perf_counter()), 0.0)
    else:
        earlier = read_records(run.records_path(run_dir))
        accuracies = [r.test_accuracy for r in earlier if isinstance(r, EvalEvent) and r.test_accuracy is not None]
        last = [r for r in earlier if isinstance(r, EpochEvent)][-1]
    for epoch in range(start_epoch + 1, preset.epochs + 1):
        pos.epoch = epoch
        points = set(eval_points(iters_per_epoch, preset.evals_per_epoch))
        epoch_window = _Window(start=time.perf_counter())
        epoch_train = 0.0
        window = _Window(start=time.perf_counter())
        masks_rng = mask_rng(seed=run.seed, epoch=epoch - 1)
        shapes = dropout_shapes(arch)
        digests: list[str] = []
        for local, (x, labels) in enumerate(batches(train, batch_size=preset.batch_size, seed=run.seed,
                                                    epoch=epoch - 1), start=1):
            masks = dropout_masks(shapes, batch=len(labels), rng=masks_rng)
            digests.append(batch_digest(x, labels, masks))
            stats = trainer.train_step(x, labels, dropout_masks=masks)
            pos.iteration += 1
            loss, correct, batch = float(stats.loss), int(stats.correct), len(labels)
            out.write("iter", epoch=epoch, iteration=pos.iteration, loss=loss, correct=correct, batch=batch,
                      accuracy=correct / batch, batch_digest=digests[-1])
            window.add(loss, correct, batch)
            epoch_window.add(loss, correct, batch)
            if fail is not None and pos.iteration == fail[0]:
                if fail[1]:
                    os._exit(70)
                raise RuntimeError(f"injected failure after iteration {pos.iteration} ({FAIL_ENV})")
            if parent_pid is not None and os.getppid() != parent_pid:
                raise KeyboardInterrupt  # the orchestrator is gone: stop like Ctrl-C
            if local in points:
                window_train = time.perf_counter() - window.start
                clock.train_time += window_train
                epoch_train += window_train
                last = eval_record(window, window_train)
                window = _Window(start=time.perf_counter())
        checkpoint = (run.checkpoint_dir(run_dir) / f"epoch{epoch}.npz").relative_to(run_dir)
        summary = epoch_window.summary(epoch_train)
        assert last is not None  # the epoch's end is an evaluation point
        out.write("epoch", epoch=epoch, iteration=pos.iteration, sync=True, train_loss=summary["train_loss"],
                  train_accuracy=summary["train_accuracy"], test_loss=last.test_loss,
                  test_accuracy=last.test_accuracy, epoch_time=time.perf_counter() - epoch_window.start,
                  images_per_s=summary["images_per_s"], wall_time=clock.wall(), train_time=clock.train_time,
                  checkpoint=str(checkpoint), compile_count=getattr(trainer, "compile_count", None),
                  compile_counts=getattr(trainer, "compile_counts", None), epoch_digest=epoch_digest(digests))
        # The record first, then the checkpoint: a checkpoint is only used when its record exists.
        save_checkpoint(run_dir, run, epoch=epoch, state=trainer.state(),
                        meta={"iteration": pos.iteration, "wall_time": clock.wall(), "train_time": clock.train_time,
                              "next_epoch": epoch + 1, "batch_seed": run.seed})
    images = pos.iteration * preset.batch_size
    out.write("done", epoch=pos.epoch, iteration=pos.iteration, sync=True, epochs=preset.epochs,
              wall_time=clock.wall(), train_time=clock.train_time,
              test_accuracy=last.test_accuracy if last is not None else None,
              best_test_accuracy=max(accuracies, default=None),
              images_per_s=images / clock.train_time if clock.train_time > 0 else None,
              compile_count=getattr(trainer, "compile_count", None),
              compile_counts=getattr(trainer, "compile_counts", None))


def run_one(*, run_dir: Path, run: RunId, resume: bool = False, parent_pid: int | None = None,
            trainer_cls: type[Trainer] | None = None) -> str:
    """Train `run` as the manifest of `run_dir` says, recording as it goes.

    Args:
        run_dir: the run directory (its manifest.json holds the preset, data folder and device).
        run: which framework, variant and seed (and, data-parallel, replicas and BatchNorm mode).
        resume: continue after the last epoch with both an "epoch" record and a checkpoint.
        parent_pid: stop (as on Ctrl-C) once this process is no longer our parent.
        trainer_cls: the Trainer class to use instead of load_trainer(run.framework) (tests, benchmarks); for a
            data-parallel run, a DataParallelTrainer class instead of load_data_parallel_trainer(run.framework).

    Returns:
        The kind of the run's last record: "done", "failed" or "skipped". Ctrl-C writes an "interrupted"
        record and re-raises KeyboardInterrupt.
    """
    run_dir = Path(run_dir)
    manifest = load_manifest(run_dir)
    start_epoch = resume_point(run_dir, run) if resume else 0
    if resume:
        truncate_after_epoch(run_dir, run, start_epoch)
    pos = _Position(epoch=start_epoch)
    with RecordWriter(run.records_path(run_dir), run) as out:
        try:
            load = load_data_parallel_trainer if run.data_parallel else load_trainer
            trainer_cls = trainer_cls or load(run.framework)
            if isinstance(trainer_cls, Unavailable):
                out.write("skipped", epoch=pos.epoch, iteration=pos.iteration, reason=trainer_cls.reason)
                return "skipped"
            _train(out, pos, run_dir=run_dir, run=run, manifest=manifest, trainer_cls=trainer_cls,
                   start_epoch=start_epoch, parent_pid=parent_pid)
            return "done"
        except KeyboardInterrupt:
            out.write("interrupted", epoch=pos.epoch, iteration=pos.iteration, sync=True)
            raise
        except Exception as e:
            text = traceback.format_exc()
            last_line = f"{type(e).__name__}: {e}".strip().splitlines()[-1]
            out.write("failed", epoch=pos.epoch, iteration=pos.iteration, sync=True, error=last_line,
                      traceback=text)
            print(text, file=sys.stderr)
            return "failed"


def main(argv: list[str] | None = None) -> int:
    """Process entry point. Exit code: 0 done, 1 failed, 3 skipped, 130 interrupted."""
    parser = argparse.ArgumentParser(prog="python -m bnparity.suites.convergence.runner",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--run-dir", type=Path, required=True)
    parser.add_argument("--framework", required=True)
    parser.add_argument("--variant", required=True, choices=VARIANTS)
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--batch-size", type=int, help="the run's batch size in a batch-size sweep")
    parser.add_argument("--replicas", type=int, help="a data-parallel run's number of replicas (with --bn-sync)")
    parser.add_argument("--bn-sync", choices=DP_MODES, help="a data-parallel run's BatchNorm statistics")
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--threads", type=int, help="compute threads (sets the thread environment variables)")
    parser.add_argument("--parent-pid", type=int, help="stop when this process is no longer the parent")
    args = parser.parse_args(argv)
    # Stop cleanly (an "interrupted" record) on SIGINT or SIGTERM, even when started with SIGINT ignored
    # (a background job of a non-interactive shell), so that the orchestrator can always stop this run.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    if args.threads:
        os.environ.update(thread_env(args.threads, dict(os.environ)))
    run = RunId(args.framework, args.variant, args.seed, args.batch_size, args.replicas, args.bn_sync)
    try:
        kind = run_one(run_dir=args.run_dir, run=run, resume=args.resume, parent_pid=args.parent_pid)
    except KeyboardInterrupt:
        return 130
    return {"done": 0, "failed": 1, "skipped": 3}[kind]


if __name__ == "__main__":
    sys.exit(main())
