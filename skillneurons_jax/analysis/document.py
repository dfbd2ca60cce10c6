"""The report's document: a list of blocks (headings, paragraphs, tables, images, code, lists) rendered to markdown
and to HTML with the same content and relative links."""
from __future__ import annotations

import html

from skillneurons_jax.analysis import robustness


class Document:
    """Blocks in order; `markdown()` and `html(title)` render them."""

    def __init__(self):
        self.blocks: list[tuple] = []

    def h(self, level: int, text: str, anchor: str | None = None):
        """A heading; `anchor` makes it a link target (#anchor) in both renderings."""
        self.blocks.append(("h", level, text, anchor))

    def links(self, items):
        """A list of (text, href) links (relative hrefs or #anchors)."""
        self.blocks.append(("links", [(str(t), str(h)) for t, h in items]))

    def p(self, text: str):
        self.blocks.append(("p", text))

    def table(self, header, rows):
        self.blocks.append(("table", tuple(header), [tuple(r) for r in rows]))

    def img(self, rel: str, caption: str):
        self.blocks.append(("img", rel, caption))

    def pre(self, text: str):
        self.blocks.append(("pre", text))

    def ul(self, items):
        self.blocks.append(("ul", list(items)))

    def markdown(self) -> str:
        out = []
        for b in self.blocks:
            kind = b[0]
            if kind == "h":
                out.append((f'<a id="{b[3]}"></a>\n\n' if b[3] else "") + "#" * b[1] + " " + b[2] + "\n")
            elif kind == "links":
                out.append("".join(f"- [{t}]({h})\n" for t, h in b[1]))
            elif kind == "p":
                out.append(b[1] + "\n")
            elif kind == "table":
                out.append(robustness.markdown_table(b[1], b[2]))
            elif kind == "img":
                out.append(f"![{b[2]}]({b[1]})\n\n*{b[2]}*\n")
            elif kind == "pre":
                out.append("```\n" + b[1].rstrip("\n") + "\n```\n")
            elif kind == "ul":
                out.append("".join(f"- {item}\n" for item in b[1]) if b[1] else "- (none)\n")
        return "\n".join(out)

    def html(self, title: str) -> str:
        out = [f"<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>\n"
               "<style>body{font-family:sans-serif;max-width:1200px;margin:2em auto;padding:0 1em}"
               "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 8px;"
               "text-align:left}th{background:#f3f3f3}img{max-width:100%}figure{margin:1em 0}"
               "pre{background:#f7f7f7;padding:1em;overflow:auto}</style></head><body>\n"]
        for b in self.blocks:
            kind = b[0]
            if kind == "h":
                anchor = f' id="{html.escape(b[3])}"' if b[3] else ""
                out.append(f"<h{b[1]}{anchor}>{html.escape(b[2])}</h{b[1]}>\n")
            elif kind == "links":
                out.append("<ul>" + "".join(f"<li><a href=\"{html.escape(h)}\">{html.escape(t)}</a></li>"
                                            for t, h in b[1]) + "</ul>\n")
            elif kind == "p":
                out.append(f"<p>{html.escape(b[1])}</p>\n")
            elif kind == "table":
                out.append(robustness.html_table(b[1], b[2]))
            elif kind == "img":
                out.append(f"<figure><img src=\"{html.escape(b[1])}\" alt=\"{html.escape(b[2])}\">"
                           f"<figcaption>{html.escape(b[2])}</figcaption></figure>\n")
            elif kind == "pre":
                out.append(f"<pre>{html.escape(b[1])}</pre>\n")
            elif kind == "ul":
                items = b[1] or ["(none)"]
                out.append("<ul>" + "".join(f"<li>{html.escape(str(i))}</li>" for i in items) + "</ul>\n")
        out.append("</body></html>\n")
        return "".join(out)
