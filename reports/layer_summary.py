"""Conclusions of a layer-parity record file: the gate per implementation, the hard-input findings, conventions."""

from __future__ import annotations

from typing import Any

from bnparity.suites.parity.summary import Cell, cell_key, cells, gate_failures

Record = dict[str, Any]
FRAMEWORK_ORDER = ("torch", "mxnet", "jax")
IMPL_ORDER = ("builtin", "scratch")
MEASURED = ("running_mean", "running_var", "y_eval")


def column_order(column: str) -> tuple[int, int, str]:
    """Sort key of a 'framework/impl[ vs reference]' column: frameworks in FRAMEWORK_ORDER, builtin first."""
    framework, _, rest = column.partition("/")
    impl = rest.split(" ")[0]
    return (FRAMEWORK_ORDER.index(framework) if framework in FRAMEWORK_ORDER else len(FRAMEWORK_ORDER),
            IMPL_ORDER.index(impl) if impl in IMPL_ORDER else len(IMPL_ORDER), column)


def ratio_of(r: Record) -> float:
    """error / allowed of a record; inf when the error is inf or nan (recorded as null)."""
    value = r.get("worst_ratio")
    return float("inf") if value is None else float(value)


def worst_record(records: list[Record]) -> Record | None:
    """The "ok" record with the largest error/allowed ratio (the one a table cell shows), or None."""
    ok = [r for r in records if r.get("status") == "ok"]
    return max(ok, key=ratio_of) if ok else None


def scaled_error(r: Record) -> float | None:
    """max |got − ref| / the quantity's scale (its largest |ref| for outputs and running statistics).

    The tolerance model sets atol = rtol · scale, so the scale is atol / rtol. Unlike max_rel_err, this does not
    blow up on an element whose reference is near zero. None when the error is inf or nan.
    """
    err, atol, rtol = r.get("max_abs_err"), r.get("atol"), r.get("rtol")
    if err is None:
        return None
    return err * rtol / atol if atol and rtol else err


def brief(r: Record | None) -> dict[str, Any] | None:
    """The numbers of one comparison, for summary.json."""
    if r is None:
        return None
    return {"case": r.get("case"), "framework": r.get("framework"), "impl": r.get("impl"),
            "quantity": r.get("quantity"), "max_abs_err": r.get("max_abs_err"), "max_rel_err": r.get("max_rel_err"),
            "scaled_err": scaled_error(r), "worst_ratio": r.get("worst_ratio"), "atol": r.get("atol"),
            "rtol": r.get("rtol")}


def case_names(doc: dict[str, Any], *, gate: bool) -> list[str]:
    """The gated (standard) or ungated (hard) case names in the file's order, from its meta or its records."""
    listed = doc.get("meta", {}).get("cases")
    if listed:
        return [c["name"] for c in listed if bool(c.get("gate")) == gate]
    return list(dict.fromkeys(r["case"] for r in doc.get("records", [])
                              if r.get("case") is not None and bool(r.get("gate")) == gate))


def matrix(records: list[Record], cases: list[str], *,
           mode: str = "matched") -> tuple[list[str], dict[tuple[str, str], Cell]]:
    """(columns, cells) of `mode` records restricted to `cases`: the worst record per case × column.

    In defaults mode only the comparisons with each framework's own convention count (the layer as shipped).
    """
    wanted = set(cases)
    mine = [r for r in records if r.get("mode") == mode and r.get("case") in wanted
            and r.get("reference") in (None, "matched", "own-convention")]
    table = cells(mine)
    columns = sorted({col for _, col in table}, key=column_order)
    return columns, table


def _fmt(value: float | None, spec: str = ".1e") -> str:
    return "inf/nan" if value is None else format(value, spec)


def layer_parity(doc: dict[str, Any]) -> dict[str, Any]:
    """The gate: per implementation how many standard cases pass, fail, are skipped; the worst comparisons."""
    records = doc.get("records", [])
    matched = [r for r in records if r.get("mode") == "matched"]
    standard = case_names(doc, gate=True)
    columns, table = matrix(matched, standard)
    unavailable = {f"{r['framework']}/{r['impl']}": r.get("reason") for r in matched if r.get("case") is None}
    per_column = []
    for col in columns:
        mine = [(case, table[(case, col)]) for case in standard if (case, col) in table]
        status = {case: cell.status for case, cell in mine}
        ok_records = [r for r in matched if r.get("gate") and r.get("case") is not None and cell_key(r)[1] == col]
        worst = {dtype: brief(worst_record([r for r in ok_records if r.get("dtype") == dtype]))
                 for dtype in ("float32", "float64")}
        per_column.append({
            "column": col, "cases": len(standard),
            "passed": sum(s == "pass" for s in status.values()),
            "failed_cases": [c for c, s in status.items() if s in ("FAIL", "error")],
            "skipped_cases": {c: cell.reason for c, cell in mine if cell.status == "skipped"},
            "not_run": [c for c in standard if c not in status],
            "worst": worst})
    gated = [r for r in matched if r.get("gate") and r.get("status") in ("ok", "error")]
    failures = gate_failures(matched)
    worst = {dtype: brief(worst_record([r for r in matched if r.get("gate") and r.get("dtype") == dtype]))
             for dtype in ("float32", "float64")}
    frameworks = list(dict.fromkeys(c.split("/")[0] for c in columns))
    return {"frameworks": frameworks, "standard_cases": len(standard), "columns": per_column,
            "unavailable": unavailable, "gated_comparisons": len(gated), "gate_failures": len(failures),
            "all_pass": bool(gated) and not failures, "worst": worst}


def layer_verdict(s: dict[str, Any]) -> str:
    """One paragraph: who agrees with the reference on how many standard cases, and the worst errors."""
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
    text = (f"Layer parity (matched semantics): {head} — {'; '.join(parts)}; "
            f"{s['gated_comparisons'] - s['gate_failures']}/{s['gated_comparisons']} gated comparisons pass.")
    for dtype, w in s["worst"].items():
        if w is not None:
            text += (f" Worst {dtype} comparison: {_fmt(w['max_abs_err'])} absolute error ({w['framework']}/"
                     f"{w['impl']}, {w['quantity']} of {w['case']}), {_fmt(w['worst_ratio'], '.2g')} of its tolerance.")
    for col, reason in s["unavailable"].items():
        text += f" {col} not run: {reason}."
    return text


def hard_inputs(doc: dict[str, Any], *, mode: str = "matched") -> dict[str, Any]:
    """Per hard case and implementation: the worst comparison, and whether it is inside the tolerance model.

    mode "matched": every implementation configured alike; "defaults": the builtin layers as shipped, against
    the reference in their own convention.
    """
    records = [r for r in doc.get("records", []) if r.get("mode") == mode
               and r.get("reference") in (None, "matched", "own-convention")]
    hard = case_names(doc, gate=False)
    notes = {c["name"]: c.get("note", "") for c in doc.get("meta", {}).get("cases", [])}
    columns, table = matrix(records, hard, mode=mode)
    findings = []
    for case in hard:
        for col in columns:
            cell = table.get((case, col))
            if cell is None:
                continue
            framework, impl = col.split("/")
            chosen = worst_record([r for r in records if r.get("case") == case and cell_key(r)[1] == col
                                   and r.get("quantity") == cell.worst_quantity])
            entry = {"case": case, "note": notes.get(case, ""), "framework": framework, "impl": impl,
                     "status": cell.status, "inside_tolerance": {"pass": True, "differs": False}.get(cell.status),
                     "reason": cell.reason}
            entry.update({k: v for k, v in (brief(chosen) or {}).items() if k not in ("case", "framework", "impl")})
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
    judged = s["inside"] + s["outside"] + s["errors"]
    which = "layers as shipped, defaults mode" if s["mode"] == "defaults" else "matched semantics"
    return (f"Hard inputs ({which}; findings, not gated): {s['inside']} of {judged} case × implementation results "
            "are inside the tolerance model. " + " ".join(hard_case_findings(s))).strip()


def measured_defaults(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Per framework: the defaults-mode proof of its registry row and its measured difference from PyTorch's.

    Returns framework -> {"own_convention": {"passed", "of"}, "vs_torch": {quantity: worst comparison}}, over
    the standard cases (every framework's builtin layer with its own defaults).
    """
    standard = set(case_names(doc, gate=True))
    records = [r for r in doc.get("records", []) if r.get("mode") == "defaults" and r.get("case") in standard
               and r.get("status") == "ok"]
    out: dict[str, dict[str, Any]] = {}
    for framework in dict.fromkeys(r["framework"] for r in records):
        own = [r for r in records if r["framework"] == framework and r.get("reference") == "own-convention"]
        vs = [r for r in records if r["framework"] == framework and r.get("reference") == "torch-convention"]
        measured = {}
        for quantity in MEASURED:
            rel = [r for r in vs if r["quantity"] == quantity]
            worst = max(rel, key=lambda r: (scaled_error(r) is None, scaled_error(r) or 0.0), default=None)
            measured[quantity] = brief(worst)
        out[framework] = {"own_convention": {"passed": sum(bool(r["passed"]) for r in own), "of": len(own)},
                          "vs_torch": measured,
                          "vs_torch_outside": sum(not r["passed"] for r in vs), "vs_torch_of": len(vs)}
    return out
