"""The seed blog beside this run: its published curves (bnparity.seeds) as a figure, how its setup differs from the
run's (every value from the run's preset, ARCH_PRESETS and bnparity.seeds.facts), and where its measurements and ours
disagree, with both numbers and the rule that decides.

The `paper` preset reproduces the blog (its `published` points are the blog's): then the blog's curves are drawn on the
same axes as ours. Any other preset gets the blog's curves in a panel of their own, since its setup differs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from bnparity.frameworks.registry import display_name, sort_key
from bnparity.reference.alexnet import ARCH_PRESETS, BASE_CHANNELS
from bnparity.seeds.facts import BLOG_SETUP
from bnparity.seeds.tables import BlogEpoch, blog_curve, blog_epochs
from bnparity.suites.convergence.presets import PRESETS, TrainPreset
from bnparity.suites.convergence.records import RunId
from bnparity.suites.data.fashion_mnist import FILES
from bnparity.suites.schema import DoneEvent, EvalEvent

from .document import Bullets, Cell, Table
from .figures import Figure, SeedCurve, group_runs, seed_figure, seed_overlay_figure
from .load import RunData

SEED_PRESET = "paper"  # the preset that reproduces the blog's setup (suites/convergence/presets.py)
SEED_FIGURES = ("seed-overlay", "seed-blog")
VARIANTS = ("bn", "nobn")
HEADLINE_KEYS = ("end_gap", "acc1_gap", "loss_gap")
# the agreement rules, by kind of quantity (stated in the report beside the table)
ACCURACY_TOL = 0.02
FACTOR = 2.0
RULES = {
    "accuracy": f"an accuracy agrees when ours is within {ACCURACY_TOL:g} of the seed's",
    "difference": f"a difference (BN − no BN) agrees when ours has the same sign and is within a factor {FACTOR:g} "
                  "of the seed's in size",
    "loss": f"a loss agrees when ours is within a factor {FACTOR:g} of the seed's",
}


@dataclass(frozen=True)
class SetupRow:
    """One aspect of the setup: the seed blog's value, this run's, and whether they are the same."""

    aspect: str
    seed: str
    ours: str
    same: bool


@dataclass(frozen=True)
class SeedRow:
    """One quantity measured by the seed and by us (`key` names it: "acc1_bn", "end_gap", "loss_nobn", ...): the
    seed's value, ours per framework (None: not measured), and whether each agrees by the rule of its kind (RULES)."""

    key: str
    quantity: str
    kind: str
    seed: float
    ours: dict[str, float | None]
    agree: dict[str, bool | None]


@dataclass(frozen=True)
class SeedComparison:
    """summary.json's "seed_comparison": the blog beside this run.

    Attributes:
        preset: the run's preset.
        same_setup: whether the preset reproduces the blog's setup (then the curves share axes).
        seed_epochs: the blog's number of epochs (its table's last epoch).
        epochs: the run's planned number of epochs.
        setup: how the setups differ, aspect by aspect.
        rows: the quantities both measured.
        rules: how "agree" is decided, per kind.
        headlines: the three comparisons the report always states with both numbers: whether BN changes the end
            point, BN's lead after epoch 1, and the train-loss gap (the blog's BN overfits).
        disagreements: one sentence per other quantity where some framework disagrees with the seed.
    """

    preset: str
    same_setup: bool
    seed_epochs: int
    epochs: int
    frameworks: tuple[str, ...]
    setup: tuple[SetupRow, ...]
    rows: tuple[SeedRow, ...]
    rules: dict[str, str]
    headlines: tuple[str, ...]
    disagreements: tuple[str, ...]


def same_setup(preset: TrainPreset) -> bool:
    """Whether `preset` reproduces the blog: it is the seed preset, on its architecture and image size."""
    seed = PRESETS[SEED_PRESET]
    return (preset.name, preset.arch, preset.image_size) == (seed.name, seed.arch, seed.image_size)


def seed_curves(rows: tuple[BlogEpoch, ...] | None = None) -> list[SeedCurve]:
    """The blog's two curves (with BN, without), per epoch."""
    rows = blog_epochs() if rows is None else rows
    out = []
    for variant in VARIANTS:
        c = blog_curve(variant, rows)
        out.append(SeedCurve(variant, tuple(r.epoch for r in c), tuple(r.test_acc for r in c),
                             tuple(r.train_loss for r in c)))
    return out


def _channels(width: float) -> str:
    return "/".join(str(max(1, round(c * width))) for c in BASE_CHANNELS)


def _schedule(p: TrainPreset) -> str:
    return f"batch {p.batch_size}, SGD lr {p.lr:g}, momentum {p.momentum:g}, weight decay {p.weight_decay:g}"


def setup_rows(preset: TrainPreset, *, device: str | None = None) -> list[SetupRow]:
    """How the blog's setup (the seed preset, its architecture and BLOG_SETUP) differs from `preset`'s."""
    seed = PRESETS[SEED_PRESET]
    blog, ours = ARCH_PRESETS[seed.arch], ARCH_PRESETS[preset.arch]
    n_train, n_test = FILES["train_images"].shape[0], FILES["test_images"].shape[0]
    seed_epochs = max(r.epoch for r in blog_epochs())
    first, second = BLOG_SETUP.dropouts
    pairs = [
        ("image size", f"{blog.image_size}×{blog.image_size}", f"{preset.image_size}×{preset.image_size}"),
        ("channel width", f"×{blog.width:g} ({_channels(blog.width)})", f"×{ours.width:g} ({_channels(ours.width)})"),
        ("hidden Dense layers", f"{blog.dense} and {blog.dense} without BN; {blog.dense} and "
                                f"{BLOG_SETUP.bn_second_dense} with BN", f"{ours.dense} and {ours.dense} in both"),
        ("dropouts", f"{first:g} and {second:g}", f"{ours.dropout:g} and {ours.dropout:g}"),
        ("epochs", str(seed_epochs), str(preset.epochs)),
        ("training images per epoch", str(seed.train_subset or n_train), str(preset.train_subset or n_train)),
        ("test images", str(seed.test_subset or n_test), str(preset.test_subset or n_test)),
        ("schedule", _schedule(seed), _schedule(preset)),
        ("hardware", BLOG_SETUP.hardware, device or "–"),
    ]
    return [SetupRow(a, s, o, s == o) for a, s, o in pairs]


def _single_runs(data: RunData) -> dict[tuple[str, str], list[list[EvalEvent]]]:
    """(framework, variant) -> the evaluations of each finished run on one device at the preset's batch size; none in
    a data-parallel comparison (its one-device runs train at the global batch, beside its per-replica runs)."""
    out: dict[tuple[str, str], list[list[EvalEvent]]] = {}
    if data.train_manifest is not None and data.train_manifest.replicas is not None:
        return out
    for name, records in data.train_records.items():
        try:
            run = RunId.parse(name)
        except ValueError:
            continue
        if run.batch_size is not None or run.data_parallel or not records:
            continue
        evals = [r for r in records if isinstance(r, EvalEvent)]
        if evals:
            out.setdefault((run.framework, run.variant), []).append(evals)
    return out


def _finished(data: RunData) -> set[tuple[str, str, int]]:
    done = set()
    for records in data.train_records.values():
        if records and isinstance(records[-1], DoneEvent):
            r = records[-1]
            done.add((r.framework, r.variant, r.seed))
    return done


def _mean(values: list[float]) -> float | None:
    ok = [v for v in values if v is not None and math.isfinite(v)]
    return sum(ok) / len(ok) if ok else None


def _at_epoch(runs: list[list[EvalEvent]], epoch: float) -> float | None:
    """Mean over runs of the test accuracy evaluated at the end of `epoch`."""
    return _mean([e.test_accuracy for evals in runs for e in evals
                  if abs(e.epochs_done - epoch) < 1e-9 and e.test_accuracy is not None])


def _final_train_loss(runs: list[list[EvalEvent]], done: set[tuple[str, str, int]]) -> float | None:
    """Mean over finished runs of the train loss of their last evaluation."""
    return _mean([evals[-1].train_loss for evals in runs
                  if (evals[-1].framework, evals[-1].variant, evals[-1].seed) in done
                  and evals[-1].train_loss is not None])


def _agrees(kind: str, seed: float, ours: float | None) -> bool | None:
    if ours is None:
        return None
    if kind == "accuracy":
        return abs(ours - seed) <= ACCURACY_TOL
    if kind == "loss":
        return ours > 0 and 1 / FACTOR <= ours / seed <= FACTOR
    same_sign = (ours > 0) == (seed > 0) and ours != 0
    return same_sign and 1 / FACTOR <= abs(ours) / abs(seed) <= FACTOR


def _diff(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a - b


def seed_comparison(data: RunData) -> SeedComparison | None:
    """The blog beside this run; None without training records."""
    if data.conclusions is None or data.train_manifest is None:
        return None
    preset = data.train_manifest.preset
    blog = {c.variant: c for c in seed_curves()}
    seed_epochs = max(blog["bn"].epochs)
    runs, done = _single_runs(data), _finished(data)
    finals = {(c.framework, c.variant): c.final_test_accuracy.mean for c in data.conclusions.configs
              if c.batch_size is None and c.replicas is None and data.train_manifest.replicas is None}
    fws = tuple(sorted({k[0] for k in (*runs, *finals)}, key=sort_key))
    if not fws:  # only batch-size sweeps or data-parallel runs: nothing to set beside the blog's one-device runs
        return None
    ours: dict[str, dict[str, float | None]] = {}
    for fw in fws:
        first = {v: _at_epoch(runs.get((fw, v), []), 1.0) for v in VARIANTS}
        end = {v: finals.get((fw, v)) for v in VARIANTS}
        loss = {v: _final_train_loss(runs.get((fw, v), []), done) for v in VARIANTS}
        ours[fw] = {"acc1_bn": first["bn"], "acc1_nobn": first["nobn"], "acc1_gap": _diff(first["bn"], first["nobn"]),
                    "end_bn": end["bn"], "end_nobn": end["nobn"], "end_gap": _diff(end["bn"], end["nobn"]),
                    "loss_bn": loss["bn"], "loss_nobn": loss["nobn"], "loss_gap": _diff(loss["bn"], loss["nobn"])}
    b, n = blog["bn"], blog["nobn"]
    end = f"at the end (seed epoch {seed_epochs}, ours epoch {preset.epochs})"
    spec = [  # (key, quantity, kind, the seed's value)
        ("acc1_bn", "test accuracy after epoch 1, with BN", "accuracy", b.test_accuracy[0]),
        ("acc1_nobn", "test accuracy after epoch 1, without BN", "accuracy", n.test_accuracy[0]),
        ("acc1_gap", "BN − no BN, test accuracy after epoch 1", "difference", b.test_accuracy[0] - n.test_accuracy[0]),
        ("end_bn", f"final test accuracy with BN, {end}", "accuracy", b.test_accuracy[-1]),
        ("end_nobn", f"final test accuracy without BN, {end}", "accuracy", n.test_accuracy[-1]),
        ("end_gap", f"BN − no BN, final test accuracy {end}", "difference", b.test_accuracy[-1] - n.test_accuracy[-1]),
        ("loss_bn", f"train loss with BN, {end}", "loss", b.train_loss[-1]),
        ("loss_nobn", f"train loss without BN, {end}", "loss", n.train_loss[-1]),
        ("loss_gap", f"BN − no BN, train loss {end}", "difference", b.train_loss[-1] - n.train_loss[-1]),
    ]
    rows = [SeedRow(key, quantity, kind, seed, {fw: ours[fw][key] for fw in fws},
                    {fw: _agrees(kind, seed, ours[fw][key]) for fw in fws}) for key, quantity, kind, seed in spec]
    disagreements = []
    for r in rows:
        if r.key in HEADLINE_KEYS:
            continue  # stated in the headlines, agree or not
        off = [fw for fw in fws if r.agree[fw] is False]
        if off:
            disagreements.append(f"{r.quantity}: the seed {_value(r.kind, r.seed)}; ours "
                                 + ", ".join(f"{display_name(fw)} {_value(r.kind, r.ours[fw])}" for fw in off) + ".")
    return SeedComparison(preset=preset.name, same_setup=same_setup(preset), seed_epochs=seed_epochs,
                          epochs=preset.epochs, frameworks=fws,
                          setup=tuple(setup_rows(preset, device=data.train_manifest.device)), rows=tuple(rows),
                          rules=dict(RULES), headlines=tuple(_headlines(rows, fws, seed_epochs, preset.epochs)),
                          disagreements=tuple(disagreements))


def _judged(seed: float, ours: float | None, agree: bool | None) -> str:
    """'agrees' or 'disagrees', and why, for a difference."""
    if ours is None or agree is None:
        return "not measured"
    if ours == 0 or (ours > 0) != (seed > 0):
        return "disagrees: the opposite sign" if ours else "disagrees: no difference"
    return f"{'agrees' if agree else 'disagrees'}: {abs(ours) / abs(seed):.2g}× the seed's size"


def _headlines(rows: list[SeedRow], fws: tuple[str, ...], seed_epochs: int, epochs: int) -> list[str]:
    """Whether BN changes the end point, BN's lead after epoch 1, the train-loss gap: the seed's numbers and each
    framework's, with the verdict of the difference rule."""
    by = {r.key: r for r in rows}
    out = []
    for lead, gap, a, b, where, what in (
            ("End point (does BN change it?)", "end_gap", "end_bn", "end_nobn",
             f"after epoch {seed_epochs}", f"after epoch {epochs}"),
            ("After epoch 1 (BN's lead)", "acc1_gap", "acc1_bn", "acc1_nobn", "", ""),
            ("Train-loss gap at the end (the seed blog's BN overfits its training set)", "loss_gap", "loss_bn",
             "loss_nobn", f"after epoch {seed_epochs}", f"after epoch {epochs}")):
        g, x, y = by[gap], by[a], by[b]
        kind = x.kind
        seed = (f"the seed blog: BN − no BN {_value('difference', g.seed)} ({_value(kind, x.seed)} with BN vs "
                f"{_value(kind, y.seed)} without{' ' + where if where else ''})")
        ours = "; ".join(
            f"{display_name(fw)} {_value('difference', g.ours[fw])} ({_value(kind, x.ours[fw])} vs "
            f"{_value(kind, y.ours[fw])}), {_judged(g.seed, g.ours[fw], g.agree[fw])}" for fw in fws)
        out.append(f"{lead}: {seed}; ours{' ' + what if what else ''}: {ours or 'not measured'}.")
    return out


def _value(kind: str, x: float | None) -> str:
    if x is None:
        return "–"
    return f"{x:+.3f}" if kind == "difference" else f"{x:.4f}" if kind == "loss" else f"{x:.3f}"


def seed_figures(data: RunData) -> list[Figure]:
    """The blog's curves: on our axes for the seed preset, else in their own panel; none without training records."""
    if not data.train_records or data.train_manifest is None or not _single_runs(data):
        return []  # no run on one device at the preset's batch size: nothing to set beside the blog's
    preset = data.train_manifest.preset
    curves = seed_curves()
    seed_epochs = max(curves[0].epochs)
    if same_setup(preset):
        groups = {k: v for k, v in group_runs(data.train_records).items() if k in _single_runs(data)}
        order = sorted({k[0] for k in groups}, key=sort_key)
        figure = seed_overlay_figure(groups, order, curves, preset.epochs, caption=(
            f"This run (preset {preset.name}, the blog's setup) and the seed blog's published curves on the same "
            f"axes: test accuracy and train loss (log scale) against epochs, with BN solid and without dashed; the "
            f"blog's in black with crosses (one value per epoch; its train loss is the epoch's mean, ours the mean "
            f"since the previous evaluation). The blog's BN network had a second hidden Dense layer of "
            f"{BLOG_SETUP.bn_second_dense} units, ours {ARCH_PRESETS[preset.arch].dense} in both variants."))
    else:
        figure = seed_figure(curves, caption=(
            f"The seed blog's published curves, in their own panel because its setup differs from this run's "
            f"(preset {preset.name}; the table above says how): test accuracy and train loss (log scale) over its "
            f"{seed_epochs} epochs, with BN solid and without dashed."))
    return [figure] if figure is not None else []


def seed_blocks(data: RunData, figures: list[Figure]) -> list[str | Table | Figure | Bullets]:
    """The convergence section's part on the seed blog: what it is, how the setups differ, its figure, the
    quantities both measured (seed, ours, agree?) and the disagreements, stated with both numbers."""
    c = seed_comparison(data)
    if c is None:
        return []
    blocks: list[str | Table | Figure | Bullets] = []
    differ = [s for s in c.setup if not s.same]
    how = "; ".join(f"{s.aspect} {s.seed} vs {s.ours}" for s in differ)
    if c.same_setup:
        blocks.append(f"The seed blog beside this run: preset {c.preset} reproduces the seed blog's experiment "
                      f"(AlexNet on Fashion-MNIST, {c.seed_epochs} epochs, with and without BN), so its published "
                      "curves are drawn on the same axes as ours. What still differs (blog vs this run): "
                      + (how or "nothing") + ". bnparity keeps the widths equal so that BN is the only difference.")
    else:
        blocks.append(f"The seed blog beside this run: the seed blog trained the same AlexNet family on Fashion-MNIST "
                      f"with and without BN, but in another setup (blog vs this run, preset {c.preset}): {how}. "
                      "Its curves are therefore in a panel of their own, not on our axes, and the numbers below are "
                      "set side by side, not expected to match.")
    blocks.append(Table(["", "seed blog", "this run"], [
        [Cell(s.aspect), Cell(s.seed), Cell(s.ours, None if s.same else "differs")]
        for s in c.setup], caption="The two setups; coloured: a value that differs. The blog's from the seeds' facts "
                                   "(bnparity.seeds) and the preset that reproduces it; this run's from its preset.",
        row_class="kv"))
    blocks.extend(f for f in figures if f.name in SEED_FIGURES)
    header = ["quantity", "seed blog"]
    for fw in c.frameworks:
        header += [display_name(fw), "agree?"]
    body = []
    for r in c.rows:
        row = [Cell(r.quantity), Cell(_value(r.kind, r.seed))]
        for fw in c.frameworks:
            a = r.agree[fw]
            row += [Cell(_value(r.kind, r.ours[fw])),
                    Cell("–" if a is None else "yes" if a else "no", None if a is None else "pass" if a else "differs",
                         RULES[r.kind])]
        body.append(row)
    blocks.append(Table(header, body, caption="The seed's measurements and ours (means over seeds). Rules: "
                        + "; ".join(c.rules.values()) + ". Our train loss is the mean since the previous evaluation, "
                        "the blog's the epoch's mean."))
    blocks.append(Bullets(list(c.headlines)))
    if c.disagreements:
        blocks.append("Every other quantity where this run disagrees with the seed blog (by the rules above), with "
                      "both numbers:")
        blocks.append(Bullets(list(c.disagreements)))
    else:
        blocks.append("This run agrees with the seed blog on every quantity above (by the rules stated).")
    return blocks
