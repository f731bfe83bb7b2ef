"""The PyTorch adapters and the proof of PyTorch's row in the conventions registry."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import require

from bnparity.frameworks.conventions import convention
from bnparity.frameworks.registry import load_adapter
from bnparity.reference.spec import BNSpec
from bnparity.reference.steps import LayerInputs

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


@pytest.fixture(scope="module")
def torch():
    require("torch")
    import torch

    return torch


def _inputs(shape, axis=1, steps=2, dtype=np.float64, seed=0):
    rng = np.random.default_rng(seed)
    c = shape[axis]
    return LayerInputs(xs=tuple(rng.normal(1, 2, shape).astype(dtype) for _ in range(steps)),
                       dys=tuple(rng.normal(size=shape).astype(dtype) for _ in range(steps)),
                       x_eval=rng.normal(1, 2, shape).astype(dtype),
                       gamma=rng.normal(1, .3, c), beta=rng.normal(0, .3, c))


def test_layout_conversion_nhwc_equals_nchw_transposed(torch):
    adapter = load_adapter("torch", "builtin")
    nchw = _inputs((2, 3, 4, 5), axis=1)
    to_last = lambda a: np.moveaxis(a, 1, -1)  # noqa: E731
    nhwc = LayerInputs(xs=tuple(map(to_last, nchw.xs)), dys=tuple(map(to_last, nchw.dys)),
                       x_eval=to_last(nchw.x_eval), gamma=nchw.gamma, beta=nchw.beta)
    a = adapter.run(nchw, spec=BNSpec(axis=1))
    b = adapter.run(nhwc, spec=BNSpec(axis=-1))
    for name in ("y", "dx", "y_eval"):
        np.testing.assert_allclose(np.moveaxis(getattr(b, name), -1, 1), getattr(a, name), rtol=1e-14, atol=1e-15)


def test_realize_fixes_the_running_variance_torch_always_stores(torch):
    adapter = load_adapter("torch", "builtin")
    assert adapter.realize(BNSpec(running_var="biased"), np.dtype(np.float32)).running_var == "unbiased"
    scratch = load_adapter("torch", "scratch")
    assert scratch.realize(BNSpec(running_var="biased"), np.dtype("f4")).running_var == "biased"


# --- the conventions registry row, proved by running torch --------------------------------------------------

def test_registry_defaults_are_the_module_defaults(torch):
    row = convention("torch")
    module = torch.nn.BatchNorm2d(3)
    assert (module.momentum, module.eps) == (row.momentum, row.eps)
    assert row.momentum_weighs == "new" and row.channel_axis == 1


def test_momentum_weighs_the_new_batch_and_running_var_is_unbiased(torch):
    row = convention("torch")
    module = torch.nn.BatchNorm1d(1)
    x = torch.tensor([[0.0], [2.0], [4.0]])  # μ = 2, biased σ² = 8/3, unbiased σ² = 4
    module.train()
    module(x)
    assert module.running_mean.item() == pytest.approx((1 - row.momentum) * 0 + row.momentum * 2.0, rel=1e-6)
    assert row.running_var == "unbiased"
    assert module.running_var.item() == pytest.approx(0.9 * 1.0 + 0.1 * 4.0, rel=1e-6)


def test_running_stats_are_written_in_the_forward_pass(torch):
    module = torch.nn.BatchNorm1d(2).train()
    module(torch.randn(8, 2) + 3.0)  # no backward
    assert convention("torch").running_stats_written.startswith("forward")
    assert float(module.running_mean.abs().sum()) > 0.1


def test_train_eval_switch_and_two_pass_variance(torch):
    module = torch.nn.BatchNorm1d(1)
    x = torch.tensor([[1e4 - 1.0], [1e4 + 1.0]], dtype=torch.float32)
    y_train = module.train()(x)
    y_eval = module.eval()(x)
    assert not torch.allclose(y_train, y_eval)  # eval normalizes with running statistics
    # Two-pass variance: x̂ = 1 to within u·κ ≈ 6e-4 despite the 1e4 offset. E[x²] − E[x]² could not:
    # x² ≈ 1e8 is resolved to 8 in float32, so its σ² = 1 would come out 0 or a multiple of 8.
    assert y_train[1].item() == pytest.approx(1.0 / np.sqrt(1.0 + 1e-5), rel=1e-3)
    assert convention("torch").variance_algorithm == "two-pass"


def test_batch_of_one_in_1d_is_an_error(torch):
    with pytest.raises(ValueError, match="Expected more than 1 value per channel"):
        torch.nn.BatchNorm1d(3).train()(torch.randn(1, 3))
