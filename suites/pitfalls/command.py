"""`bnparity pitfalls RUN_DIR`: the seed tutorial's BN pitfalls as eval accuracy of a run's trained AlexNet.

Reads a finished BN run's last checkpoint and the run's data, runs `experiment.measure` with the float64
NumPy AlexNet (no framework), and writes RUN_DIR/pitfalls.json (format bnparity-pitfalls/2), saved after
every evaluation so that an interruption keeps what was measured.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from bnparity.frameworks.registry import sort_key
from bnparity.suites.convergence.records import RunId, checkpoint_epochs, load_checkpoint, load_manifest
from bnparity.suites.environment import environment
from bnparity.suites.errors import UserError
from bnparity.suites.output import JSON_TARGETS, output_file, write_json
from bnparity.suites.schema import (
    PITFALLS,
    PITFALLS_VERSION,
    Environment,
    PitfallRecord,
    PitfallRule,
    PitfallsDoc,
    PitfallsMeta,
    TrainManifest,
    format_string,
    from_dict,
    to_dict,
)

from .experiment import RULES, measure

FORMAT = format_string(PITFALLS, PITFALLS_VERSION)
FILENAME = "pitfalls.json"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="a `bnparity run` directory (or its train/)")
    parser.add_argument("--run", help="which BN run's weights, e.g. torch-bn-seed0 (default: the first finished one)")
    parser.add_argument("--steps", default="1,10,100", help="evaluate after these many batches (default: 1,10,100)")
    parser.add_argument("--test-images", type=int, default=1000,
                        help="evaluate on the first N images of the run's test set (default: 1000)")
    parser.add_argument("--json", type=output_file, metavar="PATH",
                        help=f"where to write the records (default: RUN_DIR/{FILENAME})" + JSON_TARGETS)


def train_dir_of(run_dir: Path) -> Path:
    """RUN_DIR/train for a `bnparity run` directory, RUN_DIR itself for a `bnparity train` one."""
    for candidate in (Path(run_dir) / "train", Path(run_dir)):
        if (candidate / "manifest.json").exists() and (candidate / "checkpoints").is_dir():
            return candidate
    raise UserError(f"RUN_DIR must hold a training run (train/manifest.json and checkpoints). Received: {run_dir}")


def choose_run(train_dir: Path, manifest: TrainManifest, name: str | None) -> tuple[RunId, int]:
    """(run, last checkpointed epoch) of `name`, or of the first BN run with a checkpoint of its last epoch."""
    epochs = manifest.preset.epochs
    runs = [RunId.parse(n) for n in manifest.runs]
    if name is not None:
        try:
            run = RunId.parse(name)
        except ValueError as e:
            raise UserError(str(e)) from None
        if run not in runs or run.variant != "bn":
            raise UserError(f"--run must be one of the run's BN runs: "
                            f"{', '.join(r.name for r in runs if r.variant == 'bn') or 'none'}. Received: {name}")
        saved = checkpoint_epochs(train_dir, run)
        if not saved:
            raise UserError(f"{run.name} has no checkpoint yet in {train_dir}")
        return run, saved[-1]
    # in a batch-size sweep the largest batch's BN run: the one whose running statistics are worth re-estimating
    order = sorted((r for r in runs if r.variant == "bn"),
                   key=lambda r: (-(r.batch_size or 0), sort_key(r.framework), r.seed))
    for run in order:
        if epochs in checkpoint_epochs(train_dir, run):
            return run, epochs
    raise UserError(f"no BN run in {train_dir} has finished its {epochs} epochs; pass --run to use a partial one")


def parse_steps(text: str) -> tuple[int, ...]:
    try:
        steps = tuple(int(s) for s in text.split(",") if s.strip())
    except ValueError:
        steps = ()
    if not steps or list(steps) != sorted(set(steps)) or steps[0] < 1:
        raise UserError(f"--steps takes ascending integers >= 1, e.g. 1,10,100. Received: {text!r}")
    return steps


def run(args: argparse.Namespace) -> int:
    from bnparity.reference.alexnet import alexnet_spec, param_shapes
    from bnparity.suites.convergence.runner import dropout_masks, dropout_shapes, mask_rng
    from bnparity.suites.data.fashion_mnist import load_fashion_mnist
    from bnparity.suites.data.pipeline import batches, prepare

    steps = parse_steps(args.steps)
    if args.test_images < 1:
        raise UserError(f"--test-images must be >= 1. Received: {args.test_images}")
    train_dir = train_dir_of(args.run_dir)
    manifest = load_manifest(train_dir)
    run_id, epoch = choose_run(train_dir, manifest, args.run)
    # a sweep's run trained at its own batch size (and learning rate): replay its batches at that size
    preset = manifest.preset if run_id.batch_size is None else manifest.preset.at_batch(run_id.batch_size)
    arch = alexnet_spec(preset.arch, batch_norm=True)
    state, _ = load_checkpoint(train_dir, run_id, epoch)
    params = {name: state[name] for name in param_shapes(arch)}
    data = load_fashion_mnist(Path(manifest.data_dir), allow_download=False, verify=manifest.verify_data)
    train, test = prepare(data, image_size=preset.image_size, train_subset=preset.train_subset,
                          test_subset=preset.test_subset, subset_seed=preset.subset_seed)
    n_test = min(args.test_images, len(test.labels))
    shapes = dropout_shapes(arch)

    def train_batches() -> Iterator[tuple[np.ndarray, np.ndarray, list[np.ndarray] | None]]:
        """The run's training batches and dropout masks, in its order, epoch after epoch."""
        for e in itertools.count():
            masks_rng = mask_rng(seed=run_id.seed, epoch=e)
            for x, y in batches(train, batch_size=preset.batch_size, seed=run_id.seed, epoch=e):
                yield x, y, dropout_masks(shapes, batch=len(y), rng=masks_rng)

    out = args.json or Path(args.run_dir) / FILENAME
    meta = PitfallsMeta(environment=from_dict(Environment, environment()), run=run_id.name, epoch=epoch,
                        preset=preset.name, batch_size=preset.batch_size, steps=tuple(steps), test_images=n_test,
                        rules=tuple(PitfallRule(r.name, r.description, dict(r.changes)) for r in RULES),
                        complete=False)
    results: list[PitfallRecord] = []

    def save(result: PitfallRecord) -> None:
        results.append(result)
        write_json(out, to_dict(PitfallsDoc(meta=meta, records=tuple(results))))
        when = "as trained" if result.steps is None else f"after {result.steps} batch(es)"
        print(f"{result.rule:<11} {when:<20} test accuracy {result.test_accuracy:.4f}  loss {result.test_loss:.4f}",
              flush=True)

    print(f"{run_id.name}, weights after epoch {epoch}; running statistics re-estimated from its first "
          f"{steps[-1]} training batches; {n_test} test images (float64 NumPy AlexNet)")
    measure(arch, params, train_batches(), (test.images[:n_test], test.labels[:n_test]), steps=steps, on_result=save)
    write_json(out, to_dict(PitfallsDoc(meta=dataclasses.replace(meta, complete=True), records=tuple(results))))
    print(out)
    return 0
