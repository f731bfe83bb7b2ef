"""The Keras DataParallelTrainer (frameworks/keras/data_parallel.py) against the single-device Trainer, on the backend
this process runs (TensorFlow: MirroredStrategy; JAX: keras.distribution.DataParallel; torch: none).

The engines fix their device count when the backend starts, and this pytest process may have started it already:
the measurements run once, in a subprocess that runs this file as a script with 4 devices, and print JSON; the tests
assert on it. The tiny preset AlexNet with dropout off, a global batch of 8, float32-exact SGD and BN momentum, in
float64 on TensorFlow and float32 on JAX (its BatchNormalization computes float32 whatever the dtype):
- bn_sync="sync", R = 2 and 4: the gradients, the loss, the parameters after one step, the momentum buffers and
  the running statistics equal the single-device Trainer's on the same global batch (to rounding);
- bn_sync="local": every replica's running statistics are those of a single-device Trainer on its shard alone, the
  gradient is the mean of the shards' own gradients, and the saved model holds replica 0's statistics;
- state() and load_state() resume exactly; evaluate() is the saved model's; given dropout masks are sharded like x;
- too few devices: a one-line RuntimeError naming the setting; a batch R does not divide: ValueError;
  keras-torch: Unsupported.
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

NAME = f"keras-{os.environ.get('KERAS_BACKEND', 'tensorflow')}"
REPO = Path(__file__).resolve().parents[1]
DEVICES = 4
BATCH = 8
DTYPE = {"tensorflow": "float64", "jax": "float32"}
RTOL = {"float64": 1e-12, "float32": 5e-4}  # sync vs one device: rounding only
DIFFER = 1e-3  # local vs the global batch: far above rounding (measured ~1e-2 and more)


def _backend() -> str:
    return NAME.split("-", 1)[1]


def _rel(got: dict[str, np.ndarray], ref: dict[str, np.ndarray], names: list[str],
         base: dict[str, np.ndarray] | None = None) -> float:
    """max over `names` of max |got − ref| / the layer's largest |ref − base| (as tests/test_jax_data_parallel.py)."""
    def delta(d: dict[str, np.ndarray], n: str) -> np.ndarray:
        return np.asarray(d[n], np.float64) - (0.0 if base is None else np.asarray(base[n], np.float64))

    scale: dict[str, float] = {}
    for n in names:
        layer = n.split(".")[-2]
        scale[layer] = max(scale.get(layer, 0.0), float(np.max(np.abs(delta(ref, n)))))
    return max(float(np.max(np.abs(delta(got, n) - delta(ref, n)))) / max(scale[n.split(".")[-2]], 1e-300)
               for n in names)


def measure() -> dict[str, object]:
    """The figures the tests assert on (run with DEVICES devices of the backend)."""
    import dataclasses

    from bnparity.frameworks.keras._backend import BACKEND
    from bnparity.frameworks.keras.data_parallel import DataParallelTrainer
    from bnparity.frameworks.keras.train import Trainer
    from bnparity.reference import alexnet_numpy as anp
    from bnparity.reference.alexnet import init_params, momentum_key, running_names, trainable_names, variant_spec
    from bnparity.suites.model_parity.harness import BN_MOMENTUM, SGD

    dtype = DTYPE[BACKEND]
    base = variant_spec("tiny", "bn")
    base = dataclasses.replace(base, bn=base.bn.replace(momentum=BN_MOMENTUM[dtype]))
    spec = base.with_dropout(0.0)
    params = init_params(spec, seed=0)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((BATCH, *spec.input_shape)).astype(np.float32)
    y = rng.integers(0, spec.num_classes, size=BATCH).astype(np.int64)
    sgd = SGD[dtype]
    trainable, running = trainable_names(spec), running_names(spec)
    out: dict[str, object] = {"dtype": dtype}

    single = Trainer(arch=spec, params=params, sgd=sgd, dtype=dtype)
    s0 = single.state()
    g_ref = single.gradients(x, y)
    single.load_state(s0)
    loss_ref = single.train_step(x, y).loss
    s1_ref = single.state()
    eval_ref = single.evaluate(x, y)[0]

    for r in (2, 4):
        alone = []  # each shard alone on one device: its running statistics and its own gradient
        for idx in np.split(np.arange(BATCH), r):
            single.load_state(s0)
            alone.append((single.gradients(x[idx], y[idx]), single.state()))
        for mode in ("sync", "local"):
            with DataParallelTrainer(arch=spec, params=params, sgd=sgd, replicas=r, bn_sync=mode, dtype=dtype) as dp:
                g = dp.gradients(x, y)
                per_replica = dp.replica_running()
                dp.load_state(s0)
                loss = dp.train_step(x, y).loss
                s1 = dp.state()
                after = dp.replica_running()
                eval_loss = dp.evaluate(x, y)[0]
                dp.train_step(x[::-1], y[::-1])
                s2 = dp.state()
                dp.load_state(s1)  # resume: every replica gets the saved state
                dp.train_step(x[::-1], y[::-1])
                resumed = dp.state()
            out[f"{mode}{r}"] = {
                "grads": _rel(g.grads, g_ref.grads, trainable),
                "logits": _rel({"out.logits": g.logits}, {"out.logits": g_ref.logits}, ["out.logits"]),
                "loss": abs(loss - loss_ref) / abs(loss_ref),
                "params": _rel(s1, s1_ref, trainable),
                "update": _rel(s1, s1_ref, trainable, base=s0),
                "momentum": _rel(s1, s1_ref, [momentum_key(n) for n in trainable]),
                "running": _rel(s1, s1_ref, running),
                "eval": abs(eval_loss - eval_ref) / abs(eval_ref),
                "resume": _rel(resumed, s2, [*trainable, *running]),
                "replica_vs_shard_alone": max(_rel(d, a[1], running) for d, a in zip(per_replica, alone, strict=True)),
                "replica_spread": max(_rel(d, after[0], running) for d in after),
                "saved_is_replica0": _rel(s1, after[0], running),
                "saved_vs_mean": _rel(s1, {n: np.mean([d[n] for d in after], axis=0) for n in running}, running),
                "grads_vs_mean_of_shards": _rel(g.grads, {n: np.mean([a[0].grads[n] for a in alone], axis=0)
                                                          for n in trainable}, trainable),
            }

    masks = anp.dropout_masks(base, batch=BATCH, rng=rng)  # given masks are sharded like x
    g_ref_d = Trainer(arch=base, params=params, sgd=sgd, dtype=dtype).gradients(x, y, dropout_masks=masks)
    with DataParallelTrainer(arch=base, params=params, sgd=sgd, replicas=2, bn_sync="sync", dtype=dtype) as dp:
        g = dp.gradients(x, y, dropout_masks=masks)
        out["masks2"] = {"grads": _rel(g.grads, g_ref_d.grads, trainable),
                         "logits": _rel({"out.logits": g.logits}, {"out.logits": g_ref_d.logits}, ["out.logits"])}

    errors = {}
    try:
        DataParallelTrainer(arch=spec, params=params, sgd=sgd, replicas=2 * DEVICES, bn_sync="sync", dtype=dtype)
    except RuntimeError as e:
        errors["devices"] = str(e)
    with DataParallelTrainer(arch=spec, params=params, sgd=sgd, replicas=3, bn_sync="local", dtype=dtype) as dp:
        try:
            dp.train_step(x, y)
        except ValueError as e:
            errors["batch"] = str(e)
        dp.close()  # idempotent
    out["errors"] = errors
    return out


@pytest.fixture(scope="module")
def figures() -> dict[str, object]:
    require(NAME)
    from bnparity.frameworks.replicas import replica_environment

    if _backend() not in DTYPE:
        pytest.skip(f"{NAME}: Keras has no distribution support on this backend")
    env = {**os.environ, "KERAS_BACKEND": _backend(), "TF_CPP_MIN_LOG_LEVEL": "2", "JAX_PLATFORMS": "cpu",
           **replica_environment(NAME, DEVICES, os.environ)}
    result = subprocess.run([sys.executable, __file__], cwd=REPO, env=env, capture_output=True, text=True,
                            timeout=900, check=False)
    assert result.returncode == 0, result.stderr[-4000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.slow
@pytest.mark.parametrize("replicas", [2, 4])
def test_sync_step_equals_the_single_device_step(figures, replicas):
    rec, rtol = figures[f"sync{replicas}"], RTOL[figures["dtype"]]
    for kind in ("grads", "logits", "loss", "params", "update", "momentum", "running", "eval"):
        assert rec[kind] < rtol, (kind, rec[kind])
    assert rec["replica_spread"] < rtol  # synchronized statistics: every replica holds the same
    assert rec["resume"] < rtol  # state() and load_state() resume (every replica held the saved state)


@pytest.mark.slow
@pytest.mark.parametrize("replicas", [2, 4])
def test_local_bn_is_per_replica_and_saves_replica_0s(figures, replicas):
    rec, rtol = figures[f"local{replicas}"], RTOL[figures["dtype"]]
    assert rec["replica_vs_shard_alone"] < rtol  # replica r's statistics: a BatchNorm of shard r alone
    assert rec["grads_vs_mean_of_shards"] < rtol  # the mean of the shards' own gradients
    assert rec["saved_is_replica0"] < rtol and rec["saved_vs_mean"] > DIFFER  # REPLICA_CONVENTION: replica0
    assert rec["replica_spread"] > DIFFER  # the replicas' copies diverged
    for kind in ("running", "grads", "update", "loss", "eval"):
        assert rec[kind] > DIFFER, (kind, rec[kind])


@pytest.mark.slow
def test_dropout_masks_are_sharded(figures):
    rtol = RTOL[figures["dtype"]]
    assert figures["masks2"]["grads"] < rtol and figures["masks2"]["logits"] < rtol


@pytest.mark.slow
def test_too_few_devices_and_an_indivisible_batch_raise(figures):
    message = figures["errors"]["devices"]
    setting = {"tensorflow": "BNPARITY_KERAS_TF_CPUS=8", "jax": "--xla_force_host_platform_device_count=8"}
    assert "\n" not in message and setting[_backend()] in message, message
    assert "does not split" in figures["errors"]["batch"]


def test_torch_backend_is_unsupported():
    require(NAME)
    if _backend() != "torch":
        pytest.skip("the torch backend's refusal")
    from bnparity.frameworks.base import Unsupported
    from bnparity.frameworks.keras.data_parallel import DataParallelTrainer
    from bnparity.reference.alexnet import init_params, variant_spec
    from bnparity.suites.model_parity.harness import SGD

    spec = variant_spec("tiny", "bn")
    with pytest.raises(Unsupported, match="no distribution support"):
        DataParallelTrainer(arch=spec, params=init_params(spec, seed=0), sgd=SGD["float32"], replicas=2,
                            bn_sync="sync")


if __name__ == "__main__":
    print(json.dumps(measure()))
