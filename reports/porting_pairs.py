"""One section of the porting guide per pair of frameworks: which settings make each compute what the other does."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

Row = dict[str, Any]
# The layer each framework's adapter drives, with the arguments a porter sets (C: the number of channels).
CTOR = {
    "torch": "torch.nn.BatchNorm2d(C, momentum={m:g}, eps={eps:g})",
    "mxnet": "mxnet.gluon.nn.BatchNorm(momentum={m:g}, epsilon={eps:g})",
    "jax": "flax.linen.BatchNorm(use_running_average=not train, momentum={m:g}, epsilon={eps:g}, "
           "use_fast_variance={fast})",
}
LAYOUT = {1: "channels-first (NCHW)", -1: "channels-last (NHWC)"}
TRANSPOSE = {(-1, 1): "x.transpose(0, 3, 1, 2)  # NHWC -> NCHW", (1, -1): "x.transpose(0, 2, 3, 1)  # NCHW -> NHWC"}
DIFF_FIELDS = (("momentum", "momentum (default)"), ("momentum_weighs", "momentum weighs"), ("eps", "ε"),
               ("running_var", "running variance stored"), ("channel_axis", "channel axis"),
               ("variance_algorithm", "σ²_B algorithm"), ("running_stats_written", "running statistics written"))


def new_weight(row: Row) -> float:
    """The weight the running statistics give the new batch (rounded: 1 − 0.9 is not 0.1 in binary)."""
    return round(row["momentum"] if row["momentum_weighs"] == "new" else 1.0 - row["momentum"], 12)


def momentum_for(x: Row, *, weight: float) -> float:
    """The momentum argument that makes framework `x` give the new batch `weight`."""
    return round(weight if x["momentum_weighs"] == "new" else 1.0 - weight, 12)


def constructor(x: Row, y: Row) -> str:
    """`x`'s layer configured to compute what `y`'s defaults compute (as far as arguments can)."""
    return CTOR[x["framework"]].format(m=momentum_for(x, weight=new_weight(y)), eps=y["eps"],
                                       fast=y["variance_algorithm"] == "fast")


def _variance(x: Row, y: Row, nx: str, ny: str) -> str:
    if x["running_var"] == y["running_var"]:
        return f"- Running variance: both store the {x['running_var']} estimator; nothing to convert."
    factor = "(m−1)/m" if x["running_var"] == "unbiased" else "m/(m−1)"
    return (f"- Running variance: {nx} stores the {x['running_var']} estimator and no argument changes it "
            f"(running_var_configurable={x['running_var_configurable']}); {ny} stores the {y['running_var']} one. "
            f"Convert {nx}'s r to {ny}'s: r' = a + (r − a)·{factor}, a = (1 − w)^k·r₀, after k steps of batches "
            f"with m values per channel, w the new batch's weight, r₀ = 1 the initial value (exact when every "
            f"batch has the same m; once (1 − w)^k is negligible, r' = r·{factor}). The normalization itself uses "
            "the biased σ²_B in every framework: training outputs are unaffected.")


def _layout(x: Row, y: Row, nx: str, ny: str) -> str:
    ax, ay = x["channel_axis"], y["channel_axis"]
    if ax == ay:
        return f"- Layout: both default to {LAYOUT.get(ax, f'axis {ax}')}."
    return (f"- Layout: {nx} normalizes {LAYOUT.get(ax, ax)} data, {ny} {LAYOUT.get(ay, ay)}: feed {nx} "
            f"`{TRANSPOSE.get((ay, ax), 'the transposed input')}` and transpose its output back.")


def _algorithm(x: Row, y: Row, nx: str, ny: str) -> str:
    if x["variance_algorithm"] == y["variance_algorithm"]:
        return f"- σ²_B: both compute it {x['variance_algorithm']} (E[(x − μ)²])." if x["variance_algorithm"] == \
            "two-pass" else f"- σ²_B: both use the {x['variance_algorithm']} formula."
    if x["variance_algorithm"] == "fast":
        return (f"- σ²_B: {nx} computes E[x²] − E[x]² by default; `use_fast_variance=False` gives {ny}'s two-pass "
                "E[(x − μ)²].")
    return (f"- σ²_B: {nx} has only the two-pass E[(x − μ)²]; {ny}'s default E[x²] − E[x]² is the same in exact "
            "arithmetic and loses precision where it cancels: data far from zero relative to its spread (see "
            "Measured).")


def _written(x: Row, y: Row, nx: str, ny: str) -> str:
    px, py = (r["running_stats_written"].split()[0] for r in (x, y))  # "forward" or "backward"
    text = (f"- When the running statistics change: {nx}: {x['running_stats_written']}. "
            f"{ny}: {y['running_stats_written']}.")
    if px != py:
        text += (f" A loop that runs training-mode forward passes without a backward pass updates them in the "
                 f"{px}-pass framework only.")
    return text


def _to_match(x: Row, y: Row, names: dict[str, str], cite: Callable[..., str]) -> list[str]:
    nx, ny = names.get(x["framework"], x["framework"]), names.get(y["framework"], y["framework"])

    def proof(key: str) -> str:
        return cite(key, (x["framework"], y["framework"]))

    wy = new_weight(y)
    m = momentum_for(x, weight=wy)
    same_rule = x["momentum_weighs"] == y["momentum_weighs"]
    rule = ("the same update rule: the same number" if same_rule else
            f"{nx}'s momentum weighs the {x['momentum_weighs']} value, {ny}'s the {y['momentum_weighs']}: "
            f"m_{x['framework']} = 1 − m_{y['framework']}")
    lines = [f"### {nx} computing what {ny}'s defaults compute", "", "```python", constructor(x, y), "```", "",
             f"- Momentum: `momentum={m:g}` ({ny}'s default {y['momentum']:g} gives the new batch weight {wy:g}; "
             f"{rule}). {proof('momentum')}",
             f"- ε: `{y['eps']:g}`" + (" (the same default)." if x["eps"] == y["eps"] else ".") + f" {proof('eps')}",
             _variance(x, y, nx, ny) + f" {proof('running_var')}",
             _layout(x, y, nx, ny) + f" {proof('layout')}",
             _algorithm(x, y, nx, ny) + f" {proof('variance_algorithm')}",
             f"- Train/eval: {nx}: {x['train_eval_switch']}. {ny}: {y['train_eval_switch']}. "
             f"{proof('train_eval_switch')}",
             _written(x, y, nx, ny) + f" {proof('running_stats_written')}",
             f"- Turning γ off: {nx}: {x['scale_switch']}. {ny}: {y['scale_switch']}. {proof('scale_switch')}"]
    if x["framework"] == "torch":
        lines.append("- A batch of one in 1-D: PyTorch raises (its unbiased running variance would divide by "
                     f"m − 1 = 0) where {ny} normalizes to β. {proof('batch_of_one')}")
    return lines


def pair_section(a: Row, b: Row, *, names: dict[str, str], proof: Callable[..., str]) -> list[str]:
    """The guide's section for frameworks `a` and `b`: their differing defaults, then each configured as the other."""
    na, nb = names.get(a["framework"], a["framework"]), names.get(b["framework"], b["framework"])
    lines = [f"## {na} ↔ {nb}", "", f"| default | {na} | {nb} |", "|---|---|---|"]
    for key, label in DIFF_FIELDS:
        if a[key] != b[key]:
            lines.append(f"| {label} | {a[key]} | {b[key]} |")
    lines.append(f"| weight of the new batch | {new_weight(a):g} | {new_weight(b):g} |")
    return lines + ["", *_to_match(a, b, names, proof), "", *_to_match(b, a, names, proof)]
