"""The frozen-BatchNorm audit in Keras 3: one fine-tuning step of a user's keras.Model (or layer) by Keras' own
`train_on_batch`, on whichever backend this process runs.

What "frozen" does in keras 3.15.1 (keras/src/layers/normalization/batch_normalization.py):
- `layer.trainable = False` freezes a BatchNormalization for real: its call takes the batch-statistics branch only
  `if training and self.trainable:` (line 363), so a frozen layer normalizes with its moving statistics even when
  called with training=True (as fit() and train_on_batch() call it) and never assigns them (lines 385-391, inside
  that branch); γ and β leave `trainable_variables`, so no optimizer sees them. Documented in the class docstring
  (lines 133-157). Setting it on a model sets it on every layer inside (keras/src/layers/layer.py, `trainable`).
- What does NOT freeze it: taking γ and β out of the optimizer while the layer stays trainable (in Keras 3,
  `variable.trainable = False`, keras/src/backend/common/variables.py:335-337, which drops them from
  `trainable_variables`, or a custom loop that applies gradients to the other variables only): the layer still
  takes the training branch, normalizes with the batch's statistics and moves its moving statistics in the forward
  pass.
- `model(x, training=False)` (the transfer-learning guide's call) keeps the statistics still but γ and β train.

The step is the one a Keras user runs: the model (inside a thin keras.Model that passes `call_kwargs` on) compiled
with keras.optimizers.SGD(lr) and the loss (sparse categorical cross-entropy from logits with labels, else the sum
of the outputs), then one `train_on_batch`. The user's model itself runs the step: every variable's value and
trainable flag is saved before and put back after (the user's model is bit-identical afterwards; its own compile
state is never touched: only the wrapper is compiled). Each BatchNormalization's input and output in the step are
seen by a second, eager forward pass (training=True, the call arguments the step gives) whose updates are undone;
its eval-mode output is the same layer on that input with training=False, its state from before the step.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import keras
import numpy as np

from bnparity.frameworks.audit import AuditCase, LayerAudit, ModelAudit, max_abs_change, relative_change
from bnparity.frameworks.audit import FrozenAudit as _FrozenAuditBase
from bnparity.reference.alexnet import AlexNetSpec

from ._backend import DESCRIPTOR
from .alexnet import from_canonical
from .convert import to_numpy

FIX = ("set layer.trainable = False on the BatchNormalization layers (Keras then runs them in inference mode even "
       "with training=True); leaving γ/β out of the optimizer does not freeze their moving statistics")
_BN = keras.layers.BatchNormalization


def _kind(obj: object) -> str:
    cls = type(obj)
    for public in (keras.layers, keras.models, keras):
        if getattr(public, cls.__name__, None) is cls:
            return f"{public.__name__}.{cls.__name__}"
    return f"{cls.__module__}.{cls.__qualname__}"


def _batch_norms(model: keras.layers.Layer) -> dict[str, _BN]:
    """Every BatchNormalization in `model` (itself included), by its path; "" for a layer audited alone."""
    if isinstance(model, _BN):
        return {"": model}
    found: dict[str, _BN] = {}
    for layer in model._flatten_layers(include_self=False, recursive=True):  # Keras' own walk (layer.py)
        if isinstance(layer, _BN) and all(layer is not seen for seen in found.values()):
            found[layer.path or layer.name] = layer
    return found


def _state(bn: _BN) -> dict[str, np.ndarray | None]:
    return {name: None if v is None else to_numpy(v).astype(np.float64)
            for name, v in (("moving_mean", bn.moving_mean), ("moving_variance", bn.moving_variance),
                            ("gamma", bn.gamma), ("beta", bn.beta))}


def _sum_loss(y_true: Any, y_pred: Any) -> Any:
    return keras.ops.sum(y_pred)


class _Step(keras.Model):
    """The user's model or layer, called with the audit's call arguments (`training` among them if given)."""

    def __init__(self, inner: keras.layers.Layer, call_kwargs: Mapping[str, Any]) -> None:
        super().__init__(name="bnparity_audit_step")
        self.inner = inner
        object.__setattr__(self, "_call_kwargs", dict(call_kwargs))  # not tracked: tensors, masks, flags

    def call(self, x: Any, training: bool | None = None) -> Any:
        kwargs = dict(self._call_kwargs)
        training = kwargs.pop("training", training)
        return self.inner(x, training=training, **kwargs)


class _Saved:
    """Every variable of a model: its value and trainable flag, to put back exactly."""

    def __init__(self, model: keras.layers.Layer) -> None:
        self.variables = list(model.variables)
        self.values = [np.array(to_numpy(v)) for v in self.variables]
        self.flags = [v.trainable for v in self.variables]

    def restore(self) -> None:
        for v, value, flag in zip(self.variables, self.values, self.flags, strict=True):
            v.assign(value)
            v.trainable = flag


def _capture(step: _Step, bns: dict[str, _BN], x: Any) -> dict[str, tuple[np.ndarray, np.ndarray, bool]]:
    """Each BatchNormalization's (input, output, whether it used batch statistics) in an eager training-mode
    forward pass of `step` (its updates are the caller's to undo)."""
    seen: dict[str, tuple[np.ndarray, np.ndarray, bool]] = {}

    def wrap(path: str, bn: _BN) -> Callable[..., Any]:
        original = bn.call

        def call(inputs: Any, training: bool | None = None, mask: Any = None) -> Any:
            out = original(inputs, training=training, mask=mask)
            seen.setdefault(path, (to_numpy(inputs), to_numpy(out), bool(training and bn.trainable)))
            return out
        return call

    for path, bn in bns.items():
        object.__setattr__(bn, "call", wrap(path, bn))  # instance attribute: Operation.__call__ looks up self.call
    try:
        step(x, training=True)
    finally:
        for bn in bns.values():
            object.__delattr__(bn, "call")
    return seen


class FrozenAudit(_FrozenAuditBase):
    """Audits keras.layers.BatchNormalization layers, alone or inside any keras.Model, with train_on_batch."""

    framework = DESCRIPTOR.name
    supported = "a built keras.Model (or layer) holding keras.layers.BatchNormalization layers (or one of them)"
    fix = FIX

    def can_read(self, obj: object) -> bool:
        return isinstance(obj, keras.layers.Layer)

    def audit(self, model: object, x: object, *, variables: object | None = None, labels: object | None = None,
              frozen: Callable[[str], bool] | None = None, call_kwargs: Mapping[str, Any] | None = None,
              lr: float = 0.1) -> ModelAudit:
        if not isinstance(model, keras.layers.Layer):
            raise TypeError(f"{self.framework}: expected {self.supported}. Received: {type(model).__qualname__}")
        if variables is not None:
            raise TypeError(f"{self.framework}: a Keras model holds its own state: pass variables=None")
        if not model.built:
            raise TypeError(f"{self.framework}: {_kind(model)} is not built yet: call it once on an input first")
        bns = _batch_norms(model)
        if not bns:
            raise TypeError(f"{self.framework}: {_kind(model)} holds no BatchNormalization layer; "
                            f"expected {self.supported}")
        xa = np.asarray(to_numpy(x) if keras.ops.is_tensor(x) else x)
        ya = np.zeros(len(xa), np.float32) if labels is None else np.asarray(labels).astype(np.int32)
        step = _Step(model, call_kwargs or {})
        saved = _Saved(model)
        try:
            if frozen is not None:
                for v in model.variables:
                    v.trainable = not frozen(v.path)
            before = {path: _state(bn) for path, bn in bns.items()}
            training = {path: bn.trainable for path, bn in bns.items()}
            trained = {id(v) for v in step.trainable_variables}
            count = len(trained)
            params_frozen = {path: not any(id(v) in trained for v in (bn.gamma, bn.beta) if v is not None)
                             for path, bn in bns.items()}
            seen = _capture(step, bns, xa)
            saved.restore()
            if frozen is not None:
                for v in model.variables:
                    v.trainable = not frozen(v.path)
            loss = _sum_loss if labels is None else keras.losses.SparseCategoricalCrossentropy(from_logits=True)
            step.compile(optimizer=keras.optimizers.SGD(learning_rate=lr), loss=loss, jit_compile=False)
            step.train_on_batch(xa, ya)
            after = {path: _state(bn) for path, bn in bns.items()}
        finally:
            saved.restore()
        called = (call_kwargs or {}).get("training", True)
        results = []
        for path, bn in bns.items():
            gap = None
            if path in seen:
                x_in, y_step, _ = seen[path]
                y_eval = to_numpy(bn(x_in, training=False))  # its state from before the step
                gap = float(np.max(np.abs(y_step.astype(np.float64) - y_eval.astype(np.float64))))
            used_batch = seen[path][2] if path in seen else False
            b, a = before[path], after[path]
            setting = (f"trainable={training[path]}, γ/β {'out of' if params_frozen[path] else 'in'} the optimizer, "
                       f"called with training={called}")
            results.append(LayerAudit(
                layer=path, framework=self.framework, kind=_kind(bn), params_frozen=params_frozen[path],
                batch_statistics=used_batch, setting=setting,
                running_mean_change=max_abs_change(b["moving_mean"], a["moving_mean"]),
                running_var_change=max_abs_change(b["moving_variance"], a["moving_variance"]),
                running_mean_relative=relative_change(b["moving_mean"], a["moving_mean"]),
                running_var_relative=relative_change(b["moving_variance"], a["moving_variance"]),
                param_change=max(max_abs_change(b["gamma"], a["gamma"]), max_abs_change(b["beta"], a["beta"])),
                output_gap=gap, fix=FIX, note="" if path in seen else "the forward pass never ran it"))
        loss_words = "sum of outputs" if labels is None else "sparse categorical cross-entropy (from logits)"
        words = (f"compile(SGD(learning_rate={lr:g}), {loss_words}), one train_on_batch on the {count} trainable "
                 f"variables, the model called with training={called}")
        return ModelAudit(framework=self.framework, kind=_kind(model), step=words, layers=tuple(results))

    def cases(self, seed: int = 0) -> list[AuditCase]:
        rng = np.random.default_rng(seed)
        x = (2 * rng.standard_normal((8, 6, 6, 3)) + 1).astype(np.float32)  # NHWC, Keras' layout
        labels = rng.integers(0, 4, 8)

        def net(configuration: str) -> keras.Model:
            init = keras.initializers.GlorotUniform(seed=seed)  # (keras.utils.set_random_seed would import TF)
            model = keras.Sequential([keras.Input((6, 6, 3)),
                                      keras.layers.Conv2D(4, 3, padding="same", kernel_initializer=init, name="conv"),
                                      keras.layers.BatchNormalization(name="bn"), keras.layers.ReLU(),
                                      keras.layers.Flatten(),
                                      keras.layers.Dense(4, kernel_initializer=init, name="fc")], name="small")
            bn = model.get_layer("bn")
            if configuration == "variables":
                bn.gamma.trainable = bn.beta.trainable = False
            elif configuration == "trainable":
                bn.trainable = False
            return model

        return [
            AuditCase("γ/β out of the optimizer, trainable=True", False,
                      "Conv2D → BatchNormalization (gamma.trainable = beta.trainable = False, the layer trainable) "
                      "→ Dense, train_on_batch", net("variables"), None, x, labels),
            AuditCase("layer.trainable=False (fix)", True,
                      "the same, with bn.trainable = False (inference mode even with training=True)",
                      net("trainable"), None, x, labels),
            AuditCase("called with training=False", True,
                      "Conv2D → BatchNormalization (trainable) → Dense, the model called with training=False (the "
                      "transfer-learning guide's call): statistics still, γ/β trained", net("plain"), None, x,
                      labels, {"training": False}),
        ]

    def alexnet_cases(self, arch: AlexNetSpec, params: Mapping[str, np.ndarray], x: np.ndarray, labels: np.ndarray,
                      dropout_masks: list[np.ndarray] | None = None) -> list[AuditCase]:
        def net(*, fixed: bool) -> keras.Model:
            model = from_canonical(arch, dict(params), dtype=np.dtype(np.float32))
            for layer in model.layers_by_name.values():
                if isinstance(layer, _BN):
                    if fixed:
                        layer.trainable = False
                    else:
                        layer.gamma.trainable = layer.beta.trainable = False
            return model

        kwargs = {} if dropout_masks is None else {
            "dropout_masks": [keras.ops.convert_to_tensor(np.asarray(m, np.float32)) for m in dropout_masks]}
        first = net(fixed=False)
        names = {path: bn.name for path, bn in _batch_norms(first).items()}
        return [AuditCase("γ/β out of the optimizer, trainable=True", False,
                          "BN gamma.trainable = beta.trainable = False, layers trainable, train_on_batch", first,
                          None, x, labels, kwargs, names=names),
                AuditCase("layer.trainable=False (fix)", True, "the same, bn.trainable = False on every BN layer",
                          net(fixed=True), None, x, labels, kwargs, names=names)]
