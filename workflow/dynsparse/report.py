"""HTML pages for Snakemake's report, which shows HTML inline but not Markdown, CSV or GIF.

`markdown_page` renders the small Markdown subset our own tables use (headings, paragraphs,
pipe tables, `code`), so no Markdown package is needed. The GIF wrapper is `dynsparse.gif`'s
`write_gif_html`; the frames index is written by `dynsparse.render`.
"""

from __future__ import annotations

import html
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
