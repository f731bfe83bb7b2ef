"""The parity harness: tolerance model, comparisons, cases, records, and the CLI on PyTorch."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import require

from bnparity.frameworks import registry
from bnparity.frameworks.conventions import convention, layer_conventions
from bnparity.reference.batchnorm import condition_factor
from bnparity.reference.spec import BNSpec
from bnparity.suites.cli import main
from bnparity.suites.parity import harness
from bnparity.suites.parity.cases import case_normalizations, hard_cases, make_inputs, standard_cases
from bnparity.suites.parity.compare import compare, describe_record
from bnparity.suites.parity.tolerance import C_ACC, C_COND, Tolerance, tolerance
from bnparity.suites.schema import LayerComparison, LayerSkip


def test_tolerance_model_closed_form():
    tol = tolerance("float32", kappa=1.0, scale=10.0)
    assert tol.rtol == pytest.approx(2.0**-24 * (C_ACC + C_COND))
    assert tol.atol == pytest.approx(tol.rtol * 10.0)
    assert tolerance("float16", 1.0, 1.0).rtol == pytest.approx(2.0**-11 * (C_ACC + C_COND))
    # E[x²] − E[x]² (a spec's "fast" variance) loses u·κ²: it is judged with κ² (and two-pass, the default, with κ)
    assert tolerance("float32", 50.0, 1.0, variance="fast").rtol == pytest.approx(2.0**-24 * (C_ACC + C_COND * 2500))
    assert tolerance("float32", 50.0, 1.0).rtol == pytest.approx(2.0**-24 * (C_ACC + C_COND * 50))
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
    cases = standard_cases(["batchnorm"]) + hard_cases(["batchnorm"])
    names = [c.name for c in cases]
    assert len(names) == len(set(names))
    assert {len(c.shape) for c in standard_cases(["batchnorm"])} == {2, 3, 4}
    assert {c.axis for c in standard_cases(["batchnorm"])} == {1, -1}
    assert all(c.gate for c in standard_cases(["batchnorm"])) and not any(c.gate for c in hard_cases(["batchnorm"]))
    case = standard_cases(["batchnorm"])[0]
    a, b = make_inputs(case), make_inputs(case)
    np.testing.assert_array_equal(a.xs[0], b.xs[0])
    f32 = next(c for c in standard_cases(["batchnorm"]) if c.dtype == "float32")
    inputs = make_inputs(f32)
    assert inputs.xs[0].dtype == np.float32
    np.testing.assert_array_equal(inputs.gamma.astype(np.float32).astype(np.float64), inputs.gamma)


def test_parity_cli_passes_every_case_for_torch_and_writes_every_case(tmp_path, capsys):
    require("torch")
    out = tmp_path / "parity.json"
    assert main(["parity", "--frameworks", "torch", "--json", str(out)]) == 0
    doc = json.loads(out.read_text())
    assert doc["format"] == "bnparity-parity/2" and doc["meta"]["complete"] is True
    assert doc["meta"]["baseline"] == registry.baseline().name
    cases = {r["case"] for r in doc["records"]}
    assert {c.name for c in standard_cases(["batchnorm"]) + hard_cases(["batchnorm"])} <= cases
    required = {"case", "framework", "impl", "mode", "quantity", "dtype", "max_abs_err", "max_rel_err",
                "atol", "rtol", "scale", "passed", "gate", "normalization", "new_weight"}
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
    case = standard_cases(["batchnorm"])[2]
    records = list(harness.run_case(case, make_inputs(case), [_Perturbed()], "matched"))
    bad = [r for r in records if not r.passed]
    assert [r.quantity for r in bad] == ["y"]
    assert bad[0].framework == "torch" and bad[0].n_mismatched > 0
    message = describe_record(bad[0], f"torch/builtin on {case.name}")
    assert message.startswith(f"y of torch/builtin on {case.name} does not agree with the reference: ")
    assert "greatest absolute difference 0.001 at index" in message


def test_defaults_mode_torch_agrees_with_its_registry_row():
    require("torch")
    records = list(harness.run_parity(frameworks=["torch"], mode="defaults", cases=standard_cases(["batchnorm"])[:4]))
    assert {r.reference for r in records} == {"own-convention", "baseline-convention"}
    assert all(r.passed for r in records)


def test_missing_framework_is_a_skip_record_with_reason(monkeypatch):
    def no_such_module(framework, name):
        raise ModuleNotFoundError("No module named 'mxnet'", name="mxnet")

    monkeypatch.setattr(registry, "framework_module", no_such_module)
    adapters, skipped, unavailable = harness.load_adapters(["mxnet"], ["builtin"], "matched")
    assert adapters == [] and [u.installed for u in unavailable] == [False]
    assert isinstance(skipped[0], LayerSkip) and skipped[0].status == "skipped" and skipped[0].case is None
    assert "mxnet is not installed" in skipped[0].reason and "bnparity[mxnet]" in skipped[0].reason


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
    ({"x": np.ones((3, 4))}, ["--norm", "weight"], "unknown normalization weight"),
    ({"x": np.ones((3, 4))}, ["--norm", "layer", "--groups", "2"], "--groups does not apply to --norm layer"),
    ({"x": np.ones((2, 4, 5))}, ["--norm", "group", "--groups", "3"], "groups=3 does not divide the 4 channels"),
    ({"x": np.ones((2, 4, 5)), "gamma": np.ones(5)}, ["--norm", "layer", "--normalized-dims", "2"],
     r"gamma must have shape \(4, 5\)"),
    ({"x": np.ones((2, 4, 5))}, ["--norm", "layer", "--axis", "1"], "axis must be -1"),
])
def test_check_bad_input_is_one_line_and_exit_2(tmp_path, capsys, arrays, args, match):
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    assert main(["check", "--input", str(path), *args]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert __import__("re").search(match, err)


@pytest.mark.parametrize("norm,options,shape,gamma_shape", [
    ("layer", ["--normalized-dims", "2"], (4, 5, 6), (5, 6)),
    ("group", ["--groups", "2"], (4, 6, 3, 3), (6,)),
    ("instance", [], (4, 6, 5), (6,)),
    ("rms", [], (4, 5, 6), (6,)),
])
def test_check_runs_every_normalization_on_a_user_file(tmp_path, norm, options, shape, gamma_shape):
    require("torch")
    rng = np.random.default_rng(4)
    path = tmp_path / "mine.npz"
    np.savez(path, x=rng.normal(1, 2, shape).astype(np.float32), gamma=rng.normal(1, 0.1, gamma_shape))
    out = tmp_path / "check.json"
    assert main(["check", "--norm", norm, *options, "--input", str(path), "--frameworks", "torch",
                 "--json", str(out)]) == 0
    doc = json.loads(out.read_text())
    ok = [r for r in doc["records"] if r["status"] == "ok"]
    assert ok and all(r["passed"] for r in ok) and {r["impl"] for r in ok} == {"builtin", "scratch"}
    assert {r["normalization"] for r in doc["records"]} == {doc["meta"]["cases"][0]["normalization"]} != {"batchnorm"}


def test_parity_jobs_give_the_records_of_one_process(tmp_path):
    require("torch")
    records = {}
    for jobs in (1, 2):
        out = tmp_path / f"jobs{jobs}.json"
        assert main(["parity", "--frameworks", "torch", "--norms", "layer,group", "--cases", "float64",
                     "--jobs", str(jobs), "--json", str(out)]) == 0
        records[jobs] = [(r["mode"], r["case"], r["framework"], r["impl"], r.get("reference"), r.get("quantity"))
                         for r in json.loads(out.read_text())["records"]]
    assert records[1] == records[2] and len({r[1] for r in records[1]}) > 4


@pytest.mark.parametrize("text", ["weight", "layer,,group", ""])
def test_parity_norms_bad_input_is_exit_2(capsys, text):
    assert main(["parity", "--norms", text]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and ("--norms" in err or "normalization" in err)


def test_conventions_of_one_normalization_print_each_frameworks_row(capsys):
    assert main(["conventions", "--norm", "group"]) == 0
    out = capsys.readouterr().out
    rows = layer_conventions("groupnorm")
    assert rows and all(f"== {r.framework}: groupnorm ==" in out and r.layer in out for r in rows)
    assert "batchnorm" not in out


def test_unreadable_file_is_exit_2(tmp_path, capsys):
    path = tmp_path / "junk.npz"
    path.write_text("not a zip")
    assert main(["check", "--input", str(path)]) == 2
    assert "cannot read" in capsys.readouterr().err


def test_spec_from_case_is_canonical_torch_semantics():
    case = standard_cases(["batchnorm"])[0]
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
    skipped = [r for r in records if r["status"] == "skipped" and r["case"] is not None]
    assert all(r["reason"].startswith(r["framework"] + ":") for r in skipped)  # a reason that names the framework
    # every normalization ran, and a layer a framework lacks is one skip with the descriptor's reason
    assert {r["normalization"] for r in records if r["status"] == "ok"} == set(case_normalizations())
    for d in registry.descriptors():
        for lack in (x for x in d.lacks if x.normalization in case_normalizations()):
            assert any(r["case"] is None and r["framework"] == d.name and r["impl"] == lack.impl
                       and r["normalization"] == lack.normalization and r["reason"] == lack.reason for r in records)


def test_defaults_mode_proves_each_registry_row_and_measures_the_porting_difference():
    names = _installed()
    cases = [c for c in standard_cases(["batchnorm"]) if c.name == "nchw-4x8x6x6-float64"]
    records = list(harness.run_parity(frameworks=names, mode="defaults", cases=cases))
    own = [r for r in records if r.reference == "own-convention"]
    assert own and all(r.passed for r in own)
    vs_baseline = {(r.framework, r.quantity): r for r in records if r.vs_baseline}
    for framework in set(names) - {registry.baseline().name}:
        # MXNet and Flax keep a biased running variance (and Flax weighs momentum 0.99): a finding, not a gate.
        finding = vs_baseline[(framework, "running_var")]
        assert finding.gate is False and finding.passed is False and finding.max_rel_err > 1e-3
        assert vs_baseline[(framework, "y")].passed  # the training-mode output does not depend on them


@pytest.mark.parametrize("framework", registry.framework_names())
def test_a_1d_batch_of_one_raises_or_normalizes_to_beta_as_registered(framework):
    """What the registry's `batch_of_one` says: the layer as shipped raises, or normalizes every value to β."""
    require(framework)
    adapter = registry.load_adapter(framework, "builtin")
    case = next(c for c in hard_cases(["batchnorm"]) if c.shape == (1, 16))
    inputs = make_inputs(case)
    row = convention(framework)
    spec = adapter.realize(row.spec(axis=case.axis), inputs.dtype)
    if row.batch_of_one.startswith("raises"):
        with pytest.raises(Exception, match="Expected more than 1 value per channel"):
            adapter.run(inputs, spec=spec, use_defaults=True)
        records = list(harness.run_case(case, inputs, [adapter], "defaults"))
        assert records and all(r.status == "error" and r.passed is False for r in records)
    else:
        assert row.batch_of_one == "normalizes to β"
        out = adapter.run(inputs, spec=spec, use_defaults=True)
        np.testing.assert_allclose(out.y, np.broadcast_to(inputs.beta, case.shape), rtol=0, atol=1e-6)


def test_describe_record_works_from_the_typed_record_and_the_comparison_alike():
    ref = np.array([1.0, 2.0, 4.0])
    result = compare("dx", ref + np.array([0.0, 0.5, 0.0]), ref, Tolerance(rtol=0.01, atol=0.01))
    context = {"case": "c", "framework": "f", "impl": "builtin", "mode": "matched", "reference": "matched",
               "normalization": "batchnorm", "dtype": "float64", "gate": True, "shape": (3,), "axis": 1, "steps": 1,
               "kappa": 1.0, "note": "", "spec": {}, "spec_adjusted": (), "new_weight": 0.1}
    record = result.to_record(context, scale=4.0)
    assert isinstance(record, LayerComparison) and record.scale == 4.0 and record.scaled_error == 0.5 / 4.0
    assert describe_record(record, "f/builtin") == result.describe("f/builtin")
    assert "1 of 3 elements (33.3%) outside tolerance" in describe_record(record)
    inf = compare("y", np.array([np.inf]), np.array([1.0]), Tolerance(0.1, 0.1)).to_record(context, scale=1.0)
    assert inf.max_abs_err is None and inf.ratio == float("inf") and inf.scaled_error is None
    assert "greatest absolute difference inf or nan" in describe_record(inf)


@pytest.mark.parametrize("command", ["parity", "check"])
def test_a_named_framework_that_fails_to_import_is_reported_and_exits_1(command, tmp_path, capsys, monkeypatch):
    require("torch")
    broken = next(f for f in registry.framework_names() if f != "torch")
    real = registry.framework_module

    def framework_module(framework, name):
        if framework == broken:
            raise RuntimeError("undefined symbol in a shared library")
        return real(framework, name)

    monkeypatch.setattr(registry, "framework_module", framework_module)
    out = tmp_path / "records.json"
    if command == "parity":
        # --jobs 1: the monkeypatched import lives in this process only, not in worker processes
        args = ["parity", "--frameworks", f"torch,{broken}", "--mode", "matched", "--cases", "nc-2x4", "--no-hard",
                "--jobs", "1"]
    else:
        path = tmp_path / "x.npz"
        np.savez(path, x=np.random.default_rng(0).normal(size=(6, 3)))
        args = ["check", "--input", str(path), "--frameworks", f"torch,{broken}"]
    assert main([*args, "--json", str(out)]) == 1
    captured = capsys.readouterr()
    assert f"{broken} was asked for but is installed and fails to import" in captured.err
    assert "RuntimeError: undefined symbol" in captured.err and "Traceback" not in captured.err
    doc = json.loads(out.read_text())
    ran = [r for r in doc["records"] if r["status"] == "ok"]
    assert ran and {r["framework"] for r in ran} == {"torch"} and all(r["passed"] for r in ran)  # the rest ran
    skipped = [r for r in doc["records"] if r["framework"] == broken]
    assert skipped and all(r["status"] == "skipped" and "failed to import" in r["reason"] for r in skipped)
    if command == "parity":  # not named explicitly (all frameworks): reported as skipped, not a failure
        monkeypatch.setattr(registry, "framework_names", lambda: ("torch", broken))
        assert main(["parity", "--mode", "matched", "--cases", "nc-2x4", "--no-hard"]) == 0


def test_nothing_compared_is_not_a_pass(monkeypatch, capsys):
    """With no framework able to run, the gate has nothing to judge: exit 1 and say so, never a vacuous pass."""
    def no_such_module(framework, name):
        missing = registry.descriptor(framework).distributions[0]
        raise ModuleNotFoundError(f"No module named {missing!r}", name=missing)

    monkeypatch.setattr(registry, "framework_module", no_such_module)
    assert main(["parity", "--jobs", "1", "--no-hard", "--cases", "nc-2x4"]) == 1
    captured = capsys.readouterr()
    assert "nothing was compared" in captured.err
    assert "is not installed" in captured.out
