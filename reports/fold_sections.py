"""The report's section on folding BatchNorm for inference, from fold.json (bnparity fold) when the run has one."""

from __future__ import annotations

from bnparity.frameworks.registry import display_name, sort_key
from bnparity.suites.fold.records import FoldComparison

from .document import Bullets, Cell, Section, Table, fmt, text_cell
from .load import RunData

SECTION_ID = "fold"
TITLE = "Folding BN for inference"


def fold_section(data: RunData) -> list[Section]:
    """The section, or none for a run directory without a fold part (one from before the fold step)."""
    if "fold" not in data.parts:
        return []
    if data.fold is None:
        return [Section(SECTION_ID, TITLE, missing=data.parts["fold"].detail)]
    doc = data.fold
    section = Section(SECTION_ID, TITLE)
    section.blocks.append(
        "In eval mode a BatchNorm after a convolution or dense layer is a fixed per-channel affine map, so it can be "
        "folded into the layer: W' = s·W, b' = s·(b − μ) + β with s = γ/√(σ² + ε). Each framework's own fold "
        "(where it has one) and bnparity's written in its ops ran on the cases porters report breaking, and were "
        "compared with the unfolded layer + BatchNorm in float64. A cell is the worst error / allowed error over "
        "the class's cases (y of the folded and of the unfolded layer, the folded weights and bias); the allowed "
        f"error is a forward error bound, c = {doc.meta.tolerance_c:g} times u·(K·|W'|∗|x| + ...), which grows with "
        "|s| through the folded weights (suites/fold/tolerance.py).")
    groups: dict[tuple[str, str], dict[str, list[FoldComparison]]] = {}
    classes: list[str] = []
    for c in doc.comparisons:
        groups.setdefault((c.framework, c.impl), {}).setdefault(c.case_class, []).append(c)
        if c.case_class not in classes:
            classes.append(c.case_class)
    rows = []
    for (framework, impl), by_class in sorted(groups.items(), key=lambda kv: (sort_key(kv[0][0]), kv[0][1])):
        cells = [Cell(display_name(framework)), Cell(impl)]
        for cls in classes:
            found = by_class.get(cls, [])
            if not found:
                cells.append(text_cell(None))
                continue
            worst = max(r.worst_ratio for r in found)
            failed = sum(not r.passed for r in found)
            cells.append(Cell(fmt(worst), status="fail" if failed else "pass",
                              title=f"{len(found) - failed}/{len(found)} cases pass; dtypes "
                                    f"{', '.join(sorted({r.dtype for r in found}))}"))
        rows.append(cells)
    n = len(doc.comparisons)
    passed = sum(r.passed for r in doc.comparisons)
    if rows:
        section.blocks.append(Table(["framework", "fold", *classes], rows,
                                    caption=f"{passed}/{n} layer cases pass (worst error / allowed per class)."))
    nets = doc.networks
    if nets:
        body = [[Cell(display_name(r.framework)), Cell(r.impl), Cell(f"{r.run} (epoch {r.epoch})"),
                 Cell(fmt(r.max_logit_error), title=f"allowed {r.allowed_logit_error:.2g}"),
                 Cell(fmt(r.logit_scale, ".3g")), Cell(f"{r.accuracy_unfolded:.4f}"), Cell(f"{r.accuracy_folded:.4f}"),
                 text_cell(r.argmax_changes, status="pass" if r.argmax_changes == 0 else "fail"),
                 Cell("pass" if r.passed else "FAIL", status="pass" if r.passed else "fail")]
                for r in sorted(nets, key=lambda r: sort_key(r.framework))]
        first = nets[0]
        section.blocks.append(Table(
            ["framework", "fold", "trained network", "max |folded − unfolded| logit", "max |logit|",
             "accuracy unfolded", "accuracy folded", "changed predictions", "verdict"], body,
            caption=f"Each framework's trained BN AlexNet folded and evaluated in {first.dtype} on "
                    f"{first.test_images} test images; the float64 reference agrees with both to "
                    f"{fmt(max(max(r.max_logit_error_folded_ref, r.max_logit_error_unfolded_ref) for r in nets))} "
                    f"on the first {first.reference_images}."))
    notes = [f"{display_name(s.framework)} {s.impl}{'' if s.case is None else ' ' + s.case} {s.status}: {s.reason}"
             for s in doc.skips if s.case is None or s.case == "alexnet"]
    layer_skips = [s for s in doc.skips if s.case not in (None, "alexnet")]
    reasons: dict[tuple[str, str], int] = {}
    for s in layer_skips:
        reasons[(s.framework, s.reason)] = reasons.get((s.framework, s.reason), 0) + 1
    notes += [f"{display_name(fw)} skipped {k} case{'s' if k != 1 else ''}: {reason}"
              for (fw, reason), k in reasons.items()]
    for r in nets:
        if r.argmax_changes:
            notes.append(f"{display_name(r.framework)}: {r.argmax_changes} predictions changed by folding, on "
                         f"margins {', '.join(f'{m:.2g}' for m in r.flip_margins)}")
    if notes:
        section.blocks.append(Bullets(notes))
    return [section]
