"""MXNet's cross-replica BatchNorm on R real CPU contexts (frameworks/mxnet/replicas.py) against the float64 reference.

MXNet reads its engine settings when it starts, so the adapters run in a subprocess with the descriptor's
environment (bnparity.frameworks.replicas.replica_environment) and a timeout: a hung SyncBatchNorm barrier fails
the test instead of blocking pytest. The subprocess (`measure`) builds the cases (R = 2 and 4, float32 and float64,
equal and unequal shards, synchronized and per-replica, 2 training steps), runs every adapter variant, compares each
result with the references of bnparity.reference.crossreplica and prints the worst errors as JSON; the tests assert
on them. A second subprocess (`hang_probe`) runs under MXNET_ENGINE_TYPE=NaiveEngine, where SyncBatchNorm hangs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from bnparity.frameworks.conventions import replica_convention
from bnparity.frameworks.replicas import ReplicaCase, ReplicaSkip, replica_environment
from bnparity.reference import crossreplica as cr
from bnparity.reference.spec import BNSpec
from tests.conftest import require

REPO = Path(__file__).resolve().parents[1]
MARK = "bnparity-mxnet-replicas "
TIMEOUT_S = 120.0  # the subprocess is killed after this (a hang); it takes a few seconds
REPLICAS = (2, 4)
# Allowed max |error| / max(1, max |reference|): float64 a few hundred ulps; float32 a few 1e-5 (measured ≤ 5e-7).
RTOL = {"float64": 1e-10, "float32": 3e-5}
MISS = 1e-3  # an error this large is a different formula, not rounding (measured ≥ 3e-3 for unequal shards)
SPEC = BNSpec(axis=1, eps=float(np.float32(1e-5)), momentum=0.125, init_running_mean=0.25, init_running_var=1.5)
VARIANTS = {"builtin": ("imperative", "hybridized"), "scratch": ("closed-form", "autograd")}
QUANTITIES = ("y", "dx", "dgamma", "dbeta", "running", "saved")


def _unequal(replicas: int) -> int:
    return 7 if replicas == 2 else 3 * replicas - 2  # (4, 3) and (3, 3, 3, 1)


def make_case(replicas: int, n: int, dtype: str, synchronized: bool, *, sample: tuple[int, ...] = (3, 4, 4),
              seed: int = 0) -> ReplicaCase:
    """Two training steps of a global batch of n split over the replicas (crossreplica.shard_sizes), NCHW."""
    rng = np.random.default_rng([seed, replicas, n])
    sizes = cr.shard_sizes(n, replicas)

    def steps(loc: float, scale: float) -> tuple[tuple[np.ndarray, ...], ...]:
        return tuple(tuple(cr.split(rng.normal(loc, scale, (n, *sample)).astype(dtype), sizes)) for _ in range(2))

    xs, dys = steps(1.5, 2.0), steps(0.0, 1.0)
    channels = sample[0]
    mode = "sync" if synchronized else "local"
    return ReplicaCase(name=f"r{replicas}-n{n}-{len(sample) + 1}d-{mode}-{dtype}", spec=SPEC,
                       synchronized=synchronized, xs=xs, dys=dys, gamma=rng.uniform(0.5, 2.0, channels).astype(dtype),
                       beta=rng.normal(0.0, 1.0, channels).astype(dtype), dtype=dtype)


def matrix(replicas: int) -> list[ReplicaCase]:
    """The 16 cases of one R: dtype × shards (equal, unequal) × mode × 2 samples (NCHW and (N, C))."""
    return [make_case(replicas, n, dtype, sync, sample=sample, seed=i)
            for i, (dtype, n, sync, sample) in enumerate(
                (d, n, s, sample) for d in ("float32", "float64") for n in (4 * replicas, _unequal(replicas))
                for s in (True, False) for sample in ((3, 4, 4), (5,)))]


def _err(got, want) -> float:
    """max |got − want| / max(1, max |want|) over a list of arrays; NaN must match NaN (an unbiased running variance
    of a one-value shard, m_r = 1), anything else is an infinite error."""
    g = np.concatenate([np.ravel(np.asarray(a, dtype=np.float64)) for a in got])
    w = np.concatenate([np.ravel(np.asarray(a, dtype=np.float64)) for a in want])
    if g.shape != w.shape or not np.array_equal(np.isnan(g), np.isnan(w)):
        return float("inf")
    g, w = g[~np.isnan(w)], w[~np.isnan(w)]
    return float(np.abs(g - w).max(initial=0.0) / max(1.0, float(np.abs(w).max(initial=0.0))))


def _errors(case: ReplicaCase, result, reference: str) -> dict[str, float]:
    """Worst errors of one result against one reference: "count" (synchronized_step), "equal" (equal_weight_step)
    or "local" (per_replica_step). dγ and dβ are compared per replica (each context's own sums)."""
    spec, xs, dys = case.spec, case.xs[-1], case.dys[-1]
    gamma, beta = case.gamma.astype(np.float64), case.beta.astype(np.float64)
    step = {"count": cr.synchronized_step, "equal": cr.equal_weight_step,
            "local": cr.per_replica_step}[reference](xs, dys, gamma, beta, spec)
    shape = (1, -1) + (1,) * (xs[0].ndim - 2)
    axes = tuple(a for a in range(xs[0].ndim) if a != 1)
    x_hats = [(y - beta.reshape(shape)) / gamma.reshape(shape) for y in step.ys]  # the reference's x̂ per shard
    dgammas = [(np.asarray(dy, np.float64) * xh).sum(axis=axes) for dy, xh in zip(dys, x_hats, strict=True)]
    dbetas = [np.asarray(dy, np.float64).sum(axis=axes) for dy in dys]
    if reference == "local":
        running = cr.replica_running(case.xs, spec)
        saved = cr.running_after(case.xs, spec, synchronized=False, running_stats="mean")
    else:
        saved = cr.running_after(case.xs, spec, synchronized=True, weighting=reference)
        running = [saved] * case.replicas
    return {"y": _err(result.ys, step.ys), "dx": _err(result.dxs, step.dxs),
            "dgamma": _err(result.dgammas, dgammas), "dbeta": _err(result.dbetas, dbetas),
            "dgamma_sum": _err([np.sum(result.dgammas, axis=0)], [step.dgamma]),
            "running": max(_err(result.running_means, [m for m, _ in running]),
                           _err(result.running_vars, [v for _, v in running])),
            "saved": _err(result.saved_running, saved)}


def measure() -> dict[str, object]:
    """Run in the subprocess: every variant of both adapters on `matrix(R)` for each R; the errors as JSON."""
    from bnparity.frameworks.base import Unsupported

    start = time.perf_counter()
    from bnparity.frameworks.mxnet import replicas as mr  # imports mxnet
    import_s = time.perf_counter() - start
    out: dict[str, object] = {"import_s": import_s, "env": {k: os.environ.get(k) for k in
                                                            ("MXNET_CPU_WORKER_NTHREADS", "MXNET_ENGINE_TYPE")},
                              "runs": [], "realize": {}}
    adapters = {"builtin": mr.BuiltinSyncBatchNorm, "scratch": mr.ScratchSyncBatchNorm}
    for impl, cls in adapters.items():
        realized = cls().realize(SPEC, np.dtype("float32"))
        try:
            cls().realize(SPEC, np.dtype("float16"))
            half = None
        except Unsupported as e:
            half = str(e)
        out["realize"][impl] = {**realized.to_dict(), "float16": half}
    for replicas in REPLICAS:
        cases = matrix(replicas)
        for impl, cls in adapters.items():
            for variant in VARIANTS[impl]:
                adapter = cls(**cls.variants[variant])
                ready = [ReplicaCase(**{**vars(c), "spec": adapter.realize(c.spec, np.dtype(c.dtype))})
                         for c in cases]
                t0 = time.perf_counter()
                results = list(adapter.run(ready))
                run_s = time.perf_counter() - t0
                rows = []
                for case, result in zip(ready, results, strict=True):
                    row = {"case": case.name, "synchronized": case.synchronized, "dtype": case.dtype,
                           "sizes": case.shard_sizes}
                    if isinstance(result, ReplicaSkip):
                        row["skip"] = result.reason
                    elif case.synchronized:
                        row["count"], row["equal"] = _errors(case, result, "count"), _errors(case, result, "equal")
                    else:
                        row["local"] = _errors(case, result, "local")
                        replica0 = cr.running_after(case.xs, case.spec, synchronized=False, running_stats="replica0")
                        row["saved_vs_replica0"] = _err(result.saved_running, replica0)
                    rows.append(row)
                out["runs"].append({"impl": impl, "variant": variant, "replicas": replicas, "run_s": run_s,
                                    "rows": rows})
    return out


def hang_probe() -> None:
    """Run in a subprocess under MXNET_ENGINE_TYPE=NaiveEngine: the builtin refuses a synchronized case (one JSON
    line), then a raw SyncBatchNorm on 2 contexts under a 3 s `step_deadline` hangs in its barrier and the deadline
    ends the process (exit status HUNG_EXIT); "finished" is printed only if it does not hang."""
    from bnparity.frameworks.mxnet import replicas as mr
    from bnparity.frameworks.mxnet._mx import autograd, gluon, nd

    adapter = mr.BuiltinSyncBatchNorm()
    case = make_case(2, 8, "float32", True)
    try:
        next(adapter.run([ReplicaCase(**{**vars(case), "spec": adapter.realize(case.spec, np.dtype("float32"))})]))
        refused = None
    except RuntimeError as e:
        refused = str(e)
    print(MARK + json.dumps({"refused": refused}), flush=True)
    print(MARK + json.dumps({"hung_exit": mr.HUNG_EXIT}), flush=True)
    ctxs = mr._contexts(2)
    block = gluon.contrib.nn.SyncBatchNorm(in_channels=1, num_devices=2)
    block.initialize(ctx=ctxs)
    xs = [nd.ones((2, 1), ctx=c) for c in ctxs]
    with mr._step_deadline("the hang probe", 3.0):
        with autograd.record():
            ys = [block(x) for x in xs]  # NaiveEngine: context 0's forward waits in the barrier for context 1
        nd.waitall()
    print(MARK + json.dumps({"finished": [y.shape for y in ys]}), flush=True)


def _subprocess(function: str, env: dict[str, str]) -> tuple[subprocess.CompletedProcess, float]:
    code = f"from tests.test_mxnet_replicas import {function}; {function}()"
    if function == "measure":
        code = ("import json; from tests.test_mxnet_replicas import MARK, measure; "
                "print(MARK + json.dumps(measure()), flush=True)")
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, env={**os.environ, **env}, capture_output=True,
                          text=True, timeout=TIMEOUT_S, check=False)
    return proc, time.perf_counter() - start


def _records(stdout: str) -> list[dict]:
    return [json.loads(line[len(MARK):]) for line in stdout.splitlines() if line.startswith(MARK)]


@pytest.fixture(scope="module")
def measured() -> dict:
    """What `measure` printed, run once for the module with the descriptor's environment for the largest R."""
    require("mxnet")
    env = replica_environment("mxnet", max(REPLICAS), os.environ)
    proc, _ = _subprocess("measure", env)
    records = _records(proc.stdout)
    assert proc.returncode == 0 and records, f"the subprocess failed ({proc.returncode}): {proc.stderr[-2000:]}"
    return records[0]


def _rows(measured: dict, impl: str, *, synchronized: bool | None = None, dtype: str | None = None,
          unequal: bool | None = None):
    for run in measured["runs"]:
        if run["impl"] != impl:
            continue
        for row in run["rows"]:
            if synchronized is not None and row["synchronized"] != synchronized:
                continue
            if dtype is not None and row["dtype"] != dtype:
                continue
            if unequal is not None and (len(set(row["sizes"])) > 1) != unequal:
                continue
            yield run, row


def _worst(row: dict, reference: str) -> float:
    return max(row[reference][q] for q in QUANTITIES)


def test_the_subprocess_ran_every_case_on_the_descriptors_engine(measured):
    assert measured["env"]["MXNET_CPU_WORKER_NTHREADS"] == replica_environment("mxnet", max(REPLICAS))[
        "MXNET_CPU_WORKER_NTHREADS"]
    seen = {(run["impl"], run["variant"], run["replicas"]) for run in measured["runs"]}
    assert seen == {(impl, v, r) for impl, vs in VARIANTS.items() for v in vs for r in REPLICAS}
    assert all(len(run["rows"]) == 16 for run in measured["runs"])


def test_builtin_sync_batchnorm_weights_the_shards_equally(measured):
    """SyncBatchNorm averages the contexts' E[x] and E[x²] with weights 1/R: equal_weight_step, also with unequal
    shards; the global batch (count-weighted) only when the shards are equal."""
    rows = list(_rows(measured, "builtin", synchronized=True, dtype="float32"))
    assert len(rows) == 16  # 2 variants × 2 R × 2 shardings × 2 samples
    for run, row in rows:
        assert _worst(row, "equal") <= RTOL["float32"], (run["variant"], row)
        if len(set(row["sizes"])) > 1:
            assert max(row["count"]["y"], row["count"]["dx"]) > MISS, (run["variant"], row)  # not the global batch
            assert row["count"]["running"] > MISS
        else:
            assert _worst(row, "count") <= RTOL["float32"], (run["variant"], row)


def test_builtin_sync_batchnorm_has_no_float64_kernel(measured):
    rows = list(_rows(measured, "builtin", synchronized=True, dtype="float64"))
    assert len(rows) == 16
    for _, row in rows:
        assert "skip" in row, row
        assert "no float64 kernel" in row["skip"] and "data type do not match" in row["skip"], row["skip"]


def test_builtin_per_replica_is_each_contexts_own_batchnorm(measured):
    """Plain nn.BatchNorm on every context: per_replica_step, each context's running statistics its own."""
    for dtype, rtol in RTOL.items():
        rows = list(_rows(measured, "builtin", synchronized=False, dtype=dtype))
        assert len(rows) == 16
        for run, row in rows:
            assert _worst(row, "local") <= rtol, (run["variant"], row)


def test_saved_running_is_the_mean_over_the_contexts(measured):
    """save_parameters writes Parameter._reduce(): the mean of the contexts' copies, not replica 0's."""
    for impl in VARIANTS:
        rows = list(_rows(measured, impl, synchronized=False))
        assert len(rows) == 32
        for run, row in rows:
            assert row["local"]["saved"] <= RTOL[row["dtype"]], (impl, run["variant"], row)
            assert row["saved_vs_replica0"] > MISS, (impl, run["variant"], row)


def test_scratch_is_the_global_batch_with_unequal_shards_too(measured):
    """The scratch all-reduce (Chan's count-weighted combination across the contexts), closed-form backward and
    mx.autograd through the copies alike: synchronized_step, in float32 and float64, with the unbiased running
    variance over the global m."""
    for dtype, rtol in RTOL.items():
        rows = list(_rows(measured, "scratch", synchronized=True, dtype=dtype))
        assert len(rows) == 16
        for run, row in rows:
            assert _worst(row, "count") <= rtol, (run["variant"], row)
            if len(set(row["sizes"])) > 1:
                assert max(row["equal"]["y"], row["equal"]["dx"]) > MISS, (run["variant"], row)


def test_scratch_per_replica_is_each_shards_batchnorm(measured):
    for dtype, rtol in RTOL.items():
        for run, row in _rows(measured, "scratch", synchronized=False, dtype=dtype):
            assert _worst(row, "local") <= rtol, (run["variant"], row)


def test_dgamma_and_dbeta_are_each_contexts_own(measured):
    """Every context reports its own shard's Σ dy·x̂ and Σ dy (before data parallelism all-reduces them)."""
    for impl in VARIANTS:
        for run, row in _rows(measured, impl):
            if "skip" in row:
                continue
            reference = "local" if not row["synchronized"] else ("equal" if impl == "builtin" else "count")
            rtol = RTOL[row["dtype"]]
            assert row[reference]["dgamma"] <= rtol and row[reference]["dbeta"] <= rtol, (impl, run["variant"], row)
            assert row[reference]["dgamma_sum"] <= rtol


def test_builtin_realize_is_what_mxnet_computes(measured):
    builtin, scratch = measured["realize"]["builtin"], measured["realize"]["scratch"]
    assert builtin["running_var"] == "biased" and builtin["variance"] == "fast"
    assert builtin["momentum"] == pytest.approx(SPEC.momentum) and builtin["eps"] == float(np.float32(SPEC.eps))
    assert scratch == {**SPEC.to_dict(), "float16": scratch["float16"]}
    assert "float16" in builtin["float16"] and "float16" in scratch["float16"]


def test_a_hung_barrier_fails_fast():
    """Under NaiveEngine SyncBatchNorm's barrier waits forever: the builtin refuses it up front, and a step that
    hangs anyway ends the process at its deadline with one line, long before the suite's timeout."""
    require("mxnet")
    proc, seconds = _subprocess("hang_probe", {"MXNET_ENGINE_TYPE": "NaiveEngine"})
    records = _records(proc.stdout)
    assert records and "NaiveEngine" in (records[0]["refused"] or ""), (proc.stdout, proc.stderr[-2000:])
    assert not any("finished" in r for r in records), "SyncBatchNorm did not hang under NaiveEngine"
    assert proc.returncode == records[1]["hung_exit"], (proc.returncode, proc.stderr[-2000:])
    assert "did not finish within 3 s" in proc.stderr.strip().splitlines()[-1]
    assert seconds < 30


def test_replica_convention_row():
    row = replica_convention("mxnet")
    assert row.shard_weighting == "equal" and row.saved_running == "mean" and row.cpu == "yes"
    for proofs in row.proofs.values():
        for proof in proofs:
            path, name = proof.split("::")
            assert (REPO / path).is_file() and f"def {name}(" in (REPO / path).read_text(), proof
