"""`bnparity run`, the main job: every step into one new directory, a report, and no run ever overwritten."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import pytest
from conftest import require, write_fake_fashion_mnist

from bnparity.suites import main_job
from bnparity.suites.cli import main
from bnparity.suites.convergence import command as train_command
from bnparity.suites.environment import environment, short_commit
from bnparity.suites.pitfalls.experiment import RULES
from bnparity.suites.pitfalls.tutorial import ROWS as TUTORIAL_ROWS
from bnparity.suites.records import read_json
from bnparity.suites.schema import load_run_manifest, to_dict


@pytest.fixture(scope="module")
def fake_data(tmp_path_factory):
    return write_fake_fashion_mnist(tmp_path_factory.mktemp("fmnist"))


def _run(out, data, *extra: str) -> int:
    return main(["run", "--frameworks", "torch", "--preset", "smoke", "--model-preset", "tiny", "--jobs", "2",
                 "--out", str(out), "--data-dir", str(data), "--no-verify-data", *extra])


@pytest.mark.slow
def test_run_writes_every_step_and_the_report_and_never_overwrites(tmp_path, fake_data, capsys):
    require("torch")
    out = tmp_path / "run"
    assert _run(out, fake_data) == 0
    manifest = read_json(out / "manifest.json")
    assert manifest["steps"] == {step: "done" for step in main_job.STEPS}
    assert manifest["format"] == "bnparity-run/2" and to_dict(load_run_manifest(manifest)) == manifest
    assert manifest["finished"] and set(manifest["step_seconds"]) == set(main_job.STEPS)
    for name in ("parity.json", "model_parity.json", "sync_parity.json", "dp_parity.json", "conventions.json",
                 "train/manifest.json",
                 "train/torch-bn-seed0.jsonl", "pitfalls.json", "tutorial_mlp.json", "report.html", "report.md",
                 "summary.json", "porting.md"):
        assert (out / name).is_file(), name
    pitfalls = read_json(out / "pitfalls.json")
    assert pitfalls["meta"]["complete"] and pitfalls["meta"]["run"] == "torch-bn-seed0"
    assert len(pitfalls["records"]) == 1 + len(RULES) * 3  # as trained, then each rule after 1, 10 and 100 batches
    tutorial = read_json(out / "tutorial_mlp.json")  # the tutorial's MLP: each reference row and torch's builtin
    assert tutorial["meta"]["complete"] and tutorial["meta"]["frameworks"] == ["torch"]
    rows = {(r["row"], r["framework"]) for r in tutorial["records"] if r["status"] == "ok"}
    assert rows == {(r.name, "torch" if r.training == "framework" else None) for r in TUTORIAL_ROWS}
    guide = (out / "porting.md").read_text()
    assert "### On a trained network" in guide and "| swapped: new batch weight 0.9" in guide
    assert "## BatchNorm across data-parallel replicas" in guide and "Measured by `bnparity sync-parity`" in guide
    summary = json.loads((out / "summary.json").read_text())
    assert summary["complete"] is True and summary["incomplete"] == []
    assert f"report: {(out / 'report.html').resolve()}" in capsys.readouterr().out

    before = sorted(p.name for p in out.iterdir())
    assert _run(out, fake_data) == 2
    assert "already holds a run" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == before


@pytest.mark.slow
def test_interrupted_training_still_gets_a_report_marked_incomplete(tmp_path, fake_data, monkeypatch, capsys):
    require("torch")

    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(train_command, "run", interrupted)
    out = tmp_path / "run"
    assert _run(out, fake_data, "--steps", "parity,train,report") == 130
    manifest = read_json(out / "manifest.json")
    assert manifest["steps"] == {"parity": "done", "train": "interrupted", "report": "done"}
    summary = json.loads((out / "summary.json").read_text())
    assert summary["complete"] is False and summary["verdicts"][0].startswith("INCOMPLETE")
    assert 'id="incomplete"' in (out / "report.html").read_text()
    assert "train interrupted" in capsys.readouterr().out


@pytest.mark.slow
def test_a_step_that_crashes_is_recorded_and_the_others_still_run(tmp_path, fake_data, monkeypatch, capsys):
    require("torch")

    def crash(args):
        raise ImportError("cannot import name 'x' (a broken install)")

    monkeypatch.setattr(train_command, "run", crash)
    out = tmp_path / "run"
    assert _run(out, fake_data, "--steps", "parity,train,report") == 1
    manifest = read_json(out / "manifest.json")
    assert manifest["steps"] == {"parity": "done", "train": "failed", "report": "done"}
    assert manifest["errors"] == {"train": "ImportError: cannot import name 'x' (a broken install)"}
    assert "step train failed: ImportError" in capsys.readouterr().err
    assert (out / "report.html").is_file() and (out / "porting.md").is_file()


def test_a_training_with_failed_runs_is_not_called_done(tmp_path, fake_data, monkeypatch):
    monkeypatch.setattr(train_command, "run", lambda args: 1)  # what `bnparity train` returns when a run failed
    out = tmp_path / "run"
    assert _run(out, fake_data, "--steps", "train") == 1
    assert read_json(out / "manifest.json")["steps"] == {"train": "done-with-failed-runs"}


def test_no_data_is_one_line_saying_how_to_get_it_and_creates_nothing(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["run", "--data-dir", str(tmp_path / "nothing-here"), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "apt-get install dataset-fashion-mnist" in err and "--download" in err
    assert not out.exists()


def test_bad_steps_and_frameworks_are_user_errors(tmp_path, capsys):
    assert main(["run", "--steps", "parity,dance", "--out", str(tmp_path / "a")]) == 2
    assert main(["run", "--frameworks", "tensorflow", "--out", str(tmp_path / "b")]) == 2
    err = capsys.readouterr().err.splitlines()
    assert "--steps takes some of" in err[0] and "unknown framework tensorflow" in err[1]


def test_default_run_directories_are_new_each_time(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    first, second = main_job.new_run_dir(None), main_job.new_run_dir(None)
    assert first != second and first.parent == second.parent == Path("bnparity-runs")
    assert first.is_dir() and second.is_dir()


def test_the_recorded_commit_says_whether_the_checkout_had_uncommitted_changes():
    assert re.fullmatch(r"[0-9a-f]{40}(-dirty)?", environment()["git_commit"])
    assert short_commit("ab" * 20 + "-dirty") == "abababababab-dirty"
    assert short_commit("ab" * 20) == "abababababab" and short_commit(None) == "unknown"


def test_without_frameworks_the_main_job_runs_the_frameworks_its_descriptors_put_in_it(monkeypatch):
    from bnparity.frameworks import registry

    every = registry.descriptors()
    assert main_job.frameworks_argument(None) == (
        [] if all(d.main_job for d in every) else ["--frameworks", ",".join(d.name for d in every if d.main_job)])
    opt_in = every[-1].name
    monkeypatch.setattr(main_job, "descriptors", lambda: tuple(
        dataclasses.replace(d, main_job=d.name != opt_in) for d in every))
    assert main_job.frameworks_argument(None) == ["--frameworks", ",".join(d.name for d in every[:-1])]
    assert main_job.frameworks_argument("all") == []  # every framework, the opt-in one too
    sits_out = every[0].name  # in the main job's other steps, not in its training step
    monkeypatch.setattr(main_job, "descriptors", lambda: tuple(
        dataclasses.replace(d, main_job=True, main_job_sits_out=("train",) if d.name == sits_out else ())
        for d in every))
    assert main_job.frameworks_argument(None, step="parity") == []
    assert main_job.frameworks_argument(None, step="train") == ["--frameworks", ",".join(d.name for d in every[1:])]
    assert main_job.frameworks_argument("all", step="train") == []
    assert main_job.frameworks_argument(opt_in) == ["--frameworks", opt_in]
    with pytest.raises(main_job.UserError, match="unknown framework"):
        main_job.frameworks_argument("nope")
