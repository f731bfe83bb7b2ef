"""The report's section on the seed tutorial's pitfalls: its faults as the seed facts state them, then what they do
to eval accuracy on the run's trained AlexNet (pitfalls.json) and on the tutorial's own MLP (tutorial_mlp.json), both
written by `bnparity pitfalls`.

Every statement about the tutorial comes from bnparity.seeds (facts.py: TUTORIAL_LAYER, TUTORIAL_FAULTS,
TUTORIAL_SETUP; tables.py: its published log); every number about this run from the records.
"""

from __future__ import annotations

from bnparity.frameworks.registry import display_name, sort_key
from bnparity.seeds.facts import TUTORIAL_FAULTS, TUTORIAL_LAYER, TUTORIAL_SETUP
from bnparity.seeds.tables import tutorial_curve
from bnparity.suites.schema import PitfallsDoc, TutorialMLPDoc, TutorialMLPRecord, TutorialMLPSkip

from .document import Bullets, Cell, Section, Table, text_cell
from .load import RunData

SECTION_ID = "pitfalls"
TITLE = "The seed tutorial's pitfalls"
REFERENCE = "reference (float64)"
# the tutorial's log names its runs by variant: its hand-written BN MLP and the MLP without BN
PUBLISHED_VARIANTS = {"tutorial": "mlp-scratch-bn", "nobn": "mlp-nobn"}
PITFALLS_COMMAND = ("`bnparity pitfalls RUN_DIR` (a step of `bnparity run`, after training) writes pitfalls.json: "
                    "the moving-average rules re-estimated on the run's trained AlexNet")
TUTORIAL_COMMAND = ("`bnparity pitfalls RUN_DIR` (a step of `bnparity run`), or `bnparity pitfalls --tutorial-only "
                    "--tutorial-json PATH` alone, writes tutorial_mlp.json: the tutorial's MLP trained with its layer, "
                    "a correct one, every framework's builtin BatchNorm and none")


def pitfall_section(data: RunData) -> Section:
    """The section: the seed's statement of the faults, then each experiment's table, or the command that makes it."""
    return Section(SECTION_ID, TITLE, [*faults_blocks(), *trained_blocks(data.pitfalls, _absent(data, "pitfalls")),
                                       *tutorial_blocks(data.tutorial_mlp, _absent(data, "tutorial_mlp"))])


def _absent(data: RunData, part: str) -> str:
    """Why a part's records are not there (the load's detail), '' when unknown."""
    status = data.parts.get(part)
    return status.detail if status is not None else ""


def faults_blocks() -> list[str | Table | Bullets]:
    """The tutorial's setup and hand-written layer, field by field, and its faults, statement by statement."""
    s, layer = TUTORIAL_SETUP, TUTORIAL_LAYER
    return [
        f"The seed tutorial trains an {s.network} on {s.dataset} ({s.optimizer}, batch {s.batch_size}, inputs "
        f"{s.inputs}, {s.epochs} epochs) with a BatchNorm written by hand: statistics {layer.statistics}, "
        f"ε = {layer.eps:g}, {layer.variance}, γ and β from {layer.gamma_beta_init}, moving averages "
        f"`{layer.update}` with m = {layer.m:g} starting at {layer.moving_start}; eval mode {layer.eval_mode}. "
        "Its faults, as the seed material states them:",
        Bullets([f"{fault.name}: {fault.statement}" for fault in TUTORIAL_FAULTS]),
    ]


def _batches(k: int) -> str:
    return f"after {k} batch{'es' if k != 1 else ''}"


def trained_blocks(doc: PitfallsDoc | None, why: str = "") -> list[str | Table | Bullets]:
    """The moving-average rules on the run's trained AlexNet: rule × steps → test accuracy."""
    if doc is None:
        return [f"On the trained AlexNet: no records in this run{f' ({why})' if why else ''}. {PITFALLS_COMMAND}."]
    meta = doc.meta
    steps = [k for k in meta.steps if any(r.steps == k for r in doc.records)]
    by = {(r.rule, r.steps): r for r in doc.records}
    rows = []
    for rule in meta.rules:
        cells = [Cell(rule.name, title=rule.description)]
        for k in steps:
            r = by.get((rule.name, k))
            cells.append(text_cell(None) if r is None else Cell(f"{r.test_accuracy:.4f}",
                                                                title=f"test loss {r.test_loss:.4f}"))
        rows.append(cells)
    blocks: list[str | Table | Bullets] = [
        f"On the trained AlexNet (`bnparity pitfalls`): running statistics never change what training computes, so "
        f"the weights of {meta.run} after epoch {meta.epoch} (preset {meta.preset}, batches of {meta.batch_size}) "
        "are the same under every rule. Each rule re-estimates every BN layer's running statistics from the run's "
        "own first training batches (same order, same dropout masks) with the float64 NumPy AlexNet; then the test "
        "set is evaluated in eval mode" + ("" if meta.complete else " (incomplete: the measurement was cut short)")
        + ".",
        Table(["rule", *(_batches(k) for k in steps)], rows,
              caption=f"Test accuracy on {meta.test_images} test images (hover: the rule, the test loss)."),
        Bullets([f"{rule.name}: {rule.description}" for rule in meta.rules]),
    ]
    trained = by.get(("trained", None))
    if trained is not None:
        blocks.append(f"With the running statistics the framework accumulated over the whole run, the same images "
                      f"score {trained.test_accuracy:.4f}.")
    return blocks


def _columns(doc: TutorialMLPDoc) -> list[str | None]:
    """The table's columns: the reference (None), then every framework asked for or recorded, in registry order."""
    recorded = {r.framework for r in doc.records if r.framework is not None}
    return [None, *sorted(set(doc.meta.frameworks) | recorded, key=sort_key)]


def _tutorial_cell(records: list[TutorialMLPRecord | TutorialMLPSkip]) -> Cell:
    """One row × framework: eval accuracy at its last epoch (hover: every epoch), or why it did not run."""
    ok = sorted((r for r in records if isinstance(r, TutorialMLPRecord)), key=lambda r: r.epoch)
    skips = [r for r in records if isinstance(r, TutorialMLPSkip)]
    if not ok and skips:
        return Cell(skips[0].status, status=skips[0].status, title=skips[0].reason)
    if not ok:
        return text_cell(None)
    last = ok[-1]
    title = "by epoch: " + ", ".join(f"{r.epoch}: {r.test_accuracy:.4f}" for r in ok) + \
        f"; test loss {last.test_loss:.4f}, train loss {last.train_loss:.4f}"
    if skips:  # a worker that died after some epochs
        return Cell(f"{last.test_accuracy:.4f} (epoch {last.epoch})", status="error",
                    title=f"{skips[0].reason}; {title}")
    return Cell(f"{last.test_accuracy:.4f}", title=title)


def _last(doc: TutorialMLPDoc, row: str, framework: str | None = None) -> TutorialMLPRecord | None:
    """A row's record at the experiment's last epoch, or None."""
    return next((r for r in doc.measured if r.row == row and r.framework == framework
                 and r.epoch == doc.meta.epochs - 1), None)


def tutorial_blocks(doc: TutorialMLPDoc | None, why: str = "") -> list[str | Table | Bullets]:
    """The tutorial's MLP: its setup against ours, then row × framework → eval accuracy at the last epoch."""
    if doc is None:
        return [f"On the tutorial's own MLP: no records in this run{f' ({why})' if why else ''}. "
                f"{TUTORIAL_COMMAND}."]
    meta = doc.meta
    setup = Table(["", "the tutorial", "this run"], [
        [Cell("network"), Cell(TUTORIAL_SETUP.network), Cell(meta.network)],
        [Cell("dataset"), Cell(meta.published_dataset), Cell(meta.dataset)],
        [Cell("training images"), Cell(str(meta.published_train_images)), Cell(str(meta.train_images))],
        [Cell("epochs"), Cell(str(meta.published_epochs)), Cell(str(meta.epochs))],
        [Cell("batch, optimizer"), Cell(f"{TUTORIAL_SETUP.batch_size}, {TUTORIAL_SETUP.optimizer}"),
         Cell(f"{meta.batch_size}, SGD lr {meta.lr:g}")],
        [Cell("inputs"), Cell(TUTORIAL_SETUP.inputs), Cell(meta.inputs)],
        [Cell("evaluated on"), Cell("its validation set"), Cell(f"{meta.test_images} test images, eval mode")],
    ], caption="The tutorial's setup (bnparity.seeds.facts) and the one this run used.", row_class="kv")
    columns = _columns(doc)
    rows = []
    for row in meta.rows:
        cells = [Cell(row.name, title=row.description)]
        for fw in columns:
            cells.append(_tutorial_cell([r for r in doc.records if r.row == row.name and r.framework == fw]))
        rows.append(cells)
    label = "the last epoch" if meta.epochs == 1 else f"epoch {meta.epochs - 1} (the last; epochs count from 0)"
    blocks: list[str | Table | Bullets] = [
        "On the tutorial's own MLP (`bnparity pitfalls`): every row starts from the same weights and sees the same "
        "batches; the float64 reference trains the tutorial's layer, a correct one and no BN, each framework its own "
        "BatchNorm through its Trainer (float32). Running statistics never change training, so init-only and "
        "moving-only measure each kind of fault alone at no extra training"
        + ("" if meta.complete else " (incomplete: the experiment was cut short)") + ".",
        setup,
        Table(["row", *(REFERENCE if fw is None else display_name(fw) for fw in columns)], rows,
              caption=f"Test accuracy at {label}, seed {meta.seed}, in eval mode "
                      "(hover: the row, every epoch, the losses)."),
        Bullets([f"{row.name}: {row.description}" for row in meta.rows]),
    ]
    blocks += _findings(doc)
    return blocks


def _findings(doc: TutorialMLPDoc) -> list[str]:
    """The comparisons the rows exist for, at the last epoch, and the tutorial's own log beside them."""
    last = {name: _last(doc, name) for name in ("tutorial", "scratch", "nobn", "init-only", "moving-only")}
    builtins = [r for fw in doc.meta.frameworks if (r := _last(doc, "builtin", fw)) is not None]
    lines = []
    if all(last.values()):
        acc = {name: r.test_accuracy for name, r in last.items() if r is not None}
        text = (f"After epoch {doc.meta.epochs - 1}: the tutorial's layer scores {acc['tutorial']:.4f} against "
                f"{acc['scratch']:.4f} for the correct one ({acc['tutorial'] - acc['scratch']:+.4f}); the γ/β fault "
                f"alone {acc['init-only']:.4f} ({acc['init-only'] - acc['scratch']:+.4f}), the moving-average faults "
                f"alone {acc['moving-only']:.4f} ({acc['moving-only'] - acc['scratch']:+.4f}); no BN "
                f"{acc['nobn']:.4f}")
        if builtins:
            low, high = min(r.test_accuracy for r in builtins), max(r.test_accuracy for r in builtins)
            text += (f"; the frameworks' builtin layers {low:.4f}" + (f" to {high:.4f}" if high != low else "")
                     + f" ({len(builtins)} framework{'s' if len(builtins) != 1 else ''})")
        lines.append(text + ".")
    published = {row: tutorial_curve(variant) for row, variant in PUBLISHED_VARIANTS.items()}
    same = {row: next((e for e in curve if e.epoch == doc.meta.epochs - 1), None) for row, curve in published.items()}
    end = {row: curve[-1] for row, curve in published.items()}
    text = (f"The tutorial's own log ({doc.meta.published_dataset}, validation accuracy; its hand-written layer is "
            f"{PUBLISHED_VARIANTS['tutorial']}): {end['tutorial'].valid_acc:.4f} with BN and "
            f"{end['nobn'].valid_acc:.4f} without after epoch {end['tutorial'].epoch}")
    bn_then, nobn_then = same["tutorial"], same["nobn"]
    if bn_then is not None and nobn_then is not None and bn_then != end["tutorial"]:
        text += f"; {bn_then.valid_acc:.4f} and {nobn_then.valid_acc:.4f} after epoch {bn_then.epoch}, as many as ours"
    lines.append(text + f". Its level is not comparable with ours ({doc.meta.dataset} is the harder dataset); only "
                        "the order of the rows can be compared.")
    return lines
