"""summary.json: every conclusion of a run directory, computed from its records, with one-paragraph verdicts."""

from __future__ import annotations

import datetime as dt
from typing import Any

from .layer_summary import (
    FRAMEWORK_ORDER,
    hard_inputs,
    hard_verdict,
    layer_parity,
    layer_verdict,
    measured_defaults,
)
from .load import RunData

FORMAT = "bnparity-report/1"
# registry fields a porter must change, in the order the conventions table shows them
CONVENTION_FIELDS = ("momentum", "momentum_weighs", "new_weight", "eps", "running_var", "channel_axis",
                     "variance_algorithm")


def _new_weight(row: dict[str, Any]) -> float:
    """The weight of the new batch statistic (rounded: 1 − 0.9 is 0.09999999999999998 in binary)."""
    return round(row["momentum"] if row["momentum_weighs"] == "new" else 1.0 - row["momentum"], 12)


def conventions(data: RunData) -> dict[str, Any]:
    """The registry rows (as recorded) with the measured defaults-mode differences from PyTorch's convention."""
    measured = measured_defaults(data.parity) if data.parity else {}
    rows = []
    for row in data.conventions:
        entry = {k: row.get(k) for k in CONVENTION_FIELDS if k != "new_weight"}
        entry["framework"], entry["new_weight"] = row["framework"], _new_weight(row)
        entry["measured"] = measured.get(row["framework"])
        rows.append(entry)
    return {"source": data.conventions_source, "frameworks": rows}


def conventions_verdict(s: dict[str, Any]) -> str:
    """Which defaults differ from PyTorch's, and by how much they change the running statistics (measured)."""
    rows = {r["framework"]: r for r in s["frameworks"]}
    torch = rows.get("torch")
    if torch is None:
        return ""
    parts = []
    for name, row in rows.items():
        if name == "torch":
            continue
        diffs = []
        if row["momentum_weighs"] != torch["momentum_weighs"] or row["new_weight"] != torch["new_weight"]:
            same = "the same as" if row["new_weight"] == torch["new_weight"] else "unlike"
            diffs.append(f"momentum {row['momentum']:g} weighs the {row['momentum_weighs']} value, i.e. PyTorch's "
                         f"momentum {row['new_weight']:g} ({same} PyTorch's default {torch['new_weight']:g})")
        diffs += [f"{label} {row[k]} (torch {torch[k]})" for k, label in
                  (("running_var", "running variance"), ("channel_axis", "channel axis"),
                   ("variance_algorithm", "variance algorithm"), ("eps", "eps")) if row[k] != torch[k]]
        text = f"{name}: " + (", ".join(diffs) if diffs else "same as torch")
        m = row.get("measured")
        if m:
            own = m["own_convention"]
            text += f"; its defaults reproduce its registry row in {own['passed']}/{own['of']} comparisons"
            moved = [f"{q} by up to {w['scaled_err']:.2g}" for q, w in m["vs_torch"].items()
                     if w and w["scaled_err"] is not None and (w["worst_ratio"] or 0) > 1]
            if moved:
                text += ("; left at its defaults it differs from PyTorch's convention in " + ", ".join(moved)
                         + " (max |Δ| / max |ref|, standard cases)")
        parts.append(text)
    return "Conventions (each framework's defaults vs PyTorch's): " + "; ".join(parts) + "."


def model_parity(doc: dict[str, Any]) -> dict[str, Any]:
    """Gated comparisons per framework × dtype, their worst relative error, and the ungated findings."""
    records = doc.get("records", [])
    ok = [r for r in records if r.get("status") == "ok"]
    skipped = {r["framework"]: r.get("reason") for r in records if r.get("status") == "skipped"}
    errors = {r["framework"]: r.get("reason") for r in records if r.get("status") == "error"}
    groups = []
    for key in sorted({(r["framework"], r["dtype"]) for r in ok}, key=lambda k: (k[1], k[0])):
        mine = [r for r in ok if (r["framework"], r["dtype"]) == key]
        gated = [r for r in mine if r.get("gate")]
        ungated = [r for r in mine if not r.get("gate")]
        worst = max(gated, key=lambda r: (r.get("worst_ratio") is None, r.get("worst_ratio") or 0.0), default=None)
        groups.append({"framework": key[0], "dtype": key[1], "gated": len(gated),
                       "failed": sum(not r.get("passed") for r in gated),
                       "worst_gated": None if worst is None else {
                           "kind": worst.get("kind"), "quantity": worst.get("quantity"),
                           "against": worst.get("against"), "rel_err": relative(worst),
                           "worst_ratio": worst.get("worst_ratio")},
                       "ungated": len(ungated), "ungated_outside": sum(not r.get("passed") for r in ungated),
                       "ungated_worst_rel_err": max((relative(r) or 0.0 for r in ungated), default=None)})
    gated = [r for r in records if r.get("gate")]
    failures = [r for r in gated if r.get("passed") is False]
    findings = []
    for kind, dtype in sorted({(r["kind"], r["dtype"]) for r in ok if not r.get("gate")}):
        mine = [r for r in ok if not r.get("gate") and (r["kind"], r["dtype"]) == (kind, dtype)]
        worst = max(mine, key=lambda r: relative(r) or 0.0)
        findings.append({"kind": kind, "dtype": dtype, "frameworks": _ordered({r["framework"] for r in mine}),
                         "outside": sum(not r.get("passed") for r in mine), "of": len(mine),
                         "worst_rel_err": relative(worst), "worst_quantity": worst.get("quantity"),
                         "worst_framework": worst.get("framework")})
    meta = doc.get("meta", {})
    return {"preset": meta.get("preset"), "frameworks": _ordered({g["framework"] for g in groups}),
            "gated": len(gated), "failures": len(failures), "all_pass": bool(gated) and not failures,
            "groups": groups, "ungated_findings": findings, "skipped": skipped, "errors": errors}


def _ordered(frameworks: set[str]) -> list[str]:
    known = [f for f in FRAMEWORK_ORDER if f in frameworks]
    return known + sorted(frameworks - set(known))


def relative(r: dict[str, Any]) -> float | None:
    """max_abs_err / scale: the relative error the model-parity tolerance is stated in."""
    err, scale = r.get("max_abs_err"), r.get("scale")
    if err is None:
        return None
    return err / scale if scale else err


def model_verdict(s: dict[str, Any]) -> str:
    who = ", ".join(s["frameworks"]) or "no framework"
    text = (f"Model parity (AlexNet preset {s['preset']}): {who} — {s['gated'] - s['failures']}/{s['gated']} gated "
            "comparisons pass" + ("." if s["all_pass"] else f"; {s['failures']} FAIL."))
    outside = [f for f in s["ungated_findings"] if f["outside"]]
    if outside:
        text += " Not gated, outside the tolerance: " + "; ".join(
            f"{f['kind']} {f['dtype']} ({', '.join(f['frameworks'])}) {f['outside']}/{f['of']}, worst relative error "
            f"{f['worst_rel_err']:.2g} ({f['worst_quantity']})" for f in outside) + "."
    for fw, reason in {**s["skipped"], **s["errors"]}.items():
        text += f" {fw} not compared: {reason}."
    return text


def training(data: RunData) -> dict[str, Any]:
    """The convergence suite's conclusions (bnparity.suites.convergence.conclusions), as summary.json keeps them."""
    c = data.conclusions or {}
    preset = (data.train_manifest or {}).get("preset", {})
    configs = [{k: cfg[k] for k in ("framework", "variant", "seeds", "seeds_done", "final_test_accuracy",
                                    "best_test_accuracy", "images_per_s")}
               | {"time_to_target": {t: {k: v for k, v in x.items() if k != "per_seed"}
                                     for t, x in cfg["targets"].items()}}
               for cfg in c.get("configs", [])]
    return {"preset": c.get("preset"), "epochs": preset.get("epochs"), "targets": c.get("targets", []),
            "complete": c.get("complete"), "configs": configs, "bn_speedup": c.get("bn_speedup", []),
            "agreement": c.get("agreement", {}), "incomplete": c.get("incomplete", []), "skipped": c.get("skipped", {})}


def _pct(t: float) -> str:
    return f"{100 * t:g}%"


def training_verdicts(s: dict[str, Any]) -> list[str]:
    """What BN buys per framework (time to accuracy, final accuracy) and whether the frameworks' curves agree."""
    out = []
    by_fw: dict[str, list[dict[str, Any]]] = {}
    for e in s["bn_speedup"]:
        by_fw.setdefault(e["framework"], []).append(e)
    for fw in _ordered(set(by_fw)):
        entries, said = by_fw[fw], []
        for e in entries:
            if e["speedup"] is not None:
                said.append(f"{_pct(e['target'])} test accuracy in {e['speedup']:.2f}× fewer iterations "
                            f"({e['iterations_bn']:.0f} vs {e['iterations_nobn']:.0f})")
            elif e["at_least"] is not None:
                said.append(f"{_pct(e['target'])} in at least {e['at_least']:.2f}× fewer iterations (without BN "
                            "never reached it)")
        if said:
            out.append(f"BN ({fw}): reaches " + "; ".join(said) + ".")
        else:
            out.append(f"BN ({fw}): no target accuracy was reached by both variants in every seed.")
    finals = {(c["framework"], c["variant"]): c["final_test_accuracy"] for c in s["configs"]}
    lines = []
    for fw in dict.fromkeys(c["framework"] for c in s["configs"]):
        bn, nobn = finals.get((fw, "bn")), finals.get((fw, "nobn"))
        if bn and nobn and bn["mean"] is not None and nobn["mean"] is not None:
            lines.append(f"{fw} {bn['mean']:.3f} with BN vs {nobn['mean']:.3f} without")
    if lines:
        n = max(c["final_test_accuracy"]["n"] for c in s["configs"])
        out.append(f"Final test accuracy after {s['epochs']} epochs (mean over up to {n} seed(s)): "
                   + "; ".join(lines) + ".")
    pairs = s["agreement"].get("pairs", [])
    if pairs:
        out.append("Training curves across frameworks (test accuracy): " + "; ".join(
            f"{p['variant']} {' vs '.join(p['frameworks'])} "
            + ("agree" if p["agree"] else f"differ at {p['outside']} of {p['points']} points")
            + f" (max |Δ| {p['max_abs_diff']:.3f})" for p in pairs) + ".")
    return out


def build_summary(data: RunData) -> dict[str, Any]:
    """summary.json of `data`: verdicts, counts, worst errors, time to accuracy, speed-ups, incomplete parts."""
    summary: dict[str, Any] = {
        "format": FORMAT, "run_dir": str(data.run_dir),
        "generated": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "complete": not data.incomplete,
        "incomplete": [{"part": p.part, "status": p.status, "detail": p.detail} for p in data.incomplete],
        "verdicts": [], "layer_parity": None, "hard_inputs": None, "hard_inputs_defaults": None,
        "conventions": conventions(data),
        "model_parity": None, "training": None}
    verdicts = summary["verdicts"]
    if data.parity is not None:
        summary["layer_parity"] = layer_parity(data.parity)
        summary["hard_inputs"] = hard_inputs(data.parity)
        summary["hard_inputs_defaults"] = hard_inputs(data.parity, mode="defaults")
        verdicts.append(layer_verdict(summary["layer_parity"]))
    if summary["conventions"]["frameworks"]:
        text = conventions_verdict(summary["conventions"])
        if text:
            verdicts.append(text)
    for key in ("hard_inputs", "hard_inputs_defaults"):
        if summary[key] and summary[key]["findings"]:
            verdicts.append(hard_verdict(summary[key]))
    if data.model_parity is not None:
        summary["model_parity"] = model_parity(data.model_parity)
        verdicts.append(model_verdict(summary["model_parity"]))
    if data.conclusions is not None:
        summary["training"] = training(data)
        verdicts.extend(training_verdicts(summary["training"]))
    if data.incomplete:
        verdicts.insert(0, "INCOMPLETE: " + "; ".join(f"{p.part} {p.status} ({p.detail})" for p in data.incomplete))
    return summary
