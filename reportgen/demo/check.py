"""Does a picture match its demo caption? An automatic check from colour statistics and masks (issue 6).

Each pixel is labelled with the nearest colour of the scene's palette. A shape scene passes when the
named colour forms a blob of plausible size, the border is mostly the named background, the blob's
centroid is nearest the named position, and its fill of its bounding box says which shape it is
(triangle 1/2, circle pi/4, square 1). A landscape passes when the top rows are the named sky, the
bottom rows the named ground, and a sun-coloured blob is in the sky exactly when the caption says so.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from reportgen.demo.data import BACKGROUNDS, GROUNDS, POSITIONS, SHAPE_COLOURS, SKIES, SUN, Scene, parse_caption

# fill of the bounding box: triangle 0.5, circle 0.785, square 1.0; cut halfway between
_FILL_CUTS = (0.64, 0.9)


@dataclass(frozen=True)
class Verdict:
    """The outcome of checking one image against its caption, with the reason when it fails."""

    ok: bool
    reason: str = ""


def _labels(pixels: np.ndarray, palette: dict[str, tuple[int, int, int]]) -> tuple[np.ndarray, list[str]]:
    names = list(palette)
    colours = np.array([palette[n] for n in names], dtype=np.float32)
    distance = ((pixels[..., None, :].astype(np.float32) - colours) ** 2).sum(-1)
    return distance.argmin(-1), names


def check_image(image: object, caption: str) -> Verdict:
    """Check an RGB image (PIL or HxWx3 uint8) against a caption of the demo grammar."""
    pixels = np.asarray(image)[..., :3]
    return _check(pixels, parse_caption(caption))


def _check(pixels: np.ndarray, scene: Scene) -> Verdict:
    return _check_shape(pixels, scene) if scene.kind == "shape" else _check_landscape(pixels, scene)


def _check_shape(pixels: np.ndarray, scene: Scene) -> Verdict:
    height, width = pixels.shape[:2]
    labels, names = _labels(pixels, {**BACKGROUNDS, **SHAPE_COLOURS})
    border = np.concatenate([labels[:2].ravel(), labels[-2:].ravel(), labels[:, :2].ravel(), labels[:, -2:].ravel()])
    background = names[np.bincount(border, minlength=len(names)).argmax()]
    if background != scene.background:
        return Verdict(False, f"background is {background}")
    mask = _largest_blob(labels == names.index(scene.colour))
    area = mask.sum() / (height * width)
    if not 0.02 <= area <= 0.35:  # the drawn shapes cover 3%..14% of the image
        return Verdict(False, f"{scene.colour} covers {area:.1%}")
    ys, xs = np.nonzero(mask)
    centre = (xs.mean() / width, ys.mean() / height)
    position = min(POSITIONS, key=lambda p: (POSITIONS[p][0] - centre[0]) ** 2 + (POSITIONS[p][1] - centre[1]) ** 2)
    if position != scene.position:
        return Verdict(False, f"{scene.colour} blob is at the {position}")
    fill = mask.sum() / ((np.ptp(xs) + 1) * (np.ptp(ys) + 1))
    shape = "triangle" if fill < _FILL_CUTS[0] else "circle" if fill < _FILL_CUTS[1] else "square"
    if shape != scene.shape:
        return Verdict(False, f"blob fills {fill:.2f} of its box, a {shape}")
    return Verdict(True)


def _check_landscape(pixels: np.ndarray, scene: Scene) -> Verdict:
    height = pixels.shape[0]
    labels, names = _labels(pixels, {**SKIES, **GROUNDS, "sun": SUN})
    sky = names[np.bincount(labels[: height // 5].ravel(), minlength=len(names)).argmax()]
    if sky != scene.sky:
        return Verdict(False, f"sky is {sky}")
    ground = names[np.bincount(labels[-height // 5:].ravel(), minlength=len(names)).argmax()]
    if ground != scene.ground:
        return Verdict(False, f"ground is {ground}")
    sun = _largest_blob(labels[: height // 2] == names.index("sun")).sum()
    has_sun = sun >= 40  # a drawn sun is >= 75 pixels, so 40 allows a soft edge and rejects specks
    if has_sun != scene.sun:
        return Verdict(False, f"sun blob of {sun} pixels")
    return Verdict(True)


def _largest_blob(mask: np.ndarray) -> np.ndarray:
    """The largest 4-connected component of a boolean mask (all False when empty)."""
    from skimage.measure import label

    components = label(mask, connectivity=1)
    if components.max() == 0:
        return mask
    sizes = np.bincount(components.ravel())
    sizes[0] = 0
    return components == sizes.argmax()


def layout(image: object, caption: str) -> tuple[float, float, float]:
    """Where the caption's main element lies: (x, y, area) of the shape's blob, or of the sun, or of the
    ground for a landscape without a sun, as fractions of the image; for measuring seed diversity."""
    pixels = np.asarray(image)[..., :3]
    scene = parse_caption(caption)
    if scene.kind == "shape":
        labels, names = _labels(pixels, {**BACKGROUNDS, **SHAPE_COLOURS})
        mask = _largest_blob(labels == names.index(scene.colour))
    else:
        labels, names = _labels(pixels, {**SKIES, **GROUNDS, "sun": SUN})
        mask = _largest_blob(labels == names.index("sun" if scene.sun else scene.ground))
    if not mask.any():
        return (float("nan"),) * 3
    ys, xs = np.nonzero(mask)
    height, width = mask.shape
    return float(xs.mean() / width), float(ys.mean() / height), float(mask.mean())


def evaluate(pipe: Any, captions: list[str], seeds: list[int], steps: int = 50, sampler: str = "k_euler",
             guidance: float = 7.5) -> list[tuple[str, int, Verdict, object]]:
    """Draw every caption at every seed with `sampler` and check each: (caption, seed, verdict, image)."""
    import torch

    from reportgen.samplers import get_sampler

    pipe.scheduler = get_sampler(sampler).make_scheduler(dict(pipe.scheduler.config))
    results = []
    for seed in seeds:
        generator = torch.Generator("cpu").manual_seed(seed)
        images = pipe(captions, num_inference_steps=steps, guidance_scale=guidance, generator=generator,
                      height=64, width=64).images
        results += [(c, seed, check_image(im, c), im) for c, im in zip(captions, images, strict=True)]
    return results
