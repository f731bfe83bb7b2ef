"""The report as data: sections of paragraphs, tables and figures that the HTML and Markdown writers both render."""

from __future__ import annotations

from dataclasses import dataclass, field

from .figures import Figure

# Cell statuses (CSS classes) and what they mean, for the legend.
STATUS_MEANING = {
    "pass": "inside the tolerance",
    "fail": "a gated comparison outside the tolerance",
    "differs": "a finding outside the tolerance (not gated)",
    "skipped": "not run (hover or see the notes for why)",
    "error": "the framework raised an error",
}


@dataclass(frozen=True)
class Cell:
    """One table cell: its text, an optional status (colour), an optional title (hover text, a note in Markdown) and
    an optional link (`href`, e.g. "#layer-parity": a section of the same report)."""

    text: str
    status: str | None = None
    title: str | None = None
    href: str | None = None


@dataclass(frozen=True)
class Table:
    """A table with a header row; `caption` says what a cell shows."""

    header: list[str]
    rows: list[list[Cell]]
    caption: str = ""
    row_class: str = "data"


@dataclass(frozen=True)
class Bullets:
    """A list of statements; the words before a statement's first colon are its lead (shown bold)."""

    items: list[str]

    @staticmethod
    def split(item: str) -> tuple[str, str]:
        """(lead, rest) of an item: the lead is the text up to its first ': ' when that is short, else ''."""
        lead, sep, rest = item.partition(": ")
        return (lead + ":", rest) if sep and len(lead) <= 80 else ("", item)


@dataclass(frozen=True)
class Section:
    """One section of the report, with a stable id (the HTML anchor, the Markdown heading)."""

    id: str
    title: str
    blocks: list[str | Table | Figure | Bullets] = field(default_factory=list)
    missing: str | None = None  # set when the records behind this section are absent: says which


def text_cell(value: object, *, status: str | None = None, title: str | None = None) -> Cell:
    """A cell from any value: None shows as an en dash."""
    return Cell("–" if value is None else str(value), status=status, title=title)


def fmt(value: float | None, spec: str = ".2g") -> str:
    """A number for a cell; None (inf or nan in the records) shows as 'inf/nan'."""
    return "inf/nan" if value is None else format(value, spec)


def key_value_table(items: list[tuple[str, object]], caption: str = "") -> Table:
    """A two-column table of names and values."""
    return Table(["", "value"], [[Cell(k), text_cell(v)] for k, v in items], caption=caption, row_class="kv")
