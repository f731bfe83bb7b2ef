"""The small-batch preset: a batch-size sweep through the convergence suite's runner, records and report."""

from __future__ import annotations

import argparse
import json

import pytest
from conftest import framework_installed, write_fake_fashion_mnist
from test_convergence import SoftmaxTrainer

from bnparity.reports.build import build_report
from bnparity.reports.figures import sweep_points
from bnparity.suites.cli import main
from bnparity.suites.convergence import command
from bnparity.suites.convergence import records as rec
from bnparity.suites.convergence.conclusions import format_conclusions, write_conclusions
from bnparity.suites.convergence.presets import VARIANTS, get_preset, parse_variants
from bnparity.suites.convergence.runner import run_one
from bnparity.suites.errors import UserError
from bnparity.suites.records import read_json
from bnparity.suites.schema import IterEvent, StartEvent, TrainManifest, load_conclusions, to_dict

RunId = rec.RunId
SWEEP = "smoke-sweep"


@pytest.fixture(scope="module")
def fake_data(tmp_path_factory):
    return write_fake_fashion_mnist(tmp_path_factory.mktemp("fmnist"))


def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    command.add_arguments(parser)
    return parser.parse_args(list(argv))


class ScaledSoftmax(SoftmaxTrainer):
    """The NumPy stand-in framework, remembering the learning rate each run was built with."""

    lrs: list[float] = []

    def __init__(self, *, arch, params, sgd, device="cpu"):
        super().__init__(arch=arch, params=params, sgd=sgd, device=device)
        ScaledSoftmax.lrs.append(sgd.lr)


def _sweep_dir(tmp_path, data, runs: list[RunId], preset: str = SWEEP):
    run_dir = tmp_path / "sweep"
    rec.write_manifest(run_dir, TrainManifest(
        preset=get_preset(preset), runs=tuple(r.name for r in runs), frameworks=("torch",), variants=("bn", "nobn"),
        seeds=(0,), batch_sizes=tuple(sorted({r.batch_size for r in runs})), data_dir=str(data), verify_data=False))
    return run_dir


def _train_in_process(run_dir, runs):
    for run in runs:
        assert run_one(run_dir=run_dir, run=run, trainer_cls=ScaledSoftmax) == "done"
    write_conclusions(run_dir)


# ---------------------------------------------------------------- the preset and its runs


def test_the_sweep_expands_to_one_run_per_batch_size_variant_and_framework():
    preset = get_preset("small-batch")
    assert preset.batch_sizes == (2, 4, 8, 32) and preset.variants == ("bn", "gn", "nobn")
    runs = command._select(_args("--frameworks", "torch,mxnet,jax"), preset, seeds_default=preset.seeds)
    assert len(runs) == len(set(runs)) == 3 * 4 * 3
    assert {(r.batch_size, r.variant) for r in runs} == {(b, v) for b in (2, 4, 8, 32) for v in ("bn", "gn", "nobn")}
    assert [r.name for r in runs[:4]] == ["torch-bn-b2-seed0", "torch-gn-b2-seed0", "torch-nobn-b2-seed0",
                                          "torch-bn-b4-seed0"]  # the slowest (smallest batch) first
    assert all(RunId.parse(r.name) == r for r in runs)
    picked = command._select(_args("--frameworks", "torch", "--batch-sizes", "32,2", "--variants", "gn"), preset,
                             seeds_default=1)
    assert [r.name for r in picked] == ["torch-gn-b2-seed0", "torch-gn-b32-seed0"]
    # Linear scaling from the reference point (lr at batch 32), the same images for every batch size.
    assert [preset.at_batch(b).lr for b in (2, 32)] == [pytest.approx(preset.lr / 16), preset.lr]
    assert preset.at_batch(2).batch_sizes == () and preset.at_batch(None) is preset
    with pytest.raises(ValueError, match="one of the preset's batch_sizes"):
        preset.at_batch(16)


def test_bad_batch_sizes_and_variants_are_user_errors():
    sweep, plain = get_preset("small-batch"), get_preset("cpu")
    for text in ("16", "2,x", ""):
        with pytest.raises(UserError, match="--batch-sizes takes some of 2,4,8,32"):
            command.parse_batch_sizes(text, sweep)
    with pytest.raises(UserError, match="needs a sweep preset"):
        command.parse_batch_sizes("2", plain)
    assert command.parse_batch_sizes(None, plain) == (None,)  # not a sweep: every run at the preset's batch
    assert parse_variants(None, plain.variants) == ("bn", "nobn") and parse_variants("all", plain.variants) == VARIANTS
    with pytest.raises(ValueError, match="ascending distinct"):
        sweep.replace(batch_sizes=(8, 2))


def test_a_sweep_run_trains_at_its_batch_size_and_the_records_say_so(tmp_path, fake_data):
    runs = [RunId(f, v, 0, b) for f in ("torch", "mxnet") for b in (2, 8) for v in ("bn", "nobn")]
    run_dir = _sweep_dir(tmp_path, fake_data, runs)
    ScaledSoftmax.lrs = []
    _train_in_process(run_dir, runs)
    preset = get_preset(SWEEP)
    assert ScaledSoftmax.lrs == [pytest.approx(preset.lr * r.batch_size / preset.batch_size) for r in runs]
    for run in runs:
        assert run.records_path(run_dir).name == f"{run.framework}-{run.variant}-b{run.batch_size}-seed0.jsonl"
        records = rec.read_records(run.records_path(run_dir))
        (start,) = [r for r in records if isinstance(r, StartEvent)]
        steps = [r for r in records if isinstance(r, IterEvent)]
        assert start.batch_size == run.batch_size and start.iters_per_epoch == 64 // run.batch_size
        assert {r.batch for r in steps} == {run.batch_size} and len(steps) == 2 * 64 // run.batch_size
    # The batch size survives the round trip: manifest, conclusions.json, read back through the schema's classes.
    manifest = rec.load_manifest(run_dir)
    assert manifest.batch_sizes == (2, 8) and manifest.preset.batch_sizes == (2, 8)
    raw = read_json(run_dir / rec.CONCLUSIONS)
    c = load_conclusions(raw)
    assert to_dict(c) == raw
    assert {name: s.batch_size for name, s in c.runs.items()} == {r.name: r.batch_size for r in runs}
    assert sorted((x.framework, x.variant, x.batch_size) for x in c.configs) == sorted(
        (r.framework, r.variant, r.batch_size) for r in runs)
    # BN vs no BN, the frameworks' curves and their batches are compared within each batch size, never across.
    assert not c.bn_speedup and not c.agreement.pairs
    assert [b.batch_size for b in c.by_batch_size] == [2, 8]
    for b in c.by_batch_size:
        assert sorted(s.framework for s in b.bn_speedup) == ["mxnet", "torch"]  # the one target, 0.5
        assert [(p.variant, p.frameworks, p.points, p.agree) for p in b.agreement] == [
            ("bn", ("mxnet", "torch"), 3, True), ("nobn", ("mxnet", "torch"), 3, True)]
    assert {(d.variant, d.batch_size): (d.iterations, d.identical) for d in c.batch_digests.checks} == {
        (v, b): (2 * 64 // b, True) for v in ("bn", "nobn") for b in (2, 8)}
    assert "torch-bn-b2" in format_conclusions(c) and "at batch 8" in format_conclusions(c)
    # An older run file's summary, without the field, still loads (batch_size null).
    del raw["runs"][runs[0].name]["batch_size"]
    assert load_conclusions(raw).runs[runs[0].name].batch_size is None


def test_resume_skips_the_finished_runs_of_a_sweep(tmp_path, fake_data, monkeypatch):
    runs = [RunId("torch", v, 0, b) for b in (2, 8) for v in ("bn", "nobn")]
    run_dir = _sweep_dir(tmp_path, fake_data, runs)
    _train_in_process(run_dir, runs[:3])
    rec.truncate_after_epoch(run_dir, runs[1], 1)  # torch-nobn-b2: interrupted after epoch 1
    given = []

    def fake_run_all(*, run_dir, runs, **kwargs):  # stands in for the orchestrator's processes
        given.extend(runs)
        return []

    monkeypatch.setattr(command, "run_all", fake_run_all)
    assert main(["train", "--resume", "--out", str(run_dir), "--data-dir", str(fake_data),
                 "--no-verify-data"]) == 0
    assert [r.name for r in given] == ["torch-nobn-b2-seed0", "torch-nobn-b8-seed0"]


# ---------------------------------------------------------------- the report


def test_the_report_shows_accuracy_against_batch_size_only_for_a_sweep(tmp_path, fake_data):
    runs = [RunId("torch", v, 0, b) for b in (2, 8) for v in ("bn", "nobn")]
    run_dir = _sweep_dir(tmp_path, fake_data, runs)
    empty = build_report(run_dir, out_dir=tmp_path / "empty")  # the manifest, no records yet: no sweep section
    assert not empty.figures and "Accuracy against batch size" not in empty.html.read_text()
    _train_in_process(run_dir, runs)
    report = build_report(run_dir, out_dir=tmp_path / "report")
    assert [p.name for p in report.figures] == ["batch-size.png", "batch-curves.png"]
    md = report.markdown.read_text()
    assert "## Accuracy against batch size" in md and "figures/batch-size.png" in md
    table = [line for line in md.splitlines() if line.startswith("| with BN | 2 |")]
    points = {(p.variant, p.batch_size): p for p in sweep_points(
        {r.name: rec.read_records(r.records_path(run_dir)) for r in runs})}
    lr = get_preset(SWEEP).at_batch(2).lr
    assert table == [f"| with BN | 2 | {lr:.3g} | {points['bn', 2].final:.4f} | {points['bn', 2].best:.4f} |"]
    assert "| framework | normalization | batch 2 (images/s) | batch 8 (images/s) |" in md
    assert "**Batch-size sweep:** best test accuracy at batch 8 → batch 2" in md
    summary = json.loads(report.summary_json.read_text())
    assert summary["figures"] == ["figures/batch-size.png", "figures/batch-curves.png"]
    # the final-accuracy verdict names every batch size (never one batch size's figures as the run's)
    final = next(v for v in summary["verdicts"] if v.startswith("Final test accuracy"))
    acc = {(c["variant"], c["batch_size"]): c["final_test_accuracy"]["mean"] for c in summary["training"]["configs"]}
    assert f"batch 2: {acc['bn', 2]:.3f} / {acc['nobn', 2]:.3f}" in final and "batch 8: " in final


def test_a_run_without_a_sweep_has_no_batch_size_section(tmp_path, fake_data):
    run = RunId("torch", "bn", 0)
    run_dir = tmp_path / "plain"
    rec.write_manifest(run_dir, TrainManifest(preset=get_preset("smoke"), runs=(run.name,), seeds=(0,),
                                              data_dir=str(fake_data), verify_data=False))
    assert run_one(run_dir=run_dir, run=run, trainer_cls=SoftmaxTrainer) == "done"
    report = build_report(run_dir)
    assert [p.name for p in report.figures] == ["curves.png", "overlay.png", "seed-blog.png"]  # + the seed blog's
    md = report.markdown.read_text()
    assert "Accuracy against batch size" not in md and "Batch-size sweep" not in md and "Time to accuracy" in md


@pytest.mark.slow
@pytest.mark.skipif(not framework_installed("torch"), reason="needs torch")
def test_bnparity_train_runs_a_tiny_sweep_end_to_end(tmp_path, fake_data):
    out = tmp_path / "run"
    assert main(["train", "--preset", SWEEP, "--frameworks", "torch", "--jobs", "2", "--out", str(out),
                 "--data-dir", str(fake_data), "--no-verify-data"]) == 0
    c = load_conclusions(read_json(out / rec.CONCLUSIONS))
    assert c.complete and sorted(c.runs) == sorted(f"torch-{v}-b{b}-seed0" for b in (2, 8) for v in ("bn", "nobn"))
    for name in c.runs:
        run = RunId.parse(name)
        steps = [r for r in rec.read_records(run.records_path(out)) if isinstance(r, IterEvent)]
        assert {r.batch for r in steps} == {run.batch_size}  # the orchestrator passed each run its batch size
    assert main(["train", "--resume", "--out", str(out)]) == 0  # nothing left to do
    assert main(["report", str(out)]) == 0
    assert "Accuracy against batch size" in (out / "report.md").read_text()
