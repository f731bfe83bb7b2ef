"""`bnparity audit [--frameworks ...] [--run RUN_DIR] [--json PATH]`: does a "frozen" BatchNorm still change?

Without --run, every framework's small hand-built model is audited in each "frozen" configuration its users write
and in its fix (frameworks/<fw>/audit.py, `FrozenAudit.cases`). With --run, each framework's trained BN AlexNet is
loaded from the run's last checkpoint and audited, frozen the usual way and fixed, for one fine-tuning step on the
run's first test images (cross-entropy on their labels, the same dropout masks in every framework); the records go
to RUN_DIR/audit.json unless --json says otherwise.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TextIO

from bnparity.frameworks.audit import AuditCase, FrozenAudit, load_audits
from bnparity.frameworks.registry import display_name, frameworks_help, parse_frameworks
from bnparity.suites.environment import environment
from bnparity.suites.errors import UserError
from bnparity.suites.output import JSON_TARGETS, is_stdout, output_file, write_json
from bnparity.suites.schema import Environment, from_dict, to_dict

from .records import AuditDoc, AuditMeta, AuditRecord, AuditSkip

FILENAME = "audit.json"
LR = 0.1


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--frameworks", help=frameworks_help())
    parser.add_argument("--run", type=Path, metavar="RUN_DIR",
                        help="audit the trained BN AlexNet of this `bnparity run` (or `bnparity train`) directory")
    parser.add_argument("--images", type=int, default=128,
                        help="with --run: the step's batch, the first N test images (default: 128)")
    parser.add_argument("--json", type=output_file, metavar="PATH",
                        help=f"where to write the records (default: RUN_DIR/{FILENAME} with --run, none without)"
                             + JSON_TARGETS)


def _record(audit: FrozenAudit, case: AuditCase) -> AuditRecord:
    result = audit.audit(case.model, case.x, variables=case.variables, labels=case.labels, frozen=case.frozen,
                         call_kwargs=case.call_kwargs, lr=LR)
    layers = tuple(layer if layer.layer not in case.names else
                   type(layer)(**{**layer.__dict__, "layer": case.names[layer.layer]}) for layer in result.layers)
    return AuditRecord(framework=audit.framework, configuration=case.name, fixed=case.fixed,
                       description=case.description, model=result.kind, step=result.step, layers=layers)


def _table(records: list[AuditRecord], skipped: list[AuditSkip], out: TextIO) -> None:
    print(f"{'framework':<12} {'configuration':<42} {'layer':<10} {'verdict':<10} {'Δ running_mean':>20} "
          f"{'Δ running_var':>20} {'|y_step − y_eval|':>18}", file=out)
    for r in records:
        for layer in r.layers:
            verdict = "DRIFTED" if layer.drifted else ("frozen" if layer.frozen else "batch-stats")
            gap = "n/a" if layer.output_gap is None else f"{layer.output_gap:.3g}"
            print(f"{display_name(r.framework):<12} {r.configuration:<42} {layer.layer or '-':<10} {verdict:<10} "
                  f"{layer.running_mean_change:>10.3g} ({layer.running_mean_relative:>6.1%}) "
                  f"{layer.running_var_change:>10.3g} ({layer.running_var_relative:>6.1%}) {gap:>18}", file=out)
    for s in skipped:
        print(f"{display_name(s.framework):<12} skipped: {s.reason}", file=out)
    for r in records:
        if r.drifted and not r.fixed:
            print(f"{display_name(r.framework)}: fix: {r.drifted[0].fix}", file=out)


def _run_cases(run_dir: Path, frameworks: tuple[str, ...], images: int
               ) -> tuple[dict[str, tuple[list[AuditCase], int]], list[AuditSkip], int]:
    """Per framework: its AlexNet cases and the checkpoint's epoch; the frameworks without a BN checkpoint."""
    from bnparity.reference.alexnet import alexnet_spec, param_shapes
    from bnparity.suites.convergence.records import RunId, checkpoint_epochs, load_checkpoint, load_manifest
    from bnparity.suites.convergence.runner import dropout_masks, dropout_shapes, mask_rng
    from bnparity.suites.data.fashion_mnist import load_fashion_mnist
    from bnparity.suites.data.pipeline import prepare
    from bnparity.suites.pitfalls.command import train_dir_of

    if not Path(run_dir).is_dir():
        raise UserError(f"--run must be a run directory. Received: {run_dir} (it does not exist)")
    train_dir = train_dir_of(run_dir)
    manifest = load_manifest(train_dir)
    runs = {}
    for name in manifest.runs:
        run = RunId.parse(name)
        if run.variant == "bn" and not run.data_parallel and run.framework in frameworks and checkpoint_epochs(
                train_dir, run):
            runs.setdefault(run.framework, run)
    if not runs:
        raise UserError(f"--run {run_dir} has no BN checkpoint of {', '.join(frameworks)} "
                        f"(expected {train_dir}/checkpoints/<framework>-bn-seed<k>/epoch<n>.npz)")
    preset = manifest.preset
    arch = alexnet_spec(preset.arch, batch_norm=True)
    data = load_fashion_mnist(Path(manifest.data_dir), allow_download=False, verify=manifest.verify_data)
    _, test = prepare(data, image_size=preset.image_size, train_subset=preset.train_subset,
                      test_subset=preset.test_subset, subset_seed=preset.subset_seed)
    n = min(images, len(test.labels))
    x, labels = test.images[:n], test.labels[:n]
    masks = dropout_masks(dropout_shapes(arch), batch=n, rng=mask_rng(seed=0, epoch=0))
    found, missing = load_audits(frameworks)
    audits = {a.framework: a for a in found}
    cases, skipped = {}, [AuditSkip(u.framework, u.reason) for u in missing if u.framework in frameworks]
    for framework in frameworks:
        if framework not in runs:
            skipped.append(AuditSkip(framework, f"no BN checkpoint of {framework} in {train_dir}"))
        elif framework in audits:
            epoch = checkpoint_epochs(train_dir, runs[framework])[-1]
            state, _ = load_checkpoint(train_dir, runs[framework], epoch)
            params = {name: state[name] for name in param_shapes(arch)}
            cases[framework] = (audits[framework].alexnet_cases(arch, params, x, labels, masks), epoch)
    return cases, skipped, n


def run(args: argparse.Namespace) -> int:
    try:
        frameworks = parse_frameworks(args.frameworks)
    except ValueError as e:
        raise UserError(str(e)) from None
    if args.images < 2:
        raise UserError(f"--images must be >= 2 (BatchNorm needs a batch). Received: {args.images}")
    out = sys.stderr if args.json is not None and is_stdout(args.json) else sys.stdout
    records: list[AuditRecord] = []
    epochs: dict[str, int] = {}
    if args.run is None:
        found, missing = load_audits(frameworks)
        skipped = [AuditSkip(u.framework, u.reason) for u in missing if u.framework in frameworks]
        images = 0
        for audit in found:
            if audit.framework in frameworks:
                for case in audit.cases():
                    records.append(_record(audit, case))
                    images = len(case.x)
        source, run_dir = "hand-built", None
    else:
        by_framework, skipped, images = _run_cases(args.run, frameworks, args.images)
        for framework, (cases, epoch) in by_framework.items():
            epochs[framework] = epoch
            records.extend(_record(next(a for a in load_audits([framework])[0]), c) for c in cases)
        source, run_dir = str(args.run), str(args.run)
    _table(records, skipped, out)
    path = args.json if args.json is not None else (Path(args.run) / FILENAME if args.run is not None else None)
    if path is not None:
        meta = AuditMeta(environment=from_dict(Environment, environment()), source=source, run_dir=run_dir,
                         epoch=epochs, images=images, lr=LR)
        write_json(path, to_dict(AuditDoc(meta=meta, records=tuple(records), skipped=tuple(skipped))))
        print(path, file=out)
    return 0
