"""The gate of LayerNorm, GroupNorm, InstanceNorm and RMSNorm catches the convention bugs porters make.

Each bug is a layer that computes a neighbouring convention while claiming the asked one: the float64 reference run
with the bug's spec (or, for GroupNorm's channel-to-group map, on permuted channels), rounded to the case's dtype as
a framework's output is. The gated cases of the normalization, run through the harness, must fail it on the cases
named here; the same layer without the bug passes every gated case. If a case that catches a bug were removed, or a
convention silently merged into another, a test here goes red.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from bnparity.frameworks.base import LayerAdapter, LayerSession, StepResult
from bnparity.reference.layout import channel_axis
from bnparity.reference.normalization import run_reference
from bnparity.reference.spec import GNSpec, LayerSpec, LNSpec
from bnparity.reference.steps import LayerInputs, LayerOutputs
from bnparity.suites.parity import harness
from bnparity.suites.parity.cases import make_inputs, standard_cases
from bnparity.suites.parity.summary import gate_failures


def _interleaved(spec: GNSpec, inputs: LayerInputs) -> LayerOutputs:
    """GroupNorm with channel c in group c mod G (a reshape to (C/G, G) instead of (G, C/G)): the reference on the
    channels reordered so that those groups are consecutive, then put back."""
    ndim = inputs.xs[0].ndim
    axis, channels = channel_axis(ndim, spec.axis), inputs.xs[0].shape[channel_axis(ndim, spec.axis)]
    order = np.argsort(np.arange(channels) % spec.groups, kind="stable")
    back = np.argsort(order)

    def take(a: np.ndarray | None, index: np.ndarray, ax: int) -> np.ndarray | None:
        return None if a is None else np.take(a, index, axis=ax)

    permuted = LayerInputs(xs=tuple(take(x, order, axis) for x in inputs.xs),
                           dys=tuple(take(d, order, axis) for d in inputs.dys),
                           x_eval=take(inputs.x_eval, order, axis), gamma=take(inputs.gamma, order, 0),
                           beta=take(inputs.beta, order, 0))
    out = run_reference(spec, permuted)
    return LayerOutputs(y=take(out.y, back, axis), dx=take(out.dx, back, axis), dgamma=take(out.dgamma, back, 0),
                        dbeta=take(out.dbeta, back, 0), running_mean=None, running_var=None,
                        y_eval=take(out.y_eval, back, axis))


def _flip(spec: LayerSpec) -> LayerSpec:
    """The momentum passed on unconverted: the same number, weighing the other estimate."""
    return spec.replace(momentum_weighs="new" if spec.momentum_weighs == "old" else "old")


# bug -> (normalization, the layer's computation, words naming the gated cases that must catch it); "<norm>-eps-ignored"
# is a layer that is not given the spec's ε and uses the default of the case's spec whatever is asked
BUGS: dict[str, tuple[str, Callable[[LayerSpec, LayerInputs], LayerOutputs], tuple[str, ...]]] = {
    "layernorm-flax-eps": ("layernorm", lambda s, i: run_reference(s.replace(eps=1e-6), i), ("float64",)),
    "layernorm-last-axis-only": ("layernorm", lambda s, i: run_reference(s.replace(normalized_dims=1, params="feature")
                                                                        if s.normalized_dims > 1 else s, i),
                                 ("dims2",)),
    "layernorm-bias-kept": ("layernorm", lambda s, i: run_reference(s.replace(bias=True), i), ("bias_off",)),
    "groupnorm-interleaved-groups": ("groupnorm", _interleaved, ("g2", "g4")),
    "groupnorm-flax-default-groups": ("groupnorm", lambda s, i: run_reference(
        s.replace(groups=1) if s.groups != 1 else s, i), ("g2", "g4", "g8")),
    "instancenorm-biased-running-var": ("instancenorm", lambda s, i: run_reference(
        s.replace(running_var="biased"), i), ("running_stats",)),
    "instancenorm-momentum-unconverted": ("instancenorm", lambda s, i: run_reference(_flip(s), i),
                                          ("momentum_old0.9",)),
    "instancenorm-eval-with-input-statistics": ("instancenorm", lambda s, i: LayerOutputs(**{
        **run_reference(s, i).as_dict(),
        "y_eval": run_reference(s.replace(track_running_stats=False), i).y_eval}), ("running_stats",)),
    "rmsnorm-mean-subtracted": ("rmsnorm", lambda s, i: LayerOutputs(**{
        **run_reference(LNSpec(eps=s.eps, affine=s.affine, normalized_dims=s.normalized_dims, params=s.params,
                               bias=False), i).as_dict(), "dbeta": None}), ("rmsnorm-nc-32x16", "offset100")),
    **{f"{n}-eps-ignored": (n, lambda s, i: run_reference(s.replace(eps=type(s)().eps), i), ("eps1e-3",))
       for n in ("layernorm", "groupnorm", "instancenorm", "rmsnorm")},
    "rmsnorm-machine-eps-everywhere": ("rmsnorm", lambda s, i: run_reference(
        s.replace(eps=float(np.finfo(np.float32).eps)), i), ("float64",)),
}


class _Outputs(LayerSession):
    """Replays precomputed outputs through the session protocol (the adapter's `run` is what the harness calls)."""

    def train_step(self, x: np.ndarray, dy: np.ndarray) -> StepResult:  # pragma: no cover - run is overridden
        raise NotImplementedError

    def running_stats(self) -> tuple[np.ndarray, np.ndarray] | None:  # pragma: no cover
        raise NotImplementedError

    def eval(self, x: np.ndarray) -> np.ndarray:  # pragma: no cover
        raise NotImplementedError


class BuggyLayer(LayerAdapter):
    """A layer that claims the asked spec and computes `compute(spec, inputs)`, rounded to the inputs' dtype."""

    framework = "numpy"
    native_axis = 1

    def __init__(self, normalization: str, compute: Callable[[LayerSpec, LayerInputs], LayerOutputs],
                 impl: str) -> None:
        self.normalization, self.compute, self.impl = normalization, compute, impl

    def realize(self, spec: LayerSpec, dtype: np.dtype) -> LayerSpec:
        return spec

    def build(self, spec: LayerSpec, **kw: object) -> LayerSession:  # pragma: no cover - run is overridden
        return _Outputs()

    def run(self, inputs: LayerInputs, *, spec: LayerSpec, use_defaults: bool = False) -> LayerOutputs:
        out = self.compute(spec, inputs)
        return LayerOutputs(**{k: None if v is None else np.asarray(v).astype(inputs.dtype)
                               for k, v in out.as_dict().items()})


def _failed(adapter: LayerAdapter) -> set[str]:
    cases = [c for c in standard_cases([adapter.normalization]) if c.gated("matched")]
    records = [r for case in cases for r in harness.run_case(case, make_inputs(case), [adapter], "matched")]
    assert records
    return {r.case for r in gate_failures(records)}


@pytest.mark.parametrize("normalization", sorted({n for n, _, _ in BUGS.values()}))
def test_the_correct_layer_passes_every_gated_case(normalization):
    assert _failed(BuggyLayer(normalization, run_reference, "correct")) == set()


@pytest.mark.parametrize("bug", sorted(BUGS))
def test_each_bug_fails_the_gate_on_its_cases(bug):
    normalization, compute, words = BUGS[bug]
    failed = _failed(BuggyLayer(normalization, compute, bug))
    for word in words:
        assert any(word in name for name in failed), f"{bug} passes every gated case {word!r} names: {sorted(failed)}"
