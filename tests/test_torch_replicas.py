"""PyTorch's cross-replica BatchNorm on torch.distributed (gloo, one process per replica) against the float64
reference (bnparity.reference.crossreplica).

Each adapter runs every case of one replica count in ONE `run` call (one process group): R = 2 and 4, float64 and
float32, synchronized and per-replica, equal and unequal shards (7 on R=2: (4, 3); 10 on R=4: (3, 3, 3, 1)),
inputs (N, C), (N, C, L) and (N, C, H, W), two training steps; on the unequal shards a spec whose momentum weighs the
old value and whose running variance is biased (the scratch follows it; the builtin realizes torch's unbiased one),
on the equal ones torch's conventions. Compared: y and dx
of every replica, Σ_r dγ_r and Σ_r dβ_r against the reference's dγ and dβ, every replica's running statistics,
and saved_running against running_after(..., running_stats="replica0").
"""

from __future__ import annotations

import ast
import multiprocessing
from functools import cache
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from bnparity.frameworks.base import Unsupported  # noqa: E402
from bnparity.frameworks.conventions import replica_convention  # noqa: E402
from bnparity.frameworks.replicas import ReplicaCase, ReplicaResult, ReplicaSkip, load_replica_adapter  # noqa: E402
from bnparity.frameworks.torch import replicas  # noqa: E402
from bnparity.reference import crossreplica as cr  # noqa: E402
from bnparity.reference.spec import BNSpec  # noqa: E402

TOL = {"float64": 1e-10, "float32": 5e-5}  # max |got − ref| / max |ref|, per array
GLOBAL = {2: (7, 8), 4: (10, 12)}  # global batches: unequal then equal shards
SHAPES = ((3, 2, 2), (4,), (3, 5))  # one sample: (C, H, W), (C,), (C, L)
SPEC = BNSpec(axis=1, eps=1e-3, momentum=0.25, momentum_weighs="old", running_var="biased", init_running_mean=0.5,
              init_running_var=2.0)
TORCH_LIKE = BNSpec(axis=1, eps=1e-5, momentum=0.125, init_running_mean=-0.5, init_running_var=0.5)  # new, unbiased
ON_CUDA = torch.cuda.is_available()


def _case(name: str, spec: BNSpec, sample: tuple[int, ...], n: int, replicas: int, synchronized: bool, dtype: str,
          seed: int, steps: int = 2) -> ReplicaCase:
    rng = np.random.default_rng(seed)
    c = sample[0]
    sizes = cr.shard_sizes(n, replicas)
    shift = rng.uniform(-2, 2, (1, c) + (1,) * (len(sample) - 1))  # per-channel offsets and spreads
    spread = rng.uniform(0.5, 3, (1, c) + (1,) * (len(sample) - 1))
    xs = tuple(tuple(cr.split((shift + spread * rng.standard_normal((n, *sample))).astype(dtype), sizes))
               for _ in range(steps))
    dys = tuple(tuple(cr.split(rng.standard_normal((n, *sample)).astype(dtype), sizes)) for _ in range(steps))
    return ReplicaCase(name=name, spec=spec, synchronized=synchronized, xs=xs, dys=dys,
                       gamma=rng.normal(1, 0.3, c).astype(dtype), beta=rng.normal(0, 0.3, c).astype(dtype),
                       dtype=dtype)


def cases(impl: str, replicas: int) -> list[ReplicaCase]:
    """Every case of one replica count (the specs realized by the adapter)."""
    adapter = load_replica_adapter("torch", impl)
    out = []
    for dtype in ("float64", "float32"):
        for synchronized in (True, False):
            for n, base in zip(GLOBAL[replicas], (SPEC, TORCH_LIKE), strict=True):
                spec = adapter.realize(base, np.dtype(dtype))
                for sample in SHAPES:
                    if not synchronized and sample == (4,) and min(cr.shard_sizes(n, replicas)) == 1:
                        continue  # one value per channel: torch's BatchNorm1d refuses to train on it
                    name = f"{dtype}-{'sync' if synchronized else 'local'}-N{n}-{'x'.join(map(str, sample))}"
                    out.append(_case(name, spec, sample, n, replicas, synchronized, dtype, seed=len(out)))
    return out


@cache
def results(impl: str, replicas: int) -> tuple[tuple[ReplicaCase, ReplicaResult | ReplicaSkip], ...]:
    """One run() of every case of (impl, R): one process group."""
    adapter = load_replica_adapter("torch", impl)
    todo = cases(impl, replicas)
    return tuple(zip(todo, adapter.run(todo), strict=True))


def _err(got: np.ndarray, ref: np.ndarray) -> float:
    got, ref = np.asarray(got, np.float64), np.asarray(ref, np.float64)
    assert got.shape == ref.shape, (got.shape, ref.shape)
    return float(np.max(np.abs(got - ref)) / max(float(np.max(np.abs(ref))), 1e-300))


def errors(case: ReplicaCase, result: ReplicaResult) -> dict[str, float]:
    """The worst relative error of every quantity of a case against the reference."""
    gamma, beta = np.asarray(case.gamma, np.float64), np.asarray(case.beta, np.float64)
    step = (cr.synchronized_step if case.synchronized else cr.per_replica_step)(
        case.xs[-1], case.dys[-1], gamma, beta, case.spec)
    running = ((cr.running_after(case.xs, case.spec, synchronized=True),) * case.replicas if case.synchronized
               else cr.replica_running(case.xs, case.spec))
    saved = cr.running_after(case.xs, case.spec, synchronized=case.synchronized, running_stats="replica0")
    return {
        "y": max(_err(a, b) for a, b in zip(result.ys, step.ys, strict=True)),
        "dx": max(_err(a, b) for a, b in zip(result.dxs, step.dxs, strict=True)),
        "dgamma": _err(np.sum([np.asarray(g, np.float64) for g in result.dgammas], axis=0), step.dgamma),
        "dbeta": _err(np.sum([np.asarray(g, np.float64) for g in result.dbetas], axis=0), step.dbeta),
        "running_mean": max(_err(a, m) for a, (m, _) in zip(result.running_means, running, strict=True)),
        "running_var": max(_err(a, v) for a, (_, v) in zip(result.running_vars, running, strict=True)),
        "saved_mean": _err(result.saved_running[0], saved[0]),
        "saved_var": _err(result.saved_running[1], saved[1]),
    }


def _check(pairs, *, synchronized: bool | None = None) -> int:
    """Assert every result of `pairs` (the synchronized ones, the per-replica ones, or all) within TOL; the count."""
    checked, bad = 0, []
    for case, result in pairs:
        if synchronized is not None and case.synchronized != synchronized:
            continue
        assert isinstance(result, ReplicaResult), f"{case.name}: {result}"
        assert [np.shape(y) for y in result.ys] == [np.shape(x) for x in case.xs[-1]]
        worst = errors(case, result)
        bad += [f"{case.name} {case.shard_sizes}: {k} off by {v:.2e} (allowed {TOL[case.dtype]:g})"
                for k, v in worst.items() if not v <= TOL[case.dtype]]
        checked += 1
    assert not bad, "\n".join(bad)
    return checked


@pytest.mark.parametrize("replicas", [2, 4])
def test_scratch_is_the_reference_on_every_case(replicas):
    """Synchronized: the global batch's BN (count-weighted, unequal shards too); per replica: each shard's own;
    the spec's momentum direction and biased running variance honoured."""
    pairs = results("scratch", replicas)
    assert _check(pairs) == len(pairs) >= 22


@pytest.mark.parametrize("replicas", [2, 4])
def test_scratch_weights_unequal_shards_by_count(replicas):
    """On unequal shards the scratch's y is the global batch's, and measurably not the equally weighted (1/R) BN."""
    for case, result in results("scratch", replicas):
        if not (case.synchronized and len(set(case.shard_sizes)) > 1 and case.dtype == "float64"):
            continue
        equal = cr.equal_weight_step(case.xs[-1], case.dys[-1], case.gamma, case.beta, case.spec)
        assert max(_err(a, b) for a, b in zip(result.ys, equal.ys, strict=True)) > 1e-3, case.name
        assert errors(case, result)["y"] < TOL["float64"], case.name


@pytest.mark.parametrize("replicas", [2, 4])
def test_builtin_per_replica_is_the_reference_and_saves_replica0(replicas):
    """torch.nn.BatchNorm1d/2d per rank: each replica's own statistics; saved_running is rank 0's."""
    pairs = results("builtin", replicas)
    assert _check(pairs, synchronized=False) == sum(not c.synchronized for c, _ in pairs) >= 10
    for case, result in pairs:
        if not case.synchronized:  # saved_running is rank 0's (checked above), not the mean over the replicas
            mean = cr.running_after(case.xs, case.spec, synchronized=False, running_stats="mean")
            assert _err(result.saved_running[0], mean[0]) > 1e-3, case.name


@pytest.mark.skipif(ON_CUDA, reason="with CUDA, torch.nn.SyncBatchNorm runs")
@pytest.mark.parametrize("replicas", [2, 4])
def test_builtin_synchronized_is_refused_on_cpu_with_torchs_message(replicas):
    skips = [r for c, r in results("builtin", replicas) if c.synchronized]
    assert len(skips) == 12 and all(isinstance(r, ReplicaSkip) for r in skips)  # 2 dtypes × 2 batches × 3 shapes
    for skip in skips:
        assert skip.reason.startswith("torch.nn.SyncBatchNorm on CPU: SyncBatchNorm expected input tensor to be on")
        assert "\n" not in skip.reason


@pytest.mark.skipif(not ON_CUDA, reason="needs CUDA devices: torch.nn.SyncBatchNorm refuses CPU tensors")
@pytest.mark.parametrize("replicas", [2])
def test_builtin_synchronized_is_the_reference_on_cuda(replicas):
    if torch.cuda.device_count() < replicas:
        pytest.skip(f"needs {replicas} CUDA devices")
    assert _check(results("builtin", replicas), synchronized=True) == 12


def test_realize():
    builtin, scratch = load_replica_adapter("torch", "builtin"), load_replica_adapter("torch", "scratch")
    realized = builtin.realize(SPEC, np.dtype("float32"))
    assert realized.running_var == "unbiased" and realized.new_weight == SPEC.new_weight
    assert scratch.realize(SPEC, np.dtype("float64")) == SPEC
    for adapter in (builtin, scratch):
        with pytest.raises(Unsupported, match="float16"):
            adapter.realize(SPEC, np.dtype("float16"))
        with pytest.raises(Unsupported, match="affine"):
            adapter.realize(SPEC.replace(affine=False), np.dtype("float64"))


def test_scratch_backward_is_autograds_on_one_replica():
    """The written-out backward (the all-reduce form, one replica) against autograd's of the same forward formulas."""
    rng = np.random.default_rng(3)
    x = torch.tensor(rng.normal(1, 2, (5, 3, 4)), requires_grad=True)
    w = torch.tensor(rng.normal(1, 0.3, 3), requires_grad=True)
    b = torch.tensor(rng.normal(0, 0.3, 3), requires_grad=True)
    layer = replicas._CrossReplicaBatchNorm(3, 1e-3, dtype=torch.float64)

    def function(x, w, b):
        return replicas._CrossReplicaFunction.apply(x, w, b, layer.running_mean, layer.running_var, 1e-3, 0.1,
                                                    True, None)

    assert torch.autograd.gradcheck(function, (x, w, b), eps=1e-6, atol=1e-8)


def test_one_run_starts_one_process_group_per_replica_count_and_leaves_no_process(monkeypatch):
    """Cases of two replica counts: one process group each, the results in the cases' order; no rank survives."""
    groups = []
    run_group = replicas._run_group

    def counted(impl, group_cases, world, timeout):
        groups.append((world, len(group_cases)))
        return run_group(impl, group_cases, world, timeout)

    monkeypatch.setattr(replicas, "_run_group", counted)
    spec = SPEC
    mixed = [_case("a", spec, (3, 2, 2), 7, 2, True, "float64", seed=1),
             _case("b", spec, (3, 2, 2), 10, 4, True, "float64", seed=2),
             _case("c", spec, (4,), 8, 2, False, "float64", seed=3)]
    got = list(load_replica_adapter("torch", "scratch").run(mixed))
    assert groups == [(2, 2), (4, 1)]
    assert [[np.shape(y)[0] for y in r.ys] for r in got] == [[4, 3], [3, 3, 3, 1], [4, 4]]
    for case, result in zip(mixed, got, strict=True):
        assert max(errors(case, result).values()) < TOL["float64"], case.name
    assert multiprocessing.active_children() == []


def test_a_failing_rank_is_a_one_line_runtime_error_and_no_process_is_left():
    good = _case("good", SPEC, (3, 2, 2), 7, 2, True, "float64", seed=4)
    bad = ReplicaCase(name="bad", spec=SPEC, synchronized=True, xs=good.xs, dys=good.dys, gamma=good.gamma[:2],
                      beta=good.beta[:2], dtype="float64")  # γ of 2 channels for 3
    with pytest.raises(RuntimeError, match=r"torch replicas: rank \d failed: RuntimeError") as info:
        list(load_replica_adapter("torch", "scratch").run([good, bad]))
    assert "\n" not in str(info.value)
    assert multiprocessing.active_children() == []


def test_the_replica_convention_cites_the_installed_torch_and_its_proofs_exist():
    row = replica_convention("torch")
    assert (row.shard_weighting, row.saved_running) == ("count", "replica0") and row.cpu.startswith("no: ")
    if not ON_CUDA:  # the row quotes torch's own refusal, as the builtin adapter receives it
        reason = next(r.reason for c, r in results("builtin", 2) if c.synchronized)
        assert reason.removeprefix("torch.nn.SyncBatchNorm on CPU: ") in row.cpu
    root = Path(torch.__file__).resolve().parent.parent  # site-packages
    for field, citation in row.citations.items():
        for cited in citation.split("; "):  # "path:LINE: `the code on that line` what it means"
            path, line, what = cited.split(":", 2)
            code = what.split("`")[1]
            source = (root / path).read_text(encoding="utf-8").splitlines()
            assert code in source[int(line) - 1], f"{field}: {path}:{line} is {source[int(line) - 1].strip()!r}"
    tests = Path(__file__).resolve().parent
    for field, proofs in row.proofs.items():
        assert proofs, field
        for proof in proofs:
            file, name = proof.split("::")
            tree = ast.parse((tests.parent / file).read_text(encoding="utf-8"))
            assert name in {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}, proof
