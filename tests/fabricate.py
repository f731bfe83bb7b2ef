"""Fabricated training records for tests: every field a record kind requires, with neutral values unless given.

The values are placeholders only for the fields a test does not look at; a test passes the ones it checks.
Records go through the schema's event classes, so a fabricated record is always one the suite could write.
"""

from __future__ import annotations

from typing import Any

from bnparity.suites.schema import TRAIN_EVENTS, to_dict

# What each kind requires beyond the run's identity, epoch, iteration and t.
_NEUTRAL: dict[str, dict[str, Any]] = {
    "start": {"preset": "smoke", "iters_per_epoch": 8, "epochs": 2, "n_train": 256, "n_test": 128, "batch_size": 32,
              "threads": None, "device": "cpu", "pid": 0, "resumed_from_epoch": 0, "setup_time": 0.0},
    "iter": {"loss": 1.0, "correct": 0, "batch": 32, "accuracy": 0.0},
    "eval": {"epochs_done": 0.0, "train_loss": None, "train_accuracy": None, "test_loss": None, "test_accuracy": None,
             "wall_time": 0.0, "train_time": 0.0, "eval_time": 0.0, "images_per_s": None},
    "epoch": {"train_loss": None, "train_accuracy": None, "test_loss": None, "test_accuracy": None, "epoch_time": 0.0,
              "images_per_s": None, "wall_time": 0.0, "train_time": 0.0, "checkpoint": "", "compile_count": None,
              "compile_counts": None},
    "done": {"epochs": 2, "wall_time": 0.0, "train_time": 0.0, "test_accuracy": None, "images_per_s": None,
             "compile_count": None, "compile_counts": None},
    "failed": {"error": "RuntimeError: fabricated"},
    "interrupted": {},
    "skipped": {"reason": "fabricated"},
}


def fields(kind: str, **given: Any) -> dict[str, Any]:
    """The fields of a `kind` record for RecordWriter.write: `given`, and neutral values for the rest."""
    return {**_NEUTRAL[kind], **given}


def event(kind: str, *, framework: str = "torch", variant: str = "bn", seed: int = 0, epoch: int = 0,
          iteration: int = 0, t: float = 0.0, **given: Any) -> dict[str, Any]:
    """One record of `kind` as a line of a run file holds it (a JSON object)."""
    cls = TRAIN_EVENTS[kind]
    return to_dict(cls(framework=framework, variant=variant, seed=seed, epoch=epoch, iteration=iteration, t=t,
                       **fields(kind, **given)))
