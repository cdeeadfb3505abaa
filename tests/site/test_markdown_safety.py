"""The .md pages' escaping, on its own: the five payload families that got past the old pattern fixes, and
text that hypothesis builds from Markdown's and HTML's metacharacters, rendered by CommonMark (raw HTML
allowed) and Python-Markdown, stay inert; and plain text stays readable."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from markdown_check import live_parts, renderings

from reportgen.site.pages import markdown_safe, md_code, md_text

FAMILIES = {
    "unbalanced code span": "`` ` <script>alert(1)</script>\n\na ` b <img src=x onerror=alert(1)> ``",
    "indented fence": "    ```\n<script>alert(2)</script>\n    ```\n\n<img src=x onerror=alert(2)>",
    # the third ``` opens a fence (the first is no fence: its info string has a backtick); the last one closes it
    "fence info with a backtick": "```a`b\n<script>alert(3)</script>\n```\n<img src=x onerror=alert(3)>\n```",
    "reference link": "[x][r] and [y] and ![z][r]\n\n[r]: javascript:alert(4)\n[y]: vbscript:msgbox(4)",
    "entity-encoded scheme": "[a](java&#115;cript:alert(5)) [b](&#106;avascript:alert(5)) [c](javascript&#58;x) "
                             "[d](&#x6A;avascript:x) [e](%6Aavascript:x) [f]( java\tscript:x) ![g](data:text/html,x)",
}
FRAGMENTS = ["<script>alert(1)</script>", "<img src=x onerror=alert(1)>", "javascript:alert(1)", "java&#115;cript:",
             "&#106;", "&lt;", "`", "``", "```", "~~~", "    ", "\n", "\n\n", "[", "]", "(", ")", "![", "](", "]: ",
             "<", ">", "&", "\\", "*", "_", "#", "-", "1.", "|", "{: onclick=\"alert(1)\"}", "<!--", "-->", "<a href=",
             "\"", "'", "=", "\x02", "\x03", "data:", "vbscript:", " ", "x", "é", "<https://x>", "<javascript:x>"]
texts = st.lists(st.one_of(st.sampled_from(FRAGMENTS), st.text(alphabet="<>&`[]()!*_#|\\:;\"' \nabc", max_size=6)),
                 max_size=25).map("".join)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_payload_families_stay_inert_in_commentary(family: str) -> None:
    text = FAMILIES[family]
    assert live_parts(text), "the payload should be live when published unescaped"  # the test can fail
    out = markdown_safe(text)
    assert live_parts(out) == [], out


@settings(max_examples=150, deadline=None)
@given(texts)
def test_generated_commentary_stays_inert(text: str) -> None:
    out = markdown_safe(text)
    assert live_parts(out) == [], out


@settings(max_examples=100, deadline=None)
@given(texts)
def test_generated_values_stay_inert_wherever_templates_put_them(text: str) -> None:
    plain, code = md_text(text), md_code(text)
    pages = [f"{plain}\n", f"# {plain}\n\nx {plain} y\n", f"- [{plain}](a.md): {code}\n",
             f"| a | b |\n| --- | --- |\n| {plain} | {md_code(text, table=True)} |\n", f"{code}\n\n**{plain}**\n"]
    for page in pages:
        assert live_parts(page) == [], page


def test_plain_text_and_safe_constructs_survive() -> None:
    text = ("A *sampler* **converges**: see [the guide](https://example.com/a?b=1&c=2), `k_euler --steps 10`.\n\n"
            "- one\n- two\n\n1. first\n\n> quoted\n\n    code <b>here</b>\n\n| a | b |\n| - | -: |\n| 1 | 2 |\n")
    out = markdown_safe(text)
    html = renderings(out)["gfm-like"]  # CommonMark with tables
    for part in ("<em>sampler</em>", "<strong>converges</strong>", 'href="https://example.com/a?b=1&amp;c=2"',
                 "<code>k_euler --steps 10</code>", "<li>", "<blockquote>", "<code>code &lt;b&gt;here&lt;/b&gt;",
                 "<table>", "<td style=\"text-align:right\">2</td>"):
        assert part in html, (part, html)
    assert md_text("K_EULER 0.12 s, 2024-01-01") == "K\\_EULER 0.12 s, 2024-01-01"  # plain values stay readable


def test_links_with_script_schemes_lose_the_link_but_keep_their_text() -> None:
    out = markdown_safe(FAMILIES["entity-encoded scheme"])
    for name in "abcdefg":
        assert name in out
    assert not re.search(r"(?<!\\)\]\(", out), out  # no link syntax is left, only escaped brackets
