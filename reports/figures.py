"""The report's figures (matplotlib, Agg backend): training curves per framework and the frameworks overlaid."""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, never a window; set before pyplot is imported
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.ticker import FormatStrFormatter, FuncFormatter  # noqa: E402

# One colour per framework everywhere (Okabe-Ito palette: distinct for colour-blind readers and in grey print).
COLORS = {"torch": "#D55E00", "mxnet": "#0072B2", "jax": "#009E73"}
OTHER_COLOR = "#555555"
VARIANT_STYLE = {"bn": "-", "nobn": "--"}
VARIANT_LABEL = {"bn": "with BN", "nobn": "without BN"}
PANELS = (("train_loss", "train loss (cross-entropy, nats)"), ("test_accuracy", "test accuracy (fraction correct)"))


@dataclass(frozen=True)
class Figure:
    """One PNG figure: `name` is its file stem (figures/<name>.png), `caption` its one-line description."""

    name: str
    caption: str
    png: bytes


@dataclass(frozen=True)
class Curve:
    """Mean (and standard deviation over seeds, when there are several) of one metric of one configuration."""

    epochs: np.ndarray
    mean: np.ndarray
    std: np.ndarray | None
    seeds: int


def curve(records_by_seed: list[list[dict[str, Any]]], metric: str) -> Curve | None:
    """The metric's curve over evaluation points, averaged over seeds at equal iterations (None if no point)."""
    points: dict[int, tuple[float, list[float]]] = {}
    for records in records_by_seed:
        for r in records:
            if r.get("kind") == "eval" and r.get(metric) is not None:
                epochs, values = points.setdefault(r["iteration"], (r.get("epochs_done") or 0.0, []))
                values.append(float(r[metric]))
    if not points:
        return None
    iterations = sorted(points)
    means = np.array([np.mean(points[i][1]) for i in iterations])
    counts = [len(points[i][1]) for i in iterations]
    std = (np.array([np.std(points[i][1], ddof=1) if len(points[i][1]) > 1 else 0.0 for i in iterations])
           if max(counts) > 1 else None)
    return Curve(np.array([points[i][0] for i in iterations]), means, std, max(counts))


def group_runs(train_records: dict[str, list[dict[str, Any]]]) -> dict[tuple[str, str], list[list[dict[str, Any]]]]:
    """(framework, variant) -> the records of each seed's run that has any evaluation."""
    groups: dict[tuple[str, str], list[list[dict[str, Any]]]] = {}
    for records in train_records.values():
        evals = [r for r in records if r.get("kind") == "eval"]
        if evals:
            groups.setdefault((evals[0]["framework"], evals[0]["variant"]), []).append(records)
    return groups


def _plot(ax: plt.Axes, c: Curve, *, color: str, style: str, label: str) -> None:
    ax.plot(c.epochs, c.mean, style, color=color, label=label + (f" (mean of {c.seeds} seeds)" if c.seeds > 1 else ""),
            linewidth=1.6, marker="o", markersize=2.5)
    if c.std is not None:
        ax.fill_between(c.epochs, c.mean - c.std, c.mean + c.std, color=color, alpha=0.18, linewidth=0)


def _minor_label(value: float, _pos: int) -> str:
    """Label the minor ticks of a log axis at 2, 3 and 5 × 10^k only, so that labels never overlap."""
    mantissa = value / 10 ** np.floor(np.log10(value))
    return f"{value:.2g}" if any(abs(mantissa - m) < 1e-6 for m in (2, 3, 5)) else ""


def _finish(ax: plt.Axes, metric: str, ylabel: str, title: str, epochs: float | None) -> None:
    ax.set_xlabel("epochs (passes over the training subset)")
    if epochs:
        ax.set_xlim(0, epochs)  # the planned length: a run cut short shows as a shorter curve
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(True, alpha=0.3)
    if metric == "test_accuracy":
        ax.set_ylim(0.0, 1.0)
    else:
        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(FormatStrFormatter("%.2g"))
        ax.yaxis.set_minor_formatter(FuncFormatter(_minor_label))
        ax.tick_params(axis="y", which="minor", labelsize=7)
    ax.legend(fontsize=8, loc="best")


def _png(fig: plt.Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def curves_figure(groups: dict[tuple[str, str], list[list[dict[str, Any]]]], order: list[str],
                  epochs: float | None) -> Figure | None:
    """One row per framework: train loss and test accuracy vs epoch, with BN (solid) and without (dashed)."""
    frameworks = [f for f in order if any(k[0] == f for k in groups)]
    if not frameworks:
        return None
    fig, axes = plt.subplots(len(frameworks), 2, figsize=(10, 3.1 * len(frameworks)), squeeze=False)
    for row, fw in zip(axes, frameworks, strict=True):
        for ax, (metric, ylabel) in zip(row, PANELS, strict=True):
            for variant in VARIANT_STYLE:
                c = curve(groups.get((fw, variant), []), metric)
                if c is not None:
                    _plot(ax, c, color=COLORS.get(fw, OTHER_COLOR), style=VARIANT_STYLE[variant],
                          label=f"{fw} {VARIANT_LABEL[variant]}")
            _finish(ax, metric, ylabel, f"{fw}: {ylabel.split(' (')[0]}", epochs)
    fig.tight_layout()
    return Figure("curves", "Training curves per framework: train loss (log scale, running mean since the previous "
                  "evaluation) and test accuracy against epochs, with BN (solid) and without (dashed); bands are "
                  "± one standard deviation over seeds.", _png(fig))


def overlay_figure(groups: dict[tuple[str, str], list[list[dict[str, Any]]]], order: list[str],
                   epochs: float | None) -> Figure | None:
    """One row per variant: the frameworks' curves on the same axes."""
    variants = [v for v in VARIANT_STYLE if any(k[1] == v for k in groups)]
    if not variants:
        return None
    fig, axes = plt.subplots(len(variants), 2, figsize=(10, 3.1 * len(variants)), squeeze=False)
    for row, variant in zip(axes, variants, strict=True):
        for ax, (metric, ylabel) in zip(row, PANELS, strict=True):
            for fw in order:
                c = curve(groups.get((fw, variant), []), metric)
                if c is not None:
                    _plot(ax, c, color=COLORS.get(fw, OTHER_COLOR), style=VARIANT_STYLE[variant], label=fw)
            _finish(ax, metric, ylabel, f"{VARIANT_LABEL[variant]}: {ylabel.split(' (')[0]}", epochs)
    fig.tight_layout()
    return Figure("overlay", "The frameworks overlaid (same weights, data order and dropout masks): "
                  "with BN (top) and without (bottom).", _png(fig))


def training_figures(train_records: dict[str, list[dict[str, Any]]], order: list[str], *,
                     epochs: float | None = None) -> list[Figure]:
    """Every training figure that the records allow (none without evaluation records).

    Args:
        train_records: run name -> its JSONL records.
        order: frameworks in the order of the rows (others follow, sorted).
        epochs: the planned number of epochs: the x axis ends there (else at the last point).
    """
    groups = group_runs(train_records)
    known = [f for f in order if any(k[0] == f for k in groups)]
    order = known + sorted({k[0] for k in groups} - set(known))
    figures = (curves_figure(groups, order, epochs), overlay_figure(groups, order, epochs))
    return [f for f in figures if f is not None]
