"""Reading a run directory: every record file it may hold, and which parts are missing or cut short."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bnparity.suites.errors import UserError
from bnparity.suites.records import read_json

PARITY_FORMAT = "bnparity-parity/1"
PITFALLS_FORMAT = "bnparity-pitfalls/1"  # suites/pitfalls/command.py
MODEL_PARITY_FORMAT = "bnparity-model-parity/1"
TRAIN_FORMAT = "bnparity-train/1"
# part -> (file or folder in the run directory, the `bnparity run` step that writes it)
PARTS: dict[str, tuple[str, str | None]] = {
    "manifest": ("manifest.json", None),
    "conventions": ("conventions.json", None),
    "parity": ("parity.json", "parity"),
    "model_parity": ("model_parity.json", "model-parity"),
    "train": ("train", "train"),
}
FINISHED_STEPS = ("done", "done-with-differences", "done-with-failed-runs")  # suites/main_job.py


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
    """Everything the report reads from one run directory (None where a part is absent)."""

    run_dir: Path
    manifest: dict[str, Any] | None = None
    conventions: list[dict[str, Any]] = field(default_factory=list)
    conventions_source: str = "conventions.json"
    parity: dict[str, Any] | None = None
    model_parity: dict[str, Any] | None = None
    train_dir: Path | None = None
    train_manifest: dict[str, Any] | None = None
    train_records: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    conclusions: dict[str, Any] | None = None
    parts: dict[str, PartStatus] = field(default_factory=dict)

    @property
    def incomplete(self) -> list[PartStatus]:
        """The parts that are missing, unreadable or cut short."""
        return [p for p in self.parts.values() if p.incomplete]

    @property
    def environment(self) -> dict[str, Any]:
        """The environment manifest: the run's, else the one a record file carries."""
        if self.manifest and self.manifest.get("environment"):
            return self.manifest["environment"]
        for doc in (self.parity, self.model_parity):
            if doc and doc.get("meta"):
                return {k: v for k, v in doc["meta"].items() if k in _ENV_KEYS}
        if self.train_manifest and self.train_manifest.get("environment"):
            return self.train_manifest["environment"]
        return {}


_ENV_KEYS = ("time", "python", "platform", "machine", "cpu", "cpu_count", "threads", "packages", "git_commit")


def _read(path: Path, expected_format: str | None) -> tuple[dict[str, Any] | None, str | None]:
    """(document, None) or (None, why it cannot be used)."""
    try:
        doc = read_json(path)
    except (ValueError, OSError) as e:
        return None, str(e)
    if not isinstance(doc, dict):
        return None, f"{path.name} must hold a JSON object. Received: {type(doc).__name__}"
    if expected_format is not None and doc.get("format") != expected_format:
        return None, f"{path.name} must have format {expected_format!r}. Received: {doc.get('format')!r}"
    return doc, None


def _step_status(manifest: dict[str, Any] | None, step: str | None) -> str | None:
    if manifest is None or step is None:
        return None
    return manifest.get("steps", {}).get(step, "not requested")


def _suite_part(data: RunData, part: str, fmt: str) -> None:
    """parity.json or model_parity.json: read it and judge whether it is complete."""
    name, step = PARTS[part]
    path = data.run_dir / name
    step_status = _step_status(data.manifest, step)
    if not path.exists():
        status = "not requested" if step_status == "not requested" else "missing"
        why = f"the run's step {step} is {step_status}" if step_status else "no such file"
        data.parts[part] = PartStatus(part, status, f"{name}: {why}")
        return
    doc, problem = _read(path, fmt)
    if doc is None:
        data.parts[part] = PartStatus(part, "unreadable", problem or "")
        return
    setattr(data, part, doc)
    if not doc.get("meta", {}).get("complete", False):
        data.parts[part] = PartStatus(part, "partial", f"{name}: interrupted after {len(doc.get('records', []))} "
                                                       "records (meta.complete is false)")
    elif step_status not in (None, *FINISHED_STEPS):
        data.parts[part] = PartStatus(part, "partial", f"{name}: the run's step {step} is {step_status}")
    else:
        data.parts[part] = PartStatus(part, "ok")


def _conventions_part(data: RunData) -> None:
    path = data.run_dir / PARTS["conventions"][0]
    doc = None
    if path.exists():
        try:
            doc = read_json(path)
        except (ValueError, OSError) as e:
            data.parts["conventions"] = PartStatus("conventions", "unreadable", str(e))
    rows = doc.get("conventions") if isinstance(doc, dict) else doc
    if isinstance(rows, list) and rows:
        data.conventions = rows
        data.parts["conventions"] = PartStatus("conventions", "ok")
        return
    from bnparity.frameworks.conventions import all_conventions  # data only: imports no framework

    data.conventions = [c.to_dict() for c in all_conventions()]
    data.conventions_source = "the registry of this installation"
    if "conventions" not in data.parts:
        data.parts["conventions"] = PartStatus("conventions", "missing",
                                               "conventions.json: no such file; the installed registry is shown")


def _train_part(data: RunData, train_dir: Path) -> None:
    from bnparity.suites.convergence.conclusions import compute_conclusions
    from bnparity.suites.convergence.records import RunId, read_records

    step_status = _step_status(data.manifest, PARTS["train"][1])
    if not (train_dir / "manifest.json").exists():
        status = "not requested" if step_status == "not requested" and not train_dir.exists() else "missing"
        why = f"the run's step train is {step_status}" if step_status else "no training run directory"
        data.parts["train"] = PartStatus("train", status, f"{train_dir.name}/manifest.json: {why}")
        return
    manifest, problem = _read(train_dir / "manifest.json", TRAIN_FORMAT)
    if manifest is None:
        data.parts["train"] = PartStatus("train", "unreadable", problem or "")
        return
    data.train_dir, data.train_manifest = train_dir, manifest
    try:
        runs = [RunId.parse(name) for name in manifest["runs"]]
        data.train_records = {r.name: read_records(r.records_path(train_dir)) for r in runs}
        data.conclusions = compute_conclusions(train_dir)
    except (ValueError, KeyError, OSError) as e:
        data.parts["train"] = PartStatus("train", "unreadable", f"{train_dir.name}: {e}")
        return
    cut = [f"{i['run']} {i['status']} after {i['epochs_completed']} epochs" for i in data.conclusions["incomplete"]]
    if cut:
        data.parts["train"] = PartStatus("train", "partial", "training runs not done: " + "; ".join(cut))
    elif step_status not in (None, *FINISHED_STEPS):
        data.parts["train"] = PartStatus("train", "partial", f"the run's step train is {step_status}")
    else:
        data.parts["train"] = PartStatus("train", "ok")


def load_run(run_dir: Path) -> RunData:
    """Read every part of `run_dir` that exists; a missing or cut-short part is recorded, never raised.

    A training run directory (the output of `bnparity train`) is accepted as RUN_DIR too.

    Raises:
        UserError: `run_dir` does not exist, is not a directory, or holds no bnparity record file.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        what = "is not a directory" if run_dir.exists() else "does not exist"
        raise UserError(f"RUN_DIR must be a bnparity run directory. Received: {run_dir}, which {what}")
    data = RunData(run_dir=run_dir)
    manifest, problem = (_read(run_dir / "manifest.json", None) if (run_dir / "manifest.json").exists()
                         else (None, "manifest.json: no such file"))
    if manifest is not None and manifest.get("format") == TRAIN_FORMAT:
        data.parts["manifest"] = PartStatus("manifest", "not requested", "a training run directory on its own")
        _train_part(data, run_dir)
        for part in ("parity", "model_parity", "conventions"):
            data.parts[part] = PartStatus(part, "not requested", "a training run directory on its own")
        _conventions_part(data)  # the installed registry, since no conventions.json was recorded
        return data
    if manifest is None:
        data.parts["manifest"] = PartStatus("manifest", "missing" if "no such" in (problem or "") else "unreadable",
                                            problem or "")
    else:
        data.manifest = manifest
        unfinished = [f"{s} {v}" for s, v in manifest.get("steps", {}).items()
                      if s != "report" and v not in FINISHED_STEPS]
        if manifest.get("finished") is None or unfinished:
            detail = "steps not finished: " + ", ".join(unfinished) if unfinished else "the run never finished"
            data.parts["manifest"] = PartStatus("manifest", "partial", detail)
        else:
            data.parts["manifest"] = PartStatus("manifest", "ok")
    _suite_part(data, "parity", PARITY_FORMAT)
    _suite_part(data, "model_parity", MODEL_PARITY_FORMAT)
    _train_part(data, run_dir / PARTS["train"][0])
    _conventions_part(data)
    if data.parity is None and data.model_parity is None and data.train_manifest is None:
        raise UserError(f"RUN_DIR must hold parity.json, model_parity.json or train/. Received: {run_dir}, "
                        "which holds none of them")
    return data
