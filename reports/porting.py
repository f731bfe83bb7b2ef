"""docs/porting.md: how to make each framework's normalization layers match another's, each statement with its proof.

Run as ``python -m bnparity.reports.porting --parity PATH --out docs/porting.md`` (or ``bnparity report RUN_DIR
--porting PATH``). Reads the conventions registry (data, no framework) and a parity record file; the numbers
of the pitfall tables are computed here with the float64 reference.
"""

from __future__ import annotations

import argparse
import itertools
import sys
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from bnparity.frameworks.conventions import (
    Convention,
    LayerConvention,
    ReplicaConvention,
    all_conventions,
    all_layer_conventions,
    all_replica_conventions,
)
from bnparity.frameworks.registry import baseline, descriptors, display_name
from bnparity.reference.normalization import normalization as plugin
from bnparity.seeds.facts import TUTORIAL_FAULTS, TUTORIAL_LAYER
from bnparity.suites.environment import short_commit
from bnparity.suites.errors import UserError
from bnparity.suites.output import write_output
from bnparity.suites.parity.summary import cells
from bnparity.suites.records import read_json
from bnparity.suites.schema import (
    PARITY_FORMAT,
    Conclusions,
    DPParityDoc,
    FormatError,
    ParityDoc,
    PitfallsDoc,
    SyncParityDoc,
    load_conclusions,
    load_dp_parity,
    load_parity,
    load_pitfalls,
    load_sync_parity,
)

from .layer_summary import MEASURED, MEASURED_DEFAULTS, layer_parity, measured_defaults
from .porting_facts import ROOT, ProofRef, all_proofs, missing_tests, proof_refs, tutorial_pitfalls, variance_gap
from .porting_pairs import Side, argument, cell, layer_value, pair_section, sides
from .porting_replicas import replica_section

# (ModelLayout attribute, row label) of the model-level table
MODEL_ROWS = (("conv_kernel", "convolution kernel"), ("dense_weight", "Dense/Linear weight"), ("bn_params", "BN γ, β"),
              ("bn_stats", "BN running statistics"), ("activations", "activations"))
CONVENTIONS_HEADING = "## Conventions"


def proof(key: str, frameworks: Sequence[str] | None = None) -> str:
    """'Proved by <links>.' for statement `key`; with `frameworks`, only their own tests and the shared ones."""
    refs = proof_refs(key, all_conventions(), frameworks)
    return "Proved by " + ", ".join(ref.link() for ref in _unique(refs)) + "."


def _unique(refs: Iterable[ProofRef]) -> list[ProofRef]:
    """`refs` without repeats of the same test (several frameworks of one folder cite the same ones)."""
    return list({(r.file, r.name): r for r in refs}.values())


def _and(names: Sequence[str]) -> str:
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def _g(x: float) -> str:
    return f"{x:.2g}"


def _grouped(rows: Sequence[Convention | LayerConvention], text: Callable[[object], str],
             refs: Callable[[object], list[ProofRef]] | None = None) -> str:
    """'A, B: text [proofs]. C: other text [proofs].': the rows' texts, each said once for every framework it fits."""
    by: dict[str, list] = {}
    for r in rows:
        if text(r):
            by.setdefault(text(r), []).append(r)
    parts = []
    for said, members in by.items():
        links = _unique(ref for m in members for ref in refs(m)) if refs else []
        parts.append(f"{', '.join(display_name(m.framework) for m in members)}: {said.rstrip('.')}."
                     + (f" Proved by {', '.join(r.link() for r in links)}." if links else ""))
    return " ".join(parts)


def _own(key: str) -> Callable[[object], list[ProofRef]]:
    return lambda row: [ProofRef.parse(t, framework=row.framework) for t in row.proofs.get(key, ())]


def _layout(axis: int) -> str:
    return {1: "1 (NCHW)", -1: "-1 (NHWC)"}.get(axis, str(axis))


BN_ROWS: tuple[tuple[str, Callable[[Convention], str]], ...] = (
    ("momentum (what it weighs)", lambda c: f"{c.momentum:g} ({c.momentum_weighs})"),
    ("new-batch weight", lambda c: f"{c.new_weight:g}"),
    ("ε", lambda c: f"{c.eps:g}"),
    ("running variance stored", lambda c: c.running_var + (" (configurable)" if c.running_var_configurable else "")),
    ("channel axis", lambda c: _layout(c.channel_axis)),
    ("σ²_B algorithm", lambda c: c.variance_algorithm),
    ("running statistics written", lambda c: c.running_stats_written.split()[0] + " pass"),
    ("1-D batch of one", lambda c: c.batch_of_one),
)


def conventions_table(rows: Sequence[Convention], layer_rows: Sequence[LayerConvention]) -> list[str]:
    """The one conventions table: columns the frameworks, rows BatchNorm's conventions, then each other
    normalization's defaults (– where a framework has no such layer or default)."""
    frameworks = [r.framework for r in rows]
    lines = ["| | " + " | ".join(display_name(f) for f in frameworks) + " |", "|---|" + "---|" * len(frameworks),
             "| **BatchNorm** | " + " | ".join(f"`{cell(r.layer)}`" for r in rows) + " |"]
    lines += [f"| {label} | " + " | ".join(cell(value(r)) for r in rows) + " |" for label, value in BN_ROWS]
    for name in dict.fromkeys(r.normalization for r in layer_rows):
        mine = {r.framework: r for r in layer_rows if r.normalization == name}
        lines.append(f"| **{plugin(name).title}** | "
                     + " | ".join(f"`{cell(mine[f].layer)}`" if f in mine else "–" for f in frameworks) + " |")
        keys = list(dict.fromkeys(k for r in mine.values() for k in r.defaults))
        single = [k for k in keys if sum(layer_value(r, k) is not None for r in mine.values()) == 1]
        for key in (k for k in keys if k not in single):
            lines.append(f"| {key} | " + " | ".join(cell(layer_value(mine[f], key)) if f in mine else "–"
                                                   for f in frameworks) + " |")
        if single:  # defaults only one framework's layer has, in one row
            lines.append("| its own defaults | " + " | ".join(
                ", ".join(f"{k}={cell(mine[f].defaults[k])}" for k in single if f in mine and k in mine[f].defaults)
                or "–" for f in frameworks) + " |")
    return lines


def batchnorm_notes(rows: Sequence[Convention]) -> list[str]:
    """BatchNorm's conventions explained once for every pair, each with the tests that prove it."""
    fixed = [display_name(r.framework) for r in rows if not r.running_var_configurable]
    fast = [display_name(r.framework) for r in rows if r.variance_algorithm == "fast"]
    return [
        "- **BatchNorm momentum**: every framework applies r ← (1 − w)·r + w·batch; w is the momentum where it weighs "
        f"the new value and 1 − momentum where it weighs the old, so the same number means different layers. "
        f"{proof('momentum')}",
        f"- **BatchNorm ε**: as in the table, added to σ²_B inside the square root. {proof('eps')}",
        "- **BatchNorm running variance**: the normalization uses the biased σ²_B everywhere (training outputs "
        "agree); only the stored estimator differs" + (f", and no argument changes it in {_and(fixed)}" if fixed
                                                        else "")
        + ". After k steps of batches with m values per channel (N for a Dense layer, N·H·W after a convolution), "
        "new-batch weight w and initial value r₀ = 1: r' = a + (r − a)·factor with a = (1 − w)^k·r₀ (exact when "
        "every batch has the same m; once (1 − w)^k is negligible, r' = r·factor); the factor is (m−1)/m from "
        f"unbiased to biased, m/(m−1) back. {proof('running_var')}",
        f"- **BatchNorm channel axis**: a layout difference is a transpose of the input and back. "
        f"{proof('channel_axis')}",
        "- **BatchNorm σ²_B algorithm**: the fast E[x²] − E[x]²" + (f" ({_and(fast)})" if fast else "")
        + " equals the two-pass E[(x − μ)²] in exact arithmetic and loses precision where it cancels: data far "
        f"from zero relative to its spread (Measured). {proof('variance_algorithm')}",
        "- **BatchNorm running statistics written**: "
        + _grouped(rows, lambda r: r.running_stats_written, _own("running_stats_written")),
        "- **BatchNorm train/eval**: " + _grouped(rows, lambda r: r.train_eval_switch, _own("train_eval_switch")),
        "- **BatchNorm turning γ off**: " + _grouped(rows, lambda r: r.scale_switch, _own("scale_switch"))
        + f" {proof('scale_switch', ())}",
        f"- **BatchNorm 1-D batch of one**: σ²_B = 0 and m − 1 = 0. {proof('batch_of_one')}",
    ]


def layer_notes(layer_rows: Sequence[LayerConvention]) -> list[str]:
    """Each other normalization's facts, one line per fact, each text said once for every framework it fits."""
    lines = []
    for name in dict.fromkeys(r.normalization for r in layer_rows):
        mine = [r for r in layer_rows if r.normalization == name]
        lines.append(f"- **{plugin(name).title}**, as shipped: "
                     + _grouped(mine, lambda r: f"`{r.constructor}`" if r.constructor else ""))
        for key in dict.fromkeys(k for r in mine for k in r.facts):
            lines.append(f"- **{plugin(name).title} {key}**: "
                         + _grouped(mine, lambda r, k=key: r.facts.get(k, ""), _own(key)))
    return lines


def conventions_section(rows: Sequence[Convention], layer_rows: Sequence[LayerConvention],
                        groups: Sequence[Side]) -> list[str]:
    same = [g.name for g in groups if len(g.rows) > 1]
    return [CONVENTIONS_HEADING, "", *conventions_table(rows, layer_rows), "",
            *(["Identical conventions (every field of every normalization), so one pair section speaks for them: "
               + "; ".join(same) + ".", ""] if same else []),
            *batchnorm_notes(rows), *layer_notes(layer_rows)]


def _matched(column: dict) -> str:
    n = len(column["skipped_cases"])
    return f"{column['passed']}/{column['cases']}" + (f" ({n} not configurable)" if n else "")


def measured(doc: ParityDoc, conventions: Sequence[Convention]) -> list[str]:
    """What the parity run measured, every normalization in one table: configured alike (matched mode), and left
    at its defaults against the reference in the baseline's convention."""
    meta = doc.meta
    anchor = display_name(meta.baseline or baseline().name)
    quantities = MEASURED_DEFAULTS
    lines = [f"From the parity run of {meta.environment.time} (commit {short_commit(meta.environment.git_commit)}, "
             f"frameworks {', '.join(meta.frameworks)}). *Configured*: standard cases passed with each layer "
             f"configured as in this guide (matched mode). *Defaults*: each layer as shipped against the reference "
             f"in {anchor}'s convention, max |Δ| / max |ref| over the standard cases (– not compared); the last "
             f"column counts the comparisons that reproduce the framework's own registry row. {proof('matched')}", "",
             "| normalization | framework | configured | " + " | ".join(quantities) + " | own row reproduced |",
             "|---|---|---|" + "---|" * (len(quantities) + 1)]
    for name in doc.normalizations():
        part = doc.of_normalization(name)
        if not part.case_names(gate=True):
            continue
        columns = {c["column"].split("/")[0]: c for c in layer_parity(part)["columns"]
                   if c["column"].endswith("/builtin")}
        shown = MEASURED if name == Convention.normalization else quantities
        for fw, m in measured_defaults(part, shown).items():
            values = ["–" if (w := m["vs_baseline"].get(q)) is None or w["scaled_err"] is None else _g(w["scaled_err"])
                      for q in quantities]
            own = m["own_convention"]
            matched = _matched(columns[fw]) if fw in columns else "–"
            lines.append(f"| {plugin(name).title} | {display_name(fw)} | {matched} | " + " | ".join(values)
                         + f" | {own['passed']}/{own['of']} |")
    return lines + far_from_zero(doc.of_normalization(Convention.normalization), conventions)


def far_from_zero(doc: ParityDoc, conventions: Sequence[Convention]) -> list[str]:
    """The builtin BatchNorm layers on the offset hard cases, configured (matched) and at their defaults."""
    cases = [c for c in doc.case_names(gate=False) if "offset" in c]
    records = [r for r in doc.records if r.case in cases and r.impl == "builtin"
               and r.reference in ("matched", "own-convention")]
    if not records:
        return []
    switch = [f"`{argument(c.constructor, 'fast', '')}=False` in {display_name(c.framework)}" for c in conventions
              if c.variance_algorithm == "fast" and "{fast}" in c.constructor]
    columns = [(c, mode) for c in cases for mode in ("matched", "defaults")]
    lines = ["", "**BatchNorm on data far from zero** (hard cases, float32; a cell: largest error of the worst "
             "quantity, and its multiple of the allowed error; matched = configured as in this guide"
             + (f", i.e. {_and(switch)}" if switch else "") + "):", "",
             "| framework | " + " | ".join(f"{c.split('-')[-1]} {mode}" for c, mode in columns) + " |",
             "|---|" + "---|" * len(columns)]
    for fw in dict.fromkeys(r.framework for r in records):
        row = []
        for case, mode in columns:
            found = cells([r for r in records if r.framework == fw and r.mode == mode]).get((case, f"{fw}/builtin"))
            if found is None or found.status in ("skipped", "error"):
                row.append("–" if found is None else found.status)
            else:
                row.append(f"{_g(found.max_abs_err or float('inf'))} ({_g(found.worst_ratio or float('inf'))}×)")
        lines.append(f"| {display_name(fw)} | " + " | ".join(row) + " |")
    return lines + ["", proof("variance_algorithm")]


def model_level() -> list[str]:
    """How each framework stores the AlexNet (its descriptor's model_layout), and what a whole-model port needs."""
    frameworks = descriptors()
    table = ["| | " + " | ".join(d.display_name for d in frameworks) + " |", "|---|" + "---|" * len(frameworks)]
    table += [f"| {label} | " + " | ".join(getattr(d.model_layout, key) for d in frameworks) + " |"
              for key, label in MODEL_ROWS]
    return [
        *table, "",
        f"- Weights: convert with the transposes above; the same AlexNet then computes the same logits, losses, "
        f"gradients and updates in every framework. {proof('weights')}",
        "- Flatten order: flattening an NHWC feature map orders the features (h, w, c), an NCHW one (c, h, w). The "
        "first Dense layer after the flatten needs its input columns permuted (`dense_columns_chw_to_hwc` in "
        "`reference/alexnet.py`), or the model is silently different while every shape still fits. "
        + proof("flatten"),
        "- Weight decay: an SGD `weight_decay` that decays every parameter decays BN's γ and β too; a port that "
        "exempts them (a common recipe) trains a different model. " + proof("weight_decay")]


def tutorial_section(conventions: Sequence[Convention]) -> list[str]:
    """The seed tutorial's faults as bnparity.seeds.facts states them, measured with the float64 reference."""
    rows, gap, layer = tutorial_pitfalls(), variance_gap(), TUTORIAL_LAYER
    lines = [f"The seed tutorial writes BN by hand (statistics {layer.statistics}, ε = {layer.eps:g}, "
             f"{layer.variance}; eval mode {layer.eval_mode}). Its faults:", ""]
    lines += [f"{i}. **{fault.name}**: {fault.statement}." for i, fault in enumerate(TUTORIAL_FAULTS, 1)]
    lines += ["", "The first two measured with the float64 reference (`reference/`), one fault at a time, BN after a "
              "Dense layer, batches of 256, 8 features each N(μ_c, σ_c²) with μ_c ~ U(−2, 2), σ_c ~ U(0.5, 3), the "
              "same batches for every variant; errors max |Δ| / max |reference|, *running var* the worst channel's "
              "|r − σ²| / σ²:", "",
              "| variant | steps | running var vs σ² | eval output vs correct | eval output vs true-statistics "
              "output |",
              "|---|---|---|---|---|"]
    lines += [f"| {r.variant} | {r.steps} | {_g(r.running_var_err)} | {_g(r.eval_vs_correct)} | "
              f"{_g(r.eval_vs_population)} |" for r in rows]
    by = {(r.variant.split(" ")[0], r.steps): r for r in rows}
    zero = [r for r in rows if r.variant.startswith("moving_var")]
    swapped = [r for r in rows if r.variant.startswith("momentum")]
    lines += ["", f"The zero start is a transient: eval outputs are {_g(zero[0].eval_vs_correct)} off the correct "
              f"ones after {zero[0].steps} step, {_g(zero[-1].eval_vs_correct)} after {zero[-1].steps}. The swapped "
              f"weights never settle: {_g(swapped[-1].eval_vs_population)} off the true-statistics output after "
              f"{swapped[-1].steps} steps, against {_g(by[('correct', swapped[-1].steps)].eval_vs_population)} for the "
              "correct update. " + proof("momentum"), ""]
    unbiased = [display_name(c.framework) for c in conventions if c.running_var == "unbiased"]
    biased = [display_name(c.framework) for c in conventions if c.running_var == "biased"]
    lines += ["### The running-variance estimator, quantified", "",
              f"Unbiased σ²_B · m/(m−1) ({_and(unbiased) if unbiased else 'none'}) against biased σ²_B "
              f"({_and(biased) if biased else 'none'}), same data, new-batch weight 0.1, reference only:", "",
              "| m | steps | running var, unbiased vs biased | eval output difference |", "|---|---|---|---|"]
    lines += [f"| {r.m} | {r.steps} | {_g(r.running_var_gap)} | {_g(r.eval_gap)} |" for r in gap]
    lines += ["", "The gap tends to 1/(m−1): negligible after a convolution with a large batch, a few percent after a "
              "Dense layer with a small one. " + proof("running_var")]
    return lines


def trained_network_section(pitfalls: PitfallsDoc | None) -> list[str]:
    """The pitfalls as eval accuracy of a trained AlexNet (bnparity pitfalls), or how to measure them."""
    if pitfalls is None:
        return ["### On a trained network", "",
                "`bnparity pitfalls RUN_DIR` (a step of `bnparity run`) measures what each rule does to a trained "
                "AlexNet's test accuracy; this guide was generated without such a measurement."]
    meta, records = pitfalls.meta, pitfalls.records
    trained = next((r for r in records if r.steps is None), None)
    lines = ["### On a trained network", "",
             f"Measured by `bnparity pitfalls` on the weights of {meta.run} after epoch {meta.epoch} "
             f"(preset {meta.preset}, batches of {meta.batch_size}): running statistics never change "
             "what training computes, so the learned weights are the same under every rule. Each rule re-estimates "
             "every BN layer's running statistics from the run's own first training batches (same order, same "
             f"dropout masks) with the float64 NumPy AlexNet; test accuracy on {meta.test_images} test "
             "images in eval mode" + ("" if meta.complete else " (incomplete: the measurement was cut short)")
             + ":", ""]
    steps = [k for k in meta.steps if any(r.steps == k for r in records)]
    lines += ["| rule | " + " | ".join(f"after {k} batch{'es' if k > 1 else ''}" for k in steps) + " |",
              "|---|" + "---|" * len(steps)]
    for rule in meta.rules:
        by_step = {r.steps: r for r in records if r.rule == rule.name}
        cells = [f"{by_step[k].test_accuracy:.3f}" if k in by_step else "–" for k in steps]
        lines.append(f"| {rule.name}: {rule.description} | " + " | ".join(cells) + " |")
    acc = {(r.rule, r.steps): r.test_accuracy for r in records}
    if steps and all((rule, k) in acc for rule in ("correct", "zero-start", "swapped") for k in (steps[0], steps[-1])):
        first, last = steps[0], steps[-1]
        lines += ["", f"After {first} batch{'es' if first > 1 else ''} the zero start scores "
                      f"{acc[('zero-start', first)]:.3f} against {acc[('correct', first)]:.3f} for the correct rule; "
                      f"after {last}, when 0.9^{last} of the initial values remains, they score "
                      f"{acc[('zero-start', last)]:.3f} and {acc[('correct', last)]:.3f}, and the swapped rule, which "
                      f"keeps only the last batches, {acc[('swapped', last)]:.3f}. Every rule that starts from the "
                      "initial values is poor until they are forgotten (the correct rule keeps 0.9^k of them), "
                      "which is why eval accuracy measured early in training understates the network."]
    if trained is not None:
        lines += ["", f"With the running statistics the framework accumulated over the whole run, the same images "
                      f"score {trained.test_accuracy:.3f}."]
    return lines


def guide(*, parity: ParityDoc, conventions: Sequence[Convention], pitfalls: PitfallsDoc | None = None,
          layer_conventions: Sequence[LayerConvention] = (), replica_conventions: Sequence[ReplicaConvention] = (),
          sync_parity: SyncParityDoc | None = None, dp_parity: DPParityDoc | None = None,
          dp_training: Conclusions | None = None) -> str:
    """The whole guide as Markdown: the one conventions table (and what it means, said once), one section per pair
    of frameworks with only what differs, whole models, what the runs measured, the seed tutorial's pitfalls and
    BatchNorm across data-parallel replicas."""
    groups = sides(conventions, layer_conventions)
    normalizations = list(dict.fromkeys(r.normalization for r in layer_conventions))
    lines = ["<!-- Generated by `python -m bnparity.reports.porting` from the conventions registry and a parity run. "
             "Do not edit by hand: regenerate. -->", "",
             f"# Porting normalization layers between {_and([display_name(c.framework) for c in conventions])}", "",
             "One table of every framework's defaults and what each convention means, then per pair of frameworks "
             "only what differs, each as one line: what differs — the fix. Every statement links the test that "
             "proves it (`.venv/bin/pytest tests/<file> -k <name>`). Generated from the conventions registry "
             f"(`frameworks/*/convention.py`) and the parity records of {parity.meta.environment.time}.", "",
             *conventions_section(conventions, layer_conventions, groups)]
    for a, b in itertools.combinations(groups, 2):
        lines += ["", *pair_section(a, b, cite=proof, normalizations=normalizations)]
    lines += ["", "## Whole models: weights, names, layout, flatten order", "", *model_level(),
              "", "## Measured", "", *measured(parity, conventions),
              "", "## Pitfalls of the seed tutorial", "", *tutorial_section(conventions), "",
              *trained_network_section(pitfalls)]
    if replica_conventions:
        lines += ["", "## BatchNorm across data-parallel replicas", "",
                  *replica_section(replica_conventions, sync_parity, dp_parity,
                                   dp_training.data_parallel if dp_training is not None else ())]
    return "\n".join(lines).rstrip() + "\n"


def _optional(path: Path | None, load, what: str):  # noqa: ANN001, ANN202 (a loader and its document)
    """The record file at `path` read with `load`, or None when no path is given."""
    if path is None:
        return None
    try:
        return load(read_json(path), where=str(path))
    except FormatError as e:
        raise UserError(f"--{what} must be a {what} record file. Received: {e}") from None


def write_porting_guide(*, parity_path: Path, out: Path, root: Path = ROOT, pitfalls_path: Path | None = None,
                        sync_parity_path: Path | None = None, dp_parity_path: Path | None = None,
                        dp_train_path: Path | None = None) -> str:
    """Check that every cited test exists, then write the guide to `out`; returns the text.

    Raises:
        UserError: the parity file is not a bnparity parity record, or a cited test does not exist.
    """
    try:
        parity = load_parity(read_json(parity_path), where=str(parity_path))
    except FormatError as e:
        raise UserError(f"--parity must be a {PARITY_FORMAT} record file (or an older version). Received: {e}") \
            from None
    conventions, layer_rows, replica_rows = all_conventions(), all_layer_conventions(), all_replica_conventions()
    missing = missing_tests(all_proofs([*conventions, *layer_rows, *replica_rows]), root=root)
    if missing:
        raise UserError(f"the porting guide cites tests that do not exist: {', '.join(missing)}")
    pitfalls = None
    if pitfalls_path is not None:
        try:
            pitfalls = load_pitfalls(read_json(pitfalls_path), where=str(pitfalls_path))
        except FormatError as e:
            raise UserError(f"--pitfalls must be a pitfalls record file (bnparity pitfalls). Received: {e}") from None
    text = guide(parity=parity, conventions=conventions, pitfalls=pitfalls, layer_conventions=layer_rows,
                 replica_conventions=replica_rows,
                 sync_parity=_optional(sync_parity_path, load_sync_parity, "sync-parity"),
                 dp_parity=_optional(dp_parity_path, load_dp_parity, "dp-parity"),
                 dp_training=_optional(dp_train_path, load_conclusions, "dp-train"))
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)  # the guide's folder (e.g. docs/) is created when missing
    write_output(out, text)
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bnparity.reports.porting", description=__doc__.splitlines()[0])
    parser.add_argument("--parity", type=Path, required=True, help="a parity record file (bnparity parity --json)")
    parser.add_argument("--pitfalls", type=Path, help="a pitfalls record file (bnparity pitfalls), optional")
    parser.add_argument("--sync-parity", type=Path, help="a sync-parity record file (bnparity sync-parity), optional")
    parser.add_argument("--dp-parity", type=Path, help="a dp-parity record file (bnparity dp-parity), optional")
    parser.add_argument("--dp-train", type=Path,
                        help="the conclusions.json of a data-parallel training run (bnparity train --preset dp-cpu)")
    parser.add_argument("--out", type=Path, default=Path("docs/porting.md"), help="default: docs/porting.md")
    args = parser.parse_args(argv)
    try:
        write_porting_guide(parity_path=args.parity, out=args.out, pitfalls_path=args.pitfalls,
                            sync_parity_path=args.sync_parity, dp_parity_path=args.dp_parity,
                            dp_train_path=args.dp_train)
    except (UserError, ValueError, OSError) as e:
        print(f"porting: error: {e}", file=sys.stderr)
        return 2
    print(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
