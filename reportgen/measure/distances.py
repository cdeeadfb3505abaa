"""The two convergence distances between cells, and their cache in `STORE/metrics/`.

- latent: RMS of the difference of final latents, divided by the target's RMS (0 = identical);
- ssim: 1 - SSIM of the decoded RGB images (scikit-image's structural_similarity).
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from reportgen.errors import StoreError
from reportgen.render.store import Store, StoredCell, atomic_write

# Bump when a distance's definition or the file's format changes: old cached values are then ignored.
# 2: each pair names the digests of the latents and pixels it was computed from (issue 21).
METRICS_VERSION = 2

METRICS = ("latent", "ssim")
# About how far apart two unrelated images are on each metric: the scale every distance is read against.
UNRELATED = {"latent": 2**0.5, "ssim": 1.0}


def scale(value: float | None, metric: str) -> str:
    """A distance's size in words, against two unrelated images' distance on the same metric."""
    if value is None:
        return ""
    share = value / UNRELATED[metric]
    if share < 0.005:
        return "the same image, to the eye"
    if share >= 0.9:
        return "as far as two unrelated images"
    return f"{share:.0%} of the way to an unrelated image"


def latent_distance(latents: np.ndarray, target: np.ndarray) -> float:
    """RMS of the difference, relative to the target's RMS: 0 for identical latents, ~1.4 for independent ones."""
    if latents.shape != target.shape:
        raise StoreError(f"latents of shape {latents.shape} cannot be compared with {target.shape}")
    scale = float(np.sqrt(np.mean(np.square(target, dtype=np.float64))))
    diff = float(np.sqrt(np.mean(np.square(latents.astype(np.float64) - target))))
    return diff / scale if scale > 0 else (0.0 if diff == 0 else math.inf)



def ssim_distance(image: np.ndarray, target: np.ndarray) -> float:
    """1 - SSIM of two RGB uint8 images (scikit-image, Gaussian-free 7x7 windows, or smaller if tiny)."""
    from skimage.metrics import structural_similarity

    if image.shape != target.shape:
        raise StoreError(f"images of shape {image.shape} cannot be compared with {target.shape}")
    side = min(image.shape[:2])
    window = min(7, side if side % 2 else side - 1)
    return float(1.0 - structural_similarity(image, target, channel_axis=2, data_range=255, win_size=window))



class DistanceCache:
    """Distances per (cell key, target key), one JSON file per cell under STORE/metrics/.

    Each cached pair names the digests of the two cells' latents and pixels it was computed from; a pair
    whose digests are not the cells' own now, or whose values are not finite numbers, is never used: it is
    computed again, and counted in `stale` (another cell's or an older render's files) or `invalid` (not
    numbers), so the command can say so."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.files: dict[str, dict[str, dict[str, Any]]] = {}
        self.dirty: set[str] = set()
        self.arrays: dict[tuple[str, str], np.ndarray] = {}
        self.computed = 0
        self.hits = 0
        self.stale = 0
        self.invalid = 0

    def path(self, key: str) -> Path:
        return self.store.metrics_path(key)

    def distances(self, cell: StoredCell, target: StoredCell) -> dict[str, float]:
        """Both distances from `cell` to `target`, from the cache or computed (and remembered)."""
        if cell.key == target.key:
            return {"latent": 0.0, "ssim": 0.0}
        pairs = self.files.get(cell.key)
        if pairs is None:
            pairs = self.files[cell.key] = self._read(cell.key)
        found = pairs.get(target.key)
        if found is not None:
            problem = entry_problem(found, cell, target)
            if problem is None:
                self.hits += 1
                return {m: float(found[m]) for m in METRICS}
            if problem == "stale":
                self.stale += 1
            else:
                self.invalid += 1
        value = self.compute(cell, target)
        pairs[target.key] = entry(value, cell, target)
        self.dirty.add(cell.key)
        return value

    def redone(self) -> tuple[str, ...]:
        """One line per kind of cached distance that was not used but computed again."""
        return tuple(f"{_count(n, 'cached distance')} {why}, computed again" for n, why in (
            (self.stale, "computed from other latents or pixels than the cells' own"),
            (self.invalid, "damaged (not numbers, or not matching their checksum)")) if n)

    def compute(self, cell: StoredCell, target: StoredCell) -> dict[str, float]:
        """Both distances, computed from the cells' verified files."""
        self.computed += 1
        return {"latent": latent_distance(self._array(cell, "latent"), self._array(target, "latent")),
                "ssim": ssim_distance(self._array(cell, "ssim"), self._array(target, "ssim"))}

    def save(self) -> str | None:
        """Write back every cell file that gained distances; if that fails, say why (a cache is optional: a
        read-only store can still be analysed and published)."""
        try:
            for key in sorted(self.dirty):
                body = {"version": METRICS_VERSION, "targets": self.files[key]}
                atomic_write(self.path(key), json.dumps(body, sort_keys=True).encode())
        except StoreError as exc:
            return str(exc)
        finally:
            self.dirty.clear()
        return None

    def _read(self, key: str) -> dict[str, dict[str, Any]]:
        """The cell's cached pairs; {} if none, if of another METRICS_VERSION, or if the file does not fit its
        schema (reportgen/schemas.py: a note says so, and the next save writes it again). A pair that does not
        fit DistanceEntry is kept as {}, so that it is counted as damaged when it is asked for."""
        from reportgen.schemas import DistanceFile, load_cache

        body = load_cache(self.path(key), DistanceFile, "the distances cache")
        if body is None or body.version != METRICS_VERSION:
            return {}
        return entries(body.targets)

    def _array(self, cell: StoredCell, kind: str) -> np.ndarray:
        if (cell.key, kind) not in self.arrays:
            read = self.store.read_latents if kind == "latent" else self.store.read_pixels
            self.arrays[(cell.key, kind)] = read(cell)
        return self.arrays[(cell.key, kind)]


def entry(value: dict[str, float], cell: StoredCell, target: StoredCell) -> dict[str, Any]:
    """A cache entry: the distances, the digests of the files they were computed from, and its own checksum."""
    body = {**value, "latents_sha256": [cell.latents_sha256, target.latents_sha256],
            "pixels_sha256": [cell.pixels_sha256, target.pixels_sha256]}
    return {**body, "sha256": _checksum(body, cell.key, target.key)}


def entry_problem(found: Any, cell: StoredCell, target: StoredCell) -> str | None:
    """None if a cached entry may be used for (cell, target); "invalid" if it is not finite numbers or its
    checksum does not match (a value changed by hand or by a fault); "stale" if it was computed from other
    files than the cells' own now."""
    if not isinstance(found, dict) or not all(_distance(found.get(m)) for m in METRICS):
        return "invalid"  # also a pair that did not fit the schema, kept as {}
    body = {k: v for k, v in found.items() if k != "sha256"}
    if found.get("sha256") != _checksum(body, cell.key, target.key):
        return "invalid"
    if found.get("latents_sha256") != [cell.latents_sha256, target.latents_sha256] or \
            found.get("pixels_sha256") != [cell.pixels_sha256, target.pixels_sha256]:
        return "stale"
    return None


def _checksum(body: dict[str, Any], key: str, target: str) -> str:
    """SHA-256 over an entry and the pair it belongs to, so a changed number or a moved entry is seen."""
    return hashlib.sha256(json.dumps([key, target, body], sort_keys=True).encode()).hexdigest()


def read_metrics(path: Path) -> dict[str, dict[str, Any]] | str | None:
    """A distances file's pairs (see `entries`); None if there is none or it is of another METRICS_VERSION; a
    phrase saying why if it cannot be read or does not fit its schema (for `reportgen verify`)."""
    from reportgen.schemas import DistanceFile, FileProblem, read_json, validate

    try:
        body = validate(DistanceFile, read_json(path))
    except FileNotFoundError:
        return None
    except FileProblem as exc:
        return str(exc)
    return entries(body.targets) if body.version == METRICS_VERSION else None


def entries(targets: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Each target's pair as a plain dict if it fits the schema's DistanceEntry, else {} (never used:
    `entry_problem` calls it invalid)."""
    from reportgen.schemas import DistanceEntry, FileProblem, validate

    out: dict[str, dict[str, Any]] = {}
    for target, found in targets.items():
        try:
            out[target] = validate(DistanceEntry, found).model_dump()
        except FileProblem:
            out[target] = {}
    return out


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _distance(value: Any) -> bool:
    """A finite, non-negative number (JSON's NaN, Infinity, strings, booleans and null are not)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value >= 0
