r"""Markdown for the site's `.md` pages that is safe by construction, whichever renderer reads it.

Commentary is parsed with markdown-it-py (the CommonMark reference parser in Python, raw HTML off) and
written out again from the parser's tree, emitting only the constructs allowed here: paragraphs,
headings (level 2 and below), emphasis, strong, strike-through, code spans, code blocks, lists, block
quotes, tables, rules and links to `http`, `https`, `mailto` or relative addresses. Everything else
(raw HTML, images, reference definitions, links to other schemes) never reaches the output as markup:
its text is escaped. Every piece of text goes through `escape`, which escapes every character that any of
the common renderers (CommonMark, GitHub's, Python-Markdown with or without `extra`) treats as inline
markup, wherever it is (`& < > ~ $` as entities, `` \ ` * _ [ ] { } | `` with a backslash), and the
characters that are markup only at the start of a line (`# + - = :`, and the `.` or `)` of `1.`) where
the text starts, since an escaped text is only ever placed at a line's start as a whole. The output
holds no `<` outside code, so no renderer, HTML allowed or not, finds a tag in it.

Code is emitted as an indented block (every renderer knows those; fences are not in Python-Markdown's
core, which would then read a fenced `<script>` as HTML) and as code spans whose backtick fence is longer
than any run inside. A code block never follows a list directly (it would be read as the list's
continuation): a zero-width-space paragraph ends the list first.
"""

from __future__ import annotations

import html
import re
from typing import Any
from urllib.parse import quote, unquote

SAFE_SCHEMES = {"http", "https", "mailto"}
_BACKSLASHED = set("\\`*_[]{}|")  # inline markup; each is one of Python-Markdown's escapable characters too
_ENTITIES = {"&": "&amp;", "<": "&lt;", ">": "&gt;", "~": "&#126;", "$": "&#36;"}
_LINE_START = {"#": "\\#", "+": "\\+", "-": "\\-", "=": "&#61;", ":": "&#58;"}
_ORDERED = re.compile(r"([0-9]{1,9})([.)])(?= |$)")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")  # Python-Markdown uses \x02 and \x03 as its own markers
_SCHEME = re.compile(r"([a-z][a-z0-9+.\-]*):")
_URL_SAFE = "/?#=:@!$+,;%&-._~*'"
_END_LIST = "&#8203;"  # a paragraph of one zero-width space: ends a list, shows nothing
_C0_AND_SPACE = "".join(chr(i) for i in range(0x21))


def escape(text: str) -> str:
    """Text as Markdown that every renderer shows as exactly this text (whitespace runs become one space)."""
    text = " ".join(_CONTROL.sub(" ", str(text)).split())
    out = "".join(_ENTITIES.get(c) or ("\\" + c if c in _BACKSLASHED else c) for c in text)
    if out[:1] in _LINE_START:
        return _LINE_START[out[0]] + out[1:]
    return _ORDERED.sub(lambda m: f"{m.group(1)}\\{m.group(2)}", out, count=1) if out[:1].isdigit() else out


def code_span(text: str, table: bool = False) -> str:
    """Text as one code span (its fence longer than any backtick run inside); `|` escaped inside tables."""
    text = " ".join(_CONTROL.sub(" ", str(text)).split())
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * (longest + 1)
    pad = " " if text.startswith("`") or text.endswith("`") or not text else ""
    span = f"{fence}{pad}{text}{pad}{fence}"
    return span.replace("|", "\\|") if table else span


def link_allowed(href: str) -> bool:
    """Whether `href` is http(s), mailto or relative however it is decoded (entities, percent-escapes, the
    spaces and controls a browser drops), so no decoding can turn it into a javascript: or data: link."""
    seen, current = set(), href
    while current not in seen:  # every decoding a renderer or a browser might apply, until nothing changes
        seen.add(current)
        current = unquote(html.unescape(current))
    for form in seen:
        flat = _CONTROL.sub("", form.strip(_C0_AND_SPACE).replace("\t", "").replace("\n", "")).lower()
        scheme = _SCHEME.match(flat)
        if scheme is not None and scheme.group(1) not in SAFE_SCHEMES:
            return False
        if scheme is None and ":" in flat.split("/", 1)[0].split("?", 1)[0].split("#", 1)[0]:
            return False  # a colon before any slash that no scheme pattern explains: refuse rather than guess
    return True


def safe_href(href: str) -> str | None:
    """`href` as a Markdown link destination if `link_allowed`, else None. All but plain URL characters are
    percent-encoded and `&` written as an entity, so no renderer decodes it into something else."""
    return quote(href, safe=_URL_SAFE).replace("&", "&amp;") if link_allowed(href) else None


def commentary(text: str) -> str:
    """Contributor Markdown as safe Markdown: the constructs of the module docstring, everything else as text."""
    from markdown_it import MarkdownIt
    from markdown_it.tree import SyntaxTreeNode

    parser = MarkdownIt("commonmark", {"html": False}).enable(["table", "strikethrough"])
    tree = SyntaxTreeNode(parser.parse(str(text)))
    return _blocks(tree.children)


def _blocks(nodes: list[Any]) -> str:
    parts: list[str] = []
    previous = ""
    for node in nodes:
        out = _block(node)
        if not out:
            continue
        if node.type in ("code_block", "fence") and previous in ("bullet_list", "ordered_list"):
            parts.append(_END_LIST)
        parts.append(out)
        previous = node.type
    return "\n\n".join(parts)


def _block(node: Any) -> str:
    kind = node.type
    if kind == "paragraph":
        return _inline(node.children)
    if kind == "heading":
        text = _inline(node.children)
        return f"{'#' * max(2, int(node.tag[1]))} {text}" if text else ""
    if kind in ("code_block", "fence"):
        lines = node.content.rstrip("\n").split("\n")
        while lines and not lines[0].strip():
            lines.pop(0)
        return "\n".join("    " + _CONTROL.sub(" ", line) if line.strip() else "" for line in lines)
    if kind == "blockquote":
        inner = _blocks(node.children)
        return "\n".join(f"> {line}" if line else ">" for line in inner.split("\n")) if inner else ""
    if kind in ("bullet_list", "ordered_list"):
        start = int(node.attrs.get("start", 1)) if kind == "ordered_list" else 1
        items = []
        for number, item in enumerate(node.children, start=min(start, 99_999_999)):
            marker = f"{number}." if kind == "ordered_list" else "-"
            marker = marker.ljust(max(4, len(marker) + 1))
            body = _blocks(item.children)
            if item.children and item.children[0].type in ("code_block", "fence"):
                body = f"{_END_LIST}\n\n{body}"  # an item must not begin with an indented code block
            lines = (body or _END_LIST).split("\n")
            indent = " " * len(marker)
            items.append(marker + lines[0] + "".join(f"\n{indent}{line}" if line else "\n" for line in lines[1:]))
        return "\n\n".join(items)
    if kind == "hr":
        return "---"
    if kind == "table":
        return _table(node)
    return escape(node.content) if getattr(node, "content", "") else ""  # anything else: its text, escaped


def _table(node: Any) -> str:
    rows: list[list[str]] = []
    align: list[str] = []
    for section in node.children:
        for row in section.children:
            cells = [_inline(cell.children) or " " for cell in row.children]
            if section.type == "thead":
                style = [str(cell.attrs.get("style", "")) for cell in row.children]
                align = [":--:" if "center" in s else "--:" if "right" in s else ":--" if "left" in s else "---"
                         for s in style]
            rows.append(cells)
    if not rows:
        return ""
    width = len(rows[0])
    lines = ["| " + " | ".join((r + [" "] * width)[:width]) + " |" for r in rows]
    lines.insert(1, "| " + " | ".join(align or ["---"] * width) + " |")
    return "\n".join(lines)


def _inline(nodes: list[Any]) -> str:
    out = []
    for node in nodes:
        kind = node.type
        if kind == "inline":
            out.append(_inline(node.children))
        elif kind == "text":  # escape() trims the text: keep one space where it began or ended with some
            text = node.content
            lead = " " if text[:1].isspace() else ""
            out.append(lead + escape(text) + (" " if text[-1:].isspace() and text.strip() else ""))
        elif kind in ("softbreak", "hardbreak"):
            out.append(" ")
        elif kind == "code_inline":
            out.append(code_span(node.content))
        elif kind in ("em", "strong", "s"):
            inner = _inline(node.children).strip()
            mark = {"em": "*", "strong": "**", "s": "~~"}[kind]
            out.append(f"{mark}{inner}{mark}" if inner else "")
        elif kind in ("link", "image"):
            inner = _inline(node.children).strip() or escape(str(node.attrs.get("src") or node.attrs.get("href")))
            href = safe_href(str(node.attrs.get("href") or node.attrs.get("src") or ""))
            out.append(f"[{inner}]({href})" if href else inner)
        else:  # raw HTML cannot occur (the parser has it off); anything new is shown as its text
            out.append(escape(node.content))
    return re.sub(r" {2,}", " ", "".join(out)).strip()
