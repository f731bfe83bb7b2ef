"""The gate catches the bugs porters actually make, and the tolerance is as tight as it says.

- The gated matrix (`standard_cases`) holds a case for each bug that the other cases cannot see, and each of
  those cases passes for every installed framework and implementation.
- Each bug, put into a float32 NumPy BatchNorm written here, fails the gate (`gate_failures` of the harness's
  records): the cases, not this file's hopes, are what catch it. The same BatchNorm without the bug passes.
- The tolerance is judged against implementations, not against its own constants: at κ ≫ 1 a careful float32
  BatchNorm (two-pass σ²_B) passes and a naive one (σ²_B = E[x²] − E[x]²) fails.
- An adapter's `realize` (the spec the harness then compares with) may only change what its framework cannot
  configure: a realize that "converts" the momentum wrongly makes the harness judge the layer against a spec the
  case never asked for.

benchmarks/mutations.py puts each of these bugs into a copy of the repository and runs these tests on it.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from conftest import require

from bnparity.frameworks.base import LayerAdapter, LayerSession, StepResult, Unsupported
from bnparity.frameworks.registry import IMPLS, Unavailable, framework_names, load_adapter
from bnparity.reference.spec import BNSpec
from bnparity.suites.parity import harness
from bnparity.suites.parity.cases import ParityCase, hard_cases, make_inputs, standard_cases
from bnparity.suites.parity.summary import gate_failures
from bnparity.suites.schema import LayerRecord

# A bug, and the words naming the gated cases that must catch it.
BUGS = {
    "momentum-unconverted": ("momentum_old",),  # the spec's momentum used as the new batch's weight, whatever it weighs
    "init-ignored": ("init0.5-2",),  # running statistics started at 0 and 1 whatever the spec says
    "one-pass-variance": ("offset100",),  # σ²_B = E[x²] − E[x]² in the input's dtype
    "eps-ignored": ("eps1e-3",),  # the default ε = 1e-5 whatever the spec asks
}
# The gated cases a porter's bug shows on: the bugs' cases and the non-default new-batch weight.
BUG_CASES = tuple(c for c in standard_cases(["batchnorm"])
                  if any(w in c.name for words in BUGS.values() for w in words) or "momentum0.3" in c.name)


class _Session(LayerSession):
    """BatchNorm in NumPy, in the input's dtype (float32 arithmetic for float32 data), optionally with a bug."""

    def __init__(self, spec: BNSpec, channels: int, dtype: np.dtype, gamma: np.ndarray, beta: np.ndarray,
                 bug: str | None) -> None:
        self.spec, self.t, self.bug = spec, np.dtype(dtype).type, bug
        self.gamma, self.beta = np.asarray(gamma, dtype), np.asarray(beta, dtype)
        mean0, var0 = (0.0, 1.0) if bug == "init-ignored" else (spec.init_running_mean, spec.init_running_var)
        self.mean, self.var = np.full(channels, mean0, dtype), np.full(channels, var0, dtype)

    def _c(self, v: np.ndarray, ndim: int) -> np.ndarray:
        shape = [1] * ndim
        shape[self.spec.axis % ndim] = -1
        return v.reshape(shape)

    def _stats(self, x: np.ndarray) -> tuple[tuple[int, ...], np.ndarray, np.ndarray]:
        axes = tuple(a for a in range(x.ndim) if a != self.spec.axis % x.ndim)
        mu = x.mean(axis=axes, dtype=x.dtype)  # μ_B
        if self.bug == "one-pass-variance":
            var = (x * x).mean(axis=axes, dtype=x.dtype) - mu * mu  # E[x²] − E[x]²
        else:
            d = x - self._c(mu, x.ndim)
            var = (d * d).mean(axis=axes, dtype=x.dtype)  # two passes
        return axes, mu, var

    def _normalize(self, x: np.ndarray, mu: np.ndarray, var: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        eps = 1e-5 if self.bug == "eps-ignored" else self.spec.eps
        inv = self.t(1) / np.sqrt(var + self.t(eps))
        x_hat = (x - self._c(mu, x.ndim)) * self._c(inv, x.ndim)
        return x_hat, inv

    def train_step(self, x: np.ndarray, dy: np.ndarray) -> StepResult:
        t = self.t
        axes, mu, var = self._stats(x)
        x_hat, inv = self._normalize(x, mu, var)
        y = self._c(self.gamma, x.ndim) * x_hat + self._c(self.beta, x.ndim)
        dbeta = dy.sum(axis=axes, dtype=x.dtype)
        dgamma = (dy * x_hat).sum(axis=axes, dtype=x.dtype)
        m = x.size // x.shape[self.spec.axis % x.ndim]
        dx = self._c(self.gamma * inv, x.ndim) * (
            dy - self._c(dbeta / t(m), x.ndim) - x_hat * self._c(dgamma / t(m), x.ndim))
        w = t(self.spec.momentum if self.bug == "momentum-unconverted" else self.spec.new_weight)
        stored = var * t(m / (m - 1)) if self.spec.running_var == "unbiased" else var
        self.mean = (t(1) - w) * self.mean + w * mu
        self.var = (t(1) - w) * self.var + w * stored
        return StepResult(y=y, dx=dx, dgamma=dgamma, dbeta=dbeta)

    def running_stats(self) -> tuple[np.ndarray, np.ndarray] | None:
        return (self.mean, self.var) if self.spec.track_running_stats else None

    def eval(self, x: np.ndarray) -> np.ndarray:
        mu, var = (self.mean, self.var) if self.spec.track_running_stats else self._stats(x)[1:]
        x_hat, _ = self._normalize(x, mu, var)
        return self._c(self.gamma, x.ndim) * x_hat + self._c(self.beta, x.ndim)


class NumpyBatchNorm(LayerAdapter):
    """A BatchNorm in NumPy that computes in the input's dtype and follows the spec, or has one of BUGS."""

    framework = "numpy"
    normalization = "batchnorm"
    native_axis = 1

    def __init__(self, bug: str | None = None) -> None:
        if bug is not None and bug not in BUGS:
            raise ValueError(f"bug must be None or one of {', '.join(BUGS)}. Received: {bug!r}")
        self.bug = bug
        self.impl = bug or "correct"

    def realize(self, spec: BNSpec, dtype: np.dtype) -> BNSpec:
        return spec

    def build(self, spec: BNSpec, *, shape: tuple[int, ...], dtype: np.dtype, gamma: np.ndarray,
              beta: np.ndarray, use_defaults: bool) -> _Session:
        return _Session(spec, shape[spec.axis], dtype, gamma, beta, self.bug)


def _records(adapter: LayerAdapter, cases: list[ParityCase]) -> list[LayerRecord]:
    with np.errstate(invalid="ignore"):  # E[x²] − E[x]² can go negative: NaN, which the comparison fails
        return [r for case in cases for r in harness.run_case(case, make_inputs(case), [adapter], "matched")]


def _failed_cases(records: list[LayerRecord]) -> set[str]:
    return {r.case for r in gate_failures(records)}


def test_the_gate_has_a_case_for_each_bug():
    gated = {c.name: c for c in standard_cases(["batchnorm"]) if c.gated("matched")}
    for bug, words in BUGS.items():
        assert [n for n in gated if any(w in n for w in words)], f"no gated case for {bug}"
    old = [c for c in BUG_CASES if c.spec.momentum_weighs == "old"]
    assert old and all(c.spec.new_weight != c.spec.momentum for c in old)  # reading it as the new weight shows
    default = BNSpec().new_weight  # a weight that is neither the default nor its complement shows 0.1 vs 0.9 mix-ups
    assert any(c.spec.new_weight not in (default, 1 - default) and c.spec.momentum_weighs == "new" for c in BUG_CASES)
    initial = (BNSpec().init_running_mean, BNSpec().init_running_var)
    assert any((c.spec.init_running_mean, c.spec.init_running_var) != initial for c in BUG_CASES)


def test_a_careful_float32_batchnorm_passes_every_gated_case():
    records = _records(NumpyBatchNorm(), standard_cases(["batchnorm"]))
    assert records and not gate_failures(records)


@pytest.mark.parametrize("bug", sorted(BUGS))
def test_each_bug_fails_the_gate_on_its_case(bug):
    failed = _failed_cases(_records(NumpyBatchNorm(bug), standard_cases(["batchnorm"])))
    for word in BUGS[bug]:
        assert any(word in name for name in failed), f"{bug} passes every gated case {word!r} names: {failed}"


# κ ≫ 1: 1 + |μ_B|/σ_B of about 29 (32×16, mean 18 over unit spread), 106 (the gated offset case) and 1e4 (the hard
# input). Measured here: the two-pass float32 BatchNorm stays within 0.08 of the tolerance on each (so a κ that grew
# like √κ, 93× tighter at 1e4, fails it); the one-pass one exceeds it 1.9× at κ ≈ 29 (a C_ACC ten times larger
# allows 2.9× more there and passes it) and 11× at κ ≈ 106 (a κ² tolerance passes both).
LARGE_KAPPA = {
    "29": ParityCase(name="nc-32x16-float32-offset18", shape=(32, 16), spec=BNSpec(axis=1), dtype="float32", gate=False,
                     loc=(18.0, 18.0), spread=(1.0, 1.0)),
    "106": next(c for c in standard_cases(["batchnorm"]) if "offset100" in c.name),
    "1e4": next(c for c in hard_cases(["batchnorm"]) if "offset1e4" in c.name),
}


def _passes(adapter: LayerAdapter, case: ParityCase) -> bool:
    records = _records(adapter, [dataclasses.replace(case, gate=True)])
    # The case is far from zero relative to its spread: κ ≫ 1.
    assert records and min(r.kappa for r in records if r.status == "ok") > 10
    return not gate_failures(records)


@pytest.mark.parametrize("kappa", ["29", "106", "1e4"])
def test_tolerance_passes_a_two_pass_float32_batchnorm_at_large_kappa(kappa):
    assert _passes(NumpyBatchNorm(), LARGE_KAPPA[kappa])


@pytest.mark.parametrize("kappa", ["29", "106"])
def test_tolerance_fails_a_one_pass_float32_batchnorm_at_large_kappa(kappa):
    assert not _passes(NumpyBatchNorm("one-pass-variance"), LARGE_KAPPA[kappa])


def _adapter(framework: str, impl: str) -> LayerAdapter:
    require(framework)
    adapter = load_adapter(framework, impl)
    assert not isinstance(adapter, Unavailable), adapter.reason  # installed but broken is a failure, not a skip
    return adapter


PAIRS = [pytest.param(f, i, id=f"{f}-{i}") for f in framework_names() for i in IMPLS]


@pytest.mark.parametrize("framework,impl", PAIRS)
def test_the_bug_cases_pass_for_every_framework(framework, impl):
    records = _records(_adapter(framework, impl), list(BUG_CASES))
    assert {r.case for r in records} == {c.name for c in BUG_CASES}
    assert not gate_failures(records), gate_failures(records)
    for r in records:
        assert r.status in ("ok", "skipped"), r
        assert r.status == "ok" or r.reason.startswith(f"{framework}:"), r  # a skip names its reason


@pytest.mark.parametrize("framework,impl", PAIRS)
def test_realize_changes_only_what_the_framework_cannot_configure(framework, impl):
    adapter = _adapter(framework, impl)
    float32_rounding = float(np.finfo(np.float32).eps) / 2  # a momentum a framework keeps in float32
    checked = 0
    for case in standard_cases(["batchnorm"]):
        try:
            realized = adapter.realize(case.spec, make_inputs(case).dtype)
        except Unsupported:
            continue
        asked = case.spec
        same_otherwise = realized.replace(running_var=asked.running_var, momentum=asked.momentum,
                                          momentum_weighs=asked.momentum_weighs)
        assert same_otherwise == asked, f"{case.name}: asked {asked}, realized {realized}"
        assert realized.new_weight == pytest.approx(asked.new_weight, abs=float32_rounding), case.name
        checked += 1
    assert checked

