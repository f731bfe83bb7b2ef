"""What the seed tutorial's moving-average pitfalls do to a trained network's eval accuracy.

The tutorial (the PyTorch one of the seed material, bnparity.seeds.facts.TUTORIAL_LAYER) writes a 1-D BatchNorm
by hand for an MLP on MNIST. Its faults, as bnparity.seeds.facts.TUTORIAL_FAULTS states them: the moving averages
are updated as ``moving = m·moving + (1 − m)·batch`` with m = 0.1, so the *new* batch gets weight 0.9 (PyTorch's
momentum=0.1 gives it 0.1); moving_var (and moving_mean) start at zeros, not ones; γ and β are initialised from
N(0, 1). Its variance is the two-pass biased one, and eval mode normalizes with the moving statistics.

Running statistics never change what training computes (training normalizes with batch statistics), so
the weights a run learns are the same whichever rule its running statistics follow. This experiment takes
the weights of a finished BN run, re-estimates every BN layer's running statistics from the run's own
first training batches (same order, same dropout masks) under each rule with the float64 NumPy AlexNet,
and measures the test accuracy in eval mode after k steps; beside them, the accuracy with the running
statistics the framework itself accumulated during training. The rules (RULES): the network's own convention
("correct"), each moving-average fault alone ("zero-start", "swapped") and the tutorial's layer as written
("tutorial", whose spec is TUTORIAL_LAYER.spec). The γ and β fault acts on training, not on the running
statistics: tutorial.py measures it by training the tutorial's own MLP.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import numpy as np

from bnparity.reference import alexnet_numpy as anp
from bnparity.reference.alexnet import AlexNetSpec, param_shapes, running_names
from bnparity.reference.spec import BNSpec
from bnparity.seeds.facts import TUTORIAL_FAULTS, TUTORIAL_LAYER
from bnparity.suites.schema import PitfallRecord


@dataclass(frozen=True)
class Rule:
    """A moving-average rule: the network's BN convention with some fields changed, or a fixed convention.

    Attributes:
        name: the rule's name in the records (stable: old pitfalls.json files name the same rules).
        description: what the rule does, in the seed facts' words where it is one of the tutorial's faults.
        changes: the fields of the network's BNSpec the rule changes (ignored when `fixed` is given).
        fixed: the rule's whole convention, whatever the network's (the tutorial's layer as written).
    """

    name: str
    description: str
    changes: dict[str, float | str]
    fixed: BNSpec | None = None

    def spec(self, base: BNSpec) -> BNSpec:
        return self.fixed if self.fixed is not None else dataclasses.replace(base, **self.changes)

    def changes_from(self, base: BNSpec) -> dict[str, float | str]:
        """What a record states: `changes`, or for a fixed convention the fields in which it differs from `base`."""
        if self.fixed is None:
            return dict(self.changes)
        spec = self.fixed
        return {f.name: getattr(spec, f.name) for f in dataclasses.fields(spec)
                if getattr(spec, f.name) != getattr(base, f.name)}


_SWAPPED, _ZERO_START = TUTORIAL_FAULTS[0], TUTORIAL_FAULTS[1]
_CORRECT = BNSpec()  # PyTorch's BatchNorm1d semantics: the convention the faults are stated against

RULES = (
    Rule("correct", f"new batch weight {_CORRECT.new_weight:g} (PyTorch's BatchNorm1d semantics, the network's own "
                    f"convention), moving_var starts at {_CORRECT.init_running_var:g}", {}),
    Rule("zero-start", f"as correct, but moving_var starts at {TUTORIAL_LAYER.spec.init_running_var:g}: "
                       f"{_ZERO_START.statement}", {"init_running_var": TUTORIAL_LAYER.spec.init_running_var}),
    Rule("swapped", f"new batch weight {TUTORIAL_LAYER.new_batch_weight:g}: {_SWAPPED.statement}",
         {"momentum": TUTORIAL_LAYER.new_batch_weight, "momentum_weighs": "new"}),
    Rule("tutorial", f"the tutorial's layer as written: `{TUTORIAL_LAYER.update}` with m = {TUTORIAL_LAYER.m:g} "
                     f"(new batch weight {TUTORIAL_LAYER.new_batch_weight:g}), moving statistics start at "
                     f"{TUTORIAL_LAYER.moving_start}, {TUTORIAL_LAYER.variance}", {}, fixed=TUTORIAL_LAYER.spec),
)


def initial_running(arch: AlexNetSpec, spec: BNSpec) -> dict[str, np.ndarray]:
    """Every BN layer's running mean and variance at their initial values (spec.init_running_*)."""
    shapes = param_shapes(arch)
    return {name: np.full(shapes[name], spec.init_running_mean if name.endswith("mean") else spec.init_running_var)
            for name in running_names(arch)}


def evaluate(arch: AlexNetSpec, params: dict[str, np.ndarray], images: np.ndarray, labels: np.ndarray, *,
             batch_size: int = 250) -> tuple[float, float]:
    """(test accuracy, mean cross-entropy) in eval mode, float64."""
    correct, loss = 0, 0.0
    for i in range(0, len(labels), batch_size):
        logits = anp.forward(arch, params, images[i:i + batch_size], train=False).logits
        y = labels[i:i + batch_size]
        correct += int((logits.argmax(axis=1) == y).sum())
        loss += float(anp.per_example_loss(logits, y).sum())
    return correct / len(labels), loss / len(labels)


def _check(arch: AlexNetSpec, steps: tuple[int, ...]) -> None:
    if not arch.batch_norm:
        raise ValueError("the pitfalls concern BatchNorm: the network must have BN layers")
    if not steps or list(steps) != sorted(set(steps)) or steps[0] < 1:
        raise ValueError(f"steps must be ascending integers >= 1. Received: {steps}")


def reestimate(arch: AlexNetSpec, params: dict[str, np.ndarray],
               train_batches: Iterable[tuple[np.ndarray, np.ndarray, list[np.ndarray] | None]],
               steps: tuple[int, ...]) -> Iterator[tuple[int, dict[str, dict[str, np.ndarray]]]]:
    """Yield (k, {rule: running statistics}) after each of `steps` training batches, every rule from its start.

    The batch statistics μ_B, σ²_B come from a training-mode forward pass of the fixed `params`; each rule
    folds them into its own running statistics (bnparity.reference.alexnet_numpy.running_after_step).
    """
    _check(arch, steps)
    specs = {rule.name: rule.spec(arch.bn) for rule in RULES}
    running = {name: initial_running(arch, spec) for name, spec in specs.items()}
    k = 0
    for k, (x, _, masks) in enumerate(train_batches, start=1):
        batch_stats = anp.forward(arch, params, x, train=True, dropout_masks=masks).batch_stats  # μ_B, σ²_B
        for name, spec in specs.items():
            running[name] = anp.running_after_step(arch, running[name], batch_stats, convention=spec)
        if k in steps:
            yield k, running
        if k == steps[-1]:
            return
    raise ValueError(f"needed {steps[-1]} training batches. Received: {k}")


def measure(arch: AlexNetSpec, params: dict[str, np.ndarray],
            train_batches: Iterable[tuple[np.ndarray, np.ndarray, list[np.ndarray] | None]],
            test: tuple[np.ndarray, np.ndarray], *, steps: tuple[int, ...],
            on_result: Callable[[PitfallRecord], None] = lambda r: None) -> list[PitfallRecord]:
    """Test accuracy with the trained running statistics, then with every rule's after each of `steps` batches.

    Args:
        arch: the network (with BN).
        params: the trained parameters, canonical layout; their running statistics give the "trained" row.
        train_batches: (images, labels, dropout masks) in training order; at least max(steps) of them.
        test: (images, labels) to evaluate on.
        steps: after how many batches to evaluate, ascending.
        on_result: called with each result as soon as it is known (to save it).
    """
    _check(arch, steps)
    results: list[PitfallRecord] = []

    def record(rule: str, k: int | None, p: dict[str, np.ndarray]) -> None:
        accuracy, loss = evaluate(arch, p, *test)
        results.append(PitfallRecord(rule, k, accuracy, loss))
        on_result(results[-1])

    record("trained", None, params)
    for k, running in reestimate(arch, params, train_batches, steps):
        for name, stats in running.items():
            record(name, k, {**params, **stats})
    return results
