"""The frozen-BatchNorm audit in Keras (frameworks/keras/audit.py), on this process's backend: `trainable=False`
freezes a BatchNormalization for real (changes of exactly 0, eval-mode output), γ/β out of the optimizer with the
layer trainable drifts, and the user's model is bit-identical afterwards."""

from __future__ import annotations

import os

import numpy as np
import pytest
from conftest import require

NAME = f"keras-{os.environ.get('KERAS_BACKEND', 'tensorflow')}"
require(NAME)

import keras  # noqa: E402

from bnparity.frameworks.keras.audit import FrozenAudit  # noqa: E402
from bnparity.testing import audit_frozen  # noqa: E402

X = (2 * np.random.default_rng(0).standard_normal((8, 6, 6, 3)) + 1).astype(np.float32)
LABELS = np.array([0, 1] * 4)


def _net(*, freeze: str = "") -> keras.Model:
    init = keras.initializers.GlorotUniform(seed=0)
    model = keras.Sequential([keras.Input((6, 6, 3)), keras.layers.Conv2D(4, 3, kernel_initializer=init, name="conv"),
                              keras.layers.BatchNormalization(momentum=0.9, name="bn"), keras.layers.Flatten(),
                              keras.layers.Dense(2, kernel_initializer=init, name="fc")], name="net")
    bn = model.get_layer("bn")
    if freeze == "variables":
        bn.gamma.trainable = bn.beta.trainable = False
    elif freeze == "layer":
        bn.trainable = False
    return model


def _values(model: keras.Model) -> list[np.ndarray]:
    return [np.array(keras.ops.convert_to_numpy(v)) for v in model.variables]


def test_variables_out_of_the_optimizer_drift_and_trainable_false_is_exactly_frozen():
    drift = FrozenAudit().audit(_net(freeze="variables"), X, labels=LABELS).layers[0]
    assert drift.layer == "net/bn" and drift.kind == "keras.layers.BatchNormalization"
    assert drift.params_frozen and drift.param_change == 0.0  # the optimizer never saw γ, β
    assert drift.drifted and drift.batch_statistics and drift.running_mean_change > 1e-3 and drift.output_gap > 0.1
    fixed = FrozenAudit().audit(_net(freeze="layer"), X, labels=LABELS).layers[0]
    assert fixed.frozen and not fixed.batch_statistics and fixed.params_frozen
    assert fixed.running_mean_change == fixed.running_var_change == fixed.param_change == fixed.output_gap == 0.0


def test_a_trainable_batchnorm_trains_and_training_false_keeps_the_statistics():
    trained = FrozenAudit().audit(_net(), X, labels=LABELS).layers[0]
    assert not trained.params_frozen and trained.param_change > 0 and trained.drifted
    still = FrozenAudit().audit(_net(), X, labels=LABELS, call_kwargs={"training": False}).layers[0]
    assert still.running_mean_change == still.running_var_change == still.output_gap == 0.0
    assert not still.batch_statistics and still.param_change > 0  # γ, β still trained (not frozen in the optimizer)


def test_frozen_names_what_the_optimizer_leaves_alone():
    audit = FrozenAudit().audit(_net(), X, frozen=lambda path: path.startswith("net/bn/"))
    layer = audit.layers[0]
    assert layer.params_frozen and layer.param_change == 0.0 and layer.drifted
    assert "4 trainable variables" in audit.step  # conv and fc's kernels and biases


def test_the_users_model_is_bit_identical_afterwards():
    model = _net(freeze="variables")
    before = _values(model)
    flags = [v.trainable for v in model.variables]
    FrozenAudit().audit(model, X, labels=LABELS, frozen=lambda path: False)
    assert all(np.array_equal(a, b) for a, b in zip(before, _values(model), strict=True))
    assert [v.trainable for v in model.variables] == flags
    assert model.get_layer("bn").trainable and not model.get_layer("bn").gamma.trainable


def test_a_layer_alone_and_the_cases():
    bn = keras.layers.BatchNormalization()
    bn.build((None, 3))
    x = np.random.default_rng(1).normal(size=(16, 3)).astype(np.float32) * 2 + 1
    assert FrozenAudit().audit(bn, x).layers[0].drifted
    bn.trainable = False
    alone = FrozenAudit().audit(bn, x).layers[0]
    assert alone.layer == "" and alone.frozen
    verdicts = {case.name: FrozenAudit().audit(case.model, case.x, labels=case.labels,
                                               call_kwargs=case.call_kwargs).frozen for case in FrozenAudit().cases()}
    assert verdicts == {"γ/β out of the optimizer, trainable=True": False, "layer.trainable=False (fix)": True,
                        "called with training=False": True}


def test_audit_frozen_as_a_user_writes_it():
    result = audit_frozen(_net(freeze="variables"), X, labels=LABELS)
    assert result.audit.framework == NAME and not result.frozen and "trainable = False" in result.message
    assert audit_frozen(_net(freeze="layer"), X, labels=LABELS).frozen


def test_bad_input():
    with pytest.raises(TypeError, match="holds no BatchNormalization"):
        FrozenAudit().audit(keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)]), X[:, 0, 0, :])
    with pytest.raises(TypeError, match="not built yet"):
        FrozenAudit().audit(keras.layers.BatchNormalization(), X)
    with pytest.raises(TypeError, match="variables=None"):
        FrozenAudit().audit(_net(), X, variables={})
    assert not FrozenAudit().can_read(np.zeros(3)) and FrozenAudit().can_read(_net())
