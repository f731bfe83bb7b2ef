"""The frozen-BatchNorm audit in PyTorch: requires_grad=False in train mode drifts, .eval() on the BN does not."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from bnparity.frameworks.torch.audit import FrozenAudit  # noqa: E402
from bnparity.testing import audit_frozen  # noqa: E402


def _model(*, eval_bn: bool = False) -> torch.nn.Module:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.BatchNorm2d(4), torch.nn.ReLU(),
                                torch.nn.Flatten(), torch.nn.Linear(144, 2))
    model[1].requires_grad_(False)
    model.train()
    if eval_bn:
        model[1].eval()
    return model


X = (2 * np.random.default_rng(0).standard_normal((8, 3, 6, 6)) + 1).astype(np.float32)


def test_requires_grad_false_in_train_mode_drifts_and_eval_fixes_it():
    frozen = FrozenAudit().audit(_model(), X).layers[0]
    assert frozen.drifted and frozen.batch_statistics
    assert frozen.running_mean_change > 1e-3 and frozen.running_var_change > 1e-3 and frozen.output_gap > 0.1
    assert frozen.param_change == 0.0  # the optimizer did leave γ and β alone
    fixed = FrozenAudit().audit(_model(eval_bn=True), X).layers[0]
    assert fixed.frozen and not fixed.batch_statistics
    assert fixed.running_mean_change == fixed.running_var_change == fixed.output_gap == fixed.param_change == 0.0


def test_the_drift_is_the_momentum_step_towards_the_batch_statistics():
    model = _model()
    bn = model[1]
    with torch.no_grad():
        mean = model[0](torch.from_numpy(X)).mean(dim=(0, 2, 3))
    got = FrozenAudit().audit(model, X).layers[0]
    # running_mean starts at 0: after one step it is momentum·μ_B
    assert got.running_mean_change == pytest.approx(float(bn.momentum * mean.abs().max()), rel=1e-5)


def test_the_users_model_is_bit_identical_and_its_generator_untouched():
    model = _model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    flags = [p.requires_grad for p in model.parameters()]
    rng = torch.get_rng_state()
    FrozenAudit().audit(model, X, labels=np.array([0, 1] * 4))
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert [p.requires_grad for p in model.parameters()] == flags and model.training and model[1].training
    assert torch.equal(torch.get_rng_state(), rng)


def test_no_grad_still_updates_and_track_running_stats_false_still_uses_batch_statistics():
    bn = torch.nn.BatchNorm2d(3)
    with torch.no_grad():
        bn(torch.randn(8, 3, 4, 4) + 3)
    assert float(bn.running_mean.abs().min()) > 0  # torch.no_grad() froze nothing
    late = torch.nn.BatchNorm2d(3)
    late.track_running_stats = False  # after construction: buffers kept, not updated, batch statistics used
    got = FrozenAudit().audit(late, X[:, :3]).layers[0]
    assert not got.statistics_moved and got.batch_statistics and got.output_gap > 0.1 and not got.frozen


def test_audit_frozen_as_a_user_writes_it():
    result = audit_frozen(_model(), X, labels=np.array([0, 1] * 4))
    assert not result.frozen and [layer.layer for layer in result.drifted] == ["1"]
    assert "DRIFTED" in result.message and ".eval()" in result.message
    assert audit_frozen(_model(eval_bn=True), X).frozen


def test_bad_input():
    with pytest.raises(TypeError, match="holds no BatchNorm"):
        FrozenAudit().audit(torch.nn.Linear(3, 2), X)
    with pytest.raises(TypeError, match="audit_frozen expects"):
        audit_frozen(object(), X)
