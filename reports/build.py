"""Building a run's report: load the records, compute the summary, render HTML and Markdown, write the files."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bnparity.suites.environment import short_commit
from bnparity.suites.output import write_json, write_output
from bnparity.suites.schema import to_dict

from .document import Section
from .figures import Figure, training_figures
from .fold_sections import fold_section
from .html import render_html
from .load import RunData, load_run
from .markdown import render_markdown
from .parity_sections import (
    FIRST_NORMALIZATION,
    conventions_section,
    hard_section,
    layer_conventions_section,
    layer_section,
    model_section,
    section_normalizations,
)
from .pitfall_sections import pitfall_section
from .replica_sections import replica_section
from .seed_sections import seed_figures
from .summary import build_summary
from .train_sections import (
    convergence_section,
    environment_section,
    summary_section,
    throughput_section,
    time_to_accuracy_section,
)
from .verdict import verdict_section

TITLE = "BatchNorm parity report"
FIGURE_DIR = "figures"


@dataclass(frozen=True)
class Report:
    """What `build_report` wrote, and the summary it computed."""

    html: Path
    markdown: Path
    summary_json: Path
    figures: list[Path]
    summary: dict[str, Any]


def sections(data: RunData, summary: dict[str, Any], figures: list[Figure]) -> list[Section]:
    """Every section of the report in reading order; a section whose records are missing says so."""
    per_normalization = []
    for name in section_normalizations(data):  # the same three sections for every normalization
        conventions = (conventions_section(data, summary) if name == FIRST_NORMALIZATION
                       else layer_conventions_section(data, summary, name))
        per_normalization += [layer_section(data, summary, name), conventions, hard_section(data, summary, name)]
    return [verdict_section(summary["verdict"]),  # the verdict at a glance, before the summary
            summary_section(data, summary), *per_normalization, model_section(data, summary),
            replica_section(data, summary), *fold_section(data), pitfall_section(data),
            convergence_section(data, figures),
            time_to_accuracy_section(data, summary), throughput_section(data, summary), environment_section(data)]


def build_report(run_dir: Path, *, out_dir: Path | None = None) -> Report:
    """Write report.html, report.md, figures/*.png and summary.json for `run_dir` into `out_dir` (default: run_dir).

    Only the record files are read; no framework is imported or run.

    Raises:
        UserError: `run_dir` is not a run directory (see load_run).
    """
    data = load_run(Path(run_dir))
    out = Path(out_dir) if out_dir is not None else data.run_dir
    summary = build_summary(data)
    epochs = data.conclusions.epochs if data.conclusions is not None else None  # the planned length
    figures = training_figures(data.train_records, epochs=epochs) if data.train_records else []
    figures += seed_figures(data)  # the seed blog's curves (convergence section)
    parts = sections(data, summary, figures)
    summary["sections"] = [s.id for s in parts]
    summary["figures"] = [f"{FIGURE_DIR}/{f.name}.png" for f in figures]
    incomplete = ("; ".join(f"{p.part} {p.status}: {p.detail}" for p in data.incomplete)
                  if data.incomplete else None)
    when = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    commit = short_commit(data.environment.git_commit)
    subtitle = f"Run directory {data.run_dir} · commit {commit} · report built {when} from the records alone"
    out.mkdir(parents=True, exist_ok=True)
    figure_paths = []
    if figures:
        (out / FIGURE_DIR).mkdir(exist_ok=True)
        for f in figures:
            path = out / FIGURE_DIR / f"{f.name}.png"
            write_output(path, f.png)
            figure_paths.append(path)
    html_path, md_path, json_path = out / "report.html", out / "report.md", out / "summary.json"
    write_output(html_path, render_html(parts, title=TITLE, subtitle=subtitle, incomplete=incomplete))
    write_output(md_path, render_markdown(parts, title=TITLE, subtitle=subtitle, incomplete=incomplete,
                                          figure_dir=FIGURE_DIR))
    write_json(json_path, to_dict(summary))
    return Report(html_path, md_path, json_path, figure_paths, summary)
