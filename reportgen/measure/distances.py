"""The two convergence distances between cells, and their cache in `STORE/metrics/`.

- latent: RMS of the difference of final latents, divided by the target's RMS (0 = identical);
- ssim: 1 - SSIM of the decoded RGB images (scikit-image's structural_similarity).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from reportgen.errors import StoreError
from reportgen.render.store import Store, StoredCell, atomic_write

METRICS_VERSION = 1  # bump when a distance's definition changes: old cached values are then ignored



METRICS = ("latent", "ssim")
# About how far apart two unrelated images are on each metric: the scale every distance is read against.
UNRELATED = {"latent": 2**0.5, "ssim": 1.0}



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
    """Distances per (cell key, target key), one JSON file per cell under STORE/metrics/."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.files: dict[str, dict[str, dict[str, float]]] = {}
        self.dirty: set[str] = set()
        self.arrays: dict[tuple[str, str], np.ndarray] = {}
        self.computed = 0
        self.hits = 0

    def path(self, key: str) -> Path:
        return self.store.root / "metrics" / key[:2] / f"{key}.json"

    def distances(self, cell: StoredCell, target: StoredCell) -> dict[str, float]:
        """Both distances from `cell` to `target`, from the cache or computed (and remembered)."""
        if cell.key == target.key:
            return {"latent": 0.0, "ssim": 0.0}
        pairs = self.files.get(cell.key)
        if pairs is None:
            pairs = self.files[cell.key] = self._read(cell.key)
        found = pairs.get(target.key)
        if found is not None and set(found) >= set(METRICS):
            self.hits += 1
            return found
        value = {"latent": latent_distance(self._array(cell, "latent"), self._array(target, "latent")),
                 "ssim": ssim_distance(self._array(cell, "ssim"), self._array(target, "ssim"))}
        pairs[target.key] = value
        self.dirty.add(cell.key)
        self.computed += 1
        return value

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

    def _read(self, key: str) -> dict[str, dict[str, float]]:
        """The cell's cached distances; {} if none, if of another METRICS_VERSION, or if the file does not fit
        its schema (reportgen/schemas.py: a note says so, and the next save writes it again)."""
        from reportgen.schemas import DistanceFile, load_cache

        body = load_cache(self.path(key), DistanceFile, "the distances cache")
        if body is None or body.version != METRICS_VERSION:
            return {}
        return {target: dict(values) for target, values in body.targets.items()}

    def _array(self, cell: StoredCell, kind: str) -> np.ndarray:
        if (cell.key, kind) not in self.arrays:
            if kind == "latent":
                self.arrays[(cell.key, kind)] = np.load(cell.latents, allow_pickle=False)
            else:
                from PIL import Image

                with Image.open(cell.image) as image:
                    self.arrays[(cell.key, kind)] = np.asarray(image.convert("RGB"))
        return self.arrays[(cell.key, kind)]
