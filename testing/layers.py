"""compare_layer and assert_layer_parity: a user's layer object against the reference, or against another layer.

The protocol is the layer-parity suite's (frameworks/base.py): `steps` training steps on the same input with the
same upstream gradient dy, then one eval pass, compared quantity by quantity (suites/parity/harness.py:
compare_outputs) under the same tolerance (suites/parity/tolerance.py). The layer is read by its framework's reader
(frameworks/<fw>/user_layers.py), which runs a copy of it: the user's object is never modified.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np

from bnparity.frameworks.base import LayerSession
from bnparity.frameworks.registry import display_name
from bnparity.frameworks.user_layers import UserLayer, UserLayers, readers
from bnparity.reference.layout import channel_axis
from bnparity.reference.normalization import evaluate, of_spec, run_reference
from bnparity.reference.spec import LayerSpec
from bnparity.reference.steps import LayerInputs, LayerOutputs
from bnparity.suites.parity.compare import describe_record
from bnparity.suites.parity.harness import compare_outputs, new_weight
from bnparity.suites.schema import LayerComparison

from .conventions import differences

MODES = ("train+eval", "train", "eval")


@dataclass(frozen=True)
class LayerParityResult:
    """What compare_layer found.

    Attributes:
        framework, kind: the layer's framework and type ("torch", "torch.nn.BatchNorm2d").
        against: "the float64 reference" or the other layer ("MXNet Gluon mxnet.gluon.nn.BatchNorm").
        spec: the spec read off the layer (the reference's, unless `reference` was given).
        comparisons: one record per quantity, as the parity suite writes them (bnparity.suites.schema).
        conventions: with `other`, one line per convention the two layers state (equal or different).
    """

    framework: str
    kind: str
    against: str
    spec: LayerSpec
    comparisons: tuple[LayerComparison, ...]
    conventions: tuple[str, ...] = ()

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.comparisons)

    @property
    def failures(self) -> list[LayerComparison]:
        return [c for c in self.comparisons if not c.passed]

    @property
    def message(self) -> str:
        """torch.testing-style: which quantity, how many elements off, the worst errors, where, what was allowed."""
        layer = f"{display_name(self.framework)} {self.kind}"
        if self.passed:
            head = (f"{layer} vs {self.against}: every quantity agrees "
                    f"({', '.join(c.quantity for c in self.comparisons)}).")
        else:  # the suite's message, naming what the layer was compared with
            head = "\n".join(describe_record(c, layer).replace("with the reference", f"with {self.against}")
                             for c in self.failures)
        return head + "".join(f"\n  {line}" for line in self.conventions)

    def __str__(self) -> str:
        return self.message


def _reader_of(layer: object, variables: object | None) -> tuple[UserLayers, UserLayer]:
    found, missing = readers()
    for reader in found:
        user = reader.read(layer, variables)
        if user is not None:
            return reader, user
    supported = [name for reader in found for name in reader.supported]
    absent = "; ".join(u.reason for u in missing)
    raise TypeError(f"compare_layer expects a normalization layer of {', '.join(supported) or 'no installed framework'}"
                    f". Received: {type(layer).__module__}.{type(layer).__qualname__}"
                    + (f" ({absent})" if absent else ""))


def _as_array(reader: UserLayers, value: object, dtype: str) -> np.ndarray:
    array = reader.to_numpy(value)
    array = np.asarray(value) if array is None else array
    if not np.issubdtype(array.dtype, np.floating) and not np.issubdtype(array.dtype, np.integer):
        raise TypeError(f"expected a numeric array or tensor. Received: {type(value).__name__} of {array.dtype}")
    return np.ascontiguousarray(array.astype(dtype))  # the values the layer sees, rounded to its dtype


def _params(user: UserLayer, shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """(γ, β) of the layer for inputs of `shape`: its own, or ones and zeros for a layer without any (a Flax module
    without parameters learns its feature count from the input)."""
    if user.gamma.size:
        return user.gamma, user.beta
    param_shape = user.spec.param_shape(shape)
    return np.ones(param_shape), np.zeros(param_shape)


def _eval_only(y_eval: np.ndarray) -> LayerOutputs:
    """The outputs of an eval pass alone (no training step: every other quantity absent)."""
    return LayerOutputs(y=None, dx=None, dgamma=None, dbeta=None, running_mean=None, running_var=None,  # type: ignore[arg-type]
                        y_eval=y_eval)


def _run(session: LayerSession, inputs: LayerInputs, mode: str) -> LayerOutputs:
    """The layer protocol on a user's layer (its own layout); in "eval" mode the eval pass alone."""
    if mode == "eval":
        return _eval_only(session.eval(inputs.x_eval))
    for x, dy in zip(inputs.xs, inputs.dys, strict=True):
        step = session.train_step(x, dy)
    stats = session.running_stats()
    return LayerOutputs(y=step.y, dx=step.dx, dgamma=step.dgamma, dbeta=step.dbeta,
                        running_mean=None if stats is None else stats[0],
                        running_var=None if stats is None else stats[1], y_eval=session.eval(inputs.x_eval))


def _moved(outputs: LayerOutputs, source: int, target: int) -> LayerOutputs:
    """Outputs of a layer whose channel axis is `source`, in the layout of `target` (parameters and statistics are
    per channel and do not move)."""
    def move(a: np.ndarray | None) -> np.ndarray | None:
        if a is None:
            return None
        return np.moveaxis(a, channel_axis(a.ndim, source), channel_axis(a.ndim, target))
    return dataclasses.replace(outputs, y=move(outputs.y), dx=move(outputs.dx), y_eval=move(outputs.y_eval))


def _context(user: UserLayer, spec: LayerSpec, inputs: LayerInputs, kappa: float, against: str) -> dict[str, Any]:
    return {"case": "your-layer", "framework": user.framework, "impl": "user", "mode": "matched",
            "reference": "matched", "normalization": spec.normalization, "dtype": user.dtype, "gate": True,
            "shape": tuple(inputs.xs[0].shape), "axis": spec.axis, "steps": inputs.steps, "kappa": kappa,
            "note": f"{user.kind} vs {against}", "spec": spec.to_dict(), "spec_adjusted": (),
            "new_weight": new_weight(spec)}


def compare_layer(layer: object, x: object, *, variables: object | None = None, dy: object | None = None,
                  steps: int = 1, mode: str = "train+eval", reference: LayerSpec | None = None,
                  other: object | None = None, other_variables: object | None = None,
                  seed: int = 0) -> LayerParityResult:
    """Compare your layer object with the float64 reference configured as it is, or with `other`.

    Args:
        layer: a normalization layer object (see the module docstring); Flax modules need `variables`.
        x: the input, a NumPy array or a tensor of the layer's framework, in the layout the layer takes.
        variables: a Flax module's variables ({"params": ..., "batch_stats": ...}).
        dy: the upstream gradient of each training step (default: standard normal, seeded by `seed`).
        steps: training steps before the eval pass (each on `x` with `dy`).
        mode: "train+eval" (every quantity), "train" (no eval pass) or "eval" (the eval pass alone, with the layer's
            current running statistics: no training step).
        reference: a spec to compare with instead of the one read off the layer (e.g. another framework's
            conventions).
        other: a second layer object (the port) to compare with, instead of the reference; both run on `x` (moved
            to each one's channel axis) from their own current state.
        other_variables: `other`'s variables, for a Flax module.
        seed: seeds the default dy.

    Returns:
        A LayerParityResult: one record per quantity, `passed`, and the message.

    Raises:
        TypeError: `layer` (or `other`) is not a normalization layer bnparity can read; the message names what is.
        ValueError: bad `mode` or `steps`.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}. Received: {mode!r}")
    if steps < 1:
        raise ValueError(f"steps must be >= 1. Received: {steps}")
    reader, user = _reader_of(layer, variables)
    xa = _as_array(reader, x, user.dtype)
    rng = np.random.default_rng(seed)
    dya = _as_array(reader, rng.standard_normal(xa.shape) if dy is None else dy, user.dtype)
    if dya.shape != xa.shape:
        raise ValueError(f"dy must have the shape of x {xa.shape}. Received: {dya.shape}")
    gamma, beta = _params(user, xa.shape)
    inputs = LayerInputs(xs=(xa,) * steps, dys=(dya,) * steps, x_eval=xa, gamma=gamma, beta=beta)
    got = _run(user.session(), inputs, mode)
    conventions: tuple[str, ...] = ()
    if other is None:
        spec = reference if reference is not None else user.spec
        against = "the float64 reference" if reference is None else "the given reference spec"
        want = _eval_only(evaluate(spec, xa, gamma, beta)) if mode == "eval" else run_reference(spec, inputs)
        dtype = user.dtype
    else:
        other_reader, port = _reader_of(other, other_variables)
        spec = user.spec
        against = f"{display_name(port.framework)} {port.kind}"
        moved = LayerInputs(xs=tuple(np.moveaxis(a, channel_axis(a.ndim, spec.axis), channel_axis(a.ndim,
                                                                                                  port.spec.axis))
                                     .astype(port.dtype) for a in inputs.xs),
                            dys=tuple(np.moveaxis(a, channel_axis(a.ndim, spec.axis), channel_axis(a.ndim,
                                                                                                   port.spec.axis))
                                      .astype(port.dtype) for a in inputs.dys),
                            x_eval=np.moveaxis(xa, channel_axis(xa.ndim, spec.axis),
                                               channel_axis(xa.ndim, port.spec.axis)).astype(port.dtype),
                            gamma=gamma, beta=beta)
        want = _moved(_run(port.session(), moved, mode), port.spec.axis, spec.axis)
        conventions = tuple(differences(user, port))
        # the lower precision of the two judges the comparison
        dtype = max((user.dtype, port.dtype), key=lambda d: np.finfo(d).eps)
    if mode == "train":
        got, want = dataclasses.replace(got, y_eval=None), dataclasses.replace(want, y_eval=None)
    plugin = of_spec(spec)
    kappa = plugin.condition_factor(spec, inputs.xs)
    records = tuple(compare_outputs(dtype, inputs, spec, got, want, kappa,
                                    {**_context(user, spec, inputs, kappa, against), "dtype": dtype},
                                    sides=1 if other is None else 2))
    return LayerParityResult(framework=user.framework, kind=user.kind, against=against, spec=spec,
                             comparisons=records, conventions=conventions)


def assert_layer_parity(layer: object, x: object, **kwargs: Any) -> LayerParityResult:
    """compare_layer, raising AssertionError with its message when a quantity disagrees (for a pytest suite)."""
    __tracebackhide__ = True  # pytest shows the caller's line, not this one
    result = compare_layer(layer, x, **kwargs)
    if not result.passed:
        raise AssertionError(result.message)
    return result
