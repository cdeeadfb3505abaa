"""Write a new topic page into a study: `topics/<slug>.md` with front matter and a commentary stub."""

from __future__ import annotations

from pathlib import Path

from reportgen.errors import ReportgenError, StudyError
from reportgen.study.load import (
    SLUG,
    Settings,
    Topic,
    is_topic_page,
    load_study,
    parse_topic,
    read_settings,
    read_topic_text,
    split_front_matter,
    topic_cells,
)
from reportgen.study.prompt import parse_prompt

STUB = """Write what this topic shows here, in Markdown. For example: which samplers settle first as the steps
grow, which keep changing, and from how many steps a preview already shows the final image.
"""


def new_topic(study: Path, slug: str, title: str, prompt: str) -> Path:
    """Create `study/topics/<slug>.md`; refuse a bad slug or title, a page load_study would refuse, an existing file."""
    if not SLUG.match(slug):
        raise StudyError(f"bad topic slug {slug!r}: use 1-64 of a-z, 0-9, '-' and '_', starting with a letter or digit")
    if not title.strip() or "\n" in title:
        raise StudyError("--title must be one non-empty line")
    settings = read_settings(study)
    try:
        parsed = parse_prompt(prompt)
    except ReportgenError as exc:
        raise StudyError(f"--prompt: {exc}") from None
    path = study / "topics" / f"{slug}.md"
    text = _page(title.strip(), parsed.to_command(), _next_order(study / "topics"))
    topic = parse_topic(path, text, settings)  # refuse now what every later `render` of this study would refuse
    _check_total(study, topic, settings)
    try:
        path.parent.mkdir(exist_ok=True)
        with open(path, "x", encoding="utf-8") as handle:  # "x": never overwrite a contributor's page
            handle.write(text)
    except FileExistsError:
        raise StudyError(f"{path} already exists; edit it, or choose another slug") from None
    except OSError as exc:
        raise StudyError(f"cannot write {path}: {exc.strerror or exc}") from None
    return path


def _check_total(study: Path, topic: Topic, settings: Settings) -> None:
    """Refuse a topic that takes the study over max_cells (when the rest of the study loads: a broken page
    elsewhere is render's to report, by name)."""
    try:
        cells = sum(topic_cells(settings, t) for t in load_study(study).topics)
    except ReportgenError:
        return
    cells += topic_cells(settings, topic)
    if cells > settings.max_cells:
        raise StudyError(f"with this topic the study would have {cells} cells, over max_cells = {settings.max_cells} "
                         "(study.toml); raise it to go on")


def _page(title: str, command: str, order: int) -> str:
    """The topic file: YAML front matter (safely quoted by PyYAML) and the commentary stub."""
    import yaml

    meta = yaml.safe_dump({"title": title, "prompt": command, "order": order}, sort_keys=False, allow_unicode=True,
                          width=10_000)
    return f"---\n{meta}---\n\n{STUB}"


def _next_order(topics: Path) -> int:
    """One more than the highest `order` among the study's topic pages (readable ones), so the new one is last."""
    orders = [0]
    for path in sorted(p for p in topics.glob("*.md") if is_topic_page(p.name)) if topics.is_dir() else []:
        try:
            meta, _ = split_front_matter(read_topic_text(path), str(path))
        except ReportgenError:
            continue
        order = meta.get("order")
        if isinstance(order, int) and not isinstance(order, bool):
            orders.append(order)
    return max(orders) + 1
