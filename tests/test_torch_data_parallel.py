"""The PyTorch DataParallelTrainer (DistributedDataParallel over gloo, one process per replica) against the
single-device Trainer, in float64 on the tiny preset AlexNet (BN momentum and SGD float32-exact as in
suites/model_parity/harness.py), a global batch of 8 and shared dropout masks:

- bn_sync="sync", R = 2 and 4: the gradients, logits, loss, the parameters after one step, the momentum buffers,
  the running statistics (every rank's) and the eval loss equal the single-device Trainer's on the global batch
  (1e-12 relative: rounding only); state() and load_state() resume exactly;
- bn_sync="local": the gradient is the mean of each shard's own single-device gradient, every rank's running
  statistics are a single-device Trainer's on its shard alone, and the saved ones are rank 0's; all of it differs
  measurably from the global batch's;
- without masks each rank draws its own dropout; a batch R does not divide is a ValueError; --device gpu without
  CUDA, a dead rank and a closed trainer are one-line RuntimeErrors; no process is left behind.
"""

from __future__ import annotations

import dataclasses
import multiprocessing
import os
import signal
import time

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from bnparity.frameworks.torch.data_parallel import DataParallelTrainer  # noqa: E402
from bnparity.frameworks.torch.train import Trainer  # noqa: E402
from bnparity.reference import alexnet_numpy as anp  # noqa: E402
from bnparity.reference.alexnet import (  # noqa: E402
    init_params,
    momentum_key,
    running_names,
    trainable_names,
    variant_spec,
)
from bnparity.suites.model_parity.harness import BN_MOMENTUM, SGD  # noqa: E402

BATCH = 8
RTOL = 1e-12  # float64, sync: rounding only (the reductions are ordered differently over the ranks)
DIFFER = 1e-6  # local vs the global batch: far above rounding


def _rel(got: dict[str, np.ndarray], ref: dict[str, np.ndarray], names: list[str],
         base: dict[str, np.ndarray] | None = None) -> float:
    """max over `names` of max |got − ref| / the layer's scale (with `base`: got − base against ref − base).

    The scale is the largest |ref − base| of the layer's arrays among `names`: a convolution's bias before
    BatchNorm has a zero gradient but for rounding, which has no scale of its own.
    """
    def delta(d: dict[str, np.ndarray], n: str) -> np.ndarray:
        return np.asarray(d[n], np.float64) - (0.0 if base is None else np.asarray(base[n], np.float64))

    def layer(n: str) -> str:
        return n.split(".")[-2]

    scale: dict[str, float] = {}
    for n in names:
        scale[layer(n)] = max(scale.get(layer(n), 0.0), float(np.max(np.abs(delta(ref, n)))))
    return max(float(np.max(np.abs(delta(got, n) - delta(ref, n)))) / max(scale[layer(n)], 1e-300) for n in names)


@pytest.fixture(scope="module")
def setup() -> dict[str, object]:
    """The network, data and the single-device Trainer's figures on the global batch."""
    base = variant_spec("tiny", "bn")
    spec = dataclasses.replace(base, bn=base.bn.replace(momentum=BN_MOMENTUM["float64"]))
    params = init_params(spec, seed=0)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((BATCH, *spec.input_shape)).astype(np.float32)
    y = rng.integers(0, spec.num_classes, size=BATCH).astype(np.int64)
    masks = anp.dropout_masks(spec, batch=BATCH, rng=rng)
    x2, y2 = x[::-1].copy(), y[::-1].copy()
    sgd = SGD["float64"]
    single = Trainer(arch=spec, params=params, sgd=sgd, dtype="float64")
    s0 = single.state()
    grads = single.gradients(x, y, dropout_masks=masks)
    after_gradients = single.state()
    single.load_state(s0)
    loss = single.train_step(x, y, dropout_masks=masks).loss
    s1 = single.state()
    return dict(spec=spec, params=params, x=x, y=y, masks=masks, x2=x2, y2=y2, sgd=sgd, single=single, s0=s0,
                grads=grads, after_gradients=after_gradients, loss=loss, s1=s1, eval=single.evaluate(x, y))


@pytest.mark.parametrize("replicas", [2, 4])
def test_sync_ddp_step_is_the_single_device_step_on_the_global_batch(setup, replicas):
    spec, x, y, masks = setup["spec"], setup["x"], setup["y"], setup["masks"]
    trainable, running = list(trainable_names(spec)), list(running_names(spec))
    with DataParallelTrainer(arch=spec, params=setup["params"], sgd=setup["sgd"], replicas=replicas,
                             bn_sync="sync", dtype="float64") as dp:
        g = dp.gradients(x, y, dropout_masks=masks)
        dp.load_state(setup["s0"])  # the single-device Trainer's state, given to every rank
        loss = dp.train_step(x, y, dropout_masks=masks).loss
        s1 = dp.state()
        per_rank = dp.replica_running()
        eval_loss = dp.evaluate(x, y)[0]
        dp.train_step(setup["x2"], setup["y2"], dropout_masks=masks)
        s2 = dp.state()
        dp.load_state(s1)  # resume: every rank gets the saved state
        dp.train_step(setup["x2"], setup["y2"], dropout_masks=masks)
        resumed = dp.state()
    ref, s1_ref = setup["grads"], setup["s1"]
    assert _rel(g.grads, ref.grads, trainable) < RTOL
    assert np.max(np.abs(g.logits - ref.logits)) / np.max(np.abs(ref.logits)) < RTOL
    assert abs(g.loss - ref.loss) / ref.loss < RTOL
    assert abs(loss - setup["loss"]) / setup["loss"] < RTOL
    assert _rel(s1, s1_ref, trainable) < RTOL
    assert _rel(s1, s1_ref, trainable, base=setup["s0"]) < RTOL  # the update p − p₀ itself
    assert _rel(s1, s1_ref, [momentum_key(n) for n in trainable]) < RTOL
    assert _rel(s1, s1_ref, running) < RTOL
    assert max(_rel(r, s1_ref, running) for r in per_rank) < RTOL  # every rank holds the global statistics
    assert abs(eval_loss - setup["eval"][0]) / setup["eval"][0] < RTOL
    assert _rel(resumed, s2, trainable + running) == 0.0
    assert multiprocessing.active_children() == []


def test_local_ddp_averages_the_shards_gradients_and_saves_rank0s_running_stats(setup):
    spec, x, y, masks, single = setup["spec"], setup["x"], setup["y"], setup["masks"], setup["single"]
    trainable, running = list(trainable_names(spec)), list(running_names(spec))
    alone = []  # each shard alone on one device: its own gradient and its running statistics
    for idx in np.split(np.arange(BATCH), 2):
        single.load_state(setup["s0"])
        alone.append((single.gradients(x[idx], y[idx], dropout_masks=[m[idx] for m in masks]), single.state()))
    with DataParallelTrainer(arch=spec, params=setup["params"], sgd=setup["sgd"], replicas=2, bn_sync="local",
                             dtype="float64") as dp:
        g = dp.gradients(x, y, dropout_masks=masks)
        per_rank = dp.replica_running()
        saved = dp.state()
        eval_loss = dp.evaluate(x, y)[0]
        with pytest.raises(ValueError, match="equal shards"):
            dp.train_step(x[:7], y[:7])
        with pytest.raises(ValueError, match="replicas"):
            dp.train_step(x[:1], y[:1])
    mean_of_shards = {n: np.mean([a[0].grads[n] for a in alone], axis=0) for n in trainable}
    assert _rel(g.grads, mean_of_shards, trainable) < RTOL
    assert max(_rel(r, a[1], running) for r, a in zip(per_rank, alone, strict=True)) < RTOL
    assert _rel(saved, per_rank[0], running) == 0.0  # the saved model holds rank 0's
    single.load_state(saved)
    assert abs(eval_loss - single.evaluate(x, y)[0]) / eval_loss < RTOL  # and evaluate() runs it
    assert _rel(per_rank[1], per_rank[0], running) > DIFFER
    assert _rel(saved, setup["after_gradients"], running) > DIFFER  # not the global batch's
    assert _rel(g.grads, setup["grads"].grads, trainable) > DIFFER
    assert multiprocessing.active_children() == []


def test_each_rank_draws_its_own_dropout_without_masks(setup):
    spec, x, y = setup["spec"], setup["x"], setup["y"]
    twice, labels = np.concatenate([x[:4], x[:4]]), np.concatenate([y[:4], y[:4]])
    with DataParallelTrainer(arch=spec, params=setup["params"], sgd=setup["sgd"], replicas=2, bn_sync="local",
                             dtype="float64", seed=7) as dp:
        logits = dp.gradients(twice, labels).logits  # both ranks see the same shard: only their masks differ
    assert np.max(np.abs(logits[:4] - logits[4:])) > 1e-3


def test_bad_arguments_fail_in_one_line_before_any_process_starts(setup):
    kw = dict(arch=setup["spec"], params=setup["params"], sgd=setup["sgd"], replicas=2)
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match=r"^--device gpu: no CUDA device is available here "
                                               r"\(torch\.cuda\.is_available\(\) is False\)$"):
            DataParallelTrainer(**kw, bn_sync="sync", device="gpu")
    with pytest.raises(ValueError, match="bn_sync"):
        DataParallelTrainer(**kw, bn_sync="single")
    with pytest.raises(ValueError, match="device"):
        DataParallelTrainer(**kw, bn_sync="sync", device="tpu")
    with pytest.raises(ValueError, match="dtype"):
        DataParallelTrainer(**kw, bn_sync="sync", dtype="float16")
    assert multiprocessing.active_children() == []


def test_a_dead_rank_and_a_closed_trainer_are_one_line_runtime_errors(setup):
    spec, x, y = setup["spec"], setup["x"], setup["y"]
    dp = DataParallelTrainer(arch=spec, params=setup["params"], sgd=setup["sgd"], replicas=2, bn_sync="sync")
    dp._processes[1].kill()
    dp._processes[1].join(timeout=10)
    with pytest.raises(RuntimeError, match=r"^torch DDP: rank 1 ") as info:
        dp.train_step(x, y)
    assert "\n" not in str(info.value)
    assert multiprocessing.active_children() == []  # rank 0, mid-collective, was stopped too
    with pytest.raises(RuntimeError, match="closed"):
        dp.state()
    dp.close()  # idempotent


def test_a_rank_that_does_not_answer_times_out_in_one_line(setup):
    dp = DataParallelTrainer(arch=setup["spec"], params=setup["params"], sgd=setup["sgd"], replicas=2,
                             bn_sync="local", timeout=2.0)
    os.kill(dp._processes[1].pid, signal.SIGSTOP)  # rank 1 hangs
    start = time.monotonic()
    with pytest.raises(RuntimeError, match=r"^torch DDP: no reply from rank\(s\) \[0, 1\] to 'step' within 2 s$"):
        dp.train_step(setup["x"], setup["y"])  # rank 0 waits in the all-reduce for rank 1
    assert time.monotonic() - start < 15
    assert multiprocessing.active_children() == []
