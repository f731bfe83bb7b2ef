"""The report's parity sections: the layer-parity matrix, conventions, hard inputs, model-level parity."""

from __future__ import annotations

from typing import Any

from bnparity.suites.parity.summary import Cell as ParityCell
from bnparity.suites.parity.summary import cell_key

from .document import Bullets, Cell, Section, Table, fmt, text_cell
from .layer_summary import case_names, column_order, hard_case_findings, matrix, worst_record
from .load import RunData
from .summary import relative

_STATUS = {"pass": "pass", "FAIL": "fail", "differs": "differs", "skipped": "skipped", "error": "error"}
MODEL_ROWS = (("logits", "reference"), ("loss", "reference"), ("running_stats", "reference"),
              ("eval_loss", "reference"), ("logits", "torch"), ("loss", "torch"), ("loss_step2", "torch"),
              ("grad", "torch"), ("param_step1", "torch"), ("param_step2", "torch"), ("momentum", "torch"),
              ("running_stats", "torch"), ("running_var_raw", "torch"))


def _parity_cell(cell: ParityCell | None, records: list[dict[str, Any]], case: str, column: str) -> Cell:
    """'max |Δ| · error/allowed' of the worst comparison, coloured, with the details as hover text."""
    if cell is None:
        return Cell("")
    if cell.status in ("skipped", "error"):
        return Cell(cell.status, _STATUS[cell.status], cell.reason)
    r = worst_record([x for x in records if x.get("case") == case and cell_key(x)[1] == column
                      and x.get("quantity") == cell.worst_quantity]) or {}
    title = (f"worst quantity {cell.worst_quantity}: max |got − ref| {fmt(r.get('max_abs_err'))}, max relative "
             f"{fmt(r.get('max_rel_err'))}, {r.get('n_mismatched')} of {r.get('n_total')} elements outside; "
             f"allowed atol {fmt(r.get('atol'))} + rtol {fmt(r.get('rtol'))}·|ref|")
    return Cell(f"{fmt(cell.max_abs_err, '.1e')} · {fmt(cell.worst_ratio)}", _STATUS[cell.status], title)


def _case_matrix(data: RunData, cases: list[str], notes: dict[str, str], caption: str, *,
                 mode: str = "matched") -> Table:
    records = [r for r in data.parity["records"] if r.get("mode") == mode
               and r.get("reference") in (None, "matched", "own-convention")]
    columns, table = matrix(records, cases, mode=mode)
    rows = [[Cell(case, title=notes.get(case) or None)]
            + [_parity_cell(table.get((case, col)), records, case, col) for col in columns] for case in cases]
    return Table(["case", *columns], rows, caption=caption)


def layer_section(data: RunData, summary: dict[str, Any]) -> Section:
    section = Section("layer-parity", "Layer parity matrix")
    if data.parity is None:
        return Section(section.id, section.title, missing=data.parts["parity"].detail)
    notes = {c["name"]: c.get("note", "") for c in data.parity["meta"].get("cases", [])}
    s = summary["layer_parity"]
    section.blocks.append(
        "Every standard case (the gate) through every implementation in matched semantics, compared with the float64 "
        "reference. A cell shows the worst comparison over y, dx, dγ, dβ, the running statistics and y_eval: its "
        "largest absolute error · its error as a fraction of the allowed error (≤ 1 passes). Hover for details.")
    section.blocks.append(_case_matrix(data, case_names(data.parity, gate=True), notes,
                                       f"{s['standard_cases']} standard cases; {s['gated_comparisons']} gated "
                                       f"comparisons, {s['gate_failures']} failures."))
    for col, reason in s["unavailable"].items():
        section.blocks.append(f"{col} was not run: {reason}")
    return section


def hard_section(data: RunData, summary: dict[str, Any]) -> Section:
    section = Section("hard-inputs", "Hard-input findings")
    if data.parity is None:
        return Section(section.id, section.title, missing=data.parts["parity"].detail)
    hard = case_names(data.parity, gate=False)
    if not hard:
        return Section(section.id, section.title, ["This run has no hard-input cases (bnparity parity --no-hard)."])
    notes = {c["name"]: c.get("note", "") for c in data.parity["meta"].get("cases", [])}
    h = summary["hard_inputs"]
    section.blocks.append(f"Inputs that separate a careful implementation from a naive one. Findings, never a gate: "
                          f"{h['inside']} results inside the tolerance model, {h['outside']} outside, "
                          f"{h['errors']} errors.")
    section.blocks.append(Bullets(hard_case_findings(h)))
    section.blocks.append(_case_matrix(data, hard, notes, "Matched semantics (every implementation configured "
                                       "alike). Cells as in the layer parity matrix."))
    d = summary["hard_inputs_defaults"]
    if d and d["findings"]:
        section.blocks.append(f"The builtin layers as shipped (defaults mode, against the reference in each "
                              f"framework's own convention): {d['inside']} inside, {d['outside']} outside, "
                              f"{d['errors']} errors.")
        section.blocks.append(Bullets(hard_case_findings(d)))
        section.blocks.append(_case_matrix(data, hard, notes, "Defaults mode: each framework's own layer with its "
                                           "own defaults (e.g. Flax's E[x²] − E[x]² variance).", mode="defaults"))
    return section


def conventions_section(data: RunData, summary: dict[str, Any]) -> Section:
    section = Section("conventions", "Conventions and measured default differences")
    rows = {r["framework"]: r for r in data.conventions}
    frameworks = list(rows)
    conv = {r["framework"]: r for r in summary["conventions"]["frameworks"]}
    fields = [("layer", "layer"), ("momentum", "momentum (default)"), ("momentum_weighs", "momentum weighs"),
              ("new_weight", "weight of the new batch"), ("eps", "ε"), ("running_var", "running variance stored"),
              ("channel_axis", "channel axis"), ("variance_algorithm", "σ²_B algorithm"),
              ("train_eval_switch", "train/eval switch"), ("scale_switch", "turning γ off"),
              ("running_stats_written", "running statistics written")]
    body = []
    for key, label in fields:
        values = {fw: conv[fw].get(key, rows[fw].get(key)) for fw in frameworks}
        ref = values.get("torch")
        body.append([Cell(label)] + [
            text_cell(f"{values[fw]:g}" if isinstance(values[fw], float) else values[fw],
                      status="differs" if fw != "torch" and ref is not None and values[fw] != ref
                      and key not in ("layer", "train_eval_switch", "scale_switch", "running_stats_written") else None,
                      title=rows[fw].get("citations", {}).get(key)) for fw in frameworks])
    for quantity in ("running_mean", "running_var", "y_eval"):
        cells = []
        for fw in frameworks:
            m = (conv[fw].get("measured") or {}).get("vs_torch", {}).get(quantity)
            cells.append(Cell("–") if m is None else Cell(
                fmt(m["scaled_err"]), "pass" if (m["worst_ratio"] or float("inf")) <= 1 else "differs",
                f"worst over the standard cases: {m['case']}; max |Δ| {fmt(m['max_abs_err'])}, "
                f"{fmt(m['worst_ratio'])}× the float tolerance"))
        body.append([Cell(f"{quantity} vs PyTorch's convention (max |Δ| / max |ref|)")] + cells)
    proof = []
    for fw in frameworks:
        m = conv[fw].get("measured")
        ok = m and m["own_convention"]["of"] and m["own_convention"]["passed"] == m["own_convention"]["of"]
        proof.append(Cell("–") if not m else Cell(f"{m['own_convention']['passed']}/{m['own_convention']['of']}",
                                                 "pass" if ok else "fail"))
    body.append([Cell("defaults reproduce this row (gated comparisons)")] + proof)
    section.blocks.append(
        f"Each framework's BatchNorm as a user who changes nothing gets it ({summary['conventions']['source']}; "
        "hover a value for where the framework defines it). Coloured: a default that differs from PyTorch's. The "
        "last rows are measured in defaults mode: each framework's own layer after the case's training steps, "
        "against the reference in PyTorch's convention — the difference a porter who keeps the defaults sees.")
    section.blocks.append(Table(["", *frameworks], body, row_class="kv"))
    return section


def _model_cell(records: list[dict[str, Any]]) -> Cell:
    if not records:
        return Cell("–")
    worst = max(records, key=lambda r: (r.get("worst_ratio") is None, r.get("worst_ratio") or 0.0))
    outside = sum(not r.get("passed") for r in records)
    gated = bool(worst.get("gate"))
    status = "pass" if outside == 0 else ("fail" if any(r.get("gate") and not r.get("passed") for r in records)
                                          else "differs")
    title = (f"worst: {worst.get('quantity')} ({worst.get('variant')}, dropout {worst.get('dropout')}); "
             f"{outside} of {len(records)} outside the tolerance; {'gated' if gated else 'not gated'}")
    return Cell(f"{fmt(relative(worst), '.1e')} · {fmt(worst.get('worst_ratio'))}", status, title)


def model_section(data: RunData, summary: dict[str, Any]) -> Section:
    section = Section("model-parity", "Model-level parity (AlexNet)")
    if data.model_parity is None:
        return Section(section.id, section.title, missing=data.parts["model_parity"].detail)
    records = [r for r in data.model_parity.get("records", []) if r.get("status") == "ok"]
    columns = sorted({(r["framework"], r["dtype"]) for r in records}, key=lambda c: (c[1], column_order(c[0] + "/")))
    body = []
    for kind, against in MODEL_ROWS:
        mine = [r for r in records if r.get("kind") == kind and r.get("against") == against]
        if mine:
            body.append([Cell(kind), Cell(against)]
                        + [_model_cell([r for r in mine if (r["framework"], r["dtype"]) == c]) for c in columns])
    m = summary["model_parity"]
    section.blocks.append(
        f"The same AlexNet (preset {m['preset']}), weights, batches and dropout masks in every framework, against the "
        "float64 NumPy reference and against PyTorch. A cell: the worst relative error (max |Δ| / the quantity's "
        "scale) · its fraction of the allowed error, over variants and dropout modes. float32 gradients and updates "
        "and the raw running variance are recorded, not gated.")
    section.blocks.append(Table(["quantity", "against", *[f"{fw} {dt}" for fw, dt in columns]], body,
                                caption=f"{m['gated'] - m['failures']}/{m['gated']} gated comparisons pass."))
    for fw, reason in {**m["skipped"], **m["errors"]}.items():
        section.blocks.append(f"{fw} was not compared: {reason}")
    return section
