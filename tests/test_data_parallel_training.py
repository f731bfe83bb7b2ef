"""Data-parallel training runs in the convergence suite: run names, presets, flags, the runner with a fake
DataParallelTrainer (its replicas, BatchNorm mode, close() and resume), the run processes' environment, the
conclusions and the report's data-parallel section."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import framework_installed
from test_convergence import SoftmaxTrainer

from bnparity.frameworks.training import BN_SYNC, DataParallelTrainer, StepStats
from bnparity.reports.build import build_report
from bnparity.suites.cli import main
from bnparity.suites.convergence import command, orchestrate
from bnparity.suites.convergence import records as rec
from bnparity.suites.convergence.conclusions import format_conclusions
from bnparity.suites.convergence.presets import PRESETS, get_preset, parse_bn_sync
from bnparity.suites.convergence.runner import FAIL_ENV, run_one
from bnparity.suites.data.idx import write_idx
from bnparity.suites.records import read_json
from bnparity.suites.schema import (
    EvalEvent,
    FailedEvent,
    IterEvent,
    StartEvent,
    TrainManifest,
    load_conclusions,
    load_train_manifest,
    to_dict,
)

RunId = rec.RunId
PRESET = "smoke-dp"  # tiny arch, 64 images, global batch 8 = 2 replicas x 4, 2 epochs of 8 iterations


@pytest.fixture(scope="module")
def fake_data(tmp_path_factory):
    """A Fashion-MNIST look-alike whose classes are hard enough (a faint band, +8 over noise of 0-59) that the
    three modes end at different test accuracies (so that mixing them up shows)."""
    root = tmp_path_factory.mktemp("fmnist")
    rng = np.random.default_rng(0)
    for split, per_class in (("train", 30), ("t10k", 15)):
        labels = np.repeat(np.arange(10, dtype=np.uint8), per_class)
        rng.shuffle(labels)
        images = rng.integers(0, 60, (len(labels), 28, 28)).astype(np.uint8)
        for i, label in enumerate(labels):  # class c: a faint band at rows 2c..2c+5
            images[i, 2 * label:2 * label + 6] += 8
        write_idx(root / f"{split}-images-idx3-ubyte.gz", images)
        write_idx(root / f"{split}-labels-idx1-ubyte.gz", labels)
    return root


def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    command.add_arguments(parser)
    return parser.parse_args(list(argv))


# ---------------------------------------------------------------- a fake DataParallelTrainer


def fake_data_parallel(log: list[tuple]) -> type[DataParallelTrainer]:
    """A DataParallelTrainer class in NumPy that records its calls in `log`: softmax regression on inputs centred
    by a BatchNorm-like mean — each replica's shard's own ("local") or the global batch's ("sync") — with running
    means per replica (the saved model holds their mean). The gradient is the mean of the replicas' shard-mean-loss
    gradients, as the interface says."""

    class FakeDataParallel(DataParallelTrainer):
        framework = "numpy"

        def __init__(self, *, arch, params, sgd, replicas, bn_sync, device="cpu", dtype="float32", seed=None):
            if device != "cpu":
                raise RuntimeError(f"--device {device}: the fake engine sees no GPU here")
            self.sgd, self.replicas, self.bn_sync = sgd, replicas, bn_sync
            self.w = self.v = self.running = None
            self.closed = 0
            log.append(("init", replicas, bn_sync, device))

        def _setup(self, x):
            if self.w is None:
                features = x[0].size
                self.w, self.v = np.zeros((features, 10)), np.zeros((features, 10))
                self.running = np.zeros((self.replicas, features))

        def train_step(self, x, labels, *, dropout_masks=None):
            self._setup(x)
            if len(labels) % self.replicas:
                raise ValueError(f"the global batch {len(labels)} must split into {self.replicas} equal shards")
            flat = x.reshape(len(x), -1)
            shards = np.split(np.arange(len(labels)), self.replicas)
            log.append(("step", self.bn_sync, tuple(len(s) for s in shards)))
            grads, loss, correct = [], 0.0, 0
            for r, idx in enumerate(shards):
                mu = flat[idx].mean(0) if self.bn_sync == "local" else flat.mean(0)
                self.running[r] = 0.9 * self.running[r] + 0.1 * mu
                z = (flat[idx] - mu) @ self.w
                p = np.exp(z - z.max(1, keepdims=True))
                p /= p.sum(1, keepdims=True)
                loss += -np.log(p[np.arange(len(idx)), labels[idx]]).mean() / self.replicas
                correct += int((z.argmax(1) == labels[idx]).sum())
                p[np.arange(len(idx)), labels[idx]] -= 1
                grads.append((flat[idx] - mu).T @ p / len(idx))
            g = np.mean(grads, axis=0) + self.sgd.weight_decay * self.w
            self.v = self.sgd.momentum * self.v + g
            self.w = self.w - self.sgd.lr * self.v
            return StepStats(loss=float(loss), correct=correct)

        def evaluate(self, x, labels):
            self._setup(x)
            z = (x.reshape(len(x), -1) - self.running.mean(0)) @ self.w
            lse = np.log(np.exp(z - z.max(1, keepdims=True)).sum(1)) + z.max(1)
            return float((lse - z[np.arange(len(labels)), labels]).sum()), int((z.argmax(1) == labels).sum())

        def gradients(self, x, labels, *, dropout_masks=None):
            raise NotImplementedError("not used by the convergence suite")

        def state(self):
            return {"w": self.w.copy(), "v": self.v.copy(), "running_mean": self.running.mean(0)}

        def load_state(self, state):
            log.append(("load_state", sorted(state)))
            self.w, self.v = state["w"].copy(), state["v"].copy()
            self.running = np.tile(state["running_mean"], (self.replicas, 1))

        def close(self):
            self.closed += 1
            log.append(("close", self.bn_sync))

    return FakeDataParallel


def _in_process(log: list[tuple], seen: list[RunId] | None = None):
    """A stand-in for the orchestrator's run_all: every run in this process, the fake classes as the frameworks."""
    dp_cls = fake_data_parallel(log)

    def run_all(*, run_dir, runs, jobs, threads, resume=False, display=None, **_):
        outcomes = []
        for run in runs:
            if seen is not None:
                seen.append(run)
            kind = run_one(run_dir=run_dir, run=run, resume=resume,
                           trainer_cls=dp_cls if run.data_parallel else SoftmaxTrainer)
            outcomes.append(orchestrate.RunOutcome(run, kind))
        return outcomes

    return run_all


def _train(out, data, *extra):
    return main(["train", "--preset", PRESET, "--out", str(out), "--data-dir", str(data), "--no-verify-data", *extra])


# ---------------------------------------------------------------- names, presets, flags


def test_run_names_round_trip_and_old_names_parse_as_before():
    assert RunId("torch", "bn", 0, replicas=4, bn_sync="sync").name == "torch-bn-r4sync-seed0"
    assert RunId("torch", "bn", 0, replicas=4, bn_sync="local").name == "torch-bn-r4local-seed0"
    assert RunId("torch", "bn", 0).name == "torch-bn-seed0"  # the single-device mode keeps the plain name
    for name in ("torch-bn-r4sync-seed0", "mxnet-nobn-r8local-seed12", "jax-gn-b2-r2sync-seed1", "torch-bn-seed0",
                 "torch-bn-b2-seed0"):
        assert RunId.parse(name).name == name
    assert RunId.parse("torch-bn-seed0") == RunId("torch", "bn", 0)
    assert RunId.parse("torch-bn-b2-seed3") == RunId("torch", "bn", 3, 2)
    run = RunId.parse("jax-bn-r4local-seed0")
    assert (run.replicas, run.bn_sync, run.mode, run.data_parallel) == (4, "local", "local", True)
    assert (RunId("jax", "bn", 0).mode, RunId("jax", "bn", 0).data_parallel) == ("single", False)
    for bad in ("torch-bn-r4single-seed0", "torch-bn-r4-seed0", "torch-bn-rsync-seed0", "torch-bn-r1sync-seed0"):
        with pytest.raises(ValueError):
            RunId.parse(bad)
    with pytest.raises(ValueError, match="both replicas and bn_sync"):
        RunId("torch", "bn", 0, replicas=4)
    with pytest.raises(ValueError, match="bn_sync must be one of local, sync"):
        RunId("torch", "bn", 0, replicas=4, bn_sync="single")


def test_the_data_parallel_presets():
    cpu, gpu = get_preset("dp-cpu"), get_preset("dp-gpu")
    assert (cpu.arch, cpu.image_size, cpu.batch_size, cpu.replicas, cpu.variants) == ("cpu", 28, 128, 4, ("bn",))
    assert cpu.bn_sync == BN_SYNC == ("local", "sync", "single")
    assert (cpu.lr, cpu.momentum, cpu.weight_decay) == (0.02, 0.0, 5e-4) and cpu.data_parallel
    assert "not yet measured" in cpu.notes and "opt-in" in cpu.notes
    assert (gpu.arch, gpu.image_size, gpu.replicas, gpu.batch_size, gpu.lr, gpu.epochs) == ("paper", 224, 8, 256,
                                                                                            0.01, 10)
    assert gpu.train_subset is None and gpu.test_subset is None and gpu.bn_sync == BN_SYNC
    assert "--device gpu" in gpu.notes and "8 GPUs" in gpu.notes
    assert not any(p.data_parallel for name, p in PRESETS.items() if not name.startswith(("dp-", "smoke-dp")))
    base = get_preset("cpu")
    for changes, message in (({"replicas": 3, "bn_sync": ("sync",)}, "divide the global batch"),
                             ({"replicas": 1, "bn_sync": ("sync",)}, "replicas must be >= 2"),
                             ({"replicas": 4}, "replicas must be 1"),
                             ({"replicas": 4, "bn_sync": ("sync", "sync")}, "distinct modes"),
                             ({"replicas": 4, "bn_sync": ("all",)}, "distinct modes"),
                             ({"replicas": 4, "bn_sync": ("sync",), "batch_sizes": (32, 128)}, "cannot sweep")):
        with pytest.raises(ValueError, match=message):
            base.replace(**changes)


def test_a_data_parallel_preset_expands_to_one_run_per_mode():
    preset = get_preset("dp-cpu")
    runs = command._select(_args("--frameworks", "torch,jax"), preset, seeds_default=1)
    assert [r.name for r in runs] == ["torch-bn-r4local-seed0", "torch-bn-r4sync-seed0", "torch-bn-seed0",
                                      "jax-bn-r4local-seed0", "jax-bn-r4sync-seed0", "jax-bn-seed0"]
    picked = command._select(_args("--frameworks", "torch", "--bn-sync", "single,sync", "--variants", "bn,nobn"),
                             command.with_replicas(preset, 2), seeds_default=1)
    assert [r.name for r in picked] == ["torch-bn-r2sync-seed0", "torch-nobn-r2sync-seed0", "torch-bn-seed0",
                                        "torch-nobn-seed0"]
    assert parse_bn_sync(None, preset) == BN_SYNC and parse_bn_sync(None, get_preset("cpu")) == ()
    plain = command._select(_args("--frameworks", "torch"), get_preset("cpu"), seeds_default=1)
    assert [r.name for r in plain] == ["torch-bn-seed0", "torch-nobn-seed0"]  # no data-parallel preset: as before


@pytest.mark.parametrize("argv, message", [
    (("--replicas", "3"), "--replicas must be >= 2 and divide the global batch of 8 (preset smoke-dp). Received: 3"),
    (("--replicas", "1"), "--replicas must be >= 2"),
    (("--replicas", "-2"), "--replicas must be >= 2"),
    (("--bn-sync", "sync,half"), "--bn-sync takes some of local,sync,single. Received: 'sync,half'"),
    (("--bn-sync", ","), "--bn-sync takes some of local,sync,single"),
    (("--preset", "cpu", "--replicas", "2"), "--replicas needs a data-parallel preset (dp-cpu, dp-gpu, smoke-dp); "
                                             "preset cpu trains on one device"),
    (("--preset", "cpu", "--bn-sync", "single"), "--bn-sync needs a data-parallel preset"),
    (("--preset", "small-batch", "--bn-sync", "sync"), "--bn-sync needs a data-parallel preset"),
])
def test_bad_data_parallel_flags_are_one_line_errors_with_exit_2(tmp_path, fake_data, capsys, argv, message):
    assert _train(tmp_path / "out", fake_data, *argv) == 2  # a later --preset overrides smoke-dp
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("bnparity train: error: ") and message in err, err
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------- the runner and the command, with the fake


def test_a_data_parallel_run_end_to_end_with_a_fake_trainer(tmp_path, fake_data, monkeypatch, capsys):
    log: list[tuple] = []
    monkeypatch.setattr(command, "run_all", _in_process(log))
    out = tmp_path / "run"
    assert _train(out, fake_data, "--frameworks", "torch,mxnet") == 0
    assert "(data-parallel runs: 2 replicas with 1 thread(s) each)" in capsys.readouterr().out
    manifest = rec.load_manifest(out)
    names = ["torch-bn-r2local-seed0", "torch-bn-r2sync-seed0", "torch-bn-seed0", "mxnet-bn-r2local-seed0",
             "mxnet-bn-r2sync-seed0", "mxnet-bn-seed0"]
    assert list(manifest.runs) == names and manifest.replicas == 2 and manifest.bn_sync == BN_SYNC
    assert load_train_manifest(json.loads(json.dumps(to_dict(manifest)))) == manifest
    # The fake was built with the run's replicas and mode, stepped on 2 shards of 4, and closed once per run.
    assert [e for e in log if e[0] == "init"] == [("init", 2, m, "cpu") for _ in range(2) for m in ("local", "sync")]
    assert {e for e in log if e[0] == "step"} == {("step", m, (4, 4)) for m in ("local", "sync")}
    assert [e for e in log if e[0] == "close"] == [("close", m) for _ in range(2) for m in ("local", "sync")]
    for name in names:
        run = RunId.parse(name)
        records = rec.read_records(run.records_path(out))
        (start,) = [r for r in records if isinstance(r, StartEvent)]
        assert start.batch_size == 8  # the global batch
        assert records[-1].kind == "done" and {r.batch for r in records if isinstance(r, IterEvent)} == {8}
    c = load_conclusions(read_json(out / rec.CONCLUSIONS))
    assert c.complete and to_dict(c) == read_json(out / rec.CONCLUSIONS)
    assert {(x.framework, x.replicas, x.bn_sync) for x in c.configs} == {
        (f, r, m) for f in ("torch", "mxnet") for r, m in ((2, "local"), (2, "sync"), (None, None))}
    assert [(m.replicas, m.bn_sync) for m in c.by_bn_sync] == [(2, "local"), (2, "sync")]
    assert [(p.frameworks, p.agree) for m in c.by_bn_sync for p in m.agreement] == [(("mxnet", "torch"), True)] * 2
    # every mode of every framework trained on the same batches; the checks are made within each mode
    assert c.batch_digests.identical and {(d.replicas, d.bn_sync, d.iterations) for d in c.batch_digests.checks} == {
        (2, "local", 16), (2, "sync", 16), (None, None, 16)}
    by_fw = {d.framework: d for d in c.data_parallel}
    assert sorted(by_fw) == ["mxnet", "torch"]
    d = by_fw["torch"]
    modes = {m.bn_sync: m for m in d.modes}
    assert [m.bn_sync for m in d.modes] == list(BN_SYNC) and (d.replicas, d.global_batch) == (2, 8)
    final = {m: c.runs[(RunId("torch", "bn", 0, replicas=2, bn_sync=m) if m != "single"
                        else RunId("torch", "bn", 0)).name].final_test_accuracy for m in BN_SYNC}
    assert {m: x.final_test_accuracy.mean for m, x in modes.items()} == final
    assert len(set(final.values())) == 3  # the modes trained differently (the checks below can tell them apart)
    assert d.final_local_minus_single == pytest.approx(final["local"] - final["single"])
    assert d.final_sync_minus_single == pytest.approx(final["sync"] - final["single"])
    assert modes["single"].replicas == 1 and modes["local"].replicas == 2
    text = format_conclusions(c)
    assert "torch-bn-r2sync" in text and "data-parallel torch-bn (R=2, global batch 8)" in text
    assert "bn on 2 replicas (sync BN): mxnet vs torch agree" in text


def test_resume_continues_a_data_parallel_run_through_load_state(tmp_path, fake_data, monkeypatch):
    log: list[tuple] = []
    dp_cls = fake_data_parallel(log)
    run = RunId("torch", "bn", 0, replicas=2, bn_sync="local")
    preset = get_preset(PRESET)

    def directory(name):
        run_dir = tmp_path / name
        rec.write_manifest(run_dir, TrainManifest(preset=preset, runs=(run.name,), seeds=(0,), replicas=2,
                                                  bn_sync=("local",), data_dir=str(fake_data), verify_data=False))
        return run_dir

    straight = directory("straight")
    assert run_one(run_dir=straight, run=run, trainer_cls=dp_cls) == "done"
    crashed = directory("crashed")
    monkeypatch.setenv(FAIL_ENV, f"{run.name}@11")
    log.clear()
    assert run_one(run_dir=crashed, run=run, trainer_cls=dp_cls) == "failed"
    assert log[-1] == ("close", "local")  # closed when the run raised, too
    failed = rec.read_records(run.records_path(crashed))[-1]
    assert isinstance(failed, FailedEvent) and "injected failure" in failed.error
    monkeypatch.delenv(FAIL_ENV)
    log.clear()
    seen: list[RunId] = []
    monkeypatch.setattr(command, "run_all", _in_process(log, seen))
    assert main(["train", "--resume", "--out", str(crashed), "--data-dir", str(fake_data), "--no-verify-data"]) == 0
    assert seen == [run]
    assert log[1] == ("load_state", ["running_mean", "v", "w"]) and log[-1] == ("close", "local")
    resumed = rec.read_records(run.records_path(crashed))
    assert [r.iteration for r in resumed if isinstance(r, IterEvent)] == list(range(1, 17))
    assert [r.resumed_from_epoch for r in resumed if isinstance(r, StartEvent)] == [0, 1]
    expected = rec.read_records(run.records_path(straight))
    for kind, value in ((IterEvent, lambda r: (r.loss, r.batch_digest)), (EvalEvent, lambda r: r.test_accuracy)):
        assert [value(r) for r in resumed if isinstance(r, kind)] == [value(r) for r in expected if isinstance(r, kind)]
    assert main(["train", "--resume", "--out", str(crashed), "--replicas", "4"]) == 2


def test_a_trainer_that_cannot_start_fails_the_run_in_one_line(tmp_path, fake_data):
    run = RunId("torch", "bn", 0, replicas=2, bn_sync="sync")
    run_dir = tmp_path / "gpu"
    rec.write_manifest(run_dir, TrainManifest(preset=get_preset(PRESET), runs=(run.name,), seeds=(0,), device="gpu",
                                              data_dir=str(fake_data), verify_data=False))
    assert run_one(run_dir=run_dir, run=run, trainer_cls=fake_data_parallel([])) == "failed"
    (failed,) = rec.read_records(run.records_path(run_dir))
    assert failed.error == "RuntimeError: --device gpu: the fake engine sees no GPU here"


# ---------------------------------------------------------------- the orchestrator


def test_a_data_parallel_run_process_gets_its_replica_environment():
    base = {"PATH": "/bin", "XLA_FLAGS": "--xla_dump_to=/tmp/x"}
    jax_dp = RunId("jax", "bn", 0, replicas=4, bn_sync="sync")
    env = orchestrate.run_environment(jax_dp, 2, base)
    flags = env["XLA_FLAGS"].split()
    assert flags[0] == "--xla_dump_to=/tmp/x" and "--xla_force_host_platform_device_count=4" in flags
    # XLA reads its flags up to the first word that is not one: the device count must come before any such word
    first_word = next((i for i, f in enumerate(flags) if not f.startswith("--")), len(flags))
    assert flags.index("--xla_force_host_platform_device_count=4") < first_word
    assert "--xla_cpu_multi_thread_eigen=false" in flags  # one thread per replica: 2 threads // 4 replicas -> 1
    assert env["OMP_NUM_THREADS"] == env["BNPARITY_THREADS"] == "1" and env["PATH"] == "/bin"
    mx = orchestrate.run_environment(RunId("mxnet", "bn", 0, replicas=4, bn_sync="local"), 8, {})
    assert mx["MXNET_CPU_WORKER_NTHREADS"] == "4" and mx["OMP_NUM_THREADS"] == "2"  # 8 threads // 4 replicas
    single = orchestrate.run_environment(RunId("jax", "bn", 0), 2, base)
    assert "device_count" not in single["XLA_FLAGS"] and single["OMP_NUM_THREADS"] == "2"
    assert "MXNET_CPU_WORKER_NTHREADS" not in orchestrate.run_environment(RunId("mxnet", "bn", 0), 2, {})
    assert [orchestrate.run_threads(jax_dp, n) for n in (1, 4, 8, 9)] == [1, 1, 2, 2]
    cmd = orchestrate.runner_command(Path("/d"), jax_dp, threads=8, resume=True)
    assert cmd[cmd.index("--threads") + 1] == "2" and cmd[-5:] == ["--resume", "--replicas", "4", "--bn-sync", "sync"]


@pytest.mark.skipif(not framework_installed("jax"), reason="needs jax")
def test_jax_sees_the_replicas_in_a_run_process_environment():
    env = orchestrate.run_environment(RunId("jax", "bn", 0, replicas=3, bn_sync="sync"), 1, dict(os.environ))
    code = "import jax; print(len(jax.devices('cpu')))"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "3", out.stderr[-2000:]


class _Finished:
    """A run process that has already exited with code 0."""

    returncode = 0

    def poll(self):
        return 0


def test_the_orchestrator_launches_runs_with_that_environment_and_skips_per_kind(tmp_path, monkeypatch):
    launched = []

    def popen(cmd, *, env, stdout, **kwargs):
        launched.append((cmd, env))
        run = RunId(cmd[cmd.index("--framework") + 1], "bn", 0)
        if "--replicas" in cmd:
            run = RunId(run.framework, "bn", 0, replicas=int(cmd[cmd.index("--replicas") + 1]),
                        bn_sync=cmd[cmd.index("--bn-sync") + 1])
        with rec.RecordWriter(run.records_path(tmp_path), run) as out:  # the DP trainer is unavailable here
            if run.data_parallel:
                out.write("skipped", epoch=0, iteration=0, reason="no data-parallel trainer")
            else:
                out.write("failed", epoch=0, iteration=0, error="RuntimeError: stop")
        return _Finished()

    monkeypatch.setattr(subprocess, "Popen", popen)
    runs = [RunId("jax", "bn", 0, replicas=4, bn_sync="local"), RunId("jax", "bn", 0, replicas=4, bn_sync="sync"),
            RunId("jax", "bn", 0)]
    outcomes = orchestrate.run_all(run_dir=tmp_path, runs=runs, jobs=1, threads=2)
    assert [o.status for o in outcomes] == ["skipped", "skipped", "failed"]
    # the second data-parallel run was skipped without a process; the single-device one still ran
    assert launched[0][0][-4:] == ["--replicas", "4", "--bn-sync", "local"]
    assert len(launched) == 2 and "--replicas" not in launched[1][0]
    assert "--xla_force_host_platform_device_count=4" in launched[0][1]["XLA_FLAGS"]
    assert "device_count" not in launched[1][1].get("XLA_FLAGS", "")


# ---------------------------------------------------------------- the report


def test_the_report_has_a_data_parallel_section_only_with_data_parallel_records(tmp_path, fake_data, monkeypatch):
    monkeypatch.setattr(command, "run_all", _in_process([]))
    only_single = tmp_path / "single"
    assert _train(only_single, fake_data, "--frameworks", "torch", "--bn-sync", "single") == 0
    assert rec.load_manifest(only_single).bn_sync == () and rec.load_manifest(only_single).replicas is None
    plain = build_report(only_single)
    assert "data-parallel" not in plain.summary["sections"] and "time-to-accuracy" in plain.summary["sections"]
    assert [p.name for p in plain.figures] == ["curves.png", "overlay.png", "seed-blog.png"]  # one-device runs
    assert "Data parallel" not in plain.markdown.read_text() and "per-replica" not in plain.markdown.read_text()

    out = tmp_path / "dp"
    monkeypatch.setenv("BNPARITY_THREADS", "1")  # what the orchestrator sets for a replica (recorded in "start")
    assert _train(out, fake_data, "--frameworks", "torch,mxnet") == 0
    report = build_report(out)
    assert "data-parallel" in report.summary["sections"] and "time-to-accuracy" not in report.summary["sections"]
    assert [p.name for p in report.figures] == ["data-parallel.png"]
    md = report.markdown.read_text()
    assert "## Data-parallel training: per-replica vs synchronized BatchNorm" in md
    assert ("| framework | variant | replicas × images | per-replica BN final | per-replica BN best | synchronized BN "
            "final | synchronized BN best | one device final | one device best | local − single final |") in md
    c = load_conclusions(read_json(out / rec.CONCLUSIONS))
    d = next(x for x in c.data_parallel if x.framework == "torch")
    m = {x.bn_sync: x for x in d.modes}
    row = [line for line in md.splitlines() if line.startswith("| PyTorch | with BN | 2 × 4 |")]
    assert row == [f"| PyTorch | with BN | 2 × 4 | {m['local'].final_test_accuracy.mean:.4f} | "
                   f"{m['local'].best_test_accuracy_mean:.4f} | {m['sync'].final_test_accuracy.mean:.4f} | "
                   f"{m['sync'].best_test_accuracy_mean:.4f} | {m['single'].final_test_accuracy.mean:.4f} | "
                   f"{m['single'].best_test_accuracy_mean:.4f} | {d.final_local_minus_single:+.4f} | "
                   f"{d.best_local_minus_single:+.4f} | {d.final_sync_minus_single:+.4f} | "
                   f"{d.best_sync_minus_single:+.4f} |"]
    assert "| PyTorch | with BN | per-replica BN | 1/1 |" in md  # the time-to-accuracy table has a mode column
    assert "| framework | variant | per-replica BN (images/s) | synchronized BN (images/s) | one device" in md
    assert "per BatchNorm mode; each replica of a data-parallel run had 1 thread(s)." in md
    summary = json.loads(report.summary_json.read_text())
    verdict = next(v for v in summary["verdicts"] if v.startswith("Data parallel:"))
    assert "on 2 replicas of 4 images (global batch 8)" in verdict and "PyTorch with BN 0." in verdict
    assert f"sync − single {d.final_sync_minus_single:+.3f}" in verdict
    training = summary["training"]
    assert [(r["framework"], r["bn_sync"]) for r in training["replica_configs"]] == [
        ("torch", "local"), ("torch", "sync"), ("mxnet", "local"), ("mxnet", "sync")]
    assert {r["framework"] for r in training["configs"]} == {"torch", "mxnet"}  # the single-device configurations
    (figure,) = [f for f in report.figures]
    assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
