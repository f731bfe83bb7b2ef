"""The MXNet DataParallelTrainer (one Gluon AlexNet on R CPU contexts, gluon.Trainer over a kvstore) against the
single-device Trainer.

MXNet reads its engine settings when it starts, so the measurements run once, in a subprocess that runs this file
as a script with bnparity.frameworks.replicas.replica_environment("mxnet", 4) set and a timeout (a hang fails the
tests instead of blocking them), and prints JSON; the tests assert on it. The tiny preset AlexNet, dropout off
unless said, float32-exact SGD and BN momentum (suites/model_parity/harness.py), a global batch of 8:
- bn_sync="sync", float32 (SyncBatchNorm), R = 1, 2 and 4: the gradients, logits,
  loss, the update after one step, the momentum buffers and the running statistics equal the single-device
  Trainer's on the same global batch to float32 rounding (SYNC_RTOL; measured ≤ 2e-5 of each layer's largest
  value, and already 1.4e-5 at R = 1: SyncBatchNorm's own float32 arithmetic, its variance E[x²] − μ² where
  nn.BatchNorm's is two-pass), as close to the float64 NumPy reference as the single-device float32 Trainer is;
  every context holds the same running statistics, and the saved model evaluates as the single-device one;
- bn_sync="sync", float64 (the scratch count-weighted all-reduce BatchNorm: SyncBatchNorm has no float64 kernel),
  R = 2 and 4: the gradients, logits, loss, the update after one step, the momentum buffers and the running
  statistics equal the single-device float64 Trainer's on the global batch to rounding (RTOL of each layer's
  magnitude; measured ≤ 4e-14), every context holds the same running statistics, and the saved model
  evaluates as the single-device one; it needs no engine settings (no barrier);
- bn_sync="local" with R = 1 is the single-device Trainer exactly;
- bn_sync="local", R = 2 and 4, float64: every context's running statistics are those of a single-device Trainer
  on its shard alone, the gradient is the mean of the shards' own gradients (the kvstore sum / global batch), the
  step is p − lr·(ḡ + λp) with it, the saved running statistics are the mean over the contexts, `evaluate` is the
  single-device Trainer's on the saved state, and load_state gives every context the state (1e-12 relative);
  against the global batch's BatchNorm the running statistics, gradients and update differ measurably;
- dropout: given masks are split like x (sync, against the single-device Trainer with the same masks); without
  masks each context draws its own, reproducibly after load_state;
- errors: a batch R does not divide (ValueError), a float32 "sync" run whose engine settings would hang
  (MXNET_CPU_TEMP_COPY below R) and --device gpu without a GPU (one-line RuntimeErrors).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import require

REPO = Path(__file__).resolve().parents[1]
CONTEXTS = 4  # the engine settings are those of R = 4; R = 2 runs on the first 2 contexts
BATCH = 8
RTOL = 1e-12  # float64: rounding only (the contexts' reductions are ordered differently)
SYNC_RTOL = 1e-4  # float32, sync vs the single device: rounding (measured ≤ 2e-5: the module docstring)
DIFFER = 1e-3  # per-replica BN vs the global batch's: far above either (measured ~1e-1 and more)
TIMEOUT = 240  # seconds; the measurements take ~15 s here


def _rel(got: dict[str, np.ndarray], ref: dict[str, np.ndarray], names, base: dict[str, np.ndarray] | None = None):
    """max over `names` of max |got − ref| / (largest |ref − base| over the arrays of the name's layer; base: 0).

    Per layer, as the model-parity suite scales: a bias that feeds a BatchNorm has the exact gradient 0, and its
    computed one is rounding noise, meaningless as its own scale."""
    from bnparity.reference.alexnet import layer_of

    def value(d: dict[str, np.ndarray], n: str) -> np.ndarray:
        a = np.asarray(d[n], np.float64)
        return a - np.asarray(base[n], np.float64) if base is not None else a

    worst = 0.0
    for n in names:
        scale = max(float(np.max(np.abs(value(ref, m)))) for m in names if layer_of(m) == layer_of(n))
        worst = max(worst, float(np.max(np.abs(value(got, n) - value(ref, n)))) / max(scale, 1e-300))
    return worst


def _rel_array(got: np.ndarray, ref: np.ndarray) -> float:
    return _rel({"a": got}, {"a": ref}, ["a"])


def measure() -> dict[str, object]:
    """The figures the tests assert on (run with the engine settings of CONTEXTS contexts)."""
    import dataclasses

    from bnparity.frameworks.mxnet.data_parallel import DataParallelTrainer
    from bnparity.frameworks.mxnet.train import Trainer
    from bnparity.reference import alexnet_numpy as anp
    from bnparity.reference.alexnet import init_params, momentum_key, running_names, trainable_names, variant_spec
    from bnparity.suites.model_parity.harness import BN_MOMENTUM, SGD

    base = variant_spec("tiny", "bn")
    base = dataclasses.replace(base, bn=base.bn.replace(momentum=BN_MOMENTUM["float64"]))
    spec = base.with_dropout(0.0)
    params = init_params(spec, seed=0)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((BATCH, *spec.input_shape)).astype(np.float32)
    y = rng.integers(0, spec.num_classes, size=BATCH).astype(np.int64)
    sgd = SGD["float64"]
    trainable, running = list(trainable_names(spec)), list(running_names(spec))
    moms = [momentum_key(n) for n in trainable]
    out: dict[str, object] = {}

    def single_run(dtype: str, masks=None) -> dict[str, object]:
        single = Trainer(arch=spec if masks is None else base, params=params, sgd=sgd, dtype=dtype)
        s0 = single.state()
        g = single.gradients(x, y, dropout_masks=masks)
        single.load_state(s0)
        loss = single.train_step(x, y, dropout_masks=masks).loss
        return {"trainer": single, "s0": s0, "g": g, "loss": loss, "s1": single.state()}

    # --- sync, float32, against the single-device step on the global batch ---
    ref = single_run("float32")
    exact = anp.gradients(spec, params, x.astype(np.float64), y)  # the float64 NumPy reference
    out["single_float32_vs_reference"] = {"grads": _rel(ref["g"].grads, exact.grads, trainable),
                                          "logits": _rel_array(ref["g"].logits, exact.logits)}
    for r in (1, 2, 4):  # R = 1: SyncBatchNorm on one context, the operator's own rounding without data parallelism
        for mode in ("sync", "local"):
            with DataParallelTrainer(arch=spec, params=params, sgd=sgd, replicas=r, bn_sync=mode,
                                     dtype="float32") as dp:
                g = dp.gradients(x, y)
                dp.load_state(ref["s0"])
                loss = dp.train_step(x, y).loss
                s1 = dp.state()
                after = dp.replica_running()
                eval_dp = dp.evaluate(x, y)
            ref["trainer"].load_state(s1)
            eval_single = ref["trainer"].evaluate(x, y)
            out[f"{mode}{r}_float32"] = {
                "grads": _rel(g.grads, ref["g"].grads, trainable),
                "logits": _rel_array(g.logits, ref["g"].logits),
                "grads_vs_reference": _rel(g.grads, exact.grads, trainable),
                "logits_vs_reference": _rel_array(g.logits, exact.logits),
                "gradients_loss": abs(g.loss - ref["g"].loss) / abs(ref["g"].loss),
                "loss": abs(loss - ref["loss"]) / abs(ref["loss"]),
                "update": _rel(s1, ref["s1"], trainable, base=ref["s0"]),
                "momentum": _rel(s1, ref["s1"], moms),
                "running": _rel(s1, ref["s1"], running),
                "device_spread": max(_rel(d, after[0], running) for d in after),
                "evaluate_vs_single_on_saved": abs(eval_dp[0] - eval_single[0]) / abs(eval_single[0]),
            }

    # --- local, float64: each context a BatchNorm of its shard; the kvstore mean of the shards' gradients ---
    ref64 = single_run("float64")
    single = ref64["trainer"]
    lr, wd = sgd.lr, sgd.weight_decay  # the first step from zero momentum: μ plays no part yet
    for r in (2, 4):
        alone = []
        for idx in np.split(np.arange(BATCH), r):
            single.load_state(ref64["s0"])
            alone.append((single.gradients(x[idx], y[idx]), single.state()))
        mean_grad = {n: np.mean([a[0].grads[n] for a in alone], axis=0) for n in trainable}
        # One SGD step from zero momentum, PyTorch's formulation: v = g + λp, p ← p − lr·v.
        v1 = {momentum_key(n): mean_grad[n] + wd * params[n] for n in trainable}
        p1 = {n: params[n] - lr * v1[momentum_key(n)] for n in trainable}
        with DataParallelTrainer(arch=spec, params=params, sgd=sgd, replicas=r, bn_sync="local",
                                 dtype="float64") as dp:
            g = dp.gradients(x, y)
            per_device = dp.replica_running()
            dp.load_state(ref64["s0"])
            loss = dp.train_step(x, y).loss
            s1 = dp.state()
            after = dp.replica_running()
            eval_dp = dp.evaluate(x, y)
            dp.load_state(ref64["s0"])  # every context gets the state: the step again is the same step
            restored = dp.replica_running()
            again = dp.train_step(x, y).loss
            s1_again = dp.state()
        single.load_state(s1)
        eval_single = single.evaluate(x, y)
        out[f"local{r}_float64"] = {
            "device_vs_shard_alone": max(_rel(d, a[1], running) for d, a in zip(per_device, alone, strict=True)),
            "grads_vs_mean_of_shards": _rel(g.grads, mean_grad, trainable),
            "loss_vs_mean_of_shards": abs(loss - np.mean([a[0].loss for a in alone])) / abs(loss),
            "update_vs_sgd_of_mean": _rel(s1, p1, trainable, base=params),
            "momentum_vs_sgd_of_mean": _rel(s1, v1, moms),
            "saved_is_mean": _rel(s1, {n: np.mean([d[n] for d in after], axis=0) for n in running}, running),
            "evaluate_vs_single_on_saved": abs(eval_dp[0] - eval_single[0]) / abs(eval_single[0]),
            "resume": max(abs(again - loss), _rel(s1_again, s1, trainable + moms + running)),
            "restored_vs_state": max(_rel(d, ref64["s0"], running) for d in restored),
            "device_spread": max(_rel(d, after[0], running) for d in after),
            # against the global batch's BatchNorm (the single-device step)
            "running": _rel(s1, ref64["s1"], running),
            "grads": _rel(g.grads, ref64["g"].grads, trainable),
            "update": _rel(s1, ref64["s1"], trainable, base=ref64["s0"]),
        }

    # --- sync, float64: the scratch BatchNorm, against the single-device step on the global batch ---
    for r in (2, 4):
        with DataParallelTrainer(arch=spec, params=params, sgd=sgd, replicas=r, bn_sync="sync",
                                 dtype="float64") as dp:
            g = dp.gradients(x, y)
            per_device = dp.replica_running()
            dp.load_state(ref64["s0"])
            loss = dp.train_step(x, y).loss
            s1 = dp.state()
            after = dp.replica_running()
            eval_dp = dp.evaluate(x, y)
        single.load_state(s1)
        eval_single = single.evaluate(x, y)
        out[f"sync{r}_float64"] = {
            "grads": _rel(g.grads, ref64["g"].grads, trainable),
            "logits": _rel_array(g.logits, ref64["g"].logits),
            "gradients_loss": abs(g.loss - ref64["g"].loss) / abs(ref64["g"].loss),
            # `gradients` moves the running statistics as a step does (ref64["s1"]: one training pass from s0)
            "gradients_running": _rel(per_device[0], ref64["s1"], running),
            "loss": abs(loss - ref64["loss"]) / abs(ref64["loss"]),
            "update": _rel(s1, ref64["s1"], trainable, base=ref64["s0"]),
            "momentum": _rel(s1, ref64["s1"], moms),
            "running": _rel(s1, ref64["s1"], running),
            "device_spread": max(max(_rel(d, after[0], running) for d in after),
                                 max(_rel(d, per_device[0], running) for d in per_device)),
            "evaluate_vs_single_on_saved": abs(eval_dp[0] - eval_single[0]) / abs(eval_single[0]),
        }

    # --- dropout ---
    masks = anp.dropout_masks(base, batch=BATCH, rng=rng)
    ref_d = single_run("float32", masks=masks)
    with DataParallelTrainer(arch=base, params=params, sgd=sgd, replicas=2, bn_sync="sync", dtype="float32") as dp:
        g = dp.gradients(x, y, dropout_masks=masks)
        out["masks_sync2"] = {"grads": _rel(g.grads, ref_d["g"].grads, trainable),
                              "logits": _rel_array(g.logits, ref_d["g"].logits)}
        start = dp.state()
        twice = np.concatenate([x[:4], x[:4]])  # both contexts see the same shard: only their masks differ
        logits = dp.gradients(twice, np.concatenate([y[:4], y[:4]])).logits
        out["own_masks_halves_differ"] = float(np.max(np.abs(logits[:4] - logits[4:])))
        first = dp.train_step(x, y).loss
        dp.load_state(start)
        dp.gradients(twice, np.concatenate([y[:4], y[:4]]))
        out["own_masks_reproducible"] = abs(dp.train_step(x, y).loss - first)

    # --- errors ---
    errors: dict[str, str] = {}
    with DataParallelTrainer(arch=spec, params=params, sgd=sgd, replicas=3, bn_sync="local") as dp:
        try:
            dp.train_step(x, y)
        except ValueError as e:
            errors["batch"] = str(e)
        dp.close()  # idempotent
    os.environ["MXNET_CPU_TEMP_COPY"] = "2"  # only the constructor's check reads it now (MXNet has started)
    try:
        DataParallelTrainer(arch=spec, params=params, sgd=sgd, replicas=4, bn_sync="sync")
    except RuntimeError as e:
        errors["temp_copy"] = str(e)
    try:  # the float64 scratch BatchNorm has no barrier: nothing to refuse
        DataParallelTrainer(arch=spec, params=params, sgd=sgd, replicas=4, bn_sync="sync", dtype="float64").close()
        errors["temp_copy_float64"] = ""
    except RuntimeError as e:
        errors["temp_copy_float64"] = str(e)
    finally:
        del os.environ["MXNET_CPU_TEMP_COPY"]
    from bnparity.frameworks.mxnet._mx import mx

    out["gpus"] = mx.context.num_gpus()
    try:
        DataParallelTrainer(arch=spec, params=params, sgd=sgd, replicas=2, bn_sync="sync", device="gpu")
    except RuntimeError as e:
        errors["gpu"] = str(e)
    out["errors"] = errors
    return out


@pytest.fixture(scope="module")
def figures() -> dict[str, object]:
    require("mxnet")  # found, not imported: mxnet 1.9.1 imports only after frameworks/mxnet/_mx.py's NumPy shim
    from bnparity.frameworks.replicas import replica_environment

    env = {**os.environ, **replica_environment("mxnet", CONTEXTS)}
    try:
        result = subprocess.run([sys.executable, __file__], cwd=REPO, env=env, capture_output=True, text=True,
                                timeout=TIMEOUT, check=False)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the MXNet data-parallel measurements did not finish in {TIMEOUT} s (an engine hang?)")
    assert result.returncode == 0, result.stderr[-4000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("replicas", [1, 2, 4])
def test_sync_step_equals_the_single_device_step(figures, replicas):
    rec = figures[f"sync{replicas}_float32"]
    for kind in ("grads", "logits", "gradients_loss", "loss", "update", "momentum", "running",
                 "evaluate_vs_single_on_saved"):
        assert rec[kind] < SYNC_RTOL, (kind, rec[kind])
    assert rec["device_spread"] == 0.0  # synchronized statistics: every context holds the same
    # As close to the float64 NumPy reference as the single-device float32 Trainer is: rounding, not an error.
    single = figures["single_float32_vs_reference"]
    assert rec["grads_vs_reference"] < 3 * single["grads"] and rec["logits_vs_reference"] < 3 * single["logits"]


@pytest.mark.parametrize("replicas", [2, 4])
def test_float64_sync_step_equals_the_single_device_step(figures, replicas):
    rec = figures[f"sync{replicas}_float64"]
    for kind in ("grads", "logits", "gradients_loss", "gradients_running", "loss", "update", "momentum", "running",
                 "evaluate_vs_single_on_saved"):
        assert rec[kind] < RTOL, (kind, rec[kind])
    assert rec["device_spread"] == 0.0  # the global batch's statistics, copied to every context: the same arrays


def test_one_local_context_is_the_single_device_trainer(figures):
    rec = figures["local1_float32"]
    for kind in ("grads", "logits", "loss", "update", "momentum", "running", "evaluate_vs_single_on_saved"):
        assert rec[kind] == 0.0, (kind, rec[kind])


@pytest.mark.parametrize("replicas", [2, 4])
def test_local_bn_is_per_context_and_differs_from_sync(figures, replicas):
    rec = figures[f"local{replicas}_float64"]
    for kind in ("device_vs_shard_alone", "grads_vs_mean_of_shards", "loss_vs_mean_of_shards",
                 "update_vs_sgd_of_mean", "momentum_vs_sgd_of_mean", "saved_is_mean", "evaluate_vs_single_on_saved",
                 "resume", "restored_vs_state"):
        assert rec[kind] < RTOL, (kind, rec[kind])
    assert rec["device_spread"] > DIFFER  # the contexts' copies diverged
    for kind in ("running", "grads", "update"):
        assert rec[kind] > DIFFER, (kind, rec[kind])
    rec32 = figures[f"local{replicas}_float32"]
    for kind in ("running", "grads", "update"):  # the same difference in float32, far above SYNC_RTOL
        assert rec32[kind] > DIFFER, (kind, rec32[kind])


def test_dropout_masks_are_split_and_drawn_per_context(figures):
    assert figures["masks_sync2"]["grads"] < SYNC_RTOL and figures["masks_sync2"]["logits"] < SYNC_RTOL
    assert figures["own_masks_halves_differ"] > DIFFER
    assert figures["own_masks_reproducible"] == 0.0


def test_errors(figures):
    errors = figures["errors"]
    assert "does not split" in errors["batch"]
    assert errors["temp_copy"] == ("mxnet: SyncBatchNorm on 4 CPU contexts hangs with MXNET_CPU_TEMP_COPY=2; start "
                                   "Python with MXNET_CPU_TEMP_COPY=4 (read when MXNet starts)")
    assert errors["temp_copy_float64"] == ""
    if figures["gpus"] == 0:
        assert errors["gpu"] == "--device gpu: MXNet sees no GPU here (mx.context.num_gpus() is 0)"


if __name__ == "__main__":
    print(json.dumps(measure()))
