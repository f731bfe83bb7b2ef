"""The model-parity table: one row per quantity, one column per framework and dtype, the worst case in each cell."""

from __future__ import annotations

from collections.abc import Iterable

from bnparity.reference.alexnet import ARCH_PRESETS, alexnet_spec, param_shapes

Record = dict[str, object]
_FIRST = ("logits", "loss", "train_loss_step1", "train_loss_step2", "eval_loss")


def _row_order(records: list[Record]) -> dict[str, int]:
    """Whole-model quantities first, then the parameters in canonical order."""
    names = list(_FIRST)
    for preset in dict.fromkeys(str(r["preset"]) for r in records):
        if preset in ARCH_PRESETS:
            names += [n for n in param_shapes(alexnet_spec(preset, batch_norm=True)) if n not in names]
    return {n: i for i, n in enumerate(names)}


def _cell(records: list[Record]) -> str:
    """'3.1e-07 0.02' = the worst relative error (max_abs_err/scale) and its fraction of the tolerance."""
    if not records:
        return "-"
    worst = max(records, key=lambda r: (r.get("worst_ratio") is None, r.get("worst_ratio") or 0.0))
    ratio = worst.get("worst_ratio")
    scale = worst.get("scale") or 0.0
    err = worst.get("max_abs_err")
    rel = f"{err / scale:.1e}" if err is not None and scale else f"{err if err is not None else 'inf'}"
    flag = " FAIL" if not worst.get("passed") else ""
    return f"{rel} {ratio:.2f}{flag}" if ratio is not None else f"{rel} inf{flag}"


def format_table(records: Iterable[Record]) -> str:
    """Gated comparisons only; each cell is the worst over kinds, variants, dropout modes and references."""
    gated = [r for r in records if r.get("status") == "ok" and r.get("gate")]
    columns = sorted({(r["framework"], r["dtype"]) for r in gated}, key=lambda c: (c[1], c[0]))
    order = _row_order(gated)
    rows = sorted({str(r["quantity"]) for r in gated}, key=lambda q: (order.get(q, len(order)), q))
    header = ["quantity"] + [f"{fw} {dt}" for fw, dt in columns]
    body = [[q] + [_cell([r for r in gated if r["quantity"] == q and (r["framework"], r["dtype"]) == c])
                   for c in columns] for q in rows]
    widths = [max(len(row[i]) for row in [header, *body]) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)) for row in [header, *body]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def format_findings(records: Iterable[Record]) -> str:
    """One line per framework and kind of the ungated comparisons (float32 gradients, raw running var)."""
    lines = []
    ungated = [r for r in records if r.get("status") == "ok" and not r.get("gate")]
    for key in sorted({(r["framework"], r["dtype"], r["kind"]) for r in ungated}):
        group = [r for r in ungated if (r["framework"], r["dtype"], r["kind"]) == key]
        worst = max(group, key=lambda r: (r.get("max_abs_err") or 0.0) / (r.get("scale") or 1.0))
        rel = (worst.get("max_abs_err") or 0.0) / (worst.get("scale") or 1.0)
        outside = sum(1 for r in group if not r.get("passed"))
        lines.append(f"  {key[0]} {key[1]} {key[2]} vs {worst['against']}: worst relative error {rel:.1e} "
                     f"({worst['quantity']}, {worst['variant']}, dropout {worst['dropout']}); "
                     f"{outside}/{len(group)} outside the tolerance")
    return "\n".join(lines)
