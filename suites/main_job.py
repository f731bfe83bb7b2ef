"""`bnparity run`, the main job: data, layer, model and cross-replica parity, training, pitfalls, report — in one new
directory.

Each step is the same sub-command a user can run alone, writing its records into the run directory;
the manifest says which steps finished. An interrupted or failed step never loses what earlier steps
wrote, and the report is still built from whatever is there (marked incomplete).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import sys
import time
from collections.abc import Callable
from pathlib import Path

from bnparity.frameworks.conventions import all_conventions, all_layer_conventions
from bnparity.frameworks.registry import descriptors, frameworks_help, named_frameworks, parse_frameworks
from bnparity.frameworks.training import DEVICES, canonical_device

from .environment import environment
from .errors import UserError
from .records import write_json
from .schema import ConventionsDoc, Environment, RunManifest, from_dict, to_dict

STEPS = ("parity", "model-parity", "sync-parity", "dp-parity", "train", "fold", "pitfalls", "report")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--frameworks", help=frameworks_help("every installed one whose descriptor is in the main "
                                                             "job; 'all' adds the opt-in ones"))
    parser.add_argument("--preset", default="cpu", help="training preset (default: cpu; see bnparity train)")
    parser.add_argument("--model-preset", default="cpu", help="AlexNet preset of the model-parity step")
    parser.add_argument("--seeds", type=int, help="seeds per configuration (default: the preset's)")
    parser.add_argument("--jobs", type=int, default=2, help="training runs in parallel (default: 2)")
    parser.add_argument("--out", type=Path, help="run directory (default: ./bnparity-runs/<timestamp>)")
    parser.add_argument("--data-dir", type=Path, help="folder with the four Fashion-MNIST files")
    parser.add_argument("--no-verify-data", action="store_true",
                        help="skip the sha256 check of the data (for a copy you made yourself; see bnparity train)")
    parser.add_argument("--steps", default=",".join(STEPS), help=f"some of {','.join(STEPS)} (default: all)")
    parser.add_argument("--device", choices=DEVICES, default="cpu",
                        help="where the model-parity and train steps run: cpu (default) or gpu (= cuda); the other "
                             "steps are CPU comparisons. Without a GPU, stops before anything runs")


def new_run_dir(out: Path | None) -> Path:
    """A directory no earlier run used: --out if it is new or empty, else a fresh timestamped one."""
    if out is not None:
        if out.exists() and not out.is_dir():
            raise UserError(f"--out must be a new or empty directory. Received: {out}, an existing file")
        if out.exists() and any(out.iterdir()):
            raise UserError(f"{out} already holds a run; a run never overwrites another. Choose a new --out")
        out.mkdir(parents=True, exist_ok=True)
        return out
    base = Path("bnparity-runs") / dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    path, k = base, 1
    while path.exists():
        path, k = base.with_name(f"{base.name}-{k}"), k + 1
    path.mkdir(parents=True)
    return path


# What exit code 1 of a step's sub-command means: it finished, and found something.
_EXIT_1 = {"parity": "done-with-differences", "model-parity": "done-with-differences",
           "sync-parity": "done-with-differences", "dp-parity": "done-with-differences",
           "train": "done-with-failed-runs", "fold": "done-with-differences"}


def frameworks_argument(text: str | None, *, step: str = "") -> list[str]:
    """The --frameworks argument `step` gets: the user's list as given; without one, the frameworks whose descriptor
    is in the main job (`Framework.main_job`) and does not sit that step out (`main_job_sits_out`), or nothing (every
    framework) when that is all of them."""
    try:
        chosen = parse_frameworks(text)
    except ValueError as e:
        raise UserError(str(e)) from None
    if text is None:
        default = tuple(d.name for d in descriptors() if d.main_job and step not in d.main_job_sits_out)
        return [] if default == chosen else ["--frameworks", ",".join(default)]
    # Passed on only when the user named frameworks: a step exits 1 for a broken framework it was asked for.
    return ["--frameworks", ",".join(chosen)] if named_frameworks(text) else []


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def _sub(main: Callable[[list[str]], int], argv: list[str]) -> str:
    """Run one sub-command; its exit code becomes the step's status."""
    code = main(argv)
    return {0: "done", 1: _EXIT_1.get(argv[0], "failed"), 130: "interrupted"}.get(code, "failed")


def run(args: argparse.Namespace) -> int:
    from .cli import main  # the sub-commands, exactly as a user runs them

    steps = [s for s in args.steps.split(",") if s]
    if not steps or any(s not in STEPS for s in steps):
        raise UserError(f"--steps takes some of {', '.join(STEPS)}. Received: {args.steps!r}")
    fw = {step: frameworks_argument(args.frameworks, step=step) for step in STEPS}  # each step's --frameworks
    data_args = (["--data-dir", str(args.data_dir)] if args.data_dir else []) + \
        (["--no-verify-data"] if args.no_verify_data else [])
    if canonical_device(args.device) != "cpu" and {"train", "model-parity"} & set(steps):
        from .devices import on_device

        asked = [name for step in ("model-parity", "train") if step in steps
                 for name in (fw[step][1].split(",") if fw[step] else parse_frameworks(args.frameworks))]
        on_device(tuple(dict.fromkeys(asked)), args.device, args.frameworks)  # a UserError (one line), before the
        # run directory exists; the steps then skip the frameworks that cannot use the device, as they say
    if "train" in steps:
        from .data.fashion_mnist import locate

        print(f"Fashion-MNIST: {locate(args.data_dir)}")  # or a UserError saying how to get it
    device_args = [] if canonical_device(args.device) == "cpu" else ["--device", args.device]
    run_dir = new_run_dir(args.out)
    manifest = RunManifest(environment=from_dict(Environment, environment(), where="environment"),
                           command=("bnparity", *sys.argv[1:]), started=_now(), finished=None,
                           steps={s: "pending" for s in steps})
    status, seconds, errors = dict(manifest.steps), {}, {}

    def record(**changes: object) -> RunManifest:
        """The manifest with the steps' status, seconds and errors so far, written to manifest.json."""
        done = dataclasses.replace(manifest, steps=dict(status), step_seconds=dict(seconds), errors=dict(errors),
                                   **changes)
        write_json(run_dir / "manifest.json", to_dict(done))
        return done

    manifest = record()
    write_json(run_dir / "conventions.json", to_dict(ConventionsDoc(conventions=all_conventions(),
                                                                          layers=all_layer_conventions())))
    commands = {
        "parity": ["parity", *fw["parity"], "--json", str(run_dir / "parity.json")],
        "model-parity": ["model-parity", "--preset", args.model_preset, *fw["model-parity"], *device_args,
                         "--json", str(run_dir / "model_parity.json")],
        "sync-parity": ["sync-parity", *fw["sync-parity"], "--json", str(run_dir / "sync_parity.json")],
        "dp-parity": ["dp-parity", *fw["dp-parity"], "--json", str(run_dir / "dp_parity.json")],
        "train": ["train", "--preset", args.preset, *fw["train"], *device_args, "--jobs", str(args.jobs),
                  "--out", str(run_dir / "train"), *data_args,
                  *(["--seeds", str(args.seeds)] if args.seeds else [])],
        "fold": ["fold", *fw["fold"], "--run", str(run_dir)],  # writes RUN_DIR/fold.json
        "pitfalls": ["pitfalls", str(run_dir), *fw["pitfalls"]],  # + RUN_DIR/tutorial_mlp.json, per framework
    }
    interrupted = False
    for step in steps:
        if interrupted and step != "report":
            status[step] = "skipped"
            continue
        print(f"\n=== {step} ===", flush=True)
        start = time.perf_counter()
        if step == "report":  # the porting guide too, when this run measured layer parity
            manifest = record(finished=_now())
            porting = ["--porting", str(run_dir / "porting.md")] if (run_dir / "parity.json").exists() else []
            commands["report"] = ["report", str(run_dir), *porting]
        try:
            status[step] = _sub(main, commands[step])
        except KeyboardInterrupt:
            status[step] = "interrupted"
        except Exception as e:  # a bug in one step must not cost the others, nor the report of what is done
            status[step] = "failed"
            errors[step] = f"{type(e).__name__}: {e}".splitlines()[0]
            print(f"bnparity run: step {step} failed: {errors[step]}", file=sys.stderr)
        interrupted = interrupted or status[step] == "interrupted"
        seconds[step] = round(time.perf_counter() - start, 1)
        manifest = record()
    if "report" in steps and (run_dir / "report.html").exists():
        print(f"\nreport: {(run_dir / 'report.html').resolve()}")
    print(f"run directory: {run_dir.resolve()}")
    print("steps: " + ", ".join(f"{s} {v} ({manifest.step_seconds.get(s, 0)} s)" for s, v in manifest.steps.items()))
    if interrupted:
        return 130
    return 0 if all(v == "done" for v in manifest.steps.values()) else 1
