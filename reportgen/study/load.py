"""Read a study folder: `study.toml` plus `topics/<slug>.md` (YAML front matter and commentary)."""

from __future__ import annotations

import functools
import re
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from reportgen.errors import PromptError, ReportgenError, SamplerError, StudyError
from reportgen.samplers import get_sampler
from reportgen.study.axes import read_cfgs, read_models, read_schedules
from reportgen.study.prompt import MAX_SEED, Prompt, parse_prompt

SLUG = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
MAX_CELLS = 20_000  # cells per study; raise with `max_cells` in study.toml
CELLS_CEILING = 1_000_000  # the most `max_cells` may say: the cells and seeds of a study are held in memory
MAX_PIXELS = 2048 * 2048  # pixels per image; raise with `max_pixels` in study.toml
MAX_STEPS = 10_000  # steps per cell: more is a typo, not a study
MAX_STUDY_TOML = 1_000_000  # characters of study.toml; the guide's is under 2,000
MAX_FRONT_MATTER = 64 * 1024  # characters of a topic's front matter; the guide's are under 1,000
DEFAULT_SEEDS = 3  # seeds per topic when study.toml says none: a claim must hold in a majority of seeds
# With no `reference_steps`, the reference is rendered at this many times a topic's highest step count: a
# second-order reference at 4N is ~16x closer to the limit than at N, so its own error stays small beside
# the errors it measures, for about the cost of one more sampler row (measurement.md, "The reference").
REFERENCE_FACTOR = 4
_STUDY_KEYS = {
    "title", "description", "model", "samplers", "steps", "seeds", "negative_prompt",
    "reference_sampler", "reference_steps", "thresholds", "max_cells", "max_pixels", "speed",
    "schedules", "cfg", "models",
}
_TOPIC_KEYS = {"title", "prompt", "order", "steps", "seeds", "samplers"}
THRESHOLD_KEYS = ("metric", "indicator", "converged", "limit")  # their values: measure.load_thresholds
SPEED_KEYS = ("steps", "samples")


@dataclass(frozen=True)
class Topic:
    """One topic: a prompt with fixed size, CFG and seed, and the contributor's commentary."""

    slug: str
    title: str
    prompt: Prompt
    order: int
    commentary: str
    steps: tuple[int, ...]
    seeds: tuple[int, ...]
    samplers: tuple[str, ...]
    path: Path


@dataclass(frozen=True)
class Settings:
    """study.toml, validated: the study-wide settings that every topic page is checked against."""

    root: Path
    title: str
    description: str
    model: str
    samplers: tuple[str, ...]
    steps: tuple[int, ...]
    seeds: int
    negative_prompt: str
    reference_sampler: str  # until render.plan.for_model picks the model family's: k_heun where study.toml names none
    reference_sampler_set: bool  # whether study.toml names it
    reference_steps: int | None  # None: REFERENCE_FACTOR x each topic's highest step count; 0: no separate reference
    max_cells: int
    max_pixels: int
    tables: dict[str, dict[str, Any]]  # [thresholds], [speed]: keys checked here, values in measure/, render/
    # The axes besides sampler, steps and seed (docs/study-format.md, "Axes"); each optional, so a study without
    # them gives the cells and keys it gave before they existed.
    schedules: tuple[str, ...]  # names of samplers.SCHEDULES; "default": the sampler's own
    cfgs: tuple[float, ...]  # CFG scales overriding every topic's -C; (): each topic's own
    models: tuple[str, ...]  # model specs rendered one after another; (): `model` alone

    @property
    def model_specs(self) -> tuple[str, ...]:
        """The models the study renders, in order: `models`, else `model`."""
        return self.models or (self.model,)

    def axes(self) -> dict[str, int]:
        """How many values each axis beyond sampler, steps and seed has, for those the study varies."""
        counts = {"model": len(self.model_specs), "schedule": len(self.schedules), "cfg": len(self.cfgs)}
        return {axis: n for axis, n in counts.items() if n > 1}

    def lane_count(self, topic: Topic) -> int:
        """The topic's lanes per seed and step count: samplers x the schedules each takes x cfgs x models."""
        pairs = sum(1 for name in topic.samplers for s in self.schedules if get_sampler(name).takes(s) is None)
        return pairs * max(1, len(self.cfgs)) * len(self.model_specs)

    def reference_steps_for(self, topic: Topic) -> int | None:
        """The step count of the topic's reference image: `reference_steps`, else REFERENCE_FACTOR x its highest
        step count (at most MAX_STEPS); None for `reference_steps = 0`, where the reference is the reference
        sampler's highest step count in the matrix."""
        if self.reference_steps == 0:
            return None
        if self.reference_steps is not None:
            return self.reference_steps
        return min(REFERENCE_FACTOR * max(topic.steps), MAX_STEPS)


@dataclass(frozen=True)
class Study(Settings):
    """A whole study: study.toml's settings and its topics, in page order."""

    topics: tuple[Topic, ...]

    def topic(self, slug: str) -> Topic:
        """The topic with this slug."""
        for topic in self.topics:
            if topic.slug == slug:
                return topic
        raise StudyError(f"no topic {slug!r} in {self.root}; topics: {', '.join(t.slug for t in self.topics)}")


def topic_cells(settings: Settings, topic: Topic) -> int:
    """The topic's cells: its matrix, plus one reference cell per seed unless the matrix already holds it."""
    matrix = settings.lane_count(topic) * len(topic.steps) * len(topic.seeds)
    steps = settings.reference_steps_for(topic)
    if steps is None or (settings.reference_sampler in topic.samplers and steps in topic.steps):
        return matrix
    return matrix + len(topic.seeds) * max(1, len(settings.cfgs)) * len(settings.model_specs)


def topic_seeds(prompt: Prompt, count: int) -> tuple[int, ...]:
    """The topic's `-S` seed, then `count - 1` more derived from it: S+1, S+2, ... (mod 2**32)."""
    if prompt.seed is None:
        raise PromptError("a topic's prompt needs a seed (-S)")
    return tuple((prompt.seed + i) % (MAX_SEED + 1) for i in range(count))


def load_study(root: Path | str) -> Study:
    """Read and validate a study folder; raise StudyError naming the bad file and value."""
    settings = read_settings(root)
    root = settings.root
    topics_dir = root / "topics"
    paths = sorted(p for p in topics_dir.glob("*.md") if is_topic_page(p.name)) if topics_dir.is_dir() else []
    if not paths:
        raise StudyError(f"no topics/*.md in {root}")
    topics = [parse_topic(p, read_topic_text(p), settings) for p in paths]
    topics.sort(key=lambda t: (t.order, t.slug))

    cells = sum(topic_cells(settings, t) for t in topics)
    if cells > settings.max_cells:
        axes = "".join(f" x {n} {axis}s" for axis, n in settings.axes().items())
        counted = f" (samplers x steps x seeds{axes})" if axes else ""  # without axes: the line it always was
        raise StudyError(f"{root / 'study.toml'}: the study has {cells} cells{counted}, over "
                         f"max_cells = {settings.max_cells}; raise it to go on")
    return Study(**vars(settings), topics=tuple(topics))


def is_topic_page(name: str) -> bool:
    """Whether topics/NAME is a topic page: NAME.md, not hidden (`.`, which includes an editor's lock file
    `.#a.md`, often a dangling link) and no editor's backup or autosave (`~`, `#`)."""
    return name.endswith(".md") and not name.startswith((".", "#", "~")) and not name.endswith("~")


def read_settings(root: Path | str) -> Settings:
    """Read and validate a study folder's study.toml; raise StudyError naming the file and the bad value."""
    root = Path(root)
    toml_path = root / "study.toml"
    if not root.is_dir():
        raise StudyError(f"study folder not found: {root}")
    if not toml_path.is_file():
        raise StudyError(f"no study.toml in {root}")
    try:
        text = toml_path.read_text(encoding="utf-8-sig")  # as topic pages: a leading BOM is dropped
        if len(text) > MAX_STUDY_TOML:
            raise StudyError(f"{toml_path}: {len(text):,} characters, over the limit of {MAX_STUDY_TOML:,}")
        data = tomllib.loads(text)
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise StudyError(f"{toml_path}: invalid TOML: {exc}") from None
    except RecursionError:  # tomllib recurses once per level of nested tables or arrays
        raise StudyError(f"{toml_path}: invalid TOML: tables or arrays nested too deeply") from None
    except ValueError:  # int() of a number over Python's limit (sys.get_int_max_str_digits)
        raise StudyError(f"{toml_path}: invalid TOML: a number too long to read (Python reads integers of at "
                         f"most {sys.get_int_max_str_digits():,} digits)") from None
    except OSError as exc:  # no permission, or a folder named study.toml
        raise StudyError(f"{toml_path}: cannot read: {exc.strerror or exc}") from None
    where = str(toml_path)
    unknown = sorted(set(data) - _STUDY_KEYS)
    if unknown:
        raise StudyError(f"{where}: unknown setting {unknown[0]!r}")

    title = _string(data, "title", where, required=True)
    model = _string(data, "model", where, default="tiny")
    samplers = _samplers(data.get("samplers"), where, required=True)
    steps = _steps(data.get("steps"), where, required=True)
    seeds = _positive_int(data.get("seeds", DEFAULT_SEEDS), "seeds", where)
    negative = _string(data, "negative_prompt", where, default="")
    try:
        reference = get_sampler(_string(data, "reference_sampler", where, default="k_heun")).name
    except SamplerError as exc:
        raise StudyError(f"{where}: reference_sampler: {exc}") from None
    reference_steps = data.get("reference_steps")
    if reference_steps is not None and (not isinstance(reference_steps, int) or isinstance(reference_steps, bool)
                                        or not 0 <= reference_steps <= MAX_STEPS):
        raise StudyError(f"{where}: reference_steps must be an integer from 0 (no separate reference) to "
                         f"{MAX_STEPS}, got {reference_steps!r}")
    max_cells = _positive_int(data.get("max_cells", MAX_CELLS), "max_cells", where)
    if max_cells > CELLS_CEILING:
        raise StudyError(f"{where}: max_cells = {max_cells} is over the ceiling of {CELLS_CEILING}")
    max_pixels = _positive_int(data.get("max_pixels", MAX_PIXELS), "max_pixels", where)
    tables = {name: _table(data, name, known, where)
              for name, known in (("thresholds", THRESHOLD_KEYS), ("speed", SPEED_KEYS)) if name in data}
    for key, value in tables.get("speed", {}).items():
        _positive_int(value, f"[speed] {key}", where)
    if seeds > max_cells:  # checked before any seed list is built: a huge count must not hang the load
        raise StudyError(f"{where}: seeds = {seeds} is over max_cells = {max_cells}; raise max_cells to go on")
    schedules, cfgs, models = read_schedules(data, where), read_cfgs(data, where), read_models(data, where)
    for axis, values in (("schedules", schedules), ("cfg", cfgs), ("models", models)):
        if len(values) > max_cells:  # before any cell is counted: a huge list must not hang the load
            raise StudyError(f"{where}: {axis} has {len(values)} values, over max_cells = {max_cells}")
    return Settings(
        root=root, title=title, description=_string(data, "description", where, default=""),
        model=models[0] if models else model,
        samplers=samplers, steps=steps, seeds=seeds, negative_prompt=negative, reference_sampler=reference,
        reference_sampler_set="reference_sampler" in data, reference_steps=reference_steps, max_cells=max_cells,
        max_pixels=max_pixels, tables=tables, schedules=schedules, cfgs=cfgs, models=models,
    )


def read_topic_text(path: Path) -> str:
    """A topic page's text (a leading byte-order mark dropped); StudyError if it cannot be read, or if it
    holds a carriage return that ends no line (a lone CR, which Python would read as a line break unasked)."""
    try:
        with open(path, encoding="utf-8-sig", newline="") as handle:
            text = handle.read()
    except UnicodeDecodeError:
        raise StudyError(f"{path}: not UTF-8 text") from None
    except OSError as exc:  # a folder, a dangling link, no permission
        raise StudyError(f"{path}: cannot read: {exc.strerror or exc}") from None
    lone = re.search(r"\r(?!\n)", text)
    if lone:
        line = text.count("\n", 0, lone.start()) + 1
        raise StudyError(f"{path}: line {line}: a carriage return (CR) that ends no line; save the file with "
                         "LF or CRLF line endings")
    return text.replace("\r\n", "\n")


def split_front_matter(text: str, where: str) -> tuple[dict[str, Any], str]:
    """Split `---\\nyaml\\n---\\nbody` into (mapping, body); StudyError if malformed.

    python-frontmatter splits; the YAML is read by a safe loader that refuses aliases (so no "billion
    laughs" can expand), duplicated keys (YAML would keep the last one silently), more than
    MAX_FRONT_MATTER characters, and nesting deeper than Python's recursion limit."""
    import frontmatter
    import yaml

    if not re.match(r"---[ \t]*\r?\n", text):
        raise StudyError(f"{where}: missing front matter (the file must start with a '---' line)")
    try:
        front, body = frontmatter.YAMLHandler().split(text.strip())  # stripped as frontmatter.parse does
    except ValueError:
        raise StudyError(f"{where}: front matter is not closed by a '---' line") from None
    if len(front) > MAX_FRONT_MATTER:
        raise StudyError(f"{where}: front matter of {len(front):,} characters, over the limit of "
                         f"{MAX_FRONT_MATTER:,}")
    try:
        meta = yaml.load(front, Loader=_front_matter_loader())  # a SafeLoader, stricter still
    except yaml.YAMLError as exc:
        first = str(exc).splitlines()[0] if str(exc) else "syntax error"
        mark = getattr(exc, "problem_mark", None)
        at = f" (line {mark.line + 1})" if mark is not None else ""  # its line 0 is the rest of the first ---
        raise StudyError(f"{where}: invalid front matter{at}: {first}") from None
    except RecursionError:
        raise StudyError(f"{where}: invalid front matter: nested too deeply") from None
    if meta is None:
        meta = {}
    body = body.strip()
    if not isinstance(meta, dict):
        raise StudyError(f"{where}: front matter must be a mapping of keys to values, not a "
                         f"{type(meta).__name__}")
    return meta, body


@functools.cache
def _front_matter_loader() -> type:
    """yaml.SafeLoader, refusing aliases and duplicated keys (built on first use, as yaml is imported then)."""
    import yaml

    class Refused(yaml.MarkedYAMLError):
        """A front matter construct reportgen refuses."""

    class Loader(yaml.SafeLoader):
        def compose_node(self, parent: Any, index: Any) -> Any:
            if self.check_event(yaml.AliasEvent):
                event = self.peek_event()
                raise Refused(None, None, f"YAML alias *{event.anchor} (aliases are not allowed)", event.start_mark)
            return super().compose_node(parent, index)

        def construct_mapping(self, node: Any, deep: bool = False) -> Any:
            seen: set[Any] = set()
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=deep)
                if isinstance(key, list | dict):
                    continue  # unhashable: SafeLoader refuses it with its own message
                if key in seen:
                    raise Refused(None, None, f"duplicated key {key!r}", key_node.start_mark)
                seen.add(key)
            return super().construct_mapping(node, deep=deep)

    return Loader


def parse_topic(path: Path, text: str, settings: Settings) -> Topic:
    """Validate the page `text` of the topic file `path` against the study's settings; StudyError if bad."""
    where = str(path)
    slug = path.stem
    if not SLUG.match(slug):
        raise StudyError(f"{where}: bad topic slug {slug!r} (use a-z, 0-9, '-' and '_')")
    meta, body = split_front_matter(text, where)
    unknown = sorted(set(map(str, meta)) - _TOPIC_KEYS)
    if unknown:
        raise StudyError(f"{where}: unknown front matter key {unknown[0]!r}")
    title = _string(meta, "title", where, required=True)
    prompt_text = _string(meta, "prompt", where, required=True)
    try:
        prompt = parse_prompt(prompt_text)
        if prompt.seed is None:
            raise PromptError("a topic's prompt needs a seed (-S)")
    except ReportgenError as exc:
        raise StudyError(f"{where}: {exc}") from None
    if prompt.sampler is not None:  # kept with the prompt and shown on the site, so it must name a real one
        try:
            get_sampler(prompt.sampler)
        except SamplerError as exc:
            raise StudyError(f"{where}: -A: {exc}") from None
    if prompt.width * prompt.height > settings.max_pixels:
        raise StudyError(f"{where}: {prompt.width}x{prompt.height} is over max_pixels = {settings.max_pixels}; "
                         "raise max_pixels in study.toml to go on")
    if settings.negative_prompt and not prompt.negative:
        try:
            prompt = prompt.with_(negative=settings.negative_prompt)
        except PromptError as exc:
            raise StudyError(f"{settings.root / 'study.toml'}: negative_prompt: {exc}") from None
    order = meta.get("order", 0)
    if not isinstance(order, int) or isinstance(order, bool):
        raise StudyError(f"{where}: order must be an integer, got {order!r}")
    topic_steps = _steps(meta.get("steps"), where) or settings.steps
    if prompt.steps is not None and prompt.steps not in topic_steps:
        topic_steps = tuple(sorted({*topic_steps, *_steps([prompt.steps], where)}))
    topic_samplers = _samplers(meta.get("samplers"), where) or settings.samplers
    count = _positive_int(meta.get("seeds", settings.seeds if prompt.count is None else prompt.count), "seeds", where)
    if count > settings.max_cells:
        raise StudyError(f"{where}: {count} seeds is over max_cells = {settings.max_cells}; "
                         "raise max_cells in study.toml to go on")
    return Topic(slug=slug, title=title, prompt=prompt, order=order, commentary=body, steps=topic_steps,
                 seeds=topic_seeds(prompt, count), samplers=topic_samplers, path=path)


def _string(data: dict[str, Any], key: str, where: str, *, required: bool = False, default: str = "") -> str:
    if key not in data:
        if required:
            raise StudyError(f"{where}: missing {key!r}")
        return default
    value = data[key]
    if not isinstance(value, str) or (required and not value.strip()):
        raise StudyError(f"{where}: {key} must be a non-empty string" if required
                         else f"{where}: {key} must be a string")
    return value


def _table(data: dict[str, Any], name: str, known: tuple[str, ...], where: str) -> dict[str, Any]:
    if not isinstance(data[name], dict):
        raise StudyError(f"{where}: {name} must be a table")
    unknown = sorted(set(data[name]) - set(known))
    if unknown:
        raise StudyError(f"{where}: [{name}]: unknown key {unknown[0]!r} (known: {', '.join(known)})")
    return data[name]


def _positive_int(value: Any, key: str, where: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise StudyError(f"{where}: {key} must be a positive integer, got {value!r}")
    return value


def _steps(value: Any, where: str, *, required: bool = False) -> tuple[int, ...]:
    if value is None:
        if required:
            raise StudyError(f"{where}: missing 'steps'")
        return ()
    if not isinstance(value, list) or not value:
        raise StudyError(f"{where}: steps must be a non-empty list of integers")
    for item in value:
        if not isinstance(item, int) or isinstance(item, bool) or item <= 0:
            raise StudyError(f"{where}: steps must be integers > 0, got {item!r}")
        if item > MAX_STEPS:
            raise StudyError(f"{where}: {item} steps is over the limit of {MAX_STEPS}")
    return tuple(sorted(set(value)))


def _samplers(value: Any, where: str, *, required: bool = False) -> tuple[str, ...]:
    if value is None:
        if required:
            raise StudyError(f"{where}: missing 'samplers'")
        return ()
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise StudyError(f"{where}: samplers must be a non-empty list of names")
    try:
        names = [get_sampler(v).name for v in value]
    except ReportgenError as exc:
        raise StudyError(f"{where}: {exc}") from None
    return tuple(dict.fromkeys(names))
