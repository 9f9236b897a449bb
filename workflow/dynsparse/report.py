"""HTML pages for Snakemake's report, which shows HTML inline but not Markdown, CSV or GIF.

`markdown_page` renders the small Markdown subset our own tables use (headings, paragraphs,
pipe tables, `code`), so no Markdown package is needed. `connectivity_page` holds a sample's
animation (made small enough by `dynsparse.gif.report_animation`, written by
`dynsparse.gif.write_connectivity_page`) beside its initial-versus-final
figure; the frames index is written by `dynsparse.render`.
"""

from __future__ import annotations

import base64
import html
import math
import re

STYLE = (
    "body{font-family:sans-serif;margin:1em}"
    "table{border-collapse:collapse;font-size:0.9em;margin:0.5em 0 1.5em}"
    "th,td{border:1px solid #ccc;padding:3px 8px;text-align:right}"
    "th{background:#f2f2f2}td:nth-child(-n+3),th:nth-child(-n+3){text-align:left}"
)


def _inline(text: str) -> str:
    escaped = html.escape(text.strip()).replace("\\|", "|")
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", escaped)


def _cells(line: str) -> list[str]:
    return [cell for cell in re.split(r"(?<!\\)\|", line.strip().strip("|"))]


def markdown_html(markdown: str) -> str:
    out: list[str] = []
    lines = markdown.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if not line.strip():
            i += 1
        elif heading := re.match(r"^(#{1,6})\s+(.*)$", line):
            level = len(heading.group(1))
            out.append(f"<h{level}>{_inline(heading.group(2))}</h{level}>")
            i += 1
        elif line.lstrip().startswith("|"):
            block = []
            while i < len(lines) and lines[i].lstrip().startswith("|"):
                block.append(lines[i])
                i += 1
            header, body = block[0], [row for row in block[1:] if not re.match(r"^\|[-:| ]+$", row)]
            out.append("<table><thead><tr>")
            out.extend(f"<th>{_inline(cell)}</th>" for cell in _cells(header))
            out.append("</tr></thead><tbody>")
            for row in body:
                out.append(
                    "<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in _cells(row)) + "</tr>"
                )
            out.append("</tbody></table>")
        else:
            paragraph = []
            while i < len(lines) and lines[i].strip() and not re.match(r"^(#|\s*\|)", lines[i]):
                paragraph.append(lines[i])
                i += 1
            out.append(f"<p>{_inline(' '.join(paragraph))}</p>")
    return "\n".join(out)


def markdown_page(title: str, markdown: str) -> str:
    return (
        "<!DOCTYPE html>\n<html><head><meta charset='utf-8'>"
        f"<title>{html.escape(title)}</title><style>{STYLE}</style></head>\n<body>\n"
        f"{markdown_html(markdown)}\n</body></html>\n"
    )


# The report opens every result page from a base64 `data:` URL, and Chromium refuses URLs over
# 2 MB (blank page, no error). A page of at most 1 MB is a 1.33 MB URL: well clear of that.
PAGE_BUDGET_BYTES = 1_000_000
DATA_URL_LIMIT_BYTES = 2 * 1024 * 1024


def data_url_size(page_bytes: int) -> int:
    """Length of the `data:text/html;...;base64,` URL the report builds for a page this size."""
    return 4 * math.ceil(page_bytes / 3) + 80


def _data_uri(mime: str, payload: bytes) -> str:
    return f"data:{mime};base64,{base64.b64encode(payload).decode('ascii')}"


def connectivity_page(
    title: str, animation: bytes, comparison_png: bytes, animation_note: str, comparison_note: str
) -> str:
    """The animation (WebP) and the initial-versus-final figure side by side, in one page."""
    return (
        "<!DOCTYPE html>\n<html><head><meta charset='utf-8'>"
        f"<title>{html.escape(title)}</title><style>{STYLE}"
        ".row{display:flex;flex-wrap:wrap;gap:1em;align-items:flex-start}"
        "figure{margin:0}img{max-width:100%}figcaption{font-size:0.85em;color:#444}</style>"
        "</head>\n<body>\n"
        f"<h2>{html.escape(title)}</h2>\n<div class='row'>\n"
        f"<figure id='animation'><img alt='connectivity over training' "
        f"src='{_data_uri('image/webp', animation)}'>"
        f"<figcaption>{html.escape(animation_note)}</figcaption></figure>\n"
        f"<figure id='comparison'><img alt='initial versus final connectivity' "
        f"src='{_data_uri('image/png', comparison_png)}'>"
        f"<figcaption>{html.escape(comparison_note)}</figcaption></figure>\n"
        "</div>\n</body></html>\n"
    )


def animation_budget(title: str, comparison_png: bytes, notes_bytes: int = 2000) -> int:
    """Bytes the WebP may take so that the whole page stays within PAGE_BUDGET_BYTES."""
    frame = len(connectivity_page(title, b"", comparison_png, "", "").encode()) + notes_bytes
    return max(0, (PAGE_BUDGET_BYTES - frame) * 3 // 4)
