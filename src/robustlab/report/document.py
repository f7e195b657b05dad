"""One report document in two forms: a self-contained HTML page and the same text as Markdown.

A document is a title, an introduction and sections; a section is a list of blocks (text,
bullet list, table, figure). Figures are files beside the document, referenced by relative
path: the PNG is shown, the SVG linked. Everything a block holds is escaped for HTML, so a
note with ``<`` or ``&`` in it shows as written.
"""

from __future__ import annotations

import html
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from robustlab.files import atomic_write_text
from robustlab.report.tables import markdown_table, with_spread


@dataclass
class Text:
    text: str


@dataclass
class Bullets:
    items: list[str]


@dataclass
class Table:
    rows: list[dict[str, Any]]
    columns: list[str] | None = None
    caption: str = ""


@dataclass
class Figure:
    path: Path  # the PNG; an SVG of the same stem beside it is linked when it exists
    caption: str = ""


Block = Text | Bullets | Table | Figure


@dataclass
class Section:
    id: str
    title: str
    blocks: list[Block] = field(default_factory=list)


STYLE = """
body { font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; padding: 0 1em; color: #222; }
h1 { font-size: 1.7em; } h2 { border-bottom: 1px solid #ccc; padding-bottom: .2em; margin-top: 2em; }
table { border-collapse: collapse; margin: .8em 0; font-size: .85em; }
th, td { border: 1px solid #ccc; padding: .25em .5em; text-align: right; }
th { background: #f3f3f3; } td:first-child, th:first-child { text-align: left; }
figure { margin: 1em 0; } figure img { max-width: 100%; border: 1px solid #eee; }
figcaption, .caption { font-size: .85em; color: #555; }
nav li { margin: .1em 0; } .small { font-size: .85em; color: #555; }
"""


def write_document(title: str, intro: list[Block], sections: list[Section], out_dir: str | Path) -> dict[str, Path]:
    """Write ``report.html`` and ``report.md`` into ``out_dir``; returns their paths."""
    out_dir = Path(out_dir)
    paths = {"html": out_dir / "report.html", "markdown": out_dir / "report.md"}
    atomic_write_text(paths["html"], to_html(title, intro, sections, out_dir))
    atomic_write_text(paths["markdown"], to_markdown(title, intro, sections, out_dir))
    return paths


# ---------------------------------------------------------------------------------------
# Markdown


def to_markdown(title: str, intro: list[Block], sections: list[Section], out_dir: Path) -> str:
    parts = [f"# {title}", *(_markdown_block(b, out_dir) for b in intro), "## Contents"]
    parts.append("\n".join(f"- [{s.title}](#{s.id})" for s in sections))
    for section in sections:
        parts.append(f'<a id="{section.id}"></a>\n\n## {section.title}')
        parts += [_markdown_block(b, out_dir) for b in section.blocks]
    return "\n\n".join(parts) + "\n"


def _markdown_block(block: Block, out_dir: Path) -> str:
    if isinstance(block, Text):
        return block.text
    if isinstance(block, Bullets):
        return "\n".join(f"- {item}" for item in block.items)
    if isinstance(block, Table):
        caption = f"*{block.caption}*\n\n" if block.caption else ""
        return caption + markdown_table(block.rows, block.columns)
    path = _relative(block.path, out_dir)
    svg = block.path.with_suffix(".svg")
    link = f" ([SVG]({_relative(svg, out_dir)}))" if svg.exists() else ""
    return f"![{block.caption}]({path})\n\n*{block.caption}*{link}"


# ---------------------------------------------------------------------------------------
# HTML


def to_html(title: str, intro: list[Block], sections: list[Section], out_dir: Path) -> str:
    body = [f"<h1>{_e(title)}</h1>", *(_html_block(b, out_dir) for b in intro)]
    body.append("<nav><h2>Contents</h2><ul>")
    body += [f'<li><a href="#{_e(s.id)}">{_e(s.title)}</a></li>' for s in sections]
    body.append("</ul></nav>")
    for section in sections:
        body.append(f'<section id="{_e(section.id)}"><h2>{_e(section.title)}</h2>')
        body += [_html_block(b, out_dir) for b in section.blocks]
        body.append("</section>")
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{_e(title)}</title><style>{STYLE}</style></head>\n<body>\n" + "\n".join(body) + "\n</body></html>\n"
    )


def _html_block(block: Block, out_dir: Path) -> str:
    if isinstance(block, Text):
        return f"<p>{_e(block.text)}</p>"
    if isinstance(block, Bullets):
        return "<ul>" + "".join(f"<li>{_e(item)}</li>" for item in block.items) + "</ul>"
    if isinstance(block, Table):
        return _html_table(block)
    path = _relative(block.path, out_dir)
    svg = block.path.with_suffix(".svg")
    link = f' (<a href="{_e(_relative(svg, out_dir))}">SVG</a>)' if svg.exists() else ""
    return (
        f'<figure><img src="{_e(path)}" alt="{_e(block.caption)}" loading="lazy">'
        f"<figcaption>{_e(block.caption)}{link}</figcaption></figure>"
    )


def _html_table(block: Table) -> str:
    if not block.rows:
        return '<p class="caption">(no rows yet)</p>'
    columns, rows = with_spread(block.rows, block.columns or list(block.rows[0]))
    head = "".join(f"<th>{_e(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{_e(_cell(row.get(c)))}</td>" for c in columns) + "</tr>" for row in rows)
    caption = f'<div class="caption">{_e(block.caption)}</div>' if block.caption else ""
    return f"{caption}<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.2f}"
    return "" if value is None else str(value)


def _e(text: Any) -> str:
    return html.escape(str(text), quote=True)


def _relative(path: Path, out_dir: Path) -> str:
    return Path(os.path.relpath(Path(path).resolve(), out_dir.resolve())).as_posix()
