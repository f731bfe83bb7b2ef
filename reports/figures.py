"""The report's figures (matplotlib, Agg backend): training curves per framework and the frameworks overlaid; for a
batch-size sweep, test accuracy against batch size and the curves per batch size instead; for a data-parallel
preset, test accuracy against iteration per framework, one line per BatchNorm mode (per-replica, synchronized, one
device), instead."""

from __future__ import annotations

import dataclasses
import io
from collections.abc import Callable
from dataclasses import dataclass

import matplotlib

matplotlib.use("Agg")  # files only, never a window; set before pyplot is imported
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.ticker import FormatStrFormatter, FuncFormatter  # noqa: E402

from bnparity.frameworks.registry import descriptor, display_name, sort_key  # noqa: E402
from bnparity.frameworks.training import BN_SYNC  # noqa: E402
from bnparity.suites.convergence.records import RunId  # noqa: E402
from bnparity.suites.schema import DoneEvent, EvalEvent, StartEvent, TrainEvent  # noqa: E402

OTHER_COLOR = "#555555"  # a framework no folder declares (an old record's)
VARIANT_STYLE = {"bn": "-", "gn": "-.", "nobn": "--"}
VARIANT_LABEL = {"bn": "with BN", "gn": "with GroupNorm", "nobn": "without BN"}
# a data-parallel preset's BatchNorm modes (frameworks.training.BN_SYNC): line style, marker, label
MODE_STYLE = {"local": (":", "v"), "sync": ("--", "s"), "single": ("-", "o")}
MODE_LABEL = {"local": "per-replica BN", "sync": "synchronized BN", "single": "one device"}


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
    """Mean (and standard deviation over seeds, when there are several) of one metric of one configuration, at its
    evaluation points (epochs done; iterations: the same points' iteration numbers)."""

    epochs: np.ndarray
    mean: np.ndarray
    std: np.ndarray | None
    seeds: int
    iterations: np.ndarray | None = None


@dataclass(frozen=True)
class Series:
    """One plotted line: what it shows and its points (epochs done, mean over seeds), as drawn. In a batch-size
    sweep's figures, batch_size is the line's (curves) or batch_sizes its x values (accuracy vs batch size, whose
    `epochs` is then empty). In a data-parallel preset's figure, bn_sync is the line's mode ("local", "sync" or
    "single"), replicas its R (1 for "single") and iterations its x values (SGD steps of the global batch)."""

    figure: str
    framework: str
    variant: str
    metric: str
    label: str
    epochs: tuple[float, ...]
    values: tuple[float, ...]
    batch_size: int | None = None
    batch_sizes: tuple[int, ...] = ()
    bn_sync: str | None = None
    replicas: int | None = None
    iterations: tuple[int, ...] = ()


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
    return Curve(np.array([points[i][0] for i in iterations]), means, std, max(counts), np.array(iterations))


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


def _plot_run(ax: plt.Axes, groups: Runs, fw: str, variant: str, metric: Metric, *, figure: str,
              label: str) -> list[Series]:
    """Plot one framework's curve of one variant (its colour, the variant's line style), if it has one: its Series."""
    c = curve(groups.get((fw, variant), []), metric)
    if c is None:
        return []
    _plot(ax, c, color=color(fw), style=VARIANT_STYLE[variant], label=label)
    return [_series(figure, fw, variant, metric, label, c)]


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
                series += _plot_run(ax, groups, fw, variant, metric, figure="curves",
                                    label=f"{display_name(fw)} {VARIANT_LABEL[variant]}")
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
                series += _plot_run(ax, groups, fw, variant, metric, figure="overlay", label=display_name(fw))
            _finish(ax, metric, f"{VARIANT_LABEL[variant]}: {metric.label.split(' (')[0]}", epochs)
    fig.tight_layout()
    return Figure("overlay", "The frameworks overlaid (same weights, data order and dropout masks): "
                  "with BN (top) and without (bottom).", _png(fig), tuple(series))


def sweep_batch_sizes(train_records: dict[str, list[TrainEvent]]) -> dict[str, int]:
    """Run name -> batch size of every run of a batch-size sweep among `train_records` (named
    "<framework>-<variant>-b<size>-seed<k>"); empty when there is none."""
    out = {}
    for name in train_records:
        try:
            batch = RunId.parse(name).batch_size
        except ValueError:
            continue
        if batch is not None:
            out[name] = batch
    return out


@dataclass(frozen=True)
class SweepPoint:
    """One framework x variant x batch size of a sweep: test accuracy over its seeds (means; None: no such run).

    Attributes:
        final: the last evaluation of each finished seed.
        best: the highest evaluation of each seed that evaluated.
        seeds: how many seeds `best` averages.
    """

    framework: str
    variant: str
    batch_size: int
    final: float | None
    best: float | None
    seeds: int


def _finite(values: list[float | None]) -> list[float]:
    return [float(v) for v in values if v is not None and np.isfinite(v)]


def sweep_points(train_records: dict[str, list[TrainEvent]]) -> list[SweepPoint]:
    """Final and best test accuracy per framework, variant and batch size of a sweep, from its records."""
    finals: dict[tuple[str, str, int], list[float]] = {}
    bests: dict[tuple[str, str, int], list[float]] = {}
    for name, batch in sweep_batch_sizes(train_records).items():
        run, records = RunId.parse(name), train_records[name]
        key = (run.framework, run.variant, batch)
        accuracies = _finite([r.test_accuracy for r in records if isinstance(r, EvalEvent)])
        if not accuracies:
            continue
        bests.setdefault(key, []).append(max(accuracies))
        if isinstance(records[-1], DoneEvent):
            finals.setdefault(key, []).append(accuracies[-1])
    points = [SweepPoint(framework=f, variant=v, batch_size=b, seeds=len(bests[(f, v, b)]),
                         final=float(np.mean(finals[(f, v, b)])) if (f, v, b) in finals else None,
                         best=float(np.mean(bests[(f, v, b)]))) for f, v, b in bests]
    return sorted(points, key=lambda p: (sort_key(p.framework), _variant_key(p.variant), p.batch_size))


def _variant_key(variant: str) -> tuple[int, str]:
    """VARIANT_STYLE's order (bn, gn, nobn), unknown variants last."""
    known = list(VARIANT_STYLE)
    return (known.index(variant) if variant in known else len(known), variant)


SWEEP_METRICS = (("final", "final test accuracy", "o", 1.0), ("best", "best test accuracy", "^", 0.45))


def batch_size_figure(points: list[SweepPoint]) -> Figure | None:
    """One panel per variant: test accuracy (final: solid, best: faint) against batch size, one line per framework."""
    variants = [v for v in VARIANT_STYLE if any(p.variant == v for p in points)]
    variants += sorted({p.variant for p in points} - set(variants))
    if not variants:
        return None
    sizes = sorted({p.batch_size for p in points})
    series = []
    fig, axes = plt.subplots(1, len(variants), figsize=(3.6 * len(variants) + 0.6, 3.4), squeeze=False, sharey=True)
    for ax, variant in zip(axes[0], variants, strict=True):
        for fw in sorted({p.framework for p in points}, key=sort_key):
            mine = sorted((p for p in points if (p.framework, p.variant) == (fw, variant)), key=lambda p: p.batch_size)
            for metric, label, marker, alpha in SWEEP_METRICS:
                xs = [p.batch_size for p in mine if getattr(p, metric) is not None]
                ys = [getattr(p, metric) for p in mine if getattr(p, metric) is not None]
                if not xs:
                    continue
                text = f"{display_name(fw)} {metric}"
                ax.plot(xs, ys, VARIANT_STYLE.get(variant, "-"), color=color(fw), marker=marker, markersize=4,
                        linewidth=1.6 if metric == "final" else 1.0, alpha=alpha,
                        label=display_name(fw) if metric == "final" else "_nolegend_")
                series.append(Series(figure="batch-size", framework=fw, variant=variant, metric=label.replace(" ", "_"),
                                     label=text, epochs=(), values=tuple(float(y) for y in ys),
                                     batch_sizes=tuple(xs)))
        ax.set_xscale("log", base=2)
        ax.set_xticks(sizes, [str(b) for b in sizes])
        ax.minorticks_off()
        ax.set_xlabel("batch size (images per SGD step)")
        ax.set_ylim(0.0, 1.0)
        ax.set_title(VARIANT_LABEL.get(variant, variant), fontsize=10)
        ax.grid(True, alpha=0.3)
    if axes[0][0].get_legend_handles_labels()[0]:
        axes[0][0].legend(fontsize=8, loc="lower right")
    axes[0][0].set_ylabel("test accuracy (fraction correct)")
    fig.tight_layout()
    return Figure("batch-size", "Test accuracy against batch size (log scale), one panel per normalization, one colour "
                  "per framework: the final evaluation (circles) and the best one (faint triangles). Every run saw "
                  "the same number of training images, with the learning rate scaled linearly with the batch size.",
                  _png(fig), tuple(series))


def sweep_curves_figure(train_records: dict[str, list[TrainEvent]], order: list[str],
                        epochs: float | None) -> Figure | None:
    """One row per variant, one column per batch size: test accuracy against epochs, the frameworks overlaid."""
    batches = sweep_batch_sizes(train_records)
    groups: dict[tuple[str, str, int], list[list[EvalEvent]]] = {}
    for name, batch in batches.items():
        evals = [r for r in train_records[name] if isinstance(r, EvalEvent)]
        if evals:
            run = RunId.parse(name)
            groups.setdefault((run.framework, run.variant, batch), []).append(evals)
    variants = [v for v in VARIANT_STYLE if any(k[1] == v for k in groups)]
    sizes = sorted({k[2] for k in groups})
    if not variants:
        return None
    metric = PANELS[1]  # test accuracy
    series = []
    fig, axes = plt.subplots(len(variants), len(sizes), figsize=(2.9 * len(sizes) + 0.6, 2.5 * len(variants)),
                             squeeze=False, sharey=True)
    for row, variant in zip(axes, variants, strict=True):
        for ax, batch in zip(row, sizes, strict=True):
            for fw in order:
                c = curve(groups.get((fw, variant, batch), []), metric)
                if c is not None:
                    _plot(ax, c, color=color(fw), style=VARIANT_STYLE[variant], label=display_name(fw))
                    series.append(dataclasses.replace(
                        _series("batch-curves", fw, variant, metric, display_name(fw), c), batch_size=batch))
            _finish(ax, metric, f"{VARIANT_LABEL[variant]}, batch {batch}", epochs)
            ax.set_ylabel("test accuracy" if ax is row[0] else "")
            if row is not axes[-1]:
                ax.set_xlabel("")
            if ax is not axes[0][0] and ax.get_legend() is not None:
                ax.get_legend().remove()
    fig.tight_layout()
    return Figure("batch-curves", "Test accuracy against epochs (passes over the training subset) per normalization "
                  "(rows) and batch size (columns), the frameworks overlaid.", _png(fig), tuple(series))


def replica_runs(train_records: dict[str, list[TrainEvent]]) -> dict[str, RunId]:
    """Run name -> RunId of every run among `train_records` when some run is data-parallel (named
    "<framework>-<variant>-r<R><mode>-seed<k>"): those and the single-device runs beside them (a batch-size sweep's
    runs excepted); empty when no run is data-parallel."""
    runs = {}
    for name in train_records:
        try:
            run = RunId.parse(name)
        except ValueError:
            continue
        if run.batch_size is None:
            runs[name] = run
    return runs if any(r.data_parallel for r in runs.values()) else {}


def _planned_iterations(records: list[TrainEvent]) -> int | None:
    """epochs x iterations per epoch of a run's last "start" record (None before it started)."""
    starts = [r for r in records if isinstance(r, StartEvent)]
    return starts[-1].epochs * starts[-1].iters_per_epoch if starts else None


def data_parallel_figure(train_records: dict[str, list[TrainEvent]], order: list[str]) -> Figure | None:
    """One row per variant, one column per framework: test accuracy against iterations (SGD steps of the global
    batch), one line per BatchNorm mode: per-replica (dotted), synchronized (dashed) and one device (solid)."""
    runs = replica_runs(train_records)
    groups: dict[tuple[str, str, str], list[list[EvalEvent]]] = {}
    replicas: dict[tuple[str, str, str], int] = {}
    for name, run in runs.items():
        evals = [r for r in train_records[name] if isinstance(r, EvalEvent)]
        if evals:
            groups.setdefault((run.framework, run.variant, run.mode), []).append(evals)
            replicas[run.framework, run.variant, run.mode] = run.replicas or 1
    if not groups:
        return None
    frameworks = [f for f in order if any(k[0] == f for k in groups)]
    variants = [v for v in VARIANT_STYLE if any(k[1] == v for k in groups)]
    planned = [n for name in runs if (n := _planned_iterations(train_records[name]))]
    metric = PANELS[1]  # test accuracy
    series = []
    fig, axes = plt.subplots(len(variants), len(frameworks), figsize=(3.6 * len(frameworks) + 0.6,
                                                                      3.1 * len(variants)), squeeze=False, sharey=True)
    for i, (row, variant) in enumerate(zip(axes, variants, strict=True)):
        for ax, fw in zip(row, frameworks, strict=True):
            for mode in BN_SYNC:
                key = (fw, variant, mode)
                c = curve(groups.get(key, []), metric)
                if c is None or c.iterations is None:
                    continue
                r = replicas[key]
                label = MODE_LABEL[mode] + ("" if mode == "single" else f" ({r} replicas)")
                style, marker = MODE_STYLE[mode]
                ax.plot(c.iterations, c.mean, style, color=color(fw), marker=marker, markersize=3, linewidth=1.6,
                        label=label + (f" (mean of {c.seeds} seeds)" if c.seeds > 1 else ""))
                if c.std is not None:
                    ax.fill_between(c.iterations, c.mean - c.std, c.mean + c.std, color=color(fw), alpha=0.15,
                                    linewidth=0)
                series.append(Series(figure="data-parallel", framework=fw, variant=variant, metric=metric.name,
                                     label=f"{display_name(fw)} {label}", epochs=tuple(float(x) for x in c.epochs),
                                     values=tuple(float(x) for x in c.mean), bn_sync=mode, replicas=r,
                                     iterations=tuple(int(x) for x in c.iterations)))
            if planned:
                ax.set_xlim(0, max(planned))
            ax.set_ylim(0.0, 1.0)
            ax.set_xlabel("iterations (SGD steps of the global batch)" if i == len(variants) - 1 else "")
            ax.set_ylabel(metric.label if ax is row[0] else "")
            ax.set_title(f"{display_name(fw)} {VARIANT_LABEL.get(variant, variant)}", fontsize=10)
            ax.grid(True, alpha=0.3)
            if ax.get_legend_handles_labels()[0]:
                ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    return Figure("data-parallel", "Test accuracy against iterations per framework, one line per BatchNorm mode: "
                  "data-parallel on R replicas with each replica's own statistics (per-replica BN, dotted) or the "
                  "global batch's (synchronized BN, dashed), and the same global batches on one device (solid); bands "
                  "are ± one standard deviation over seeds.", _png(fig), tuple(series))


def training_figures(train_records: dict[str, list[TrainEvent]], *, epochs: float | None = None) -> list[Figure]:
    """Every training figure that the records allow (none without evaluation records). A batch-size sweep gets
    accuracy against batch size and its curves per batch size instead of the curves per framework and overlaid
    (which would mix batch sizes); a data-parallel preset gets test accuracy per BatchNorm mode instead of both
    (which would mix modes).

    Args:
        train_records: run name -> its JSONL records.
        epochs: the planned number of epochs: the x axis ends there (else at the last point).
    """
    groups = group_runs(train_records)
    order = sorted({k[0] for k in groups}, key=sort_key)  # the registry's order; unknown names last
    if replica_runs(train_records):
        figures = (data_parallel_figure(train_records, order),)
    elif sweep_batch_sizes(train_records):
        figures = (batch_size_figure(sweep_points(train_records)), sweep_curves_figure(train_records, order, epochs))
    else:
        figures = (curves_figure(groups, order, epochs), overlay_figure(groups, order, epochs))
    return [f for f in figures if f is not None]


SEED_COLOR = "#000000"  # the seed blog's lines: black, thin, with crosses, beside the frameworks' colours
SEED_LABEL = "seed blog"


@dataclass(frozen=True)
class SeedCurve:
    """One variant of a published run, per epoch (epochs count from 1): test accuracy and train loss."""

    variant: str
    epochs: tuple[int, ...]
    test_accuracy: tuple[float, ...]
    train_loss: tuple[float, ...]


def _seed_metric(c: SeedCurve, metric: Metric) -> tuple[float, ...]:
    return c.test_accuracy if metric.name == "test_accuracy" else c.train_loss


def _plot_seed(ax: plt.Axes, c: SeedCurve, metric: Metric, *, label: str) -> Series:
    values = _seed_metric(c, metric)
    ax.plot(c.epochs, values, VARIANT_STYLE.get(c.variant, "-"), color=SEED_COLOR, marker="x", markersize=3.5,
            linewidth=1.0, label=label)
    return Series(figure="", framework="seed", variant=c.variant, metric=metric.name, label=label,
                  epochs=tuple(float(e) for e in c.epochs), values=tuple(float(v) for v in values))


def seed_figure(seed: list[SeedCurve], *, caption: str) -> Figure | None:
    """The published run alone (its own panel): test accuracy and train loss per epoch, with BN (solid) and without
    (dashed)."""
    if not seed:
        return None
    series = []
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.3), squeeze=False)
    last = max(e for c in seed for e in c.epochs)
    for ax, metric in zip(axes[0], (PANELS[1], PANELS[0]), strict=True):
        for c in seed:
            s = _plot_seed(ax, c, metric, label=f"{SEED_LABEL} {VARIANT_LABEL.get(c.variant, c.variant)}")
            series.append(dataclasses.replace(s, figure="seed-blog"))
        _finish(ax, metric, f"{SEED_LABEL}: {metric.label.split(' (')[0]}", last)
        ax.set_xlabel("epochs (passes over the blog's training images)")
        if metric.name == "test_accuracy":  # the blog's curves lie above 0.7: zoom in so that ±BN can be told apart
            ax.set_ylim(max(0.0, min(min(c.test_accuracy) for c in seed) - 0.05), 1.0)
    fig.tight_layout()
    return Figure("seed-blog", caption, _png(fig), tuple(series))


def seed_overlay_figure(groups: Runs, order: list[str], seed: list[SeedCurve], epochs: float | None, *,
                        caption: str) -> Figure | None:
    """Our curves and the published run's on the same axes (x: epochs), one panel per metric: the frameworks in
    their colours, the published run in black with crosses; with BN solid, without dashed."""
    if not seed and not groups:
        return None
    series = []
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6), squeeze=False)
    last = max([e for c in seed for e in c.epochs] + [epochs or 0])
    for ax, metric in zip(axes[0], (PANELS[1], PANELS[0]), strict=True):
        for fw in order:
            for variant in VARIANT_STYLE:
                series += _plot_run(ax, groups, fw, variant, metric, figure="seed-overlay",
                                    label=f"{display_name(fw)} {VARIANT_LABEL[variant]}")
        for c in seed:
            s = _plot_seed(ax, c, metric, label=f"{SEED_LABEL} {VARIANT_LABEL.get(c.variant, c.variant)}")
            series.append(dataclasses.replace(s, figure="seed-overlay"))
        _finish(ax, metric, f"this run and the {SEED_LABEL}: {metric.label.split(' (')[0]}", last or None)
    fig.tight_layout()
    return Figure("seed-overlay", caption, _png(fig), tuple(series))
