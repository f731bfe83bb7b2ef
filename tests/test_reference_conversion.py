"""reference/conversion.py: converting then training k steps in the target convention equals training k steps in the
source convention then converting (the exact cases), and the approximated cases stay within their stated bounds."""

from __future__ import annotations

import numpy as np
import pytest

from bnparity.reference import batchnorm
from bnparity.reference.conversion import (
    convert_state,
    cumulative_drift,
    momentum_between,
    unknown_count_drift,
    variance_between,
)
from bnparity.reference.spec import BNSpec
from bnparity.reference.steps import LayerInputs

SHAPE = (4, 3, 2, 2)  # m = 16 values per channel
M = 16


def _inputs(steps: int, seed: int = 0) -> LayerInputs:
    rng = np.random.default_rng(seed)
    xs = tuple(rng.standard_normal(SHAPE) * 2.0 + 0.5 for _ in range(steps))
    return LayerInputs(xs=xs, dys=tuple(rng.standard_normal(SHAPE) for _ in range(steps)), x_eval=xs[0],
                       gamma=np.array([1.0, 0.5, 2.0]), beta=np.array([0.0, 0.1, -0.2]))


def _state(**fields: object) -> BNSpec:
    return BNSpec(init_running_mean=(0.3, -1.0, 2.0), init_running_var=(1.5, 0.2, 4.0), **fields)


def _run(spec: BNSpec, steps: int) -> tuple[np.ndarray, np.ndarray]:
    out = batchnorm.run(spec, _inputs(steps))
    return out.running_mean, out.running_var


def _convert_stats(spec: BNSpec, mean: np.ndarray, var: np.ndarray, **target: object) -> BNSpec:
    """The state (mean, var) of a layer of `spec`'s conventions, converted (through convert_state)."""
    return convert_state(spec.replace(init_running_mean=tuple(mean), init_running_var=tuple(var)),
                         **target).spec


def test_momentum_between_keeps_the_new_batch_weight() -> None:
    for m, src, tgt in [(0.1, "new", "old"), (0.9, "old", "new"), (0.99, "old", "old"), (0.3, "new", "new")]:
        converted = momentum_between(m, src, tgt)
        assert BNSpec(momentum=converted, momentum_weighs=tgt).new_weight == pytest.approx(
            BNSpec(momentum=m, momentum_weighs=src).new_weight, abs=1e-12)
    assert momentum_between(0.1, "new", "old") == 0.9  # rounded: not 0.9000000000000000222


@pytest.mark.parametrize(("source", "target"), [(("new", "unbiased"), ("old", "biased")),
                                                (("old", "biased"), ("new", "unbiased"))])
@pytest.mark.parametrize("steps", [1, 3, 5])
def test_converting_commutes_with_training_when_m_is_known(source: tuple, target: tuple, steps: int) -> None:
    src = _state(momentum=0.1 if source[0] == "new" else 0.9, momentum_weighs=source[0], running_var=source[1])
    conversion = convert_state(src, momentum_weighs=target[0], running_var=target[1], cumulative=False, count=M)
    assert conversion.exact and not conversion.approximations
    got_mean, got_var = _run(conversion.spec, steps)  # convert, then k steps in the target convention
    mean, var = _run(src, steps)  # k steps in the source convention, then convert
    want = _convert_stats(src, mean, var, momentum_weighs=target[0], running_var=target[1], cumulative=False, count=M)
    np.testing.assert_allclose(got_mean, want.init_running_mean, rtol=1e-13)
    np.testing.assert_allclose(got_var, want.init_running_var, rtol=1e-13)


def test_a_wrong_factor_or_a_skipped_conversion_is_caught() -> None:
    src = _state(momentum=0.1, momentum_weighs="new", running_var="unbiased")
    mean, var = _run(src, 3)
    exact = variance_between(np.asarray(var), "unbiased", "biased", M)
    converted = convert_state(src, momentum_weighs="old", running_var="biased", cumulative=False, count=M).spec
    _, got = _run(converted, 3)
    np.testing.assert_allclose(got, exact, rtol=1e-13)
    wrong = src.replace(momentum=0.9, momentum_weighs="old", running_var="biased")  # estimator not converted
    _, skipped = _run(wrong, 3)
    assert not np.allclose(skipped, exact, rtol=1e-3)
    inverted = src.replace(momentum=0.9, momentum_weighs="old", running_var="biased",
                           init_running_var=tuple(np.asarray(src.init_running_var) * M / (M - 1)))  # × m/(m − 1)
    assert not np.allclose(_run(inverted, 3)[1], exact, rtol=1e-3)


def test_without_m_the_variance_is_copied_and_the_error_is_as_stated() -> None:
    src = _state(momentum=0.1, momentum_weighs="new", running_var="unbiased")
    conversion = convert_state(src, momentum_weighs="old", running_var="biased", cumulative=False, count=None)
    assert not conversion.exact
    assert any("(m − 1)/m" in note and "--count" in note for note in conversion.approximations)
    assert conversion.spec.init_running_var == src.init_running_var  # copied
    for steps in (0, 1, 4):
        exact_spec = convert_state(src, momentum_weighs="old", running_var="biased", cumulative=False, count=M).spec
        approx = np.asarray(_run(conversion.spec, steps)[1]) if steps else np.asarray(conversion.spec.init_running_var)
        exact = np.asarray(_run(exact_spec, steps)[1]) if steps else np.asarray(exact_spec.init_running_var)
        relative = np.abs(approx - exact) / np.asarray(exact_spec.init_running_var)
        np.testing.assert_allclose(relative, unknown_count_drift(M, 0.1, steps), rtol=1e-10)


def test_the_cumulative_average_into_a_cumulative_target_is_exact() -> None:
    src = _state(momentum=None, batches_tracked=7, running_var="unbiased")
    conversion = convert_state(src, momentum_weighs="new", running_var="unbiased", cumulative=True, count=M)
    assert conversion.exact and conversion.spec.momentum is None and conversion.spec.batches_tracked == 7
    assert _run(conversion.spec, 3)[1] == pytest.approx(_run(src, 3)[1], rel=1e-14)


@pytest.mark.parametrize("tracked", [0, 2, 9])
def test_the_cumulative_average_into_a_fixed_momentum_is_exact_once_then_bounded(tracked: int) -> None:
    src = _state(momentum=None, batches_tracked=tracked, running_var="biased")
    conversion = convert_state(src, momentum_weighs="old", running_var="biased", cumulative=False, count=M)
    assert not conversion.exact and conversion.spec.momentum == pytest.approx(1 - 1 / (tracked + 1))
    assert "1/" in conversion.approximations[0]
    np.testing.assert_allclose(_run(conversion.spec, 1)[0], _run(src, 1)[0], rtol=1e-13)  # the first step
    for steps in (2, 3, 6):
        inputs = _inputs(steps)
        batch_means = np.stack([batchnorm.batch_stats(x, 1)[0] for x in inputs.xs])
        values = np.vstack([np.asarray(src.init_running_mean)[None], batch_means])
        spread = values.max(axis=0) - values.min(axis=0)
        err = np.abs(_run(conversion.spec, steps)[0] - _run(src, steps)[0])
        bound = cumulative_drift(tracked, steps) * spread
        assert np.all(err <= bound * (1 + 1e-12) + 1e-15)
        assert err.max() > 0.05 * bound.max()  # the bound is not vacuous: the drift is real
    assert cumulative_drift(tracked, 1) == 0.0


def test_a_count_below_two_cannot_convert_the_estimator() -> None:
    with pytest.raises(ValueError, match="m >= 2"):
        variance_between(np.ones(2), "unbiased", "biased", 1)
