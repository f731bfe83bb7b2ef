"""The records of `bnparity audit` (format bnparity-audit/1): one per framework and "frozen" configuration.

Each record holds the framework's per-layer results as frameworks/audit.py defines them (`LayerAudit`), so that a
report reads them through the same class.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from bnparity.frameworks.audit import LayerAudit
from bnparity.suites.schema import Environment, FormatError, format_string, from_dict, parse_format

AUDIT = "audit"
AUDIT_VERSION = 1
FORMAT = format_string(AUDIT, AUDIT_VERSION)


@dataclass(frozen=True)
class AuditRecord:
    """One framework's model in one "frozen" configuration, after one fine-tuning step.

    Attributes:
        framework: the framework's descriptor name.
        configuration: how BatchNorm was frozen ("requires_grad=False", "BN .eval() (fix)").
        fixed: whether it is the framework's fix (expected not to drift).
        description: the configuration in the framework's words.
        model: the audited object's type.
        step: how the step ran.
        layers: one result per BatchNorm layer.
    """

    framework: str
    configuration: str
    fixed: bool
    description: str
    model: str
    step: str
    layers: tuple[LayerAudit, ...]

    @property
    def drifted(self) -> tuple[LayerAudit, ...]:
        return tuple(layer for layer in self.layers if layer.drifted)


@dataclass(frozen=True)
class AuditSkip:
    """A framework that was not audited, with the one-line reason."""

    framework: str
    reason: str


@dataclass(frozen=True)
class AuditMeta:
    """What was audited.

    Attributes:
        environment: versions and machine.
        source: "hand-built" (small models built by the command) or the run whose checkpoints were audited.
        run_dir: the run directory (None for hand-built models).
        epoch: the checkpoint's epoch per run (empty for hand-built models).
        images: the batch size of the step (the run's first test images, or the hand-built input's).
        lr: the step's SGD learning rate.
    """

    environment: Environment
    source: str
    run_dir: str | None
    epoch: dict[str, int]
    images: int
    lr: float


@dataclass(frozen=True)
class AuditDoc:
    """An audit.json document."""

    meta: AuditMeta
    records: tuple[AuditRecord, ...]
    skipped: tuple[AuditSkip, ...] = ()
    format: str = FORMAT


def load_audit(data: object, *, where: str = "audit.json") -> AuditDoc:
    """An AuditDoc from its JSON data. Raises FormatError (one line) for anything else."""
    if not isinstance(data, Mapping):
        raise FormatError(f"{where}: expected a JSON object. Received: {type(data).__name__}")
    parse_format(data.get("format"), family=AUDIT, current=AUDIT_VERSION, where=where)
    body: dict[str, Any] = dict(data)
    return from_dict(AuditDoc, body, where=where)
