"""The cross-replica harness: every case through one framework's replica adapters, compared with the reference.

Each implementation is compared with the reference it claims to compute (gated):
- a synchronized case with the global batch's BatchNorm ("global-batch", reference.crossreplica.synchronized_step),
  unless the framework's ReplicaConvention says its synchronized layer weights the shards equally and the shards
  differ: then with "equal-weight" (equal_weight_step), and with "global-batch" as a finding (never gated): the
  measured size of that convention. bnparity's scratch all-reduces are count-weighted: always "global-batch".
- a per-replica case with "per-replica" (per_replica_step): each shard its own BatchNorm.
Compared: y and dx of every replica (concatenated in replica order), dγ and dβ summed over the replicas (what data
parallelism all-reduces), each replica's running mean and variance, and the running statistics the framework's way
of saving the model holds (ReplicaConvention.saved_running). The tolerance is the layer-parity suite's.

This module runs inside the worker process of one framework (suites/sync_parity/worker.py), so that the engine's
environment is set before the framework starts; its records go back to the command as JSON lines.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from bnparity.frameworks.base import Unsupported
from bnparity.frameworks.conventions import ReplicaConvention, replica_convention
from bnparity.frameworks.registry import Unavailable
from bnparity.frameworks.replicas import ReplicaAdapter, ReplicaCase, ReplicaResult, ReplicaSkip, load_replica_adapter
from bnparity.reference import batchnorm
from bnparity.reference import crossreplica as cr
from bnparity.reference.layout import channel_axis
from bnparity.reference.spec import BNSpec
from bnparity.reference.steps import LayerInputs
from bnparity.suites.errors import error_line
from bnparity.suites.parity.compare import compare
from bnparity.suites.parity.tolerance import scale_of, tolerance
from bnparity.suites.schema import SyncComparison, SyncRecord, SyncSkip

from .cases import Steps, SyncCase


@dataclass(frozen=True)
class Expected:
    """What one reference says the replicas compute in one case (the case's layout)."""

    reference: str  # a SyncReference
    step: cr.ReplicaStep  # the last step
    running: tuple[tuple[np.ndarray, np.ndarray], ...]  # every replica's
    saved: tuple[np.ndarray, np.ndarray]
    kappa: float
    scales: dict[str, float]


def _scales(spec: BNSpec, xs: Sequence[np.ndarray], dys: Sequence[np.ndarray], gamma: np.ndarray,
            beta: np.ndarray, *, synchronized: bool) -> dict[str, float]:
    """The magnitudes the sums are judged against (reference.batchnorm.error_scales): of the global batch when the
    statistics are synchronized; per replica otherwise, the summed dγ and dβ adding the replicas' terms."""
    def of(x: np.ndarray, dy: np.ndarray) -> dict[str, float]:
        return batchnorm.error_scales(spec, LayerInputs(xs=(x,), dys=(dy,), x_eval=x, gamma=gamma, beta=beta))

    if synchronized:
        return of(np.concatenate(xs), np.concatenate(dys))
    each = [of(x, dy) for x, dy in zip(xs, dys, strict=True)]
    return {"dx": max(s["dx"] for s in each), "dgamma": sum(s["dgamma"] for s in each),
            "dbeta": sum(s["dbeta"] for s in each)}


def expected(case: SyncCase, spec: BNSpec, xs: Steps, dys: Steps, gamma: np.ndarray, beta: np.ndarray, *,
             reference: str, saved_running: str) -> Expected:
    """The reference `reference` ("global-batch", "equal-weight" or "per-replica") of a case with the realized spec."""
    last_x, last_dy = xs[-1], dys[-1]
    if reference == "per-replica":
        step = cr.per_replica_step(last_x, last_dy, gamma, beta, spec)
        running = cr.replica_running(xs, spec)
        saved = cr.running_after(xs, spec, synchronized=False, running_stats=saved_running)
        kappa = batchnorm.condition_factor(spec, [x for shards in xs for x in shards])
    else:
        weighting = "equal" if reference == "equal-weight" else "count"
        step = (cr.equal_weight_step if weighting == "equal" else cr.synchronized_step)(last_x, last_dy, gamma, beta,
                                                                                        spec)
        saved = cr.running_after(xs, spec, synchronized=True, weighting=weighting)
        running = tuple(saved for _ in range(case.replicas))
        kappa = batchnorm.condition_factor(spec, [np.concatenate(shards) for shards in xs])
    scales = _scales(spec, last_x, last_dy, gamma, beta, synchronized=reference != "per-replica")
    return Expected(reference=reference, step=step, running=running, saved=saved, kappa=kappa, scales=scales)


def references(case: SyncCase, convention: ReplicaConvention, impl: str) -> list[tuple[str, bool]]:
    """(reference, gated) pairs an implementation's result on `case` is compared with (module docstring)."""
    if not case.synchronized:
        return [("per-replica", True)]
    equal = impl == "builtin" and convention.shard_weighting == "equal" and len(set(case.sizes)) > 1
    return [("equal-weight", True), ("global-batch", False)] if equal else [("global-batch", True)]


def _compare(case: SyncCase, got: ReplicaResult, want: Expected, spec: BNSpec,
             context: dict[str, Any]) -> Iterator[SyncComparison]:
    pairs: list[tuple[str, int | None, np.ndarray, np.ndarray]] = [
        ("y", None, np.concatenate(got.ys), np.concatenate(want.step.ys)),
        ("dx", None, np.concatenate(got.dxs), np.concatenate(want.step.dxs)),
        ("dgamma", None, np.sum(got.dgammas, axis=0), want.step.dgamma),
        ("dbeta", None, np.sum(got.dbetas, axis=0), want.step.dbeta),
    ]
    for r in range(case.replicas):
        pairs.append(("running_mean", r, got.running_means[r], want.running[r][0]))
        pairs.append(("running_var", r, got.running_vars[r], want.running[r][1]))
    pairs.append(("saved_running_mean", None, got.saved_running[0], want.saved[0]))
    pairs.append(("saved_running_var", None, got.saved_running[1], want.saved[1]))
    for quantity, replica, g, w in pairs:
        scale = scale_of(quantity, w, want.scales)
        result = compare(quantity, g, w, tolerance(case.dtype, want.kappa, scale, variance=spec.variance))
        yield SyncComparison(
            **context, quantity=quantity, replica=replica, passed=result.passed,
            max_abs_err=_finite(result.max_abs_err), max_rel_err=_finite(result.max_rel_err),
            worst_index=result.worst_index, n_mismatched=result.n_mismatched, n_total=result.n_total,
            atol=result.atol, rtol=result.rtol, scale=scale, worst_ratio=_finite(result.worst_ratio),
            problem=result.problem)


def _finite(v: float) -> float | None:
    return float(v) if np.isfinite(v) else None


def _native(a: np.ndarray, axis: int, native: int) -> np.ndarray:
    return np.ascontiguousarray(np.moveaxis(a, channel_axis(a.ndim, axis), channel_axis(a.ndim, native)))


def _from_native(a: np.ndarray, axis: int, native: int) -> np.ndarray:
    return np.moveaxis(np.asarray(a), channel_axis(a.ndim, native), channel_axis(a.ndim, axis))


def run_adapter(adapter: ReplicaAdapter, variant: str, cases: Sequence[SyncCase],
                convention: ReplicaConvention | None = None) -> Iterator[SyncRecord]:
    """Every case through one adapter (one engine start for the list): records, case by case, in order. The
    framework's ReplicaConvention (what its synchronized layer and its saved model do) is the registry's unless
    given."""
    convention = convention or replica_convention(adapter.framework)
    prepared: list[tuple[SyncCase, ReplicaCase, BNSpec, Any]] = []
    base = {"framework": adapter.framework, "impl": adapter.impl, "variant": variant}
    for case in cases:
        ndim = len(case.shape)
        native = channel_axis(ndim, adapter.native_axis)
        inputs = case.inputs()
        xs, dys = case.shards(inputs)
        dtype = np.dtype(case.dtype)
        try:
            realized = adapter.realize(case.spec.at_axis(native, ndim), dtype)
        except Unsupported as e:  # a configuration the framework cannot run: a skip with its reason
            yield SyncSkip(case=case.name, **base, replicas=case.replicas, gate=False, status="skipped",
                           reason=error_line(e), dtype=case.dtype)
            continue
        except Exception as e:  # noqa: BLE001 (anything else is the adapter's failure, recorded against the gate)
            yield SyncSkip(case=case.name, **base, replicas=case.replicas, gate=True, status="error",
                           reason=error_line(e), dtype=case.dtype)
            continue
        spec = realized.at_axis(case.axis, ndim)
        replica_case = ReplicaCase(
            name=case.name, spec=realized, synchronized=case.synchronized,
            xs=tuple(tuple(_native(x, case.axis, native) for x in shards) for shards in xs),
            dys=tuple(tuple(_native(d, case.axis, native) for d in shards) for shards in dys),
            gamma=inputs.gamma.astype(dtype), beta=inputs.beta.astype(dtype), dtype=case.dtype)
        prepared.append((case, replica_case, spec, (xs, dys, inputs.gamma, inputs.beta)))
    results = adapter.run([p[1] for p in prepared])
    for index, (case, _, spec, data) in enumerate(prepared):
        try:
            got = next(results)
        except StopIteration:
            got = RuntimeError(f"{adapter.framework}/{adapter.impl} returned no result for this case")
        except Exception as e:  # noqa: BLE001 (the engine failed: this case and the rest are errors)
            reason = error_line(e)
            for later, *_ in prepared[index:]:
                yield SyncSkip(case=later.name, **base, replicas=later.replicas, gate=True, status="error",
                               reason=reason, dtype=later.dtype)
            return
        if isinstance(got, BaseException):
            yield SyncSkip(case=case.name, **base, replicas=case.replicas, gate=True, status="error",
                           reason=error_line(got), dtype=case.dtype)
            continue
        if isinstance(got, ReplicaSkip):
            yield SyncSkip(case=case.name, **base, replicas=case.replicas, gate=False, status="skipped",
                           reason=got.reason, dtype=case.dtype)
            continue
        native = adapter.native_axis
        got = ReplicaResult(ys=tuple(_from_native(y, case.axis, native) for y in got.ys),
                            dxs=tuple(_from_native(d, case.axis, native) for d in got.dxs),
                            dgammas=got.dgammas, dbetas=got.dbetas, running_means=got.running_means,
                            running_vars=got.running_vars, saved_running=got.saved_running)
        xs, dys, gamma, beta = data
        for reference, gate in references(case, convention, adapter.impl):
            want = expected(case, spec, xs, dys, gamma, beta, reference=reference,
                            saved_running=convention.saved_running)
            context = {**base, "case": case.name, "replicas": case.replicas, "shard_sizes": case.sizes,
                       "synchronized": case.synchronized, "dtype": case.dtype, "layout": case.layout,
                       "reference": reference, "gate": gate}
            yield from _compare(case, got, want, spec, context)


def run_framework(framework: str, cases: Sequence[SyncCase], impls: Sequence[str]) -> Iterator[SyncRecord]:
    """Every implementation and variant of `framework` on `cases` (one replica count), in order."""
    replicas = cases[0].replicas if cases else 0
    for impl in impls:
        first = load_replica_adapter(framework, impl)
        if isinstance(first, Unavailable):
            yield SyncSkip(case=None, framework=framework, impl=impl, variant="default", replicas=replicas,
                           gate=first.installed, status="error" if first.installed else "skipped",
                           reason=first.reason)
            continue
        for variant in type(first).variants:
            adapter = first if variant == next(iter(type(first).variants)) else load_replica_adapter(
                framework, impl, variant)
            yield from run_adapter(adapter, variant, cases)
