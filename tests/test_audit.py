"""bnparity audit, framework-free: the records round-trip, bad input is one line and exit 2, the verdict logic."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from bnparity.frameworks.audit import LayerAudit, relative_change
from bnparity.suites.audit.records import AuditDoc, AuditMeta, AuditRecord, AuditSkip, load_audit
from bnparity.suites.cli import main
from bnparity.suites.environment import environment
from bnparity.suites.schema import Environment, FormatError, from_dict, to_dict

RUN = Path("/work/runs/main-job-1202b")


def _layer(**changes: object) -> LayerAudit:
    fields = dict(layer="bn1", framework="torch", kind="torch.nn.BatchNorm2d", params_frozen=True,
                  batch_statistics=False, setting="s", running_mean_change=0.0, running_var_change=0.0,
                  running_mean_relative=0.0, running_var_relative=0.0, param_change=0.0, output_gap=0.0, fix="fix")
    return LayerAudit(**{**fields, **changes})


def _doc() -> AuditDoc:
    meta = AuditMeta(environment=from_dict(Environment, environment()), source="hand-built", run_dir=None,
                     epoch={"torch": 5}, images=8, lr=0.1)
    record = AuditRecord("torch", "requires_grad=False", False, "d", "torch.nn.Sequential", "step",
                         (_layer(running_mean_change=0.5, batch_statistics=True, output_gap=None),))
    return AuditDoc(meta=meta, records=(record,), skipped=(AuditSkip("mxnet", "mxnet is not installed"),))


def test_records_round_trip_through_json():
    doc = _doc()
    assert load_audit(json.loads(json.dumps(to_dict(doc)))) == doc
    assert to_dict(doc)["format"] == "bnparity-audit/1"


def test_a_newer_or_foreign_format_is_refused():
    data = to_dict(_doc())
    with pytest.raises(FormatError, match="newer"):
        load_audit({**data, "format": "bnparity-audit/9"})
    with pytest.raises(FormatError, match="expected format"):
        load_audit({**data, "format": "bnparity-pitfalls/1"})


def test_verdicts():
    assert _layer().frozen and not _layer().drifted
    assert _layer(running_var_change=1e-9).drifted  # any movement of the statistics is drift
    assert _layer(param_change=0.1).drifted  # frozen γ that moved
    assert not _layer(param_change=0.1, params_frozen=False).drifted  # a trained γ may move
    batch = _layer(batch_statistics=True, output_gap=0.5)
    assert not batch.drifted and not batch.frozen and "batch statistics" in batch.describe()
    assert relative_change([0.0, 2.0], [0.0, 1.0]) == 0.5 and relative_change([0.0], [0.0]) == 0.0


@pytest.mark.parametrize("args, message", [
    (["--run", "/nonexistent/run"], "does not exist"),
    (["--frameworks", "nope"], "unknown framework"),
    (["--frameworks", ""], "empty name"),
    (["--images", "1"], "--images must be >= 2"),
])
def test_bad_input_is_one_line_and_exit_2(capsys, args, message):
    assert main(["audit", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err


def test_a_directory_without_a_run_or_without_bn_checkpoints_is_exit_2(tmp_path, capsys):
    assert main(["audit", "--run", str(tmp_path)]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
    if not (RUN / "train" / "manifest.json").exists():
        pytest.skip(f"no finished run at {RUN}")
    train = tmp_path / "train"
    (train / "checkpoints" / "torch-nobn-seed0").mkdir(parents=True)  # only a no-BN run's folder
    shutil.copy(RUN / "train" / "manifest.json", train / "manifest.json")
    assert main(["audit", "--run", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no BN checkpoint" in err
