"""The seed material's published tables as typed rows: the AlexNet blog's 40 epochs and the MLP/CNN tutorial's.

The CSV files beside this module are the published numbers, unchanged. Everything the report or a preset says about
them (accuracy after epoch 1, the end point, the gap BN makes) is computed from these rows, never typed in twice.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
BLOG_CSV = HERE / "alexnet_fashion_mnist_mxnet.csv"
TUTORIAL_CSV = HERE / "mnist_tutorial.csv"


@dataclass(frozen=True)
class BlogEpoch:
    """One epoch of the AlexNet blog's run (epochs count from 1; accuracies are fractions)."""

    variant: str  # "bn" or "nobn"
    epoch: int
    train_loss: float
    train_acc: float
    test_acc: float
    epoch_seconds: float


@dataclass(frozen=True)
class TutorialEpoch:
    """One epoch of the tutorial's runs (epochs count from 0, as its log does; accuracies are fractions)."""

    variant: str  # "mlp-scratch-bn", "mlp-nobn", "cnn-bn" or "cnn-nobn"
    epoch: int
    train_loss: float
    train_acc: float
    valid_loss: float
    valid_acc: float


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def blog_epochs(path: Path = BLOG_CSV) -> tuple[BlogEpoch, ...]:
    """Every row of the AlexNet blog's table, in file order."""
    return tuple(BlogEpoch(r["variant"], int(r["epoch"]), float(r["train_loss"]), float(r["train_acc"]),
                           float(r["test_acc"]), float(r["epoch_seconds"])) for r in _rows(path))


def tutorial_epochs(path: Path = TUTORIAL_CSV) -> tuple[TutorialEpoch, ...]:
    """Every row of the tutorial's table, in file order."""
    return tuple(TutorialEpoch(r["variant"], int(r["epoch"]), float(r["train_loss"]), float(r["train_acc"]),
                               float(r["valid_loss"]), float(r["valid_acc"])) for r in _rows(path))


def blog_curve(variant: str, rows: tuple[BlogEpoch, ...] | None = None) -> tuple[BlogEpoch, ...]:
    """The blog's epochs of one variant, in epoch order. Raises ValueError for a variant it did not train."""
    rows = blog_epochs() if rows is None else rows
    curve = tuple(sorted((r for r in rows if r.variant == variant), key=lambda r: r.epoch))
    if not curve:
        raise ValueError(f"the blog trained variants {sorted({r.variant for r in rows})}. Received: {variant!r}")
    return curve


def blog_points(epochs: tuple[int, ...]) -> tuple[tuple[str, int, float], ...]:
    """(variant, epoch, test accuracy) of both variants at `epochs` (a preset's `published` points)."""
    rows = blog_epochs()
    return tuple((r.variant, r.epoch, r.test_acc) for variant in ("nobn", "bn") for r in blog_curve(variant, rows)
                 if r.epoch in epochs)


def tutorial_curve(variant: str, rows: tuple[TutorialEpoch, ...] | None = None) -> tuple[TutorialEpoch, ...]:
    """The tutorial's epochs of one variant, in epoch order. Raises ValueError for a variant it did not train."""
    rows = tutorial_epochs() if rows is None else rows
    curve = tuple(sorted((r for r in rows if r.variant == variant), key=lambda r: r.epoch))
    if not curve:
        raise ValueError(f"the tutorial trained variants {sorted({r.variant for r in rows})}. Received: {variant!r}")
    return curve
