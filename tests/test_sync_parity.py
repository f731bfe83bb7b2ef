"""The cross-replica suite's plumbing, without a framework: its cases, its gate (a NumPy replica adapter with one
porter's bug at a time must fail it, the correct one must pass), its records and the worker's deadline."""

from __future__ import annotations

import dataclasses
import json
import os
import textwrap
import time
from collections.abc import Iterator, Sequence

import numpy as np
import pytest

from bnparity.frameworks.conventions import ReplicaConvention
from bnparity.frameworks.replicas import ReplicaAdapter, ReplicaCase, ReplicaResult, ReplicaSkip
from bnparity.reference import batchnorm as bn
from bnparity.reference import crossreplica as cr
from bnparity.reference.spec import BNSpec
from bnparity.suites.cli import main
from bnparity.suites.schema import SyncComparison, SyncParityDoc, SyncParityMeta, SyncSkip, load_sync_parity, to_dict
from bnparity.suites.sync_parity.cases import sync_cases
from bnparity.suites.sync_parity.harness import run_adapter
from bnparity.suites.sync_parity.summary import findings, gate_failures, gated
from bnparity.suites.workers import failure_reason, run_worker, worker_env

CONVENTION = ReplicaConvention(framework="numpyfw", layer="numpyfw.SyncBatchNorm", switch="sync=True",
                               engine="NumPy", shard_weighting="count", saved_running="replica0", cpu="yes")


class NumpyReplicas(ReplicaAdapter):
    """Cross-replica BatchNorm in NumPy with the reference's formulas, and one bug at a time (`bug`)."""

    framework = "numpyfw"
    impl = "builtin"
    native_axis = 1

    def __init__(self, bug: str | None = None) -> None:
        self.bug = bug

    def realize(self, spec: BNSpec, dtype: np.dtype) -> BNSpec:
        return spec

    def run(self, cases: Sequence[ReplicaCase]) -> Iterator[ReplicaResult | ReplicaSkip]:
        for case in cases:
            yield self._one(case)

    def _one(self, case: ReplicaCase) -> ReplicaResult:
        spec, last = case.spec, len(case.xs) - 1
        if case.synchronized:
            step = (cr.equal_weight_step if self.bug == "equal-weights" else cr.synchronized_step)(
                case.xs[last], case.dys[last], case.gamma, case.beta, spec)
            running_spec = spec.replace(running_var="biased") if self.bug == "biased-running-var" else spec
            running = [cr.running_after(case.xs, running_spec, synchronized=True,
                                        weighting="equal" if self.bug == "equal-weights" else "count")]
            running *= case.replicas
            saved = running[0]
            ys, dxs = step.ys, step.dxs
            # each replica's own dγ, dβ: its shard's part of the global sums
            x_hat = [(y - per(case, case.beta)) / per(case, case.gamma) for y in step.ys]
            dgammas = tuple((dy * xh).sum(axis=bn.reduce_axes(xh.ndim, spec.axis))
                            for dy, xh in zip(case.dys[last], x_hat, strict=True))
            dbetas = tuple(np.asarray(dy, dtype=np.float64).sum(axis=bn.reduce_axes(dy.ndim, spec.axis))
                           for dy in case.dys[last])
        else:
            ys, dxs, dgammas, dbetas = [], [], [], []
            for x, dy in zip(case.xs[last], case.dys[last], strict=True):
                y, cache = bn.forward_train(x, case.gamma, case.beta, eps=spec.eps, axis=spec.axis)
                dx, dg, db = bn.backward(dy, cache, case.gamma)
                ys.append(y), dxs.append(dx), dgammas.append(dg), dbetas.append(db)
            running = list(cr.replica_running(case.xs, spec))
            saved = cr.running_after(case.xs, spec, synchronized=False,
                                     running_stats="mean" if self.bug == "saved-mean" else "replica0")
        cast = lambda a: np.asarray(a).astype(case.dtype)  # noqa: E731
        return ReplicaResult(ys=tuple(map(cast, ys)), dxs=tuple(map(cast, dxs)), dgammas=tuple(map(cast, dgammas)),
                             dbetas=tuple(map(cast, dbetas)), running_means=tuple(cast(m) for m, _ in running),
                             running_vars=tuple(cast(v) for _, v in running), saved_running=tuple(map(cast, saved)))


def per(case: ReplicaCase, v: np.ndarray) -> np.ndarray:
    shape = [1] * case.xs[0][0].ndim
    shape[case.spec.axis % len(shape)] = -1
    return np.asarray(v, dtype=np.float64).reshape(shape)


def alive(pid: int) -> bool:
    """Whether process `pid` still runs (a killed process not yet reaped by its new parent is a zombie: not)."""
    try:
        state = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state not in ("Z", "X")


def _records(adapter: ReplicaAdapter, convention: ReplicaConvention = CONVENTION, replicas: int = 2):
    return list(run_adapter(adapter, "default", sync_cases(replicas), convention=convention))


def test_cases_split_a_global_batch_the_last_shard_smaller_and_their_data_is_reproducible():
    for replicas in (2, 4):
        cases = sync_cases(replicas)
        assert len({c.name for c in cases}) == len(cases)
        for c in cases:
            assert sum(c.sizes) == c.shape[0] and len(c.sizes) == replicas
            assert c.sizes[-1] <= c.sizes[0]
            assert ("unequal" in c.name) == (len(set(c.sizes)) > 1)
        assert {c.layout for c in cases} == {"nchw", "nhwc", "nc"}
        assert {c.dtype for c in cases} == {"float32", "float64"}
    c = sync_cases(4)[2]
    assert c.sizes == (3, 3, 3, 1)
    a, b = c.inputs(), c.inputs()
    np.testing.assert_array_equal(a.xs[1], b.xs[1])
    xs, _ = c.shards(a)
    assert [x.shape[0] for x in xs[0]] == [3, 3, 3, 1]
    assert xs[0][0].dtype == np.float32


@pytest.mark.parametrize("replicas", [2, 4])
def test_a_correct_cross_replica_layer_passes_every_gated_comparison(replicas):
    records = _records(NumpyReplicas(), replicas=replicas)
    assert gated(records) and not gate_failures(records)
    quantities = {r.quantity for r in records}
    assert {"y", "dx", "dgamma", "dbeta", "running_mean", "running_var", "saved_running_mean"} <= quantities
    assert {r.replica for r in records if r.quantity == "running_var"} == set(range(replicas))
    assert not findings(records)


@pytest.mark.parametrize("bug,failing", [
    ("equal-weights", {"y", "dx", "running_mean"}),  # a pmean of per-replica statistics, claimed count-weighted
    ("biased-running-var", {"running_var", "saved_running_var"}),  # σ² without the global m/(m−1)
    ("saved-mean", {"saved_running_mean", "saved_running_var"}),  # the replicas' mean saved, convention replica 0
])
def test_each_porters_bug_fails_the_gate(bug, failing):
    failed = gate_failures(_records(NumpyReplicas(bug)))
    assert failing <= {r.quantity for r in failed}
    if bug == "equal-weights":  # only unequal shards tell equal weights from counts
        assert all("unequal" in r.case for r in failed)


def test_an_equal_weight_convention_is_gated_on_what_it_computes_and_its_distance_to_the_batch_is_a_finding():
    convention = dataclasses.replace(CONVENTION, shard_weighting="equal")
    records = _records(NumpyReplicas("equal-weights"), convention=convention)
    assert not gate_failures(records)
    found = [r for r in records if isinstance(r, SyncComparison) and r.reference == "global-batch" and not r.gate]
    assert found and all("unequal-sync" in r.case for r in found)
    assert max(r.scaled_error for r in found if r.quantity == "y") > 1e-3
    assert findings(records)
    # and a layer that is right where its convention says equal is caught too
    assert gate_failures(_records(NumpyReplicas(), convention=convention))


def test_records_round_trip_through_the_document():
    from bnparity.suites.environment import environment
    from bnparity.suites.schema import Environment, from_dict

    records = _records(NumpyReplicas())[:5] + [SyncSkip(case=None, framework="numpyfw", impl="scratch",
                                                        variant="default", replicas=2, gate=False, status="skipped",
                                                        reason="not here")]
    meta = SyncParityMeta(environment=from_dict(Environment, environment()), frameworks=("numpyfw",), replicas=(2,),
                          timeout_s=5.0, wall_time_s=1.0, complete=True,
                          cases=tuple(c.info() for c in sync_cases(2)), conventions=(CONVENTION,))
    doc = SyncParityDoc(meta=meta, records=tuple(records))
    back = load_sync_parity(json.loads(json.dumps(to_dict(doc))))
    assert back == doc


def test_a_hung_worker_is_killed_with_its_children_and_what_it_printed_is_kept(tmp_path):
    (tmp_path / "hangs.py").write_text(textwrap.dedent('''
        import subprocess, sys, time
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
        open(sys.argv[2] if len(sys.argv) > 2 else "child.pid", "w").write(str(child.pid))
        print("MARK " + '{"n": 1}', flush=True)
        time.sleep(600)
    '''))
    path = f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"
    env = worker_env("torch", 2, {**os.environ, "PYTHONPATH": path})
    start = time.monotonic()
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        out = run_worker("hangs", {"x": 1}, env=env, timeout=3.0, mark="MARK ", parse=lambda d: d)
    finally:
        os.chdir(cwd)
    assert time.monotonic() - start < 30
    assert out.timed_out and out.records == [{"n": 1}]
    assert "within 3 s and was killed; 1 records kept" in failure_reason(out, 3.0)
    child = int((tmp_path / "child.pid").read_text())
    time.sleep(0.2)
    assert not alive(child)


@pytest.mark.parametrize("argv,message", [
    (["--replicas", "1"], "--replicas takes comma-separated integers >= 2"),
    (["--replicas", "two"], "--replicas takes comma-separated integers >= 2"),
    (["--cases", "nosuchcase"], "no case name contains"),
    (["--impls", "fast"], "--impls takes some of builtin, scratch"),
    (["--frameworks", "tensorflow"], "unknown framework"),
])
def test_bad_input_is_one_line_and_exit_2(argv, message, capsys):
    assert main(["sync-parity", *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


def test_worker_env_holds_one_thread_and_appends_the_engines_flags():
    env = worker_env("jax", 4, {"PATH": "/bin", "XLA_FLAGS": "--xla_dump_to=/tmp/x"})
    assert env["OMP_NUM_THREADS"] == "1" and env["PATH"] == "/bin"
    flags = env["XLA_FLAGS"].split()
    assert flags[0] == "--xla_dump_to=/tmp/x" and "--xla_cpu_multi_thread_eigen=false" in flags
    assert flags[-1] == "--xla_force_host_platform_device_count=4"
    assert all(f.startswith("--") for f in flags)  # XLA stops reading at the first word that is not a flag
    assert worker_env("mxnet", 3, {})["MXNET_CPU_WORKER_NTHREADS"] == "3"


def test_the_command_runs_a_real_engine_end_to_end_and_writes_its_records(tmp_path, capsys):
    pytest.importorskip("torch")
    out = tmp_path / "sync.json"
    code = main(["sync-parity", "--frameworks", "torch", "--replicas", "2", "--cases", "nchw-unequal",
                 "--json", str(out)])
    text = capsys.readouterr().out
    assert code == 0, text
    doc = load_sync_parity(json.loads(out.read_text()))
    assert doc.meta.complete and doc.meta.replicas == (2,)
    assert {c.name for c in doc.meta.cases} == {c.name for c in sync_cases(2) if "nchw-unequal" in c.name}
    assert doc.comparisons and not gate_failures(doc.records)
    skipped = [r for r in doc.not_run if r.impl == "builtin"]
    assert skipped and all("SyncBatchNorm" in r.reason for r in skipped)  # torch refuses CPU tensors
    assert {c.framework for c in doc.meta.conventions} == {"torch"}
    assert "gated comparisons pass; 0 fail" in text


def test_dp_parity_command_holds_in_float64_for_a_real_engine(tmp_path, capsys):
    pytest.importorskip("torch")
    from bnparity.suites.schema import load_dp_parity

    out = tmp_path / "dp.json"
    code = main(["dp-parity", "--frameworks", "torch", "--replicas", "2", "--dtypes", "float64", "--json", str(out)])
    assert code == 0, capsys.readouterr().out
    doc = load_dp_parity(json.loads(out.read_text()))
    synced = [r for r in doc.comparisons if r.bn_sync == "sync"]
    local = [r for r in doc.comparisons if r.bn_sync == "local"]
    assert synced and all(r.gate and r.passed for r in synced)
    assert max(r.rel_err for r in synced) < 1e-12
    assert local and not any(r.gate for r in local) and max(r.rel_err for r in local if r.kind == "grad") > 1e-2
