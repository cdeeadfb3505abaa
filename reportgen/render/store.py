"""The content-addressed image store: one PNG (and its final latents) per cell, named by the cell's key.

Layout under the store root:

    images/ab/<key>.png       the image; its text chunks hold `parameters` and reportgen's JSON record
    latents/ab/<key>.npy      the final latents (float32), for latent-space distances
    lock                      held by the one render that may write at a time

Every write goes to a temporary file in the same folder, is flushed to disk, then renamed into place,
so a render killed at any moment leaves either the whole file or none. The PNG is written last: a cell
counts as stored only when its image reads back whole, its record names its key and its latents file is a
whole float32 array (anything else is rendered again).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import json
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, PngImagePlugin

from reportgen.errors import StoreError

RECORD_CHUNK = "reportgen"
PARAMETERS_CHUNK = "parameters"


@dataclass(frozen=True)
class StoredCell:
    """A cell read back from the store: its image path, latents path and record."""

    key: str
    image: Path
    latents: Path
    record: dict[str, Any]


class Store:
    """A folder of rendered cells addressed by key."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)

    def image_path(self, key: str) -> Path:
        """Where the cell's PNG lives."""
        return self.root / "images" / key[:2] / f"{key}.png"

    def latents_path(self, key: str) -> Path:
        """Where the cell's final latents live."""
        return self.root / "latents" / key[:2] / f"{key}.npy"

    def get(self, key: str) -> StoredCell | None:
        """The stored cell, or None if it is missing, truncated, corrupt or not this key's."""
        path = self.image_path(key)
        if not path.is_file():
            return None
        record = read_record(path)
        if record is None or record.get("key") != key:
            return None
        latents = self.latents_path(key)
        if not latents_whole(latents):
            return None
        return StoredCell(key, path, latents, record)

    def has(self, key: str) -> bool:
        """Whether the cell is stored whole."""
        return self.get(key) is not None

    def put(self, key: str, image: Image.Image, latents: np.ndarray, record: dict[str, Any], parameters: str) -> Path:
        """Store a cell atomically: latents first, then the PNG that makes it count."""
        npy = io.BytesIO()
        np.save(npy, np.asarray(latents, dtype=np.float32))
        atomic_write(self.latents_path(key), npy.getvalue())
        try:
            return atomic_write(self.image_path(key), encode_png(image, parameters, {**record, "key": key}))
        except StoreError:
            self.latents_path(key).unlink(missing_ok=True)  # no latents without their image
            raise

    def cells(self) -> Iterator[StoredCell]:
        """Every whole cell in the store."""
        for path in sorted((self.root / "images").glob("*/*.png")):
            cell = self.get(path.stem)
            if cell is not None:
                yield cell

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Hold the store's lock for a render; refuse at once if another render holds it."""
        from filelock import FileLock, Timeout

        created = not self.root.exists()
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot create store {self.root}: {exc.strerror or exc}") from None
        lock = FileLock(str(self.root / "lock"), timeout=0)
        try:
            lock.acquire()
        except Timeout:
            raise StoreError(f"store {self.root} is in use by another render; wait for it to finish") from None
        except OSError as exc:
            self._remove_if_new(created)
            raise StoreError(f"cannot lock store {self.root}: {exc.strerror or exc}") from None
        try:
            yield
        except BaseException:
            lock.release()
            self._remove_if_new(created)  # a render that failed before its first cell leaves nothing behind
            raise
        else:
            lock.release()

    def _remove_if_new(self, created: bool) -> None:
        if created and {p.name for p in self.root.iterdir()} <= {"lock"}:
            with contextlib.suppress(OSError):
                (self.root / "lock").unlink(missing_ok=True)
                self.root.rmdir()

    def clean_temporary(self) -> int:
        """Remove temporary files an interrupted write left behind; return how many."""
        count = 0
        for path in self.root.glob("*/*/*.tmp"):
            path.unlink(missing_ok=True)
            count += 1
        return count


def read_record(path: Path) -> dict[str, Any] | None:
    """The JSON record of a stored PNG if the file decodes whole and its pixels match; else None."""
    try:
        with Image.open(path) as image:
            image.load()
            raw = image.info.get(RECORD_CHUNK)
            if raw is None:
                return None
            record = json.loads(raw)
            if record.get("pixels_sha256") != pixels_sha256(image):
                return None
    except (OSError, ValueError, SyntaxError, RecursionError, Image.DecompressionBombError):
        return None  # RecursionError: a record of deeply nested JSON is not one reportgen wrote
    return record if isinstance(record, dict) else None


def latents_whole(path: Path) -> bool:
    """Whether `path` is a whole C-ordered float32 .npy file; reads only its header, not the array."""
    try:
        with open(path, "rb") as handle:
            version = np.lib.format.read_magic(handle)
            read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                           else np.lib.format.read_array_header_2_0)
            shape, fortran_order, dtype = read_header(handle)
            size = os.fstat(handle.fileno()).st_size
            return (dtype == np.dtype(np.float32) and not fortran_order
                    and size == handle.tell() + math.prod(shape) * 4)
    except Exception:  # numpy raises many types for a bad header; each means "not whole"
        return False


def encode_png(image: Image.Image, parameters: str, record: dict[str, Any] | None = None) -> bytes:
    """PNG bytes with the `parameters` text chunk and, if given, reportgen's record (plus a pixel digest)."""
    info = PngImagePlugin.PngInfo()
    info.add_text(PARAMETERS_CHUNK, parameters)
    if record is not None:
        info.add_text(RECORD_CHUNK, json.dumps({**record, "pixels_sha256": pixels_sha256(image)}, sort_keys=True))
    png = io.BytesIO()
    image.save(png, format="PNG", pnginfo=info)
    return png.getvalue()


def pixels_sha256(image: Image.Image) -> str:
    """SHA-256 of the decoded RGB pixels: identical images have identical digests."""
    return hashlib.sha256(image.convert("RGB").tobytes()).hexdigest()


def atomic_write(path: Path, data: bytes) -> Path:
    """Write `data` to a temporary file beside `path`, flush it to disk, then rename it into place."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        reason = "disk full" if exc.errno == errno.ENOSPC else (exc.strerror or str(exc))
        raise StoreError(f"cannot write {path}: {reason}") from None
    return path
