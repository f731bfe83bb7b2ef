"""The frozen-BatchNorm audit in JAX/Flax: one fine-tuning step of a flax.linen module with its variables, or of a
copy of a flax.nnx module.

What "frozen" does in flax 0.12.0:
- linen (flax/linen/normalization.py, BatchNorm.__call__, lines 351-404): `use_running_average` (the attribute, or
  the call argument: `merge_param`, line 351) alone decides. False: the output uses the batch's statistics and, when
  the step applies the model with `mutable=["batch_stats"]` (as every training step must, or Flax raises
  ModifyScopeVariableError), `ra_mean.value`/`ra_var.value` are written (lines 400-404). Freezing the parameters in
  the optimizer (optax.multi_transform with optax.set_to_zero for the BatchNorm's scale and bias) touches only
  "params": batch_stats is another collection, the optimizer never sees it. The fix: use_running_average=True.
- nnx (flax/nnx/nn/normalization.py, BatchNorm.__call__, lines 336-366): the same with `self.use_running_average`,
  which `module.eval()` sets to True on every sub-module (flax/nnx/module.py, Module.eval, line 446); the statistics
  are written into the module itself in the forward pass; an nnx.Optimizer whose `wrt` leaves BatchNorm's nnx.Param
  out does not freeze them either.

The step is the one a Flax user writes: jax.value_and_grad over the params of a loss (cross-entropy with labels,
else the sum of the outputs) of `apply(..., mutable=["batch_stats"])`, then optax SGD through
optax.multi_transform: "frozen" parameters (default: every BatchNorm's scale and bias) get optax.set_to_zero.
linen variables are immutable arrays, and an nnx module is copied with nnx.clone: the user's objects are unchanged.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from bnparity.frameworks.audit import AuditCase, LayerAudit, ModelAudit, max_abs_change, relative_change
from bnparity.frameworks.audit import FrozenAudit as _FrozenAuditBase

from .alexnet import AlexNet, from_canonical
from .convert import to_numpy
from .descriptor import DESCRIPTOR

FIX = ("construct the BatchNorm with use_running_average=True or pass it at call time (nnx: module.eval()); "
       "leaving its params out of the optimizer does not freeze batch_stats")


def _path_str(path: tuple) -> str:
    return "/".join(str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k)))) for k in path)


def _at(tree: Any, path: tuple[str, ...]) -> Any:
    for key in path:
        tree = tree[key]
    return tree


def _np(tree: Any, path: tuple[str, ...], leaf: str) -> np.ndarray | None:
    try:
        return to_numpy(_at(tree, path)[leaf]).astype(np.float64)
    except (KeyError, TypeError):
        return None


def _loss(out: jax.Array, labels: jax.Array | None) -> jax.Array:
    if labels is None:
        return jnp.sum(out)
    return optax.softmax_cross_entropy_with_integer_labels(out, labels).mean()


def _optimizer(params: Any, frozen: Callable[[str], bool], lr: float) -> tuple[optax.GradientTransformation, int]:
    """optax.sgd on the parameters `frozen` does not name, set_to_zero on the others; and how many train."""
    labels = jax.tree_util.tree_map_with_path(lambda p, _: "frozen" if frozen(_path_str(p)) else "train", params)
    count = sum(1 for v in jax.tree_util.tree_leaves(labels) if v == "train")
    return optax.multi_transform({"train": optax.sgd(lr), "frozen": optax.set_to_zero()}, labels), count


def _layer_audit(path: str, kind: str, *, params_frozen: bool, running: bool, before: dict, after: dict,
                 gap: float | None, setting: str) -> LayerAudit:
    return LayerAudit(
        layer=path, framework=DESCRIPTOR.name, kind=kind, params_frozen=params_frozen, batch_statistics=not running,
        setting=setting,
        running_mean_change=max_abs_change(before["mean"], after["mean"]),
        running_var_change=max_abs_change(before["var"], after["var"]),
        running_mean_relative=relative_change(before["mean"], after["mean"]),
        running_var_relative=relative_change(before["var"], after["var"]),
        param_change=max(max_abs_change(before["scale"], after["scale"]),
                         max_abs_change(before["bias"], after["bias"])),
        output_gap=gap, fix=FIX, note="" if gap is not None else "the forward pass never ran it")


class FrozenAudit(_FrozenAuditBase):
    """Audits Flax BatchNorm layers: a linen module with its variables, or an nnx module, alone or in a model."""

    framework = DESCRIPTOR.name
    supported = ("a flax.linen module with its variables (batch_stats of flax.linen.BatchNorm layers), or a "
                 "flax.nnx module holding nnx.BatchNorm layers")
    fix = FIX

    def can_read(self, obj: object) -> bool:
        return isinstance(obj, nn.Module | nnx.Module)

    def audit(self, model: object, x: object, *, variables: object | None = None, labels: object | None = None,
              frozen: Callable[[str], bool] | None = None, call_kwargs: Mapping[str, Any] | None = None,
              lr: float = 0.1) -> ModelAudit:
        if isinstance(model, nnx.Module):
            return self._audit_nnx(model, x, labels=labels, frozen=frozen, call_kwargs=call_kwargs, lr=lr)
        if not isinstance(model, nn.Module):
            raise TypeError(f"jax: expected {self.supported}. Received: {type(model).__qualname__}")
        if not isinstance(variables, Mapping) or "params" not in variables and "batch_stats" not in variables:
            raise TypeError("jax: a flax.linen module needs its variables ({'params': ..., 'batch_stats': ...}). "
                            f"Received: {type(variables).__name__}")
        kwargs = dict(call_kwargs or {})
        params = variables.get("params", {})
        first = next((leaf for leaf in jax.tree_util.tree_leaves(params) if jnp.issubdtype(leaf.dtype, jnp.floating)),
                     None)
        xa = jnp.asarray(to_numpy(x) if isinstance(x, jax.Array) else np.asarray(x),
                         dtype=None if first is None else first.dtype)
        ya = None if labels is None else jnp.asarray(np.asarray(labels), dtype=jnp.int32)
        seen: dict[tuple[str, ...], tuple[nn.BatchNorm, bool, np.ndarray, np.ndarray]] = {}

        def intercept(next_fun: Callable, args: tuple, kw: dict, context: Any) -> Any:
            out = next_fun(*args, **kw)
            module = context.module
            if isinstance(module, nn.BatchNorm) and context.method_name == "__call__":
                path = tuple(module.scope.path)
                uses = kw.get("use_running_average", args[1] if len(args) > 1 else None)
                running = bool(module.use_running_average if uses is None else uses)
                seen.setdefault(path, (module, running, np.asarray(args[0]), np.asarray(out)))
            return out

        with nn.intercept_methods(intercept):  # the step's forward pass, outside differentiation, to see each layer
            model.apply(variables, xa, mutable=["batch_stats"], **kwargs)
        if not seen:
            raise TypeError(f"jax: {type(model).__qualname__} ran no flax.linen.BatchNorm; expected {self.supported}")
        bn_paths = ["/".join(path) for path in seen]
        if frozen is None:
            def frozen(name: str) -> bool:
                return any(name.startswith(f"{p}/") or (not p and "/" not in name) for p in bn_paths)
        tx, count = _optimizer(params, frozen, lr)

        def loss_fn(p: Any) -> tuple[jax.Array, Any]:
            out, updated = model.apply({**variables, "params": p}, xa, mutable=["batch_stats"], **kwargs)
            return _loss(out, ya), updated

        (_, updated), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        updates, _ = tx.update(grads, tx.init(params), params)
        new_params = optax.apply_updates(params, updates)
        new_stats = updated.get("batch_stats", variables.get("batch_stats", {}))
        old_stats = variables.get("batch_stats", {})
        results = []
        for path, (module, running, x_in, y_step) in seen.items():
            before = {"mean": _np(old_stats, path, "mean"), "var": _np(old_stats, path, "var"),
                      "scale": _np(params, path, "scale"), "bias": _np(params, path, "bias")}
            after = {"mean": _np(new_stats, path, "mean"), "var": _np(new_stats, path, "var"),
                     "scale": _np(new_params, path, "scale"), "bias": _np(new_params, path, "bias")}
            alone = module.clone(parent=None, use_running_average=None)
            sub = {c: _at(variables[c], path) for c in ("params", "batch_stats") if c in variables}
            y_eval = np.asarray(alone.apply(sub, jnp.asarray(x_in), use_running_average=True))
            gap = float(np.max(np.abs(y_step.astype(np.float64) - y_eval)))
            name = "/".join(path)
            params_frozen = all(frozen(f"{name}/{leaf}" if name else leaf) for leaf in ("scale", "bias"))
            setting = (f"params {'frozen' if params_frozen else 'trained'} in the optimizer, "
                       f"use_running_average={running}, mutable=['batch_stats']")
            results.append(_layer_audit(name, "flax.linen.BatchNorm", params_frozen=params_frozen, running=running,
                                        before=before, after=after, gap=gap, setting=setting))
        loss_words = "sum of outputs" if labels is None else "cross-entropy"
        step = (f"value_and_grad of {loss_words} of apply(..., mutable=['batch_stats']), optax.multi_transform: "
                f"sgd(lr={lr:g}) on {count} parameters, set_to_zero on the frozen ones")
        return ModelAudit(framework=self.framework, kind=f"{type(model).__module__}.{type(model).__qualname__}",
                          step=step, layers=tuple(results))

    def _audit_nnx(self, model: nnx.Module, x: object, *, labels: object | None,
                   frozen: Callable[[str], bool] | None, call_kwargs: Mapping[str, Any] | None,
                   lr: float) -> ModelAudit:
        """The nnx step: nnx.value_and_grad over the nnx.Param of nnx.clone(model), then optax.
        The layers' inputs are not captured here: output_gap is None (batch_statistics says what the step used)."""
        kwargs = dict(call_kwargs or {})
        net = nnx.clone(model)
        layers = {_path_str(path): m for path, m in nnx.iter_graph(net) if isinstance(m, nnx.BatchNorm)}
        if not layers:
            raise TypeError(f"jax: {type(model).__qualname__} holds no nnx.BatchNorm; expected {self.supported}")
        if frozen is None:
            def frozen(name: str) -> bool:
                return any(name.startswith(f"{p}/") or (not p and "/" not in name) for p in layers)

        def state(m: nnx.BatchNorm) -> dict[str, np.ndarray | None]:
            return {k: None if getattr(m, k) is None else to_numpy(getattr(m, k).value).astype(np.float64)
                    for k in ("mean", "var", "scale", "bias")}

        before = {p: state(m) for p, m in layers.items()}
        running = {p: bool(m.use_running_average) for p, m in layers.items()}
        xa = jnp.asarray(to_numpy(x) if isinstance(x, jax.Array) else np.asarray(x))
        ya = None if labels is None else jnp.asarray(np.asarray(labels), dtype=jnp.int32)
        def loss_fn(m: nnx.Module) -> jax.Array:
            return _loss(m(xa, **kwargs), ya)

        grads = nnx.value_and_grad(loss_fn)(net)[1]  # over nnx.Param; BatchStat written into `net` in the forward
        params = nnx.state(net, nnx.Param)
        pure = nnx.to_pure_dict(params)
        tx, count = _optimizer(pure, frozen, lr)
        updates, _ = tx.update(nnx.to_pure_dict(grads), tx.init(pure), pure)
        nnx.replace_by_pure_dict(params, optax.apply_updates(pure, updates))
        nnx.update(net, params)
        results = []
        for p, m in layers.items():
            params_frozen = all(frozen(f"{p}/{leaf}" if p else leaf) for leaf in ("scale", "bias"))
            setting = (f"params {'frozen' if params_frozen else 'trained'} in the optimizer, "
                       f"use_running_average={running[p]}")
            audit = _layer_audit(p, "flax.nnx.BatchNorm", params_frozen=params_frozen, running=running[p],
                                 before=before[p], after=state(m), gap=None, setting=setting)
            results.append(dataclasses.replace(audit, note="nnx: the layer's output is not compared with eval mode"))
        loss_words = "sum of outputs" if labels is None else "cross-entropy"
        step = (f"value_and_grad over nnx.Param of {loss_words}, optax.multi_transform: sgd(lr={lr:g}) on {count} "
                f"parameters, set_to_zero on the frozen ones")
        return ModelAudit(framework=self.framework, kind=f"{type(model).__module__}.{type(model).__qualname__}",
                          step=step, layers=tuple(results))

    def cases(self, seed: int = 0) -> list[AuditCase]:
        rng = np.random.default_rng(seed)
        x = (2 * rng.standard_normal((8, 6, 6, 3)) + 1).astype(np.float32)  # NHWC, Flax's layout
        labels = rng.integers(0, 4, 8)
        cases = []
        for fixed in (False, True):
            model = _Small(use_running_average=fixed)
            variables = model.init(jax.random.PRNGKey(seed), jnp.asarray(x))
            cases.append(AuditCase(
                "use_running_average=True (fix)" if fixed else "params frozen, use_running_average=False", fixed,
                f"Conv → BatchNorm(use_running_average={fixed}) → Dense, the BatchNorm's scale and bias "
                "set_to_zero in optax.multi_transform", model, variables, x, labels))
        return cases

    def alexnet_cases(self, arch: Any, params: Mapping[str, np.ndarray], x: np.ndarray, labels: np.ndarray,
                      dropout_masks: list[np.ndarray] | None = None) -> list[AuditCase]:
        variables = from_canonical(arch, dict(params), dtype=np.dtype(np.float32))
        masks = None if dropout_masks is None else [jnp.asarray(np.asarray(m, np.float32)) for m in dropout_masks]
        model = AlexNet(arch)
        return [AuditCase("params frozen, use_running_average=False", False,
                          "BN scale, bias set_to_zero in optax; AlexNet(train=True): use_running_average=False",
                          model, variables, x, labels, {"train": True, "dropout_masks": masks}),
                AuditCase("use_running_average=True (fix)", True,
                          "the same with train=False (use_running_average=True; the dropout masks still applied)",
                          model, variables, x, labels, {"train": False, "dropout_masks": masks})]


class _Small(nn.Module):
    """Conv → BatchNorm → ReLU → Dense: the hand-built model of `FrozenAudit.cases`."""

    use_running_average: bool = False

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        x = nn.Conv(4, (3, 3), name="conv")(x)
        x = nn.relu(nn.BatchNorm(use_running_average=self.use_running_average, name="bn")(x))
        return nn.Dense(4, name="fc")(x.reshape((x.shape[0], -1)))
