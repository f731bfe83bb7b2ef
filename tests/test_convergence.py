"""The convergence suite: presets, records, resume, conclusions, and `bnparity train` end to end."""

from __future__ import annotations

import importlib.util
import io
import json
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from conftest import framework_installed, write_fake_fashion_mnist
from fabricate import event

from bnparity.frameworks.registry import descriptor, framework_names
from bnparity.frameworks.training import StepStats, Trainer
from bnparity.suites.cli import main
from bnparity.suites.convergence import conclusions as concl
from bnparity.suites.convergence import records as rec
from bnparity.suites.convergence.orchestrate import threads_per_job
from bnparity.suites.convergence.presets import PRESETS, TrainPreset, get_preset, parse_variants
from bnparity.suites.convergence.progress import ProgressDisplay
from bnparity.suites.convergence.runner import FAIL_ENV, eval_points, run_one, thread_env
from bnparity.suites.errors import UserError
from bnparity.suites.schema import (
    AccuracyStat,
    DoneEvent,
    EpochEvent,
    EvalEvent,
    FailedEvent,
    InterruptedEvent,
    IterEvent,
    SkippedEvent,
    TrainManifest,
    load_conclusions,
)

RunId = rec.RunId


def _trainable(framework: str) -> bool:
    return framework_installed(framework) and \
        importlib.util.find_spec(f"bnparity.frameworks.{descriptor(framework).package}.train")


TRAINABLE = [f for f in framework_names() if _trainable(f)]


@pytest.fixture(scope="module")
def fake_data(tmp_path_factory):
    return write_fake_fashion_mnist(tmp_path_factory.mktemp("fmnist"))


def _train(out, data, *extra):
    return main(["train", "--preset", "smoke", "--out", str(out), "--data-dir", str(data), "--no-verify-data",
                 *extra])


# ---------------------------------------------------------------- presets, small pure functions


@pytest.mark.parametrize("name", list(PRESETS))
def test_presets_round_trip_through_json(name):
    preset = get_preset(name)
    assert TrainPreset.from_dict(json.loads(json.dumps(preset.to_dict()))) == preset
    assert preset.notes


def test_unknown_preset_and_variant_are_user_errors():
    with pytest.raises(UserError, match="unknown preset 'huge'"):
        get_preset("huge")
    with pytest.raises(UserError, match="unknown variant ln"):
        parse_variants("bn,ln")
    assert parse_variants(None) == parse_variants("all") and parse_variants("gn,bn") == ("gn", "bn")
    assert parse_variants(None, ("bn", "nobn")) == ("bn", "nobn")  # a preset's default
    with pytest.raises(ValueError, match="targets must be ascending"):
        get_preset("smoke").replace(targets=(0.9, 0.8))


@pytest.mark.parametrize("iters, evals, expected", [(10, 3, [4, 7, 10]), (10, 1, [10]), (4, 10, [1, 2, 3, 4]),
                                                    (468, 2, [234, 468])])
def test_eval_points_are_even_and_end_at_the_epoch_end(iters, evals, expected):
    assert eval_points(iters, evals) == expected


@pytest.mark.parametrize("jobs, cpus, threads", [(1, 2, 2), (2, 2, 1), (3, 2, 1), (2, 8, 4)])
def test_threads_per_job(jobs, cpus, threads):
    assert threads_per_job(jobs, cpus) == threads


def test_thread_env_single_thread_turns_off_xla_threading_once():
    env = thread_env(1, {"XLA_FLAGS": "--xla_cpu_multi_thread_eigen=false"})
    assert env["OMP_NUM_THREADS"] == "1" and env["XLA_FLAGS"].count("multi_thread_eigen") == 1
    assert "XLA_FLAGS" not in thread_env(2, {})


# ---------------------------------------------------------------- records, checkpoints, resume bookkeeping


def _write(path, records):
    with path.open("a") as f:
        for r in records:
            f.write(json.dumps(r) + "\n")


def _rec(kind, epoch, iteration, **fields):
    return event(kind, epoch=epoch, iteration=iteration, **fields)


def _conclusions(run_dir):
    return load_conclusions(json.loads((run_dir / rec.CONCLUSIONS).read_text()))


def test_truncate_keeps_completed_epochs_and_moves_the_rest_aside(tmp_path):
    run = RunId("torch", "bn", 0)
    path = run.records_path(tmp_path)
    _write(path, [_rec("iter", 1, 1), _rec("epoch", 1, 1), _rec("iter", 2, 2), _rec("iter", 2, 3)])
    with path.open("a") as f:
        f.write('{"kind": "it')  # cut short by a kill
    assert rec.truncate_after_epoch(tmp_path, run, 1) == 3
    assert [r.kind for r in rec.read_records(path)] == ["iter", "epoch"]
    moved = (tmp_path / f"{run.name}.interrupted.jsonl").read_text().splitlines()
    assert len(moved) == 3 and json.loads(moved[0])["iteration"] == 2
    with pytest.raises(ValueError, match="no record of the end of epoch 5"):
        rec.truncate_after_epoch(tmp_path, run, 5)


def test_writer_drops_a_half_written_last_line(tmp_path):
    run = RunId("jax", "nobn", 2)
    path = run.records_path(tmp_path)
    path.write_text(json.dumps(event("iter", framework="jax", variant="nobn", seed=2, epoch=1, iteration=1))
                    + '\n{"kind": "ep')
    with rec.RecordWriter(path, run) as out:
        out.write("iter", epoch=1, iteration=2, loss=float("nan"), correct=0, batch=4, accuracy=0.0)
        out.write("failed", epoch=1, iteration=7, error="boom")
    records = rec.read_records(path)
    assert [r.kind for r in records] == ["iter", "iter", "failed"]
    assert records[1].loss is None and records[2].seed == 2 and records[2].error == "boom"
    assert "header" not in path.read_text()  # an existing file keeps its first line: no header in the middle
    with pytest.raises(TypeError):
        with rec.RecordWriter(path, run) as out:
            out.write("failed", epoch=1, iteration=7, error="boom", loss=1.0)  # a field "failed" does not have


def test_checkpoints_round_trip_keep_two_and_resume_needs_the_epoch_record(tmp_path):
    run = RunId("mxnet", "bn", 1)
    state = {"conv1.weight": np.arange(6, dtype=np.float32).reshape(2, 3), "bn1/running_var": np.ones(3)}
    for epoch in (1, 2, 3):
        rec.save_checkpoint(tmp_path, run, epoch=epoch, state=state, meta={"iteration": 10 * epoch})
    assert rec.checkpoint_epochs(tmp_path, run) == [2, 3]
    loaded, meta = rec.load_checkpoint(tmp_path, run, 3)
    assert meta == {"iteration": 30, "epoch": 3}
    np.testing.assert_array_equal(loaded["conv1.weight"], state["conv1.weight"])
    _write(run.records_path(tmp_path), [_rec("epoch", 1, 10), _rec("epoch", 2, 20)])
    assert rec.resume_point(tmp_path, run) == 2  # epoch 3 has a checkpoint but no record
    assert rec.resume_point(tmp_path, RunId("mxnet", "bn", 0)) == 0


# ---------------------------------------------------------------- conclusions on hand-made records


def _curve(run_dir, name, points, *, done=True, iters_per_epoch=100):
    """Records of run `name` whose eval points are (iteration, test accuracy); epoch records every 100."""
    run = RunId.parse(name)
    records = [_rec("start", 0, 0, iters_per_epoch=iters_per_epoch, epochs=len(points) // 2)]
    for i, (iteration, acc) in enumerate(points):
        fields = dict(test_accuracy=acc, test_loss=1 - acc, epochs_done=iteration / iters_per_epoch,
                      wall_time=float(iteration), images_per_s=100.0)
        epoch = max(1, -(-iteration // iters_per_epoch))
        records.append(_rec("eval", epoch, iteration, **fields))
        if i and iteration % iters_per_epoch == 0:
            records.append(_rec("epoch", epoch, iteration, **{k: v for k, v in fields.items() if k != "epochs_done"}))
    if done:
        records.append(_rec("done", records[-1]["epoch"], points[-1][0], test_accuracy=points[-1][1]))
    for r in records:
        r.update(framework=run.framework, variant=run.variant, seed=run.seed)
    _write(run.records_path(run_dir), records)


def _manifest(run_dir, names, targets=(0.8, 0.85)):
    preset = get_preset("smoke").replace(targets=targets)
    rec.write_manifest(run_dir, TrainManifest(preset=preset, runs=tuple(names), seeds=(0, 1)))


def test_conclusions_closed_form(tmp_path):
    names = ["torch-bn-seed0", "torch-nobn-seed0", "jax-bn-seed0", "jax-nobn-seed0", "jax-nobn-seed1",
             "mxnet-bn-seed0", "mxnet-nobn-seed0", "mxnet-nobn-seed1"]
    _manifest(tmp_path, names)
    bn = [(0, 0.1), (100, 0.7), (200, 0.82), (300, 0.85), (400, 0.86)]
    _curve(tmp_path, "torch-bn-seed0", bn)
    _curve(tmp_path, "torch-nobn-seed0", [(0, 0.1), (300, 0.5), (600, 0.8), (900, 0.85), (1000, 0.851)])
    _curve(tmp_path, "jax-bn-seed0", [(i, a + 0.02) for i, a in bn])
    _curve(tmp_path, "jax-nobn-seed0", [(0, 0.1), (100, 0.6)], done=False)
    _curve(tmp_path, "mxnet-bn-seed0", [(0, 0.1), (100, 0.6), (200, 0.9)])
    _curve(tmp_path, "mxnet-nobn-seed0", [(0, 0.1), (500, 0.6), (1000, 0.84)])
    _curve(tmp_path, "mxnet-nobn-seed1", [(0, 0.1), (500, 0.6), (800, 0.8)], done=False)
    c = concl.compute_conclusions(tmp_path)
    cfg = {(x.framework, x.variant): x for x in c.configs}
    t85 = cfg["torch", "bn"].targets["0.85"]
    assert t85.iterations_mean == 300 and t85.epochs_mean == 3.0 and t85.reached == 1
    assert cfg["torch", "bn"].final_test_accuracy == AccuracyStat(mean=0.86, std=None, n=1)
    assert cfg["torch", "nobn"].targets["0.8"].iterations_mean == 600
    speedup = {(s.framework, s.target): s for s in c.bn_speedup}
    assert speedup["torch", 0.85].speedup == pytest.approx(3.0)
    assert speedup["torch", 0.8].speedup == pytest.approx(3.0)
    assert speedup["jax", 0.85].speedup is None and speedup["jax", 0.85].at_least is None  # jax-nobn not done
    assert speedup["mxnet", 0.85].at_least is None  # a no-BN seed is still running
    (tmp_path / "mxnet-nobn-seed1.jsonl").unlink()
    _curve(tmp_path, "mxnet-nobn-seed1", [(0, 0.1), (500, 0.6), (800, 0.8)])
    c = concl.compute_conclusions(tmp_path)
    speedup = {(s.framework, s.target): s for s in c.bn_speedup}
    assert speedup["mxnet", 0.85].at_least == pytest.approx(1000 / 200)  # no-BN never got there
    assert speedup["mxnet", 0.8].speedup == pytest.approx((1000 + 800) / 2 / 200)
    pairs = {(p.variant, *p.frameworks): p for p in c.agreement.pairs}
    jax_torch = pairs["bn", "jax", "torch"]
    assert jax_torch.agree and jax_torch.points == 5 and jax_torch.max_abs_diff == pytest.approx(0.02)
    assert not pairs["bn", "mxnet", "torch"].agree and pairs["bn", "mxnet", "torch"].points == 3
    status = {i.run: i.status for i in c.incomplete}
    assert status == {"jax-nobn-seed0": "incomplete", "jax-nobn-seed1": "not started"}
    assert not c.complete


def test_conclusions_mean_std_and_disagreement(tmp_path):
    names = ["torch-bn-seed0", "torch-bn-seed1", "mxnet-bn-seed0", "mxnet-bn-seed1"]
    _manifest(tmp_path, names)
    _curve(tmp_path, "torch-bn-seed0", [(0, 0.1), (100, 0.80), (200, 0.84)])
    _curve(tmp_path, "torch-bn-seed1", [(0, 0.1), (100, 0.82), (200, 0.86)])
    _curve(tmp_path, "mxnet-bn-seed0", [(0, 0.1), (100, 0.70), (200, 0.85)])
    _curve(tmp_path, "mxnet-bn-seed1", [(0, 0.1), (100, 0.72), (200, 0.85)])
    c = concl.write_conclusions(tmp_path)
    cfg = {x.framework: x for x in c.configs}
    assert cfg["torch"].final_test_accuracy.mean == pytest.approx(0.85)
    assert cfg["torch"].final_test_accuracy.std == pytest.approx(0.02 / np.sqrt(2))
    assert cfg["torch"].targets["0.85"].reached == 1  # only seed 1
    (pair,) = c.agreement.pairs
    # at iteration 100: |0.81 - 0.71| = 0.10 > 3 * max(0.0141, 0.0141, 0.01) = 0.042
    assert not pair.agree and pair.outside == 1 and pair.worst_iteration == 100
    assert _conclusions(tmp_path) == c  # what was written reads back as what was computed
    assert c.complete


# ---------------------------------------------------------------- progress display


def test_progress_lines_from_records(tmp_path):
    run = RunId("torch", "nobn", 0)
    _write(run.records_path(tmp_path), [
        _rec("start", 0, 0, epochs=2, iters_per_epoch=10), {**_rec("iter", 1, 1, loss=2.3), "t": 100.0},
        {**_rec("iter", 1, 5, loss=1.25), "t": 104.0},
        _rec("eval", 1, 5, test_accuracy=0.5, images_per_s=321.0)])
    stream = io.StringIO()
    display = ProgressDisplay(tmp_path, [run], stream=stream, tty=False, interval=0)
    display.update(force=True)
    line = stream.getvalue().splitlines()[-1]
    assert "epoch 1/2" in line and "it 5/20" in line and "loss 1.2500" in line and "321 img/s" in line
    assert "ETA 0m15s" in line  # 4 iterations in 4 s, 15 to go


# ---------------------------------------------------------------- the runner in-process, with a NumPy trainer


class SoftmaxTrainer(Trainer):
    """Softmax regression in NumPy with the SGD of frameworks.training: a deterministic stand-in framework."""

    framework = "numpy"

    def __init__(self, *, arch, params, sgd, device="cpu"):
        self.sgd, self.w, self.v = sgd, None, None

    def _logits(self, x):
        if self.w is None:
            self.w = np.zeros((x[0].size, 10))
            self.v = np.zeros_like(self.w)
        return x.reshape(len(x), -1) @ self.w

    def train_step(self, x, labels, *, dropout_masks=None):
        z = self._logits(x)
        p = np.exp(z - z.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        loss = -np.log(p[np.arange(len(labels)), labels]).mean()
        p[np.arange(len(labels)), labels] -= 1
        g = x.reshape(len(x), -1).T @ p / len(labels) + self.sgd.weight_decay * self.w
        self.v = self.sgd.momentum * self.v + g
        self.w = self.w - self.sgd.lr * self.v
        return StepStats(loss=float(loss), correct=int((z.argmax(1) == labels).sum()))

    def evaluate(self, x, labels):
        z = self._logits(x)
        lse = np.log(np.exp(z - z.max(1, keepdims=True)).sum(1)) + z.max(1)
        return float((lse - z[np.arange(len(labels)), labels]).sum()), int((z.argmax(1) == labels).sum())

    def gradients(self, x, labels, *, dropout_masks=None):
        raise NotImplementedError("not used by the convergence suite")

    def state(self):
        return {"w": self.w.copy(), "v": self.v.copy()}

    def load_state(self, state):
        self.w, self.v = state["w"].copy(), state["v"].copy()


def _run_dir(tmp_path, data, name):
    run_dir = tmp_path / name
    rec.write_manifest(run_dir, TrainManifest(preset=get_preset("smoke").replace(lr=0.01), runs=("torch-bn-seed0",),
                                              seeds=(0,), data_dir=str(data), verify_data=False, device="cpu"))
    return run_dir


def test_runner_records_every_step_and_a_resumed_run_repeats_the_interrupted_epoch_exactly(tmp_path, fake_data,
                                                                                            monkeypatch):
    run = RunId("torch", "bn", 0)
    straight = _run_dir(tmp_path, fake_data, "straight")
    assert run_one(run_dir=straight, run=run, trainer_cls=SoftmaxTrainer) == "done"
    records = rec.read_records(run.records_path(straight))
    kinds = [r.kind for r in records]
    assert kinds.count("iter") == 2 * 8 and kinds.count("epoch") == 2 and kinds[-1] == "done"
    evals = [r for r in records if isinstance(r, EvalEvent)]
    assert [e.iteration for e in evals] == [0, 4, 8, 12, 16]
    assert evals[0].train_loss is None and evals[-1].test_accuracy > 0.5  # learnable fake data
    done = records[-1]
    assert isinstance(done, DoneEvent) and done.test_accuracy == evals[-1].test_accuracy
    assert done.best_test_accuracy == max(e.test_accuracy for e in evals)
    digests = [r.batch_digest for r in records if isinstance(r, IterEvent)]
    assert all(d and len(d) == 16 for d in digests) and len(set(digests)) == len(digests)  # every batch differs

    crashed = _run_dir(tmp_path, fake_data, "crashed")
    monkeypatch.setenv(FAIL_ENV, f"{run.name}@11")
    assert run_one(run_dir=crashed, run=run, trainer_cls=SoftmaxTrainer) == "failed"
    last = rec.read_records(run.records_path(crashed))[-1]
    assert isinstance(last, FailedEvent) and last.iteration == 11 and "injected failure" in last.error
    monkeypatch.delenv(FAIL_ENV)
    assert run_one(run_dir=crashed, run=run, resume=True, trainer_cls=SoftmaxTrainer) == "done"
    resumed = rec.read_records(run.records_path(crashed))
    assert [r.iteration for r in resumed if isinstance(r, IterEvent)] == list(range(1, 17))
    assert [r.kind for r in resumed].count("start") == 2
    for kind, value in ((IterEvent, lambda r: (r.loss, r.batch_digest)), (EvalEvent, lambda r: r.test_accuracy),
                        (EpochEvent, lambda r: r.epoch_digest)):
        assert [value(r) for r in records if isinstance(r, kind)] == [value(r) for r in resumed if isinstance(r, kind)]
    assert resumed[-1].best_test_accuracy == done.best_test_accuracy  # the segment before the crash counts too
    dropped = rec.read_records(crashed / f"{run.name}.interrupted.jsonl")
    assert [r.iteration for r in dropped] == [9, 10, 11, 11]  # epoch 2's iterations 9-11 and "failed"


# ---------------------------------------------------------------- bnparity train end to end


def test_train_rejects_bad_input_with_exit_2(tmp_path, fake_data, capsys):
    assert main(["train", "--preset", "nope", "--out", str(tmp_path / "a")]) == 2
    assert "unknown preset 'nope'" in capsys.readouterr().err
    assert _train(tmp_path / "b", fake_data, "--frameworks", "torch,caffe") == 2
    assert _train(tmp_path / "c", fake_data, "--variants", "ln") == 2
    assert _train(tmp_path / "d", fake_data, "--jobs", "0") == 2
    assert main(["train", "--preset", "smoke", "--out", str(tmp_path / "e"), "--data-dir", str(tmp_path)]) == 2
    (tmp_path / "f").mkdir()
    (tmp_path / "f" / "x").write_text("")
    assert _train(tmp_path / "f", fake_data) == 2
    assert "pass --resume" in capsys.readouterr().err
    assert main(["train", "--resume", "--out", str(tmp_path / "missing")]) == 2


@pytest.mark.slow
@pytest.mark.skipif(not TRAINABLE, reason="no framework with a Trainer is installed")
def test_train_smoke_every_framework_end_to_end(tmp_path, fake_data):
    out = tmp_path / "run"
    code = _train(out, fake_data, "--frameworks", ",".join(TRAINABLE), "--jobs", "2")
    assert code == 0
    manifest = rec.load_manifest(out)
    assert manifest.preset.name == "smoke" and manifest.threads_per_job == threads_per_job(2)
    c = _conclusions(out)
    assert c.complete and not c.incomplete
    for framework in TRAINABLE:
        for variant in ("bn", "nobn"):
            records = rec.read_records(RunId(framework, variant, 0).records_path(out))
            assert records[-1].kind == "done", records[-1]
            iters = [r for r in records if isinstance(r, IterEvent)]
            assert len(iters) == 2 * (256 // 32) and all(np.isfinite(r.loss) for r in iters)
            evals = [r for r in records if isinstance(r, EvalEvent)]
            assert len(evals) == 1 + 2 * 2 and evals[0].iteration == 0
    # The same initial weights in every framework: the same test accuracy before training.
    first = {f: rec.read_records(RunId(f, "bn", 0).records_path(out))[1].test_accuracy for f in TRAINABLE}
    assert len(set(first.values())) == 1, first
    # The same batches, dropout masks included, at every iteration of every framework's run.
    assert c.batch_digests.recorded and c.batch_digests.identical
    if len(TRAINABLE) > 1:
        assert {(d.variant, d.iterations, d.frameworks) for d in c.batch_digests.checks} == {
            (v, 16, tuple(sorted(TRAINABLE))) for v in ("bn", "nobn")}

    # Interrupt-simulate: drop the last epoch (records and checkpoint); --resume trains it again, identically.
    run = RunId(TRAINABLE[0], "bn", 0)
    before = [r for r in rec.read_records(run.records_path(out)) if isinstance(r, IterEvent) and r.epoch == 2]
    rec.truncate_after_epoch(out, run, 1)
    (run.checkpoint_dir(out) / "epoch2.npz").unlink()
    assert _train(out, fake_data, "--resume") == 0
    records = rec.read_records(run.records_path(out))
    assert records[-1].kind == "done" and [r.kind for r in records].count("epoch") == 2
    after = [r for r in records if isinstance(r, IterEvent) and r.epoch == 2]
    assert [r.iteration for r in after] == [r.iteration for r in before] == list(range(9, 17))
    np.testing.assert_allclose([r.loss for r in after], [r.loss for r in before], rtol=1e-5)
    assert [r.batch_digest for r in after] == [r.batch_digest for r in before]
    assert _conclusions(out).complete


@pytest.mark.skipif("torch" not in TRAINABLE, reason="needs the torch Trainer")
def test_a_framework_that_cannot_be_imported_is_skipped_with_a_record(tmp_path, fake_data, monkeypatch, capsys):
    fake = tmp_path / "site"
    (fake / "mxnet").mkdir(parents=True)
    (fake / "mxnet" / "__init__.py").write_text('raise ImportError("mxnet is hidden by the test", name="mxnet")\n')
    monkeypatch.setenv("PYTHONPATH", str(fake))  # the run processes import this "mxnet" first
    out = tmp_path / "run"
    assert _train(out, fake_data, "--frameworks", "mxnet,torch", "--variants", "bn", "--jobs", "2") == 0
    assert "skipped: mxnet: mxnet is not installed" in capsys.readouterr().out
    (skipped,) = rec.read_records(RunId("mxnet", "bn", 0).records_path(out))
    assert isinstance(skipped, SkippedEvent) and "pip install" in skipped.reason
    c = _conclusions(out)
    assert c.complete and list(c.skipped) == ["mxnet-bn-seed0"]
    assert [cfg.framework for cfg in c.configs] == ["torch"]


@pytest.mark.slow
@pytest.mark.skipif(not TRAINABLE, reason="no framework with a Trainer is installed")
def test_train_records_a_crash_and_resume_completes_it(tmp_path, fake_data, monkeypatch):
    framework = TRAINABLE[0]
    out = tmp_path / "run"
    crash, hard = RunId(framework, "bn", 0), RunId(framework, "nobn", 0)
    monkeypatch.setenv(FAIL_ENV, f"{crash.name}@10,{hard.name}@3:exit")
    assert _train(out, fake_data, "--frameworks", framework, "--seeds", "2", "--jobs", "2") == 1
    c = _conclusions(out)
    assert {i.run: i.status for i in c.incomplete} == {crash.name: "failed", hard.name: "failed"}
    assert c.runs[f"{framework}-bn-seed1"].status == "done"  # the others went on
    failed = rec.read_records(crash.records_path(out))[-1]
    assert isinstance(failed, FailedEvent) and failed.iteration == 10 and "injected failure" in failed.error
    died = rec.read_records(hard.records_path(out))[-1]
    assert isinstance(died, FailedEvent) and "exited with code 70" in died.error and died.returncode == 70
    monkeypatch.delenv(FAIL_ENV)
    assert _train(out, fake_data, "--resume") == 0
    for run in (crash, hard):
        records = rec.read_records(run.records_path(out))
        assert records[-1].kind == "done"
        assert [r.iteration for r in records if isinstance(r, IterEvent)] == list(range(1, 17))
    assert _conclusions(out).complete and len(rec.load_manifest(out).resumed) == 1


@pytest.mark.slow
@pytest.mark.skipif(not TRAINABLE, reason="no framework with a Trainer is installed")
def test_ctrl_c_stops_every_run_and_keeps_its_records(tmp_path, fake_data):
    if TRAINABLE[0] == "keras-torch":
        # Found by CI on 2026-12-02, not fixed: the run exits 130 but its last record is an iteration, not
        # "interrupted" (where the KeyboardInterrupt goes under Keras' torch backend is not yet known)
        pytest.xfail("known defect: a Ctrl-C'd keras-torch run keeps its records but writes no 'interrupted' record")
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "bnparity.suites.cli", "train", "--preset", "smoke", "--epochs", "500",
           "--frameworks", TRAINABLE[0], "--jobs", "2", "--out", str(out), "--data-dir", str(fake_data),
           "--no-verify-data"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    runs = [RunId(TRAINABLE[0], v, 0) for v in ("bn", "nobn")]
    deadline = time.monotonic() + 60
    while not all(any(r.kind == "epoch" for r in rec.read_records(run.records_path(out))) for run in runs):
        assert time.monotonic() < deadline and proc.poll() is None, proc.communicate()[0]
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    output = proc.communicate(timeout=60)[0]
    assert proc.returncode == 130, output
    for run in runs:
        records = rec.read_records(run.records_path(out))
        assert isinstance(records[-1], InterruptedEvent) and records[-1].iteration >= 8
    c = _conclusions(out)
    assert {i.status for i in c.incomplete} == {"interrupted"} and not c.complete


@pytest.mark.parametrize("run", [RunId("keras-tensorflow", "bn", 0), RunId("keras-jax", "nobn", 3, 8),
                                 RunId("keras-torch", "gn", 1, replicas=4, bn_sync="sync"), RunId("torch", "bn", 2)],
                         ids=lambda r: r.name)
def test_a_run_name_round_trips_whatever_hyphens_its_framework_has(run):
    # a framework named with a hyphen (one Keras backend) must not be cut at its first hyphen
    assert RunId.parse(run.name) == run
