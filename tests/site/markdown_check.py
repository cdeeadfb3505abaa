"""Render Markdown as the site's readers might (CommonMark with raw HTML allowed, Python-Markdown plain and with
`extra`) and list whatever in the HTML could run: a tag no Markdown renderer makes, an event handler, an
attribute Markdown never writes, or a javascript:/vbscript:/data: link or source."""

from __future__ import annotations

from html.parser import HTMLParser

# Every tag and attribute the three renderers make from Markdown that holds no raw HTML.
MARKDOWN_TAGS = {"p", "h1", "h2", "h3", "h4", "h5", "h6", "a", "img", "code", "pre", "em", "strong", "ul", "ol",
                 "li", "blockquote", "hr", "table", "thead", "tbody", "tr", "th", "td", "br", "del", "s", "dl", "dt",
                 "dd", "abbr", "div", "sup"}
MARKDOWN_ATTRIBUTES = {"href", "src", "alt", "title", "style", "start", "class", "align"}
SCRIPT_SCHEMES = ("javascript:", "vbscript:", "data:")
_C0_AND_SPACE = "".join(chr(i) for i in range(0x21))


class _Inert(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.problems: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag not in MARKDOWN_TAGS:
            self.problems.append(f"<{tag}>")
        for name, value in attrs:
            if name.startswith("on") or name not in MARKDOWN_ATTRIBUTES:
                self.problems.append(f"<{tag} {name}=...>")
            if name in ("href", "src") and value is not None:
                url = value.strip(_C0_AND_SPACE).replace("\t", "").replace("\n", "").replace("\r", "").lower()
                if url.startswith(SCRIPT_SCHEMES):
                    self.problems.append(f"<{tag} {name}={value!r}>")

    handle_startendtag = handle_starttag

    def handle_comment(self, data: str) -> None:
        self.problems.append(f"<!--{data[:20]}-->")  # raw HTML reached the page

    def handle_decl(self, decl: str) -> None:
        self.problems.append(f"<!{decl[:20]}>")

    def handle_pi(self, data: str) -> None:
        self.problems.append(f"<?{data[:20]}>")


def renderings(text: str) -> dict[str, str]:
    """The text as HTML by CommonMark (raw HTML allowed) and by Python-Markdown, plain and with `extra`."""
    import markdown
    from markdown_it import MarkdownIt

    return {
        "commonmark": MarkdownIt("commonmark", {"html": True}).render(text),
        "gfm-like": MarkdownIt("gfm-like", {"html": True, "linkify": False}).render(text),
        "python-markdown": markdown.markdown(text),
        "python-markdown extra": markdown.markdown(text, extensions=["extra"]),
    }


def live_parts(text: str) -> list[str]:
    """Everything that could run in any rendering of `text` (empty when it is inert everywhere)."""
    found = []
    for renderer, html in renderings(text).items():
        parser = _Inert()
        parser.feed(html)
        parser.close()
        found += [f"{renderer}: {p}" for p in parser.problems]
    return found
