"""docs/porting.md: how to make each framework's normalization layers match another's, each statement with its proof.

Run as ``python -m bnparity.reports.porting --parity PATH --out docs/porting.md`` (or ``bnparity report RUN_DIR
--porting PATH``). Reads the conventions registry (data, no framework) and a parity record file; the numbers
of the pitfall tables are computed here with the float64 reference.
"""

from __future__ import annotations

import argparse
import itertools
import sys
from collections.abc import Sequence
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

from .layer_summary import MEASURED_DEFAULTS, layer_parity, measured_defaults
from .porting_facts import ROOT, ProofRef, all_proofs, missing_tests, proof_refs, tutorial_pitfalls, variance_gap
from .porting_pairs import pair_section
from .porting_replicas import replica_section

# (ModelLayout attribute, row label) of the model-level table
MODEL_ROWS = (("conv_kernel", "convolution kernel"), ("dense_weight", "Dense/Linear weight"), ("bn_params", "BN γ, β"),
              ("bn_stats", "BN running statistics"), ("activations", "activations"))


def proof(key: str, frameworks: tuple[str, ...] | None = None) -> str:
    """'Proved by <links>.' for statement `key`; with `frameworks`, only their own tests and the shared ones."""
    refs = proof_refs(key, all_conventions(), frameworks)
    return "Proved by " + ", ".join(ref.link() for ref in refs) + "."


def _and(names: Sequence[str]) -> str:
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def _g(x: float) -> str:
    return f"{x:.2g}"


def overview(rows: Sequence[Convention]) -> list[str]:
    fields = [("layer", "layer"), ("momentum", "momentum (default)"), ("momentum_weighs", "momentum weighs"),
              ("eps", "ε"), ("running_var", "running variance stored"), ("channel_axis", "channel axis"),
              ("variance_algorithm", "σ²_B algorithm"), ("running_stats_written", "running statistics written")]
    lines = ["| | " + " | ".join(display_name(r.framework) for r in rows) + " |", "|---|" + "---|" * len(rows)]
    for key, label in fields:
        lines.append(f"| {label} | " + " | ".join(str(getattr(r, key)).replace("|", "\\|") for r in rows) + " |")
    return lines


def measured(doc: ParityDoc) -> list[str]:
    """What the parity run measured: matched mode agrees; defaults mode differs from the baseline's convention by ..."""
    lp, dm = layer_parity(doc), measured_defaults(doc)
    meta = doc.meta
    anchor = display_name(meta.baseline or baseline().name)
    lines = [f"From the parity run of {meta.environment.time} (commit {short_commit(meta.environment.git_commit)}, "
             f"frameworks {', '.join(meta.frameworks)}).", "",
             "**Configured as in this guide** (matched mode), every builtin layer agrees with the float64 reference: "
             + "; ".join(f"{c['column']} {c['passed']}/{c['cases']} standard cases"
                         + (f" ({len(c['skipped_cases'])} not configurable)" if c["skipped_cases"] else "")
                         for c in lp["columns"] if c["column"].endswith("/builtin"))
             + f". {proof('matched')}", "",
             "**Left at their defaults** (defaults mode, after the case's training steps), against the reference in "
             f"{anchor}'s convention; max |Δ| / max |ref| over the standard cases:", "",
             "| framework | running_mean | running_var | y_eval | its own registry row reproduced |",
             "|---|---|---|---|---|"]
    for fw, m in dm.items():
        cells = [("–" if m["vs_baseline"][q] is None or m["vs_baseline"][q]["scaled_err"] is None
                  else _g(m["vs_baseline"][q]["scaled_err"])) for q in ("running_mean", "running_var", "y_eval")]
        own = m["own_convention"]
        lines.append(f"| {display_name(fw)} | " + " | ".join(cells) + f" | {own['passed']}/{own['of']} |")
    return lines + far_from_zero(doc)


def _cell_text(value: object) -> str:
    return (f"{value:g}" if isinstance(value, float) else str(value)).replace("|", "\\|")


def normalization_section(doc: ParityDoc | None, rows: Sequence[LayerConvention]) -> list[str]:
    """One normalization (other than BatchNorm): its defaults side by side, each fact with its proof, how to
    configure each layer alike, and what the parity run measured. The same template for every normalization."""
    if not rows:
        return []
    names = [display_name(r.framework) for r in rows]
    fields = list(dict.fromkeys(k for r in rows for k in r.defaults))
    lines = ["| | " + " | ".join(names) + " |", "|---|" + "---|" * len(rows),
             "| layer | " + " | ".join(f"`{r.layer}`" for r in rows) + " |"]
    for key in fields:
        values = ["machine epsilon of the dtype" if key == "eps" and r.eps_rule == "machine-epsilon"
                  else _cell_text(r.defaults[key]) if key in r.defaults else "required" if key in r.facts else "–"
                  for r in rows]
        lines.append(f"| {key} (default) | " + " | ".join(values) + " |")
    lines.append("")
    for r in rows:
        if r.constructor:
            lines.append(f"- {display_name(r.framework)}: `{r.constructor}`")
        for key, fact in r.facts.items():
            refs = [ProofRef.parse(t, framework=r.framework).link() for t in r.proofs.get(key, ())]
            lines.append(f"  - {key}: {fact}" + (f" Proved by {', '.join(refs)}." if refs else ""))
    if doc is None or not doc.case_names(gate=True):
        return lines
    lp, dm = layer_parity(doc), measured_defaults(doc, MEASURED_DEFAULTS)
    anchor = display_name(doc.meta.baseline or baseline().name)
    quantities = [q for q in ("y", "dx", "running_mean", "running_var", "y_eval")
                  if any(m["vs_baseline"].get(q) for m in dm.values())]
    lines += ["", "**Configured alike** (matched mode): " + "; ".join(
        f"{c['column']} {c['passed']}/{c['cases']} standard cases"
        + (f" ({len(c['skipped_cases'])} not configurable: {next(iter(c['skipped_cases'].values()))})"
           if c["skipped_cases"] else "") for c in lp["columns"] if c["column"].endswith("/builtin")) + ".", "",
        f"**Left at their defaults** (defaults mode) against the reference in {anchor}'s convention; max |Δ| / "
        "max |ref| over the standard cases (the structure — layout, groups, normalized axes — as the case's):", "",
        "| framework | " + " | ".join(quantities) + " | its own registry row reproduced |",
        "|---|" + "---|" * (len(quantities) + 1)]
    for fw, m in dm.items():
        cells_ = []
        for q in quantities:
            w = m["vs_baseline"].get(q)
            cells_.append("–" if w is None or w["scaled_err"] is None else _g(w["scaled_err"]))
        own = m["own_convention"]
        lines.append(f"| {display_name(fw)} | " + " | ".join(cells_) + f" | {own['passed']}/{own['of']} |")
    return lines


def far_from_zero(doc: ParityDoc) -> list[str]:
    """The builtin layers on the offset hard cases, configured (matched) and at their defaults."""
    cases = [c for c in doc.case_names(gate=False) if "offset" in c]
    records = [r for r in doc.records if r.case in cases and r.impl == "builtin"
               and r.reference in ("matched", "own-convention")]
    if not records:
        return []
    columns = [(c, mode) for c in cases for mode in ("matched", "defaults")]
    lines = ["", "**Data far from zero** (hard cases, float32; a cell: largest error of the worst quantity, and its "
             "multiple of the allowed error; defaults = each layer as shipped, matched = configured as in this "
             "guide, which for Flax means `use_fast_variance=False`):", "",
             "| framework | " + " | ".join(f"{c.split('-')[-1]} {mode}" for c, mode in columns) + " |",
             "|---|" + "---|" * len(columns)]
    for fw in dict.fromkeys(r.framework for r in records):
        row = []
        for case, mode in columns:
            cell = cells([r for r in records if r.framework == fw and r.mode == mode]).get(
                (case, f"{fw}/builtin"))
            if cell is None or cell.status in ("skipped", "error"):
                row.append("–" if cell is None else cell.status)
            else:
                row.append(f"{_g(cell.max_abs_err or float('inf'))} ({_g(cell.worst_ratio or float('inf'))}×)")
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
        "- Weight decay: PyTorch's `SGD(weight_decay=...)` decays every parameter, BN's γ and β included; a port that "
        "exempts them (a common recipe) trains a different model. " + proof("weight_decay")]


def tutorial_section() -> list[str]:
    rows = tutorial_pitfalls()
    gap = variance_gap()
    lines = [
        "The seed tutorial writes BN from scratch, and its moving averages have two faults. In code they look "
        "like this:", "",
        "```python",
        "momentum = 0.9",
        "moving_mean = (1.0 - momentum) * moving_mean + momentum * mean   # the new batch gets 0.9",
        "moving_var = (1.0 - momentum) * moving_var + momentum * var",
        "moving_var = nd.zeros(shape)                                      # its initial value",
        "```", "",
        "1. **Swapped weights**: 0.9 is the weight MXNet gives the *old* estimate (PyTorch's 0.1 for the new "
        "batch); given to the new batch, as here or by passing `momentum=0.9` to `torch.nn.BatchNorm2d`, it makes "
        "the running statistics those of the last batch or two, and eval outputs carry that batch's sampling "
        "noise.",
        "2. **moving_var starts at 0**, where every framework starts it at 1. Until the start is forgotten the "
        "running variance is too small, and eval-mode outputs are too large.", "",
        "Measured with the float64 reference (`reference/`), BN after a Dense layer, batches of 256, 8 features each "
        "N(μ_c, σ_c²) with μ_c ~ U(−2, 2), σ_c ~ U(0.5, 3), the same batches for every variant. Errors are "
        "max |Δ| / max |reference|; *running var* is the worst channel's |r − σ²| / σ²:", "",
        "| variant | steps | running var vs σ² | eval output vs correct | eval output vs true-statistics output |",
        "|---|---|---|---|---|"]
    lines += [f"| {r.variant} | {r.steps} | {_g(r.running_var_err)} | {_g(r.eval_vs_correct)} | "
              f"{_g(r.eval_vs_population)} |" for r in rows]
    by = {(r.variant.split(" (")[0], r.steps): r for r in rows}
    zero = [r for r in rows if "starts at 0" in r.variant]
    swapped = [r for r in rows if "swapped" in r.variant]
    lines += ["", f"The zero start is a transient: eval outputs are {_g(zero[0].eval_vs_correct)} off the correct "
              f"ones after {zero[0].steps} step, {_g(zero[-1].eval_vs_correct)} after {zero[-1].steps}. The swapped "
              f"weights never settle: {_g(swapped[-1].eval_vs_population)} off the true-statistics output after "
              f"{swapped[-1].steps} steps, against {_g(by[('correct', swapped[-1].steps)].eval_vs_population)} for the "
              "correct update. " + proof("momentum"), "",
              "### The running-variance estimator, quantified", "",
              "PyTorch stores σ²_B · m/(m−1) in its running variance, MXNet and Flax σ²_B (m = values per channel "
              "in a batch: N for a Dense layer, N·H·W after a convolution). Same data, same momentum (0.1), "
              "reference only:", "",
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
    """The whole guide as Markdown: BatchNorm first, then one section per other normalization, then BatchNorm across
    data-parallel replicas."""
    batchnorm = parity.of_normalization(Convention.normalization)
    lines = ["<!-- Generated by `python -m bnparity.reports.porting` from the conventions registry and a parity run. "
             "Do not edit by hand: regenerate. -->", "",
             f"# Porting normalization layers between {_and([display_name(c.framework) for c in conventions])}", "",
             "BatchNorm first (the defaults side by side, each pair of frameworks, whole models, what the parity run "
             "measured, the seed tutorial's pitfalls), then one section per other normalization.", "",
             f"Generated from the conventions registry (`frameworks/*/convention.py`) and the parity records of "
             f"{parity.meta.environment.time}. Every statement links the test that proves it; run those tests with "
             "`.venv/bin/pytest tests/<file> -k <name>`.", "", "## The defaults side by side", ""]
    lines += overview(conventions)
    for a, b in itertools.combinations(conventions, 2):
        lines += ["", *pair_section(a, b, proof=proof)]
    lines += ["", "## Whole models: weights, names, layout, flatten order", "", *model_level(),
              "", "## Measured", "", *measured(batchnorm),
              "", "## Pitfalls of the seed tutorial", "", *tutorial_section(), "", *trained_network_section(pitfalls)]
    for name in dict.fromkeys(r.normalization for r in layer_conventions):
        rows = [r for r in layer_conventions if r.normalization == name]
        part = parity.of_normalization(name) if name in parity.normalizations() else None
        lines += ["", f"## {plugin(name).title}", "", *normalization_section(part, rows)]
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
