"""A report as a list of blocks, rendered to markdown (images by relative path) or to one HTML file.

The HTML is self-contained: inline CSS, images embedded as base64 data URIs, no scripts, no external link
other than relative ones to files in the same folder (junit.xml, results.csv).
"""

from __future__ import annotations

import base64
import html
import re
from dataclasses import dataclass
from pathlib import Path

from hil.report.tables import Table


@dataclass
class Heading:
    level: int
    text: str


@dataclass
class Paragraph:
    text: str  # inline **bold**, `code` and [label](relative-file) are understood


@dataclass
class Banner:
    text: str


@dataclass
class Bullets:
    items: list[str]


@dataclass
class Pre:
    text: str


@dataclass
class Folded:
    """Preformatted text hidden behind a one-line summary (HTML <details>, which GitHub markdown renders)."""

    summary: str
    text: str


@dataclass
class TableBlock:
    table: Table


@dataclass
class Image:
    file: str  # a PNG in the report folder
    caption: str


@dataclass
class Gallery:
    """Several small figures side by side in HTML (one after the other in markdown)."""

    images: list[Image]


Block = Heading | Paragraph | Banner | Bullets | Pre | Folded | TableBlock | Image | Gallery


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def to_markdown(blocks: list[Block]) -> str:
    """GitHub-flavoured markdown; images referenced relatively."""
    out: list[str] = []
    for b in blocks:
        if isinstance(b, Heading):
            out.append(f"{'#' * b.level} {b.text}")
        elif isinstance(b, Paragraph):
            out.append(b.text)
        elif isinstance(b, Banner):
            out.append(f"> ⚠️ {b.text}")
        elif isinstance(b, Bullets):
            out.append("\n".join(f"- {item}" for item in b.items))
        elif isinstance(b, Pre):
            out.append(f"```\n{b.text}\n```")
        elif isinstance(b, Folded):
            out.append(f"<details><summary>{html.escape(b.summary)}</summary>\n\n```\n{b.text}\n```\n\n</details>")
        elif isinstance(b, TableBlock):
            out.append(_md_table(b.table))
        elif isinstance(b, Image):
            out.append(_md_image(b))
        elif isinstance(b, Gallery):
            out += [_md_image(i) for i in b.images]
    return "\n\n".join(out) + "\n"


def _md_image(image: Image) -> str:
    return f"![{image.caption}]({image.file})\n\n*{image.caption}*"


def _md_table(t: Table) -> str:
    lines = [f"**{t.title}**", "", "| " + " | ".join(map(_md_cell, t.headers)) + " |",
             "|" + "|".join("---" for _ in t.headers) + "|"]
    lines += ["| " + " | ".join(map(_md_cell, row)) + " |" for row in t.rows]
    lines += ["", *(f"- {n}" for n in t.notes)] if t.notes else []
    return "\n".join(lines)


_INLINE = [
    (re.compile(r"\*\*(.+?)\*\*"), r"<strong>\1</strong>"),
    (re.compile(r"`(.+?)`"), r"<code>\1</code>"),
    (re.compile(r"\[([^\]]+)\]\(([\w.\-]+)\)"), r'<a href="\2">\1</a>'),  # relative files only
]


def _inline(text: str) -> str:
    out = html.escape(text, quote=False)
    for pattern, repl in _INLINE:
        out = pattern.sub(repl, out)
    return out


def _html_table(t: Table) -> str:
    head = "".join(f"<th>{_inline(h)}</th>" for h in t.headers)
    body = "".join(
        "<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in row) + "</tr>" for row in t.rows
    )
    notes = ("<ul class='notes'>" + "".join(f"<li>{_inline(n)}</li>" for n in t.notes) + "</ul>"
             if t.notes else "")
    return (f"<div class='table'><table><caption>{_inline(t.title)}</caption><thead><tr>{head}</tr></thead>"
            f"<tbody>{body}</tbody></table></div>{notes}")


def _html_figure(image: Image, folder: Path) -> str:
    return (f"<figure><img src='{_data_uri(folder / image.file)}' alt='{html.escape(image.caption)}'>"
            f"<figcaption>{_inline(image.caption)}</figcaption></figure>")


def _data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


CSS = """
body{font:15px/1.5 -apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif;color:#1d1d1f;
 max-width:1280px;margin:2em auto;padding:0 1.5em}
h1{font-size:1.7em;margin-bottom:.2em}h2{margin-top:2em;border-bottom:1px solid #ddd;padding-bottom:.2em}
h3{margin-top:1.5em}code,pre{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:.9em}
pre{background:#f6f8fa;padding:.8em;overflow-x:auto;border-radius:4px}
.banner{background:#b00020;color:#fff;font-weight:700;padding:.7em 1em;border-radius:4px;font-size:1.1em}
.table{overflow-x:auto}table{border-collapse:collapse;margin:.5em 0;font-size:.88em}
caption{text-align:left;font-weight:600;padding:.3em 0}
th,td{border:1px solid #d0d7de;padding:.3em .6em;text-align:right;vertical-align:top}
th{background:#f0f3f6}td:first-child,th:first-child{text-align:left;white-space:nowrap}
td:last-child{text-align:left}tbody tr:nth-child(even){background:#fafbfc}
figure{margin:1em 0}figure img{max-width:100%;border:1px solid #eee}
figcaption{font-size:.88em;color:#555}.notes{font-size:.85em;color:#555}
summary{cursor:pointer;font-weight:600;margin:.5em 0}
.gallery{display:flex;flex-wrap:wrap;gap:1em}.gallery figure{flex:1 1 360px;max-width:420px;margin:0}
"""


def to_html(blocks: list[Block], folder: Path, title: str) -> str:
    """One self-contained HTML page; images read from `folder` and embedded."""
    parts: list[str] = []
    for b in blocks:
        if isinstance(b, Heading):
            parts.append(f"<h{b.level}>{_inline(b.text)}</h{b.level}>")
        elif isinstance(b, Paragraph):
            parts.append(f"<p>{_inline(b.text)}</p>")
        elif isinstance(b, Banner):
            parts.append(f"<div class='banner'>{_inline(b.text)}</div>")
        elif isinstance(b, Bullets):
            parts.append("<ul>" + "".join(f"<li>{_inline(i)}</li>" for i in b.items) + "</ul>")
        elif isinstance(b, Pre):
            parts.append(f"<pre>{html.escape(b.text, quote=False)}</pre>")
        elif isinstance(b, Folded):
            parts.append(f"<details><summary>{_inline(b.summary)}</summary>"
                         f"<pre>{html.escape(b.text, quote=False)}</pre></details>")
        elif isinstance(b, TableBlock):
            parts.append(_html_table(b.table))
        elif isinstance(b, Image):
            parts.append(_html_figure(b, folder))
        elif isinstance(b, Gallery):
            parts.append("<div class='gallery'>" + "".join(_html_figure(i, folder) for i in b.images) + "</div>")
    return (f"<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
            f"<meta name='viewport' content='width=device-width, initial-scale=1'>"
            f"<title>{html.escape(title)}</title><style>{CSS}</style></head>\n<body>\n"
            + "\n".join(parts) + "\n</body></html>\n")
