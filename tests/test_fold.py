"""`bnparity fold`'s framework-free parts: the derived tolerance, the harness catching wrong folds, the records, the
reference's whole-network fold, the command's bad input, and (with the finished run, when present) the command and
its report section."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest

from bnparity.frameworks.folding import FoldCase, FoldOutput, Folds, check_impl, load_folds
from bnparity.frameworks.registry import Unavailable
from bnparity.reference import alexnet_numpy as anp
from bnparity.reference.alexnet import init_params, variant_spec
from bnparity.reference.alexnet_numpy import conv2d
from bnparity.reference.fold import bn_pairs, fold_network, folded_spec, grouped_conv2d
from bnparity.suites.cli import main
from bnparity.suites.fold.cases import CLASSES, fold_cases, make_case
from bnparity.suites.fold.harness import run_folds
from bnparity.suites.fold.records import (
    AlexNetFoldRecord,
    FoldComparison,
    FoldDoc,
    FoldMeta,
    FoldSkip,
    load_fold,
)
from bnparity.suites.fold.tolerance import fold_bound, layer_apply
from bnparity.suites.schema import FormatError, to_dict

RUN = Path("/work/runs/main-job-1202b")


def _bound(case: FoldCase, **changes: object):
    case = dataclasses.replace(case, **changes)
    return fold_bound(kind=case.kind, dtype=case.dtype, x=case.x, weight=case.weight, bias=case.bias,
                      gamma=case.gamma, beta=case.beta, running_mean=case.running_mean,
                      running_var=case.running_var, eps=case.eps, padding=case.padding, groups=case.groups)


def test_the_allowed_error_grows_with_the_scale_s():
    case = make_case(CLASSES[0], "float32")
    base = _bound(case)
    tenfold = _bound(case, gamma=10 * case.gamma)  # |s| × 10: W' × 10, and its rounding
    assert np.allclose(tenfold.allowed_weight, 10 * base.allowed_weight)
    assert tenfold.allowed_y.min() > 5 * base.allowed_y.min()
    var = case.running_var.copy()
    var[1] = 1e-8  # channel 1 nearly constant: |s_1| ≈ 316·|γ_1|
    tiny = _bound(case, running_var=var)
    assert tiny.allowed_y[:, 1].min() > 100 * base.allowed_y[:, 1].max()
    assert np.array_equal(tiny.allowed_y[:, 0], base.allowed_y[:, 0])  # the other channels keep their bound
    # float16's ε = 1e-5 is subnormal: its absolute rounding enters δ_c, and float16 allows more than float32 does
    assert _bound(case, dtype="float16").allowed_weight.min() > 4000 * base.allowed_weight.min()


class _NumpyFolds(Folds):
    """A framework-free fold in NumPy in the case's dtype; `mistake` makes it fold wrongly."""

    framework = "numpy"
    impls: ClassVar[tuple[str, ...]] = ("scratch",)
    lacks: ClassVar[dict[str, str]] = {"builtin": "numpy: no builtin fold"}

    def __init__(self, mistake: str | None = None) -> None:
        self.mistake = mistake

    def fold_layer(self, case: FoldCase, impl: str) -> FoldOutput:
        check_impl(self, impl)
        dt = np.dtype(case.dtype)
        eps = 0.0 if self.mistake == "no-eps" else case.eps
        gamma, beta, mean, var = (np.asarray(v, dt) for v in (case.gamma, case.beta, case.running_mean,
                                                               case.running_var))
        s = gamma / np.sqrt(var + dt.type(eps))
        b = np.zeros_like(mean) if case.bias is None else case.bias.astype(dt)
        b2 = ((b + mean) if self.mistake == "b+mu" else (b - mean)) * s + beta
        w2 = case.weight.astype(dt) * s.reshape((-1,) + (1,) * (case.weight.ndim - 1))
        y = layer_apply(case.kind, case.x, w2.astype(np.float64), b2.astype(np.float64), padding=case.padding,
                        groups=case.groups).astype(dt)  # the layer in float64, rounded once: inside the bound
        return FoldOutput(weight=w2.astype(np.float64), bias=b2.astype(np.float64), y_folded=y.astype(np.float64),
                          y_unfolded=y.astype(np.float64))

    def fold_alexnet(self, spec, params, dtype):  # noqa: ANN001, ANN201 (not used here)
        raise NotImplementedError

    def logits(self, spec, params, x, dtype):  # noqa: ANN001, ANN201
        raise NotImplementedError


def test_a_correct_fold_passes_and_wrong_folds_are_caught():
    cases = fold_cases(("float64", "float32"))
    records = list(run_folds(_NumpyFolds(), cases))
    assert isinstance(records[0], FoldSkip) and records[0].impl == "builtin" and records[0].reason
    comparisons = [r for r in records if isinstance(r, FoldComparison)]
    assert len(comparisons) == len(cases) and all(r.passed for r in comparisons)
    tiny = [c for c in cases if c.name.startswith("tiny-variance/float64")]
    for mistake, quantity in (("no-eps", "weight_ratio"), ("b+mu", "bias_ratio")):
        wrong = [r for r in run_folds(_NumpyFolds(mistake), tiny) if isinstance(r, FoldComparison)]
        assert wrong and not any(r.passed for r in wrong)
        assert min(getattr(r, quantity) for r in wrong) > 1e3 and min(r.y_ratio for r in wrong) > 1e3


def test_records_round_trip_and_a_newer_format_is_refused():
    comparison = FoldComparison(framework="torch", impl="builtin", case="conv-bias/float32/NCHW",
                                case_class="conv-bias", kind="conv", dtype="float32", layout="NCHW", groups=1,
                                bias=True, max_scale=1.5, y_error=1e-7, y_ratio=0.1, unfolded_ratio=0.2,
                                weight_ratio=0.3, bias_ratio=float("inf"), passed=False)
    network = AlexNetFoldRecord(framework="jax", impl="scratch", run="jax-bn-seed0", epoch=5, dtype="float32",
                                test_images=100, reference_images=10, max_logit_error=1e-5,
                                max_logit_error_folded_ref=1e-5, max_logit_error_unfolded_ref=1e-5, logit_scale=17.0,
                                allowed_logit_error=2e-3, max_weight_ratio=0.2, accuracy_unfolded=0.9,
                                accuracy_folded=0.89, accuracy_reference=0.9, argmax_changes=1, flip_margins=(1e-6,),
                                passed=False)
    skip = FoldSkip(framework="mxnet", impl="scratch", case="conv-bias/float16/NCHW", reason="FP16 gemm")
    doc = FoldDoc(meta=FoldMeta(frameworks=("torch", "mxnet", "jax"), run_dir="/r", test_images=100),
                  records=(comparison, skip), alexnet=(network, FoldSkip(status="error", framework="torch", impl="-",
                                                                         case="alexnet", reason="boom")))
    data = json.loads(json.dumps(to_dict(doc)))
    assert data["format"] == "bnparity-fold/1" and data["records"][0]["bias_ratio"] is None  # inf -> null
    back = load_fold(data)
    assert back.records[1] == skip and back.alexnet == doc.alexnet and back.networks == [network]
    assert back.records[0] == dataclasses.replace(comparison, bias_ratio=back.records[0].bias_ratio)
    assert np.isnan(back.records[0].bias_ratio)  # null comes back as nan: still not ≤ 1
    with pytest.raises(FormatError, match="newer than this bnparity reads"):
        load_fold({**data, "format": "bnparity-fold/2"})
    with pytest.raises(FormatError, match="status must be"):
        load_fold({**data, "records": [{"status": "odd"}]})


def test_the_reference_folds_a_whole_network_and_its_grouped_convolution():
    spec = variant_spec("tiny", "bn")
    assert folded_spec(spec) == variant_spec("tiny", "nobn") and len(bn_pairs(spec)) == 7
    rng = np.random.default_rng(3)
    params = {k: v.astype(np.float64) for k, v in init_params(spec, seed=0).items()}
    for name in params:
        if name.endswith(("running_mean", "beta", "gamma")):
            params[name] = rng.normal(0.5, 1.0, params[name].shape)
        elif name.endswith("running_var"):
            params[name] = rng.uniform(0.1, 2.0, params[name].shape)
    x = rng.standard_normal((4, 1, 28, 28))
    want = anp.forward(spec, params, x, train=False).logits
    got = anp.forward(folded_spec(spec), fold_network(spec, params), x, train=False).logits
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12 * np.abs(want).max())
    w, b = rng.standard_normal((4, 3, 3, 3)), rng.standard_normal(4)
    np.testing.assert_array_equal(grouped_conv2d(x[:, :1].repeat(3, 1), w, b, stride=1, padding=1, groups=1),
                                  conv2d(x[:, :1].repeat(3, 1), w, b, stride=1, padding=1))
    with pytest.raises(ValueError, match="groups=2 must divide"):
        grouped_conv2d(x.repeat(3, 1), w, b, stride=1, padding=1, groups=2)


def test_an_unknown_folder_is_unavailable_with_one_line():
    with pytest.raises(ValueError, match="unknown framework"):
        load_folds("nosuch")
    for name in ("torch", "mxnet", "jax"):
        got = load_folds(name)
        if isinstance(got, Unavailable):
            assert "\n" not in got.reason


@pytest.mark.parametrize("argv", [["fold", "--run", "/nonexistent/run"], ["fold", "--frameworks", "torch,,jax"],
                                  ["fold", "--test-images", "0"]])
def test_bad_input_exits_2_with_one_line(argv, capsys, tmp_path):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("bnparity fold: error:") and "\n" not in err


def test_a_run_directory_without_training_exits_2(capsys, tmp_path):
    assert main(["fold", "--run", str(tmp_path)]) == 2
    assert "must hold a training run" in capsys.readouterr().err


@pytest.mark.skipif(not (RUN / "train" / "manifest.json").exists(), reason=f"no finished run at {RUN}")
def test_the_command_on_the_finished_run_and_its_report_section(tmp_path, capsys):
    pytest.importorskip("torch")
    run = tmp_path / "run"
    run.mkdir()
    for name in ("manifest.json", "parity.json", "conventions.json"):
        shutil.copy(RUN / name, run / name)
    (run / "train").symlink_to(RUN / "train")
    assert main(["fold", "--frameworks", "torch", "--run", str(run), "--test-images", "60",
                 "--reference-images", "8"]) == 0
    doc = load_fold(json.loads((run / "fold.json").read_text()))
    assert doc.meta.complete and doc.meta.test_images == 60
    (net,) = doc.networks
    assert net.run == "torch-bn-seed0" and net.impl == "builtin" and net.argmax_changes == 0 and net.passed
    assert net.accuracy_folded == net.accuracy_unfolded and net.reference_images == 8
    assert all(c.passed for c in doc.comparisons) and {c.impl for c in doc.comparisons} == {"builtin", "scratch"}
    assert "AlexNet folds pass" in capsys.readouterr().out
    from bnparity.reports.build import build_report

    report = build_report(run, out_dir=tmp_path / "report")
    text = report.markdown.read_text()
    assert "## Folding BN for inference" in text and "torch-bn-seed0 (epoch 5)" in text
    assert "fold" in report.summary["sections"]
