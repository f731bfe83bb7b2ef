"""BatchNorm state between conventions: the formulas of issue 12's `bnparity convert`, once, in float64 NumPy.

A BatchNorm layer's state is γ, β, the running mean μ̂ and the running variance σ̂²; its constructor adds the
momentum (and what it weighs) and ε. Two layers of different frameworks hold the *same* state differently:

- momentum: "new" (PyTorch: μ̂ ← (1 − m)·μ̂ + m·μ_B) or "old" (MXNet, Flax: μ̂ ← m·μ̂ + (1 − m)·μ_B). The weight
  of the new batch w is m or 1 − m; converting keeps w: m' = m if both weigh the same, else 1 − m.
- running variance: "unbiased" (PyTorch stores σ²_B·m/(m − 1), m the values per channel of a batch) or "biased"
  (MXNet, Flax store σ²_B). With a constant count m per channel the two running averages are proportional:

      unbiased:  r_k = (1 − w)·r_{k−1} + w·σ²_{B,k}·m/(m − 1)
      biased:    b_k = (1 − w)·b_{k−1} + w·σ²_{B,k}

  The update is linear, so if b_0 = r_0·(m − 1)/m then b_k − r_k·(m − 1)/m = (1 − w)·(b_{k−1} − r_{k−1}·(m − 1)/m)
  = ... = (1 − w)^k·(b_0 − r_0·(m − 1)/m) = 0 for every k: **biased = unbiased·(m − 1)/m exactly**, before and after
  any number of steps (the initial value included, since it is converted too). The inverse is × m/(m − 1).
- PyTorch's momentum=None is the cumulative average: the k-th batch gets weight 1/k, k from num_batches_tracked.
  A layer with a fixed momentum cannot reproduce 1/(k + 1), 1/(k + 2), ...: the conversion gives the target the
  next step's weight 1/(k + 1) (its first step is exact) and states how far later steps drift (`cumulative_drift`).
- m unknown: the factor (m − 1)/m (or m/(m − 1)) cannot be applied. The variance is copied as it is and the result
  says so: the target's eval normalizes with a variance 1/(m − 1) too large (or too small), relative, and after j
  more training steps that error has shrunk to (1 − w)^j of itself (`unknown_count_drift`).

Functions take and return per-channel arrays (or BNSpecs whose init_running_mean/var hold them, so that the
reference protocol `batchnorm.run` can run the converted state).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .spec import BNSpec, MomentumWeighs, VarianceEstimator


def momentum_between(momentum: float, source: MomentumWeighs, target: MomentumWeighs) -> float:
    """The momentum argument of a `target`-weighing layer that gives the new batch the same weight w:
    m if both weigh the same thing, else 1 − m (rounded to 12 digits: 1 − 0.9 is 0.09999999999999998)."""
    return float(momentum) if source == target else round(1.0 - float(momentum), 12)


def variance_between(var: np.ndarray, source: VarianceEstimator, target: VarianceEstimator, m: int) -> np.ndarray:
    """A running variance stored by the `source` estimator, as the `target` estimator stores it, for batches of m
    values per channel: unbiased -> biased × (m − 1)/m, biased -> unbiased × m/(m − 1) (exact, see the module
    docstring); the same estimator: unchanged. Raises ValueError for m < 2 (m/(m − 1) is undefined)."""
    var = np.asarray(var, dtype=np.float64)
    if source == target:
        return var
    if m < 2:
        raise ValueError(f"the running variance's estimator cannot be converted for a count of {m} values per "
                         "channel (m/(m − 1) needs m >= 2)")
    if source == "unbiased":
        return var * (m - 1) / m  # σ̂²_biased = σ̂²_unbiased·(m − 1)/m
    return var * m / (m - 1)  # σ̂²_unbiased = σ̂²_biased·m/(m − 1)


def cumulative_drift(batches_tracked: int, steps: int) -> float:
    """How far apart, at most, a cumulative average (PyTorch's momentum=None, k = `batches_tracked` batches so far)
    and its fixed-weight replacement w = 1/(k + 1) are after `steps` further updates, as a fraction of the range
    (max − min) of the values averaged (the running value before the first step and the `steps` batch values).

    Both are convex combinations of the same values v_0 (the running value), v_1..v_j (the batches): a_i and b_i.
    |Σ (a_i − b_i)·v_i| ≤ ½ Σ |a_i − b_i| · (max v − min v) (the total-variation bound); this returns ½ Σ |a_i − b_i|.
    Cumulative: a_0 = k/(k + j), a_i = 1/(k + j). Fixed w: b_0 = (1 − w)^j, b_i = w·(1 − w)^(j − i). 0 for j ≤ 1.
    """
    k, j = int(batches_tracked), int(steps)
    if j <= 1:
        return 0.0
    w = 1.0 / (k + 1)
    a = np.array([k / (k + j)] + [1.0 / (k + j)] * j)
    b = np.array([(1.0 - w) ** j] + [w * (1.0 - w) ** (j - i) for i in range(1, j + 1)])
    return float(0.5 * np.abs(a - b).sum())


def unknown_count_drift(m: int, new_weight: float, steps: int) -> float:
    """The relative error of a running variance whose estimator was NOT converted (m unknown), after `steps` further
    updates in the target: |b_j − b_j^exact| / b_0^exact = (1 − w)^j · |m/(m − 1) − 1| = (1 − w)^j / (m − 1) (the
    initial error decays with the old value's weight, see the module docstring), for an unbiased source copied into
    a biased target; the other direction has (1 − w)^j / m relative to its exact b_0 = r_0·m/(m − 1)."""
    return (1.0 - new_weight) ** steps / (m - 1)


@dataclass(frozen=True)
class Conversion:
    """A BatchNorm layer's conventions and running statistics converted.

    Attributes:
        spec: the target's spec: momentum in the target's meaning, its estimator, ε, and the converted running
            statistics as per-channel init_running_mean / init_running_var (batches_tracked kept for a cumulative
            target).
        exact: whether k training steps in the target equal k steps in the source followed by this conversion
            (False: a cumulative average into a fixed momentum, or an estimator change without m).
        approximations: one sentence per thing that is not exact, saying what and by how much.
    """

    spec: BNSpec
    exact: bool
    approximations: tuple[str, ...] = ()


def convert_state(source: BNSpec, *, momentum_weighs: MomentumWeighs, running_var: VarianceEstimator,
                  cumulative: bool, count: int | None, steps: int = 3) -> Conversion:
    """The state of a BatchNorm layer in the `source` spec's conventions (its init_running_mean / init_running_var:
    the current running statistics, per channel) in a target's conventions.

    Args:
        source: the source layer's spec (momentum None: the cumulative average, batches_tracked batches so far).
        momentum_weighs: what the target's momentum weighs ("new" or "old").
        running_var: the target's running-variance estimator.
        cumulative: whether the target has a cumulative average (PyTorch's momentum=None) to hold a source's.
        count: m, the values per channel of the batches the layer trains on; None when unknown.
        steps: the training steps the approximation statement quotes its bound for.
    """
    notes: list[str] = []
    exact = True
    mean = np.asarray(source.init_running_mean, dtype=np.float64)
    var = np.asarray(source.init_running_var, dtype=np.float64)
    target_momentum: float | None
    if source.momentum is None and cumulative:
        target_momentum = None
    elif source.momentum is None:
        k = source.batches_tracked
        w = 1.0 / (k + 1)  # the cumulative average's next weight
        target_momentum = w if momentum_weighs == "new" else 1.0 - w
        exact = False
        notes.append(f"the cumulative average (momentum=None, num_batches_tracked={k}) gives the next batches "
                     f"weights 1/{k + 1}, 1/{k + 2}, ...; a fixed momentum holds 1/{k + 1} = {w:.6g} for every step: "
                     f"the first step is exact, after j steps the running statistics differ by at most "
                     f"{cumulative_drift(k, steps):.3g} (j = {steps}) of the range of the averaged values "
                     "(reference/conversion.py: cumulative_drift)")
    else:
        target_momentum = momentum_between(source.momentum, source.momentum_weighs, momentum_weighs)
    if source.running_var != running_var:
        if count is None:
            exact = False
            factor = "(m − 1)/m" if source.running_var == "unbiased" else "m/(m − 1)"
            notes.append(f"m (values per channel of a batch) was not given: the {source.running_var} running variance "
                         f"is copied as the {running_var} one without the factor {factor}; the target's eval "
                         f"normalizes with a variance off by a relative 1/(m − 1) (0.8% for m = 128), an error that "
                         f"shrinks to (1 − w)^j of itself after j training steps; pass --count m to convert exactly")
        else:
            var = variance_between(var, source.running_var, running_var, count)
    spec = source.replace(momentum=target_momentum, momentum_weighs=momentum_weighs, running_var=running_var,
                          init_running_mean=tuple(float(v) for v in mean.reshape(-1)),
                          init_running_var=tuple(float(v) for v in var.reshape(-1)))
    return Conversion(spec=spec, exact=exact, approximations=tuple(notes))  # type: ignore[arg-type]
