"""The typed layer-parity records: parity.json versions 1 and 2, conventions.json, and the reports that read them.

tests/data/legacy-parity-v1.json was written by the release of 2026-11-29 (commit 5b49d97: `bnparity parity
--frameworks torch,mxnet,jax --cases nc-2x4-float32,offset1e4 --json`, with JAX made unavailable, re-serialized
without indentation); tests/data/legacy-parity-v1-summary.json is what that release's reports/layer_summary.py
computed from it (layer_parity, hard_inputs in both modes, measured_defaults).
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import pytest

from bnparity.frameworks.conventions import all_conventions, all_layer_conventions
from bnparity.frameworks.registry import baseline
from bnparity.reports.layer_summary import hard_inputs, layer_parity, measured_defaults
from bnparity.reports.porting import main as porting_main
from bnparity.suites.parity.summary import cells, gate_failures
from bnparity.suites.records import read_json
from bnparity.suites.schema import (
    PARITY_FORMAT,
    ConventionsDoc,
    FormatError,
    LayerComparison,
    LayerSkip,
    from_dict,
    load_conventions,
    load_parity,
    to_dict,
)

DATA = Path(__file__).resolve().parent / "data"
LEGACY = DATA / "legacy-parity-v1.json"
LEGACY_SUMMARY = DATA / "legacy-parity-v1-summary.json"


def _same(old, new, path="") -> None:
    """Equal structures, floats equal to 1e-12 relative (a legacy scale is atol/rtol: the last bit may differ)."""
    if isinstance(old, dict):
        assert isinstance(new, dict) and set(old) == set(new), path
        for k in old:
            _same(old[k], new[k], f"{path}.{k}")
    elif isinstance(old, list):
        assert isinstance(new, list) and len(old) == len(new), path
        for i, (a, b) in enumerate(zip(old, new, strict=True)):
            _same(a, b, f"{path}[{i}]")
    elif isinstance(old, float):
        assert new == pytest.approx(old, rel=1e-12, abs=0), path
    else:
        assert old == new, path


def test_the_legacy_fixture_is_small_and_of_version_1() -> None:
    assert LEGACY.stat().st_size < 100_000
    assert read_json(LEGACY)["format"] == "bnparity-parity/1"


def test_a_version_1_file_loads_typed_with_what_version_1_left_out() -> None:
    raw = read_json(LEGACY)
    doc = load_parity(raw)
    assert doc.format == PARITY_FORMAT and len(doc.records) == len(raw["records"])
    assert doc.meta.baseline == "torch"  # the release of 2026-11-29 named it in its references: torch-convention
    assert doc.meta.environment.python == raw["meta"]["python"] and doc.meta.complete is True
    assert [c.name for c in doc.meta.cases] == [c["name"] for c in raw["meta"]["cases"]]
    for old, new in zip(raw["records"], doc.records, strict=True):
        assert isinstance(new, LayerComparison if old["status"] == "ok" else LayerSkip)
        assert new.normalization == "batchnorm" and (new.case, new.framework, new.mode) == \
            (old["case"], old["framework"], old["mode"])
        assert new.vs_baseline == (old.get("reference") == "torch-convention")
        if old["status"] == "ok":
            assert new.scale == pytest.approx(old["atol"] / old["rtol"], rel=1e-15)
            spec = old["spec"]
            assert new.new_weight == pytest.approx(spec["momentum"] if spec["momentum_weighs"] == "new"
                                                   else 1 - spec["momentum"], abs=1e-15)
            assert (new.max_abs_err, new.worst_ratio, new.passed) == (old["max_abs_err"], old["worst_ratio"],
                                                                      old["passed"])
        else:
            assert new.passed == old["passed"] and new.reason == old["reason"]
    assert any(r.case is None for r in doc.not_run)  # JAX unavailable: a skip with no case


def test_a_report_of_a_version_1_file_shows_the_numbers_that_release_computed() -> None:
    doc = load_parity(read_json(LEGACY))
    expected = json.loads(LEGACY_SUMMARY.read_text().replace('"vs_torch', '"vs_baseline'))
    _same(expected["layer_parity"], json.loads(json.dumps(layer_parity(doc))), "layer_parity")
    _same(expected["hard_inputs"], json.loads(json.dumps(hard_inputs(doc))), "hard_inputs")
    _same(expected["hard_inputs_defaults"], json.loads(json.dumps(hard_inputs(doc, mode="defaults"))), "defaults")
    measured = measured_defaults(doc)
    _same(expected["measured_defaults"], json.loads(json.dumps(measured)), "measured_defaults")
    # and the numbers are real: MXNet's biased running variance is far from PyTorch's unbiased one
    assert measured["mxnet"]["vs_baseline"]["running_var"]["scaled_err"] > 0.1


def test_version_2_round_trips_and_an_upgraded_file_writes_as_version_2() -> None:
    doc = load_parity(read_json(LEGACY))
    written = json.loads(json.dumps(to_dict(doc), allow_nan=False))
    assert written["format"] == PARITY_FORMAT and "environment" in written["meta"]
    again = load_parity(written)
    assert again == doc
    assert {r["reference"] for r in written["records"]} == {None, "matched", "own-convention", "baseline-convention"}


def test_inf_and_nan_are_written_as_null_and_read_back_as_none() -> None:
    doc = load_parity(read_json(LEGACY))
    victim = doc.comparisons[0]
    bad = dataclasses.replace(victim, max_abs_err=None, worst_ratio=None, passed=False)
    written = to_dict(dataclasses.replace(doc, records=(bad,)))
    assert written["records"][0]["max_abs_err"] is None
    (read,) = load_parity(written).records
    assert read.ratio == math.inf and read.scaled_error is None
    assert cells([read])[(read.case, f"{read.framework}/{read.impl}")].text() == "inf/nan FAIL"


def test_a_newer_version_is_refused_in_one_line_naming_both(tmp_path, capsys) -> None:
    future = {**read_json(LEGACY), "format": "bnparity-parity/3"}
    with pytest.raises(FormatError) as e:
        load_parity(future, where="x/parity.json")
    message = str(e.value)
    assert "bnparity-parity/3" in message and PARITY_FORMAT in message and "\n" not in message
    path = tmp_path / "parity.json"
    path.write_text(json.dumps(future))
    assert porting_main(["--parity", str(path), "--out", str(tmp_path / "p.md")]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "bnparity-parity/3" in err and PARITY_FORMAT in err
    assert not (tmp_path / "p.md").exists()


@pytest.mark.parametrize("change,match", [
    (lambda d: d.update(format="bnparity-model-parity/1"), "expected format bnparity-parity/2"),
    (lambda d: d["records"][2].update(status="maybe"), r"records\[2\]: status must be"),
    (lambda d: d["records"][2].pop("quantity"), r"missing field 'quantity'"),
    (lambda d: d["records"][2].update(max_abs_err="big"), r"records\[2\]\.max_abs_err: expected a number"),
    (lambda d: d.update(records={}), "a list 'records'"),
])
def test_a_malformed_file_is_one_formaterror_naming_where(change, match) -> None:
    data = load_parity(read_json(LEGACY))
    raw = json.loads(json.dumps(to_dict(data)))
    change(raw)
    with pytest.raises(FormatError, match=match):
        load_parity(raw)


def test_version_1_error_records_and_a_check_file_without_case_list_load() -> None:
    """The two other shapes the release of 2026-11-29 wrote: a crashed framework, and `bnparity check --json`."""
    legacy = read_json(LEGACY)
    ok = next(r for r in legacy["records"] if r["status"] == "ok" and r["gate"])
    crashed = {k: ok[k] for k in ("case", "framework", "impl", "mode", "reference", "dtype", "gate", "shape", "axis",
                                  "steps", "kappa", "note")} | {"status": "error", "passed": False,
                                                                "reason": "RuntimeError: boom"}
    check = {"format": "bnparity-parity/1", "records": [ok, crashed],
             "meta": {k: legacy["meta"][k] for k in ("time", "python", "packages")} | {"modes": ["matched"],
                                                                                      "input": "mine.npz",
                                                                                      "complete": True}}
    doc = load_parity(check)
    assert doc.meta.input == "mine.npz" and doc.meta.frameworks == (ok["framework"],)
    assert [(c.name, c.shape, c.gate) for c in doc.meta.cases] == [(ok["case"], tuple(ok["shape"]), True)]
    error = doc.records[1]
    assert isinstance(error, LayerSkip) and error.passed is False
    assert gate_failures(doc.records) == [error]


def test_conventions_json_of_every_version_loads() -> None:
    rows = all_conventions()
    layers = all_layer_conventions()
    current = json.loads(json.dumps(to_dict(ConventionsDoc(conventions=rows, layers=layers))))
    assert current["format"] == "bnparity-conventions/2"
    assert load_conventions(current).conventions == rows and load_conventions(current).layers == layers
    assert {r.normalization for r in layers} == {"layernorm", "groupnorm", "instancenorm", "rmsnorm"}
    version_1 = {**current, "format": "bnparity-conventions/1"}
    del version_1["layers"]  # version 1 held BatchNorm's rows only
    assert load_conventions(version_1).conventions == rows and load_conventions(version_1).layers == ()
    legacy_rows = [{k: v for k, v in r.items() if k not in ("constructor", "batch_of_one", "proofs")}
                   for r in current["conventions"]]
    old = load_conventions({"conventions": legacy_rows}).conventions  # conventions.json of 2026-11-29
    assert [r.framework for r in old] == [r.framework for r in rows] and all(r.proofs == {} for r in old)
    assert [r.new_weight for r in old] == [r.new_weight for r in rows]
    with pytest.raises(FormatError, match="bnparity-conventions/3.*bnparity-conventions/2"):
        load_conventions({**current, "format": "bnparity-conventions/3"})


def test_every_registered_convention_says_what_the_porting_guide_needs() -> None:
    for row in all_conventions():
        assert "{m" in row.constructor and "{eps" in row.constructor, row.framework
        assert row.batch_of_one and row.proofs, row.framework
        for field, tests in row.proofs.items():
            assert field == "batch_of_one" or field in {f.name for f in dataclasses.fields(row)}, field
            assert all(t.startswith("tests/") and "::" in t for t in tests), field
    assert baseline().name in {r.framework for r in all_conventions()}


def test_summary_keys_are_named_after_the_role_not_the_framework() -> None:
    measured = measured_defaults(load_parity(read_json(LEGACY)))
    assert all(set(m) == {"own_convention", "vs_baseline", "vs_baseline_outside", "vs_baseline_of"}
               for m in measured.values())
    assert from_dict(LayerSkip, {"case": None, "framework": "f", "impl": "builtin", "mode": "matched",
                                 "normalization": "batchnorm", "gate": False, "status": "skipped",
                                 "reason": "r"}).passed is None
