"""Every field of MXNet's convention record, proved by running mxnet.gluon.nn.BatchNorm (and the raw operator)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from bnparity.frameworks.conventions import convention
from bnparity.frameworks.mxnet.convention import CONVENTION
from bnparity.reference import batchnorm as ref
from bnparity.reference.spec import BNSpec
from tests.conftest import require

# (dtype, rank, channels): float32 4-D goes through the oneDNN (MKLDNN) kernel, float64 through the native
# CPU kernel (oneDNN has no float64), float32 2-D through oneDNN's reshaped (N, C, 1, D) path.
KERNEL_CASES = [("float32", 4, 8), ("float64", 4, 8), ("float32", 2, 3)]


@pytest.fixture(scope="module")
def mx():
    """The project's mxnet entry point (skips when mxnet is not installed)."""
    require("mxnet")
    from bnparity.frameworks.mxnet import _mx

    return SimpleNamespace(mx=_mx.mx, nd=_mx.nd, autograd=_mx.autograd, gluon=_mx.gluon)


def make_block(mx, *, channels: int, dtype: str = "float64", hybridize: bool = False, **options):
    block = mx.gluon.nn.BatchNorm(in_channels=channels, **options)
    block.initialize(ctx=mx.mx.cpu())
    block.cast(dtype)
    if hybridize:
        block.hybridize(static_alloc=True)  # as the adapter and the AlexNet hybridize
    return block


def data(shape: tuple[int, ...], *, seed: int = 0, loc: float = 2.0, scale: float = 3.0) -> np.ndarray:
    return np.random.default_rng(seed).normal(loc, scale, size=shape)


def train_step(mx, block, x: np.ndarray, dtype: str = "float64"):
    """Forward under autograd.record(), backward with dy = 1. Returns y as NumPy."""
    xt = mx.nd.array(x, dtype=dtype)
    xt.attach_grad()
    with mx.autograd.record():
        y = block(xt)
    y.backward(mx.nd.ones_like(y))
    return y.asnumpy()


def stats(block) -> tuple[np.ndarray, np.ndarray]:
    return block.running_mean.data().asnumpy().astype(np.float64), block.running_var.data().asnumpy().astype(np.float64)


def test_registry_returns_this_record():
    assert convention("mxnet") is CONVENTION
    assert CONVENTION.spec() == BNSpec(axis=1, eps=1e-5, momentum=0.9, momentum_weighs="old", running_var="biased")
    assert set(CONVENTION.citations) >= {"momentum", "eps", "running_var", "channel_axis", "variance_algorithm",
                                         "train_eval_switch", "scale_switch", "running_stats_written"}


def test_default_momentum_weighs_the_old_value(mx):
    block = make_block(mx, channels=3)
    assert block._kwargs["momentum"] == CONVENTION.momentum
    x = data((16, 3))
    train_step(mx, block, x)
    running_mean, _ = stats(block)
    mu, _ = ref.batch_stats(x, axis=1)
    new_weight = running_mean / mu  # the running mean starts at 0
    # 0.1 (momentum weighs the old value); PyTorch's reading of momentum=0.9 would give 0.9.
    np.testing.assert_allclose(new_weight, 1.0 - CONVENTION.momentum, rtol=1e-6)
    assert CONVENTION.momentum_weighs == "old"
    np.testing.assert_allclose(new_weight, CONVENTION.new_weight, rtol=1e-6)


def test_momentum_is_parsed_as_float32(mx):
    # Why GluonBatchNorm.realize rounds the momentum: even in float64 the update uses float32(0.9).
    block = make_block(mx, channels=3, momentum=0.9)
    x = data((16, 3))
    train_step(mx, block, x)
    running_mean, _ = stats(block)
    mu, _ = ref.batch_stats(x, axis=1)
    m32 = float(np.float32(0.9))
    np.testing.assert_allclose(running_mean, (1.0 - m32) * mu, rtol=1e-14)
    assert np.all(np.abs(running_mean - 0.1 * mu) > 1e-9 * np.abs(mu))


def test_default_eps(mx):
    # Per channel x = ±a: μ = 0, σ² = a², y = x / √(a² + ε), so ε = (x/y)² − a². a² = 1e-4 makes ε visible.
    a = 1e-2
    x = np.tile(np.array([[a], [-a]]), (4, 2))
    y = train_step(mx, make_block(mx, channels=2), x)
    eps = (x / y) ** 2 - a * a
    np.testing.assert_allclose(eps, CONVENTION.eps, rtol=1e-6)


@pytest.mark.parametrize(("dtype", "rank", "channels"), KERNEL_CASES)
def test_running_var_is_the_biased_batch_variance(mx, dtype, rank, channels):
    shape = (2, channels, 2, 1) if rank == 4 else (4, channels)  # m = 4 values per channel: m/(m−1) = 4/3
    x = data(shape)
    block = make_block(mx, channels=channels, dtype=dtype, momentum=0.0)  # running_var = what is stored
    train_step(mx, block, x, dtype)
    _, running_var = stats(block)
    _, var = ref.batch_stats(x.astype(dtype), axis=1)
    m = ref.count_per_channel(shape, 1)
    assert CONVENTION.running_var == "biased" and not CONVENTION.running_var_configurable
    np.testing.assert_allclose(running_var, var, rtol=1e-5)
    assert np.all(np.abs(running_var - var * m / (m - 1)) > 0.2 * var)


def test_default_channel_axis_is_1(mx):
    block = mx.gluon.nn.BatchNorm()  # in_channels deferred: inferred from the input's axis 1
    block.initialize(ctx=mx.mx.cpu())
    block.cast("float64")
    x = data((4, 3, 5)) + 10.0 * np.arange(3)[None, :, None]  # channel c has mean ≈ 2 + 10c
    train_step(mx, block, x)
    running_mean, _ = stats(block)
    assert running_mean.shape == (3,)
    assert CONVENTION.channel_axis == 1
    mu, _ = ref.batch_stats(x, axis=CONVENTION.channel_axis)
    np.testing.assert_allclose(running_mean, (1 - np.float32(0.9)) * mu, rtol=1e-12)


@pytest.mark.parametrize("rank", [2, 4])
def test_variance_is_two_pass(mx, rank):
    # x = 1e4 + N(0, 1) in float32: E[x²] − E[x]² loses every digit (x² ≈ 1e8, float32 spacing 8), two passes
    # keep σ² ≈ 1.
    rng = np.random.default_rng(0)
    x = (1e4 + rng.normal(size=(16, 2, 8, 8) if rank == 4 else (1024, 2))).astype(np.float32)
    axes = ref.reduce_axes(x.ndim, 1)
    block = make_block(mx, channels=2, dtype="float32", momentum=0.0)
    train_step(mx, block, x, "float32")
    _, running_var = stats(block)
    _, two_pass = ref.batch_stats(x, axis=1)
    fast = (x * x).mean(axis=axes, dtype=np.float32) - x.mean(axis=axes, dtype=np.float32) ** 2
    assert np.all(np.abs(fast - two_pass) > 0.5)  # the input does tell the two algorithms apart
    assert CONVENTION.variance_algorithm == "two-pass"
    np.testing.assert_allclose(running_var, two_pass, rtol=1e-3)


@pytest.mark.parametrize("hybridize", [False, True], ids=["imperative", "hybridized"])
def test_record_selects_batch_statistics_and_eval_the_running_ones(mx, hybridize):
    assert "autograd.record()" in CONVENTION.train_eval_switch
    block = make_block(mx, channels=3, hybridize=hybridize)
    block.gamma.set_data(mx.nd.array([0.5, 2.0, 3.0], dtype="float64"))
    block.beta.set_data(mx.nd.array([1.0, -1.0, 0.5], dtype="float64"))
    gamma, beta = block.gamma.data().asnumpy(), block.beta.data().asnumpy()
    x = data((8, 3, 4))
    assert not mx.autograd.is_training()
    y_train = train_step(mx, block, x)
    y_batch, _ = ref.forward_train(x, gamma, beta, eps=CONVENTION.eps, axis=1)
    np.testing.assert_allclose(y_train, y_batch, rtol=1e-12, atol=1e-12)
    running_mean, running_var = stats(block)
    x_eval = data((8, 3, 4), seed=1)
    y_running = ref.forward_eval(x_eval, gamma, beta, running_mean, running_var, eps=CONVENTION.eps, axis=1)
    np.testing.assert_allclose(block(mx.nd.array(x_eval, dtype="float64")).asnumpy(), y_running, rtol=1e-12)
    with mx.autograd.record(), mx.autograd.predict_mode():  # recording, but not training: running statistics
        y_predict = block(mx.nd.array(x_eval, dtype="float64")).asnumpy()
    np.testing.assert_allclose(y_predict, y_running, rtol=1e-12)


def test_use_global_stats_normalizes_with_running_statistics_in_training(mx):
    block = make_block(mx, channels=3, use_global_stats=True)
    x = data((8, 3))
    y = train_step(mx, block, x)
    # Running statistics still at their initial (0, 1): y = x / √(1 + ε), and the backward updated nothing.
    np.testing.assert_allclose(y, x / np.sqrt(1 + CONVENTION.eps), rtol=1e-12)
    running_mean, running_var = stats(block)
    np.testing.assert_array_equal(running_mean, np.zeros(3))
    np.testing.assert_array_equal(running_var, np.ones(3))


def test_gluon_uses_gamma_but_the_raw_operator_ignores_it(mx):
    gamma = np.array([2.0, 3.0, 4.0])
    x = data((16, 3, 4), seed=2)
    y_ref, _ = ref.forward_train(x, gamma, np.zeros(3), eps=CONVENTION.eps, axis=1)
    # gluon: scale=True -> fix_gamma=False, γ applies.
    block = make_block(mx, channels=3)
    assert block._kwargs["fix_gamma"] is False
    block.gamma.set_data(mx.nd.array(gamma, dtype="float64"))
    np.testing.assert_allclose(train_step(mx, block, x), y_ref, rtol=1e-12, atol=1e-12)
    # The raw operator with its defaults (fix_gamma=True, eps=1e-3 as a float32): γ ignored, and overwritten
    # with 1 in training.
    nd = mx.nd
    g = nd.array(gamma, dtype="float64")
    with mx.autograd.record():
        y_op = nd.BatchNorm(nd.array(x, dtype="float64"), g, nd.zeros(3, dtype="float64"),
                            nd.zeros(3, dtype="float64"), nd.ones(3, dtype="float64")).asnumpy()
    y_unit, _ = ref.forward_train(x, np.ones(3), np.zeros(3), eps=float(np.float32(1e-3)), axis=1)
    np.testing.assert_allclose(y_op, y_unit, rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(g.asnumpy(), np.ones(3))
    assert "fix_gamma=True" in CONVENTION.scale_switch and "eps=1e-3" in CONVENTION.scale_switch


def test_scale_false_forces_gamma_to_one_and_center_false_still_adds_beta(mx):
    block = make_block(mx, channels=3, scale=False, center=False)
    assert block._kwargs["fix_gamma"] is True
    assert (block.gamma.grad_req, block.beta.grad_req) == ("null", "null")
    block.gamma.set_data(mx.nd.array([2.0, 3.0, 4.0], dtype="float64"))
    block.beta.set_data(mx.nd.array([0.5, 0.5, 0.5], dtype="float64"))
    x = data((16, 3), seed=3)
    y = train_step(mx, block, x)
    y_ref, _ = ref.forward_train(x, np.ones(3), np.full(3, 0.5), eps=CONVENTION.eps, axis=1)
    np.testing.assert_allclose(y, y_ref, rtol=1e-12, atol=1e-12)  # γ ignored, β added despite center=False
    np.testing.assert_array_equal(block.gamma.data().asnumpy(), np.ones(3))  # and γ overwritten with 1
    assert "β is still added" in CONVENTION.scale_switch


@pytest.mark.parametrize("hybridize", [False, True], ids=["imperative", "hybridized"])
@pytest.mark.parametrize(("dtype", "rank", "channels"), KERNEL_CASES)
def test_running_statistics_are_written_in_the_backward_pass(mx, dtype, rank, channels, hybridize):
    assert CONVENTION.running_stats_written.startswith("backward pass")
    shape = (4, channels, 3, 2) if rank == 4 else (8, channels)
    x = data(shape, seed=4)
    block = make_block(mx, channels=channels, dtype=dtype, hybridize=hybridize)
    xt = mx.nd.array(x, dtype=dtype)
    xt.attach_grad()
    with mx.autograd.record():
        y = block(xt)
    y.wait_to_read()
    mx.nd.waitall()
    before = stats(block)  # after the training forward, before the backward: untouched
    np.testing.assert_array_equal(before[0], np.zeros(channels))
    np.testing.assert_array_equal(before[1], np.ones(channels))
    y.backward(mx.nd.ones_like(y))
    running_mean, running_var = stats(block)
    mu, var = ref.batch_stats(x.astype(dtype), axis=1)
    w = 1 - float(np.float32(CONVENTION.momentum))
    np.testing.assert_allclose(running_mean, w * mu, rtol=1e-5)
    np.testing.assert_allclose(running_var, (1 - w) + w * var, rtol=1e-5)


def test_training_forward_without_backward_never_updates(mx):
    block = make_block(mx, channels=3)
    x = data((8, 3), seed=5)
    with mx.autograd.train_mode():  # batch statistics normalize, but nothing is recorded, so no backward
        y = block(mx.nd.array(x, dtype="float64")).asnumpy()
    y_batch, _ = ref.forward_train(x, np.ones(3), np.zeros(3), eps=CONVENTION.eps, axis=1)
    np.testing.assert_allclose(y, y_batch, rtol=1e-12, atol=1e-12)
    running_mean, running_var = stats(block)
    np.testing.assert_array_equal(running_mean, np.zeros(3))
    np.testing.assert_array_equal(running_var, np.ones(3))
