"""One section of the porting guide per pair of frameworks: which settings make each compute what the other does.

Everything framework-specific comes from the conventions registry (frameworks/<name>/convention.py: the defaults,
the configured layer's `constructor`, what a 1-D batch of one does) and the descriptors' display names.
"""

from __future__ import annotations

from collections.abc import Callable

from bnparity.frameworks.conventions import Convention
from bnparity.frameworks.registry import display_name

LAYOUT = {1: "channels-first (NCHW)", -1: "channels-last (NHWC)"}
TRANSPOSE = {(-1, 1): "x.transpose(0, 3, 1, 2)  # NHWC -> NCHW", (1, -1): "x.transpose(0, 2, 3, 1)  # NCHW -> NHWC"}
DIFF_FIELDS = (("momentum", "momentum (default)"), ("momentum_weighs", "momentum weighs"), ("eps", "ε"),
               ("running_var", "running variance stored"), ("channel_axis", "channel axis"),
               ("variance_algorithm", "σ²_B algorithm"), ("running_stats_written", "running statistics written"))


def constructor(x: Convention, y: Convention) -> str:
    """`x`'s layer configured to compute what `y`'s defaults compute (as far as arguments can)."""
    return x.constructor.format(m=x.momentum_for(y.new_weight), eps=y.eps, fast=y.variance_algorithm == "fast")


def _variance(x: Convention, y: Convention, nx: str, ny: str) -> str:
    if x.running_var == y.running_var:
        return f"- Running variance: both store the {x.running_var} estimator; nothing to convert."
    factor = "(m−1)/m" if x.running_var == "unbiased" else "m/(m−1)"
    return (f"- Running variance: {nx} stores the {x.running_var} estimator and no argument changes it "
            f"(running_var_configurable={x.running_var_configurable}); {ny} stores the {y.running_var} one. "
            f"Convert {nx}'s r to {ny}'s: r' = a + (r − a)·{factor}, a = (1 − w)^k·r₀, after k steps of batches "
            f"with m values per channel, w the new batch's weight, r₀ = 1 the initial value (exact when every "
            f"batch has the same m; once (1 − w)^k is negligible, r' = r·{factor}). The normalization itself uses "
            "the biased σ²_B in every framework: training outputs are unaffected.")


def _layout(x: Convention, y: Convention, nx: str, ny: str) -> str:
    ax, ay = x.channel_axis, y.channel_axis
    if ax == ay:
        return f"- Layout: both default to {LAYOUT.get(ax, f'axis {ax}')}."
    return (f"- Layout: {nx} normalizes {LAYOUT.get(ax, ax)} data, {ny} {LAYOUT.get(ay, ay)}: feed {nx} "
            f"`{TRANSPOSE.get((ay, ax), 'the transposed input')}` and transpose its output back.")


def _algorithm(x: Convention, y: Convention, nx: str, ny: str) -> str:
    if x.variance_algorithm == y.variance_algorithm:
        return f"- σ²_B: both compute it {x.variance_algorithm} (E[(x − μ)²])." if x.variance_algorithm == \
            "two-pass" else f"- σ²_B: both use the {x.variance_algorithm} formula."
    if x.variance_algorithm == "fast":
        return (f"- σ²_B: {nx} computes E[x²] − E[x]² by default; `use_fast_variance=False` gives {ny}'s two-pass "
                "E[(x − μ)²].")
    return (f"- σ²_B: {nx} has only the two-pass E[(x − μ)²]; {ny}'s default E[x²] − E[x]² is the same in exact "
            "arithmetic and loses precision where it cancels: data far from zero relative to its spread (see "
            "Measured).")


def _written(x: Convention, y: Convention, nx: str, ny: str) -> str:
    px, py = (r.running_stats_written.split()[0] for r in (x, y))  # "forward" or "backward"
    text = (f"- When the running statistics change: {nx}: {x.running_stats_written}. "
            f"{ny}: {y.running_stats_written}.")
    if px != py:
        text += (f" A loop that runs training-mode forward passes without a backward pass updates them in the "
                 f"{px}-pass framework only.")
    return text


def _to_match(x: Convention, y: Convention, cite: Callable[..., str]) -> list[str]:
    nx, ny = display_name(x.framework), display_name(y.framework)

    def proof(key: str) -> str:
        return cite(key, (x.framework, y.framework))

    wy = y.new_weight
    m = x.momentum_for(wy)
    same_rule = x.momentum_weighs == y.momentum_weighs
    rule = ("the same update rule: the same number" if same_rule else
            f"{nx}'s momentum weighs the {x.momentum_weighs} value, {ny}'s the {y.momentum_weighs}: "
            f"m_{x.framework} = 1 − m_{y.framework}")
    lines = [f"### {nx} computing what {ny}'s defaults compute", "", "```python", constructor(x, y), "```", "",
             f"- Momentum: `momentum={m:g}` ({ny}'s default {y.momentum:g} gives the new batch weight {wy:g}; "
             f"{rule}). {proof('momentum')}",
             f"- ε: `{y.eps:g}`" + (" (the same default)." if x.eps == y.eps else ".") + f" {proof('eps')}",
             _variance(x, y, nx, ny) + f" {proof('running_var')}",
             _layout(x, y, nx, ny) + f" {proof('channel_axis')}",
             _algorithm(x, y, nx, ny) + f" {proof('variance_algorithm')}",
             f"- Train/eval: {nx}: {x.train_eval_switch}. {ny}: {y.train_eval_switch}. "
             f"{proof('train_eval_switch')}",
             _written(x, y, nx, ny) + f" {proof('running_stats_written')}",
             f"- Turning γ off: {nx}: {x.scale_switch}. {ny}: {y.scale_switch}. {proof('scale_switch')}"]
    if x.batch_of_one != y.batch_of_one:
        lines.append(f"- A batch of one in 1-D: {nx} {x.batch_of_one} where {ny} {y.batch_of_one}. "
                     f"{proof('batch_of_one')}")
    return lines


def pair_section(a: Convention, b: Convention, *, proof: Callable[..., str]) -> list[str]:
    """The guide's section for frameworks `a` and `b`: their differing defaults, then each configured as the other.

    `proof(key, frameworks)` is the "Proved by ..." sentence of statement `key` for those frameworks.
    """
    na, nb = display_name(a.framework), display_name(b.framework)
    lines = [f"## {na} ↔ {nb}", "", f"| default | {na} | {nb} |", "|---|---|---|"]
    for key, label in DIFF_FIELDS:
        if getattr(a, key) != getattr(b, key):
            lines.append(f"| {label} | {getattr(a, key)} | {getattr(b, key)} |")
    lines.append(f"| weight of the new batch | {a.new_weight:g} | {b.new_weight:g} |")
    return lines + ["", *_to_match(a, b, proof), "", *_to_match(b, a, proof)]
