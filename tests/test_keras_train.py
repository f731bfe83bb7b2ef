"""The Keras Trainer on this process's backend: PyTorch's SGD in closed form, the reference forward, dropout that
resumes bit-identically, compile counts, float64 refused where Keras computes float32, and the thread limit."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import require

from bnparity.frameworks.training import SGDConfig, load_trainer
from bnparity.reference import alexnet_numpy as anp
from bnparity.reference.alexnet import alexnet_spec, init_params, momentum_key, trainable_names

NAME = f"keras-{os.environ.get('KERAS_BACKEND', 'tensorflow')}"
# JAX compiles every new Trainer's step and every eager op's first shape: these take 5-20 s there, 1-4 s elsewhere
SLOW_ON_JAX = pytest.mark.slow if NAME == "keras-jax" else (lambda test: test)
SGD = SGDConfig(lr=0.05, momentum=0.9, weight_decay=5e-4)


def _trainer(spec, params, sgd: SGDConfig = SGD, **kw):
    require(NAME)
    return load_trainer(NAME)(arch=spec, params=params, sgd=sgd, **kw)


def _batch(spec, n: int = 8, seed: int = 5):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, *spec.input_shape)).astype(np.float32)
    return x, rng.integers(0, 10, n), anp.dropout_masks(spec, batch=n, rng=rng)


@SLOW_ON_JAX
def test_trainer_is_this_backends_framework() -> None:
    spec = alexnet_spec("tiny", batch_norm=True)
    assert _trainer(spec, init_params(spec, seed=0)).framework == NAME


@SLOW_ON_JAX
def test_gradients_logits_and_eval_match_the_reference() -> None:
    from bnparity.suites.model_parity.tolerance import model_rtol

    spec = alexnet_spec("tiny", batch_norm=True)
    params = init_params(spec, seed=0)
    x, y, masks = _batch(spec)
    trainer = _trainer(spec, params)
    state = trainer.state()
    for name, value in params.items():
        np.testing.assert_array_equal(state[name], value, err_msg=name)
    got = trainer.gradients(x, y, dropout_masks=masks)
    ref = anp.gradients(spec, params, x, y, dropout_masks=masks)
    rtol = model_rtol(spec, "float32", batch=8)
    np.testing.assert_allclose(got.logits, ref.logits, rtol=rtol, atol=rtol * np.abs(ref.logits).max())
    assert got.loss == pytest.approx(ref.loss, rel=rtol)
    assert set(got.grads) == set(trainable_names(spec))
    for name in ("conv1.weight", "fc1.weight", "bn6.gamma", "fc3.bias"):  # layouts back to canonical
        g, r = got.grads[name], ref.grads[name]
        assert g.shape == r.shape
        np.testing.assert_allclose(g, r, atol=1e-3 * np.abs(r).max(), err_msg=name)
    trainer.load_state(state)
    loss_sum, correct = trainer.evaluate(x, y)  # moving statistics (0, 1), no dropout
    ref_eval = anp.forward(spec, params, x, train=False).logits
    assert loss_sum == pytest.approx(anp.per_example_loss(ref_eval, y).sum(), rel=rtol)
    assert correct == int((ref_eval.argmax(1) == y).sum())


def test_sgd_is_pytorchs_l2_and_momentum_in_closed_form() -> None:
    """Two steps: v1 = g1 + λp0, p1 = p0 − lr·v1; v2 = μ·v1 + g2 + λp1, p2 = p1 − lr·v2 (not Keras' decoupled
    weight decay, which would leave λp out of v)."""
    spec = alexnet_spec("tiny", batch_norm=False).with_dropout(0.0)
    params = init_params(spec, seed=1)
    x, y, _ = _batch(spec)
    sgd = SGDConfig(lr=0.1, momentum=0.5, weight_decay=0.05)  # a large λ: its term is far above float32 noise
    trainer = _trainer(spec, params, sgd)
    for step in (1, 2):
        before = trainer.state()
        g = trainer.gradients(x, y).grads
        trainer.load_state(before)  # gradients() must not update anything but BN statistics (none here)
        trainer.train_step(x, y)
        after = trainer.state()
        for n in ("conv1.weight", "fc2.weight", "fc3.bias"):
            v_prev = before[momentum_key(n)] if step == 2 else 0.0
            v = sgd.momentum * v_prev + g[n] + sgd.weight_decay * before[n]
            scale = np.abs(v).max()
            np.testing.assert_allclose(after[momentum_key(n)], v, atol=1e-5 * scale, err_msg=f"{n} step {step}")
            np.testing.assert_allclose(after[n] - before[n], -sgd.lr * v, atol=1e-5 * sgd.lr * scale,
                                       err_msg=f"{n} step {step}")
    assert after["step"] == 2


def test_momentum_buffers_round_trip_exactly_through_a_checkpoint() -> None:
    """Keras keeps m = −lr·v: the checkpoint's v = −m/lr must load back to the same m, bit for bit (at lr 0.05 a
    float32 division and multiplication miss for about 12% of random buffers)."""
    spec = alexnet_spec("tiny", batch_norm=True)
    params = init_params(spec, seed=0)
    trainer = _trainer(spec, params)
    rng = np.random.default_rng(3)
    state = trainer.state()
    state.update({momentum_key(n): rng.standard_normal(params[n].shape) * 1e-2 for n in trainable_names(spec)})
    trainer.load_state(state)
    saved = trainer.state()
    trainer.load_state(saved)
    again = trainer.state()
    for n in trainable_names(spec):
        np.testing.assert_array_equal(again[momentum_key(n)], saved[momentum_key(n)], err_msg=n)
        np.testing.assert_allclose(saved[momentum_key(n)], state[momentum_key(n)], rtol=1e-6, err_msg=n)


@SLOW_ON_JAX
def test_own_dropout_is_random_and_resumes_bit_identically() -> None:
    spec = alexnet_spec("tiny", batch_norm=True)
    params = init_params(spec, seed=1)
    x, y, _ = _batch(spec)
    x2, _, _ = _batch(spec, seed=6)
    first = _trainer(spec, params)
    a, b = first.gradients(x, y).logits, first.gradients(x, y).logits
    assert np.abs(a - b).max() > 1e-3  # its own dropout layers, fresh masks each pass
    first.train_step(x, y)
    checkpoint = first.state()
    expected = [first.train_step(x2, y).loss, first.train_step(x, y).loss]
    final = first.state()
    resumed = _trainer(spec, params, seed=12345)  # another seed: the checkpoint's generator states win
    resumed.load_state(checkpoint)
    assert [resumed.train_step(x2, y).loss, resumed.train_step(x, y).loss] == expected
    for name, value in resumed.state().items():
        np.testing.assert_array_equal(value, final[name], err_msg=name)
    off = _trainer(spec.with_dropout(0.0), params)
    np.testing.assert_array_equal(off.gradients(x, y).logits, off.gradients(x, y).logits)


@SLOW_ON_JAX
def test_masks_replace_dropout_and_the_step_compiles_once_per_shape() -> None:
    spec = alexnet_spec("tiny", batch_norm=True)
    params = init_params(spec, seed=0)
    x, y, masks = _batch(spec)
    trainer = _trainer(spec, params)
    np.testing.assert_array_equal(trainer.gradients(x, y, dropout_masks=masks).logits,
                                  trainer.gradients(x, y, dropout_masks=masks).logits)
    for _ in range(3):
        trainer.train_step(x, y, dropout_masks=masks)
    trainer.train_step(x[:4], y[:4], dropout_masks=[m[:4] for m in masks])
    if trainer.compile_count is None:  # PyTorch: eager, nothing is compiled
        assert os.environ.get("KERAS_BACKEND") == "torch"
    else:
        assert trainer.compile_count == 2  # batch 8, then batch 4


@SLOW_ON_JAX
def test_float64_runs_or_is_refused_with_the_keras_source_line() -> None:
    from bnparity.frameworks.base import Unsupported

    require(NAME)
    from bnparity.frameworks.keras.train import _float64_problem

    for norm in ("bn", "none", "gn"):
        spec = alexnet_spec("tiny", norm=norm).with_dropout(0.0)
        params = init_params(spec, seed=0)
        if _float64_problem(spec) is None:
            x, y, _ = _batch(spec)
            got = _trainer(spec, params, dtype="float64").gradients(x, y)
            ref = anp.gradients(spec, params, x, y)
            assert got.logits.dtype == np.float64
            np.testing.assert_allclose(got.logits, ref.logits, rtol=1e-12, atol=1e-12 * np.abs(ref.logits).max())
            assert got.loss == pytest.approx(ref.loss, rel=1e-13)
        else:
            with pytest.raises(Unsupported, match=r"computes float64 as float32 .*keras/src/"):
                _trainer(spec, params, dtype="float64")
    with pytest.raises(ValueError, match="dtype must be 'float32' or 'float64'"):
        _trainer(spec, params, dtype="float16")


@pytest.mark.slow
def test_tensorflow_thread_pools_follow_bnparity_threads() -> None:
    require(NAME)
    if os.environ.get("KERAS_BACKEND") != "tensorflow":
        pytest.skip("only TensorFlow's pools are set by the Trainer (PyTorch and XLA read their environment)")
    code = ("import tensorflow as tf; import bnparity.frameworks.keras.train; "
            "print(tf.config.threading.get_intra_op_parallelism_threads(), "
            "tf.config.threading.get_inter_op_parallelism_threads())")
    env = {**os.environ, "BNPARITY_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True, timeout=120)
    assert out.stdout.split() == ["1", "1"]
