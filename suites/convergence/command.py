"""`bnparity train`: AlexNet with and without BN in every framework, several seeds, recorded curves; with a sweep
preset (small-batch), one run per batch size too; with a data-parallel preset (dp-cpu, dp-gpu), one run per
BatchNorm mode too: on R replicas with per-replica ("local") or synchronized ("sync") statistics, and on one device
("single"), all on the same global batches.

With --device gpu (or cuda), each framework is first asked, in a process of its own, whether it sees a GPU: one that
does not is left out with its reason, and when none does (or one named in --frameworks does not) the command stops
at once with that one line and exit code 2, before any data is read. --dry-run builds the preset's AlexNet in every
framework and runs one SGD step on synthetic images (dry_run.py): no data, no run directory.

Exit code 0 when every run that could start completed, 1 when a run failed (or none could start, or a framework
named in --frameworks is installed but fails to import), 2 for bad input, 130 when interrupted (every record
written so far stays; `--resume` continues).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import sys
from pathlib import Path

from bnparity.frameworks.registry import frameworks_help, named_frameworks, parse_frameworks
from bnparity.frameworks.training import (
    BN_SYNC,
    DEVICES,
    broken_frameworks,
    canonical_device,
)
from bnparity.suites.devices import on_device
from bnparity.suites.environment import environment
from bnparity.suites.errors import UserError
from bnparity.suites.schema import (
    TRAIN_MANIFEST,
    TRAIN_MANIFEST_VERSION,
    DoneEvent,
    Environment,
    ResumedSegment,
    TrainManifest,
    format_string,
    from_dict,
)

from . import dry_run
from .conclusions import format_conclusions, write_conclusions
from .orchestrate import run_all, run_threads, threads_per_job
from .presets import (
    PRESETS,
    VARIANTS,
    TrainPreset,
    data_parallel_presets,
    get_preset,
    parse_bn_sync,
    parse_variants,
)
from .progress import ProgressDisplay
from .records import SINGLE, RunId, load_manifest, read_records, terminal_record, write_manifest
from .runner import thread_env

FORMAT = format_string(TRAIN_MANIFEST, TRAIN_MANIFEST_VERSION)  # manifest.json
DEFAULT_PRESET = "cpu"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--preset", help=f"one of {', '.join(PRESETS)} (default: {DEFAULT_PRESET})")
    parser.add_argument("--frameworks", help=frameworks_help())
    parser.add_argument("--variants", help=f"comma-separated, some of {','.join(VARIANTS)}, or all "
                                           "(default: the preset's)")
    parser.add_argument("--batch-sizes", help="comma-separated: some of a sweep preset's batch sizes (default: all)")
    parser.add_argument("--replicas", type=int,
                        help="a data-parallel preset's number of replicas R, >= 2, dividing its global batch "
                             "(default: the preset's)")
    parser.add_argument("--bn-sync", help=f"comma-separated, some of {','.join(BN_SYNC)}: a data-parallel preset's "
                                          "BatchNorm modes (default: the preset's)")
    parser.add_argument("--seeds", type=int, help="seeds 0..N-1 per configuration (default: the preset's)")
    parser.add_argument("--jobs", type=int,
                        help="runs in parallel, one process each (default: 1; on --resume, the run's); a "
                             "data-parallel run's R replicas share its job's threads, at least one each")
    parser.add_argument("--out", type=Path, help="run directory (default: ./bnparity-runs/train-<timestamp>)")
    parser.add_argument("--resume", action="store_true",
                        help="continue the runs of --out from their last completed epoch")
    parser.add_argument("--device", choices=DEVICES, default=None,
                        help="passed to every trainer; cuda is another name of gpu (default cpu)")
    parser.add_argument("--data-dir", type=Path, help="folder with the Fashion-MNIST files (else BNPARITY_DATA, ...)")
    parser.add_argument("--no-verify-data", action="store_true",
                        help="skip the checksum check of the data files (small test datasets)")
    parser.add_argument("--epochs", type=int, help="override the preset's number of epochs")
    parser.add_argument("--dry-run", action="store_true",
                        help="build the preset's AlexNet in every framework and run one SGD step on "
                             f"{dry_run.BATCH} synthetic images per variant; reads no data, writes nothing")


def _positive(name: str, value: int | None) -> None:
    if value is not None and value < 1:
        raise UserError(f"--{name} must be >= 1. Received: {value}")


def parse_batch_sizes(text: str | None, preset: TrainPreset) -> tuple[int | None, ...]:
    """'2,32' -> (2, 32), some of the sweep preset's batch sizes; None -> all of them ((None,): not a sweep).
    Raises UserError for a size the preset does not sweep, or any size for a preset that sweeps none."""
    if text is None:
        return preset.batch_sizes or (None,)
    try:
        sizes = tuple(sorted({int(b) for b in text.split(",") if b.strip()}))
    except ValueError:
        sizes = ()
    if not preset.batch_sizes:
        raise UserError(f"--batch-sizes needs a sweep preset; preset {preset.name} trains at batch "
                        f"{preset.batch_size} only")
    if not sizes or any(b not in preset.batch_sizes for b in sizes):
        raise UserError(f"--batch-sizes takes some of {','.join(map(str, preset.batch_sizes))} (preset "
                        f"{preset.name}). Received: {text!r}")
    return sizes


def with_replicas(preset: TrainPreset, replicas: int | None) -> TrainPreset:
    """`preset` with --replicas applied (None: unchanged). Raises UserError when `preset` is not data-parallel, or
    `replicas` is below 2 or does not divide its global batch."""
    if replicas is None:
        return preset
    if not preset.data_parallel:
        raise UserError(f"--replicas needs a data-parallel preset ({data_parallel_presets()}); preset "
                        f"{preset.name} trains on one device")
    if replicas < 2 or preset.batch_size % replicas:
        raise UserError(f"--replicas must be >= 2 and divide the global batch of {preset.batch_size} (preset "
                        f"{preset.name}). Received: {replicas}")
    return preset.replace(replicas=replicas)


def _modes(preset: TrainPreset, modes: tuple[str, ...]) -> tuple[tuple[int | None, str | None], ...]:
    """(replicas, bn_sync) of each run of a configuration: one device only, unless data-parallel modes are given."""
    if not modes:
        return ((None, None),)
    return tuple((None, None) if m == SINGLE else (preset.replicas, m) for m in modes)


def _select(args: argparse.Namespace, preset: TrainPreset, *, seeds_default: int) -> list[RunId]:
    try:
        frameworks = parse_frameworks(args.frameworks)
    except ValueError as e:
        raise UserError(str(e)) from None
    variants = parse_variants(args.variants, preset.variants)
    sizes = parse_batch_sizes(args.batch_sizes, preset)
    modes = _modes(preset, parse_bn_sync(args.bn_sync, preset))
    seeds = range(args.seeds or seeds_default)
    # A framework's runs are adjacent, so parallel jobs run runs of equal cost together (bn beside nobn):
    # the jobs finish together, and both variants of a framework train under the same machine load. In a sweep the
    # smallest batches (the slowest runs) go first; in a data-parallel preset, a mode's variants are adjacent.
    return [RunId(f, v, s, b, *m) for f in frameworks for s in seeds for b in sizes for m in modes for v in variants]


def _spanned(runs: list[RunId]) -> dict[str, object]:
    """The manifest's fields that say what `runs` span besides frameworks and variants."""
    dp = [r for r in runs if r.replicas is not None]
    modes = {r.mode for r in runs} if dp else set()
    return {"seeds": tuple(sorted({r.seed for r in runs})),
            "batch_sizes": tuple(sorted({r.batch_size for r in runs if r.batch_size is not None})),
            "replicas": dp[0].replicas if dp else None, "bn_sync": tuple(m for m in BN_SYNC if m in modes)}



def _on_device(runs: list[RunId], device: str, frameworks_text: str | None) -> list[RunId]:
    usable = on_device(tuple(dict.fromkeys(r.framework for r in runs)), device, frameworks_text)
    return [r for r in runs if r.framework in usable]


def _new_manifest(args: argparse.Namespace) -> tuple[Path, TrainManifest, list[RunId]]:
    preset = with_replicas(get_preset(args.preset or DEFAULT_PRESET), args.replicas)
    if args.epochs is not None:
        preset = preset.replace(epochs=args.epochs)
    runs = _on_device(_select(args, preset, seeds_default=preset.seeds), args.device or "cpu", args.frameworks)
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    run_dir = args.out or Path("bnparity-runs") / f"train-{stamp}"
    k = 1
    while args.out is None and run_dir.exists():
        run_dir, k = Path("bnparity-runs") / f"train-{stamp}-{k}", k + 1
    if run_dir.exists() and (not run_dir.is_dir() or any(run_dir.iterdir())):
        raise UserError(f"--out must be a new or empty directory (pass --resume to continue a run). "
                        f"Received: {run_dir}, which exists")
    manifest = TrainManifest(preset=preset, runs=tuple(r.name for r in runs),
                             frameworks=tuple(dict.fromkeys(r.framework for r in runs)),
                             variants=tuple(dict.fromkeys(r.variant for r in runs)), **_spanned(runs),
                             device=canonical_device(args.device or "cpu"),
                             verify_data=not args.no_verify_data)
    return run_dir, manifest, runs


def _resumed_manifest(args: argparse.Namespace) -> tuple[Path, TrainManifest, list[RunId]]:
    if args.out is None:
        raise UserError("--resume needs --out, the run directory to continue")
    manifest = load_manifest(args.out)
    preset = manifest.preset
    if args.preset is not None and args.preset != preset.name:
        raise UserError(f"--preset must match the run's preset on --resume. Received: {args.preset}, "
                        f"run has {preset.name}")
    if args.epochs is not None and args.epochs != preset.epochs:
        raise UserError(f"--epochs must match the run's epochs on --resume. Received: {args.epochs}, "
                        f"run has {preset.epochs}")
    if args.replicas is not None and args.replicas != preset.replicas:
        raise UserError(f"--replicas must match the run's replicas on --resume. Received: {args.replicas}, "
                        f"run has {preset.replicas if preset.data_parallel else 'none (one device)'}")
    if args.device is not None and canonical_device(args.device) != manifest.device:
        raise UserError(f"--device must match the run's device on --resume. Received: {args.device}, "
                        f"run has {manifest.device}")
    recorded = [RunId.parse(n) for n in manifest.runs]
    chosen = (_select(args, preset, seeds_default=len(manifest.seeds))
              if args.frameworks or args.variants or args.seeds or args.batch_sizes or args.bn_sync else recorded)
    chosen = _on_device(chosen, args.device or manifest.device, args.frameworks)
    names = tuple(r.name for r in recorded) + tuple(r.name for r in chosen if r not in recorded)
    every = [RunId.parse(n) for n in names]
    manifest = dataclasses.replace(manifest, runs=names, **_spanned(every))
    return args.out, manifest, chosen


def run(args: argparse.Namespace) -> int:
    """Run the training suite as `args` say; returns the exit code."""
    from bnparity.suites.data.fashion_mnist import load_fashion_mnist
    from bnparity.suites.data.pipeline import prepare

    _positive("seeds", args.seeds)
    _positive("jobs", args.jobs)
    _positive("epochs", args.epochs)
    if getattr(args, "dry_run", False):
        return dry_run.run(args, default_preset=DEFAULT_PRESET)
    run_dir, manifest, runs = _resumed_manifest(args) if args.resume else _new_manifest(args)
    recorded_data = Path(manifest.data_dir) if manifest.data_dir is not None else None
    given = args.data_dir if args.data_dir is not None or not args.resume else recorded_data
    data = load_fashion_mnist(given, allow_download=False, verify=manifest.verify_data)
    data_dir = data.source.resolve()
    preset = manifest.preset
    if data.train_images.shape[1:] != (preset.image_size, preset.image_size):
        print(f"resizing the images to {preset.image_size}x{preset.image_size} once, for every run (cached)")
        prepare(data, image_size=preset.image_size, train_subset=preset.train_subset,
                test_subset=preset.test_subset, subset_seed=preset.subset_seed)
    todo = [r for r in runs if not (args.resume and _is_done(run_dir, r))]
    jobs = min(args.jobs or manifest.jobs or 1, max(1, len(todo)))
    threads = threads_per_job(jobs)
    when = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    env = from_dict(Environment, environment(), where="environment")
    setup = {"jobs": jobs, "threads_per_job": threads, "thread_env": thread_env(threads, {}),
             "data_dir": str(data_dir), "argv": tuple(sys.argv[1:])}
    if args.resume:
        segment = ResumedSegment(time=when, runs=tuple(r.name for r in todo), environment=env, **setup)
        manifest = dataclasses.replace(manifest, resumed=(*manifest.resumed, segment), data_dir=str(data_dir))
    else:
        manifest = dataclasses.replace(manifest, environment=env, **setup)
    run_dir.mkdir(parents=True, exist_ok=True)
    write_manifest(run_dir, manifest)
    dp = [r for r in todo if r.data_parallel]
    per_replica = (f" (data-parallel runs: {dp[0].replicas} replicas with {run_threads(dp[0], threads)} thread(s) "
                   "each)" if dp else "")
    print(f"bnparity train: preset {manifest.preset.name}, {len(todo)} of {len(runs)} runs to do, "
          f"{jobs} at a time with {threads} thread(s) each{per_replica} -> {run_dir}", flush=True)
    try:
        outcomes = run_all(run_dir=run_dir, runs=todo, jobs=jobs, threads=threads, resume=args.resume,
                           display=ProgressDisplay(run_dir, todo))
    finally:
        conclusions = write_conclusions(run_dir)
    skipped = {(o.run.framework, o.run.data_parallel): o.message for o in outcomes if o.status == "skipped"}
    for (framework, dp), reason in skipped.items():
        print(f"skipped: {framework}{' (data-parallel)' if dp else ''}: {reason}")
    broken = broken_frameworks(f for f in named_frameworks(args.frameworks) if (f, False) in skipped)
    for reason in broken.values():
        print(f"bnparity train: {reason} (asked for with --frameworks)", file=sys.stderr)
    print(format_conclusions(conclusions))
    print(f"records and conclusions.json in {run_dir}")
    failed = [o for o in outcomes if o.status != "done" and o.status != "skipped"]
    done = [r for r in runs if _is_done(run_dir, r)]
    if failed or not done or broken:
        if not done:
            print("bnparity train: no run completed", file=sys.stderr)
        return 1
    return 0


def _is_done(run_dir: Path, run: RunId) -> bool:
    last = terminal_record(read_records(run.records_path(run_dir)))
    return isinstance(last, DoneEvent)
