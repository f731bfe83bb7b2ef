"""Which conventions two users' layers state alike and which differ: one line each, in each framework's own words.

Fields are compared by meaning, not by spelling: PyTorch's momentum 0.1 on the new batch equals MXNet's 0.9 on the
old value (both give the new batch weight 0.1); the channel axis differs by layout only (compare_layer moves it);
ε in float32 and the new batch's weight to a relative 1e-6 (a framework that parses them as a C float rounds them).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from bnparity.frameworks.registry import display_name
from bnparity.frameworks.user_layers import UserLayer

STATE_FIELDS = ("init_running_mean", "init_running_var", "batches_tracked")


def _said(user: UserLayer, name: str, value: object) -> str:
    return f"{display_name(user.framework)} {user.conventions.get(name, value)}"


def _weight(user: UserLayer) -> float | str:
    spec = user.spec
    if getattr(spec, "momentum", 0.0) is None:
        return f"1/k (cumulative average, from batch {spec.batches_tracked + 1})"
    return round(spec.weight_at(0), 12)


def differences(a: UserLayer, b: UserLayer) -> list[str]:
    """One line per convention of `a` and `b`: "<field>: <a's words> vs <b's words> — equal|DIFFERENT ..."."""
    if type(a.spec) is not type(b.spec):
        return [f"normalization: {a.kind} vs {b.kind} — DIFFERENT layers"]
    lines = []
    for f in dataclasses.fields(a.spec):
        name = f.name
        va, vb = getattr(a.spec, name), getattr(b.spec, name)
        if name in ("momentum_weighs", *STATE_FIELDS):
            continue
        if name == "momentum":
            wa, wb = _weight(a), _weight(b)
            # equal up to the float32 rounding of a momentum a framework parses as a C float (MXNet: 1 − 0.9f)
            same = wa == wb or (isinstance(wa, float) and isinstance(wb, float)
                                and bool(np.isclose(wa, wb, rtol=1e-6, atol=0.0)))
            verdict = (f"equal (the new batch weighs {wa:.6g})" if same and isinstance(wa, float)
                       else f"equal (the new batch weighs {wa})" if same
                       else f"DIFFERENT: the new batch weighs {wa} vs {wb}")
            lines.append(f"momentum: {_said(a, name, va)} vs {_said(b, name, vb)} — {verdict}")
            continue
        if name == "axis":
            verdict = "equal" if va == vb else "layouts differ (compare_layer moved the channel axis)"
        elif name == "eps":
            verdict = "equal" if np.float32(va) == np.float32(vb) else "DIFFERENT"
        else:
            verdict = "equal" if va == vb else "DIFFERENT"
        lines.append(f"{name}: {_said(a, name, va)} vs {_said(b, name, vb)} — {verdict}")
    for label, va, vb in (("γ", a.gamma, b.gamma), ("β", a.beta, b.beta),
                          ("running mean", getattr(a.spec, "init_running_mean", None),
                           getattr(b.spec, "init_running_mean", None)),
                          ("running variance", getattr(a.spec, "init_running_var", None),
                           getattr(b.spec, "init_running_var", None))):
        if va is None or vb is None:
            continue
        va, vb = np.asarray(va, dtype=np.float64), np.asarray(vb, dtype=np.float64)
        if va.shape != vb.shape:
            lines.append(f"state {label}: shapes {va.shape} vs {vb.shape} — DIFFERENT")
            continue
        diff = float(np.max(np.abs(va - vb))) if va.size else 0.0
        lines.append(f"state {label}: " + ("equal" if diff == 0 else f"differs by up to {diff:.3g}"))
    return lines
