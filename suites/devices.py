"""Which frameworks a command can run on `--device gpu` (or `cuda`): each framework asked in a process of its own,
before the command reads data or makes a directory, so that a machine without the device stops at once in one line.
"""

from __future__ import annotations

from bnparity.frameworks.registry import named_frameworks
from bnparity.frameworks.training import canonical_device, device_plan, probe_devices

from .errors import UserError


def on_device(frameworks: tuple[str, ...], device: str, frameworks_text: str | None) -> tuple[str, ...]:
    """The frameworks of `frameworks` that can use `device` (as the user spelled it), each asked in a process of its
    own (before this one imports any: a library's start-up lines stay out of the one-line error); those that cannot
    are printed as skipped. Raises UserError (one line) when one named in --frameworks (`frameworks_text`) cannot,
    or none can. On the CPU: `frameworks`, nothing started."""
    if canonical_device(device) == "cpu":
        return frameworks
    plan = device_plan(probe_devices(frameworks, device), device, named_frameworks(frameworks_text))
    if plan.error is not None:
        raise UserError(plan.error)
    for framework, reason in plan.skipped.items():
        print(f"skipped on {device}: {framework}: {reason}", flush=True)
    return tuple(f for f in frameworks if f not in plan.skipped)
