"""Procedural pictures with captions from a small grammar: the demo model's training data (issue 6).

Two kinds of scene, drawn in code with Pillow, deterministic from a seed:

- shapes: "a red circle at the left on a white background" (colour x shape x position x background);
- landscapes: "green hills under an orange sky with a sun" (ground x sky colour x sun or not).

A fixed tenth of the caption combinations never appears in training (`held_out_captions`), so the
quality check measures how the model composes words it has seen in other combinations.
"""

from __future__ import annotations

import itertools
import math
import random
import re
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

SIZE = 64
SHAPE_COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40), "green": (40, 170, 60), "blue": (40, 80, 220),
    "yellow": (240, 210, 40), "orange": (245, 135, 25), "purple": (140, 50, 180),
}
BACKGROUNDS: dict[str, tuple[int, int, int]] = {
    "white": (240, 240, 240), "black": (20, 20, 20), "gray": (128, 128, 128),
}
SHAPES = ("circle", "square", "triangle")
POSITIONS: dict[str, tuple[float, float]] = {  # shape centre as a fraction of the image (x, y)
    "left": (0.25, 0.5), "right": (0.75, 0.5), "top": (0.5, 0.25), "bottom": (0.5, 0.75), "center": (0.5, 0.5),
}
SKIES: dict[str, tuple[int, int, int]] = {
    "blue": (110, 170, 240), "orange": (245, 140, 60), "pink": (235, 140, 190), "dark": (25, 25, 70),
}
GROUNDS: dict[str, tuple[int, int, int]] = {"hills": (50, 150, 50), "sea": (20, 60, 150)}
SUN = (255, 240, 150)
GROUND_WORDS = {"hills": "green hills", "sea": "the sea"}
WORDS = ("a", "an", "at", "the", "on", "of", "background", "under", "sky", "with", "sun", "hills", "sea",
         *SHAPE_COLOURS, *BACKGROUNDS, *SHAPES, *POSITIONS, *SKIES)


@dataclass(frozen=True)
class Scene:
    """What a caption says: a shape scene or a landscape, with the words that define it."""

    kind: str  # shape | landscape
    colour: str = ""
    shape: str = ""
    position: str = ""
    background: str = ""
    ground: str = ""
    sky: str = ""
    sun: bool = False

    @property
    def caption(self) -> str:
        """The scene in the grammar's words."""
        if self.kind == "shape":
            article = "an" if self.colour[0] in "aeiou" else "a"
            return f"{article} {self.colour} {self.shape} at the {self.position} on a {self.background} background"
        article = "an" if self.sky[0] in "aeiou" else "a"
        return f"{GROUND_WORDS[self.ground]} under {article} {self.sky} sky" + (" with a sun" if self.sun else "")


def all_scenes() -> list[Scene]:
    """Every caption the grammar can say, in a fixed order."""
    shapes = [Scene("shape", colour=c, shape=s, position=p, background=b)
              for c, s, p, b in itertools.product(SHAPE_COLOURS, SHAPES, POSITIONS, BACKGROUNDS)]
    lands = [Scene("landscape", ground=g, sky=k, sun=sun)
             for g, k, sun in itertools.product(GROUNDS, SKIES, (True, False))]
    return shapes + lands


def _split() -> tuple[list[Scene], list[Scene]]:
    scenes = all_scenes()
    order = list(range(len(scenes)))
    random.Random(1234).shuffle(order)
    held = set(order[: len(scenes) // 10])
    return [s for i, s in enumerate(scenes) if i not in held], [s for i, s in enumerate(scenes) if i in held]


def training_scenes() -> list[Scene]:
    """The nine tenths of the grammar used for training."""
    return _split()[0]


def held_out_scenes() -> list[Scene]:
    """The tenth of the grammar never shown in training, for evaluation."""
    return _split()[1]


def parse_caption(caption: str) -> Scene:
    """The scene a caption of the grammar describes; ValueError if it is not one."""
    for scene in all_scenes():
        if scene.caption == caption.strip().lower():
            return scene
    raise ValueError(f"not a caption of the demo grammar: {caption!r}")


def caption_problem(text: str) -> str | None:
    """Why the demo model will not draw `text` well (words it never saw, or its words outside the caption
    grammar), or None for a caption of the grammar."""
    words = re.findall(r"[a-z]+", text.lower())
    unknown = list(dict.fromkeys(w for w in words if w not in WORDS))
    if unknown:
        return f"the demo model never saw {', '.join(repr(w) for w in unknown[:8])}"
    try:
        parse_caption(" ".join(words))
    except ValueError:
        return "its words, but not one of the demo model's captions"
    return None


def draw(scene: Scene, rng: random.Random, size: int = SIZE) -> Image.Image:
    """Draw `scene` with random size, jitter and terrain from `rng`."""
    scale = size / SIZE
    if scene.kind == "shape":
        image = Image.new("RGB", (size, size), BACKGROUNDS[scene.background])
        pen = ImageDraw.Draw(image)
        fx, fy = POSITIONS[scene.position]
        cx = fx * size + rng.uniform(-4, 4) * scale
        cy = fy * size + rng.uniform(-4, 4) * scale
        r = rng.uniform(8, 12) * scale
        colour = SHAPE_COLOURS[scene.colour]
        if scene.shape == "circle":
            pen.ellipse((cx - r, cy - r, cx + r, cy + r), fill=colour)
        elif scene.shape == "square":
            pen.rectangle((cx - r, cy - r, cx + r, cy + r), fill=colour)
        else:
            pen.polygon([(cx, cy - r), (cx + r, cy + r), (cx - r, cy + r)], fill=colour)
        return image
    image = Image.new("RGB", (size, size), SKIES[scene.sky])
    pen = ImageDraw.Draw(image)
    horizon = rng.uniform(0.5, 0.65) * size
    if scene.sun:
        sx, sy, sr = rng.uniform(0.2, 0.8) * size, rng.uniform(0.15, 0.3) * size, rng.uniform(5, 8) * scale
        pen.ellipse((sx - sr, sy - sr, sx + sr, sy + sr), fill=SUN)
    if scene.ground == "sea":
        pen.rectangle((0, horizon, size, size), fill=GROUNDS["sea"])
    else:
        amp, freq, phase = rng.uniform(3, 8) * scale, rng.uniform(1.0, 2.5), rng.uniform(0, 2 * math.pi)
        top = [(x, horizon - amp * math.sin(freq * 2 * math.pi * x / size + phase)) for x in range(size + 1)]
        pen.polygon([*top, (size, size), (0, size)], fill=GROUNDS["hills"])
    return image


def sample_batch(scenes: list[Scene], count: int, seed: int, size: int = SIZE) -> tuple[np.ndarray, list[str]]:
    """`count` drawn scenes as uint8 (N, H, W, 3) and their captions, deterministic from `seed`."""
    rng = random.Random(seed)
    shapes = [s for s in scenes if s.kind == "shape"]
    lands = [s for s in scenes if s.kind == "landscape"] or shapes
    images, captions = [], []
    for _ in range(count):
        # a third landscapes: there are few landscape captions, but their terrain varies a lot
        scene = rng.choice(lands if rng.random() < 1 / 3 else shapes)
        images.append(np.asarray(draw(scene, rng, size)))
        captions.append(scene.caption)
    return np.stack(images), captions
