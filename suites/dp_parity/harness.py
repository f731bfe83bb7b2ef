"""Data-parallel step parity: one SGD step of the AlexNet on R replicas against the same framework on one device.

For each framework, replica count R and BN mode, from the same canonical weights and global batch (the model-parity
suite's cpu configuration: the bn variant, dropout off, float32-exact SGD and BN momentum in float64):
    single device: gradients(batch) → back to the initial state → train_step(batch)
    R replicas:    the same, each replica on its shard (frameworks/training.py: DataParallelTrainer)
Compared: the loss, every parameter's gradient, every parameter's change p − p₀ after the step and the BN running
statistics, each judged against its layer's magnitude with the model-parity tolerance (rtol = u·C·D·√K,
suites/model_parity/tolerance.py). With synchronized BN (bn_sync "sync") data parallelism is only a different
order of summation, so in float64 the comparison is gated; per-replica BN ("local") normalizes each shard with its
own statistics: its difference from one device is recorded as the measured size of that choice, never gated; so is
every float32 comparison (float32 gradients are discontinuous at ReLU and max-pool ties: see model parity).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from bnparity.frameworks.base import Unsupported
from bnparity.frameworks.registry import Unavailable
from bnparity.frameworks.training import Trainer, load_data_parallel_trainer, load_trainer
from bnparity.reference.alexnet import AlexNetSpec, init_params, layer_of, running_names, trainable_names
from bnparity.suites.errors import error_line
from bnparity.suites.model_parity.harness import ParityConfig, make_data
from bnparity.suites.model_parity.tolerance import magnitude, model_rtol
from bnparity.suites.schema import DPComparison, DPNotRun, DPRecord

PRESET = "cpu"
BATCH = 16
BN_SYNC = ("sync", "local")
DTYPES = ("float64", "float32")
FORWARD_KINDS = ("loss", "running_stats")  # gated in float32 too


def _step(trainer: Trainer, x: np.ndarray, y: np.ndarray) -> tuple[dict[str, np.ndarray], float, dict, dict]:
    """(gradients, loss of the step, state before, state after) of one SGD step from the trainer's state."""
    s0 = trainer.state()
    grads = trainer.gradients(x, y).grads
    trainer.load_state(s0)  # gradients() moved the running statistics
    loss = trainer.train_step(x, y).loss
    return grads, loss, s0, trainer.state()


def _layer_scale(names: list[str], values: dict[str, np.ndarray], name: str) -> float:
    return magnitude(*(values[n] for n in names if layer_of(n) == layer_of(name)))


def compare_steps(spec: AlexNetSpec, cfg: ParityConfig, *, framework: str, replicas: int, bn_sync: str,
                  single: tuple, parallel: tuple) -> Iterator[DPComparison]:
    """The DPComparison of every quantity of the data-parallel step against the single-device one."""
    rtol = model_rtol(spec, cfg.dtype, batch=cfg.batch)
    trainable = trainable_names(spec)
    g1, l1, s0, s1 = single
    gp, lp, _, sp = parallel
    change1 = {n: s1[n] - s0[n] for n in trainable}
    changep = {n: sp[n] - s0[n] for n in trainable}
    rows: list[tuple[str, str, np.ndarray, np.ndarray, float]] = [
        ("loss", "loss", np.asarray(lp), np.asarray(l1), abs(l1))]
    rows += [("grad", n, gp[n], g1[n], _layer_scale(trainable, g1, n)) for n in trainable]
    rows += [("param", n, changep[n], change1[n], _layer_scale(trainable, change1, n)) for n in trainable]
    rows += [("running_stats", n, sp[n], s1[n], magnitude(s1[n])) for n in running_names(spec)]
    for kind, quantity, got, want, scale in rows:
        gate = bn_sync == "sync" and (cfg.dtype == "float64" or kind in FORWARD_KINDS)
        with np.errstate(invalid="ignore"):
            err = float(np.max(np.abs(np.asarray(got, dtype=np.float64) - np.asarray(want, dtype=np.float64))))
        finite = np.isfinite(err)
        rel = err / scale if scale else err
        yield DPComparison(framework=framework, preset=cfg.preset, variant=cfg.variant, dtype=cfg.dtype,
                           replicas=replicas, bn_sync=bn_sync, kind=kind, quantity=quantity, gate=gate,
                           passed=bool(finite and rel <= rtol), max_abs_err=err if finite else None, scale=scale,
                           rel_err=rel if finite else None, rtol=rtol)


def run_framework(framework: str, *, replicas: tuple[int, ...], bn_sync: tuple[str, ...] = BN_SYNC,
                  dtypes: tuple[str, ...] = DTYPES, preset: str = PRESET, batch: int = BATCH,
                  seed: int = 0) -> Iterator[DPRecord]:
    """Every replica count × BN mode × dtype of one framework: records, in that order."""
    single_cls, dp_cls = load_trainer(framework), load_data_parallel_trainer(framework)
    for dtype in dtypes:
        for r in replicas:
            for mode in bn_sync:
                gate = mode == "sync"
                missing = next((u for u in (single_cls, dp_cls) if isinstance(u, Unavailable)), None)
                if missing is not None:
                    yield DPNotRun(framework=framework, replicas=r, bn_sync=mode, dtype=dtype,
                                   gate=gate and missing.installed,
                                   status="error" if missing.installed else "skipped", reason=missing.reason)
                    continue
                cfg = ParityConfig(preset, "bn", "off", dtype, batch, seed)
                spec = cfg.spec()
                params = init_params(spec, seed=seed)
                data = make_data(spec, batch=batch, seed=seed)
                try:
                    single = _step(single_cls(arch=spec, params=params, sgd=cfg.sgd, dtype=dtype),
                                   data.xs[0], data.ys[0])
                    with dp_cls(arch=spec, params=params, sgd=cfg.sgd, replicas=r, bn_sync=mode,
                                dtype=dtype) as trainer:
                        parallel = _step(trainer, data.xs[0], data.ys[0])
                except Unsupported as e:  # a configuration the framework cannot run: a skip with its reason
                    yield DPNotRun(framework=framework, replicas=r, bn_sync=mode, dtype=dtype, gate=False,
                                   status="skipped", reason=error_line(e))
                    continue
                except Exception as e:  # noqa: BLE001 (a framework that raises is recorded; the rest still run)
                    yield DPNotRun(framework=framework, replicas=r, bn_sync=mode, dtype=dtype, gate=gate,
                                   status="error", reason=error_line(e))
                    continue
                yield from compare_steps(spec, cfg, framework=framework, replicas=r, bn_sync=mode, single=single,
                                         parallel=parallel)
