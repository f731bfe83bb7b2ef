"""Flax's cross-replica BatchNorm on real JAX host devices (frameworks/jax/replicas.py) against the float64 reference.

JAX fixes its host device count when it initializes (XLA_FLAGS=--xla_force_host_platform_device_count=R), and this
pytest process may have started JAX on one device already: the adapters run once, in a subprocess that runs this
file as a script with 4 host devices (R = 2 and R = 4 on the first R), compares with bnparity.reference.crossreplica
there and prints the worst errors as JSON; the tests assert on them. Both implementations, both engines (shard_map,
pmap), float64 and float32, equal and unequal shards, synchronized and per-replica, 2 training steps:
- flax.linen.BatchNorm(axis_name=...) computes `equal_weight_step` (each device's statistics weighted 1/R), which
  is the global batch's for equal shards and measurably off it for unequal ones;
- the scratch psum layer computes the global batch (`synchronized_step`) for any shard sizes, and is measurably
  off `equal_weight_step` on unequal shards (so the comparisons tell the two apart);
- per-replica cases: every device a BatchNorm of its own shard; dγ, dβ are each device's own in every mode;
- the saved running statistics are the mean over the devices (REPLICA_CONVENTION.saved_running), not device 0's;
- shard_map and pmap agree; each configuration is compiled once; too few devices raise a one-line RuntimeError.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
DEVICES = 4  # the subprocess's host device count
RTOL = {"float64": 1e-10, "float32": 5e-5}  # max |error| / max |reference|, per quantity
DIFFER = 1e-3  # equal-weight vs count-weighted statistics on unequal shards: far above either dtype's rounding
STEPS = 2


def _layout_data(rng: np.random.Generator, shape: tuple[int, ...], layout: str) -> np.ndarray:
    """A global batch with a non-zero mean that drifts along the batch (so shards differ), channels last."""
    n = shape[0]
    x = rng.normal(0.5, 2.0, shape) + np.linspace(-2.0, 3.0, n).reshape((n,) + (1,) * (len(shape) - 1))
    return np.moveaxis(x, 1, -1) if layout == "nchw" else x  # generated NCHW, moved to Flax's NHWC


def make_case(replicas: int, *, dtype: str, layout: str, unequal: bool, synchronized: bool, variance: str,
              seed: int = 0):
    """A ReplicaCase in Flax's native layout (channels last): 2 steps, shards ⌈n/R⌉ and a smaller last one when
    `unequal`."""
    from bnparity.frameworks.replicas import ReplicaCase
    from bnparity.reference.crossreplica import shard_sizes, split
    from bnparity.reference.spec import BNSpec

    rng = np.random.default_rng(seed)
    channels = 3
    n = 3 * replicas - 1 if unequal else 2 * replicas  # R=2: 3+2; R=4: 3+3+3+2
    sizes = shard_sizes(n, replicas)
    shape = (n, channels, 4, 2) if layout == "nchw" else (n, 3, 2, channels)
    xs, dys = [], []
    for _ in range(STEPS):
        x, dy = _layout_data(rng, shape, layout), rng.normal(0.0, 1.0, shape)
        dy = np.moveaxis(dy, 1, -1) if layout == "nchw" else dy
        xs.append(tuple(a.astype(dtype) for a in split(x, sizes)))
        dys.append(tuple(a.astype(dtype) for a in split(dy, sizes)))
    spec = BNSpec(axis=3, eps=1e-3, momentum=0.125, variance=variance, init_running_mean=0.25, init_running_var=1.5)
    name = f"r{replicas}-{layout}-{'unequal' if unequal else 'equal'}-{'sync' if synchronized else 'local'}-{dtype}"
    return ReplicaCase(name=name, spec=spec, synchronized=synchronized, xs=tuple(xs), dys=tuple(dys),
                       gamma=rng.uniform(0.5, 2.0, channels).astype(dtype),
                       beta=rng.normal(0.0, 1.0, channels).astype(dtype), dtype=dtype)


def cases(replicas: int) -> list:
    """R=2: float64 and float32 × equal and unequal × synchronized and per-replica; R=4: the unequal ones. The
    variance algorithm and the layout the data was made in alternate between R (both are covered)."""
    variance = "two-pass" if replicas == 2 else "fast"
    kinds = (False, True) if replicas == 2 else (True,)
    out = []
    for dtype in ("float64", "float32"):
        layout = "nchw" if (dtype == "float64") == (replicas == 2) else "nhwc"
        for unequal in kinds:
            for synchronized in (True, False):
                out.append(make_case(replicas, dtype=dtype, layout=layout, unequal=unequal,
                                     synchronized=synchronized, variance=variance))
    return out


def _rel(got, want) -> float:
    """max |got − want| / max |want| over a list of arrays."""
    got = np.concatenate([np.ravel(np.asarray(a, np.float64)) for a in got])
    want = np.concatenate([np.ravel(np.asarray(a, np.float64)) for a in want])
    return float(np.max(np.abs(got - want)) / max(float(np.max(np.abs(want))), 1e-300))


def expected(case, reference: str) -> dict[str, list[np.ndarray]]:
    """What `reference` ("equal-weight", "global-batch", "per-replica") says every replica reports."""
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
            "saved_mean": [np.mean([m for m, _ in running], axis=0)],
            "saved_var": [np.mean([v for _, v in running], axis=0)]}


def reported(result) -> dict[str, list[np.ndarray]]:
    return {"y": list(result.ys), "dx": list(result.dxs), "dgamma": list(result.dgammas),
            "dbeta": list(result.dbetas), "running_mean": list(result.running_means),
            "running_var": list(result.running_vars), "saved_mean": [result.saved_running[0]],
            "saved_var": [result.saved_running[1]]}


def errors(result, want: dict[str, list[np.ndarray]]) -> dict[str, float]:
    got = reported(result)
    return {q: _rel(got[q], want[q]) for q in want}


def measure() -> dict[str, object]:
    """The figures the tests assert on (run with DEVICES host devices)."""
    start = time.perf_counter()
    from bnparity.frameworks.jax import replicas as jr
    import_s = time.perf_counter() - start

    import jax

    out: dict[str, object] = {"import_s": import_s, "devices": len(jax.devices("cpu"))}
    worst: dict[str, float] = {}
    distance: dict[str, float] = {}
    results: dict[tuple[str, str, str], object] = {}
    timing: dict[str, float] = {}
    adapters = {}
    for replicas in (2, 4):
        grid = cases(replicas)
        for cls in (jr.BuiltinSyncBatchNorm, jr.ScratchSyncBatchNorm):
            for variant, kwargs in cls.variants.items():
                adapter = adapters.setdefault((cls.impl, variant), cls(**kwargs))
                realized = [type(c)(**{**c.__dict__, "spec": adapter.realize(c.spec, np.dtype(c.dtype))})
                            for c in grid]
                t = time.perf_counter()
                got = list(adapter.run(realized))
                timing[f"r{replicas}/{cls.impl}/{variant}"] = time.perf_counter() - t
                for case, result in zip(realized, got, strict=True):
                    results[(case.name, cls.impl, variant)] = result
                    if not case.synchronized:
                        reference = "per-replica"
                    else:
                        reference = "equal-weight" if cls.impl == "builtin" else "global-batch"
                    err = errors(result, expected(case, reference))
                    key = f"r{replicas}/{cls.impl}/{variant}/{case.dtype}/{'sync' if case.synchronized else 'local'}"
                    worst[key] = max(worst.get(key, 0.0), *err.values())
                    unequal = len(set(case.shard_sizes)) > 1
                    if case.synchronized:
                        # The other weighting: how far this result is from it (y, dx and the running statistics).
                        other = "global-batch" if reference == "equal-weight" else "equal-weight"
                        other_err = errors(result, expected(case, other))
                        d = max(other_err[q] for q in ("y", "dx", "running_mean", "running_var"))
                        kind = "unequal" if unequal else "equal"
                        distance[f"r{replicas}/{cls.impl}/{variant}/{case.dtype}/{kind}/vs-{other}"] = d
                    else:  # the saved statistics are not replica 0's
                        distance[f"r{replicas}/{cls.impl}/{variant}/{case.dtype}/saved-vs-replica0"] = max(
                            _rel([result.saved_running[0]], [result.running_means[0]]),
                            _rel([result.saved_running[1]], [result.running_vars[0]]))
    out["worst"], out["distance"], out["timing"] = worst, distance, timing

    engines: dict[str, float] = {}
    for (name, impl, variant), result in results.items():
        if variant == "pmap":
            other = reported(results[(name, impl, "shard_map")])
            mine = reported(result)
            engines[f"{impl}/{name}"] = max(_rel(mine[q], other[q]) for q in mine)
    out["engines"] = engines

    builtin = adapters[("builtin", "shard_map")]
    before = dict(builtin.traces)
    grid = [type(c)(**{**c.__dict__, "spec": builtin.realize(c.spec, np.dtype(c.dtype))}) for c in cases(2)]
    t = time.perf_counter()
    list(builtin.run(grid))
    out["rerun_s"] = time.perf_counter() - t
    out["traces"] = {"before": sum(before.values()), "after": sum(builtin.traces.values()),
                     "max_per_configuration": max(builtin.traces.values()), "configurations": len(before)}

    too_many = make_case(2 * DEVICES, dtype="float64", layout="nhwc", unequal=False, synchronized=True,
                         variance="two-pass")
    try:
        list(builtin.run([too_many]))
        out["too_few_devices"] = None
    except RuntimeError as e:
        out["too_few_devices"] = str(e)
    return out


@pytest.fixture(scope="module")
def figures() -> dict[str, object]:
    pytest.importorskip("jax")
    pytest.importorskip("flax")
    env = {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={DEVICES}", "JAX_PLATFORMS": "cpu"}
    result = subprocess.run([sys.executable, __file__], cwd=REPO, env=env, capture_output=True, text=True,
                            timeout=600, check=False)
    assert result.returncode == 0, result.stderr[-4000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def _worst(figures, impl: str, mode: str) -> dict[str, float]:
    return {k: v for k, v in figures["worst"].items() if f"/{impl}/" in k and k.endswith(f"/{mode}")}


def _check(worst: dict[str, float]) -> None:
    assert worst
    for key, err in worst.items():
        dtype = key.split("/")[3]
        assert err < RTOL[dtype], (key, err)


def test_builtin_synchronized_is_the_equal_weight_step(figures):
    """flax.linen.BatchNorm(axis_name=...) on R host devices: y, dx, each device's dγ, dβ, the running statistics
    (biased σ², momentum on the old value) and the saved ones are equal_weight_step's, R = 2 and 4, both engines."""
    worst = _worst(figures, "builtin", "sync")
    assert {k.split("/")[0] for k in worst} == {"r2", "r4"} and {k.split("/")[2] for k in worst} == {"shard_map",
                                                                                                      "pmap"}
    _check(worst)


def test_builtin_equal_shards_are_the_global_batch(figures):
    """Equal shards: the equal weights 1/R are the counts' — the builtin is the global batch's BatchNorm."""
    for key, d in figures["distance"].items():
        if "/builtin/" in key and "/equal/" in key:
            assert d < RTOL[key.split("/")[3]], (key, d)


def test_builtin_unequal_shards_are_measurably_off_the_global_batch(figures):
    """Unequal shards (padded, Flax's mask): the pmean of the devices' means is not the global batch's."""
    found = {k: d for k, d in figures["distance"].items() if "/builtin/" in k and "/unequal/vs-global-batch" in k}
    assert len(found) == 2 * 2 * 2  # R × engine × dtype
    for key, d in found.items():
        assert d > DIFFER, (key, d)


def test_scratch_synchronized_is_the_global_batch(figures):
    """The psum of counts, m_r μ_r and M₂,r is the global batch's BatchNorm for any shard sizes (unbiased running
    variance over the global count, as the spec says), and on unequal shards measurably off equal_weight_step."""
    _check(_worst(figures, "scratch", "sync"))
    found = {k: d for k, d in figures["distance"].items() if "/scratch/" in k and "/unequal/vs-equal-weight" in k}
    assert len(found) == 2 * 2 * 2
    for key, d in found.items():
        assert d > DIFFER, (key, d)


def test_per_replica_cases_are_each_shards_own_batchnorm(figures):
    """Without axis_name (or psum), every device is a BatchNorm of its own shard, running statistics included."""
    _check(_worst(figures, "builtin", "local"))
    _check(_worst(figures, "scratch", "local"))


def test_saved_running_is_the_mean_over_the_replicas(figures):
    """saved_running is the devices' pmean (the Flax ImageNet example's): the per-replica reference's mean (checked
    with the rest, `saved_*`), and measurably not replica 0's own."""
    from bnparity.frameworks.conventions import replica_convention

    assert replica_convention("jax").saved_running == "mean"
    found = {k: d for k, d in figures["distance"].items() if k.endswith("saved-vs-replica0")}
    assert len(found) == 2 * 2 * 2 * 2  # R × impl × engine × dtype
    for key, d in found.items():
        assert d > DIFFER, (key, d)


def test_shard_map_and_pmap_agree(figures):
    """The two engines compute the same thing (to float64 rounding; float32 to its own)."""
    assert figures["engines"]
    for key, d in figures["engines"].items():
        assert d < RTOL[key.rsplit("-", 1)[1]], (key, d)


def test_each_configuration_compiles_once(figures):
    traces = figures["traces"]
    assert traces["after"] == traces["before"] == traces["configurations"]
    assert traces["max_per_configuration"] == 1


def test_too_few_devices_raise_one_line_naming_xla_flags(figures):
    message = figures["too_few_devices"]
    assert message is not None
    assert "\n" not in message and f"XLA_FLAGS=--xla_force_host_platform_device_count={2 * DEVICES}" in message


def test_realize_and_dtypes():
    """The builtin realizes Flax's biased running variance (the rest of the spec is kept: momentum, ε and
    use_fast_variance are configured); the scratch layer follows the spec; only float32 and float64 run."""
    pytest.importorskip("flax")
    from bnparity.frameworks.base import Unsupported
    from bnparity.frameworks.jax.replicas import BuiltinSyncBatchNorm, ScratchSyncBatchNorm
    from bnparity.reference.spec import BNSpec

    spec = BNSpec(axis=3, momentum=0.125, variance="fast")
    assert BuiltinSyncBatchNorm().realize(spec, np.dtype("float32")) == spec.replace(running_var="biased")
    assert ScratchSyncBatchNorm(engine="pmap").realize(spec, np.dtype("float64")) == spec
    for cls in (BuiltinSyncBatchNorm, ScratchSyncBatchNorm):
        with pytest.raises(Unsupported, match="float16"):
            cls().realize(spec, np.dtype("float16"))
    with pytest.raises(ValueError, match="engine"):
        BuiltinSyncBatchNorm(engine="pjit")


def _test_names() -> set[str]:
    tree = ast.parse(Path(__file__).read_text(encoding="utf-8"))
    return {node.name for node in tree.body if isinstance(node, ast.FunctionDef) and node.name.startswith("test_")}


def test_replica_convention_is_cited_and_proved_here():
    """Every citation of an installed file quotes the code on its line; every proof is a test of this file."""
    pytest.importorskip("flax")
    import flax

    from bnparity.frameworks.conventions import replica_convention

    row = replica_convention("jax")
    assert row.shard_weighting == "equal" and row.cpu == "yes"
    root = Path(flax.__file__).resolve().parents[1]  # site-packages
    for field, citation in row.citations.items():
        for cited in citation.split("; "):  # "path:LINE: `the code on that line` what it means"
            path, line, what = cited.split(":", 2)
            if not (root / path).exists():  # the flax repository's examples (not installed)
                assert path.startswith("examples/"), cited
                continue
            source = (root / path).read_text(encoding="utf-8").splitlines()
            code = what.split("`")[1]
            assert code in source[int(line) - 1], f"{field}: {path}:{line} is {source[int(line) - 1].strip()!r}"
    names = _test_names()
    for field, proofs in row.proofs.items():
        assert proofs, field
        for proof in proofs:
            file, name = proof.split("::")
            assert file == f"tests/{Path(__file__).name}" and name in names, proof


if __name__ == "__main__":
    print(json.dumps(measure()))
