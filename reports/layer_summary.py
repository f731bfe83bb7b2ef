"""Conclusions of a layer-parity record file: the gate per implementation, the hard-input findings, conventions.

Every function reads a `ParityDoc` (suites/schema.py; `parity_of` accepts a parity.json's raw JSON too, of any
version `load_parity` reads) and returns the JSON-ready structures summary.json keeps.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from bnparity.frameworks.registry import sort_key
from bnparity.suites.parity.summary import Cell, cell_key, cells, gate_failures, gated
from bnparity.suites.schema import LayerComparison, LayerRecord, ParityDoc, load_parity

IMPL_ORDER = ("builtin", "scratch")
MEASURED = ("running_mean", "running_var", "y_eval")
# the training-mode outputs too: where a normalization without running statistics differs (BatchNorm's summary keeps
# MEASURED, as the first release's did)
MEASURED_DEFAULTS = ("y", "dx", *MEASURED)
DTYPES = ("float32", "float64")


def parity_of(doc: ParityDoc | Mapping[str, Any]) -> ParityDoc:
    """`doc` as a ParityDoc (a parity.json's JSON is loaded, and upgraded if it is of an older version)."""
    return doc if isinstance(doc, ParityDoc) else load_parity(doc)


def column_order(column: str) -> tuple[tuple[int, str], int, str]:
    """Sort key of a 'framework/impl[ vs reference]' column: frameworks in the registry's order, builtin first."""
    framework, _, rest = column.partition("/")
    impl = rest.split(" ")[0]
    return sort_key(framework), IMPL_ORDER.index(impl) if impl in IMPL_ORDER else len(IMPL_ORDER), column


def worst_record(records: Iterable[LayerRecord]) -> LayerComparison | None:
    """The comparison with the largest error/allowed ratio (the one a table cell shows), or None."""
    ok = [r for r in records if isinstance(r, LayerComparison)]
    return max(ok, key=lambda r: r.ratio) if ok else None


def brief(r: LayerComparison | None) -> dict[str, Any] | None:
    """The numbers of one comparison, for summary.json."""
    if r is None:
        return None
    return {"case": r.case, "framework": r.framework, "impl": r.impl, "quantity": r.quantity,
            "max_abs_err": r.max_abs_err, "max_rel_err": r.max_rel_err, "scaled_err": r.scaled_error,
            "worst_ratio": r.worst_ratio, "atol": r.atol, "rtol": r.rtol}


def judged(records: Iterable[LayerRecord], *, mode: str) -> list[LayerRecord]:
    """The records of `mode` that judge the layer itself (not the comparisons with the baseline's convention)."""
    return [r for r in records if r.mode == mode and not r.vs_baseline]


def matrix(records: Iterable[LayerRecord], cases: list[str], *,
           mode: str = "matched") -> tuple[list[str], dict[tuple[str, str], Cell]]:
    """(columns, cells) of `mode` records restricted to `cases`: the worst record per case × column.

    In defaults mode only the comparisons with each framework's own convention count (the layer as shipped).
    """
    wanted = set(cases)
    table = cells(r for r in judged(records, mode=mode) if r.case in wanted)
    columns = sorted({col for _, col in table}, key=column_order)
    return columns, table


def _fmt(value: float | None, spec: str = ".1e") -> str:
    return "inf/nan" if value is None else format(value, spec)


def layer_parity(doc: ParityDoc | Mapping[str, Any]) -> dict[str, Any]:
    """The gate: per implementation how many standard cases pass, fail, are skipped; the worst comparisons."""
    doc = parity_of(doc)
    matched = [r for r in doc.records if r.mode == "matched"]
    standard = doc.case_names(gate=True)
    columns, table = matrix(matched, standard)
    unavailable = {f"{r.framework}/{r.impl}": r.reason for r in doc.not_run if r.mode == "matched" and r.case is None}
    gate_ok = [r for r in matched if isinstance(r, LayerComparison) and r.gate]
    per_column = []
    for col in columns:
        mine = [(case, table[(case, col)]) for case in standard if (case, col) in table]
        status = {case: cell.status for case, cell in mine}
        ok_records = [r for r in gate_ok if cell_key(r)[1] == col]
        worst = {dtype: brief(worst_record(r for r in ok_records if r.dtype == dtype)) for dtype in DTYPES}
        per_column.append({
            "column": col, "cases": len(standard),
            "passed": sum(s == "pass" for s in status.values()),
            "failed_cases": [c for c, s in status.items() if s in ("FAIL", "error")],
            "skipped_cases": {c: cell.reason for c, cell in mine if cell.status == "skipped"},
            "not_run": [c for c in standard if c not in status],
            "worst": worst})
    n_gated, failures = gated(matched), gate_failures(matched)
    worst = {dtype: brief(worst_record(r for r in gate_ok if r.dtype == dtype)) for dtype in DTYPES}
    frameworks = list(dict.fromkeys(c.split("/")[0] for c in columns))
    return {"frameworks": frameworks, "standard_cases": len(standard), "columns": per_column,
            "unavailable": unavailable, "gated_comparisons": len(n_gated), "gate_failures": len(failures),
            "all_pass": bool(n_gated) and not failures, "worst": worst}


def layer_verdict(s: dict[str, Any], title: str | None = None) -> str:
    """One paragraph: who agrees with the reference on how many standard cases, and the worst errors (of one
    normalization, `title`, or of every normalization the records hold)."""
    n = s["standard_cases"]
    parts = []
    for c in s["columns"]:
        text = f"{c['column']} {c['passed']}/{n}"
        if c["skipped_cases"]:
            text += f" ({len(c['skipped_cases'])} skipped: {next(iter(c['skipped_cases'].values()))})"
        if c["failed_cases"]:
            text += f" (FAIL: {', '.join(c['failed_cases'])})"
        parts.append(text)
    who = ", ".join(s["frameworks"]) or "no framework"
    head = (f"{who} agree with the float64 reference on every standard case they run"
            if s["all_pass"] else f"{s['gate_failures']} gated comparisons FAIL")
    text = (f"Layer parity{f' of {title}' if title else ''} (matched semantics): {head} — {'; '.join(parts)}; "
            f"{s['gated_comparisons'] - s['gate_failures']}/{s['gated_comparisons']} gated comparisons pass.")
    for dtype, w in s["worst"].items():
        if w is not None:
            text += (f" Worst {dtype} comparison: {_fmt(w['max_abs_err'])} absolute error ({w['framework']}/"
                     f"{w['impl']}, {w['quantity']} of {w['case']}), {_fmt(w['worst_ratio'], '.2g')} of its tolerance.")
    for col, reason in s["unavailable"].items():
        text += f" {col} not run: {reason}."
    return text


def hard_inputs(doc: ParityDoc | Mapping[str, Any], *, mode: str = "matched") -> dict[str, Any]:
    """Per hard case and implementation: the worst comparison, and whether it is inside the tolerance model.

    mode "matched": every implementation configured alike; "defaults": the builtin layers as shipped, against
    the reference in their own convention.
    """
    doc = parity_of(doc)
    hard = doc.case_names(gate=False)
    notes = doc.notes()
    columns, table = matrix(doc.records, hard, mode=mode)
    findings = []
    for case in hard:
        for col in columns:
            cell = table.get((case, col))
            if cell is None:
                continue
            framework, impl = col.split("/")
            entry = {"case": case, "note": notes.get(case, ""), "framework": framework, "impl": impl,
                     "status": cell.status, "inside_tolerance": {"pass": True, "differs": False}.get(cell.status),
                     "reason": cell.reason}
            numbers = brief(cell.record) or {}
            entry.update({k: v for k, v in numbers.items() if k not in ("case", "framework", "impl")})
            findings.append(entry)
    return {"mode": mode, "cases": len(hard), "columns": columns, "findings": findings,
            "inside": sum(f["inside_tolerance"] is True for f in findings),
            "outside": sum(f["inside_tolerance"] is False for f in findings),
            "errors": sum(f["status"] == "error" for f in findings)}


def hard_case_findings(s: dict[str, Any]) -> list[str]:
    """One sentence per hard case with a result outside the tolerance model or an error."""
    by_case: dict[str, list[dict[str, Any]]] = {}
    for f in s["findings"]:
        if f["inside_tolerance"] is False or f["status"] == "error":
            by_case.setdefault(f["case"], []).append(f)
    out = []
    for case, items in by_case.items():
        outside = [f for f in items if f["status"] != "error"]
        text = f"{case} ({items[0]['note']}):" if items[0]["note"] else f"{case}:"
        if outside:
            worst = max(outside, key=lambda f: float("inf") if f["worst_ratio"] is None else f["worst_ratio"])
            size = (f"{worst['quantity']} has inf or nan where the float64 reference does not"
                    if worst["worst_ratio"] is None else
                    f"{worst['quantity']} off by up to {worst['max_abs_err']:.2g}, {worst['worst_ratio']:.3g}× the "
                    "allowed error")
            who = ", ".join(f"{f['framework']}/{f['impl']}" for f in outside)
            text += f" outside the tolerance for {who} ({size})"
        errors = [f for f in items if f["status"] == "error"]
        text += ";" if outside and errors else ""
        text += "; ".join(f" {f['framework']}/{f['impl']} raises {f['reason']}" for f in errors)
        out.append(text + ".")
    return out


def hard_verdict(s: dict[str, Any]) -> str:
    """One paragraph: how many hard-input results are inside the tolerance model; the others by case."""
    judged_ = s["inside"] + s["outside"] + s["errors"]
    which = "layers as shipped, defaults mode" if s["mode"] == "defaults" else "matched semantics"
    return (f"Hard inputs ({which}; findings, not gated): {s['inside']} of {judged_} case × implementation results "
            "are inside the tolerance model. " + " ".join(hard_case_findings(s))).strip()


def measured_defaults(doc: ParityDoc | Mapping[str, Any],
                      quantities: tuple[str, ...] = MEASURED) -> dict[str, dict[str, Any]]:
    """Per framework: the defaults-mode proof of its registry row and its measured difference from the baseline's.

    Returns framework -> {"own_convention": {"passed", "of"} (its gated comparisons), "vs_baseline": {quantity: worst
    comparison},
    "vs_baseline_outside", "vs_baseline_of"}, over the standard cases (every framework's builtin layer with its
    own defaults; the baseline framework is the file's meta.baseline).
    """
    doc = parity_of(doc)
    standard = set(doc.case_names(gate=True))
    records = [r for r in doc.comparisons if r.mode == "defaults" and r.case in standard]
    out: dict[str, dict[str, Any]] = {}
    for framework in dict.fromkeys(r.framework for r in records):
        mine = [r for r in records if r.framework == framework]
        own = [r for r in mine if r.reference == "own-convention" and r.gate]  # a case may be gated in one mode
        vs = [r for r in mine if r.vs_baseline]
        measured = {}
        for quantity in quantities:
            rel = [r for r in vs if r.quantity == quantity]
            worst = max(rel, key=lambda r: (r.scaled_error is None, r.scaled_error or 0.0), default=None)
            measured[quantity] = brief(worst)
        out[framework] = {"own_convention": {"passed": sum(r.passed for r in own), "of": len(own)},
                          "vs_baseline": measured,
                          "vs_baseline_outside": sum(not r.passed for r in vs), "vs_baseline_of": len(vs)}
    return out
