"""The frozen-BatchNorm audit in MXNet Gluon: one fine-tuning step on a deep copy of a Gluon Block.

What "frozen" does in MXNet 1.9.1 (mxnet/gluon/nn/basic_layers.py, _BatchNorm, lines 282-375):
- `grad_req='null'` on γ and β (what `center=False, scale=False` set too, lines 345-352) only keeps the optimizer off
  them. Under `autograd.record()` (train_mode=True, mxnet/autograd.py line 120) the operator normalizes with the
  batch's statistics, and its moving mean and variance are updated by `_backward_BatchNorm`, not by the forward pass
  (frameworks/mxnet/convention.py `running_stats_written`, proved by tests/test_mxnet_conventions.py): measured
  here, running_mean is unchanged after the forward pass inside `record()` and changed once `backward()` returns,
  hybridized or not. So a frozen BatchNorm that backward never reaches (nothing trainable below it: only the head is
  fine-tuned) keeps its statistics, but still trains the head on batch-normalized features.
- `use_global_stats=True` (passed to the operator, line 340) normalizes with the moving statistics and leaves them
  alone in training mode too: the fix. `autograd.record(train_mode=False)` or `autograd.predict_mode()` does the same
  for the whole graph, Dropout included.

The step is the one a Gluon user writes: `autograd.record()`, forward, the loss (SoftmaxCrossEntropyLoss with labels,
else the sum of the outputs), `backward()`, `gluon.Trainer(..., 'sgd').step(1)` on the parameters whose grad_req is
not 'null'. It runs on a deep copy of the block (hybridized blocks' compiled graphs are not copied; the copy runs
imperatively so that every BatchNorm's input and output can be seen: the same operator), so the user's block and its
parameters stay bit-identical.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import numpy as np

from bnparity.frameworks.audit import AuditCase, LayerAudit, ModelAudit, max_abs_change, relative_change
from bnparity.frameworks.audit import FrozenAudit as _FrozenAuditBase
from bnparity.reference.alexnet import layer_shapes

from ._mx import autograd, gluon, mx, nd
from .alexnet import AlexNet, from_canonical
from .convert import to_numpy
from .descriptor import DESCRIPTOR

_BatchNorm = gluon.nn.basic_layers._BatchNorm
FIX = "construct the BatchNorm with use_global_stats=True (grad_req='null' alone does not freeze it)"
_UNREACHED = ("its running statistics did not move because backward never reached it (MXNet updates them in "
              "the backward pass), but it normalized with batch statistics")


def _blocks(block: gluon.Block, path: str = "") -> Iterator[tuple[str, gluon.Block]]:
    """(dotted path, block) of `block` and every descendant, in registration order."""
    yield path, block
    for name, child in block._children.items():
        yield from _blocks(child, f"{path}.{name}" if path else name)


def _copy(block: gluon.Block) -> gluon.Block:
    """A deep copy of `block` with fresh gradient buffers, running imperatively.

    A hybridized block's CachedOp holds C pointers that cannot be copied: the memo maps each to None (each cached
    graph to the empty one, each construction-time name scope to None: the copy adds no child), so the copy
    rebuilds nothing and runs block by block. A copied Parameter's
    gradient is no longer attached to autograd: switching its grad_req to 'null' and back re-attaches it
    (mxnet/gluon/parameter.py, the grad_req setter, lines 144-157).
    """
    memo: dict[int, Any] = {}
    for _, b in _blocks(block):
        if getattr(b, "_cached_op", None) is not None:
            memo[id(b._cached_op)] = None
        if getattr(b, "_cached_graph", ()):
            memo[id(b._cached_graph)] = ()
        if getattr(b, "_scope", None) is not None:
            memo[id(b._scope)] = None  # the naming scope of construction (it may reach a compiled parent)
    clone = copy.deepcopy(block, memo)
    if isinstance(clone, gluon.HybridBlock):
        clone.hybridize(active=False)
    for p in clone.collect_params().values():
        req = p.grad_req
        if req != "null":
            p.grad_req = "null"
            p.grad_req = req
    return clone


def _state(bn: gluon.Block) -> dict[str, np.ndarray]:
    return {name: to_numpy(getattr(bn, name).data()).astype(np.float64)
            for name in ("running_mean", "running_var", "gamma", "beta")}


def _kind(block: gluon.Block) -> str:
    cls = type(block)
    for module in (gluon.nn, gluon.contrib.nn):
        if getattr(module, cls.__name__, None) is cls:
            return f"{module.__name__}.{cls.__name__}"
    return f"{cls.__module__}.{cls.__qualname__}"


def _global_stats(bn: gluon.Block) -> bool:
    return bool(bn._kwargs.get("use_global_stats", False))


def _array(x: object, like: gluon.Parameter | None) -> nd.NDArray:
    if isinstance(x, nd.NDArray):
        x = to_numpy(x)
    a = np.asarray(x)
    if like is not None and np.issubdtype(a.dtype, np.floating):
        return nd.array(a, dtype=np.dtype(like.dtype), ctx=like.list_ctx()[0])
    return nd.array(a, dtype=a.dtype)


class FrozenAudit(_FrozenAuditBase):
    """Audits Gluon BatchNorm blocks, alone or inside any Gluon Block."""

    framework = DESCRIPTOR.name
    supported = "a gluon Block holding mxnet.gluon.nn.BatchNorm (or SyncBatchNorm) layers (or one of them)"
    fix = FIX

    def can_read(self, obj: object) -> bool:
        return isinstance(obj, gluon.Block)

    def audit(self, model: object, x: object, *, variables: object | None = None, labels: object | None = None,
              frozen: Callable[[str], bool] | None = None, call_kwargs: Mapping[str, Any] | None = None,
              lr: float = 0.1) -> ModelAudit:
        if not isinstance(model, gluon.Block):
            raise TypeError(f"mxnet: expected {self.supported}. Received: {type(model).__qualname__}")
        alone = isinstance(model, _BatchNorm)
        originals = {path: b for path, b in _blocks(model) if isinstance(b, _BatchNorm)}
        if not originals:
            raise TypeError(f"mxnet: {_kind(model)} holds no BatchNorm layer; expected {self.supported}")
        net = _copy(model)
        params = net.collect_params()
        if frozen is not None:
            for name, p in params.items():
                p.grad_req = "null" if frozen(name) else "write"
        layers = {path: b for path, b in _blocks(net) if isinstance(b, _BatchNorm)}
        before = {path: _state(b) for path, b in layers.items()}
        params_frozen = {path: b.gamma.grad_req == "null" and b.beta.grad_req == "null" for path, b in layers.items()}
        settings = {path: f"γ/β grad_req={b.gamma.grad_req!r}/{b.beta.grad_req!r}, use_global_stats="
                          f"{_global_stats(b)}, under autograd.record()" for path, b in layers.items()}
        seen: dict[str, tuple[np.ndarray, np.ndarray]] = {}

        def capture(path: str) -> Callable[..., None]:
            def hook(block: gluon.Block, args: tuple, out: nd.NDArray) -> None:
                if path not in seen:  # its first call
                    seen[path] = (to_numpy(args[0]), to_numpy(out))
            return hook

        hooks = [b.register_forward_hook(capture(path)) for path, b in layers.items()]
        xt = _array(x, next(iter(params.values()), None))
        if alone:
            xt.attach_grad()  # a layer audited alone sits in a network that trains below it
        trainable = [p for p in params.values() if p.grad_req != "null"]
        note = ""
        with autograd.record():
            # Block.__call__ takes no keyword arguments: they go to forward (whose children are still called)
            out = net.forward(xt, **call_kwargs) if call_kwargs else net(xt)
            if labels is None:
                loss = out.sum()
            else:
                loss = gluon.loss.SoftmaxCrossEntropyLoss()(out, _array(labels, None).astype(out.dtype)).mean()
        try:
            loss.backward()
        except mx.base.MXNetError as e:
            if "Cannot differentiate" not in str(e):
                raise
            note = "backward did not run: nothing in the graph needs a gradient"
        if trainable and not note:
            gluon.Trainer(trainable, "sgd", {"learning_rate": lr}).step(1)
        for h in hooks:
            h.detach()
        results = []
        for path, b in layers.items():
            after = _state(b)
            gap, layer_note = None, note
            if path in seen:
                reference = _copy(originals[path])  # its state from before the step, outside record(): eval
                y_eval = to_numpy(reference(nd.array(seen[path][0], dtype=seen[path][0].dtype)))
                gap = float(np.max(np.abs(seen[path][1].astype(np.float64) - y_eval)))
            else:
                layer_note = "the forward pass never ran it"
            moved = max_abs_change(before[path]["running_mean"], after["running_mean"]) > 0
            if not moved and not _global_stats(b) and not layer_note:
                layer_note = _UNREACHED
            results.append(LayerAudit(
                layer=path, framework=self.framework, kind=_kind(b), params_frozen=params_frozen[path],
                batch_statistics=not _global_stats(b), setting=settings[path],
                running_mean_change=max_abs_change(before[path]["running_mean"], after["running_mean"]),
                running_var_change=max_abs_change(before[path]["running_var"], after["running_var"]),
                running_mean_relative=relative_change(before[path]["running_mean"], after["running_mean"]),
                running_var_relative=relative_change(before[path]["running_var"], after["running_var"]),
                param_change=max(max_abs_change(before[path]["gamma"], after["gamma"]),
                                 max_abs_change(before[path]["beta"], after["beta"])),
                output_gap=gap, fix=FIX, note=layer_note))
        loss_words = "sum of outputs" if labels is None else "SoftmaxCrossEntropyLoss, mean"
        step = (f"autograd.record(), forward, {loss_words}, backward, Trainer('sgd', lr={lr:g}).step(1) on the "
                f"{len(trainable)} parameters with grad_req != 'null'")
        return ModelAudit(framework=self.framework, kind=_kind(model), step=step, layers=tuple(results))

    def cases(self, seed: int = 0) -> list[AuditCase]:
        rng = np.random.default_rng(seed)
        x = (2 * rng.standard_normal((8, 3, 6, 6)) + 1).astype(np.float32)
        labels = rng.integers(0, 4, 8)

        def net(*, global_stats: bool, head_only: bool = False) -> gluon.Block:
            mx.random.seed(seed)
            model = gluon.nn.HybridSequential()
            with model.name_scope():
                model.add(gluon.nn.Conv2D(4, 3, padding=1, in_channels=3),
                          gluon.nn.BatchNorm(in_channels=4, use_global_stats=global_stats),
                          gluon.nn.Activation("relu"), gluon.nn.Flatten(), gluon.nn.Dense(4, in_units=144))
            model.initialize(mx.init.Xavier())
            for block in (model[1], model[0]) if head_only else (model[1],):
                for p in block.collect_params().values():
                    p.grad_req = "null"
            model.hybridize()
            return model

        return [
            AuditCase("grad_req='null'", False, "Conv2D → BatchNorm (γ, β grad_req='null') → Dense, under "
                      "autograd.record()", net(global_stats=False), None, x, labels),
            AuditCase("head only", False, "the same with the Conv2D frozen too: only the Dense trains (backward "
                      "never reaches the BatchNorm)", net(global_stats=False, head_only=True), None, x, labels),
            AuditCase("use_global_stats=True (fix)", True, "the same BatchNorm(use_global_stats=True)",
                      net(global_stats=True), None, x, labels),
        ]

    def alexnet_cases(self, arch: Any, params: Mapping[str, np.ndarray], x: np.ndarray, labels: np.ndarray,
                      dropout_masks: list[np.ndarray] | None = None) -> list[AuditCase]:
        def net(*, global_stats: bool) -> AlexNet:
            model = from_canonical(arch, dict(params), dtype=np.dtype(np.float32))
            for _, b in _blocks(model):
                if isinstance(b, _BatchNorm):
                    for p in (b.gamma, b.beta):
                        p.grad_req = "null"
                    # the operator's keyword arguments (basic_layers.py line 340): what use_global_stats=True
                    # at construction sets; the blocks are rebuilt imperatively by the audit's copy
                    b._kwargs["use_global_stats"] = global_stats
            return model

        kwargs = {} if dropout_masks is None else {
            "dropout_masks": [nd.array(np.asarray(m, np.float32)) for m in dropout_masks]}
        names = {str(i): s.layer.name for i, s in enumerate(layer_shapes(arch))}
        return [AuditCase("grad_req='null'", False, "BN γ, β grad_req='null', under autograd.record()",
                          net(global_stats=False), None, x, labels, kwargs, names=names),
                AuditCase("use_global_stats=True (fix)", True, "the same, every BatchNorm use_global_stats=True",
                          net(global_stats=True), None, x, labels, kwargs, names=names)]
