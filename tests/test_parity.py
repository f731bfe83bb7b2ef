"""The parity harness: tolerance model, comparisons, cases, records, and the CLI on PyTorch."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import require

from bnparity.frameworks import registry
from bnparity.reference.batchnorm import condition_factor
from bnparity.reference.spec import BNSpec
from bnparity.suites.cli import main
from bnparity.suites.parity import harness
from bnparity.suites.parity.cases import hard_cases, make_inputs, standard_cases
from bnparity.suites.parity.compare import compare, describe_record
from bnparity.suites.parity.tolerance import C_ACC, C_COND, Tolerance, tolerance


def test_tolerance_model_closed_form():
    tol = tolerance("float32", kappa=1.0, scale=10.0)
    assert tol.rtol == pytest.approx(2.0**-24 * (C_ACC + C_COND))
    assert tol.atol == pytest.approx(tol.rtol * 10.0)
    assert tolerance("float16", 1.0, 1.0).rtol == pytest.approx(2.0**-11 * (C_ACC + C_COND))
    with pytest.raises(ValueError, match="no tolerance for dtype int8"):
        tolerance("int8", 1.0, 1.0)


def test_condition_factor_grows_with_mean_over_spread():
    x = np.array([[1e4 - 1.0], [1e4 + 1.0]])  # μ = 1e4, σ = 1
    assert condition_factor(BNSpec(axis=1, eps=1e-5), [x]) == pytest.approx(1.0 + 1e4 / np.sqrt(1.0 + 1e-5))


def test_compare_reports_count_worst_index_and_allowed():
    ref = np.array([[1.0, 2.0], [3.0, 4.0]])
    got = ref.copy()
    got[1, 0] += 0.5
    result = compare("y", got, ref, Tolerance(rtol=0.01, atol=0.01))
    assert not result.passed
    assert (result.n_mismatched, result.n_total, result.worst_index) == (1, 4, (1, 0))
    assert result.max_abs_err == pytest.approx(0.5)
    assert result.max_rel_err == pytest.approx(0.5 / 3.0)
    assert "1 of 4 elements (25.0%) outside tolerance" in result.describe("torch/builtin")
    assert compare("y", ref + 0.005, ref, Tolerance(rtol=0.0, atol=0.01)).passed


def test_compare_nan_is_equal_only_to_nan_and_missing_values_fail():
    ref = np.array([np.nan, 1.0])
    assert compare("running_var", np.array([np.nan, 1.0]), ref, Tolerance(0.0, 0.0)).passed
    assert not compare("running_var", np.array([0.0, 1.0]), ref, Tolerance(1.0, 1.0)).passed
    assert not compare("running_var", np.array([np.nan, np.nan]), ref, Tolerance(1.0, 1.0)).passed
    assert compare("dgamma", None, None, Tolerance(0, 0)) is None
    assert "returned no value" in compare("dgamma", None, ref, Tolerance(0, 0)).describe()
    assert "shape (3,) differs" in compare("y", np.ones(3), ref, Tolerance(0, 0)).describe()


def test_cases_are_unique_deterministic_and_rounded_to_their_dtype():
    cases = standard_cases() + hard_cases()
    names = [c.name for c in cases]
    assert len(names) == len(set(names))
    assert {len(c.shape) for c in standard_cases()} == {2, 3, 4}
    assert {c.axis for c in standard_cases()} == {1, -1}
    assert all(c.gate for c in standard_cases()) and not any(c.gate for c in hard_cases())
    case = standard_cases()[0]
    a, b = make_inputs(case), make_inputs(case)
    np.testing.assert_array_equal(a.xs[0], b.xs[0])
    f32 = next(c for c in standard_cases() if c.dtype == "float32")
    inputs = make_inputs(f32)
    assert inputs.xs[0].dtype == np.float32
    np.testing.assert_array_equal(inputs.gamma.astype(np.float32).astype(np.float64), inputs.gamma)


def test_parity_cli_passes_every_case_for_torch_and_writes_every_case(tmp_path, capsys):
    require("torch")
    out = tmp_path / "parity.json"
    assert main(["parity", "--frameworks", "torch", "--json", str(out)]) == 0
    doc = json.loads(out.read_text())
    assert doc["format"] == "bnparity-parity/1" and doc["meta"]["complete"] is True
    cases = {r["case"] for r in doc["records"]}
    assert {c.name for c in standard_cases() + hard_cases()} <= cases
    required = {"case", "framework", "impl", "mode", "quantity", "dtype", "max_abs_err", "max_rel_err",
                "atol", "rtol", "passed", "gate"}
    ok = [r for r in doc["records"] if r["status"] == "ok"]
    assert ok and all(required <= set(r) for r in ok)
    assert {r["quantity"] for r in ok} == {"y", "dx", "dgamma", "dbeta", "running_mean", "running_var", "y_eval"}
    assert all(r["passed"] for r in ok if r["gate"])
    assert "gated comparisons pass" in capsys.readouterr().out


class _Perturbed:
    """A torch adapter whose y is off by 1e-3: the harness must catch it and say where."""

    def __init__(self):
        from bnparity.frameworks.torch.batchnorm import BuiltinBatchNorm

        self.inner = BuiltinBatchNorm()
        self.framework, self.impl = "torch", "builtin"

    def realize(self, spec, dtype):
        return self.inner.realize(spec, dtype)

    def run(self, inputs, *, spec, use_defaults=False):
        out = self.inner.run(inputs, spec=spec, use_defaults=use_defaults)
        return type(out)(**{**out.as_dict(), "y": out.y + 1e-3})


def test_harness_fails_a_perturbed_output_and_names_it():
    require("torch")
    case = standard_cases()[2]
    records = list(harness.run_case(case, make_inputs(case), [_Perturbed()], "matched"))
    bad = [r for r in records if not r["passed"]]
    assert [r["quantity"] for r in bad] == ["y"]
    assert bad[0]["framework"] == "torch" and bad[0]["n_mismatched"] > 0
    message = describe_record(bad[0], f"torch/builtin on {case.name}")
    assert message.startswith(f"y of torch/builtin on {case.name} does not agree with the reference: ")
    assert "greatest absolute difference 0.001 at index" in message


def test_defaults_mode_torch_agrees_with_its_registry_row():
    require("torch")
    records = list(harness.run_parity(frameworks=["torch"], mode="defaults", cases=standard_cases()[:4]))
    assert {r["reference"] for r in records} == {"own-convention", "torch-convention"}
    assert all(r["passed"] for r in records)


def test_missing_framework_is_a_skip_record_with_reason(monkeypatch):
    def no_such_module(framework, name):
        raise ModuleNotFoundError("No module named 'mxnet'", name="mxnet")

    monkeypatch.setattr(registry, "framework_module", no_such_module)
    adapters, skipped = harness.load_adapters(["mxnet"], ["builtin"], "matched")
    assert adapters == []
    assert skipped[0]["status"] == "skipped"
    assert "mxnet is not installed" in skipped[0]["reason"] and "bnparity[mxnet]" in skipped[0]["reason"]


def test_a_broken_framework_folder_is_not_reported_as_not_installed():
    own_module = ModuleNotFoundError("No module named 'bnparity.frameworks.jax.train'",
                                     name="bnparity.frameworks.jax.train")
    assert "failed to import" in registry.import_failure("jax", own_module).reason
    assert "not installed" in registry.import_failure("jax", ModuleNotFoundError("x", name="flax.linen")).reason
    assert "failed to import: RuntimeError" in registry.import_failure("torch", RuntimeError("bad .so")).reason


def test_check_command_on_a_user_file(tmp_path, capsys):
    require("torch")
    rng = np.random.default_rng(3)
    path = tmp_path / "mine.npz"
    np.savez(path, x=rng.normal(5, 2, (8, 3, 4, 4)).astype(np.float32), gamma=rng.normal(1, 0.1, 3))
    out = tmp_path / "check.json"
    assert main(["check", "--input", str(path), "--frameworks", "torch", "--json", str(out)]) == 0
    records = json.loads(out.read_text())["records"]
    assert {r["impl"] for r in records} == {"builtin", "scratch"} and all(r["passed"] for r in records)


@pytest.mark.parametrize("arrays,args,match", [
    ({"x": np.full((3, 4), np.nan)}, [], "x must be finite"),
    ({"x": np.ones((3, 4)), "gamma": np.ones(3)}, [], r"gamma must have shape \(4,\)"),
    ({"x": np.ones((3, 4)), "dy": np.ones((4, 3))}, [], "dy must have the shape of x"),
    ({"y": np.ones((3, 4))}, [], "must hold an array named 'x'"),
    ({"x": np.ones(4)}, [], "expected a 2-D to 5-D input"),
    ({"x": np.ones((3, 4), dtype=np.int32)}, [], "x must be float16, float32 or float64"),
    ({"x": np.ones((3, 4))}, ["--frameworks", "tensorflow"], "unknown framework tensorflow"),
])
def test_check_bad_input_is_one_line_and_exit_2(tmp_path, capsys, arrays, args, match):
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    assert main(["check", "--input", str(path), *args]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert __import__("re").search(match, err)


def test_unreadable_file_is_exit_2(tmp_path, capsys):
    path = tmp_path / "junk.npz"
    path.write_text("not a zip")
    assert main(["check", "--input", str(path)]) == 2
    assert "cannot read" in capsys.readouterr().err


def test_spec_from_case_is_canonical_torch_semantics():
    case = standard_cases()[0]
    assert case.spec == BNSpec(axis=case.axis)


def _installed():
    from conftest import framework_installed

    names = [f for f in registry.framework_names() if framework_installed(f)]
    if len(names) < 2:
        pytest.skip("needs at least two frameworks installed")
    return names


def test_matched_mode_passes_every_standard_case_for_every_installed_framework(tmp_path):
    names = _installed()
    out = tmp_path / "matched.json"
    assert main(["parity", "--frameworks", ",".join(names), "--mode", "matched", "--no-hard", "--json", str(out)]) == 0
    records = json.loads(out.read_text())["records"]
    ran = {(r["framework"], r["impl"]) for r in records if r["status"] == "ok"}
    assert ran == {(f, i) for f in names for i in ("builtin", "scratch")}
    skipped = [r for r in records if r["status"] == "skipped"]
    assert all(r["reason"].startswith(r["framework"] + ":") for r in skipped)  # a reason that names the framework


def test_defaults_mode_proves_each_registry_row_and_measures_the_porting_difference():
    names = _installed()
    cases = [c for c in standard_cases() if c.name == "nchw-4x8x6x6-float64"]
    records = list(harness.run_parity(frameworks=names, mode="defaults", cases=cases))
    own = [r for r in records if r["reference"] == "own-convention"]
    assert own and all(r["passed"] for r in own)
    vs_torch = {(r["framework"], r["quantity"]): r for r in records if r["reference"] == "torch-convention"}
    for framework in set(names) - {"torch"}:
        # MXNet and Flax keep a biased running variance (and Flax weighs momentum 0.99): a finding, not a gate.
        finding = vs_torch[(framework, "running_var")]
        assert finding["gate"] is False and finding["passed"] is False and finding["max_rel_err"] > 1e-3
        assert vs_torch[(framework, "y")]["passed"]  # the training-mode output does not depend on them
