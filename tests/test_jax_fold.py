"""JAX/Flax's fold (frameworks/jax/fold.py): bnparity's in jax.numpy on Flax's HWIO layout, every case (float16 and
NHWC included), and a wrong fold caught. Flax has no builtin fold."""

from __future__ import annotations

import pytest
from conftest import framework_installed

if not framework_installed("jax"):
    pytest.skip("jax is not installed", allow_module_level=True)

from fold_checks import check_alexnet, check_every_case  # noqa: E402

from bnparity.frameworks.jax.fold import Folds  # noqa: E402
from bnparity.suites.fold.cases import fold_cases  # noqa: E402
from bnparity.suites.fold.harness import run_folds  # noqa: E402


class _ForgetsEps(Folds):
    @staticmethod
    def _fold(kernel, bias, gamma, beta, mean, var, eps):  # noqa: ANN001, ANN205
        return Folds._fold(kernel, bias, gamma, beta, mean, var, 0.0)


def test_scratch_passes_every_case():
    comparisons = check_every_case(Folds(), skipped=set())
    assert {c.dtype for c in comparisons} == {"float64", "float32", "float16"}
    assert {c.layout for c in comparisons} == {"NCHW", "NHWC", "NC"}


def test_a_wrong_fold_fails():
    cases = [c for c in fold_cases(("float64",)) if c.name.startswith("tiny-variance")]
    assert all(not r.passed and r.weight_ratio > 1e3 for r in run_folds(_ForgetsEps(), cases, impls=("scratch",)))


def test_the_alexnet_fold_keeps_every_prediction():
    check_alexnet(Folds(), _ForgetsEps())
