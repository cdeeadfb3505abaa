"""Labelled grid images like the guide's figures: samplers as rows, steps as columns, one per topic, seed and value
of the other axes (model, schedule, cfg), split into parts where one would be too big."""

from __future__ import annotations

import hashlib
import io
import json
import re
from collections.abc import Collection, Iterable, Mapping, Sequence
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont, PngImagePlugin

from reportgen.render.plan import Cell
from reportgen.render.store import Store, atomic_write
from reportgen.samplers import get_sampler
from reportgen.study.load import Study

BACKGROUND = (255, 255, 255)
INK = (20, 20, 20)
MISSING = (200, 200, 200)


def make_grid(rows: Sequence[str], columns: Sequence[str], images: Mapping[tuple[str, str], Image.Image],
              title: str = "", tile: int | None = None) -> Image.Image:
    """Paste `images[(row, column)]` into a grid with row labels on the left and column labels on top."""
    if not rows or not columns:
        raise ValueError("a grid needs at least one row and one column")
    sizes = {im.size for im in images.values()}
    if len(sizes) > 1:
        raise ValueError(f"grid images differ in size: {sorted(sizes)}")
    width, height = sizes.pop() if sizes else (64, 64)
    if tile is not None:
        width, height = tile, max(1, round(tile * height / width))
    font_size = max(12, min(32, width // 6))
    font = ImageFont.load_default(size=font_size)
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    label_w = max(int(measure.textlength(r, font=font)) for r in rows) + font_size
    label_h = font_size * 2
    total_w = label_w + width * len(columns)
    lines = _wrap(title, font, total_w - font_size, measure) if title else []
    title_h = round(len(lines) * font_size * 1.3) + (font_size // 2 if lines else 0)
    grid = Image.new("RGB", (total_w, title_h + label_h + height * len(rows)), BACKGROUND)
    draw = ImageDraw.Draw(grid)
    for k, line in enumerate(lines):
        draw.text((font_size // 2, font_size // 2 + round(k * font_size * 1.3)), line, fill=INK, font=font)
    for j, column in enumerate(columns):
        x = label_w + j * width + width // 2
        draw.text((x, title_h + label_h // 2), column, fill=INK, font=font, anchor="mm")
    for i, row in enumerate(rows):
        y = title_h + label_h + i * height
        draw.text((font_size // 2, y + height // 2), row, fill=INK, font=font, anchor="lm")
        for j, column in enumerate(columns):
            box = (label_w + j * width, y)
            image = images.get((row, column))
            if image is None:
                draw.rectangle((*box, box[0] + width - 1, box[1] + height - 1), fill=MISSING)
            else:
                grid.paste(image.convert("RGB").resize((width, height)) if image.size != (width, height)
                           else image.convert("RGB"), box)
    return grid


def _wrap(text: str, font: ImageFont.FreeTypeFont | ImageFont.ImageFont, width: int,
          draw: ImageDraw.ImageDraw) -> list[str]:
    """Greedy word wrap of `text` to lines at most `width` pixels wide."""
    lines: list[str] = []
    for word in text.split():
        if lines and draw.textlength(f"{lines[-1]} {word}", font=font) <= width:
            lines[-1] += f" {word}"
        else:
            lines.append(word)
    return lines


GRID_CHUNK = "reportgen-grid"  # a grid PNG's text chunk: the digest of what it shows


# The most pixels one grid PNG may hold: a bigger grid is split into parts (rows first, then columns), so that no
# grid is a decompression bomb to Pillow (it warns at 89 Mpx) or a browser; labels and title take the margin.
MAX_GRID_PIXELS = 48_000_000


def axis_suffix(cell: Cell, study: Study) -> str:
    """The values of the axes beyond sampler and steps that a cell's grid is drawn per ('' for a study without
    them, so its grids keep their names): model, schedule, cfg."""
    parts = []
    if study.models:
        parts.append("model-" + re.sub(r"[^A-Za-z0-9._-]+", "_", cell.model).strip("_.")[:40])
    if len(study.schedules) > 1 or cell.schedule_type != "default":
        parts.append(cell.schedule_type)
    if study.cfgs:
        parts.append(f"cfg{cell.cfg:g}")
    return "-".join(parts)


def grid_groups(study: Study, cells: Iterable[Cell]) -> dict[str, list[Cell]]:
    """The cells of each grid PNG by its name without `.png`: one per topic, seed and value of the other axes."""
    groups: dict[str, list[Cell]] = {}
    for cell in cells:
        suffix = axis_suffix(cell, study)
        groups.setdefault(f"{cell.topic}-{cell.seed}" + (f"-{suffix}" if suffix else ""), []).append(cell)
    return groups


def grid_parts(group: list[Cell], limit: int = MAX_GRID_PIXELS) -> list[list[Cell]]:
    """`group` split so that each part's grid holds at most about `limit` pixels: whole rows (samplers) per part,
    and a row wider than the limit split by columns (steps)."""
    tile_w = max(128, group[0].width)
    tile_h = max(1, round(tile_w * group[0].height / group[0].width))
    rows = list(dict.fromkeys(c.sampler for c in group))
    columns = sorted({c.steps for c in group})
    per_row = max(1, limit // (tile_w * tile_h))  # tiles one part may hold
    column_sets = [columns[i:i + per_row] for i in range(0, len(columns), per_row)]
    rows_per_part = max(1, per_row // max(len(c) for c in column_sets))
    parts = []
    for i in range(0, len(rows), rows_per_part):
        chosen = set(rows[i:i + rows_per_part])
        for steps in column_sets:
            wanted = set(steps)
            parts.append([c for c in group if c.sampler in chosen and c.steps in wanted])
    return parts


def write_grids(study: Study, cells: Iterable[Cell], store: Store, out_dir: Path,
                stored: Collection[str], limit: int = MAX_GRID_PIXELS) -> list[Path]:
    """One labelled grid PNG per topic, seed and value of the other axes (cells whose key is not in `stored` drawn
    grey), split into `-part2`, ... where it would be over `limit` pixels; a grid that already shows exactly this
    is left as it is."""
    paths = []
    for name, group in grid_groups(study, cells).items():
        parts = grid_parts(group, limit)
        for k, part in enumerate(parts):
            path = out_dir / (f"{name}.png" if k == 0 else f"{name}-part{k + 1}.png")
            digest = grid_digest(study, part, stored)
            if _shown(path) != digest:
                atomic_write(path, grid_png(study, part, store, stored, {GRID_CHUNK: digest}))
            paths.append(path)
    return paths


def grid_digest(study: Study, group: list[Cell], stored: Collection[str]) -> str:
    """SHA-256 of everything a topic and seed's grid shows: its title, rows, columns and which cells are stored."""
    topic = study.topic(group[0].topic)
    what = json.dumps([topic.title, topic.prompt.to_command(), topic.samplers, topic.steps,
                       [(c.key, c.key in stored) for c in group]])
    return hashlib.sha256(what.encode()).hexdigest()


def grid_png(study: Study, group: list[Cell], store: Store, stored: Collection[str],
             text: dict[str, str] | None = None) -> bytes:
    """The labelled grid of one topic and seed's cells (at one value of each other axis) as PNG bytes (with `text`
    chunks); cells not in `stored` are drawn grey."""
    topic = study.topic(group[0].topic)
    rows = [get_sampler(s).label for s in dict.fromkeys(c.sampler for c in group)]
    columns = [str(n) for n in sorted({c.steps for c in group})]
    images = {}
    for cell in group:
        if cell.key in stored:
            with Image.open(store.image_path(cell.key)) as im:
                images[(get_sampler(cell.sampler).label, str(cell.steps))] = im.convert("RGB")
    first = group[0]
    title = f"{topic.title}: {topic.prompt.with_(seed=first.seed, cfg=first.cfg).to_command()}"
    extra = [f"model {first.model}"] if first.model else []
    if first.schedule_type != "default":
        extra.append(f"schedule {first.schedule_type}")
    if extra:
        title += f" ({', '.join(extra)})"
    grid = make_grid(rows, columns, images, title=title, tile=max(128, group[0].width))
    info = PngImagePlugin.PngInfo()
    for key, value in (text or {}).items():
        info.add_text(key, value)
    buffer = io.BytesIO()
    grid.save(buffer, format="PNG", pnginfo=info)
    return buffer.getvalue()


def _shown(path: Path) -> str | None:
    """The digest an existing grid PNG says it shows (its header is read, not its pixels), or None."""
    try:
        with Image.open(path) as image:
            value = image.info.get(GRID_CHUNK)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
        return None
    return value if isinstance(value, str) else None
