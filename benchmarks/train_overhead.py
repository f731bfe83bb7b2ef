"""The convergence suite's overhead: images/s of its runner vs a bare Trainer.train_step loop, per framework.

For each framework, one epoch of the preset's training subset (the same batches and dropout masks):
- bare: a fresh Trainer, one untimed evaluate (as the suite's at iteration 0), then train_step over batches and
  masks built beforehand — no records, no progress, no eval;
- suite: runner.run_one in this process (fresh Trainer, batches built on the fly, every record written and
  flushed), throughput read from its "epoch" record, which excludes evaluation time.
"overhead" compares the two throughputs (sensitive to other load on the machine); "outside step" is measured
within the suite's own run: the share of its training time spent outside Trainer.train_step (batches, masks,
records, bookkeeping), which other load hardly changes. Both include the first step of their fresh Trainer
(JAX's compilation), after an untimed warm-up of the framework in this process. The target is an overhead
under 5%. The JAX trainer's compile count after the suite's epoch is printed too (one compilation per input
shape: the training batch and the evaluation batch).

    .venv/bin/python benchmarks/train_overhead.py --preset cpu --threads 1 [--train-subset 2560] [--repeats 2]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from bnparity.suites.convergence.presets import VARIANTS
from bnparity.suites.convergence.runner import thread_env


def _bare(trainer_cls, *, arch, params, sgd, batches, masks, test) -> float:
    trainer = trainer_cls(arch=arch, params=params, sgd=sgd, device="cpu")
    trainer.evaluate(*test)  # untimed, as the suite's evaluation at iteration 0
    start = time.perf_counter()
    for (x, labels), m in zip(batches, masks, strict=True):
        trainer.train_step(x, labels, dropout_masks=m)
    return sum(len(labels) for _, labels in batches) / (time.perf_counter() - start)


def _timed(trainer_cls):
    """`trainer_cls` whose instances add up the seconds spent inside train_step (in `step_seconds`)."""

    class Timed(trainer_cls):
        instances: list = []

        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.step_seconds = 0.0
            Timed.instances.append(self)

        def train_step(self, x, labels, *, dropout_masks=None):
            start = time.perf_counter()
            try:
                return super().train_step(x, labels, dropout_masks=dropout_masks)
            finally:
                self.step_seconds += time.perf_counter() - start

    return Timed


def _suite(trainer_cls, *, framework: str, variant: str, preset, data_dir: Path, verify: bool) -> tuple[float, object]:
    from bnparity.suites.convergence import records
    from bnparity.suites.convergence.runner import run_one
    from bnparity.suites.schema import EpochEvent, FailedEvent, TrainManifest

    with tempfile.TemporaryDirectory(prefix="bnparity-overhead-") as tmp:
        run = records.RunId(framework, variant, 0)
        records.write_manifest(Path(tmp), TrainManifest(preset=preset, runs=(run.name,), frameworks=(framework,),
                                                        variants=(variant,), seeds=(0,), data_dir=str(data_dir),
                                                        verify_data=verify, device="cpu"))
        status = run_one(run_dir=Path(tmp), run=run, trainer_cls=trainer_cls)
        recs = records.read_records(run.records_path(Path(tmp)))
        if status != "done":
            error = recs[-1].error if recs and isinstance(recs[-1], FailedEvent) else status
            raise RuntimeError(f"the suite's run ended {status}: {error}")
        epoch = next(r for r in recs if isinstance(r, EpochEvent))
        train_seconds = epoch.iteration * preset.batch_size / epoch.images_per_s
        inside = trainer_cls.instances[-1].step_seconds
        return epoch.images_per_s, epoch.compile_count, 1 - inside / train_seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="cpu", help="convergence preset (default: cpu)")
    parser.add_argument("--frameworks", default="torch,mxnet,jax")
    parser.add_argument("--variant", default="bn", choices=VARIANTS)
    parser.add_argument("--threads", type=int, default=1, help="compute threads (default 1, as with --jobs 2)")
    parser.add_argument("--train-subset", type=int, help="fewer training images than the preset (quicker)")
    parser.add_argument("--repeats", type=int, default=1, help="alternate bare and suite this many times; best kept")
    parser.add_argument("--data-dir", type=Path)
    parser.add_argument("--no-verify-data", action="store_true")
    args = parser.parse_args(argv)
    os.environ.update(thread_env(args.threads, dict(os.environ)))  # before any framework is imported

    from bnparity.frameworks.registry import Unavailable, parse_frameworks
    from bnparity.frameworks.training import SGDConfig, load_trainer
    from bnparity.reference.alexnet import init_params, variant_spec
    from bnparity.suites.convergence.presets import get_preset
    from bnparity.suites.convergence.runner import dropout_masks, dropout_shapes, mask_rng
    from bnparity.suites.data.fashion_mnist import load_fashion_mnist
    from bnparity.suites.data.pipeline import batches, prepare

    preset = get_preset(args.preset).replace(epochs=1, evals_per_epoch=1)
    if args.train_subset:
        preset = preset.replace(train_subset=args.train_subset)
    data = load_fashion_mnist(args.data_dir, verify=not args.no_verify_data)
    train, test = prepare(data, image_size=preset.image_size, train_subset=preset.train_subset,
                       test_subset=preset.test_subset, subset_seed=preset.subset_seed)
    arch = variant_spec(preset.arch, args.variant)
    params = init_params(arch, seed=0)
    sgd = SGDConfig(lr=preset.lr, momentum=preset.momentum, weight_decay=preset.weight_decay)
    test_batch = (test.images[:preset.eval_batch_size], test.labels[:preset.eval_batch_size])
    prebuilt = list(batches(train, batch_size=preset.batch_size, seed=0, epoch=0))
    rng, shapes = mask_rng(seed=0, epoch=0), dropout_shapes(arch)
    masks = [dropout_masks(shapes, batch=len(labels), rng=rng) for _, labels in prebuilt]
    print(f"preset {preset.name} ({preset.arch} AlexNet, {args.variant}): {len(prebuilt)} steps of batch "
          f"{preset.batch_size}, {args.threads} thread(s), load average {os.getloadavg()[0]:.2f}")
    print(f"{'framework':<10} {'bare img/s':>11} {'suite img/s':>12} {'bare/suite':>11} {'overhead':>9} "
          f"{'outside step':>13}  compiles")
    for framework in parse_frameworks(args.frameworks):
        trainer_cls = load_trainer(framework)
        if isinstance(trainer_cls, Unavailable):
            print(f"{framework:<10} skipped: {trainer_cls.reason}")
            continue
        # Warm-up (untimed): the first steps in a process pay one-off costs (allocator, kernel selection).
        _bare(trainer_cls, arch=arch, params=params, sgd=sgd, batches=prebuilt[:3], masks=masks[:3], test=test_batch)
        bare, suite, outside, compiles = [], [], [], None
        for _ in range(args.repeats):
            bare.append(_bare(trainer_cls, arch=arch, params=params, sgd=sgd, batches=prebuilt, masks=masks,
                              test=test_batch))
            ips, compiles, share = _suite(_timed(trainer_cls), framework=framework, variant=args.variant,
                                          preset=preset, data_dir=data.source, verify=not args.no_verify_data)
            suite.append(ips)
            outside.append(share)
        b, s = max(bare), max(suite)
        spread = f" (bare runs {', '.join(f'{v:.0f}' for v in bare)}; suite {', '.join(f'{v:.0f}' for v in suite)})"
        print(f"{framework:<10} {b:>11.1f} {s:>12.1f} {b / s:>11.3f} {1 - s / b:>8.1%} "
              f"{statistics.median(outside):>12.2%}  {compiles}"
              + (spread if args.repeats > 1 else ""))
        if args.repeats > 1:
            print(f"{'':<10} median bare {statistics.median(bare):.1f}, suite {statistics.median(suite):.1f}")
    return 0


if __name__ == "__main__":
    from bnparity.suites.errors import UserError

    try:
        sys.exit(main())
    except UserError as e:  # no data, a bad preset: one line, as the bnparity commands do
        sys.exit(f"train_overhead: error: {e}")
