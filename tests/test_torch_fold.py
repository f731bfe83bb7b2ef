"""PyTorch's folds (frameworks/torch/fold.py): torch.nn.utils.fusion's and bnparity's in torch ops, every case, and a
wrong fold caught."""

from __future__ import annotations

import pytest
from conftest import framework_installed

if not framework_installed("torch"):
    pytest.skip("torch is not installed", allow_module_level=True)

from fold_checks import check_alexnet, check_every_case  # noqa: E402
from torch.nn.utils import fusion  # noqa: E402

from bnparity.frameworks.torch.fold import Folds  # noqa: E402
from bnparity.suites.fold.cases import fold_cases  # noqa: E402
from bnparity.suites.fold.harness import run_folds  # noqa: E402


class _ForgetsEps(Folds):
    @staticmethod
    def _fold(weight, bias, gamma, beta, mean, var, eps):  # noqa: ANN001, ANN205
        return Folds._fold(weight, bias, gamma, beta, mean, var, 0.0)


def test_builtin_and_scratch_pass_every_case_including_float16_and_channels_last():
    comparisons = check_every_case(Folds(), skipped=set())
    assert {(c.impl, c.layout) for c in comparisons} >= {("builtin", "NHWC"), ("scratch", "NHWC")}
    assert {c.dtype for c in comparisons} == {"float64", "float32", "float16"}


def test_a_wrong_fold_fails_builtin_and_scratch(monkeypatch):
    tiny = [c for c in fold_cases(("float64",)) if c.name.startswith(("tiny-variance", "dense-nobias"))]
    assert all(not r.passed for r in run_folds(_ForgetsEps(), tiny, impls=("scratch",)))
    real = fusion.fuse_conv_bn_weights
    monkeypatch.setattr(fusion, "fuse_conv_bn_weights",  # torch's own fold with ε dropped
                        lambda w, b, rm, rv, eps, g, be, transpose=False: real(w, b, rm, rv, 0.0, g, be, transpose))
    convs = [c for c in tiny if c.kind == "conv"]
    records = list(run_folds(Folds(), convs, impls=("builtin",)))
    assert records and all(not r.passed and r.weight_ratio > 1e3 for r in records)


def test_the_alexnet_fold_uses_fuse_conv_bn_eval_and_keeps_every_prediction():
    check_alexnet(Folds(), _ForgetsScratchNet())


class _ForgetsScratchNet(_ForgetsEps):
    impls = ("scratch",)  # the network folded by the wrong scratch fold
