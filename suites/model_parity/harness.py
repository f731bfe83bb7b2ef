"""Model-level parity: the same AlexNet, weights, batches and dropout masks in every framework, compared.

For every preset × variant (bn, nobn, gn: bnparity.reference.alexnet.variant_spec) × dropout ("off": rate 0;
"mask": one shared set of masks injected) × dtype (float32, float64), each framework's Trainer runs, from the
same canonical weights:
gradients(batch 1) → back to the initial state → train_step(batch 1) → train_step(batch 2) → evaluate(batch 3).
Compared, with the tolerance of `tolerance.py` and bnparity.suites.parity.compare:
- against the float64 NumPy reference: logits and loss of batch 1, the gradient of every parameter on batch 1
  (the reference's backward pass, alexnet_numpy.gradients), the BN running statistics after step 1 in the
  framework's own convention, and the eval loss computed from the framework's own state after step 2;
- against PyTorch (or, without it, the first framework that ran): logits, loss, the gradient of every
  parameter, every parameter after steps 1 and 2 (as the change p − p₀), the momentum buffers after step 2,
  the loss of step 2, the running mean after step 1, and the running variance after step 1 converted to
  PyTorch's unbiased estimator: r = (1−w)·r₀ + (r_F − (1−w)·r₀)·m/(m−1), m = values per
  channel, w = the new batch's weight (exact after one step). The unconverted difference is recorded too
  (kind "running_var_raw", never gated): the measured size of that convention difference.
Gating: in float64 everything is gated. In float32 only forward quantities are (logits, losses, running
statistics, eval loss): a gradient is discontinuous where a ReLU input is 0 or a max-pool window has a tie,
and two float32 forward passes that differ by rounding (1e-6 relative) route some gradients differently
there (measured on the cpu preset: step-2 updates off by 9% of conv3's largest; with an earlier init, 21% of
fc2's largest gradient, BN over a batch of 16 spreading one flipped ReLU over a whole feature, while float64
agreed to 1e-14); float32 gradients and updates are therefore recorded as findings, with the
reference's smallest ReLU and max-pool margins of the batch in the config's diagnostics. The float64 runs
use float32-exact hyperparameters (see SGD below) and power-of-two batches; for the same reason the gn variant's
ε is 1e-5 rounded to float32 in float64 (GN_EPS): MXNet parses GroupNorm's eps as a float32 (BatchNorm's is a
double), and 1e-5 there moved the float64 logits by 5.6e-11 relative (measured, tiny), 200x the tolerance.

Records are bnparity.suites.schema's ModelComparison (one per comparison, with its scale and relative error) and
ModelNotRun (a framework that was skipped or raised); the reference's fragility per config is ModelDiagnostics.
"""

from __future__ import annotations

import dataclasses
import time
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import numpy as np

from bnparity.frameworks.base import Unsupported
from bnparity.frameworks.conventions import convention
from bnparity.frameworks.registry import Unavailable, baseline, sort_key
from bnparity.frameworks.training import Gradients, SGDConfig, Trainer, load_trainer
from bnparity.reference import alexnet_numpy as anp
from bnparity.reference import batchnorm as bn
from bnparity.reference.alexnet import (
    VARIANT_NORMS,
    AlexNetSpec,
    MaxPool,
    ReLU,
    init_params,
    layer_of,
    momentum_key,
    running_names,
    trainable_names,
    variant_spec,
)
from bnparity.suites.errors import error_line
from bnparity.suites.parity.compare import compare
from bnparity.suites.schema import (
    ModelComparison,
    ModelDiagnostics,
    ModelNotRun,
    ModelRecord,
    relative_error,
)

from .tolerance import magnitude, model_tolerance

VARIANTS = tuple(VARIANT_NORMS)  # bn, nobn, gn
DROPOUT_MODES = ("off", "mask")
DTYPES = ("float32", "float64")
PRESETS = ("tiny", "cpu")
BATCH = {"tiny": 8, "cpu": 16}
# float32: training-like values. float64: values exact in float32, because MXNet passes lr, wd, momentum,
# 1/batch and BN's momentum to its operators as float32: 0.9 there is 0.89999998, a relative error of 2.4e-7 in
# a running mean (measured) that a float64 comparison would rightly flag. Batch sizes are powers of two.
SGD = {"float32": SGDConfig(lr=0.05, momentum=0.9, weight_decay=5e-4),
       "float64": SGDConfig(lr=2.0**-4, momentum=0.875, weight_decay=2.0**-11)}
BN_MOMENTUM = {"float32": 0.1, "float64": 0.125}  # the new batch's weight, PyTorch's convention
GN_EPS = {"float32": 1e-5, "float64": float(np.float32(1e-5))}  # MXNet's GroupNorm takes ε as a float32
FORWARD_KINDS = frozenset({"logits", "loss", "running_stats", "eval_loss"})
FRAGILE = 1e-5  # a ReLU input or max-pool margin below this fraction of the layer's largest value


@dataclass(frozen=True)
class ParityConfig:
    """One comparison: a preset, a variant, a dropout mode and a dtype."""

    preset: str
    variant: str
    dropout: str
    dtype: str
    batch: int
    seed: int = 0

    def spec(self) -> AlexNetSpec:
        spec = variant_spec(self.preset, self.variant)
        spec = dataclasses.replace(spec, bn=spec.bn.replace(momentum=BN_MOMENTUM[self.dtype]),
                                   gn=spec.gn.replace(eps=GN_EPS[self.dtype]))
        return spec.with_dropout(0.0) if self.dropout == "off" else spec

    @property
    def sgd(self) -> SGDConfig:
        return SGD[self.dtype]

    def labels(self) -> dict[str, str]:
        return {"preset": self.preset, "variant": self.variant, "dropout": self.dropout, "dtype": self.dtype}


@dataclass(frozen=True)
class ParityData:
    """Three batches (float32 NCHW, int64 labels) and the dropout masks of the two training steps."""

    xs: tuple[np.ndarray, np.ndarray, np.ndarray]
    ys: tuple[np.ndarray, np.ndarray, np.ndarray]
    masks: tuple[list[np.ndarray] | None, list[np.ndarray] | None]


def make_data(spec: AlexNetSpec, *, batch: int, seed: int) -> ParityData:
    """Standard-normal images and uniform labels from a generator seeded by (seed, preset name)."""
    rng = np.random.default_rng([seed, zlib.crc32(spec.name.encode())])
    xs = tuple(rng.standard_normal((batch, *spec.input_shape)).astype(np.float32) for _ in range(3))
    ys = tuple(rng.integers(0, spec.num_classes, size=batch).astype(np.int64) for _ in range(3))
    masks = tuple(anp.dropout_masks(spec, batch=batch, rng=rng) if spec.dropout > 0 else None for _ in range(2))
    return ParityData(xs=xs, ys=ys, masks=masks)  # type: ignore[arg-type]


@dataclass(frozen=True)
class FrameworkRun:
    """What one framework computed for one config (canonical layout, the framework's dtype)."""

    framework: str
    grads: Gradients
    states: tuple[dict[str, np.ndarray], dict[str, np.ndarray], dict[str, np.ndarray]]  # after 0, 1, 2 steps
    step_losses: tuple[float, float]
    eval_loss: float
    seconds: float
    compile_count: int | None


def run_framework(trainer_cls: type[Trainer], *, spec: AlexNetSpec, params: dict[str, np.ndarray],
                  data: ParityData, sgd: SGDConfig, dtype: str, device: str = "cpu") -> FrameworkRun:
    """The protocol of the module docstring on one framework, its trainer on `device` ("cpu" or "gpu")."""
    start = time.perf_counter()
    trainer = trainer_cls(arch=spec, params=params, sgd=sgd, dtype=dtype, device=device)
    s0 = trainer.state()
    grads = trainer.gradients(data.xs[0], data.ys[0], dropout_masks=data.masks[0])
    trainer.load_state(s0)  # gradients() moved the running statistics
    l1 = trainer.train_step(data.xs[0], data.ys[0], dropout_masks=data.masks[0]).loss
    s1 = trainer.state()
    l2 = trainer.train_step(data.xs[1], data.ys[1], dropout_masks=data.masks[1]).loss
    s2 = trainer.state()
    eval_loss, _ = trainer.evaluate(data.xs[2], data.ys[2])
    return FrameworkRun(framework=trainer_cls.framework, grads=grads, states=(s0, s1, s2), step_losses=(l1, l2),
                        eval_loss=eval_loss, seconds=time.perf_counter() - start,
                        compile_count=getattr(trainer, "compile_count", None))


def fragility(spec: AlexNetSpec, activations: dict[str, np.ndarray]) -> dict[str, object]:
    """The smallest ReLU input |z| and max-pool margin (max − max(runner-up, 0), windows with a positive max)
    of the batch, each relative to its layer's largest |value| (None: no such layer), and how many fall below
    FRAGILE."""
    relu_min, pool_min, count, previous = np.inf, np.inf, 0, None
    for layer in spec.layers:
        if isinstance(layer, ReLU) and previous is not None:
            z = np.abs(activations[previous]) / max(magnitude(activations[previous]), 1e-300)
            relu_min, count = min(relu_min, float(z.min())), count + int((z < FRAGILE).sum())
        elif isinstance(layer, MaxPool) and previous is not None:
            a = activations[previous]
            w = np.lib.stride_tricks.sliding_window_view(a, (layer.kernel, layer.kernel), axis=(2, 3))
            w = w[:, :, ::layer.stride, ::layer.stride].reshape(*w.shape[:2], -1, layer.kernel ** 2)
            top2 = np.sort(w, axis=-1)[..., -2:]
            live = top2[..., 1] > 0
            margin = (top2[..., 1] - np.maximum(top2[..., 0], 0.0))[live] / max(magnitude(a), 1e-300)
            if margin.size:
                pool_min, count = min(pool_min, float(margin.min())), count + int((margin < FRAGILE).sum())
        previous = layer.name
    return {"relu_min_margin": relu_min if np.isfinite(relu_min) else None,
            "pool_min_margin": pool_min if np.isfinite(pool_min) else None, "fragile_below": FRAGILE,
            "fragile_count": count}


def _group_scale(names: Iterable[str], values: Callable[[str], np.ndarray], name: str) -> float:
    """The largest |value| over the arrays of `name`'s layer."""
    return magnitude(*(values(n) for n in names if layer_of(n) == layer_of(name)))


def _record(cfg: ParityConfig, spec: AlexNetSpec, framework: str, against: str, kind: str, quantity: str,
            got: object, ref: object, scale: float, **extra: object) -> ModelComparison:
    with np.errstate(divide="ignore"):  # a relative error against an exact 0 is inf, as it should be
        result = compare(quantity, np.asarray(got), np.asarray(ref),
                         model_tolerance(spec, cfg.dtype, scale, batch=cfg.batch))
    gate = kind != "running_var_raw" and (cfg.dtype == "float64" or kind in FORWARD_KINDS)
    def finite(value: float) -> float | None:  # inf and nan are recorded as null
        return float(value) if np.isfinite(value) else None

    return ModelComparison(
        **cfg.labels(), framework=framework, against=against, kind=kind, quantity=result.quantity, gate=gate,
        passed=result.passed, max_abs_err=finite(result.max_abs_err), max_rel_err=finite(result.max_rel_err),
        worst_ratio=finite(result.worst_ratio),
        worst_index=tuple(int(i) for i in result.worst_index) if result.worst_index is not None else None,
        n_mismatched=int(result.n_mismatched), n_total=int(result.n_total), atol=float(result.atol),
        rtol=float(result.rtol), scale=float(scale), rel_err=relative_error(finite(result.max_abs_err), float(scale)),
        problem=result.problem, **extra)  # type: ignore[arg-type]


def _own_convention(spec: AlexNetSpec, framework: str):
    return spec.bn.replace(running_var=convention(framework).running_var)


def against_reference(cfg: ParityConfig, spec: AlexNetSpec, params: dict[str, np.ndarray], data: ParityData,
                      ref: anp.GradientResult, run: FrameworkRun) -> Iterator[ModelComparison]:
    """Logits, losses, gradients, running statistics (own convention) and eval loss against the float64
    reference."""
    fw, rec = run.framework, _record
    ref_loss = ref.loss
    trainable = trainable_names(spec)
    yield rec(cfg, spec, fw, "reference", "logits", "logits", run.grads.logits, ref.logits, magnitude(ref.logits))
    yield rec(cfg, spec, fw, "reference", "loss", "loss", run.grads.loss, ref_loss, abs(ref_loss))
    yield rec(cfg, spec, fw, "reference", "loss", "train_loss_step1", run.step_losses[0], ref_loss, abs(ref_loss))
    for name in trainable:
        yield rec(cfg, spec, fw, "reference", "grad", name, run.grads.grads[name], ref.grads[name],
                  _group_scale(trainable, lambda n: ref.grads[n], name))
    expected = anp.running_after_step(spec, params, ref.batch_stats, convention=_own_convention(spec, fw))
    for name in running_names(spec):
        yield rec(cfg, spec, fw, "reference", "running_stats", name, run.states[1][name], expected[name],
                  magnitude(expected[name]), convention=_own_convention(spec, fw).running_var)
    final = run.states[2]
    logits = anp.forward(spec, final, data.xs[2], train=False).logits
    ref_eval = float(anp.per_example_loss(logits, data.ys[2]).sum())
    yield rec(cfg, spec, fw, "reference", "eval_loss", "eval_loss", run.eval_loss, ref_eval, abs(ref_eval),
              note="reference evaluated with the framework's own parameters and running statistics after step 2")


def against_anchor(cfg: ParityConfig, spec: AlexNetSpec, params: dict[str, np.ndarray],
                   ref: anp.GradientResult | anp.ForwardResult,
                   run: FrameworkRun, anchor: FrameworkRun) -> Iterator[ModelComparison]:
    """Every quantity of `run` against the same quantity of `anchor` (PyTorch when it is installed)."""
    fw, against, rec = run.framework, anchor.framework, _record
    trainable = trainable_names(spec)
    yield rec(cfg, spec, fw, against, "logits", "logits", run.grads.logits, anchor.grads.logits,
              magnitude(anchor.grads.logits))
    yield rec(cfg, spec, fw, against, "loss", "loss", run.grads.loss, anchor.grads.loss, abs(anchor.grads.loss))
    yield rec(cfg, spec, fw, against, "loss_step2", "train_loss_step2", run.step_losses[1], anchor.step_losses[1],
              abs(anchor.step_losses[1]))  # after one update: gradient-derived
    for name in trainable:
        yield rec(cfg, spec, fw, against, "grad", name, run.grads.grads[name], anchor.grads.grads[name],
                  _group_scale(trainable, lambda n: anchor.grads.grads[n], name))
    for step, kind in ((1, "param_step1"), (2, "param_step2")):
        # p₀ is the same exact value everywhere: compare the change p − p₀, so that the element-wise rtol·|ref|
        # term is relative to the update, not to the parameter.
        def delta(run_: FrameworkRun, n: str, step: int = step) -> np.ndarray:
            return np.asarray(run_.states[step][n], dtype=np.float64) - np.asarray(params[n], dtype=np.float64)
        for name in trainable:
            yield rec(cfg, spec, fw, against, kind, name, delta(run, name), delta(anchor, name),
                      _group_scale(trainable, lambda n: delta(anchor, n), name), compared="p - p0")
    for name in trainable:
        key = momentum_key(name)
        yield rec(cfg, spec, fw, against, "momentum", name, run.states[2][key], anchor.states[2][key],
                  _group_scale(trainable, lambda n: anchor.states[2][momentum_key(n)], name))
    for name in running_names(spec):
        got, want = run.states[1][name], anchor.states[1][name]
        if name.endswith("running_var"):
            m = ref.batch_stats[layer_of(name)].count
            biased_fw = convention(fw).running_var == "biased"
            biased_anchor = convention(against).running_var == "biased"
            conv_got = bn.running_var_as_unbiased(got, params[name], m, spec.bn) if biased_fw else got
            conv_want = bn.running_var_as_unbiased(want, params[name], m, spec.bn) if biased_anchor else want
            yield rec(cfg, spec, fw, against, "running_stats", name, conv_got, conv_want, magnitude(conv_want),
                      converted=(biased_fw != biased_anchor), m=m)
            yield rec(cfg, spec, fw, against, "running_var_raw", name, got, want, magnitude(want), m=m,
                      note="stored values, no conversion: the running-variance estimator difference")
        else:
            yield rec(cfg, spec, fw, against, "running_stats", name, got, want, magnitude(want))


@dataclass
class ParityResult:
    """Records, plus per config the reference's fragility diagnostics, per framework the time spent and the
    compile count of its last trainer (JAX: training-step compilations; None where nothing is compiled)."""

    records: list[ModelRecord]
    diagnostics: list[ModelDiagnostics]
    seconds: dict[str, float]
    compile_counts: dict[str, int | None]
    anchor: str | None = None


def configs(*, preset: str, variants: Iterable[str] = VARIANTS, dropout_modes: Iterable[str] = DROPOUT_MODES,
            dtypes: Iterable[str] = DTYPES, batch: int | None = None, seed: int = 0) -> list[ParityConfig]:
    """Every combination, in a stable order. Raises ValueError for an unknown preset."""
    if preset not in BATCH:
        raise ValueError(f"model parity runs the presets {', '.join(BATCH)}. Received: {preset!r}")
    n = batch or BATCH[preset]
    return [ParityConfig(preset, v, d, t, n, seed) for t in dtypes for v in variants for d in dropout_modes]


def run_model_parity(*, configs: Iterable[ParityConfig], frameworks: Iterable[str],
                     on_config: Callable[[ParityConfig], None] | None = None, device: str = "cpu") -> ParityResult:
    """Run every config on every framework, its trainers on `device` ("cpu" or "gpu"; the reference runs in NumPy);
    a framework that is not installed yields "skipped" records."""
    trainers: dict[str, type[Trainer]] = {}
    unavailable: dict[str, str] = {}
    anchor_name = baseline().name
    for fw in sorted(frameworks, key=lambda f: (f != anchor_name, sort_key(f))):  # the baseline first: the anchor
        try:
            loaded = load_trainer(fw)
        except Exception as e:  # installed but broken: reported like a missing framework, not raised
            loaded = Unavailable(fw, f"{fw} failed to import: {error_line(e)}")
        if isinstance(loaded, Unavailable):
            unavailable[fw] = loaded.reason
        else:
            trainers[fw] = loaded
    result = ParityResult(records=[], diagnostics=[], seconds={fw: 0.0 for fw in trainers}, compile_counts={})
    for cfg in configs:
        if on_config is not None:
            on_config(cfg)
        spec = cfg.spec()
        params = init_params(spec, seed=cfg.seed)
        data = make_data(spec, batch=cfg.batch, seed=cfg.seed)
        activations: dict[str, np.ndarray] = {}
        ref = anp.gradients(spec, params, data.xs[0], data.ys[0], dropout_masks=data.masks[0],
                            activations=activations)
        result.diagnostics.append(ModelDiagnostics(**cfg.labels(), batch=cfg.batch,
                                                   **fragility(spec, activations)))  # type: ignore[arg-type]
        for fw, reason in unavailable.items():
            result.records.append(ModelNotRun(**cfg.labels(), framework=fw, status="skipped", gate=False,
                                              passed=None, reason=reason))
        runs: list[FrameworkRun] = []
        for fw, cls in trainers.items():
            try:
                run = run_framework(cls, spec=spec, params=params, data=data, sgd=cfg.sgd, dtype=cfg.dtype,
                                    device=device)
            except Unsupported as e:  # the framework cannot run this configuration (a dtype): a skip, with why
                result.records.append(ModelNotRun(**cfg.labels(), framework=fw, status="skipped", gate=False,
                                                  passed=None, reason=error_line(e)))
                continue
            except Exception as e:  # a framework that crashes is recorded, and the others still run
                result.records.append(ModelNotRun(**cfg.labels(), framework=fw, status="error", gate=True,
                                                  passed=False, reason=error_line(e)))
                continue
            runs.append(run)
            result.seconds[fw] += run.seconds
            result.compile_counts[fw] = run.compile_count
            result.records.extend(against_reference(cfg, spec, params, data, ref, run))
        if runs:
            anchor = runs[0]  # PyTorch when it ran
            result.anchor = result.anchor or anchor.framework
            for run in runs[1:]:
                result.records.extend(against_anchor(cfg, spec, params, ref, run, anchor))
    return result


def failures(records: Iterable[ModelRecord]) -> list[ModelRecord]:
    """The gated records that did not pass (mismatches and crashed frameworks)."""
    return [r for r in records if r.gate and r.passed is False]
