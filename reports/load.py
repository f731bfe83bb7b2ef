"""Reading a run directory: every record file it may hold, typed (bnparity.suites.schema), and which parts are
missing, cut short or unreadable. A file of a newer format than this bnparity reads makes its part "unreadable"
(one line naming both versions); it never stops the report."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bnparity.frameworks.conventions import Convention, LayerConvention
from bnparity.suites.errors import UserError
from bnparity.suites.fold.records import FoldDoc, load_fold
from bnparity.suites.records import read_json
from bnparity.suites.schema import (
    TRAIN_MANIFEST,
    Conclusions,
    DPParityDoc,
    Environment,
    FormatError,
    ModelParityDoc,
    ParityDoc,
    PitfallsDoc,
    RunManifest,
    SyncParityDoc,
    TrainEvent,
    TrainManifest,
    TutorialMLPDoc,
    format_string,
    load_conventions,
    load_dp_parity,
    load_model_parity,
    load_parity,
    load_pitfalls,
    load_run_manifest,
    load_sync_parity,
    load_train_manifest,
    load_tutorial_mlp,
)

# part -> (file or folder in the run directory, the `bnparity run` step that writes it)
PARTS: dict[str, tuple[str, str | None]] = {
    "manifest": ("manifest.json", None),
    "conventions": ("conventions.json", None),
    "parity": ("parity.json", "parity"),
    "model_parity": ("model_parity.json", "model-parity"),
    "sync_parity": ("sync_parity.json", "sync-parity"),
    "dp_parity": ("dp_parity.json", "dp-parity"),
    "train": ("train", "train"),
    "fold": ("fold.json", "fold"),
    "pitfalls": ("pitfalls.json", "pitfalls"),
    "tutorial_mlp": ("tutorial_mlp.json", "pitfalls"),
}
FINISHED_STEPS = ("done", "done-with-differences", "done-with-failed-runs")  # suites/main_job.py
_TRAIN_PREFIX = format_string(TRAIN_MANIFEST, 0).removesuffix("0")  # "bnparity-train/": a training run manifest


@dataclass(frozen=True)
class PartStatus:
    """How complete one part of the run directory is.

    Attributes:
        part: a key of PARTS.
        status: "ok", "partial" (cut short: interrupted or failed), "missing", "unreadable" or "not requested"
            (the run's manifest did not ask for this step).
        detail: one line saying what is missing, for the report.
    """

    part: str
    status: str
    detail: str = ""

    @property
    def incomplete(self) -> bool:
        return self.status not in ("ok", "not requested")


@dataclass
class RunData:
    """Everything the report reads from one run directory (None where a part is absent).

    train_unreadable: run file name -> how many of its lines could not be read (only files with some).
    """

    run_dir: Path
    manifest: RunManifest | None = None
    conventions: tuple[Convention, ...] = ()
    layer_conventions: tuple[LayerConvention, ...] = ()
    conventions_source: str = "conventions.json"
    parity: ParityDoc | None = None
    model_parity: ModelParityDoc | None = None
    sync_parity: SyncParityDoc | None = None
    dp_parity: DPParityDoc | None = None
    fold: FoldDoc | None = None
    pitfalls: PitfallsDoc | None = None
    tutorial_mlp: TutorialMLPDoc | None = None
    train_dir: Path | None = None
    train_manifest: TrainManifest | None = None
    train_records: dict[str, list[TrainEvent]] = field(default_factory=dict)
    train_unreadable: dict[str, int] = field(default_factory=dict)
    conclusions: Conclusions | None = None
    parts: dict[str, PartStatus] = field(default_factory=dict)

    @property
    def incomplete(self) -> list[PartStatus]:
        """The parts that are missing, unreadable or cut short."""
        return [p for p in self.parts.values() if p.incomplete]

    @property
    def environment(self) -> Environment:
        """The environment manifest: the run's, else the one a record file carries (empty when none does)."""
        candidates = (self.manifest, self.parity and self.parity.meta, self.model_parity and self.model_parity.meta,
                      self.sync_parity and self.sync_parity.meta, self.dp_parity and self.dp_parity.meta,
                      self.train_manifest)
        for holder in candidates:
            if holder is not None and holder.environment is not None and holder.environment != Environment():
                return holder.environment
        return Environment()


def _read(path: Path, loader: Any) -> tuple[Any, str | None]:
    """(record, None) or (None, why it cannot be used: one line)."""
    try:
        return loader(read_json(path), where=path.name), None
    except (ValueError, OSError) as e:  # FormatError is a ValueError
        return None, str(e)


def _step_status(manifest: RunManifest | None, step: str | None) -> str | None:
    if manifest is None or step is None:
        return None
    return manifest.steps.get(step, "not requested")


def _suite_part(data: RunData, part: str, loader: Any) -> None:
    """parity.json, model_parity.json, sync_parity.json or dp_parity.json: read it and judge whether it is complete."""
    name, step = PARTS[part]
    path = data.run_dir / name
    step_status = _step_status(data.manifest, step)
    if not path.exists():
        status = "not requested" if step_status == "not requested" else "missing"
        why = f"the run's step {step} is {step_status}" if step_status else "no such file"
        data.parts[part] = PartStatus(part, status, f"{name}: {why}")
        return
    doc, problem = _read(path, loader)
    if doc is None:
        data.parts[part] = PartStatus(part, "unreadable", problem or "")
        return
    setattr(data, part, doc)
    if not doc.meta.complete:
        data.parts[part] = PartStatus(part, "partial", f"{name}: interrupted after {len(doc.records)} "
                                                       "records (meta.complete is false)")
    elif step_status not in (None, "not requested", *FINISHED_STEPS):  # (a file the run did not ask for: added)
        data.parts[part] = PartStatus(part, "partial", f"{name}: the run's step {step} is {step_status}")
    else:
        data.parts[part] = PartStatus(part, "ok")


def _fold_part(data: RunData) -> None:
    """fold.json (bnparity fold), read as the suites' files are when it exists or the run asked for its step; a run
    directory from before the fold step has no such part."""
    if (data.run_dir / PARTS["fold"][0]).exists() or _step_status(data.manifest, "fold") not in (None, "not requested"):
        _suite_part(data, "fold", load_fold)


def _pitfalls_part(data: RunData, part: str, loader: Any) -> None:
    """pitfalls.json or tutorial_mlp.json (bnparity pitfalls), read as the suites' files are when it exists. Absent, it
    is missing only when the run's step pitfalls did not finish; a run that never asked for the step, or one whose
    step finished without the file (a run from before the tutorial experiment, or --no-tutorial), lacks nothing."""
    name, step = PARTS[part]
    step_status = _step_status(data.manifest, step)
    if (data.run_dir / name).exists() or step_status not in (None, "not requested", *FINISHED_STEPS):
        _suite_part(data, part, loader)
        return
    why = f"the run's step {step} finished without it" if step_status in FINISHED_STEPS else "no such file"
    data.parts[part] = PartStatus(part, "not requested", f"{name}: {why}")


def _conventions_part(data: RunData) -> None:
    """conventions.json through the schema (any version it reads); without one, the installed registry."""
    path = data.run_dir / PARTS["conventions"][0]
    if path.exists():
        try:
            doc = load_conventions(read_json(path), where=path.name)
            data.conventions, data.layer_conventions = doc.conventions, doc.layers
            data.parts["conventions"] = PartStatus("conventions", "ok")
            return
        except (ValueError, OSError) as e:  # FormatError is a ValueError
            data.parts["conventions"] = PartStatus("conventions", "unreadable", str(e))
    from bnparity.frameworks.conventions import all_conventions, all_layer_conventions  # data: imports no framework

    data.conventions, data.layer_conventions = all_conventions(), all_layer_conventions()
    data.conventions_source = "the registry of this installation"
    if "conventions" not in data.parts:
        data.parts["conventions"] = PartStatus("conventions", "missing",
                                               "conventions.json: no such file; the installed registry is shown")


def unreadable_note(unreadable: dict[str, int]) -> str:
    """'2 unreadable lines in torch-bn-seed0.jsonl; ...' ('' when every line was read)."""
    return "; ".join(f"{n} unreadable line{'s' if n != 1 else ''} in {name}" for name, n in unreadable.items())


def _train_part(data: RunData, train_dir: Path) -> None:
    from bnparity.suites.convergence.conclusions import compute_conclusions
    from bnparity.suites.convergence.records import RunId, read_run

    step_status = _step_status(data.manifest, PARTS["train"][1])
    if not (train_dir / "manifest.json").exists():
        status = "not requested" if step_status == "not requested" and not train_dir.exists() else "missing"
        why = f"the run's step train is {step_status}" if step_status else "no training run directory"
        data.parts["train"] = PartStatus("train", status, f"{train_dir.name}/manifest.json: {why}")
        return
    manifest, problem = _read(train_dir / "manifest.json", load_train_manifest)
    if manifest is None:
        data.parts["train"] = PartStatus("train", "unreadable", f"{train_dir.name}/{problem}")
        return
    data.train_dir, data.train_manifest = train_dir, manifest
    try:
        runs = [RunId.parse(name) for name in manifest.runs]
        records = {r.name: read_run(r.records_path(train_dir)) for r in runs}
        data.conclusions = compute_conclusions(train_dir, manifest=manifest, records=records)
    except (ValueError, OSError) as e:  # FormatError (a run file of a newer version) is a ValueError
        data.parts["train"] = PartStatus("train", "unreadable", f"{train_dir.name}: {e}")
        return
    data.train_records = {name: rr.events for name, rr in records.items()}
    data.train_unreadable = dict(data.conclusions.unreadable_lines)
    note = unreadable_note(data.train_unreadable)
    cut = [f"{i.run} {i.status} after {i.epochs_completed} epochs" for i in data.conclusions.incomplete]
    if cut:
        data.parts["train"] = PartStatus("train", "partial", "; ".join(
            ["training runs not done: " + "; ".join(cut), *([note] if note else [])]))
    elif step_status not in (None, *FINISHED_STEPS):
        data.parts["train"] = PartStatus("train", "partial", f"the run's step train is {step_status}")
    else:
        data.parts["train"] = PartStatus("train", "ok", note)


def load_run(run_dir: Path) -> RunData:
    """Read every part of `run_dir` that exists; a missing, cut-short or unreadable part is recorded, never raised.

    A training run directory (the output of `bnparity train`) is accepted as RUN_DIR too.

    Raises:
        UserError: `run_dir` does not exist, is not a directory, or holds no bnparity record file.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        what = "is not a directory" if run_dir.exists() else "does not exist"
        raise UserError(f"RUN_DIR must be a bnparity run directory. Received: {run_dir}, which {what}")
    data = RunData(run_dir=run_dir)
    path = run_dir / "manifest.json"
    raw, problem = _read(path, lambda doc, where: doc) if path.exists() else (None, "manifest.json: no such file")
    if isinstance(raw, dict) and str(raw.get("format", "")).startswith(_TRAIN_PREFIX):
        data.parts["manifest"] = PartStatus("manifest", "not requested", "a training run directory on its own")
        _train_part(data, run_dir)
        for part in ("parity", "model_parity", "sync_parity", "dp_parity", "conventions"):
            data.parts[part] = PartStatus(part, "not requested", "a training run directory on its own")
        _conventions_part(data)  # the installed registry, since no conventions.json was recorded
        return data
    manifest = None
    if raw is not None:
        try:
            manifest = load_run_manifest(raw, where=path.name)
        except FormatError as e:
            problem = str(e)
    if manifest is None:
        data.parts["manifest"] = PartStatus("manifest", "missing" if "no such" in (problem or "") else "unreadable",
                                            problem or "")
    else:
        data.manifest = manifest
        unfinished = [f"{s} {v}" for s, v in manifest.steps.items() if s != "report" and v not in FINISHED_STEPS]
        if manifest.finished is None or unfinished:
            detail = "steps not finished: " + ", ".join(unfinished) if unfinished else "the run never finished"
            data.parts["manifest"] = PartStatus("manifest", "partial", detail)
        else:
            data.parts["manifest"] = PartStatus("manifest", "ok")
    _suite_part(data, "parity", load_parity)
    _suite_part(data, "model_parity", load_model_parity)
    _suite_part(data, "sync_parity", load_sync_parity)
    _suite_part(data, "dp_parity", load_dp_parity)
    _fold_part(data)
    _pitfalls_part(data, "pitfalls", load_pitfalls)
    _pitfalls_part(data, "tutorial_mlp", load_tutorial_mlp)
    _train_part(data, run_dir / PARTS["train"][0])
    _conventions_part(data)
    suites = ("parity", "model_parity", "sync_parity", "dp_parity")
    if all(getattr(data, p) is None for p in suites) and data.train_manifest is None:
        if any(data.parts[p].status == "unreadable" for p in (*suites, "train")):
            return data  # record files this version cannot read: the report says so, part by part
        raise UserError(f"RUN_DIR must hold parity.json, model_parity.json, sync_parity.json, dp_parity.json or "
                        f"train/. Received: {run_dir}, which holds none of them")
    return data
