"""Keras' fold (frameworks/keras/fold.py), on this process's backend: bnparity's in keras.ops on Keras' HWIO
layout, every case it can compute (float16 and NHWC included; float64 skipped where the backend cannot, with the
reason), a wrong fold caught, and the AlexNet fold. Keras has no builtin fold."""

from __future__ import annotations

import os

import pytest
from conftest import require

NAME = f"keras-{os.environ.get('KERAS_BACKEND', 'tensorflow')}"
require(NAME)

from fold_checks import check_alexnet, check_every_case  # noqa: E402

from bnparity.frameworks.keras.fold import Folds, _nchw_conv_problem  # noqa: E402
from bnparity.suites.fold.cases import fold_cases  # noqa: E402
from bnparity.suites.fold.harness import run_folds  # noqa: E402

# The cases this backend cannot compute (fold.py's module docstring): float64 BatchNormalization computes in float32
# on JAX and PyTorch; TensorFlow's CPU Conv2D has no float64 NCHW kernel (grouped ones run under XLA and do).
# float16 NCHW too where oneDNN has no half precision (no AVX-512): asked of TensorFlow, test_nchw_conv_kernels.
_CONVS = ("conv-bias", "conv-nobias", "negative-gamma", "tiny-variance")
_TF_NCHW = ("float64", *(("float16",) if NAME == "keras-tensorflow" and _nchw_conv_problem("float16") else ()))
SKIPPED = {"keras-tensorflow": {f"{c}/{d}/NCHW" for c in _CONVS for d in _TF_NCHW},
           "keras-jax": {"/float64"}, "keras-torch": {"/float64"}}


class _ForgetsEps(Folds):
    @staticmethod
    def _fold(kernel, bias, gamma, beta, mean, var, eps):  # noqa: ANN001, ANN205
        return Folds._fold(kernel, bias, gamma, beta, mean, var, 0.0)


def test_scratch_passes_every_case_it_runs_and_skips_the_rest_with_the_reason():
    comparisons = check_every_case(Folds(), skipped=SKIPPED[NAME])
    assert {c.layout for c in comparisons} == {"NCHW", "NHWC", "NC"}
    assert {c.dtype for c in comparisons} == ({"float64", "float32", "float16"} if NAME == "keras-tensorflow"
                                              else {"float32", "float16"})
    assert {c.groups for c in comparisons if c.kind == "conv"} == {1, 2, 4}  # grouped and depthwise ran


@pytest.mark.skipif(NAME != "keras-tensorflow", reason="TensorFlow's CPU kernels only")
def test_nchw_conv_kernels_are_asked_of_tensorflow():
    assert _nchw_conv_problem("float32") is None  # the kernel every NCHW float32 fold case runs on
    assert _nchw_conv_problem("float64") == "The Conv2D op currently only supports the NHWC tensor format on the CPU"
    assert _nchw_conv_problem("float16") in (None, _nchw_conv_problem("float64"))  # AVX-512 oneDNN, or Eigen


def test_a_wrong_fold_fails():
    cases = [c for c in fold_cases(("float32",)) if c.name.startswith("tiny-variance")]
    records = list(run_folds(_ForgetsEps(), cases, impls=("scratch",)))
    assert records and all(not r.passed and r.weight_ratio > 1e3 for r in records)


@pytest.mark.slow
def test_the_alexnet_fold_keeps_every_prediction():
    check_alexnet(Folds(), _ForgetsEps())
