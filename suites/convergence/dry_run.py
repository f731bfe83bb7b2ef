"""`bnparity train --dry-run`: build a preset's AlexNet in every framework and run one SGD step, before a long run.

For the paper preset this is the check to make before renting a GPU: the full 224x224 AlexNet (46.8 million
parameters) is built in every installed framework, each variant of the preset (with and without BN), from the same
canonical weights (init_params, seed 0), and trained for one step on BATCH synthetic images: standard-normal
pixels of the preset's input shape with uniform random labels, and the same inverted-dropout masks the runs draw
(runner.dropout_masks). No Fashion-MNIST file is read and nothing is written. Per framework and variant it prints
the parameter count (summed over the trainer's own state, so a layer built with a wrong shape shows), the loss, the
seconds of the step (the first one: it includes JAX's and TensorFlow's tracing and compilation) and OK.

Each framework runs in a worker process of its own (python -m bnparity.suites.convergence.dry_run JOB), one
compute thread each, JOBS at a time, so that at most two copies of the model are in memory (about 0.2 GB of float32
parameters each, plus gradients and activations). A framework that is not installed is skipped with its reason; a
step that fails or gives a non-finite loss makes the command exit 1, with one line on stderr.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from dataclasses import asdict, dataclass

import numpy as np

from bnparity.frameworks.registry import Unavailable, display_name, named_frameworks, parse_frameworks
from bnparity.frameworks.training import SGDConfig, canonical_device, load_trainer
from bnparity.reference.alexnet import init_params, param_shapes, trainable_names, variant_spec
from bnparity.suites.errors import UserError, error_line
from bnparity.suites.workers import failure_reason, run_pieces, run_worker, worker_env

from .presets import TrainPreset, get_preset, parse_variants

BATCH = 2  # images per step: enough for BatchNorm's batch statistics, little memory at 224x224
JOBS = 2  # frameworks at once (this machine has 2 cores; each worker computes on one thread)
TIMEOUT_S = 600.0  # per framework, every variant
MARK = "BNPARITY-DRY-RUN "
WORKER = "bnparity.suites.convergence.dry_run"


@dataclass(frozen=True)
class StepCheck:
    """One framework x variant of the dry run.

    Attributes:
        framework, variant: which.
        status: "ok" (built and stepped, finite loss, the architecture's parameter count), "skipped" (the framework
            is not installed here) or "failed".
        parameters: trainable parameters of the framework's model (None when it did not build).
        expected: trainable parameters of the architecture (bnparity.reference.alexnet.param_shapes).
        loss: the step's mean loss.
        step_s: seconds of the training step; build_s: seconds to build the trainer from the canonical weights.
        reason: why it was skipped or failed (one line).
    """

    framework: str
    variant: str
    status: str
    expected: int
    parameters: int | None = None
    loss: float | None = None
    step_s: float | None = None
    build_s: float | None = None
    reason: str = ""


def expected_parameters(arch: str, variant: str) -> int:
    """The trainable parameters of `arch`'s `variant`, from the reference's shapes."""
    spec = variant_spec(arch, variant)
    shapes = param_shapes(spec)
    return sum(math.prod(shapes[n]) for n in trainable_names(spec))


def synthetic_batch(spec: object, *, batch: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, list | None]:
    """(images, labels, dropout masks) of one synthetic step: standard-normal float32 NCHW images of `spec`'s input
    shape, uniform labels, and the runs' inverted-dropout masks."""
    from .runner import dropout_masks, dropout_shapes

    rng = np.random.default_rng(seed)
    x = rng.standard_normal((batch, *spec.input_shape), dtype=np.float32)  # type: ignore[attr-defined]
    labels = rng.integers(0, spec.num_classes, size=batch).astype(np.int64)  # type: ignore[attr-defined]
    return x, labels, dropout_masks(dropout_shapes(spec), batch=batch, rng=rng)


def step_check(framework: str, preset: TrainPreset, variant: str, *, device: str, batch: int = BATCH) -> StepCheck:
    """Build `framework`'s trainer for `preset`'s AlexNet `variant` and run one SGD step (in this process)."""
    expected = expected_parameters(preset.arch, variant)
    loaded = load_trainer(framework)
    if isinstance(loaded, Unavailable):
        return StepCheck(framework, variant, "failed" if loaded.installed else "skipped", expected,
                         reason=loaded.reason)
    spec = variant_spec(preset.arch, variant)
    try:
        start = time.perf_counter()
        trainer = loaded(arch=spec, params=init_params(spec, seed=0), device=device,
                         sgd=SGDConfig(lr=preset.lr, momentum=preset.momentum, weight_decay=preset.weight_decay))
        build_s = time.perf_counter() - start
        x, labels, masks = synthetic_batch(spec, batch=batch)
        start = time.perf_counter()
        loss = float(trainer.train_step(x, labels, dropout_masks=masks).loss)
        step_s = time.perf_counter() - start
        state = trainer.state()
        parameters = sum(int(np.asarray(state[n]).size) for n in trainable_names(spec))
    except Exception as e:  # a framework that fails is reported, and the others still run
        return StepCheck(framework, variant, "failed", expected, reason=error_line(e))
    finally:
        trainer = None  # free the model before the next variant is built
    problems = ([] if math.isfinite(loss) else [f"the loss is {loss}"]) + (
        [] if parameters == expected else [f"{parameters} parameters where the architecture has {expected}"])
    return StepCheck(framework, variant, "failed" if problems else "ok", expected, parameters=parameters, loss=loss,
                     step_s=step_s, build_s=build_s, reason="; ".join(problems))


def _parse(d: object) -> StepCheck:
    return StepCheck(**d)  # type: ignore[arg-type]


def _piece(framework: str, preset: TrainPreset, variants: tuple[str, ...], device: str, register,
           seconds: dict[str, float]) -> list[StepCheck]:
    job = {"framework": framework, "preset": preset.to_dict(), "variants": list(variants), "device": device}
    start = time.perf_counter()
    output = run_worker(WORKER, job, env=worker_env(framework, 1), timeout=TIMEOUT_S, mark=MARK, parse=_parse,
                        register=register)
    seconds[framework] = time.perf_counter() - start
    found: list[StepCheck] = list(output.records)  # type: ignore[arg-type]
    reason = failure_reason(output, TIMEOUT_S)
    done = {c.variant for c in found}
    missing = [StepCheck(framework, v, "failed", expected_parameters(preset.arch, v),
                         reason=reason or "the worker wrote no record") for v in variants if v not in done]
    return found + missing


def format_check(c: StepCheck) -> str:
    """One line of the dry run's table."""
    where = f"{display_name(c.framework)} ({c.framework}) {c.variant}"
    if c.status == "skipped":
        return f"skipped {where}: {c.reason}"
    if c.parameters is None:
        return f"FAILED {where}: {c.reason}"
    text = (f"{where}: {c.parameters:,} parameters, loss {c.loss:.4f}, step {c.step_s:.2f} s "
            f"(built in {c.build_s:.2f} s)")
    return f"OK {text}" if c.status == "ok" else f"FAILED {text}: {c.reason}"


def run(args: argparse.Namespace, *, default_preset: str) -> int:
    """The dry run of `bnparity train --dry-run` (its other flags: --preset, --frameworks, --variants, --device)."""
    from bnparity.suites.devices import on_device

    for flag in ("resume", "out", "data_dir", "batch_sizes", "replicas", "bn_sync", "seeds", "epochs"):
        if getattr(args, flag, None) not in (None, False):
            raise UserError(f"--dry-run takes --preset, --frameworks, --variants and --device only. Received: "
                            f"--{flag.replace('_', '-')}")
    preset = get_preset(args.preset or default_preset)
    try:
        frameworks = parse_frameworks(args.frameworks)
    except ValueError as e:
        raise UserError(str(e)) from None
    variants = parse_variants(args.variants, preset.variants)
    device = canonical_device(args.device or "cpu")
    frameworks = on_device(frameworks, args.device or "cpu", args.frameworks)
    spec = variant_spec(preset.arch, variants[0])
    shape = "x".join(map(str, spec.input_shape))
    print(f"bnparity train --dry-run: preset {preset.name} (AlexNet {preset.arch!r}), one SGD step per framework and "
          f"variant on {device}, on {BATCH} synthetic images ({shape}, standard normal, random labels); no data read, "
          "nothing written", flush=True)
    start = time.perf_counter()
    done: list[list[StepCheck]] = [[] for _ in frameworks]
    seconds: dict[str, float] = {}
    run_pieces(frameworks, lambda fw, register: _piece(fw, preset, variants, device, register, seconds), jobs=JOBS,
               done=done)
    checks = [c for piece in done for c in piece]
    for c in checks:
        print(format_check(c))
    failed = [c for c in checks if c.status == "failed"]
    named = set(named_frameworks(args.frameworks))
    missing_named = [c for c in checks if c.status == "skipped" and c.framework in named]
    ok = [c for c in checks if c.status == "ok"]
    print("seconds per framework (its worker process, import included): "
          + ", ".join(f"{fw} {seconds[fw]:.1f}" for fw in frameworks if fw in seconds))
    print(f"{len(ok)} OK, {len(failed)} failed, {len(checks) - len(ok) - len(failed)} skipped in "
          f"{time.perf_counter() - start:.1f} s ({JOBS} frameworks at a time)")
    if failed or missing_named or not ok:
        first = (failed or missing_named or [None])[0]
        why = f"{first.framework} {first.variant}: {first.reason}" if first else "no framework is installed"
        print(f"bnparity train: dry run failed: {why}", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    """Worker: JOB (JSON: framework, preset, variants, device) -> one StepCheck record per variant on stdout."""
    job = json.loads((argv if argv is not None else sys.argv[1:])[0])
    preset = TrainPreset.from_dict(job["preset"])
    for variant in job["variants"]:
        check = step_check(job["framework"], preset, variant, device=job["device"])
        print(MARK + json.dumps(asdict(check)), flush=True)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
