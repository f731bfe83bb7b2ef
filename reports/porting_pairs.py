"""The porting guide's pair sections: for two frameworks, only what differs, each as one line with its fix and proof.

Everything framework-specific comes from the conventions registry (frameworks/<name>/convention.py: the defaults,
the configured layer's `constructor`, what a 1-D batch of one does) and the descriptors' display names. Frameworks
whose rows are identical (every field but the name, the citations and the proofs) form one `Side`, so that a pair
section is never written twice.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import numpy as np

from bnparity.frameworks.conventions import Convention, LayerConvention
from bnparity.frameworks.registry import display_name
from bnparity.reference.normalization import normalization as plugin

from .porting_facts import PROOFS, ProofRef

LAYOUT = {1: "channels-first (NCHW)", -1: "channels-last (NHWC)"}
TRANSPOSE = {(-1, 1): "x.transpose(0, 3, 1, 2)  # NHWC -> NCHW", (1, -1): "x.transpose(0, 2, 3, 1)  # NCHW -> NHWC"}
PRIVATE = ("framework", "citations", "proofs")  # fields that name a framework or cite it, not what it computes
MACHINE_EPS = "machine ε of the dtype"
FIXES = {"normalized_dims": "pass the normalized axes explicitly", "groups": "pass the group count explicitly",
         "affine": "switch γ and β explicitly", "bias": "switch β explicitly"}
Cite = Callable[[str, Sequence[str]], str]  # (statement, frameworks) -> "Proved by <links>."


@dataclass(frozen=True)
class Side:
    """One side of a pair: frameworks whose conventions are identical; the first one's rows speak for all."""

    rows: tuple[Convention, ...]
    layers: tuple[LayerConvention, ...] = ()  # every member's rows of the other normalizations

    @property
    def bn(self) -> Convention:
        return self.rows[0]

    @property
    def frameworks(self) -> tuple[str, ...]:
        return tuple(r.framework for r in self.rows)

    @property
    def name(self) -> str:
        return " / ".join(display_name(f) for f in self.frameworks)

    def layer(self, normalization: str) -> LayerConvention | None:
        """The first member's row of `normalization`, or None when the frameworks have no such layer."""
        return next((r for r in self.layers if r.normalization == normalization and r.framework == self.frameworks[0]),
                    None)

    def layer_proofs(self, normalization: str, key: str) -> list[ProofRef]:
        return [ProofRef.parse(t, framework=r.framework) for r in self.layers
                if r.normalization == normalization for t in r.proofs.get(key, ())]


def _signature(row: Convention | LayerConvention) -> tuple:
    return tuple(sorted((k, repr(v)) for k, v in asdict(row).items() if k not in PRIVATE))


def sides(conventions: Sequence[Convention], layer_rows: Sequence[LayerConvention] = ()) -> list[Side]:
    """The frameworks grouped by identical conventions (BatchNorm's and every other normalization's), in the
    registry's order."""
    groups: dict[tuple, list[Convention]] = {}
    for c in conventions:
        mine = sorted(_signature(r) for r in layer_rows if r.framework == c.framework)
        groups.setdefault((_signature(c), tuple(mine)), []).append(c)
    return [Side(tuple(rows), tuple(r for r in layer_rows if r.framework in {c.framework for c in rows}))
            for rows in groups.values()]


def argument(template: str, placeholder: str, default: str) -> str:
    """The keyword of `template` that receives `{placeholder...}` (e.g. 'epsilon' for 'epsilon={eps:g}')."""
    found = re.search(rf"(\w+)=\{{{placeholder}\b", template)
    return found.group(1) if found else default


def constructor(x: Convention, y: Convention) -> str:
    """`x`'s layer configured to compute what `y`'s defaults compute (as far as arguments can)."""
    return x.constructor.format(m=x.momentum_for(y.new_weight), eps=y.eps, fast=y.variance_algorithm == "fast")


def _factor(frm: str) -> str:
    return "(m−1)/m" if frm == "unbiased" else "m/(m−1)"


def batchnorm_lines(a: Side, b: Side, cite: Cite) -> list[str]:
    """One line per BatchNorm convention that differs between `a` and `b`: what differs — the fix. Proof."""
    x, y, nx, ny = a.bn, b.bn, a.name, b.name
    both = (*a.frameworks, *b.frameworks)

    def line(what: str, fix: str, key: str) -> str:
        return f"- **BatchNorm {what}**: {fix} {cite(key, both)}"

    lines = []
    if x.momentum != y.momentum or x.momentum_weighs != y.momentum_weighs:
        rule = ("the same rule" if x.momentum_weighs == y.momentum_weighs
                else f"momentum in {nx} = 1 − momentum in {ny}")
        lines.append(line("momentum", f"{nx} {x.momentum:g} weighs the {x.momentum_weighs} value, {ny} "
                          f"{y.momentum:g} the {y.momentum_weighs} (new-batch weight {x.new_weight:g} vs "
                          f"{y.new_weight:g}) — `{argument(x.constructor, 'm', 'momentum')}="
                          f"{x.momentum_for(y.new_weight):g}` in {nx}, `{argument(y.constructor, 'm', 'momentum')}="
                          f"{y.momentum_for(x.new_weight):g}` in {ny} ({rule}).", "momentum"))
    if x.eps != y.eps:
        lines.append(line("ε", f"{nx} {x.eps:g}, {ny} {y.eps:g} — `{argument(x.constructor, 'eps', 'eps')}="
                          f"{y.eps:g}` in {nx}, `{argument(y.constructor, 'eps', 'eps')}={x.eps:g}` in {ny}.", "eps"))
    if x.running_var != y.running_var:
        fixed = [s.name for s, r in ((a, x), (b, y)) if not r.running_var_configurable]
        lines.append(line("running variance", f"{nx} stores the {x.running_var} estimator, {ny} the "
                          f"{y.running_var}" + (f"; no argument of {' or '.join(fixed)} changes it" if fixed else "")
                          + f" — convert {nx}'s r to {ny}'s with the factor {_factor(x.running_var)}, {ny}'s to "
                          f"{nx}'s with {_factor(y.running_var)} (the formula above).", "running_var"))
    if x.channel_axis != y.channel_axis:
        lines.append(line("layout", f"{nx} {LAYOUT.get(x.channel_axis, x.channel_axis)}, {ny} "
                          f"{LAYOUT.get(y.channel_axis, y.channel_axis)} — feed {nx} "
                          f"`{TRANSPOSE.get((y.channel_axis, x.channel_axis), 'the transposed input')}` and "
                          "transpose its output back.", "channel_axis"))
    if x.variance_algorithm != y.variance_algorithm:
        (fast, nf), (exact, ne) = sorted(((x, nx), (y, ny)), key=lambda p: p[0].variance_algorithm != "fast")
        fix = (f"`{argument(fast.constructor, 'fast', 'use_fast_variance')}=False` in {nf} gives {ne}'s"
               if "{fast}" in fast.constructor else f"no argument of {nf} changes it; {ne} has only the")
        lines.append(line("σ²_B", f"{nf} computes E[x²] − E[x]², {ne} the {exact.variance_algorithm} E[(x − μ)²] "
                          f"— {fix} two-pass formula (they differ on data far from zero: Measured).",
                          "variance_algorithm"))
    px, py = (r.running_stats_written.split()[0] for r in (x, y))  # "forward" or "backward"
    if px != py:
        forward = nx if px.startswith("forward") else ny
        lines.append(line("running statistics", f"written in {nx}'s {px} pass, {ny}'s {py} pass — a training-mode "
                          f"forward without a backward pass updates {forward}'s only: run the backward pass after "
                          "every training forward.",
                          "running_stats_written"))
    if x.batch_of_one != y.batch_of_one:
        lines.append(line("1-D batch of one", f"{nx} {x.batch_of_one}, {ny} {y.batch_of_one} — drop a last batch "
                          "of one.", "batch_of_one"))
    as_shipped = [r.constructor.format(m=r.momentum, eps=r.eps, fast=r.variance_algorithm == "fast") for r in (x, y)]
    if lines and [constructor(x, y), constructor(y, x)] != as_shipped:  # some argument does change something
        lines.insert(0, f"- **BatchNorm, configured**: {nx} as {ny}'s defaults: `{constructor(x, y)}`; {ny} as "
                        f"{nx}'s: `{constructor(y, x)}`.")
    return lines


def layer_value(row: LayerConvention, key: str) -> object:
    """`row`'s default of spec field `key` as the guide shows it ("required" when its fact says the argument is
    required, None when the layer has no default for it)."""
    if key == "eps" and row.eps_rule == "machine-epsilon":
        return MACHINE_EPS
    if key in row.defaults:
        return row.defaults[key]
    return "required" if "required" in row.facts.get(key, "") else None


def cell(value: object) -> str:
    return ("–" if value is None else f"{value:g}" if isinstance(value, float) else str(value)).replace("|", "\\|")


def _eps_fix(row: LayerConvention, name: str, value: object) -> str:
    found = re.search(r"(\w*eps\w*)=", row.constructor)
    arg = found.group(1) if found else "ε"
    if value == MACHINE_EPS:  # float32's, the usual computation dtype
        return f"`{arg}={np.finfo(np.float32).eps:.3g}` in {name} (float32's)"
    return f"`{arg}={cell(value)}` in {name}"


def _layer_fix(key: str, ra: LayerConvention, rb: LayerConvention, na: str, nb: str) -> str:
    va, vb = layer_value(ra, key), layer_value(rb, key)
    if key == "eps":
        return f"{_eps_fix(ra, na, vb)}, {_eps_fix(rb, nb, va)}."
    if key == "variance":
        (fast, nf), (_, ne) = sorted(((ra, na), (rb, nb)), key=lambda p: p[0].defaults.get("variance") != "fast")
        found = re.search(r"(\w*fast\w*)=True", fast.constructor)
        return (f"`{found.group(1)}=False` in {nf} gives {ne}'s two-pass formula." if found
                else f"no argument of {nf} changes it (they differ on data far from zero).")
    if key == "axis":
        return "transpose between channels-first and channels-last, or pass the axis."
    if key == "params":
        return "the parameters have different shapes; not every shape converts (the conventions above say which)."
    return f"{FIXES.get(key, f'set {key} explicitly')} in both."


def layer_lines(a: Side, b: Side, normalizations: Sequence[str]) -> tuple[list[str], list[str]]:
    """One line per default of the other normalizations that differs between `a` and `b` (a difference with the same
    values and fix in several normalizations is one line naming them all), and the normalizations where nothing
    differs. A normalization only one side has is a line of its own."""
    found: dict[tuple[str, str, str, str], tuple[list[str], list[ProofRef]]] = {}
    lines, only_one, same = [], [], []
    for normalization in normalizations:
        ra, rb = a.layer(normalization), b.layer(normalization)
        title = plugin(normalization).title
        if ra is None or rb is None:
            if ra is not None or rb is not None:
                only, other = (a, b) if rb is None else (b, a)
                only_one.append(f"- **{title}**: only {only.name} has the layer; {other.name} has none.")
            continue
        differs = False
        for key in dict.fromkeys([*ra.defaults, *rb.defaults, *ra.facts, *rb.facts]):
            va, vb = layer_value(ra, key), layer_value(rb, key)
            if va is None or vb is None or va == vb:
                continue
            differs = True
            titles, refs = found.setdefault((key, cell(va), cell(vb), _layer_fix(key, ra, rb, a.name, b.name)),
                                            ([], []))
            titles.append(title)
            refs += [*a.layer_proofs(normalization, key), *b.layer_proofs(normalization, key)]
        if not differs:
            same.append(title)
    for (key, va, vb, fix), (titles, refs) in found.items():
        links = list({(r.file, r.name): r for r in refs or PROOFS["matched"][1:]}.values())
        lines.append(f"- **{', '.join(titles)} {key}**: {a.name} {va}, {b.name} {vb} — {fix} "
                     f"Proved by {', '.join(r.link() for r in links)}.")
    return lines + only_one, same


def pair_section(a: Side, b: Side, *, cite: Cite, normalizations: Sequence[str] = ()) -> list[str]:
    """The guide's section for `a` and `b`: one line per differing convention of BatchNorm and of the other
    `normalizations`, and one line naming the normalizations where nothing differs.

    `cite(key, frameworks)` is the "Proved by ..." sentence of BatchNorm statement `key` for those frameworks.
    """
    bn = batchnorm_lines(a, b, cite)
    others, same = layer_lines(a, b, normalizations)
    same = ([] if bn else [plugin(Convention.normalization).title]) + same
    return [f"## {a.name} ↔ {b.name}", "", *bn, *others,
            *([f"- Nothing differs in {', '.join(same)}: the defaults compute the same."] if same else [])]
