"""audit_frozen: does your "frozen" BatchNorm still change during fine-tuning?

One fine-tuning step runs on a copy of your layer or model (frameworks/<fw>/audit.py, `FrozenAudit`), the way that
framework's training loops run it, and every BatchNorm layer is reported: how far its running statistics moved,
whether γ/β moved, whether the step trained on batch statistics, and the fix in that framework.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from bnparity.frameworks.audit import FrozenAudit, LayerAudit, ModelAudit, load_audits
from bnparity.frameworks.registry import display_name


@dataclass(frozen=True)
class FrozenAuditResult:
    """What audit_frozen found.

    Attributes:
        audit: the framework's record: how the step ran and one LayerAudit per BatchNorm layer.
    """

    audit: ModelAudit

    @property
    def layers(self) -> tuple[LayerAudit, ...]:
        return self.audit.layers

    @property
    def drifted(self) -> tuple[LayerAudit, ...]:
        """The layers the step changed (running statistics, or frozen γ/β)."""
        return self.audit.drifted

    @property
    def frozen(self) -> bool:
        """Whether every BatchNorm stayed still and computed its eval-mode output."""
        return self.audit.frozen

    @property
    def message(self) -> str:
        """Which layers drifted, by how much, and the fix; one line per layer."""
        head = (f"{display_name(self.audit.framework)} {self.audit.kind}: "
                + ("every BatchNorm stayed frozen" if self.frozen else
                   f"{len(self.drifted)} of {len(self.layers)} BatchNorm layer(s) drifted"
                   + ("" if self.drifted else "; some trained on batch statistics"))
                + f" after one step ({self.audit.step}).")
        return head + "".join(f"\n  {layer.describe()}" + (f" [{layer.note}]" if layer.note else "")
                              for layer in self.layers)

    def __str__(self) -> str:
        return self.message


def _audit_of(model: object) -> FrozenAudit:
    found, missing = load_audits(imported_only=True)
    for audit in found:
        if audit.can_read(model):
            return audit
    absent = "; ".join(u.reason for u in missing)
    expected = "; or ".join(a.supported for a in found) or "no installed framework"
    raise TypeError(f"audit_frozen expects {expected}. Received: {type(model).__module__}.{type(model).__qualname__}"
                    + (f" ({absent})" if absent else ""))


def audit_frozen(layer_or_model: object, x: object, *, variables: object | None = None, labels: object | None = None,
                 frozen: Callable[[str], bool] | None = None, call_kwargs: Mapping[str, Any] | None = None,
                 lr: float = 0.1) -> FrozenAuditResult:
    """One fine-tuning step on a copy of your layer or model; what it did to every BatchNorm.

    Args:
        layer_or_model: a BatchNorm layer or a model holding some: a torch.nn.Module (in the modes your loop
            leaves it after model.train()), a Gluon Block, a flax.linen module (with `variables`) or an nnx module.
        x: an input batch (NumPy or the framework's tensor), in the layout the model takes.
        variables: a flax.linen module's variables.
        labels: integer labels (cross-entropy loss); None: the sum of the outputs.
        frozen: parameter path -> whether your optimizer leaves it alone (default: torch's requires_grad, Gluon's
            grad_req; for Flax every BatchNorm's scale and bias).
        call_kwargs: keyword arguments of the model's call (e.g. Flax's train=True).
        lr: the SGD learning rate.

    Raises:
        TypeError: no installed framework reads the object, or it holds no BatchNorm.
    """
    audit = _audit_of(layer_or_model)
    return FrozenAuditResult(audit.audit(layer_or_model, x, variables=variables, labels=labels, frozen=frozen,
                                         call_kwargs=call_kwargs, lr=lr))
