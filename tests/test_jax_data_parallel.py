"""The JAX DataParallelTrainer (jax.shard_map over R host devices) against the single-device Trainer.

JAX fixes its host device count when it initializes (XLA_FLAGS=--xla_force_host_platform_device_count=R), and this
pytest process may have started JAX on one device already: the measurements run once, in a subprocess that runs
this file as a script with the flag set, and print JSON; the tests assert on it. In float64, with float32-exact SGD
and BN momentum (suites/model_parity/harness.py), on the tiny preset AlexNet with dropout off and a global batch
of 8:
- bn_sync="sync", R = 2 and 4: the gradients, the loss, the parameters after one step and the running statistics
  equal the single-device Trainer's on the same global batch (1e-12 relative, where they agree to rounding);
- bn_sync="local": every device's running statistics are those of a single-device Trainer on its shard alone,
  and the gradient is the mean of the shards' own gradients; both differ measurably from the global batch's;
- state() and load_state() resume a synchronized run exactly; evaluate() is the saved model's;
- given dropout masks are sharded like x; without masks, each device draws its own;
- too few devices: a one-line RuntimeError naming XLA_FLAGS; a batch R does not divide: ValueError.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
DEVICES = 4  # the subprocess's host device count: R = 2 and R = 4 run on its first R devices
BATCH = 8
RTOL = 1e-12  # float64, sync: rounding only (the reductions are ordered differently across devices)
DIFFER = 1e-6  # local vs the global batch: far above rounding (measured ~1e-2 and more)


def _rel(got: dict[str, np.ndarray], ref: dict[str, np.ndarray], names: list[str],
         base: dict[str, np.ndarray] | None = None) -> float:
    """max over `names` of max |got − ref| / the layer's scale (base: compare got − base with ref − base).

    The scale is the largest |ref − base| over the layer's arrays among `names` (its weight and bias): a
    convolution's bias before BatchNorm has a zero gradient but for rounding, which has no scale of its own.
    """
    def delta(d: dict[str, np.ndarray], n: str) -> np.ndarray:
        return np.asarray(d[n], np.float64) - (0.0 if base is None else np.asarray(base[n], np.float64))

    def layer(n: str) -> str:
        return n.split(".")[-2]

    scale: dict[str, float] = {}
    for n in names:
        scale[layer(n)] = max(scale.get(layer(n), 0.0), float(np.max(np.abs(delta(ref, n)))))
    return max(float(np.max(np.abs(delta(got, n) - delta(ref, n)))) / max(scale[layer(n)], 1e-300) for n in names)


def measure() -> dict[str, object]:
    """The figures the tests assert on (run with DEVICES host devices)."""
    import dataclasses

    from bnparity.frameworks.jax.data_parallel import DataParallelTrainer
    from bnparity.frameworks.jax.train import Trainer
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
    trainable, running = trainable_names(spec), running_names(spec)
    out: dict[str, object] = {}

    single = Trainer(arch=spec, params=params, sgd=sgd, dtype="float64")
    s0 = single.state()
    g_ref = single.gradients(x, y)
    single.load_state(s0)
    loss_ref = single.train_step(x, y).loss
    s1_ref = single.state()
    eval_ref = single.evaluate(x, y)[0]

    for r in (2, 4):
        shards = np.split(np.arange(BATCH), r)
        # Each shard alone on one device: its running statistics (a forward pass) and its own gradient.
        alone = []
        for idx in shards:
            single.load_state(s0)
            alone.append((single.gradients(x[idx], y[idx]), single.state()))
        for mode in ("sync", "local"):
            with DataParallelTrainer(arch=spec, params=params, sgd=sgd, replicas=r, bn_sync=mode,
                                     dtype="float64") as dp:
                g = dp.gradients(x, y)
                per_device = dp.replica_running()
                dp.load_state(s0)
                loss = dp.train_step(x, y).loss
                s1 = dp.state()
                after = dp.replica_running()
                eval_loss = dp.evaluate(x, y)[0]
                dp.train_step(x[::-1], y[::-1])
                s2 = dp.state()
                dp.load_state(s1)  # resume: every device gets the saved state
                dp.train_step(x[::-1], y[::-1])
                resumed = dp.state()
            rec = {
                "grads": _rel(g.grads, g_ref.grads, trainable),
                "logits": _rel({"out.logits": g.logits}, {"out.logits": g_ref.logits}, ["out.logits"]),
                "gradients_loss": abs(g.loss - g_ref.loss) / abs(g_ref.loss),
                "loss": abs(loss - loss_ref) / abs(loss_ref),
                "params": _rel(s1, s1_ref, trainable),
                "update": _rel(s1, s1_ref, trainable, base=s0),
                "momentum": _rel(s1, s1_ref, [momentum_key(n) for n in trainable]),
                "running": _rel(s1, s1_ref, running),
                "eval": abs(eval_loss - eval_ref) / abs(eval_ref),
                "resume": _rel(resumed, s2, [*trainable, *running]),
                # every device's running statistics against the shard-alone single-device ones
                "device_vs_shard_alone": max(_rel(d, a[1], running) for d, a in zip(per_device, alone, strict=True)),
                "device_spread": max(_rel(d, after[0], running) for d in after),
                "saved_is_mean": _rel(s1, {n: np.mean([d[n] for d in after], axis=0) for n in running}, running),
                "grads_vs_mean_of_shards": _rel(g.grads, {n: np.mean([a[0].grads[n] for a in alone], axis=0)
                                                          for n in trainable}, trainable),
            }
            out[f"{mode}{r}"] = rec

    # Dropout: given masks are sharded like x (sync parity with masks), without masks each device draws its own.
    spec_d = base
    masks = anp.dropout_masks(spec_d, batch=BATCH, rng=rng)
    single_d = Trainer(arch=spec_d, params=params, sgd=sgd, dtype="float64")
    g_ref_d = single_d.gradients(x, y, dropout_masks=masks)
    with DataParallelTrainer(arch=spec_d, params=params, sgd=sgd, replicas=2, bn_sync="sync",
                             dtype="float64") as dp:
        g = dp.gradients(x, y, dropout_masks=masks)
        out["masks2"] = {"grads": _rel(g.grads, g_ref_d.grads, trainable),
                         "logits": _rel({"out.logits": g.logits}, {"out.logits": g_ref_d.logits}, ["out.logits"])}
        twice = np.concatenate([x[:4], x[:4]])  # both devices see the same shard: only their masks differ
        logits = dp.gradients(twice, np.concatenate([y[:4], y[:4]])).logits
        out["own_masks_halves_differ"] = float(np.max(np.abs(logits[:4] - logits[4:])))

    errors = {}
    try:
        DataParallelTrainer(arch=spec, params=params, sgd=sgd, replicas=2 * DEVICES, bn_sync="sync")
    except RuntimeError as e:
        errors["devices"] = str(e)
    with DataParallelTrainer(arch=spec, params=params, sgd=sgd, replicas=3, bn_sync="local") as dp:
        try:
            dp.train_step(x, y)
        except ValueError as e:
            errors["batch"] = str(e)
        dp.close()  # idempotent
    out["errors"] = errors
    return out


@pytest.fixture(scope="module")
def figures() -> dict[str, object]:
    pytest.importorskip("jax")
    pytest.importorskip("flax")
    env = {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={DEVICES}",
           "JAX_PLATFORMS": "cpu"}
    result = subprocess.run([sys.executable, __file__], cwd=REPO, env=env, capture_output=True, text=True,
                            timeout=600, check=False)
    assert result.returncode == 0, result.stderr[-4000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("replicas", [2, 4])
def test_sync_step_equals_the_single_device_step(figures, replicas):
    rec = figures[f"sync{replicas}"]
    for kind in ("grads", "logits", "gradients_loss", "loss", "params", "update", "momentum", "running", "eval"):
        assert rec[kind] < RTOL, (kind, rec[kind])
    assert rec["device_spread"] < RTOL  # synchronized statistics: every device holds the same
    assert rec["resume"] == 0.0  # state() and load_state() resume exactly (every device held the saved state)


@pytest.mark.parametrize("replicas", [2, 4])
def test_local_bn_is_per_device_and_differs_from_sync(figures, replicas):
    rec = figures[f"local{replicas}"]
    assert rec["device_vs_shard_alone"] < RTOL  # device r's statistics: a BatchNorm of shard r alone
    assert rec["grads_vs_mean_of_shards"] < RTOL  # the mean of the shards' own gradients
    assert rec["saved_is_mean"] < RTOL  # the saved running statistics: the mean over the devices
    assert rec["device_spread"] > DIFFER  # the devices' copies diverged
    for kind in ("running", "grads", "update", "loss", "eval"):
        assert rec[kind] > DIFFER, (kind, rec[kind])


def test_dropout_masks_are_sharded_and_drawn_per_device(figures):
    assert figures["masks2"]["grads"] < RTOL and figures["masks2"]["logits"] < RTOL
    assert figures["own_masks_halves_differ"] > DIFFER


def test_too_few_devices_and_an_indivisible_batch_raise(figures):
    message = figures["errors"]["devices"]
    assert "\n" not in message and f"XLA_FLAGS=--xla_force_host_platform_device_count={2 * DEVICES}" in message
    assert "does not split" in figures["errors"]["batch"]


if __name__ == "__main__":
    print(json.dumps(measure()))
