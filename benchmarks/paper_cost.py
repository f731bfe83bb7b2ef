"""What the paper preset costs on a CPU: the full 224x224 AlexNet's training step, per image, on one thread.

For each framework (default: torch) and variant (default: bn, nobn), in a process of its own with `--threads`
compute threads, a fresh Trainer (init_params seed 0) runs `--warmup` untimed steps (JAX's and TensorFlow's
compilation), then `--steps` timed training steps on synthetic standard-normal images of the paper preset's shape
(bnparity.suites.convergence.dry_run.synthetic_batch: the same dropout masks as the runs), at each batch size of
`--batches`; then the same for `Trainer.evaluate` at the preset's evaluation batch (`--eval-batch`, default 16:
one eval-mode forward). The median step gives images/s and seconds per image, and the hours the preset implies per
variant on this machine: training, epochs x training images (the blog's 40 x 60,000), plus evaluation,
epochs x evals per epoch x test images, all read from the preset.

    .venv/bin/python benchmarks/paper_cost.py [--frameworks torch,mxnet,...|all] [--batches 8,16] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

from bnparity.frameworks.registry import framework_environment, parse_frameworks
from bnparity.suites.convergence.presets import get_preset
from bnparity.suites.convergence.runner import thread_env

MARK = "PAPER-COST "
PRESET = "paper"
FULL_TRAIN, FULL_TEST = 60_000, 10_000  # Fashion-MNIST, when the preset uses every image (subset None)


def _median_seconds(fn, *, warmup: int, steps: int) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def worker(job: dict) -> None:
    """In the framework's own process: one record per (variant, kind, batch)."""
    from bnparity.frameworks.registry import Unavailable
    from bnparity.frameworks.training import SGDConfig, load_trainer
    from bnparity.reference.alexnet import init_params, variant_spec
    from bnparity.suites.convergence.dry_run import synthetic_batch

    preset = get_preset(PRESET)
    trainer_cls = load_trainer(job["framework"])
    if isinstance(trainer_cls, Unavailable):
        print(MARK + json.dumps({"skipped": trainer_cls.reason}), flush=True)
        return
    for variant in job["variants"]:
        spec = variant_spec(preset.arch, variant)
        trainer = trainer_cls(arch=spec, params=init_params(spec, seed=0), device="cpu",
                              sgd=SGDConfig(lr=preset.lr, momentum=preset.momentum, weight_decay=preset.weight_decay))
        for batch in job["batches"]:
            x, labels, masks = synthetic_batch(spec, batch=batch)
            s = _median_seconds(lambda: trainer.train_step(x, labels, dropout_masks=masks),  # noqa: B023
                                warmup=job["warmup"], steps=job["steps"])
            print(MARK + json.dumps({"variant": variant, "kind": "train", "batch": batch, "step_s": s}), flush=True)
        x, labels, _ = synthetic_batch(spec, batch=job["eval_batch"])
        s = _median_seconds(lambda: trainer.evaluate(x, labels), warmup=job["warmup"], steps=job["steps"])  # noqa: B023
        print(MARK + json.dumps({"variant": variant, "kind": "eval", "batch": job["eval_batch"], "step_s": s}),
              flush=True)
        trainer = None


def _run(framework: str, job: dict, threads: int) -> list[dict]:
    env = dict(os.environ)
    env.update(framework_environment(framework))
    env.update(thread_env(threads, env))
    done = subprocess.run([sys.executable, __file__, "--worker", json.dumps(job)], env=env, capture_output=True,
                          text=True, check=False)
    records = [json.loads(line[len(MARK):]) for line in done.stdout.splitlines() if line.startswith(MARK)]
    if done.returncode and not records:
        last = [line for line in done.stderr.splitlines() if line.strip()]
        records = [{"skipped": f"worker exited {done.returncode}: {last[-1] if last else ''}"}]
    return records


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frameworks", default="torch")
    parser.add_argument("--variants", default="bn,nobn")
    parser.add_argument("--batches", default="8,16")
    parser.add_argument("--eval-batch", type=int, default=16)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(json.loads(args.worker))
        return
    preset = get_preset(PRESET)
    n_train = preset.train_subset or FULL_TRAIN
    n_test = preset.test_subset or FULL_TEST
    train_images = preset.epochs * n_train
    eval_images = preset.epochs * preset.evals_per_epoch * n_test
    print(f"preset {preset.name}: {preset.epochs} epochs x {n_train:,} training images = {train_images:,} per variant, "
          f"+ {preset.epochs} x {preset.evals_per_epoch} evaluations x {n_test:,} test images = {eval_images:,}; "
          f"{args.threads} thread(s), median of {args.steps} steps after {args.warmup} warm-up; os.cpu_count()="
          f"{os.cpu_count()}, load average {os.getloadavg()[0]:.2f}")
    job = {"variants": args.variants.split(","), "batches": [int(b) for b in args.batches.split(",")],
           "eval_batch": args.eval_batch, "warmup": args.warmup, "steps": args.steps}
    for framework in parse_frameworks(args.frameworks):
        start = time.perf_counter()
        records = _run(framework, {**job, "framework": framework}, args.threads)
        if records and "skipped" in records[0]:
            print(f"{framework}: skipped: {records[0]['skipped']}")
            continue
        for variant in job["variants"]:
            mine = [r for r in records if r["variant"] == variant]
            evals = [r for r in mine if r["kind"] == "eval"]
            eval_s_img = evals[0]["step_s"] / evals[0]["batch"] if evals else 0.0
            for r in (r for r in mine if r["kind"] == "train"):
                s_img = r["step_s"] / r["batch"]
                train_h = train_images * s_img / 3600
                eval_h = eval_images * eval_s_img / 3600
                print(f"{framework:<17} {variant:<5} batch {r['batch']:>3}: train {1 / s_img:6.2f} img/s "
                      f"({s_img:.4f} s/img) -> {train_h:7.1f} h training, + {eval_h:5.1f} h evaluation "
                      f"({1 / eval_s_img:.1f} img/s at batch {evals[0]['batch']}) = {train_h + eval_h:7.1f} h "
                      "per variant")
        print(f"{framework}: measured in {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
