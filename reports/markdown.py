"""report.md: the report's sections as Markdown tables, figures linked as PNG files beside it."""

from __future__ import annotations

from .document import Bullets, Cell, Section, Table
from .figures import Figure

# Markdown has no colour: a status that needs attention gets a marker.
MARKERS = {"fail": " ✗", "differs": " ≠", "error": " ⚠"}
LEGEND = "Markers: ✗ a gated comparison fails; ≠ outside the tolerance or different from PyTorch (not gated); ⚠ error."


def _escape(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render_table(t: Table) -> list[str]:
    """A pipe table; the hover text of skipped and error cells becomes numbered notes under it."""
    notes: list[str] = []

    def cell(c: Cell) -> str:
        text = _escape(c.text) if c.href is None else f"[{_escape(c.text)}]({c.href})"  # a link: [text](#id)
        text += MARKERS.get(c.status or "", "")
        if c.status in ("skipped", "error") and c.title:
            if c.title not in notes:
                notes.append(c.title)
            text += f" [{notes.index(c.title) + 1}]"
        return text

    lines = ["| " + " | ".join(_escape(h) or " " for h in t.header) + " |",
             "|" + "|".join("---" for _ in t.header) + "|"]
    lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in t.rows]
    if t.caption:
        lines += ["", f"*{_escape(t.caption)}*"]
    if notes:
        lines += [""] + [f"{i}. {_escape(n)}" for i, n in enumerate(notes, start=1)]
    return lines


def render_figure(f: Figure, figure_dir: str) -> list[str]:
    return [f"![{_escape(f.caption)}]({figure_dir}/{f.name}.png)", "", f"*{_escape(f.caption)}*"]


def render_markdown(sections: list[Section], *, title: str, subtitle: str, incomplete: str | None,
                    figure_dir: str = "figures") -> str:
    """The whole document; figures are linked as `figure_dir`/<name>.png relative to the Markdown file."""
    lines = [f"# {title}", "", subtitle, ""]
    if incomplete:
        lines += [f"> **INCOMPLETE REPORT** — {incomplete}", ""]
    lines += [LEGEND, ""]
    lines += [f"{i}. [{s.title}](#{s.id})" for i, s in enumerate(sections, start=1)] + [""]
    for s in sections:
        lines += [f'<a id="{s.id}"></a>', "", f"## {s.title}", ""]
        if s.missing is not None:
            lines += [f"*Not available in this run: {_escape(s.missing)}*", ""]
        for block in s.blocks:
            if isinstance(block, Table):
                lines += render_table(block)
            elif isinstance(block, Figure):
                lines += render_figure(block, figure_dir)
            elif isinstance(block, Bullets):
                for lead, rest in (Bullets.split(item) for item in block.items):
                    lines.append(f"- **{lead}** {rest}" if lead else f"- {rest}")
            else:
                lines.append(block)
            lines.append("")
    return "\n".join(lines).rstrip() + "\n"
