"""The frozen-BatchNorm audit in PyTorch: one fine-tuning step on a deep copy of a torch.nn.Module.

What "frozen" does in torch 2.13 (torch/nn/modules/batchnorm.py, _BatchNorm.forward, lines 176-224):
- `requires_grad=False` on weight and bias only keeps the optimizer off them. The module's `training` flag decides
  the rest: in train mode `bn_training = True` (line 200-201), so the output uses the batch's statistics, and the
  running buffers are passed to F.batch_norm, which updates them *in the forward pass* (lines 213-218); so does a
  forward under `torch.no_grad()` (autograd is not involved in the buffer update).
- `track_running_stats=False` set after construction keeps the buffers still (they are not passed in train mode,
  lines 213-218) but the train-mode output still uses batch statistics: what the model trains on is not what it
  will compute in eval mode.
- `.eval()` on the BatchNorm modules after `model.train()` (torch/nn/modules/module.py, Module.train, line 2885,
  sets every child's flag, so it must come after it) makes `bn_training` False: running statistics used, not
  updated. That is the fix.

The step is the one a torch user writes: the model in the modes its modules are in (call the audit on the model as
your loop has it after `model.train()` and any `.eval()` of BatchNorms), forward, the loss (cross-entropy with
labels, else the sum of the outputs), backward, torch.optim.SGD on the parameters with requires_grad. It runs on
`copy.deepcopy(model)` under `torch.random.fork_rng` (dropout draws from a seeded generator; the user's generator
state is untouched), so the user's module stays bit-identical.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from bnparity.frameworks.audit import AuditCase, LayerAudit, ModelAudit, max_abs_change, relative_change
from bnparity.frameworks.audit import FrozenAudit as _FrozenAuditBase
from bnparity.frameworks.user_layers import another_frameworks_object
from bnparity.reference.alexnet import layer_shapes

from .alexnet import from_canonical
from .convert import to_numpy
from .descriptor import DESCRIPTOR

_BatchNorm = torch.nn.modules.batchnorm._BatchNorm
FIX = "call .eval() on the BatchNorm modules after model.train() (requires_grad=False alone does not freeze them)"


def _kind(module: torch.nn.Module) -> str:
    cls = type(module)
    return f"torch.nn.{cls.__name__}" if getattr(torch.nn, cls.__name__, None) is cls else \
        f"{cls.__module__}.{cls.__qualname__}"


def _state(bn: torch.nn.Module) -> dict[str, np.ndarray | None]:
    return {name: None if t is None else to_numpy(t).astype(np.float64)
            for name, t in (("running_mean", bn.running_mean), ("running_var", bn.running_var),
                            ("weight", bn.weight), ("bias", bn.bias))}


def _param_change(before: dict, after: dict) -> float:
    return max(max_abs_change(before["weight"], after["weight"]), max_abs_change(before["bias"], after["bias"]))


def _setting(bn: torch.nn.Module) -> str:
    flags = [p.requires_grad for p in bn.parameters(recurse=False)]
    grads = "no γ/β" if not flags else f"γ/β requires_grad={all(flags) if len(set(flags)) == 1 else flags}"
    return f"{grads}, training={bn.training}, track_running_stats={bn.track_running_stats}"


def _tensor(x: object, like: torch.Tensor | None) -> torch.Tensor:
    t = x if isinstance(x, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(np.asarray(x)))
    t = t.detach().clone()
    if like is not None and t.is_floating_point():
        t = t.to(dtype=like.dtype, device=like.device)
    return t


class FrozenAudit(_FrozenAuditBase):
    """Audits torch.nn BatchNorm modules, alone or inside any torch.nn.Module."""

    framework = DESCRIPTOR.name
    supported = "a torch.nn.Module holding torch.nn.BatchNorm1d/2d/3d or SyncBatchNorm layers (or one of them)"
    fix = FIX

    def can_read(self, obj: object) -> bool:
        return isinstance(obj, torch.nn.Module) and not another_frameworks_object(obj, self.framework)

    def audit(self, model: object, x: object, *, variables: object | None = None, labels: object | None = None,
              frozen: Callable[[str], bool] | None = None, call_kwargs: Mapping[str, Any] | None = None,
              lr: float = 0.1) -> ModelAudit:
        if not isinstance(model, torch.nn.Module):
            raise TypeError(f"torch: expected {self.supported}. Received: {type(model).__qualname__}")
        alone = isinstance(model, _BatchNorm)
        originals = {name: m for name, m in model.named_modules() if isinstance(m, _BatchNorm)}
        if not originals:
            raise TypeError(f"torch: {_kind(model)} holds no BatchNorm layer; expected {self.supported}")
        net = copy.deepcopy(model)
        if frozen is not None:
            for name, p in net.named_parameters():
                p.requires_grad_(not frozen(name))
        layers = {name: m for name, m in net.named_modules() if isinstance(m, _BatchNorm)}
        before = {name: _state(m) for name, m in layers.items()}
        settings = {name: _setting(m) for name, m in layers.items()}
        training = {name: m.training for name, m in layers.items()}
        params_frozen = {name: not any(p.requires_grad for p in m.parameters(recurse=False))
                         for name, m in layers.items()}
        seen: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        def capture(name: str) -> Callable[..., None]:
            def hook(module: torch.nn.Module, args: tuple, out: torch.Tensor) -> None:
                seen.setdefault(name, (args[0].detach().clone(), out.detach().clone()))  # its first call
            return hook

        hooks = [m.register_forward_hook(capture(name)) for name, m in layers.items()]
        first = next((t for t in (*net.parameters(), *net.buffers()) if t.is_floating_point()), None)
        xt = _tensor(x, first)
        if alone:
            xt.requires_grad_(True)  # a layer audited alone sits in a network that trains below it
        trainable = [p for p in net.parameters() if p.requires_grad]
        optimizer = torch.optim.SGD(trainable, lr=lr) if trainable else None
        kwargs = dict(call_kwargs or {})
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            out = net(xt, **kwargs)
            loss = out.sum() if labels is None else F.cross_entropy(out, _tensor(labels, None).long())
            if loss.requires_grad:
                loss.backward()
            if optimizer is not None:
                optimizer.step()
        for h in hooks:
            h.remove()
        results = []
        for name, m in layers.items():
            after = _state(m)
            gap = None
            if name in seen:
                reference = copy.deepcopy(originals[name]).eval()  # its state from before the step
                with torch.no_grad():
                    y_eval = reference(seen[name][0])
                gap = float((seen[name][1].double() - y_eval.double()).abs().max())
            results.append(LayerAudit(
                layer=name, framework=self.framework, kind=_kind(m), params_frozen=params_frozen[name],
                batch_statistics=training[name], setting=settings[name],
                running_mean_change=max_abs_change(before[name]["running_mean"], after["running_mean"]),
                running_var_change=max_abs_change(before[name]["running_var"], after["running_var"]),
                running_mean_relative=relative_change(before[name]["running_mean"], after["running_mean"]),
                running_var_relative=relative_change(before[name]["running_var"], after["running_var"]),
                param_change=_param_change(before[name], after), output_gap=gap, fix=FIX,
                note="" if name in seen else "the forward pass never ran it"))
        loss_words = "sum of outputs" if labels is None else "cross-entropy"
        step = (f"modules in their own modes, forward, {loss_words}, backward, SGD(lr={lr:g}) on the "
                f"{len(trainable)} parameters with requires_grad")
        return ModelAudit(framework=self.framework, kind=_kind(model), step=step, layers=tuple(results))

    def cases(self, seed: int = 0) -> list[AuditCase]:
        rng = np.random.default_rng(seed)
        x = (2 * rng.standard_normal((8, 3, 6, 6)) + 1).astype(np.float32)
        labels = rng.integers(0, 4, 8)

        def net(*, eval_bn: bool) -> torch.nn.Module:
            torch.manual_seed(seed)
            model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.BatchNorm2d(4),
                                        torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(144, 4))
            for p in model[1].parameters():
                p.requires_grad_(False)
            model.train()
            if eval_bn:
                model[1].eval()
            return model

        return [
            AuditCase("requires_grad=False", False, "Conv2d → BatchNorm2d (γ, β requires_grad=False) → Linear, "
                      "model.train()", net(eval_bn=False), None, x, labels),
            AuditCase("BN .eval() (fix)", True, "the same, with .eval() on the BatchNorm2d after model.train()",
                      net(eval_bn=True), None, x, labels),
        ]

    def alexnet_cases(self, arch: Any, params: Mapping[str, np.ndarray], x: np.ndarray, labels: np.ndarray,
                      dropout_masks: list[np.ndarray] | None = None) -> list[AuditCase]:
        def net(*, eval_bn: bool) -> torch.nn.Module:
            model = from_canonical(arch, dict(params), dtype=np.dtype(np.float32))
            for m in model.modules():
                if isinstance(m, _BatchNorm):
                    for p in m.parameters():
                        p.requires_grad_(False)
            model.train()
            for m in model.modules():
                if eval_bn and isinstance(m, _BatchNorm):
                    m.eval()
            return model

        kwargs = {} if dropout_masks is None else {
            "dropout_masks": [torch.from_numpy(np.asarray(m, np.float32)) for m in dropout_masks]}
        names = {f"layers.{s.layer.name}": s.layer.name for s in layer_shapes(arch)}
        return [AuditCase("requires_grad=False", False, "BN γ, β requires_grad=False, model.train()",
                          net(eval_bn=False), None, x, labels, kwargs, names=names),
                AuditCase("BN .eval() (fix)", True, "the same, .eval() on every BatchNorm after model.train()",
                          net(eval_bn=True), None, x, labels, kwargs, names=names)]
