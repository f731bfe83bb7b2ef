"""The frozen-BatchNorm audit in MXNet Gluon: grad_req='null' drifts — in the backward pass, not the forward —
and use_global_stats=True does not."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("bnparity.frameworks.mxnet._mx")

from bnparity.frameworks.mxnet._mx import autograd, gluon, mx, nd  # noqa: E402
from bnparity.frameworks.mxnet.audit import FrozenAudit  # noqa: E402
from bnparity.testing import audit_frozen  # noqa: E402

X = (2 * np.random.default_rng(0).standard_normal((8, 3, 6, 6)) + 1).astype(np.float32)


def _model(*, global_stats: bool = False, head_only: bool = False, hybridize: bool = True) -> gluon.Block:
    mx.random.seed(0)
    model = gluon.nn.HybridSequential()
    model.add(gluon.nn.Conv2D(4, 3, padding=1, in_channels=3),
              gluon.nn.BatchNorm(in_channels=4, use_global_stats=global_stats), gluon.nn.Flatten(),
              gluon.nn.Dense(2, in_units=144))
    model.initialize(mx.init.Xavier())
    for block in (model[0], model[1]) if head_only else (model[1],):
        for p in block.collect_params().values():
            p.grad_req = "null"
    if hybridize:
        model.hybridize()
    model(nd.array(X))  # built (and compiled, when hybridized), as a loaded model is
    return model


def test_running_statistics_move_in_backward_not_in_forward():
    for hybridize in (False, True):
        model = _model(hybridize=hybridize)
        x = nd.array(X)
        with autograd.record():
            y = model(x)
        assert float(nd.abs(model[1].running_mean.data()).max().asscalar()) == 0.0  # forward: nothing yet
        y.backward()
        assert float(nd.abs(model[1].running_mean.data()).max().asscalar()) > 1e-3  # backward wrote them


def test_grad_req_null_drifts_and_use_global_stats_fixes_it():
    frozen = FrozenAudit().audit(_model(), X).layers[0]
    assert frozen.drifted and frozen.batch_statistics and frozen.param_change == 0.0
    assert frozen.running_mean_change > 1e-3 and frozen.running_var_change > 1e-3 and frozen.output_gap > 0.1
    fixed = FrozenAudit().audit(_model(global_stats=True), X).layers[0]
    assert fixed.frozen and fixed.running_mean_change == fixed.running_var_change == fixed.param_change == 0.0
    assert fixed.output_gap < 1e-5  # rounding between oneDNN's training and inference kernels at most


def test_a_frozen_bn_that_backward_never_reaches_keeps_its_statistics_but_trains_on_batch_statistics():
    head = FrozenAudit().audit(_model(head_only=True), X).layers[0]
    assert not head.statistics_moved and head.batch_statistics and head.output_gap > 0.1
    assert "backward never reached it" in head.note


def test_the_users_block_is_bit_identical():
    model = _model()
    before = {k: p.data().asnumpy().copy() for k, p in model.collect_params().items()}
    reqs = {k: p.grad_req for k, p in model.collect_params().items()}
    FrozenAudit().audit(model, X, labels=np.array([0, 1] * 4))
    after = model.collect_params()
    assert all(np.array_equal(before[k], after[k].data().asnumpy()) for k in before)
    assert {k: p.grad_req for k, p in after.items()} == reqs
    y = model(nd.array(X))  # the hybridized user block still runs
    assert y.shape == (8, 2)


def test_audit_frozen_as_a_user_writes_it():
    result = audit_frozen(_model(), X)
    assert not result.frozen and len(result.drifted) == 1 and "use_global_stats=True" in result.message
    assert audit_frozen(_model(global_stats=True), X).frozen


def test_bad_input():
    with pytest.raises(TypeError, match="holds no BatchNorm"):
        dense = gluon.nn.Dense(2, in_units=3)
        dense.initialize()
        FrozenAudit().audit(dense, X)
