"""`bnparity pitfalls RUN_DIR`: the seed tutorial's BN pitfalls, on a run's trained AlexNet and on the tutorial's MLP.

Two experiments (see experiment.py and tutorial.py):
- the trained AlexNet: reads a finished BN run's last checkpoint and the run's data, runs `experiment.measure` with
  the float64 NumPy AlexNet (no framework), and writes RUN_DIR/pitfalls.json (format bnparity-pitfalls/2), saved
  after every evaluation so that an interruption keeps what was measured;
- the tutorial's own MLP on Fashion-MNIST (its faulty layer, a correct one, every framework's builtin BatchNorm in
  a worker process of its own, no BN): RUN_DIR/tutorial_mlp.json (format bnparity-tutorial-mlp/1), saved after
  every worker. `--tutorial-only` runs it alone (no trained run needed: `--data-dir` or BNPARITY_DATA gives the
  data, `--tutorial-json` or RUN_DIR the output); `--no-tutorial` runs only the AlexNet part.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import itertools
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from bnparity.frameworks.registry import frameworks_help, parse_frameworks, sort_key
from bnparity.seeds.facts import TUTORIAL_SETUP
from bnparity.suites.convergence.records import RunId, checkpoint_epochs, load_checkpoint, load_manifest
from bnparity.suites.environment import environment
from bnparity.suites.errors import UserError
from bnparity.suites.output import JSON_TARGETS, output_file, stream_fd, write_json
from bnparity.suites.schema import (
    PITFALLS,
    PITFALLS_VERSION,
    Environment,
    PitfallRecord,
    PitfallRule,
    PitfallsDoc,
    PitfallsMeta,
    TrainManifest,
    TutorialMLPDoc,
    format_string,
    from_dict,
    to_dict,
)
from bnparity.suites.workers import check_engine_arguments

from . import tutorial
from .experiment import RULES, measure

FORMAT = format_string(PITFALLS, PITFALLS_VERSION)
FILENAME = "pitfalls.json"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", type=Path, metavar="RUN_DIR", nargs="?",
                        help="a `bnparity run` directory (or its train/); optional with --tutorial-only")
    parser.add_argument("--run", help="which BN run's weights, e.g. torch-bn-seed0 (default: the first finished one)")
    parser.add_argument("--steps", default="1,10,100", help="evaluate after these many batches (default: 1,10,100)")
    parser.add_argument("--test-images", type=int, default=1000,
                        help="evaluate on the first N images of the run's test set (default: 1000)")
    parser.add_argument("--json", type=output_file, metavar="PATH",
                        help=f"where to write the records (default: RUN_DIR/{FILENAME})" + JSON_TARGETS)
    tutorial_arguments(parser)


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
    if args.tutorial_only and args.no_tutorial:
        raise UserError("--tutorial-only and --no-tutorial exclude each other")
    if args.run_dir is None and not args.tutorial_only:
        raise UserError("RUN_DIR is required (a `bnparity run` directory) unless --tutorial-only is given")
    trained = None if args.tutorial_only else trained_network(args)  # every input checked before anything runs
    tutorial = None if args.no_tutorial else tutorial_mlp(args)
    if trained is not None:
        trained()
    if tutorial is not None:
        tutorial()
    return 0


def tutorial_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of the tutorial MLP experiment."""
    group = parser.add_argument_group("the tutorial's MLP experiment (tutorial.py)")
    group.add_argument("--tutorial-only", action="store_true",
                       help="run only the tutorial's MLP experiment (no trained run needed)")
    group.add_argument("--no-tutorial", action="store_true", help="run only the trained-AlexNet re-estimation")
    group.add_argument("--data-dir", type=Path,
                       help="folder with the four Fashion-MNIST files (default: the run's, else BNPARITY_DATA)")
    group.add_argument("--no-verify-data", action="store_true", help="skip the sha256 check of the data")
    group.add_argument("--frameworks", help=frameworks_help("every installed one"))
    group.add_argument("--tutorial-epochs", type=int, default=tutorial.EPOCHS,
                       help=f"epochs (default: {tutorial.EPOCHS}; the tutorial trained {TUTORIAL_SETUP.epochs})")
    group.add_argument("--tutorial-train-images", type=int, default=tutorial.TRAIN_IMAGES,
                       help=f"class-balanced training subset (default: {tutorial.TRAIN_IMAGES}; the tutorial used "
                            f"{tutorial.PUBLISHED_TRAIN_IMAGES})")
    group.add_argument("--tutorial-json", type=output_file, metavar="PATH",
                       help=f"where to write its records (default: RUN_DIR/{tutorial.FILENAME}); a regular file, "
                            "replaced atomically after every worker")
    group.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1),
                       help="workers running at once (default: min(2, CPUs))")
    group.add_argument("--timeout", type=float, default=tutorial.TIMEOUT_S,
                       help=f"seconds before a worker is killed (default: {tutorial.TIMEOUT_S:g})")


def tutorial_mlp(args: argparse.Namespace) -> Callable[[], None]:
    """The tutorial MLP experiment, its input checked (data, output, flags): call the result to run it."""
    from bnparity.suites.data.fashion_mnist import load_fashion_mnist

    try:
        frameworks = tuple(sorted(parse_frameworks(args.frameworks), key=sort_key))
    except ValueError as e:
        raise UserError(str(e)) from None
    check_engine_arguments(args.jobs, args.timeout)
    if args.tutorial_epochs < 1:
        raise UserError(f"--tutorial-epochs must be >= 1. Received: {args.tutorial_epochs}")
    if args.tutorial_train_images < TUTORIAL_SETUP.batch_size:
        raise UserError(f"--tutorial-train-images must be >= the batch size {TUTORIAL_SETUP.batch_size}. "
                        f"Received: {args.tutorial_train_images}")
    out = args.tutorial_json
    if out is None:
        if args.run_dir is None:
            raise UserError("--tutorial-only needs RUN_DIR or --tutorial-json: where to write the records")
        out = Path(args.run_dir) / tutorial.FILENAME
    if stream_fd(out) is not None or (out.exists() and not out.is_file()):
        raise UserError(f"--tutorial-json must name a regular file (the records are rewritten after every worker). "
                        f"Received: {out}")
    data_dir, verify = args.data_dir, not args.no_verify_data
    if data_dir is None and args.run_dir is not None:  # the run's own data, as the trained-network part uses
        with contextlib.suppress(UserError):
            manifest = load_manifest(train_dir_of(args.run_dir))
            data_dir, verify = Path(manifest.data_dir), verify and manifest.verify_data
    data = load_fashion_mnist(data_dir, allow_download=False, verify=verify)  # UserError: not found, corrupt
    config = tutorial.Config(epochs=args.tutorial_epochs, seed=tutorial.SEED,
                             train_images=min(args.tutorial_train_images, len(data.train_labels)))
    meta = tutorial.new_meta(frameworks=frameworks, config=config, train_images=config.train_images,
                             test_images=len(data.test_labels))
    save = tutorial.saver(out)
    save(TutorialMLPDoc(meta=meta))  # an output that cannot be written fails now, not after the first worker
    work = tutorial.worker_work(data_dir=data.source, verify=verify, config=config, timeout=args.timeout)

    def go() -> None:
        print(f"tutorial MLP ({TUTORIAL_SETUP.network}, SGD lr {config.lr:g}, batch {config.batch_size}): "
              f"{config.epochs} epochs on {config.train_images} {tutorial.DATASET} training images (the tutorial: "
              f"{TUTORIAL_SETUP.epochs} on {tutorial.PUBLISHED_TRAIN_IMAGES} {TUTORIAL_SETUP.dataset}); "
              f"{len(frameworks)} framework(s), {args.jobs} at a time", flush=True)
        doc = tutorial.run_experiment(frameworks=frameworks, meta=meta, work=work, jobs=args.jobs, save=save,
                                      log=lambda line: print(line, flush=True))
        print(f"tutorial MLP: {len(doc.measured)} records, {len(doc.not_run)} not run, "
              f"{doc.meta.wall_time_s:.1f} s")
        print(out)

    return go


def trained_network(args: argparse.Namespace) -> Callable[[], None]:
    """The trained-AlexNet re-estimation, its input checked: call the result to run it."""
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
    out = args.json or Path(args.run_dir) / FILENAME

    def go() -> None:
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

        meta = PitfallsMeta(environment=from_dict(Environment, environment()), run=run_id.name, epoch=epoch,
                            preset=preset.name, batch_size=preset.batch_size, steps=tuple(steps), test_images=n_test,
                            rules=tuple(PitfallRule(r.name, r.description, r.changes_from(arch.bn)) for r in RULES),
                            complete=False)
        results: list[PitfallRecord] = []

        def save(result: PitfallRecord) -> None:
            results.append(result)
            write_json(out, to_dict(PitfallsDoc(meta=meta, records=tuple(results))))
            when = "as trained" if result.steps is None else f"after {result.steps} batch(es)"
            print(f"{result.rule:<11} {when:<20} test accuracy {result.test_accuracy:.4f}  "
                  f"loss {result.test_loss:.4f}", flush=True)

        print(f"{run_id.name}, weights after epoch {epoch}; running statistics re-estimated from its first "
              f"{steps[-1]} training batches; {n_test} test images (float64 NumPy AlexNet)")
        measure(arch, params, train_batches(), (test.images[:n_test], test.labels[:n_test]), steps=steps,
                on_result=save)
        write_json(out, to_dict(PitfallsDoc(meta=dataclasses.replace(meta, complete=True), records=tuple(results))))
        print(out)

    return go
