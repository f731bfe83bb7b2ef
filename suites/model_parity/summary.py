"""The model-parity table: one row per quantity, one column per framework and dtype, the worst case in each cell."""

from __future__ import annotations

from collections.abc import Iterable

from bnparity.frameworks.registry import sort_key
from bnparity.reference.alexnet import ARCH_PRESETS, VARIANT_NORMS, param_shapes, variant_spec
from bnparity.suites.schema import ModelComparison, ModelRecord

_FIRST = ("logits", "loss", "train_loss_step1", "train_loss_step2", "eval_loss")


def _row_order(records: list[ModelComparison]) -> dict[str, int]:
    """Whole-model quantities first, then the parameters in canonical order (a GN layer's next to its BN)."""
    names = list(_FIRST)
    for preset in dict.fromkeys(r.preset for r in records):
        if preset not in ARCH_PRESETS:
            continue
        for variant in VARIANT_NORMS:
            following = None  # the next name of this variant's, to insert before
            for n in reversed(param_shapes(variant_spec(preset, variant))):
                if n not in names:
                    names.insert(names.index(following) if following else len(names), n)
                following = n
    return {n: i for i, n in enumerate(names)}


def worst(records: Iterable[ModelComparison]) -> ModelComparison:
    """The record closest to (or furthest past) its tolerance; an inf or nan error (ratio null) is the worst."""
    return max(records, key=lambda r: (r.worst_ratio is None, r.worst_ratio or 0.0))


def _cell(records: list[ModelComparison]) -> str:
    """'3.1e-07 0.02' = the worst relative error (max_abs_err/scale) and its fraction of the tolerance."""
    if not records:
        return "-"
    w = worst(records)
    rel = "inf" if w.rel_err is None else f"{w.rel_err:.1e}"
    flag = " FAIL" if not w.passed else ""
    return f"{rel} {w.worst_ratio:.2f}{flag}" if w.worst_ratio is not None else f"{rel} inf{flag}"


def format_table(records: Iterable[ModelRecord]) -> str:
    """Gated comparisons only; each cell is the worst over kinds, variants, dropout modes and references."""
    gated = [r for r in records if isinstance(r, ModelComparison) and r.gate]
    columns = sorted({(r.framework, r.dtype) for r in gated}, key=lambda c: (c[1], sort_key(c[0])))
    order = _row_order(gated)
    rows = sorted({r.quantity for r in gated}, key=lambda q: (order.get(q, len(order)), q))
    header = ["quantity"] + [f"{fw} {dt}" for fw, dt in columns]
    body = [[q] + [_cell([r for r in gated if r.quantity == q and (r.framework, r.dtype) == c]) for c in columns]
            for q in rows]
    widths = [max(len(row[i]) for row in [header, *body]) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)) for row in [header, *body]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def format_findings(records: Iterable[ModelRecord]) -> str:
    """One line per framework and kind of the ungated comparisons (float32 gradients, raw running var)."""
    lines = []
    ungated = [r for r in records if isinstance(r, ModelComparison) and not r.gate]
    for key in sorted({(r.framework, r.dtype, r.kind) for r in ungated}, key=lambda k: (sort_key(k[0]), k[1:])):
        group = [r for r in ungated if (r.framework, r.dtype, r.kind) == key]
        w = max(group, key=lambda r: r.rel_err if r.rel_err is not None else float("inf"))
        rel = "inf" if w.rel_err is None else f"{w.rel_err:.1e}"
        outside = sum(1 for r in group if not r.passed)
        lines.append(f"  {key[0]} {key[1]} {key[2]} vs {w.against}: worst relative error {rel} "
                     f"({w.quantity}, {w.variant}, dropout {w.dropout}); {outside}/{len(group)} outside the tolerance")
    return "\n".join(lines)
