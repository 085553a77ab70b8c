"""One self-contained HTML page: inline CSS, figures as base64 PNG, no scripts, no external resources."""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass, field

import pandas as pd

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1200px; color: #222; }
h1 { border-bottom: 2px solid #ccc; } h2 { margin-top: 2em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; margin: 0.8em 0; font-size: 0.9em; display: block; overflow-x: auto; }
td { white-space: nowrap; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }
th { background: #f3f3f3; } td:first-child, th:first-child { text-align: left; }
figure { margin: 1em 0; } figcaption { color: #555; font-size: 0.9em; }
img { max-width: 100%; height: auto; }
pre { background: #f6f6f6; padding: 0.6em; overflow-x: auto; font-size: 0.85em; }
.absent { color: #a33; } li { margin: 0.3em 0; }
"""


@dataclass
class Block:
    """One piece of a section: ``text``, ``list`` (of ``(bold lead, text)`` items), ``absent`` (a missing part),
    ``pre`` (folded), ``table`` (DataFrame) or ``image`` (PNG bytes)."""

    kind: str
    content: object
    caption: str = ""


@dataclass
class Section:
    title: str
    blocks: list[Block] = field(default_factory=list)


def image_tag(png: bytes, alt: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return f'<img src="data:image/png;base64,{data}" alt="{html.escape(alt)}">'


def _block(block: Block) -> str:
    caption = html.escape(block.caption)
    if block.kind == "text":
        return f"<p>{html.escape(str(block.content))}</p>"
    if block.kind == "list":
        return (
            "<ul>"
            + "".join(f"<li><b>{html.escape(who)}</b> {html.escape(what)}</li>" for who, what in block.content)
            + "</ul>"
        )
    if block.kind == "absent":
        return f'<p class="absent">{html.escape(str(block.content))}</p>'
    if block.kind == "pre":
        return f"<details><summary>{caption}</summary><pre>{html.escape(str(block.content))}</pre></details>"
    if block.kind == "table":
        frame: pd.DataFrame = block.content
        title = f"<p><b>{caption}</b></p>" if caption else ""
        return title + frame.to_html(escape=True, border=0, na_rep="–")
    if block.kind == "image":
        return f"<figure>{image_tag(block.content, block.caption)}<figcaption>{caption}</figcaption></figure>"
    raise ValueError(f"unknown block kind {block.kind!r}")


def render_page(title: str, sections: list[Section]) -> str:
    body = []
    for section in sections:
        body.append(f"<section><h2>{html.escape(section.title)}</h2>")
        body.extend(_block(b) for b in section.blocks)
        body.append("</section>")
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><link rel="icon" href="data:,">'
        f"<title>{html.escape(title)}</title><style>{STYLE}</style></head>"
        f"<body><h1>{html.escape(title)}</h1>\n" + "\n".join(body) + "\n</body></html>\n"
    )
