"""The proof of a conversion: the source layer and its converted copy run in their own frameworks, and agree.

For each BatchNorm layer: the source framework's own BatchNorm holding the source state and the target framework's
holding the converted state (built by frameworks/<fw>/checkpoint.py, run through frameworks/<fw>/user_layers.py's
sessions: the conventions are read back off the real layers) run

1. eval on one random tensor, compared within the layer-parity tolerance (suites/parity/tolerance.py, both sides'
   rounding). When the running variance's estimator was converted (× (m − 1)/m), the two layers normalize with
   different numbers by design: the gated comparison then gives the source framework the variance as the target
   holds it, and the shift the estimators alone cause is reported next to it (not gated);
2. k training steps on the same batches of m values per channel, after which the running statistics are compared,
   the target's converted to the source's convention (reference/conversion.py). An exact conversion must agree
   within the tolerance; an approximated one (no m, a cumulative average into a fixed momentum) within the tolerance
   plus the bound its approximation states.

With an architecture, the whole AlexNet's eval logits too (frameworks/<fw>/checkpoint.py: alexnet_logits), within
the model-parity tolerance (suites/model_parity/tolerance.py).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from bnparity.frameworks.checkpoints import BNState, CheckpointFormat
from bnparity.frameworks.registry import framework_module
from bnparity.reference import batchnorm
from bnparity.reference.conversion import cumulative_drift, unknown_count_drift, variance_between
from bnparity.reference.layout import channel_axis
from bnparity.suites.model_parity.tolerance import magnitude, model_tolerance
from bnparity.suites.parity.tolerance import Tolerance, tolerance

from .records import Agreement

DTYPE = "float32"


@dataclass(frozen=True)
class LayerCheck:
    """One BN layer to verify: its state before and after the conversion, the verification's input shape
    (channels-first, N·spatial = m values per channel) and whether the variance estimator was converted."""

    source: BNState
    target: BNState
    shape: tuple[int, ...]
    estimator_converted: bool


def _session(fmt: CheckpointFormat, state: BNState, ndim: int) -> tuple[object, int]:
    """A session of `fmt`'s own BatchNorm holding `state`, and its channel axis (user_layers reads the layer)."""
    layer, variables = fmt.bn_layer(state, ndim)
    user = framework_module(fmt.framework, "user_layers").UserLayers().read(layer, variables)
    return user.session(), user.spec.axis


def _native(a: np.ndarray, axis: int) -> np.ndarray:
    return np.ascontiguousarray(np.moveaxis(a, 1, channel_axis(a.ndim, axis)).astype(DTYPE))


def _canonical(a: np.ndarray, axis: int) -> np.ndarray:
    return np.moveaxis(np.asarray(a, dtype=np.float64), channel_axis(a.ndim, axis), 1)


def _agreement(layer: str, quantity: str, steps: int, count: int, got: np.ndarray, ref: np.ndarray, tol: Tolerance,
               *, gated: bool = True, bound: np.ndarray | float = 0.0, note: str = "") -> Agreement:
    """|ref − got| ≤ atol + rtol·|ref| + bound, elementwise (`bound`: an approximation's stated error)."""
    got, ref = np.asarray(got, dtype=np.float64), np.asarray(ref, dtype=np.float64)
    err = np.abs(got - ref)
    allowed = tol.atol + tol.rtol * np.abs(ref) + bound
    passed = bool(got.shape == ref.shape and np.all(err <= allowed))
    return Agreement(layer=layer, quantity=quantity, steps=steps, count=count, max_abs_err=float(err.max()),
                     scale=float(np.abs(ref).max()), allowed=float(np.max(allowed)), gated=gated, passed=passed,
                     source_value=float(ref.reshape(-1)[0]), target_value=float(got.reshape(-1)[0]), note=note)


def _data(state: BNState, shape: tuple[int, ...], steps: int, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
    """x_eval and the training batches, each channel drawn around the layer's running statistics (float32 values)."""
    bshape = (1, -1) + (1,) * (len(shape) - 2)
    mean = np.asarray(state.running_mean, dtype=np.float64).reshape(bshape)
    std = np.sqrt(np.maximum(np.asarray(state.running_var, dtype=np.float64), 1e-6)).reshape(bshape)
    return tuple((rng.standard_normal(shape) * std + mean).astype(DTYPE).astype(np.float64) for _ in range(steps + 1))


def verify_layer(src: CheckpointFormat, tgt: CheckpointFormat, check: LayerCheck, *, steps: int,
                 rng: np.random.Generator) -> list[Agreement]:
    """The eval and k-step agreements of one BN layer (see the module docstring)."""
    s, t, shape = check.source, check.target, check.shape
    ndim = len(shape)
    m = batchnorm.count_per_channel(shape, 1)
    x_eval, *xs = _data(s, shape, steps, rng)
    dys = [rng.standard_normal(shape).astype(DTYPE).astype(np.float64) for _ in xs]
    spec = s.spec(axis=1)
    out: list[Agreement] = []

    # 1. eval: the source framework with the numbers the target holds, when the estimator changed them
    held = dataclasses.replace(s, running_var=np.asarray(t.running_var, dtype=np.asarray(s.running_var).dtype)) \
        if check.estimator_converted else s
    kappa = batchnorm.condition_factor(spec, [x_eval])
    sess_s, axis_s = _session(src, held, ndim)
    sess_t, axis_t = _session(tgt, t, ndim)
    y_s = _canonical(sess_s.eval(_native(x_eval, axis_s)), axis_s)
    y_t = _canonical(sess_t.eval(_native(x_eval, axis_t)), axis_t)
    tol = tolerance(DTYPE, kappa, float(np.abs(y_s).max()))
    both = Tolerance(rtol=2 * tol.rtol, atol=2 * tol.atol)
    out.append(_agreement(s.name, "y_eval", 0, m, y_t, y_s, both,
                          note="source framework holding the target's running variance" if check.estimator_converted
                          else "source state vs converted state"))
    if check.estimator_converted:
        orig, axis_o = _session(src, s, ndim)
        y_o = _canonical(orig.eval(_native(x_eval, axis_o)), axis_o)
        out.append(_agreement(s.name, "y_eval_estimator_shift", 0, m, y_t, y_o, both, gated=False,
                              note="the source's own eval vs the target's: the running variance × (m − 1)/m or "
                                   "m/(m − 1), what the frameworks' estimators differ by"))

    # 2. k training steps from the checkpoint's state, on the same batches
    sess_s, axis_s = _session(src, s, ndim)
    sess_t, axis_t = _session(tgt, t, ndim)
    for x, dy in zip(xs, dys, strict=True):
        sess_s.train_step(_native(x, axis_s), _native(dy, axis_s))
        sess_t.train_step(_native(x, axis_t), _native(dy, axis_t))
    mean_s, var_s = (np.asarray(a, dtype=np.float64) for a in sess_s.running_stats())
    mean_t, var_t = (np.asarray(a, dtype=np.float64) for a in sess_t.running_stats())
    var_t_as_s = variance_between(var_t, t.conventions.running_var, s.conventions.running_var, m)
    kappa = batchnorm.condition_factor(spec, xs)
    bound_mean, bound_var = _bounds(check, spec, xs, m, steps)
    approx = " (approximated: within the stated bound)" if np.any(bound_var) or np.any(bound_mean) else ""
    for quantity, got, ref, bound in (("running_mean", mean_t, mean_s, bound_mean),
                                      ("running_var", var_t_as_s, var_s, bound_var)):
        tol = tolerance(DTYPE, kappa, float(np.abs(ref).max()))
        out.append(_agreement(s.name, quantity, steps, m, got, ref, Tolerance(2 * tol.rtol, 2 * tol.atol),
                              bound=bound, note=f"after {steps} steps, target in the source's convention{approx}"))
    return out


def _bounds(check: LayerCheck, spec: object, xs: list[np.ndarray], m: int, steps: int) -> tuple[np.ndarray, ...]:
    """Per channel, the error the conversion's approximations allow after `steps` steps (0 where it is exact)."""
    s, t = check.source, check.target
    c = s.channels
    bound_mean, bound_var = np.zeros(c), np.zeros(c)
    if s.conventions.momentum is None and t.conventions.momentum is not None:  # cumulative into fixed
        drift = cumulative_drift(s.batches_tracked or 0, steps)
        stats = [batchnorm.batch_stats(x, 1) for x in xs]
        means = np.vstack([np.asarray(s.running_mean, dtype=np.float64)] + [mu for mu, _ in stats])
        vars_ = np.vstack([np.asarray(s.running_var, dtype=np.float64)]
                          + [batchnorm.variance_for_running(v, m, spec) for _, v in stats])
        bound_mean += drift * (means.max(axis=0) - means.min(axis=0))
        bound_var += drift * (vars_.max(axis=0) - vars_.min(axis=0))
    if s.conventions.running_var != t.conventions.running_var and not check.estimator_converted:  # m unknown
        w = spec.weight_at(0) if s.conventions.momentum is not None else 1.0 / ((s.batches_tracked or 0) + 1)
        bound_var += unknown_count_drift(m, w, steps) * np.asarray(s.running_var, dtype=np.float64) * m / (m - 1)
    return bound_mean, bound_var


def verify_alexnet(src: CheckpointFormat, tgt: CheckpointFormat, arch: object, source_params: dict[str, np.ndarray],
                   held_params: dict[str, np.ndarray], target_params: dict[str, np.ndarray], *, images: int,
                   rng: np.random.Generator, estimator_converted: bool) -> list[Agreement]:
    """The whole AlexNet's eval logits: the target's (read back from the written file) against the source
    framework's holding the same numbers (`held_params`), and, when the estimator was converted, against the
    source's own (the shift the estimators cause; not gated)."""
    x = rng.standard_normal((images, *arch.input_shape)).astype(np.float32)  # standardized images
    y_t = np.asarray(tgt.alexnet_logits(arch, target_params, x), dtype=np.float64)
    y_s = np.asarray(src.alexnet_logits(arch, held_params, x), dtype=np.float64)
    tol = model_tolerance(arch, DTYPE, magnitude(y_s), batch=images)
    both = Tolerance(2 * tol.rtol, 2 * tol.atol)
    out = [_agreement("alexnet", "logits", 0, images, y_t, y_s, both,
                      note=f"eval logits of {images} random images, model-parity tolerance")]
    if estimator_converted:
        y_o = np.asarray(src.alexnet_logits(arch, source_params, x), dtype=np.float64)
        out.append(_agreement("alexnet", "logits_estimator_shift", 0, images, y_t, y_o, both, gated=False,
                              note="the source's own logits vs the target's (running variances × (m − 1)/m)"))
    return out
