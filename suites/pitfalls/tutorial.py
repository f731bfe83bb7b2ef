"""The seed tutorial's own experiment, retold cheaply: its MLP with its faulty BatchNorm, a correct one, every
framework's builtin one, and none, trained from the same weights on the same batches.

The tutorial (bnparity.seeds.facts: TUTORIAL_SETUP, TUTORIAL_LAYER, TUTORIAL_FAULTS) trains an MLP 784 → 100 → BN →
ReLU → 10 on MNIST with SGD lr 0.1, batch 64, inputs scaled to [−1, 1], for 10 epochs. Here the same MLP (an
AlexNetSpec of Flatten, Dense(100), BatchNorm, ReLU, Dense(10)) trains on a class-balanced subset of Fashion-MNIST
(MNIST is not shipped) for a few epochs (EPOCHS, TRAIN_IMAGES: chosen so that the whole experiment costs well
under a minute on two CPU cores), and every row is evaluated on the test images in eval mode after each epoch:

- ``tutorial``: the tutorial's layer as written (γ, β ~ N(0, 1); its moving averages from zeros: TUTORIAL_LAYER.spec),
  float64 NumPy reference;
- ``scratch``: a correct layer written from scratch (γ = 1, β = 0, PyTorch's convention: the AlexNetSpec's BNSpec),
  float64 NumPy reference;
- ``builtin``: each framework's own BatchNorm (γ = 1, β = 0) through its Trainer, float32, in a worker process of
  its own (a Keras backend is fixed at import);
- ``nobn``: no BN (the tutorial's mlp-nobn), float64 NumPy reference.

Running statistics never change what training computes, so each fault is also measured alone at no extra training:
``init-only`` is the ``tutorial`` run evaluated with correct running statistics (the γ/β fault alone), and
``moving-only`` the ``scratch`` run evaluated with the tutorial's moving averages (the moving-average faults alone).

Every row starts from init_params(seed) (the tutorial's rows replace γ and β by an N(0, 1) draw) and sees the same
batches (bnparity.suites.data.pipeline.batches). One worker process per training (three reference trainings, one
per framework); each record is saved as soon as its worker ends, so an interruption keeps what finished.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bnparity.reference import alexnet_numpy as anp
from bnparity.reference.alexnet import AlexNetSpec, BatchNorm, Dense, Flatten, ReLU, init_params
from bnparity.reference.spec import BNSpec
from bnparity.seeds.facts import TUTORIAL_FAULTS, TUTORIAL_LAYER, TUTORIAL_SETUP
from bnparity.suites.convergence.runner import thread_env
from bnparity.suites.data.fashion_mnist import FashionMNIST
from bnparity.suites.data.pipeline import Split, batches, select_subset
from bnparity.suites.environment import environment
from bnparity.suites.errors import error_line
from bnparity.suites.schema import (
    Environment,
    TutorialMLPDoc,
    TutorialMLPMeta,
    TutorialMLPRecord,
    TutorialMLPRow,
    TutorialMLPSkip,
    from_dict,
    to_dict,
    tutorial_mlp_record,
)
from bnparity.suites.workers import failure_reason, run_pieces, run_worker, worker_env

from .experiment import evaluate, initial_running

FILENAME = "tutorial_mlp.json"
EPOCHS = 3
TRAIN_IMAGES = 20000
SEED = 0
TIMEOUT_S = 180.0
EVAL_BATCH = 2000
DATASET = "Fashion-MNIST"
PUBLISHED_TRAIN_IMAGES = 60000  # MNIST's training set, all of which the tutorial trained on
WORKER = "bnparity.suites.pitfalls.worker"
MARK = "bnparity-tutorial-record "

Record = TutorialMLPRecord | TutorialMLPSkip


def mlp_spec(*, batch_norm: bool) -> AlexNetSpec:
    """The tutorial's MLP 784 → 100 → BN → ReLU → 10 (without BN: 784 → 100 → ReLU → 10) as an AlexNetSpec."""
    hidden = (Dense("fc1", TUTORIAL_SETUP.hidden), *((BatchNorm("bn1"),) if batch_norm else ()), ReLU("relu1"))
    return AlexNetSpec(name="tutorial-mlp", image_size=28, width=1.0, batch_norm=batch_norm, dropout=0.0,
                       layers=(Flatten(), *hidden, Dense("fc2", 10)))


def scale_inputs(images: np.ndarray) -> np.ndarray:
    """uint8 (N, H, W) pixels scaled to [−1, 1] as the tutorial's inputs are (x/255 − 0.5)/0.5: float32 (N, 1, H, W)."""
    table = ((np.arange(256, dtype=np.float64) / 255.0 - 0.5) / 0.5).astype(np.float32)
    return table[np.asarray(images, dtype=np.uint8)][:, None]


def tutorial_data(data: FashionMNIST, *, train_images: int, seed: int = SEED) -> tuple[Split, Split]:
    """(train, test): a class-balanced subset of `train_images` training images (all when it is the whole split)
    and every test image, scaled to [−1, 1]."""
    index = np.arange(len(data.train_labels)) if train_images >= len(data.train_labels) else \
        select_subset(data.train_labels, train_images, seed=seed, stream=0)
    return (Split(images=scale_inputs(data.train_images[index]), labels=data.train_labels[index].astype(np.int64)),
            Split(images=scale_inputs(data.test_images), labels=data.test_labels.astype(np.int64)))


def tutorial_gamma_beta(arch: AlexNetSpec, params: dict[str, np.ndarray], *, seed: int) -> dict[str, np.ndarray]:
    """`params` with every BN layer's γ and β drawn from N(0, 1), as the tutorial initialises them
    (np.random.default_rng([seed, 1]), in canonical order)."""
    rng = np.random.default_rng([seed, 1])
    out = dict(params)
    for layer in arch.layers:
        if isinstance(layer, BatchNorm):
            for kind in ("gamma", "beta"):
                name = f"{layer.name}.{kind}"
                out[name] = rng.standard_normal(params[name].shape).astype(np.float32)
    return out


def _moving(spec: BNSpec) -> str:
    return (f"new batch weight {spec.new_weight:g}, moving_var from {spec.init_running_var:g}, "
            f"{spec.running_var} running variance")


_CORRECT = mlp_spec(batch_norm=True).bn  # PyTorch's BatchNorm1d semantics
_TUTORIAL_MOVING = (f"the tutorial's moving averages (`{TUTORIAL_LAYER.update}` with m = {TUTORIAL_LAYER.m:g}, "
                    f"from {TUTORIAL_LAYER.moving_start}: {_moving(TUTORIAL_LAYER.spec)})")
_TUTORIAL_INIT = f"γ and β from {TUTORIAL_LAYER.gamma_beta_init} (the tutorial's init)"
_CORRECT_MOVING = f"correct moving averages (PyTorch's convention: {_moving(_CORRECT)})"


@dataclass(frozen=True)
class Row:
    """One row: which training it evaluates (`training`) and with which moving averages (`moving`)."""

    name: str
    description: str
    training: str  # "tutorial-init", "correct-init", "nobn" (a reference training) or "framework"
    moving: BNSpec | None  # None: no BN, or the framework's own


ROWS = (
    Row("tutorial", f"(a) the tutorial's layer as written: {_TUTORIAL_INIT}, {_TUTORIAL_MOVING}; float64 reference",
        "tutorial-init", TUTORIAL_LAYER.spec),
    Row("scratch", f"(b) a correct layer from scratch: γ = 1, β = 0, {_CORRECT_MOVING}; float64 reference",
        "correct-init", _CORRECT),
    Row("builtin", "(c) the framework's own BatchNorm layer (γ = 1, β = 0, new batch weight "
                   f"{_CORRECT.new_weight:g}) through its Trainer, float32", "framework", None),
    Row("nobn", "(d) no BN: 784 → 100 → ReLU → 10 (the tutorial's mlp-nobn); float64 reference", "nobn", None),
    Row("init-only", f"the γ/β fault alone: the tutorial run of (a) ({_TUTORIAL_INIT}) evaluated with "
                     f"{_CORRECT_MOVING}", "tutorial-init", _CORRECT),
    Row("moving-only", f"the moving-average faults alone: the run of (b) (γ = 1, β = 0) evaluated with "
                       f"{_TUTORIAL_MOVING}", "correct-init", TUTORIAL_LAYER.spec),
)
REFERENCE_TRAININGS = ("tutorial-init", "correct-init", "nobn")
FAULTS = TUTORIAL_FAULTS  # what the rows measure, as the seed states them


@dataclass(frozen=True)
class Config:
    """How the experiment trains: epochs, the training subset, the seed; the tutorial's batch size and lr."""

    epochs: int = EPOCHS
    train_images: int = TRAIN_IMAGES
    seed: int = SEED
    lr: float = TUTORIAL_SETUP.lr
    batch_size: int = TUTORIAL_SETUP.batch_size

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.train_images < self.batch_size:
            raise ValueError(f"the tutorial MLP needs epochs >= 1 and at least one batch of {self.batch_size} "
                             f"training images. Received: epochs={self.epochs}, train_images={self.train_images}")


@dataclass(frozen=True)
class Piece:
    """One worker's share: a reference training (`training`) or a framework's builtin row (`framework`)."""

    training: str
    framework: str | None = None

    @property
    def rows(self) -> tuple[str, ...]:
        return tuple(r.name for r in ROWS if r.training == self.training)

    @property
    def label(self) -> str:
        return self.framework or f"reference {self.training}"


def pieces(frameworks: Sequence[str]) -> list[Piece]:
    """Every worker's share: one per framework (its builtin row), then the three reference trainings."""
    return [Piece("framework", fw) for fw in frameworks] + [Piece(t) for t in REFERENCE_TRAININGS]


def _batches(train: Split, config: Config, epoch: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    return batches(train, batch_size=config.batch_size, seed=config.seed, epoch=epoch)


def run_reference(training: str, train: Split, test: Split, config: Config) -> Iterator[TutorialMLPRecord]:
    """One float64 reference training ("tutorial-init", "correct-init" or "nobn"): every row it evaluates, after
    every epoch. Training normalizes with batch statistics; each row's moving averages follow its own rule."""
    arch = mlp_spec(batch_norm=training != "nobn")
    params = {k: v.astype(np.float64) for k, v in init_params(arch, seed=config.seed).items()}
    if training == "tutorial-init":
        params = tutorial_gamma_beta(arch, params, seed=config.seed)
    rows = [r for r in ROWS if r.training == training]
    running = {r.name: initial_running(arch, r.moving) for r in rows if r.moving is not None}
    start = time.perf_counter()
    for epoch in range(config.epochs):
        losses = []
        for x, y in _batches(train, config, epoch):
            step = anp.gradients(arch, params, x, y)  # batch statistics μ_B, σ²_B of this step
            for r in rows:
                if r.moving is not None:
                    running[r.name] = anp.running_after_step(arch, running[r.name], step.batch_stats,
                                                             convention=r.moving)
            params, _ = anp.sgd_step(params, step.grads, lr=config.lr)  # the trainable parameters only
            losses.append(step.loss)
        for r in rows:
            spec = arch if r.moving is None else dataclasses.replace(arch, bn=r.moving)
            accuracy, loss = evaluate(spec, {**params, **running.get(r.name, {})}, test.images, test.labels,
                                      batch_size=EVAL_BATCH)
            yield TutorialMLPRecord(row=r.name, framework=None, epoch=epoch, test_accuracy=accuracy, test_loss=loss,
                                    train_loss=float(np.mean(losses)), seconds=round(time.perf_counter() - start, 3))


def run_framework(framework: str, train: Split, test: Split, config: Config) -> Iterator[Record]:
    """The "builtin" row of one framework: its Trainer on the MLP with γ = 1, β = 0, after every epoch; a skip
    (not installed) or an error (it raised) with its one-line reason otherwise."""
    from bnparity.frameworks.registry import Unavailable
    from bnparity.frameworks.training import SGDConfig, load_trainer

    trainer_cls = load_trainer(framework)
    if isinstance(trainer_cls, Unavailable):
        yield TutorialMLPSkip(row="builtin", framework=framework,
                              status="error" if trainer_cls.installed else "skipped", reason=trainer_cls.reason)
        return
    arch = mlp_spec(batch_norm=True)
    try:
        trainer = trainer_cls(arch=arch, params=init_params(arch, seed=config.seed), sgd=SGDConfig(lr=config.lr))
        start = time.perf_counter()
        for epoch in range(config.epochs):
            losses = [trainer.train_step(x, y).loss for x, y in _batches(train, config, epoch)]
            loss_sum, correct = 0.0, 0
            for i in range(0, len(test), EVAL_BATCH):
                s, c = trainer.evaluate(test.images[i:i + EVAL_BATCH], test.labels[i:i + EVAL_BATCH])
                loss_sum, correct = loss_sum + s, correct + c
            yield TutorialMLPRecord(row="builtin", framework=framework, epoch=epoch,
                                    test_accuracy=correct / len(test), test_loss=loss_sum / len(test),
                                    train_loss=float(np.mean(losses)), seconds=round(time.perf_counter() - start, 3))
    except Exception as e:  # noqa: BLE001 (a framework that raises is recorded; the other rows still run)
        yield TutorialMLPSkip(row="builtin", framework=framework, status="error", reason=error_line(e))


def run_piece(piece: Piece, data: FashionMNIST, config: Config) -> Iterator[Record]:
    """What one worker measures (in the worker's process)."""
    train, test = tutorial_data(data, train_images=config.train_images, seed=config.seed)
    if piece.framework is not None:
        yield from run_framework(piece.framework, train, test, config)
    else:
        yield from run_reference(piece.training, train, test, config)


def job(piece: Piece, *, data_dir: Path, verify: bool, config: Config) -> dict[str, object]:
    """The worker's JSON job."""
    return {"training": piece.training, "framework": piece.framework, "data_dir": str(data_dir), "verify": verify,
            "config": dataclasses.asdict(config)}


def piece_env(piece: Piece) -> dict[str, str]:
    """A framework's own environment (its backend), or this one; one compute thread either way."""
    if piece.framework is not None:
        return worker_env(piece.framework, 1)
    env = dict(os.environ)
    env.update(thread_env(1, env))
    return env


Work = Callable[[Piece, Callable[[subprocess.Popen], None]], list[Record]]


def worker_work(*, data_dir: Path, verify: bool, config: Config, timeout: float) -> Work:
    """`work(piece, register)`: the piece in its worker process; a crash or timeout adds an error per missing row."""
    def work(piece: Piece, register: Callable[[subprocess.Popen], None]) -> list[Record]:
        output = run_worker(WORKER, job(piece, data_dir=data_dir, verify=verify, config=config), env=piece_env(piece),
                            timeout=timeout, mark=MARK, parse=tutorial_mlp_record, register=register)
        records: list[Record] = list(output.records)  # type: ignore[arg-type]
        reason = failure_reason(output, timeout)
        if reason is not None:
            records += [TutorialMLPSkip(row=row, framework=piece.framework, status="error", reason=reason)
                        for row in piece.rows]
        return records
    return work


def new_meta(*, frameworks: Sequence[str], config: Config, train_images: int, test_images: int) -> TutorialMLPMeta:
    """The meta of a run that has not finished yet."""
    return TutorialMLPMeta(environment=from_dict(Environment, environment(), where="environment"),
                           network=TUTORIAL_SETUP.network, dataset=DATASET, inputs=TUTORIAL_SETUP.inputs,
                           train_images=train_images, test_images=test_images, epochs=config.epochs,
                           batch_size=config.batch_size, lr=config.lr, seed=config.seed, frameworks=tuple(frameworks),
                           rows=tuple(TutorialMLPRow(r.name, r.description) for r in ROWS),
                           published_dataset=TUTORIAL_SETUP.dataset, published_epochs=TUTORIAL_SETUP.epochs,
                           published_train_images=PUBLISHED_TRAIN_IMAGES, complete=False)


def run_experiment(*, frameworks: Sequence[str], meta: TutorialMLPMeta, work: Work, jobs: int,
                   save: Callable[[TutorialMLPDoc], None],
                   log: Callable[[str], None] = print) -> TutorialMLPDoc:
    """Every piece through `work`, `jobs` at a time; `save` gets the document after each piece and at the end
    (complete=False when interrupted: the records of every finished piece are kept, and the exception propagates)."""
    todo = pieces(frameworks)
    done: list[list[Record]] = [[] for _ in todo]
    lock = threading.Lock()
    start = time.perf_counter()

    def document(complete: bool) -> TutorialMLPDoc:
        records = tuple(r for piece in done for r in piece)
        return TutorialMLPDoc(meta=dataclasses.replace(meta, complete=complete,
                                                       wall_time_s=round(time.perf_counter() - start, 3)),
                              records=records)

    def one(piece: Piece, register: Callable[[subprocess.Popen], None]) -> list[Record]:
        records = work(piece, register)
        with lock:
            done[todo.index(piece)] = records
            save(document(False))
            for line in describe(piece, records):
                log(line)
        return records

    complete = False
    try:
        run_pieces(todo, one, jobs=jobs, done=done)
        complete = True
    finally:
        doc = document(complete)
        if not complete:
            doc = dataclasses.replace(doc, records=tuple(_stopped(r) for r in doc.records))
        save(doc)
        if not complete:
            print(f"interrupted; {len(doc.records)} tutorial MLP records kept", file=sys.stderr)
    return doc


_KILLED = f"the worker exited with code {-signal.SIGKILL}"  # workers.failure_reason of a worker killed by run_pieces


def _stopped(record: Record) -> Record:
    """In an interrupted experiment, the error of a worker killed with it says so (not a crash of its own)."""
    if isinstance(record, TutorialMLPSkip) and record.reason.startswith(_KILLED):
        return dataclasses.replace(record, reason=f"interrupted: the worker was stopped with the experiment "
                                                  f"({record.reason})")
    return record


def describe(piece: Piece, records: Sequence[Record]) -> list[str]:
    """One line per row of a finished piece: its test accuracy after each epoch, or why it did not run."""
    lines = []
    for row in piece.rows:
        mine = [r for r in records if r.row == row]
        ok = [r for r in mine if isinstance(r, TutorialMLPRecord)]
        name = f"{row}" + (f" ({piece.framework})" if piece.framework else "")
        if ok:
            lines.append(f"tutorial MLP {name:<28} test accuracy by epoch "
                         + " ".join(f"{r.test_accuracy:.4f}" for r in ok) + f"  ({ok[-1].seconds:.1f} s)")
        lines += [f"tutorial MLP {name:<28} {r.status}: {r.reason}" for r in mine if isinstance(r, TutorialMLPSkip)]
    return lines


def saver(path: Path) -> Callable[[TutorialMLPDoc], None]:
    """Write the document to `path` (atomically: an interrupted write leaves the previous one)."""
    from bnparity.suites.output import write_json

    return lambda doc: write_json(path, to_dict(doc))
