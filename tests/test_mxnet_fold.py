"""MXNet's fold (frameworks/mxnet/fold.py): bnparity's in mx.nd ops on every case MXNet's CPU operators compute,
the others skipped with the operator's reason, and a wrong fold caught. MXNet has no readable builtin fold."""

from __future__ import annotations

import pytest
from conftest import framework_installed

if not framework_installed("mxnet"):
    pytest.skip("mxnet is not installed", allow_module_level=True)

from fold_checks import check_alexnet, check_every_case  # noqa: E402

from bnparity.frameworks.mxnet.fold import Folds  # noqa: E402
from bnparity.suites.fold.cases import fold_cases  # noqa: E402
from bnparity.suites.fold.harness import run_folds  # noqa: E402


class _AddsMean(Folds):
    @staticmethod
    def _fold(weight, bias, gamma, beta, mean, var, eps):  # noqa: ANN001, ANN205
        return Folds._fold(weight, bias, gamma, beta, -mean, var, eps)  # b' = s·(b + μ) + β


class _ForgetsEps(Folds):
    @staticmethod
    def _fold(weight, bias, gamma, beta, mean, var, eps):  # noqa: ANN001, ANN205
        return Folds._fold(weight, bias, gamma, beta, mean, var, 0.0)


def test_scratch_passes_every_nchw_float32_and_float64_case_and_skips_the_rest_with_reasons():
    comparisons = check_every_case(Folds(), skipped={"/NHWC", "/float16"})
    assert {c.impl for c in comparisons} == {"scratch"} and {c.dtype for c in comparisons} == {"float64", "float32"}
    assert "MKLDNN" in Folds.lacks["builtin"]


def test_a_wrong_fold_fails():
    cases = [c for c in fold_cases(("float64",)) if c.name.startswith("tiny-variance") and c.layout == "NCHW"]
    assert all(not r.passed and r.bias_ratio > 1e3 for r in run_folds(_AddsMean(), cases, impls=("scratch",)))


def test_the_alexnet_fold_keeps_every_prediction():
    check_alexnet(Folds(), _ForgetsEps())
