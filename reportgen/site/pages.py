"""Render the site's pages through Jinja: the template folders, the filters, and safe commentary.

HTML templates (`*.html`) are autoescaped for HTML. Markdown templates (`*.md`) are escaped for Markdown:
every value a `{{ ... }}` prints goes through `mdsafe.escape` unless it is already Markdown made safe
(the output of `md_text`, `md_code`, `markdown_safe` or a macro), so a template cannot forget to. Every
template runs with `StrictUndefined`, so a missing variable is an error, never an empty string.
Contributors' Markdown becomes HTML through `markdown` and is then sanitized with nh3 (no script, no
event handler, no `javascript:` link, no embedded, possibly remote, image); for the `.md` pages it is
parsed by markdown-it-py and written again from the parse tree (site/mdsafe.py).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from markupsafe import Markup

from reportgen.errors import SiteError
from reportgen.site import mdsafe

# reportgen/templates: a link to the checkout's templates/ or, in a wheel, a copy
DEFAULT_TEMPLATES = Path(__file__).parent.parent / "templates"

# Commentary may format text, link and show code; images would be fetched from wherever they point.
_COMMENTARY_TAGS = {
    "a", "abbr", "b", "blockquote", "br", "code", "dd", "del", "details", "div", "dl", "dt", "em", "h2", "h3",
    "h4", "h5", "h6", "hr", "i", "ins", "kbd", "li", "mark", "ol", "p", "pre", "q", "s", "small", "span",
    "strong", "sub", "summary", "sup", "table", "tbody", "td", "tfoot", "th", "thead", "tr", "ul",
}


def template_dirs(override: Path | None = None) -> list[Path]:
    """The folders templates are looked up in, the user's `--templates` folder first."""
    if not (DEFAULT_TEMPLATES / "base.html").is_file():
        raise SiteError(f"the site templates are missing ({DEFAULT_TEMPLATES}); reinstall reportgen")
    if override is None:
        return [DEFAULT_TEMPLATES]
    if not override.is_dir():
        raise SiteError(f"--templates folder not found: {override}")
    return [override, DEFAULT_TEMPLATES]


def environment(dirs: list[Path]) -> Any:
    """A Jinja environment over `dirs`: StrictUndefined, autoescape for HTML, the site's filters."""
    import jinja2

    # .md templates are autoescaped too, so that macros return safe Markup; `_finalize` turns every other value
    # into Markdown-escaped Markup first, so Jinja's HTML escaping never applies to them.
    env = jinja2.Environment(
        loader=jinja2.ChoiceLoader([jinja2.FileSystemLoader(str(d)) for d in dirs]),
        undefined=jinja2.StrictUndefined,
        autoescape=jinja2.select_autoescape(enabled_extensions=("html", "md"), default_for_string=False,
                                            default=False),
        trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True, bytecode_cache=_bytecode_cache(),
        finalize=jinja2.pass_context(_finalize_md),
    )
    env.filters.update(FILTERS)
    return env


def _finalize_md(context: Any, value: Any) -> Any:
    """Every value a .md template prints, escaped for Markdown unless it is safe Markdown already."""
    name = getattr(context, "name", None) or ""
    if not name.endswith(".md") or hasattr(value, "__html__"):
        return value
    return Markup(mdsafe.escape("" if value is None else str(value)))


def _bytecode_cache() -> Any:
    """Compiled templates cached across builds (keyed by each template's source), so a rebuild skips compiling."""
    import os

    import jinja2

    folder = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "reportgen" / "jinja"
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:
        return None  # no cache folder: templates are compiled every time, which is only slower
    return jinja2.FileSystemBytecodeCache(str(folder))


def render_pages(env: Any, pages: list[tuple[str, str, dict[str, Any]]]) -> dict[str, str]:
    """Render each (template, site path, context) to text; SiteError naming the template on any failure."""
    import jinja2

    out: dict[str, str] = {}
    for template, path, context in pages:
        try:
            out[path] = env.get_template(template).render(**context)
        except jinja2.TemplateSyntaxError as exc:
            raise SiteError(f"template {exc.filename or exc.name}, line {exc.lineno}: {exc.message}") from None
        except jinja2.TemplateNotFound as exc:
            raise SiteError(f"template not found: {exc.name}") from None
        except jinja2.UndefinedError as exc:
            raise SiteError(f"template {template} (for {path}): {exc.message}") from None
        except Exception as exc:  # a template is code, and may fail as code does: 1/0, a filter given a bad value
            where = _failed_line(exc, template)
            raise SiteError(f"template {where} (for {path}): {type(exc).__name__}: {exc}") from None
    return out


def _failed_line(exc: Exception, template: str) -> str:
    """'FILE, line N' of the innermost template frame of `exc` (Jinja maps its frames to template lines)."""
    import traceback

    frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename.endswith((".html", ".md"))]
    return f"{Path(frames[-1].filename).name}, line {frames[-1].lineno}" if frames else template


def asset_files(dirs: list[Path]) -> dict[str, Path]:
    """Site-relative path -> file for everything under the template folders' `assets/` (user's first)."""
    found: dict[str, Path] = {}
    for folder in reversed(dirs):
        assets = folder / "assets"
        if assets.is_dir():
            for path in sorted(assets.rglob("*")):
                if path.is_file() and not path.name.startswith("."):
                    found[path.relative_to(folder).as_posix()] = path
    return found


def markdown_html(text: str) -> Markup:
    """Contributor Markdown as sanitized HTML: formatting and links only, nothing that runs or loads."""
    import markdown
    import nh3

    html = markdown.markdown(text, extensions=["extra", "sane_lists"], output_format="html")
    clean = nh3.clean(html, tags=_COMMENTARY_TAGS, clean_content_tags={"script", "style"},
                      url_schemes=mdsafe.SAFE_SCHEMES, link_rel="noopener noreferrer",
                      attribute_filter=_link_filter)
    return Markup(clean)


def _link_filter(tag: str, attribute: str, value: str) -> str | None:
    """nh3's attribute filter: a link that some decoding would turn into a script scheme is dropped, as on the
    .md pages (nh3 checks the scheme as written, and keeps `%6Aavascript:` as a relative link)."""
    return None if attribute in ("href", "src") and not mdsafe.link_allowed(value) else value


def markdown_safe(text: str) -> Markup:
    """Contributor Markdown for the site's .md pages, rebuilt from its parse tree with only safe constructs."""
    return Markup(mdsafe.commentary(text))


def md_text(value: object) -> Markup:
    """Plain text for Markdown prose: every HTML and Markdown markup character escaped."""
    return Markup(mdsafe.escape(str(value)))


def md_code(value: object, table: bool = False) -> Markup:
    """Text as one Markdown code span (a fence longer than any backtick run inside); `|` escaped in tables."""
    return Markup(mdsafe.code_span(str(value), table))


def seconds(value: float | None, digits: int = 2) -> str:
    """Seconds for a table: '0.12 s', or an en dash when nothing was measured."""
    if value is None:
        return "–"
    if value >= 100:
        return f"{value:,.0f} s"
    return f"{value:.{digits}f} s"


def number(value: float | int | None, digits: int = 2) -> str:
    """A number for a table, or an en dash when there is none."""
    if value is None:
        return "–"
    if isinstance(value, int):
        return f"{value:,}"
    return f"{value:,.{digits}f}"


def _scale(value: float | None, metric: str = "latent") -> str:
    from reportgen.measure.distances import scale

    return scale(value, metric)


def _far(exponent: float | None, expected: int | None) -> str:
    from reportgen.site.numbers import far_from_order

    return far_from_order(exponent, expected)


FILTERS: dict[str, Callable[..., Any]] = {
    "scale": _scale,
    "far_from_order": _far,
    "markdown": markdown_html,
    "markdown_safe": markdown_safe,
    "md_text": md_text,
    "md_code": md_code,
    "seconds": seconds,
    "number": number,
}
