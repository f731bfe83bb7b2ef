"""The report's and the porting guide's cross-replica parts, from hand-written sync_parity.json and dp_parity.json
(their record classes; no framework runs): the tables, the unequal-shard finding, the verdicts, a run without them."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from bnparity.frameworks.conventions import (
    all_conventions,
    all_layer_conventions,
    all_replica_conventions,
    replica_convention,
)
from bnparity.reports.build import build_report
from bnparity.reports.porting import guide
from bnparity.reports.porting_replicas import replica_section as porting_section
from bnparity.suites.environment import environment
from bnparity.suites.records import write_json
from bnparity.suites.schema import (
    ConventionsDoc,
    DPComparison,
    DPNotRun,
    DPParityDoc,
    DPParityMeta,
    Environment,
    SyncComparison,
    SyncParityDoc,
    SyncParityMeta,
    SyncSkip,
    from_dict,
    load_dp_parity,
    load_sync_parity,
    to_dict,
)
from bnparity.suites.sync_parity.cases import sync_cases


def _comparison(framework: str, impl: str, *, reference: str, gate: bool, quantity: str = "y", passed: bool = True,
                err: float = 1e-7, case: str = "r2-nchw-unequal-sync-float32") -> SyncComparison:
    return SyncComparison(case=case, framework=framework, impl=impl, variant="default", replicas=2, shard_sizes=(4, 3),
                          synchronized=True, dtype="float32", layout="nchw", reference=reference, gate=gate,
                          quantity=quantity, replica=None, passed=passed, max_abs_err=err, max_rel_err=err,
                          worst_index=(0, 0, 0, 0), n_mismatched=0 if passed else 3, n_total=84, atol=1e-6,
                          rtol=2e-6, scale=2.0, worst_ratio=err / 2e-6)


def sync_doc(*, failing: bool = False) -> SyncParityDoc:
    records = [
        _comparison("torch", "scratch", reference="global-batch", gate=True),
        _comparison("jax", "builtin", reference="equal-weight", gate=True, passed=not failing,
                    err=1e-3 if failing else 1e-7),
        _comparison("jax", "builtin", reference="global-batch", gate=False, passed=False, err=0.1),  # 0.1/2 = 0.05
        SyncSkip(case="r2-nchw-unequal-sync-float32", framework="torch", impl="builtin", variant="default",
                 replicas=2, gate=False, status="skipped", reason="torch.nn.SyncBatchNorm on CPU: refused"),
    ]
    meta = SyncParityMeta(environment=from_dict(Environment, environment()), frameworks=("torch", "jax"),
                          replicas=(2,), timeout_s=120.0, wall_time_s=12.5, complete=True,
                          cases=tuple(c.info() for c in sync_cases(2)),
                          conventions=tuple(replica_convention(f) for f in ("torch", "jax")))
    return SyncParityDoc(meta=meta, records=tuple(records))


def dp_doc() -> DPParityDoc:
    def row(mode: str, kind: str, rel: float, gate: bool) -> DPComparison:
        return DPComparison(framework="torch", preset="cpu", variant="bn", dtype="float64", replicas=4, bn_sync=mode,
                            kind=kind, quantity="conv1.w" if kind != "loss" else "loss", gate=gate,
                            passed=rel <= 4e-13, max_abs_err=rel * 3.0, scale=3.0, rel_err=rel, rtol=4e-13)
    records = [row("sync", k, 2e-14, True) for k in ("loss", "grad", "param", "running_stats")]
    records += [row("local", k, 1.5, False) for k in ("loss", "grad", "param", "running_stats")]
    records.append(DPNotRun(framework="mxnet", replicas=4, bn_sync="sync", dtype="float64", gate=False,
                            status="skipped", reason="no float64 kernel"))
    meta = DPParityMeta(environment=from_dict(Environment, environment()), frameworks=("torch", "mxnet"),
                        replicas=(4,), preset="cpu", batch=16, timeout_s=300.0, wall_time_s=30.0, complete=True)
    return DPParityDoc(meta=meta, records=tuple(records))


def make_run(tmp_path: Path, *, sync: SyncParityDoc | None, dp: DPParityDoc | None) -> Path:
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    if sync is not None:
        write_json(run_dir / "sync_parity.json", to_dict(sync))
    if dp is not None:
        write_json(run_dir / "dp_parity.json", to_dict(dp))
    write_json(run_dir / "conventions.json", to_dict(ConventionsDoc(conventions=all_conventions(),
                                                                    layers=all_layer_conventions())))
    steps = {"sync-parity": "done", "dp-parity": "done", "report": "pending"}
    write_json(run_dir / "manifest.json", {"environment": environment(), "command": ["bnparity", "run"],
                                           "started": "2026-01-01T00:00:00+00:00",
                                           "finished": "2026-01-01T00:10:00+00:00", "steps": steps})
    return run_dir


def _section(html: str, section_id: str) -> str:
    m = re.search(rf'<section id="{section_id}">(.*?)</section>', html, re.S)
    assert m, section_id
    return m.group(1)


def test_documents_round_trip():
    for doc, load in ((sync_doc(), load_sync_parity), (dp_doc(), load_dp_parity)):
        assert load(to_dict(doc)) == doc


def test_the_cross_replica_section_shows_conventions_results_findings_and_the_step(tmp_path):
    report = build_report(make_run(tmp_path, sync=sync_doc(), dp=dp_doc()))
    html = _section(report.html.read_text(), "cross-replica")
    for row in (replica_convention("torch"), replica_convention("jax")):
        assert row.layer in html
    assert "equal weights 1/R" in html and "weighted by each shard" in html
    assert "JAX/Flax builtin with unequal shards" in html and "y 0.05" in html  # 0.1 / scale 2
    assert "torch.nn.SyncBatchNorm on CPU: refused" in html
    assert "2/2 gated comparisons pass" in html
    assert "PyTorch" in html and "finding" in html and "2e-14" in html and "no float64 kernel" in html
    verdicts = report.summary["verdicts"]
    assert any(v.startswith("Cross-replica BatchNorm: 2/2 gated comparisons pass; JAX/Flax weights unequal shards")
               for v in verdicts)
    assert any(v.startswith("Data-parallel SGD step: with synchronized BN it is one device's step, 4/4")
               for v in verdicts)
    assert report.summary["sync_parity"]["findings"]["JAX/Flax builtin"]["by_quantity"]["y"] == pytest.approx(0.05)
    assert report.summary["complete"]


def test_a_failing_cross_replica_gate_is_a_failing_verdict(tmp_path):
    report = build_report(make_run(tmp_path, sync=sync_doc(failing=True), dp=None))
    assert any("1 of 2 gated checks FAIL" in v for v in report.summary["verdicts"])
    assert 'class="fail"' in _section(report.html.read_text(), "cross-replica")


def test_a_missing_part_is_reported_and_the_other_still_shown(tmp_path):
    report = build_report(make_run(tmp_path, sync=None, dp=dp_doc()))
    html = _section(report.html.read_text(), "cross-replica")
    assert "One SGD step" in html and "unequal shards weighted" not in html
    assert report.summary["sync_parity"] is None and not report.summary["complete"]
    assert [p["part"] for p in report.summary["incomplete"]] == ["sync_parity"]


def test_the_porting_guide_has_every_frameworks_switch_and_the_measurements():
    rows = all_replica_conventions()
    assert {r.framework for r in rows} >= {"torch", "jax"}
    lines = "\n".join(porting_section(rows, sync_doc(), dp_doc()))
    for row in rows:
        assert row.switch.split("(")[0] in lines
    assert "y is up to 0.05 (JAX/Flax) of its scale away from the global batch" in lines
    assert "| PyTorch | 2e-14 | 1.5 |" in lines
    # without records only the registry's facts
    bare = "\n".join(porting_section(rows))
    assert "Measured by" not in bare and rows[0].facts[0] in bare


def test_guide_includes_the_section_when_the_registry_has_rows(tmp_path):
    from test_reports import _parity_records

    from bnparity.suites.schema import load_parity

    path = tmp_path / "parity.json"
    _parity_records(path)
    from bnparity.suites.records import read_json

    text = guide(parity=load_parity(read_json(path)), conventions=all_conventions(),
                 replica_conventions=all_replica_conventions(), sync_parity=sync_doc())
    assert "## BatchNorm across data-parallel replicas" in text and "bnparity sync-parity" in text


def test_the_guide_lists_a_data_parallel_training_runs_accuracies():
    from bnparity.suites.schema import AccuracyStat, DataParallelComparison, ModeResult

    def mode(name: str, acc: float) -> ModeResult:
        return ModeResult(bn_sync=name, replicas=1 if name == "single" else 4, seeds=(0, 1), seeds_done=2,
                          final_test_accuracy=AccuracyStat(mean=acc, std=0.01, n=2), best_test_accuracy_mean=acc)
    training = [DataParallelComparison(framework="torch", variant="bn", replicas=4, global_batch=128,
                                       modes=(mode("local", 0.70), mode("sync", 0.80), mode("single", 0.81)),
                                       final_local_minus_single=-0.11, final_sync_minus_single=-0.01)]
    lines = "\n".join(porting_section(all_replica_conventions(), training=training))
    assert "| PyTorch | 4 × 32 | 0.7000 | 0.8000 | 0.8100 | -0.1100 | -0.0100 |" in lines
    assert "Seeds per mode: 2." in lines
