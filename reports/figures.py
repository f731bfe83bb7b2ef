"""The report's figures (matplotlib, Agg backend): training curves per framework and the frameworks overlaid."""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass

import matplotlib

matplotlib.use("Agg")  # files only, never a window; set before pyplot is imported
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.ticker import FormatStrFormatter, FuncFormatter  # noqa: E402

from bnparity.frameworks.registry import descriptor, display_name, sort_key  # noqa: E402
from bnparity.suites.schema import EvalEvent, TrainEvent  # noqa: E402

OTHER_COLOR = "#555555"  # a framework no folder declares (an old record's)
VARIANT_STYLE = {"bn": "-", "nobn": "--"}
VARIANT_LABEL = {"bn": "with BN", "nobn": "without BN"}


@dataclass(frozen=True)
class Metric:
    """A panel: which value of an evaluation record it plots, and its axis label."""

    name: str
    label: str
    value: Callable[[EvalEvent], float | None]


PANELS = (Metric("train_loss", "train loss (cross-entropy, nats)", lambda e: e.train_loss),
          Metric("test_accuracy", "test accuracy (fraction correct)", lambda e: e.test_accuracy))


def color(framework: str) -> str:
    """The framework's colour from its descriptor (a colour-blind-safe palette); grey for an unknown name."""
    try:
        return descriptor(framework).color
    except ValueError:
        return OTHER_COLOR


@dataclass(frozen=True)
class Curve:
    """Mean (and standard deviation over seeds, when there are several) of one metric of one configuration."""

    epochs: np.ndarray
    mean: np.ndarray
    std: np.ndarray | None
    seeds: int


@dataclass(frozen=True)
class Series:
    """One plotted line: what it shows and its points (epochs done, mean over seeds), as drawn."""

    figure: str
    framework: str
    variant: str
    metric: str
    label: str
    epochs: tuple[float, ...]
    values: tuple[float, ...]


@dataclass(frozen=True)
class Figure:
    """One PNG figure: `name` is its file stem (figures/<name>.png), `caption` its one-line description, `series`
    the data of every line drawn."""

    name: str
    caption: str
    png: bytes
    series: tuple[Series, ...] = ()


Runs = dict[tuple[str, str], list[list[EvalEvent]]]


def curve(evals_by_seed: list[list[EvalEvent]], metric: Metric) -> Curve | None:
    """The metric's curve over evaluation points, averaged over seeds at equal iterations (None if no point)."""
    points: dict[int, tuple[float, list[float]]] = {}
    for evals in evals_by_seed:
        for e in evals:
            value = metric.value(e)
            if value is not None and np.isfinite(value):
                _, values = points.setdefault(e.iteration, (e.epochs_done, []))
                values.append(float(value))
    if not points:
        return None
    iterations = sorted(points)
    means = np.array([np.mean(points[i][1]) for i in iterations])
    counts = [len(points[i][1]) for i in iterations]
    std = (np.array([np.std(points[i][1], ddof=1) if len(points[i][1]) > 1 else 0.0 for i in iterations])
           if max(counts) > 1 else None)
    return Curve(np.array([points[i][0] for i in iterations]), means, std, max(counts))


def group_runs(train_records: dict[str, list[TrainEvent]]) -> Runs:
    """(framework, variant) -> the evaluation records of each seed's run that has any."""
    groups: Runs = {}
    for records in train_records.values():
        evals = [r for r in records if isinstance(r, EvalEvent)]
        if evals:
            groups.setdefault((evals[0].framework, evals[0].variant), []).append(evals)
    return groups


def _plot(ax: plt.Axes, c: Curve, *, color: str, style: str, label: str) -> None:
    ax.plot(c.epochs, c.mean, style, color=color, label=label + (f" (mean of {c.seeds} seeds)" if c.seeds > 1 else ""),
            linewidth=1.6, marker="o", markersize=2.5)
    if c.std is not None:
        ax.fill_between(c.epochs, c.mean - c.std, c.mean + c.std, color=color, alpha=0.18, linewidth=0)


def _series(figure: str, framework: str, variant: str, metric: Metric, label: str, c: Curve) -> Series:
    return Series(figure=figure, framework=framework, variant=variant, metric=metric.name, label=label,
                  epochs=tuple(float(x) for x in c.epochs), values=tuple(float(x) for x in c.mean))


def _minor_label(value: float, _pos: int) -> str:
    """Label the minor ticks of a log axis at 2, 3 and 5 × 10^k only, so that labels never overlap."""
    mantissa = value / 10 ** np.floor(np.log10(value))
    return f"{value:.2g}" if any(abs(mantissa - m) < 1e-6 for m in (2, 3, 5)) else ""


def _finish(ax: plt.Axes, metric: Metric, title: str, epochs: float | None) -> None:
    ax.set_xlabel("epochs (passes over the training subset)")
    if epochs:
        ax.set_xlim(0, epochs)  # the planned length: a run cut short shows as a shorter curve
    ax.set_ylabel(metric.label)
    ax.set_title(title, fontsize=10)
    ax.grid(True, alpha=0.3)
    if metric.name == "test_accuracy":
        ax.set_ylim(0.0, 1.0)
    else:
        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(FormatStrFormatter("%.2g"))
        ax.yaxis.set_minor_formatter(FuncFormatter(_minor_label))
        ax.tick_params(axis="y", which="minor", labelsize=7)
    if ax.get_legend_handles_labels()[0]:  # a panel with no points (e.g. train loss before any step) has none
        ax.legend(fontsize=8, loc="best")


def _png(fig: plt.Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def curves_figure(groups: Runs, order: list[str], epochs: float | None) -> Figure | None:
    """One row per framework: train loss and test accuracy vs epoch, with BN (solid) and without (dashed)."""
    frameworks = [f for f in order if any(k[0] == f for k in groups)]
    if not frameworks:
        return None
    series = []
    fig, axes = plt.subplots(len(frameworks), 2, figsize=(10, 3.1 * len(frameworks)), squeeze=False)
    for row, fw in zip(axes, frameworks, strict=True):
        for ax, metric in zip(row, PANELS, strict=True):
            for variant in VARIANT_STYLE:
                c = curve(groups.get((fw, variant), []), metric)
                if c is not None:
                    label = f"{display_name(fw)} {VARIANT_LABEL[variant]}"
                    _plot(ax, c, color=color(fw), style=VARIANT_STYLE[variant], label=label)
                    series.append(_series("curves", fw, variant, metric, label, c))
            _finish(ax, metric, f"{display_name(fw)}: {metric.label.split(' (')[0]}", epochs)
    fig.tight_layout()
    return Figure("curves", "Training curves per framework: train loss (log scale, running mean since the previous "
                  "evaluation) and test accuracy against epochs, with BN (solid) and without (dashed); bands are "
                  "± one standard deviation over seeds.", _png(fig), tuple(series))


def overlay_figure(groups: Runs, order: list[str], epochs: float | None) -> Figure | None:
    """One row per variant: the frameworks' curves on the same axes."""
    variants = [v for v in VARIANT_STYLE if any(k[1] == v for k in groups)]
    if not variants:
        return None
    series = []
    fig, axes = plt.subplots(len(variants), 2, figsize=(10, 3.1 * len(variants)), squeeze=False)
    for row, variant in zip(axes, variants, strict=True):
        for ax, metric in zip(row, PANELS, strict=True):
            for fw in order:
                c = curve(groups.get((fw, variant), []), metric)
                if c is not None:
                    _plot(ax, c, color=color(fw), style=VARIANT_STYLE[variant], label=display_name(fw))
                    series.append(_series("overlay", fw, variant, metric, display_name(fw), c))
            _finish(ax, metric, f"{VARIANT_LABEL[variant]}: {metric.label.split(' (')[0]}", epochs)
    fig.tight_layout()
    return Figure("overlay", "The frameworks overlaid (same weights, data order and dropout masks): "
                  "with BN (top) and without (bottom).", _png(fig), tuple(series))


def training_figures(train_records: dict[str, list[TrainEvent]], *, epochs: float | None = None) -> list[Figure]:
    """Every training figure that the records allow (none without evaluation records).

    Args:
        train_records: run name -> its JSONL records.
        epochs: the planned number of epochs: the x axis ends there (else at the last point).
    """
    groups = group_runs(train_records)
    order = sorted({k[0] for k in groups}, key=sort_key)  # the registry's order; unknown names last
    figures = (curves_figure(groups, order, epochs), overlay_figure(groups, order, epochs))
    return [f for f in figures if f is not None]
