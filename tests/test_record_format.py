"""The record format (suites/schema.py) of model parity, training runs and the run manifest: what the suites write
reads back unchanged, the release of 2026-11-29 still loads and reports the same numbers, a newer version is
refused in one line, a bad line costs only itself, different batches are caught, and the report shows the fields
it means (final, not best, accuracy; relative, with the raw error beside it)."""

from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path

import pytest
from conftest import require, write_fake_fashion_mnist
from fabricate import fields

from bnparity.frameworks.registry import display_name
from bnparity.reports.build import build_report, sections
from bnparity.reports.document import Table
from bnparity.reports.figures import training_figures
from bnparity.reports.load import load_run
from bnparity.reports.summary import build_summary
from bnparity.suites.cli import main
from bnparity.suites.convergence import records as rec
from bnparity.suites.convergence.conclusions import compute_conclusions
from bnparity.suites.convergence.presets import get_preset
from bnparity.suites.convergence.runner import FAIL_ENV, run_one
from bnparity.suites.model_parity import harness
from bnparity.suites.model_parity.summary import worst
from bnparity.suites.records import read_json, write_json
from bnparity.suites.schema import (
    TRAIN_EVENTS,
    FormatError,
    ModelComparison,
    ModelNotRun,
    TrainManifest,
    load_conclusions,
    load_model_parity,
    load_run_manifest,
    load_train_event,
    load_train_manifest,
    to_dict,
)

LEGACY = Path(__file__).parent / "data" / "legacy-2026-11-29"
RunId = rec.RunId


@pytest.fixture(scope="module")
def fake_data(tmp_path_factory):
    return write_fake_fashion_mnist(tmp_path_factory.mktemp("fmnist"))


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _legacy_copy(tmp_path: Path) -> Path:
    run_dir = tmp_path / "legacy"
    shutil.copytree(LEGACY, run_dir, ignore=shutil.ignore_patterns("expected-summary.json"))
    return run_dir


# ---------------------------------------------------------------- what the suites write reads back unchanged


def test_every_training_record_kind_round_trips_as_the_suite_wrote_it(tmp_path, fake_data, monkeypatch):
    """A real `bnparity train`: done, failed and skipped runs (mxnet hidden), then an interrupted run."""
    require("torch")
    hidden = tmp_path / "site"
    (hidden / "mxnet").mkdir(parents=True)
    (hidden / "mxnet" / "__init__.py").write_text('raise ImportError("hidden by the test", name="mxnet")\n')
    monkeypatch.setenv("PYTHONPATH", str(hidden))
    monkeypatch.setenv(FAIL_ENV, "torch-nobn-seed0@3")
    out = tmp_path / "run"
    assert main(["train", "--preset", "smoke", "--frameworks", "torch,mxnet", "--out", str(out), "--data-dir",
                 str(fake_data), "--no-verify-data", "--jobs", "2"]) == 1  # one run failed, as injected
    monkeypatch.delenv(FAIL_ENV)
    interrupted = RunId("torch", "bn", 1)
    with pytest.raises(KeyboardInterrupt):  # the "orchestrator" (a pid that is not our parent) is gone
        run_one(run_dir=out, run=interrupted, parent_pid=os.getppid() + 10**6)
    seen = set()
    for path in sorted(out.glob("*-seed*.jsonl")):
        header, *lines = _lines(path)
        assert header == {"kind": "header", "format": "bnparity-train-run/2"}, path.name
        for line in lines:
            record = load_train_event(line)
            assert type(record) is TRAIN_EVENTS[line["kind"]] and to_dict(record) == line
            seen.add(record.kind)
    assert seen == set(TRAIN_EVENTS)
    manifest = read_json(out / "manifest.json")
    assert manifest["format"] == "bnparity-train/2" and to_dict(load_train_manifest(manifest)) == manifest
    conclusions = read_json(out / rec.CONCLUSIONS)
    assert conclusions["format"] == "bnparity-train-conclusions/2"
    assert to_dict(load_conclusions(conclusions)) == conclusions
    assert conclusions["runs"]["torch-bn-seed0"]["epochs_planned"] == get_preset("smoke").epochs


def test_a_crashed_framework_is_an_error_record_that_round_trips(monkeypatch):
    require("torch")
    real = harness.load_trainer

    class Crashes:
        framework = "mxnet"

        def __init__(self, **kwargs):
            raise RuntimeError("the framework crashed (test)")

    monkeypatch.setattr(harness, "load_trainer", lambda fw: Crashes if fw == "mxnet" else real(fw))
    cfgs = harness.configs(preset="tiny", variants=("nobn",), dropout_modes=("off",), dtypes=("float64",))
    result = harness.run_model_parity(configs=cfgs, frameworks=("torch", "mxnet"))
    (error,) = [r for r in result.records if isinstance(r, ModelNotRun)]
    assert error.status == "error" and error.gate and error.passed is False and "crashed (test)" in error.reason
    assert harness.failures(result.records) == [error]
    for r in result.records:
        if isinstance(r, ModelComparison):
            assert r.rel_err == (r.max_abs_err / r.scale if r.scale else r.max_abs_err)
    from bnparity.suites.schema import from_dict

    for r in result.records:
        assert from_dict(type(r), json.loads(json.dumps(to_dict(r)))) == r


# ---------------------------------------------------------------- the release of 2026-11-29


def test_the_files_of_2026_11_29_load():
    doc = load_model_parity(read_json(LEGACY / "model_parity.json"))
    raw = read_json(LEGACY / "model_parity.json")
    assert len(doc.records) == len(raw["records"]) and doc.meta.environment.packages == raw["meta"]["packages"]
    assert doc.meta.anchor == next(r["against"] for r in raw["records"] if r.get("against") not in (None, "reference"))
    assert doc.meta.tolerance.c_model == raw["meta"]["tolerance"]["C_MODEL"]
    for old, new in zip(raw["records"], doc.records, strict=True):
        if isinstance(new, ModelComparison):
            assert new.rel_err == pytest.approx(old["max_abs_err"] / old["scale"])
    run = load_run_manifest(read_json(LEGACY / "manifest.json"))
    assert run.steps == read_json(LEGACY / "manifest.json")["steps"]
    manifest = rec.load_manifest(LEGACY / "train")
    assert manifest.preset == get_preset("smoke") and len(manifest.runs) == 6
    load_conclusions(read_json(LEGACY / "train" / rec.CONCLUSIONS))
    for name in manifest.runs:
        rr = rec.read_run(RunId.parse(name).records_path(LEGACY / "train"))
        lines = _lines(rr.path)
        assert rr.version == 1 and not rr.unreadable and len(rr.events) == len(lines)
        for e, line in zip(rr.events, lines, strict=True):
            written = to_dict(e)
            assert {k: written[k] for k in line} == line  # every field as the release wrote it
            added = {k: v for k, v in written.items() if k not in line}
            assert set(added) <= {"batch_digest", "epoch_digest", "best_test_accuracy"} and not any(added.values())


def _by(rows: list[dict], *keys: str) -> dict:
    return {tuple(r[k] for k in keys): r for r in rows}


def test_a_report_of_2026_11_29_shows_the_same_numbers(tmp_path):
    """expected-summary.json is what the release's own `bnparity report` wrote for this directory."""
    expected = json.loads((LEGACY / "expected-summary.json").read_text())
    report = build_report(_legacy_copy(tmp_path))
    got = json.loads(report.summary_json.read_text())
    old, new = expected["model_parity"], got["model_parity"]
    for key in ("preset", "gated", "failures", "all_pass", "skipped", "errors"):
        assert new[key] == old[key], key
    assert _by(new["groups"], "framework", "dtype") == _by(old["groups"], "framework", "dtype")
    assert _by(new["ungated_findings"], "kind", "dtype") == _by(old["ungated_findings"], "kind", "dtype")
    old, new = expected["training"], got["training"]
    for key in ("preset", "epochs", "targets", "complete", "incomplete", "skipped"):
        assert new[key] == old[key], key
    # a configuration's batch_size came with the batch-size sweep: null for every run before it, nothing else changes
    assert all(c.pop("batch_size") is None for c in new["configs"])
    assert _by(new["configs"], "framework", "variant") == _by(old["configs"], "framework", "variant")
    assert _by(new["bn_speedup"], "framework", "target") == _by(old["bn_speedup"], "framework", "target")
    assert new["agreement"] == old["agreement"]
    assert not new["batch_digests"]["recorded"]  # the release recorded no batch digests
    assert len(new["batch_digests"]["without_digests"]) == 4  # its 4 trained runs
    assert {(p["part"], p["status"]) for p in got["incomplete"]} == {(p["part"], p["status"])
                                                                     for p in expected["incomplete"]}


# ---------------------------------------------------------------- a newer version is refused in one line


@pytest.mark.parametrize("name, loader, family", [
    ("model_parity.json", load_model_parity, "model-parity"),
    ("manifest.json", load_run_manifest, "run"),
    ("train/manifest.json", load_train_manifest, "train"),
    ("train/conclusions.json", load_conclusions, "train-conclusions"),
])
def test_a_future_version_is_refused_in_one_line_naming_both(name, loader, family):
    doc = read_json(LEGACY / name)
    doc["format"] = f"bnparity-{family}/99"
    with pytest.raises(FormatError) as e:
        loader(doc)
    message = str(e.value)
    assert "\n" not in message and f"bnparity-{family}/99" in message and f"bnparity-{family}/2" in message


def test_a_future_file_makes_its_part_unreadable_and_the_report_still_builds(tmp_path, capsys):
    run_dir = _legacy_copy(tmp_path)
    doc = read_json(run_dir / "model_parity.json")
    write_json(run_dir / "model_parity.json", {**doc, "format": "bnparity-model-parity/3"})
    path = RunId.parse("torch-bn-seed0").records_path(run_dir / "train")
    path.write_text('{"kind": "header", "format": "bnparity-train-run/3"}\n' + path.read_text())
    assert main(["report", str(run_dir)]) == 0
    assert "INCOMPLETE: model_parity; train" in capsys.readouterr().out.replace("manifest; ", "")
    data = load_run(run_dir)
    for part, versions in (("model_parity", ("model-parity/3", "model-parity/2")),
                           ("train", ("train-run/3", "train-run/2"))):
        status = data.parts[part]
        assert status.status == "unreadable" and all(v in status.detail for v in versions), status
        assert "\n" not in status.detail
    html = (run_dir / "report.html").read_text()
    assert "bnparity-model-parity/3" in html and "bnparity-train-run/3" in html


# ---------------------------------------------------------------- a bad line costs only that line


def _corrupt(run_dir: Path, name: str, *, middle: bool, cut: str | None) -> Path:
    """Overwrite one middle "iter" line with garbage and/or cut the line of kind `cut` (and what follows) in half."""
    path = RunId.parse(name).records_path(run_dir / "train")
    lines = path.read_text().splitlines()
    if middle:
        i = next(i for i, line in enumerate(lines) if '"iter"' in line and i > 5)
        lines[i] = lines[i][: len(lines[i]) // 3] + "\x00garbage"
    text = "\n".join(lines) + "\n"
    if cut is not None:
        j = next(j for j, line in enumerate(lines) if f'"kind": "{cut}"' in line)
        text = "\n".join(lines[:j]) + "\n" + lines[j][: len(lines[j]) // 2]  # killed mid-write: no newline
    path.write_text(text)
    return path


def test_a_corrupt_middle_line_and_a_cut_last_line_cost_those_lines_only(tmp_path):
    run_dir = _legacy_copy(tmp_path)
    name = "torch-bn-seed0"
    before = compute_conclusions(run_dir / "train").runs[name]
    path = _corrupt(run_dir, name, middle=True, cut="done")
    rr = rec.read_run(path)
    assert len(rr.unreadable) == 2 and rr.cut and rr.tail_unreadable
    after = compute_conclusions(run_dir / "train")
    run = after.runs[name]
    assert run.status == "done" and run.final_test_accuracy == before.final_test_accuracy is not None
    assert run.unreadable_lines == 2 and after.unreadable_lines == {path.name: 2}
    report = build_report(run_dir)
    html = report.html.read_text()
    assert f"2 unreadable lines in {path.name}" in html
    (cfg,) = [c for c in report.summary["training"].configs if (c.framework, c.variant) == ("torch", "bn")]
    assert cfg.final_test_accuracy.mean == before.final_test_accuracy and cfg.seeds_done == 1


def test_a_cut_line_before_the_last_epoch_leaves_the_run_incomplete(tmp_path):
    run_dir = _legacy_copy(tmp_path)
    path = _corrupt(run_dir, "torch-nobn-seed0", middle=False, cut="epoch")  # killed while ending epoch 1
    run = compute_conclusions(run_dir / "train").runs["torch-nobn-seed0"]
    assert run.status == "incomplete" and run.final_test_accuracy is None and run.unreadable_lines == 1
    assert rec.read_run(path).tail_unreadable


# ---------------------------------------------------------------- identical batches


def _digest_run(run_dir: Path, framework: str, digests: list[str]) -> None:
    run = RunId(framework, "bn", 0)
    with rec.RecordWriter(run.records_path(run_dir), run) as out:
        out.write("start", epoch=0, iteration=0, **fields("start"))
        for i, digest in enumerate(digests, start=1):
            out.write("iter", epoch=1, iteration=i, **fields("iter", batch_digest=digest))
            if i % 4 == 0:
                out.write("eval", epoch=1, iteration=i, **fields("eval", epochs_done=i / 8, test_accuracy=0.5))


def test_a_batch_that_differs_at_iteration_5_is_caught_and_flagged(tmp_path):
    run_dir = tmp_path / "train"
    rec.write_manifest(run_dir, TrainManifest(preset=get_preset("smoke"), runs=("torch-bn-seed0", "jax-bn-seed0"),
                                              seeds=(0,)))
    digests = [f"{i:016x}" for i in range(1, 9)]
    _digest_run(run_dir, "torch", digests)
    _digest_run(run_dir, "jax", digests[:4] + ["ffffffffffffffff"] + digests[5:])
    c = compute_conclusions(run_dir)
    (check,) = c.batch_digests.checks
    assert (check.iterations, check.mismatched, check.first_mismatch) == (8, 1, 5) and not c.batch_digests.identical
    assert check.digests == {"jax": "ffffffffffffffff", "torch": digests[4]}
    report = build_report(run_dir)
    flagged = [v for v in report.summary["verdicts"] if v.startswith("DIFFERENT BATCHES")]
    assert len(flagged) == 1 and "1 of 8 iterations" in flagged[0] and "iteration 5" in flagged[0]
    assert "trained on different batches" in report.html.read_text()
    _digest_run(tmp_path / "same", "torch", digests)
    shutil.copy(run_dir / "manifest.json", tmp_path / "same" / "manifest.json")
    _digest_run(tmp_path / "same", "jax", digests)
    assert compute_conclusions(tmp_path / "same").batch_digests.identical


# ---------------------------------------------------------------- the report reads the field it means


def _table(section, first_header: str) -> Table:
    return next(b for b in section.blocks if isinstance(b, Table) and b.header[0] == first_header)


def test_the_report_shows_final_not_best_accuracy_and_relative_errors_with_the_raw_one(tmp_path):
    run_dir = _legacy_copy(tmp_path)
    train = run_dir / "train"
    name = "torch-bn-seed0"
    path = RunId.parse(name).records_path(train)
    lines = _lines(path)
    evals = [i for i, r in enumerate(lines) if r["kind"] == "eval"]
    lines[evals[2]]["test_accuracy"] = 0.75  # a mid-run best, above the final evaluation
    final = lines[evals[-1]]["test_accuracy"]
    assert final < 0.75
    path.write_text("".join(json.dumps(r) + "\n" for r in lines))
    data = load_run(run_dir)
    summary = build_summary(data)
    figures = training_figures(data.train_records, epochs=data.conclusions.epochs)
    parts = {s.id: s for s in sections(data, summary, figures)}
    table = _table(parts["time-to-accuracy"], "framework")
    row = next(r for r in table.rows if (r[0].text, r[1].text) == (display_name("torch"), "with BN"))
    header = table.header
    assert row[header.index("final test accuracy")].text == f"{final:.4f} (n=1)"
    assert row[header.index("best")].text == "0.7500"
    assert any(f"{display_name('torch')} {final:.3f} with BN" in v for v in summary["verdicts"])
    for figure in figures:
        (series,) = [s for s in figure.series if (s.framework, s.variant, s.metric) == ("torch", "bn", "test_accuracy")]
        assert series.values == tuple(lines[i]["test_accuracy"] for i in evals)  # every point as recorded
        assert series.values[-1] == final and series.epochs[-1] == data.conclusions.epochs
    # model parity: the cell is max |Δ| / scale, the raw max |Δ| and the scale are beside it; the row checked is the
    # one whose worst comparison's scale is furthest from 1, where the raw and the relative error differ most
    doc = data.model_parity
    model = _table(parts["model-parity"], "quantity")
    versus = [r for r in doc.comparisons if r.against == doc.meta.anchor]
    cells = {(r.kind, r.framework, r.dtype): worst([x for x in versus if (x.kind, x.framework, x.dtype)
                                                     == (r.kind, r.framework, r.dtype)]) for r in versus}
    (kind, framework, dtype), w = max(cells.items(), key=lambda kv: abs(math.log10(kv[1].scale)))
    assert f"{w.rel_err:.1e}" != f"{w.max_abs_err:.1e}"
    column = model.header.index(f"{display_name(framework)} {dtype}")
    (cell,) = [r[column] for r in model.rows if (r[0].text, r[1].text) == (kind, display_name(doc.meta.anchor))]
    assert cell.text.startswith(f"{w.rel_err:.1e} · ") and f"max |Δ| {w.max_abs_err:.2g}" in cell.title
    assert f"scale {w.scale:.2g}" in cell.title


def test_an_unknown_framework_is_grey_and_sorts_last():
    from bnparity.frameworks.registry import descriptor, framework_names
    from bnparity.reports.figures import OTHER_COLOR, color

    assert color("caffe") == OTHER_COLOR
    assert [color(f) for f in framework_names()] == [descriptor(f).color for f in framework_names()]
    assert OTHER_COLOR not in {descriptor(f).color for f in framework_names()}
