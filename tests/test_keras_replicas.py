"""Keras' cross-replica BatchNorm (frameworks/keras/replicas.py) on the backend this process runs, against the float64
reference (bnparity.reference.crossreplica).

The engines fix their device count when the backend starts (TensorFlow's logical CPUs, JAX's host devices), and this
pytest process may have started it already: the adapters run once, in a subprocess that runs this file as a script
with 4 devices (R = 2 and R = 4 on the first R) and the backend's KERAS_BACKEND, and prints the worst errors as
JSON; the tests assert on them. Equal and unequal shards, synchronized and per-replica, 2 training steps:
- TensorFlow, BatchNormalization(synchronized=True) under MirroredStrategy: the global batch's statistics for any
  shard sizes (it all-reduces sums and counts), measurably off the equally weighted statistics on unequal shards;
- JAX, keras.distribution.DataParallel: the global batch on equal shards; JAX refuses a batch R does not divide
  (a skip with its message), and float64 (the layer computes float32 there) is Unsupported;
- the scratch keras.ops layer: the global batch for any shard sizes, in float32 and float64, on both backends;
- per-replica cases: each shard its own BatchNorm; dγ, dβ each replica's own in every mode;
- the saved running statistics are replica 0's (REPLICA_CONVENTION.saved_running), measurably not the mean;
- too few devices: a one-line RuntimeError naming the variable to set; keras-torch declares no implementation.
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
from conftest import require

NAME = f"keras-{os.environ.get('KERAS_BACKEND', 'tensorflow')}"
REPO = Path(__file__).resolve().parents[1]
DEVICES = 4
RTOL = {"float64": 1e-10, "float32": 5e-5}  # max |error| / max |reference|, per quantity
DIFFER = 1e-3  # equal-weight vs count-weighted statistics, replica 0's vs the mean: far above rounding
STEPS = 2


def make_case(replicas: int, *, dtype: str, unequal: bool, synchronized: bool, seed: int = 0):
    """A channels-last ReplicaCase, 2 steps; shards ⌈n/R⌉ and a smaller last one when `unequal`."""
    from bnparity.frameworks.replicas import ReplicaCase
    from bnparity.reference.crossreplica import shard_sizes, split
    from bnparity.reference.spec import BNSpec

    rng = np.random.default_rng(seed)
    n = 3 * replicas - 1 if unequal else 2 * replicas
    sizes = shard_sizes(n, replicas)
    shape = (n, 3, 2, 3)
    xs, dys = [], []
    for _ in range(STEPS):
        x = rng.normal(0.5, 2.0, shape) + np.linspace(-2.0, 3.0, n).reshape((n, 1, 1, 1))  # shards differ
        xs.append(tuple(a.astype(dtype) for a in split(x, sizes)))
        dys.append(tuple(a.astype(dtype) for a in split(rng.normal(0.0, 1.0, shape), sizes)))
    spec = BNSpec(axis=3, eps=1e-3, momentum=0.125, init_running_mean=0.25, init_running_var=1.5)
    name = f"r{replicas}-{'unequal' if unequal else 'equal'}-{'sync' if synchronized else 'local'}-{dtype}"
    return ReplicaCase(name=name, spec=spec, synchronized=synchronized, xs=tuple(xs), dys=tuple(dys),
                       gamma=rng.uniform(0.5, 2.0, 3).astype(dtype), beta=rng.normal(0.0, 1.0, 3).astype(dtype),
                       dtype=dtype)


def _rel(got, want) -> float:
    got = np.concatenate([np.ravel(np.asarray(a, np.float64)) for a in got])
    want = np.concatenate([np.ravel(np.asarray(a, np.float64)) for a in want])
    return float(np.max(np.abs(got - want)) / max(float(np.max(np.abs(want))), 1e-300))


def expected(case, reference: str) -> dict[str, list[np.ndarray]]:
    """What `reference` ("equal-weight", "global-batch", "per-replica") says every replica reports; the saved
    statistics replica 0's."""
    from bnparity.reference import batchnorm as rbn
    from bnparity.reference import crossreplica as cr

    xs, dys, spec = case.xs[-1], case.dys[-1], case.spec
    if reference == "per-replica":
        step = cr.per_replica_step(xs, dys, case.gamma, case.beta, spec)
        running = cr.replica_running(case.xs, spec)
        stats = [(step.mean[r], step.var[r]) for r in range(case.replicas)]
    else:
        weighting = "equal" if reference == "equal-weight" else "count"
        step = (cr.equal_weight_step if weighting == "equal" else cr.synchronized_step)(
            xs, dys, case.gamma, case.beta, spec)
        running = [cr.running_after(case.xs, spec, synchronized=True, weighting=weighting)] * case.replicas
        stats = [(step.mean, step.var)] * case.replicas
    axes = rbn.reduce_axes(xs[0].ndim, spec.axis)
    ones, zeros = np.ones_like(case.gamma, np.float64), np.zeros_like(case.gamma, np.float64)
    x_hats = [rbn.normalize(x, mu, var, ones, zeros, eps=spec.eps, axis=spec.axis)
              for x, (mu, var) in zip(xs, stats, strict=True)]
    return {"y": list(step.ys), "dx": list(step.dxs),
            "dgamma": [(np.asarray(dy, np.float64) * xh).sum(axis=axes) for dy, xh in zip(dys, x_hats, strict=True)],
            "dbeta": [np.asarray(dy, np.float64).sum(axis=axes) for dy in dys],
            "running_mean": [m for m, _ in running], "running_var": [v for _, v in running],
            "saved_mean": [running[0][0]], "saved_var": [running[0][1]]}


def errors(result, want: dict[str, list[np.ndarray]]) -> dict[str, float]:
    got = {"y": list(result.ys), "dx": list(result.dxs), "dgamma": list(result.dgammas),
           "dbeta": list(result.dbetas), "running_mean": list(result.running_means),
           "running_var": list(result.running_vars), "saved_mean": [result.saved_running[0]],
           "saved_var": [result.saved_running[1]]}
    return {q: _rel(got[q], want[q]) for q in want}


def measure() -> dict[str, object]:
    """The figures the tests assert on (run with DEVICES devices of the backend)."""
    from bnparity.frameworks.base import Unsupported
    from bnparity.frameworks.keras import replicas as kr
    from bnparity.frameworks.replicas import ReplicaSkip

    out: dict[str, object] = {"devices": len(kr.keras.distribution.list_devices("cpu"))}
    worst: dict[str, float] = {}
    distance: dict[str, float] = {}
    skips: dict[str, str] = {}
    timing: dict[str, float] = {}
    for replicas in (2, 4):
        for cls in (kr.BuiltinSyncBatchNorm, kr.ScratchSyncBatchNorm):
            adapter = cls()
            grid = []
            for dtype in ("float64", "float32"):
                for unequal in (False, True):
                    for synchronized in (True, False):
                        case = make_case(replicas, dtype=dtype, unequal=unequal, synchronized=synchronized)
                        try:
                            spec = adapter.realize(case.spec, np.dtype(dtype))
                        except Unsupported as e:
                            skips[f"{cls.impl}/{case.name}"] = str(e)
                            continue
                        grid.append(type(case)(**{**case.__dict__, "spec": spec}))
            t = time.perf_counter()
            results = list(adapter.run(grid))
            timing[f"r{replicas}/{cls.impl}"] = time.perf_counter() - t
            for case, result in zip(grid, results, strict=True):
                key = f"{cls.impl}/{case.name}"
                if isinstance(result, ReplicaSkip):
                    skips[key] = result.reason
                    continue
                reference = "global-batch" if case.synchronized else "per-replica"
                worst[key] = max(errors(result, expected(case, reference)).values())
                if case.synchronized and len(set(case.shard_sizes)) > 1:
                    other = errors(result, expected(case, "equal-weight"))
                    distance[f"{key}/vs-equal-weight"] = max(other[q] for q in ("y", "dx", "running_mean"))
                if not case.synchronized:
                    mean = [np.mean(result.running_means, axis=0)], [np.mean(result.running_vars, axis=0)]
                    distance[f"{key}/saved-vs-mean"] = max(_rel([result.saved_running[0]], mean[0]),
                                                           _rel([result.saved_running[1]], mean[1]))
    out.update(worst=worst, distance=distance, skips=skips, timing=timing)
    try:
        list(kr.BuiltinSyncBatchNorm().run([make_case(2 * DEVICES, dtype="float32", unequal=False,
                                                      synchronized=True)]))
        out["too_few_devices"] = None
    except RuntimeError as e:
        out["too_few_devices"] = str(e)
    return out


def _environment(backend: str) -> dict[str, str]:
    from bnparity.frameworks.replicas import replica_environment

    return {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "2", "JAX_PLATFORMS": "cpu",
            **replica_environment(f"keras-{backend}", DEVICES, os.environ)}


@pytest.fixture(scope="module")
def figures() -> dict[str, object]:
    require(NAME)
    from bnparity.frameworks.registry import descriptor

    if not descriptor(NAME).replica_impls:
        pytest.skip(f"{NAME} declares no cross-replica BatchNorm")
    backend = NAME.split("-", 1)[1]
    result = subprocess.run([sys.executable, __file__], cwd=REPO, env=_environment(backend), capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def _backend() -> str:
    return NAME.split("-", 1)[1]


@pytest.mark.slow
def test_every_case_that_runs_matches_its_reference(figures):
    assert figures["devices"] == DEVICES
    assert figures["worst"], figures["skips"]
    for key, err in figures["worst"].items():
        assert err <= RTOL[key.rsplit("-", 1)[1]], (key, err)


@pytest.mark.slow
def test_synchronized_statistics_weight_shards_by_count(figures):
    """Unequal shards: the global batch's statistics (matched above), far from the equally weighted ones."""
    far = {k: v for k, v in figures["distance"].items() if k.endswith("vs-equal-weight")}
    impls = {"tensorflow": ("builtin", "scratch"), "jax": ("scratch",)}[_backend()]
    assert {k.split("/")[0] for k in far} == set(impls), far
    assert all(v > DIFFER for v in far.values()), far


@pytest.mark.slow
def test_saved_running_statistics_are_replica_0s(figures):
    saved = {k: v for k, v in figures["distance"].items() if k.endswith("saved-vs-mean")}
    assert saved and all(v > DIFFER for v in saved.values()), saved


@pytest.mark.slow
def test_what_the_backend_refuses_is_a_skip_with_its_reason(figures):
    skips = figures["skips"]
    if _backend() == "tensorflow":
        assert skips == {}
        assert sum(k.startswith("builtin/") for k in figures["worst"]) == 16
    else:
        unequal = [k for k in skips if k.startswith("builtin/") and "-unequal-" in k and k.endswith("float32")]
        assert len(unequal) == 4 and all("divisible" in skips[k] for k in unequal), skips
        f64 = [k for k in skips if k.startswith("builtin/") and k.endswith("float64")]
        assert len(f64) == 8 and all("computes in float32" in skips[k] for k in f64), skips
        assert not any(k.startswith("scratch/") for k in skips), skips


@pytest.mark.slow
def test_too_few_devices_raise_one_line_naming_the_setting(figures):
    message = figures["too_few_devices"]
    variable = {"tensorflow": "BNPARITY_KERAS_TF_CPUS=8", "jax": "--xla_force_host_platform_device_count=8"}
    assert message and "\n" not in message and variable[_backend()] in message, message


def test_realize_follows_the_layer():
    require(NAME)
    from bnparity.frameworks.base import Unsupported
    from bnparity.frameworks.keras import replicas as kr
    from bnparity.frameworks.registry import descriptor
    from bnparity.reference.spec import BNSpec

    spec = BNSpec(axis=-1, eps=1e-3, momentum=0.1)
    if not descriptor(NAME).replica_impls:  # keras-torch: no distribution support
        with pytest.raises(Unsupported, match="no distribution support"):
            kr.BuiltinSyncBatchNorm().realize(spec, np.dtype("float32"))
        return
    builtin = kr.BuiltinSyncBatchNorm().realize(spec, np.dtype("float32"))
    assert builtin.running_var == "biased" and builtin.eps == spec.eps and builtin.new_weight == spec.new_weight
    assert kr.ScratchSyncBatchNorm().realize(spec, np.dtype("float64")) == spec
    with pytest.raises(Unsupported, match="float32 and float64"):
        kr.ScratchSyncBatchNorm().realize(spec, np.dtype("float16"))


if __name__ == "__main__":
    print(json.dumps(measure()))
