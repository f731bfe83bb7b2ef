"""The report's parity sections: the layer-parity matrix, conventions, hard inputs, model-level parity."""

from __future__ import annotations

from typing import Any

from bnparity.frameworks.conventions import Convention, LayerConvention
from bnparity.frameworks.registry import baseline, display_name, sort_key
from bnparity.reference.normalization import normalization as plugin
from bnparity.reference.normalization import normalizations
from bnparity.suites.model_parity.summary import worst
from bnparity.suites.parity.summary import Cell as ParityCell
from bnparity.suites.schema import ModelComparison, ParityDoc

from .document import Bullets, Cell, Section, Table, fmt, text_cell
from .layer_summary import MEASURED, hard_case_findings, matrix, parity_of
from .load import RunData
from .summary import CONVENTION_FIELDS, ModelParitySummary

FIRST_NORMALIZATION = Convention.normalization  # the first release's normalization: its sections keep their ids
_STATUS = {"pass": "pass", "FAIL": "fail", "differs": "differs", "skipped": "skipped", "error": "error"}
# the model-parity table's rows: what is compared against the float64 reference, then against the anchor framework
MODEL_KINDS = {"reference": ("logits", "loss", "grad", "running_stats", "eval_loss"),
               "anchor": ("logits", "loss", "loss_step2", "grad", "param_step1", "param_step2", "momentum",
                          "running_stats", "running_var_raw")}


def _parity_cell(cell: ParityCell | None) -> Cell:
    """'max |Δ| · error/allowed' of the worst comparison, coloured, with the details as hover text."""
    if cell is None:
        return Cell("")
    if cell.status in ("skipped", "error") or cell.record is None:
        return Cell(cell.status, _STATUS[cell.status], cell.reason)
    r = cell.record
    title = (f"worst quantity {r.quantity}: max |got − ref| {fmt(r.max_abs_err)}, max relative "
             f"{fmt(r.max_rel_err)}, {r.n_mismatched} of {r.n_total} elements outside; "
             f"allowed atol {fmt(r.atol)} + rtol {fmt(r.rtol)}·|ref|")
    return Cell(f"{fmt(cell.max_abs_err, '.1e')} · {fmt(cell.worst_ratio)}", _STATUS[cell.status], title)


def _case_matrix(doc: ParityDoc, cases: list[str], caption: str, *, mode: str = "matched") -> Table:
    columns, table = matrix(doc.records, cases, mode=mode)
    notes = doc.notes()
    rows = [[Cell(case, title=notes.get(case) or None)]
            + [_parity_cell(table.get((case, col))) for col in columns] for case in cases]
    return Table(["case", *columns], rows, caption=caption)


def _plugins() -> set[str]:
    return {p.name for p in normalizations()}


def _section_id(base: str, name: str) -> str:
    """BatchNorm's sections keep the first release's ids; the other normalizations' add their name."""
    return base if name == FIRST_NORMALIZATION else f"{base}-{name}"


def _part(data: RunData, summary: dict[str, Any], name: str) -> tuple[ParityDoc, dict[str, Any]] | None:
    """One normalization's records and summary, or None when the run has none of it."""
    if data.parity is None or name not in summary["normalizations"]:
        return None
    return parity_of(data.parity).of_normalization(name), summary["normalizations"][name]


def section_normalizations(data: RunData) -> tuple[str, ...]:
    """The normalizations the report has sections for: those of the parity records (BatchNorm's when none)."""
    names = parity_of(data.parity).normalizations() if data.parity is not None else ()
    return names or (FIRST_NORMALIZATION,)


def layer_section(data: RunData, summary: dict[str, Any], name: str = FIRST_NORMALIZATION) -> Section:
    part = _part(data, summary, name)
    title = summary["normalizations"].get(name, {}).get("title", name)
    section = Section(_section_id("layer-parity", name), f"Layer parity matrix: {title}")
    if part is None:
        detail = data.parts["parity"].detail if data.parity is None else f"the parity records hold no {title} case"
        return Section(section.id, section.title, missing=detail)
    doc, n = part
    s = n["layer_parity"]
    section.blocks.append(
        f"Every standard {title} case (the gate) through every implementation in matched semantics, compared with the "
        "float64 reference. A cell shows the worst comparison over y, dx, dγ, dβ, the running statistics and y_eval "
        "(those the layer has): its largest absolute error · its error as a fraction of the allowed error (≤ 1 "
        "passes). Hover for details.")
    section.blocks.append(_case_matrix(doc, doc.case_names(gate=True),
                                       f"{s['standard_cases']} standard cases; {s['gated_comparisons']} gated "
                                       f"comparisons, {s['gate_failures']} failures."))
    for col, reason in s["unavailable"].items():
        section.blocks.append(f"{col} was not run: {reason}")
    return section


def hard_section(data: RunData, summary: dict[str, Any], name: str = FIRST_NORMALIZATION) -> Section:
    part = _part(data, summary, name)
    title = summary["normalizations"].get(name, {}).get("title", name)
    section = Section(_section_id("hard-inputs", name), f"Hard-input findings: {title}")
    if part is None:
        detail = data.parts["parity"].detail if data.parity is None else f"the parity records hold no {title} case"
        return Section(section.id, section.title, missing=detail)
    doc, n = part
    hard = doc.case_names(gate=False)
    if not hard:
        return Section(section.id, section.title, ["This run has no hard-input cases (bnparity parity --no-hard)."])
    h = n["hard_inputs"]
    section.blocks.append(f"Inputs that separate a careful implementation from a naive one. Findings, never a gate: "
                          f"{h['inside']} results inside the tolerance model, {h['outside']} outside, "
                          f"{h['errors']} errors.")
    section.blocks.append(Bullets(hard_case_findings(h)))
    section.blocks.append(_case_matrix(doc, hard, "Matched semantics (every implementation configured "
                                       "alike). Cells as in the layer parity matrix."))
    d = n["hard_inputs_defaults"]
    if d and d["findings"]:
        section.blocks.append(f"The builtin layers as shipped (defaults mode, against the reference in each "
                              f"framework's own convention): {d['inside']} inside, {d['outside']} outside, "
                              f"{d['errors']} errors.")
        section.blocks.append(Bullets(hard_case_findings(d)))
        section.blocks.append(_case_matrix(doc, hard, "Defaults mode: each framework's own layer with its "
                                           "own defaults (e.g. Flax's E[x²] − E[x]² variance).", mode="defaults"))
    return section


# (Convention attribute, row label); CONVENTION_FIELDS (reports/summary.py) are the ones a porter must change
_CONVENTION_ROWS = (("layer", "layer"), ("momentum", "momentum (default)"), ("momentum_weighs", "momentum weighs"),
                    ("new_weight", "weight of the new batch"), ("eps", "ε"),
                    ("running_var", "running variance stored"), ("channel_axis", "channel axis"),
                    ("variance_algorithm", "σ²_B algorithm"), ("train_eval_switch", "train/eval switch"),
                    ("scale_switch", "turning γ off"), ("running_stats_written", "running statistics written"))


def conventions_section(data: RunData, summary: dict[str, Any]) -> Section:
    section = Section("conventions", "Conventions and measured default differences")
    rows = {r.framework: r for r in data.conventions}
    frameworks = list(rows)
    measured = {r["framework"]: r["measured"] for r in summary["conventions"]["frameworks"]}
    anchor = summary["conventions"]["baseline"]
    shown = display_name(anchor)
    body = []
    for key, label in _CONVENTION_ROWS:
        values = {fw: getattr(rows[fw], key) for fw in frameworks}
        ref = values.get(anchor)
        body.append([Cell(label)] + [
            text_cell(f"{values[fw]:g}" if isinstance(values[fw], float) else values[fw],
                      status="differs" if fw != anchor and ref is not None and values[fw] != ref
                      and key in CONVENTION_FIELDS else None,
                      title=rows[fw].citations.get(key)) for fw in frameworks])
    for quantity in MEASURED:
        cells = []
        for fw in frameworks:
            m = (measured.get(fw) or {}).get("vs_baseline", {}).get(quantity)
            cells.append(Cell("–") if m is None else Cell(
                fmt(m["scaled_err"]), "pass" if (m["worst_ratio"] or float("inf")) <= 1 else "differs",
                f"worst over the standard cases: {m['case']}; max |Δ| {fmt(m['max_abs_err'])}, "
                f"{fmt(m['worst_ratio'])}× the float tolerance"))
        body.append([Cell(f"{quantity} vs {shown}'s convention (max |Δ| / max |ref|)")] + cells)
    proof = []
    for fw in frameworks:
        m = measured.get(fw)
        ok = m and m["own_convention"]["of"] and m["own_convention"]["passed"] == m["own_convention"]["of"]
        proof.append(Cell("–") if not m else Cell(f"{m['own_convention']['passed']}/{m['own_convention']['of']}",
                                                 "pass" if ok else "fail"))
    body.append([Cell("defaults reproduce this row (gated comparisons)")] + proof)
    section.blocks.append(
        f"Each framework's BatchNorm as a user who changes nothing gets it ({summary['conventions']['source']}; "
        f"hover a value for where the framework defines it). Coloured: a default that differs from {shown}'s. The "
        "last rows are measured in defaults mode: each framework's own layer after the case's training steps, "
        f"against the reference in {shown}'s convention — the difference a porter who keeps the defaults sees.")
    section.blocks.append(Table(["", *frameworks], body, row_class="kv"))
    return section


def _default_text(row: LayerConvention, name: str) -> str:
    """A spec field's default as a table shows it: the value, "required" (an argument without a default, explained
    in the row's facts) or "–" (the layer has no such option)."""
    if name == "eps" and row.eps_rule == "machine-epsilon":
        return "machine epsilon of the dtype"
    if name in row.defaults:
        value = row.defaults[name]
        return f"{value:g}" if isinstance(value, float) else str(value)
    return "required" if name in row.facts else "–"


def layer_conventions_section(data: RunData, summary: dict[str, Any], name: str) -> Section:
    """One normalization's conventions rows (other than BatchNorm's) with its measured default differences."""
    title = summary["normalizations"].get(name, {}).get("title", name)
    section = Section(_section_id("conventions", name), f"Conventions and measured default differences: {title}")
    rows = {r.framework: r for r in data.layer_conventions if r.normalization == name}
    if not rows:
        return Section(section.id, section.title, missing=f"no {title} conventions rows were recorded")
    frameworks = sorted(rows, key=sort_key)
    anchor = baseline().name
    spec_fields = [f for f in plugin(name).spec_type.__dataclass_fields__] if name in _plugins() else []
    fields = [f for f in spec_fields if any(f in r.defaults or f in r.facts for r in rows.values())]
    body = [[Cell("layer")] + [Cell(rows[fw].layer) for fw in frameworks]]
    for key in fields:
        values = {fw: _default_text(rows[fw], key) for fw in frameworks}
        ref = values.get(anchor)
        body.append([Cell(key)] + [
            text_cell(values[fw], status="differs" if fw != anchor and ref is not None and values[fw] != ref else None,
                      title=" ".join(x for x in (rows[fw].facts.get(key), rows[fw].citations.get(key)) if x) or None)
            for fw in frameworks])
    measured = summary["normalizations"].get(name, {}).get("measured", {})
    shown = display_name(anchor)
    for quantity in MEASURED + ("y", "dx"):
        cells = []
        for fw in frameworks:
            m = (measured.get(fw) or {}).get("vs_baseline", {}).get(quantity)
            cells.append(Cell("–") if m is None else Cell(
                fmt(m["scaled_err"]), "pass" if (m["worst_ratio"] or float("inf")) <= 1 else "differs",
                f"worst over the standard cases: {m['case']}; max |Δ| {fmt(m['max_abs_err'])}, "
                f"{fmt(m['worst_ratio'])}× the float tolerance"))
        if any(c.text != "–" for c in cells):
            body.append([Cell(f"{quantity} vs {shown}'s convention (max |Δ| / max |ref|)")] + cells)
    proof = []
    for fw in frameworks:
        m = measured.get(fw)
        ok = m and m["own_convention"]["of"] and m["own_convention"]["passed"] == m["own_convention"]["of"]
        proof.append(Cell("–") if not m else Cell(f"{m['own_convention']['passed']}/{m['own_convention']['of']}",
                                                 "pass" if ok else "fail"))
    body.append([Cell("defaults reproduce this row (gated comparisons)")] + proof)
    section.blocks.append(
        f"Each framework's {title} as a user who changes nothing gets it ({summary['conventions']['source']}; hover a "
        f"value for what it means and where the framework defines it). Coloured: a default that differs from "
        f"{shown}'s. The last rows are measured in defaults mode, against the reference in {shown}'s convention.")
    section.blocks.append(Table(["", *frameworks], body, row_class="kv"))
    facts = [f"{display_name(fw)}, {key}: {fact}" for fw in frameworks for key, fact in rows[fw].facts.items()
             if key not in fields]
    if facts:
        section.blocks.append(Bullets(facts))
    return section


def _model_cell(records: list[ModelComparison]) -> Cell:
    """'relative error · error/allowed' of the worst comparison (ratio first; inf/nan the worst), with the raw
    error and the scale it is relative to as hover text."""
    if not records:
        return Cell("–")
    w = worst(records)
    outside = sum(not r.passed for r in records)
    status = "pass" if outside == 0 else ("fail" if any(r.gate and not r.passed for r in records) else "differs")
    title = (f"worst: {w.quantity} ({w.variant}, dropout {w.dropout}): max |Δ| {fmt(w.max_abs_err)} against scale "
             f"{fmt(w.scale)}; {outside} of {len(records)} outside the tolerance; "
             f"{'gated' if w.gate else 'not gated'}")
    return Cell(f"{fmt(w.rel_err, '.1e')} · {fmt(w.worst_ratio)}", status, title)


def model_section(data: RunData, summary: dict[str, Any]) -> Section:
    section = Section("model-parity", "Model-level parity (AlexNet)")
    if data.model_parity is None:
        return Section(section.id, section.title, missing=data.parts["model_parity"].detail)
    m: ModelParitySummary = summary["model_parity"]
    records = data.model_parity.comparisons
    columns = sorted({(r.framework, r.dtype) for r in records}, key=lambda c: (c[1], sort_key(c[0])))
    anchor = m.anchor or ""
    body = []
    for against, kinds in (("reference", MODEL_KINDS["reference"]), (anchor, MODEL_KINDS["anchor"])):
        for kind in kinds:
            mine = [r for r in records if r.kind == kind and r.against == against]
            if mine:
                body.append([Cell(kind), Cell(against if against == "reference" else display_name(against))]
                            + [_model_cell([r for r in mine if (r.framework, r.dtype) == c]) for c in columns])
    versus = f" and against {display_name(anchor)}" if anchor else ""
    section.blocks.append(
        f"The same AlexNet (preset {m.preset}), weights, batches and dropout masks in every framework, against the "
        f"float64 NumPy reference{versus}. A cell: the worst relative error (max |Δ| / the quantity's scale) · its "
        "fraction of the allowed error, over variants and dropout modes (hover: the raw max |Δ| and the scale). "
        "float32 gradients and updates and the raw running variance are recorded, not gated.")
    section.blocks.append(Table(["quantity", "against", *[f"{display_name(fw)} {dt}" for fw, dt in columns]], body,
                                caption=f"{m.gated - m.failures}/{m.gated} gated comparisons pass."))
    for fw, reason in {**m.skipped, **m.errors}.items():
        section.blocks.append(f"{display_name(fw)} was not compared: {reason}")
    return section
