"""report.html: one self-contained page (inline CSS, figures as data: URIs, no script, nothing fetched)."""

from __future__ import annotations

import base64
from html import escape as _escape

from .document import Bullets, Cell, Section, Table
from .figures import Figure

CSS = """
:root { --ink: #1d1d1f; --muted: #5f6368; --rule: #d0d4d9; }
* { box-sizing: border-box; }
body { font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif;
       color: var(--ink); max-width: 1180px; margin: 0 auto; padding: 1.5rem 1.25rem 4rem; }
h1 { font-size: 1.7rem; margin: 0 0 .3rem; }
h2 { font-size: 1.3rem; margin: 2.2rem 0 .6rem; padding-bottom: .25rem; border-bottom: 2px solid var(--rule); }
p { margin: .45rem 0; max-width: 75em; }
.meta { color: var(--muted); font-size: .9rem; }
nav ol { columns: 3; margin: .6rem 0 0; padding-left: 1.3rem; font-size: .92rem; }
nav a, a { color: #0b57d0; text-decoration: none; }
.banner { background: #fdecea; border: 1px solid #e0a39b; border-left: 6px solid #c5221f; padding: .6rem .9rem;
          margin: 1rem 0; font-weight: 600; }
.missing { color: #8a1c14; font-style: italic; }
.scroll { overflow-x: auto; margin: .6rem 0 1rem; }
table { border-collapse: collapse; font-size: .82rem; font-variant-numeric: tabular-nums; }
caption { caption-side: bottom; text-align: left; color: var(--muted); font-size: .8rem; padding-top: .3rem; }
th, td { border: 1px solid var(--rule); padding: .22rem .45rem; text-align: left; vertical-align: top; }
th { background: #f1f3f4; position: sticky; top: 0; }
table.data td:not(:first-child) { white-space: nowrap; }
table.kv td:first-child { font-weight: 600; min-width: 9em; max-width: 22em; }
table.verdict { font-size: .9rem; }
table.verdict td { white-space: normal; min-width: 5.5em; }
table.verdict td:first-child { font-weight: 600; white-space: nowrap; }
table.verdict td a { color: inherit; text-decoration: underline dotted; }
ul.verdicts { padding-left: 1.2rem; }
ul.verdicts li { margin: .4rem 0; max-width: 75em; }
td.pass { background: #e6f4e3; }
td.fail { background: #f6c9c4; font-weight: 700; }
td.differs { background: #fde7c2; }
td.skipped { background: #ececec; color: #5f6368; }
td.error { background: #ead7f5; }
td[title] { cursor: help; }
figure { margin: 1rem 0; }
figure img { max-width: 100%; height: auto; border: 1px solid var(--rule); }
figcaption { color: var(--muted); font-size: .85rem; }
@media print {
  body { max-width: none; padding: 0; font-size: 10.5pt; }
  nav, .noprint { display: none; }
  h2 { break-after: avoid; page-break-after: avoid; }
  table, figure { break-inside: avoid; page-break-inside: avoid; }
  table { font-size: 7.5pt; }
  .scroll { overflow: visible; }
  th { position: static; }
  td, th, .banner { -webkit-print-color-adjust: exact; print-color-adjust: exact; }
  a { color: inherit; }
}
"""


def escape(text: str) -> str:
    """Text for an element's content (quotes need no escaping there)."""
    return _escape(text, quote=False)


def attr(text: str) -> str:
    """Text for an attribute value in double quotes."""
    return _escape(text, quote=True)


def _cell(c: Cell, tag: str = "td") -> str:
    cls = f' class="{attr(c.status)}"' if c.status else ""
    title = f' title="{attr(c.title)}"' if c.title else ""
    text = escape(c.text) if c.href is None else f'<a href="{attr(c.href)}">{escape(c.text)}</a>'
    return f"<{tag}{cls}{title}>{text}</{tag}>"


def render_table(t: Table) -> str:
    head = "<tr>" + "".join(f"<th>{escape(h)}</th>" for h in t.header) + "</tr>"
    body = "\n".join("<tr>" + "".join(_cell(c) for c in row) + "</tr>" for row in t.rows)
    caption = f"<caption>{escape(t.caption)}</caption>" if t.caption else ""
    return (f'<div class="scroll"><table class="{t.row_class}">{caption}<thead>{head}</thead>'
            f"<tbody>\n{body}\n</tbody></table></div>")


def render_figure(f: Figure) -> str:
    data = base64.b64encode(f.png).decode("ascii")
    return (f'<figure id="figure-{attr(f.name)}"><img src="data:image/png;base64,{data}" '
            f'alt="{attr(f.caption)}"><figcaption>{escape(f.caption)}</figcaption></figure>')


def render_section(s: Section) -> str:
    parts = [f'<section id="{attr(s.id)}">', f"<h2>{escape(s.title)}</h2>"]
    if s.missing is not None:
        parts.append(f'<p class="missing">Not available in this run: {escape(s.missing)}</p>')
    for block in s.blocks:
        if isinstance(block, Table):
            parts.append(render_table(block))
        elif isinstance(block, Figure):
            parts.append(render_figure(block))
        elif isinstance(block, Bullets):
            items = (Bullets.split(item) for item in block.items)
            parts.append('<ul class="verdicts">' + "".join(
                f"<li>{f'<strong>{escape(lead)}</strong> ' if lead else ''}{escape(rest)}</li>"
                for lead, rest in items) + "</ul>")
        else:
            parts.append(f"<p>{escape(block)}</p>")
    parts.append("</section>")
    return "\n".join(parts)


def render_html(sections: list[Section], *, title: str, subtitle: str, incomplete: str | None) -> str:
    """The whole page. `incomplete` (what is missing) puts a banner at the top when set."""
    toc = "".join(f'<li><a href="#{attr(s.id)}">{escape(s.title)}</a></li>' for s in sections)
    banner = (f'<div class="banner" id="incomplete">INCOMPLETE REPORT — {escape(incomplete)}</div>'
              if incomplete else "")
    body = "\n".join(render_section(s) for s in sections)
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{escape(title)}</title>
<style>{CSS}</style>
</head>
<body>
<header>
<h1>{escape(title)}</h1>
<p class="meta">{escape(subtitle)}</p>
{banner}
<nav aria-label="sections"><ol>{toc}</ol></nav>
</header>
<main>
{body}
</main>
</body>
</html>
"""
