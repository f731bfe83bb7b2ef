"""The verdict at a glance: one small table of what was asked (rows) by framework (columns), each cell "agree",
"differs by default", "fails", "skipped" or "not run" (and, for training, what BN buys), linked to its section.

Every cell is computed from the run's records (and the summary computed from them, reports/summary.py); a part whose
records are absent makes its row "not run". The table's data is summary.json's "verdict" too.

The rule of a layer row, per framework, on the standard (gated) cases of that normalization:
  fails               a gated comparison in matched conventions fails or errors, or the framework's own defaults do
                      not reproduce its conventions row (the defaults-mode gate);
  differs by default  matched conventions pass, but the builtin layer left at its defaults differs from the
                      baseline framework's convention (defaults mode, compared with the baseline's reference);
  agree               matched conventions pass and the defaults agree too (or were not compared: the hover says so);
  skipped             nothing of the framework ran (the hover gives the reason).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from bnparity.frameworks.registry import baseline, descriptor, display_name, sort_key
from bnparity.reference.normalization import normalizations
from bnparity.suites.convergence.records import RunId
from bnparity.suites.schema import LayerComparison, LayerSkip, ParityDoc

from .document import Cell, Section, Table
from .load import RunData

SECTION_ID = "verdict"
TITLE = "Verdict at a glance"
FIRST_NORMALIZATION = "batchnorm"  # its sections keep the first release's ids (parity_sections._section_id)

# a cell's status -> the table's colour (document.STATUS_MEANING)
COLOUR = {"agree": "pass", "differs": "differs", "fails": "fail", "skipped": "skipped", "not run": "skipped",
          "buys": "pass", "no gain": "differs", "incomplete": "skipped"}
TEXT = {"agree": "agree", "differs": "differs by default", "fails": "fails", "skipped": "skipped",
        "not run": "not run"}
FALLBACK_SECTION = "environment"  # lists every part of the run directory: where a row without its own section points


@dataclass(frozen=True)
class VerdictCell:
    """One framework's answer to one question.

    Attributes:
        framework: the descriptor name.
        status: "agree", "differs", "fails", "skipped" or "not run"; the training row: "buys" (BN ends with a
            higher test accuracy), "no gain" (it does not), "incomplete" (no finished run of both variants),
            "fails" (a run failed), "skipped" or "not run".
        text: what the cell shows.
        detail: the numbers behind it (hover text).
        section: the id of the report section that shows the records.
    """

    framework: str
    status: str
    text: str
    detail: str
    section: str


@dataclass(frozen=True)
class VerdictRow:
    """One question: `key` (a normalization's name, "model", "replicas", "fold", "training"), its label, and one
    cell per framework of the verdict."""

    key: str
    question: str
    cells: tuple[VerdictCell, ...]


@dataclass(frozen=True)
class Verdict:
    """summary.json's "verdict": the frameworks (columns, the registry's order) and the rows."""

    frameworks: tuple[str, ...]
    baseline: str
    rows: tuple[VerdictRow, ...]


def _section_id(base: str, name: str) -> str:
    return base if name == FIRST_NORMALIZATION else f"{base}-{name}"


def _ordered(names: Iterable[str]) -> tuple[str, ...]:
    return tuple(sorted(set(names), key=sort_key))


def _run_framework(name: str) -> str | None:
    try:
        return RunId.parse(name).framework
    except ValueError:
        return None


def frameworks(data: RunData) -> tuple[str, ...]:
    """Every framework some record of the run names (never the registry's list: a framework not run is no column)."""
    names: list[str] = []
    for doc in (data.parity, data.model_parity, data.sync_parity, data.dp_parity):
        if doc is not None:
            names += [r.framework for r in doc.records]
    if data.fold is not None:
        names += [r.framework for r in (*data.fold.records, *data.fold.alexnet)]
    if data.conclusions is not None:
        names += [c.framework for c in data.conclusions.configs]
        names += [f for f in map(_run_framework, data.conclusions.skipped) if f]
    return _ordered(names)


def _not_run(key: str, question: str, fws: tuple[str, ...], section: str, why: str) -> VerdictRow:
    return VerdictRow(key, question, tuple(VerdictCell(fw, "not run", TEXT["not run"], why, section) for fw in fws))


def _missing_cell(fw: str, section: str, what: str) -> VerdictCell:
    return VerdictCell(fw, "not run", TEXT["not run"], f"{what} holds no record of {display_name(fw)}", section)


def _layer_cell(doc: ParityDoc, fw: str, name: str, title: str) -> VerdictCell:
    """One framework on one normalization's standard cases (the rule in the module docstring)."""
    standard = set(doc.case_names(gate=True))
    mine = [r for r in doc.records if r.framework == fw and (r.case is None or r.case in standard)]
    matched = [r for r in mine if r.mode == "matched" and not r.vs_baseline]
    comps = [r for r in matched if isinstance(r, LayerComparison)]
    skips = [r for r in matched if isinstance(r, LayerSkip)]
    parity_id, conventions_id = _section_id("layer-parity", name), _section_id("conventions", name)
    failed = [r for r in comps if r.gate and not r.passed] + [r for r in skips if r.status == "error"]
    if failed:
        cases = sorted({f"{r.impl} {r.case or 'every case'}" for r in failed})
        return VerdictCell(fw, "fails", f"{TEXT['fails']} ({len(cases)})", f"{title}: {len(failed)} gated "
                           f"comparison(s) fail or error in matched conventions: {', '.join(cases[:4])}"
                           + (" …" if len(cases) > 4 else ""), parity_id)
    if not comps:
        reason = skips[0].reason if skips else f"no {title} record of {display_name(fw)}"
        return VerdictCell(fw, "skipped", TEXT["skipped"], reason, parity_id)
    impls = sorted({r.impl for r in comps})
    cases_run = {(r.impl, r.case) for r in comps}
    skipped_cases = {(r.impl, r.case) for r in skips if r.case is not None} - cases_run
    gated = [r for r in comps if r.gate]
    head = (f"{title}: {sum(r.passed for r in gated)}/{len(gated)} gated comparisons pass in matched conventions "
            f"({', '.join(impls)}, {len({c for _, c in cases_run})} standard cases)")
    if skipped_cases:
        head += f"; {len(skipped_cases)} case × implementation(s) skipped: {skips[0].reason}"
    if "builtin" not in impls:
        why = next((r.reason for r in skips if r.impl == "builtin"), "no builtin layer was run")
        return VerdictCell(fw, "skipped", "no builtin layer (scratch agrees)", f"{head}. Builtin: {why}", parity_id)
    defaults = [r for r in mine if r.mode == "defaults" and isinstance(r, LayerComparison)]
    own = [r for r in defaults if r.reference == "own-convention" and r.gate]
    if own and not all(r.passed for r in own):
        bad = [r for r in own if not r.passed]
        return VerdictCell(fw, "fails", TEXT["fails"], f"{head}; but its defaults do not reproduce its conventions "
                           f"row: {len(bad)} of {len(own)} defaults-mode gated comparisons fail", conventions_id)
    vs = [r for r in defaults if r.vs_baseline]
    anchor = display_name(baseline().name)
    if not vs:
        return VerdictCell(fw, "agree", TEXT["agree"], f"{head}; defaults not compared with {anchor}'s "
                           "convention in this run", parity_id)
    outside = [r for r in vs if not r.passed]
    if not outside:
        return VerdictCell(fw, "agree", TEXT["agree"], f"{head}; left at its defaults it agrees with "
                           f"{anchor}'s convention ({len(vs)}/{len(vs)} comparisons inside the tolerance)", parity_id)
    worst: dict[str, float] = {}
    for r in outside:
        worst[r.quantity] = max(worst.get(r.quantity, 0.0), r.ratio)
    moved = ", ".join(f"{q} up to {v:.2g}× the tolerance" for q, v in sorted(worst.items(), key=lambda kv: -kv[1]))
    return VerdictCell(fw, "differs", TEXT["differs"], f"{head}; left at its defaults it differs from "
                       f"{anchor}'s convention in {len(outside)} of {len(vs)} comparisons: {moved}", conventions_id)


def layer_rows(data: RunData, fws: tuple[str, ...]) -> list[VerdictRow]:
    """One row per normalization bnparity knows (the records' own first): "not run" where the records hold none."""
    known = {p.name: p.title for p in normalizations()}
    if data.parity is None:
        return [_not_run("layer", "Layer parity (every normalization)", fws, "layer-parity",
                         data.parts["parity"].detail or "no parity.json")]
    present = data.parity.normalizations()
    rows = []
    for name in dict.fromkeys((*known, *present)):
        title = known.get(name, name)
        question = f"{title} layer parity"
        if name not in present:
            rows.append(_not_run(name, question, fws, "layer-parity", f"the parity records hold no {title} case"))
            continue
        part = data.parity.of_normalization(name)
        ran = {r.framework for r in part.records}
        rows.append(VerdictRow(name, question, tuple(
            _layer_cell(part, fw, name, title) if fw in ran else
            _missing_cell(fw, _section_id("layer-parity", name), f"parity.json's {title} part") for fw in fws)))
    return rows


def model_row(data: RunData, summary: dict[str, Any], fws: tuple[str, ...]) -> VerdictRow:
    """Whole-model parity: the gated comparisons of each framework's AlexNet (every dtype) pass, fail, or not run."""
    key, question, section = "model", "Whole-model parity (AlexNet)", "model-parity"
    m = summary.get("model_parity")
    if data.model_parity is None or m is None:
        return _not_run(key, question, fws, section, data.parts["model_parity"].detail or "no model_parity.json")
    cells = []
    for fw in fws:
        groups = [g for g in m.groups if g.framework == fw]
        if fw in m.errors:
            cells.append(VerdictCell(fw, "fails", TEXT["fails"], f"raised: {m.errors[fw]}", section))
        elif not groups:
            cells.append(VerdictCell(fw, "skipped", TEXT["skipped"], m.skipped[fw], section) if fw in m.skipped
                         else _missing_cell(fw, section, "model_parity.json"))
        else:
            gated, failed = sum(g.gated for g in groups), sum(g.failed for g in groups)
            ungated = sum(g.ungated_outside for g in groups)
            detail = (f"{gated - failed}/{gated} gated comparisons pass ({', '.join(g.dtype for g in groups)}); "
                      f"{ungated} ungated comparison(s) outside the tolerance (findings)")
            status = "fails" if failed else "agree" if gated else "skipped"
            cells.append(VerdictCell(fw, status, TEXT[status] + (f" ({failed})" if failed else ""), detail, section))
    return VerdictRow(key, question, tuple(cells))


def replica_row(data: RunData, summary: dict[str, Any], fws: tuple[str, ...]) -> VerdictRow:
    """Synchronized BN across replicas (sync_parity.json) and one data-parallel SGD step (dp_parity.json): a gated
    failure fails; an implementation that weights unequal shards equally (not the global batch's BN) differs."""
    key, question, section = "replicas", "Synchronized BN across replicas", "cross-replica"
    sync, dp = data.sync_parity, data.dp_parity
    if sync is None and dp is None:
        return _not_run(key, question, fws, section, data.parts["sync_parity"].detail or "no sync_parity.json")
    findings = summary["sync_parity"]["findings"] if sync is not None else {}
    cells = []
    for fw in fws:
        comps = [r for r in (sync.comparisons if sync else []) if r.framework == fw and r.gate]
        steps = [r for r in (dp.comparisons if dp else []) if r.framework == fw and r.gate]
        skips = [r for r in (*(sync.not_run if sync else []), *(dp.not_run if dp else [])) if r.framework == fw]
        errors = [r for r in skips if r.status == "error"]
        failed = sum(not r.passed for r in comps) + sum(not r.passed for r in steps) + len(errors)
        n = len(comps) + len(steps)
        detail = (f"cross-replica BatchNorm {sum(r.passed for r in comps)}/{len(comps)} gated comparisons pass; "
                  f"data-parallel SGD step {sum(r.passed for r in steps)}/{len(steps)}")
        if errors:
            detail += f"; {len(errors)} error(s): {errors[0].reason}"
        equal = [name for name, f in findings.items() if f["framework"] == fw]
        if failed:
            cells.append(VerdictCell(fw, "fails", f"{TEXT['fails']} ({failed})", detail, section))
        elif not n:
            cells.append(VerdictCell(fw, "skipped", TEXT["skipped"], skips[0].reason, section) if skips
                         else _missing_cell(fw, section, "sync_parity.json and dp_parity.json"))
        elif equal:
            cells.append(VerdictCell(fw, "differs", "differs with unequal shards", detail + f"; {', '.join(equal)} "
                                     "averages the replicas' statistics with equal weights, not the global batch's",
                                     section))
        else:
            cells.append(VerdictCell(fw, "agree", TEXT["agree"], detail, section))
    return VerdictRow(key, question, tuple(cells))


def fold_row(data: RunData, fws: tuple[str, ...]) -> VerdictRow:
    """Folded inference (fold.json): every layer case and trained network folded within its bound, or not."""
    key, question = "fold", "Folded inference (BN folded into the layer before it)"
    section = "fold" if "fold" in data.parts else FALLBACK_SECTION  # no fold part: no fold section
    if data.fold is None:
        detail = data.parts["fold"].detail if "fold" in data.parts else "this run directory has no fold step"
        return _not_run(key, question, fws, section, detail)
    cells = []
    for fw in fws:
        comps = [r for r in data.fold.comparisons if r.framework == fw]
        nets = [r for r in data.fold.networks if r.framework == fw]
        skips = [r for r in data.fold.skips if r.framework == fw]
        errors = [r for r in skips if r.status == "error"]
        failed = sum(not r.passed for r in (*comps, *nets)) + len(errors)
        detail = (f"{sum(r.passed for r in comps)}/{len(comps)} layer cases within their bound; "
                  + (f"trained network: {sum(r.argmax_changes for r in nets)} changed prediction(s)" if nets
                     else "no trained network folded"))
        if failed:
            cells.append(VerdictCell(fw, "fails", f"{TEXT['fails']} ({failed})", detail, section))
        elif not comps and not nets:
            cells.append(VerdictCell(fw, "skipped", TEXT["skipped"], skips[0].reason, section) if skips
                         else _missing_cell(fw, section, "fold.json"))
        else:
            cells.append(VerdictCell(fw, "agree", TEXT["agree"], detail, section))
    return VerdictRow(key, question, tuple(cells))


def _pct(x: float) -> str:
    return f"{100 * x:g} %"


def _bn_buys(fw: str, configs: dict[tuple[str, str], Any], section: str) -> VerdictCell:
    """BN's final-accuracy gain and the highest target BN reached in every seed, with no-BN's time to it."""
    bn, nobn = configs.get((fw, "bn")), configs.get((fw, "nobn"))
    if bn is None or nobn is None:
        have = "with" if bn is not None else "without"
        return VerdictCell(fw, "incomplete", f"only {have} BN", f"no run {'without' if bn else 'with'} BN to "
                           "compare with", section)
    a, b = bn.final_test_accuracy.mean, nobn.final_test_accuracy.mean
    if a is None or b is None:
        return VerdictCell(fw, "incomplete", "no finished pair", "not every variant has a finished run", section)
    gain = a - b
    text = f"{gain:+.3f} final acc."
    detail = f"final test accuracy {a:.4f} with BN vs {b:.4f} without (mean over finished seeds)"
    reached = [(float(t), x) for t, x in bn.time_to_target.items() if x.of and x.reached == x.of and x.epochs_mean]
    if reached:
        target, x = max(reached)
        other = nobn.time_to_target.get(f"{target:g}")
        if other is None or not other.reached:
            versus = "never"
        elif other.reached < other.of:
            versus = f"{other.reached} of {other.of} seeds"
        else:
            versus = f"{other.epochs_mean:.1f}" if other.epochs_mean is not None else "–"
        numeric = other is not None and other.reached == other.of and other.epochs_mean is not None
        text += (f"; {_pct(target)} in {x.epochs_mean:.1f} vs {versus} epochs" if numeric
                 else f"; {_pct(target)} in {x.epochs_mean:.1f} epochs, no BN: {versus}")
        detail += f"; BN reaches {_pct(target)} test accuracy after {x.epochs_mean:.2f} epochs, without BN: {versus}"
    return VerdictCell(fw, "buys" if gain > 0 else "no gain", text, detail, section)


def _sat_out(data: RunData, fw: str, section: str) -> VerdictCell | None:
    """In a main job's run (it has a manifest.json) that was not given --frameworks, a framework whose descriptor
    sits out the training step: "not run", saying so and how to run it."""
    manifest = data.manifest
    if manifest is None or "--frameworks" in manifest.command or "train" not in descriptor(fw).main_job_sits_out:
        return None
    return VerdictCell(fw, "not run", TEXT["not run"], f"{display_name(fw)} sits out the main job's training step "
                       f"(its descriptor's main_job_sits_out): `bnparity train --frameworks {fw}` trains it", section)


def training_row(data: RunData, summary: dict[str, Any], fws: tuple[str, ...]) -> VerdictRow:
    """What BN buys per framework: its final-accuracy gain and time to the highest target it reached (runs on one
    device at the preset's batch size; a batch-size sweep: at its largest batch)."""
    key, question, section = "training", "Training: what BN buys", "time-to-accuracy"
    t = summary.get("training")
    if t is None:
        why = data.parts["train"].detail if "train" in data.parts else "no training records"
        return _not_run(key, question, fws, "convergence", why or "no training records")
    sizes = sorted({c.batch_size for c in t.configs if c.batch_size is not None})
    at = sizes[-1] if sizes else None
    configs = {(c.framework, c.variant): c for c in t.configs if c.batch_size == at}
    if at is not None:
        question += f" (batch {at})"
    failed = {i.run: i for i in t.incomplete if i.status == "failed"}
    cells = []
    for fw in fws:
        mine = [name for name in failed if _run_framework(name) == fw]
        if mine:
            cells.append(VerdictCell(fw, "fails", f"{TEXT['fails']} ({len(mine)} run(s))",
                                     "; ".join(f"{n}: {failed[n].message}" for n in mine), section))
        elif not any(k[0] == fw for k in configs):
            skipped = [reason for name, reason in t.skipped.items() if _run_framework(name) == fw]
            cells.append(VerdictCell(fw, "skipped", TEXT["skipped"], skipped[0], section) if skipped
                         else _sat_out(data, fw, section) or _missing_cell(fw, section, "the training records"))
        else:
            cells.append(_bn_buys(fw, configs, section))
    return VerdictRow(key, question, tuple(cells))


def build_verdict(data: RunData, summary: dict[str, Any]) -> Verdict:
    """The verdict of a run: every row, computed from its records and `summary` (reports/summary.py)."""
    fws = frameworks(data)
    rows = [*layer_rows(data, fws), model_row(data, summary, fws), replica_row(data, summary, fws),
            fold_row(data, fws), training_row(data, summary, fws)]
    return Verdict(frameworks=fws, baseline=baseline().name, rows=tuple(rows))


def verdict_section(verdict: Verdict) -> Section:
    """The table (rows: questions; columns: frameworks; each cell linked to its section) and how to read it."""
    section = Section(SECTION_ID, TITLE)
    columns = verdict.frameworks or ("",)
    body = []
    for row in verdict.rows:
        cells = {c.framework: c for c in row.cells}
        body.append([Cell(row.question)] + [
            Cell(c.text, COLOUR[c.status], c.detail, f"#{c.section}") if (c := cells.get(fw)) else Cell("–")
            for fw in columns])
    anchor = display_name(verdict.baseline)
    section.blocks.append(Table(
        ["", *(display_name(fw) if fw else "no framework ran" for fw in columns)], body, row_class="verdict",
        caption=f"Each cell links to its section (hover for the numbers). agree: matched conventions pass against "
                f"the float64 reference and the defaults agree with {anchor}'s convention; differs by default: "
                f"matched conventions pass, the framework's defaults differ from {anchor}'s (a porter must change "
                "them); fails: a gated comparison fails; not run: this run has no such records. Training: BN's "
                "final test accuracy minus no-BN's, and the epochs to the highest target BN reached in every seed "
                "against no-BN's."))
    return section
