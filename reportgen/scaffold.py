"""Write a new topic page into a study: `topics/<slug>.md` with front matter and a commentary stub."""

from __future__ import annotations

from pathlib import Path

from reportgen.errors import ReportgenError, StudyError
from reportgen.prompt import parse_prompt
from reportgen.study import SLUG, split_front_matter

STUB = """Write what this topic shows here, in Markdown. For example: which samplers settle first as the steps
grow, which keep changing, and from how many steps a preview already shows the final image.
"""


def new_topic(study: Path, slug: str, title: str, prompt: str) -> Path:
    """Create `study/topics/<slug>.md`; refuse a bad slug, title or prompt, or an existing file."""
    if not SLUG.match(slug):
        raise StudyError(f"bad topic slug {slug!r}: use 1-64 of a-z, 0-9, '-' and '_', starting with a letter or digit")
    if not title.strip() or "\n" in title:
        raise StudyError("--title must be one non-empty line")
    if not (study / "study.toml").is_file():
        raise StudyError(f"no study.toml in {study}")
    try:
        parsed = parse_prompt(prompt)
    except ReportgenError as exc:
        raise StudyError(f"--prompt: {exc}") from None
    if parsed.seed is None:
        raise StudyError("--prompt needs a seed (-S), so that the topic's images are reproducible")
    path = study / "topics" / f"{slug}.md"
    text = _page(title.strip(), parsed.to_command(), _next_order(study / "topics"))
    try:
        path.parent.mkdir(exist_ok=True)
        with open(path, "x", encoding="utf-8") as handle:  # "x": never overwrite a contributor's page
            handle.write(text)
    except FileExistsError:
        raise StudyError(f"{path} already exists; edit it, or choose another slug") from None
    except OSError as exc:
        raise StudyError(f"cannot write {path}: {exc.strerror or exc}") from None
    return path


def _page(title: str, command: str, order: int) -> str:
    """The topic file: YAML front matter (safely quoted by PyYAML) and the commentary stub."""
    import yaml

    meta = yaml.safe_dump({"title": title, "prompt": command, "order": order}, sort_keys=False, allow_unicode=True,
                          width=10_000)
    return f"---\n{meta}---\n\n{STUB}"


def _next_order(topics: Path) -> int:
    """One more than the highest `order` among the study's topic pages (readable ones), so the new one is last."""
    orders = [0]
    for path in sorted(topics.glob("*.md")) if topics.is_dir() else []:
        try:
            meta, _ = split_front_matter(path.read_text(encoding="utf-8"), str(path))
        except (ReportgenError, OSError, UnicodeDecodeError):
            continue
        order = meta.get("order")
        if isinstance(order, int) and not isinstance(order, bool):
            orders.append(order)
    return max(orders) + 1
