"""The frozen-BatchNorm audit in Flax: params out of the optimizer drift (batch_stats is not theirs to freeze),
use_running_average=True (nnx: .eval()) does not."""

from __future__ import annotations

import numpy as np
import pytest

jax = pytest.importorskip("jax")
nn = pytest.importorskip("flax.linen")

import jax.numpy as jnp  # noqa: E402
from flax import nnx  # noqa: E402

from bnparity.frameworks.jax.audit import FrozenAudit  # noqa: E402
from bnparity.testing import audit_frozen  # noqa: E402

X = (2 * np.random.default_rng(0).standard_normal((8, 6, 6, 3)) + 1).astype(np.float32)


class _Net(nn.Module):
    use_running_average: bool = False

    @nn.compact
    def __call__(self, x):
        x = nn.BatchNorm(use_running_average=self.use_running_average, momentum=0.9, name="bn")(nn.Conv(4, (3, 3))(x))
        return nn.Dense(2)(x.reshape((x.shape[0], -1)))


def _linen(fixed: bool = False):
    model = _Net(use_running_average=fixed)
    return model, model.init(jax.random.PRNGKey(0), jnp.asarray(X))


def test_frozen_params_drift_and_use_running_average_fixes_it():
    model, variables = _linen()
    frozen = FrozenAudit().audit(model, X, variables=variables).layers[0]
    assert frozen.layer == "bn" and frozen.params_frozen and frozen.param_change == 0.0  # set_to_zero held γ, β
    assert frozen.drifted and frozen.running_mean_change > 1e-3 and frozen.output_gap > 0.1
    model, variables = _linen(fixed=True)
    fixed = FrozenAudit().audit(model, X, variables=variables).layers[0]
    assert fixed.frozen and fixed.running_mean_change == fixed.running_var_change == fixed.output_gap == 0.0


def test_trained_params_move_and_frozen_ones_do_not():
    model, variables = _linen()
    trained = FrozenAudit().audit(model, X, variables=variables, frozen=lambda name: False).layers[0]
    assert not trained.params_frozen and trained.param_change > 0


def test_use_running_average_at_call_time_fixes_it_and_the_variables_are_unchanged():
    model, variables = _linen()
    copy = jax.tree_util.tree_map(np.array, variables)
    bn = nn.BatchNorm(momentum=0.9)
    v = bn.init(jax.random.PRNGKey(0), jnp.asarray(X), use_running_average=False)
    assert FrozenAudit().audit(bn, X, variables=v, call_kwargs={"use_running_average": True}).frozen
    assert not FrozenAudit().audit(bn, X, variables=v, call_kwargs={"use_running_average": False}).frozen
    FrozenAudit().audit(model, X, variables=variables)
    assert all(np.array_equal(a, b) for a, b in zip(jax.tree_util.tree_leaves(copy),
                                                     jax.tree_util.tree_leaves(variables), strict=True))


def test_nnx_train_mode_drifts_and_eval_does_not_and_the_module_is_unchanged():
    class Net(nnx.Module):
        def __init__(self, rngs):
            self.conv = nnx.Conv(3, 4, (3, 3), rngs=rngs)
            self.bn = nnx.BatchNorm(4, rngs=rngs)

        def __call__(self, x):
            return self.bn(self.conv(x))

    net = Net(nnx.Rngs(0))
    drift = FrozenAudit().audit(net, X).layers[0]
    assert drift.drifted and drift.param_change == 0.0 and drift.kind == "flax.nnx.BatchNorm"
    assert float(jnp.abs(net.bn.mean.value).max()) == 0.0  # the user's module: untouched
    net.eval()
    assert FrozenAudit().audit(net, X).frozen


def test_audit_frozen_as_a_user_writes_it():
    model, variables = _linen()
    result = audit_frozen(model, X, variables=variables, labels=np.array([0, 1] * 4))
    assert not result.frozen and "use_running_average=True" in result.message


def test_bad_input():
    model, _ = _linen()
    with pytest.raises(TypeError, match="needs its variables"):
        FrozenAudit().audit(model, X)
    dense = nn.Dense(2)
    with pytest.raises(TypeError, match="ran no flax.linen.BatchNorm"):
        FrozenAudit().audit(dense, X, variables=dense.init(jax.random.PRNGKey(0), jnp.asarray(X)))
