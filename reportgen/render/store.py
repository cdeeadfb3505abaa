"""The content-addressed image store: one PNG (and its final latents) per cell, named by the cell's key.

Layout under the store root:

    images/ab/<key>.png       the image; its text chunks hold `parameters` and reportgen's JSON record
    latents/ab/<key>.npy      the final latents (float32), for latent-space distances
    metrics/ab/<key>.json     cached distances (reportgen/measure/distances.py)
    site-digests.json         digests of files the site derives from cells (thumbnails, grids, plots)
    damaged/                  what `verify --repair` or a render moved out of a cell's way, never deleted
    lock                      held by the one render that may write at a time

Every write goes to a temporary file in the same folder, named by the writing host and process
(`.<name>.<host>.<pid>.<random>.tmp`, so writers on many machines never share one), is flushed to disk,
then renamed into place, so a writer killed at any moment leaves either the whole file or none. The PNG
is written last, and its record carries the digests of its own pixels (`pixels_sha256`) and of its
latents file (`latents_sha256`): a cell counts as stored only when its image decodes whole, its record
names its key and both digests match (anything else is damaged, and rendered again).
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import hashlib
import io
import json
import math
import os
import re
import secrets
import socket
import stat
import struct
import time
import zlib
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, PngImagePlugin

from reportgen.errors import StoreError

RECORD_CHUNK = "reportgen"
PARAMETERS_CHUNK = "parameters"
DAMAGED = "damaged"
SITE_DIGESTS = "site-digests.json"
# A temporary file is another live writer's while it is younger than this, unless its name says it is this
# host's and its process is gone. One file is written in well under a second; an hour allows for slow NFS.
TEMP_MAX_AGE = 3600.0

# Damage kinds, as the commands name them: "2 cells with damaged latents rendered again".
DAMAGE = {
    "image": "with damaged images",
    "record": "with damaged records",
    "latents": "with damaged latents",
    "obstacle": "blocked by a folder or another kind of file in the place of their files",
    "unverified": "stored without a latents digest by an older reportgen",
}


@dataclass(frozen=True)
class StoredCell:
    """A cell read back from the store and checked: its files, its record and the digests they matched."""

    key: str
    image: Path
    latents: Path
    record: dict[str, Any]
    image_sha256: str = ""  # of the PNG file's bytes, as read
    pixels_sha256: str = ""  # of the decoded RGB pixels, equal to the record's
    latents_sha256: str = ""  # of the .npy file's bytes, equal to the record's (if it names one)
    verified: bool = True  # False: an older record without `latents_sha256`; its latents were only checked whole


@dataclass(frozen=True)
class Inspection:
    """What the store holds for one key: the cell if whole, else None and why (`problem` None: not stored)."""

    cell: StoredCell | None
    problem: str | None = None  # a DAMAGE kind
    why: str = ""
    obstacle: Path | None = None  # the folder or wrong-kind file in the cell's way


class Store:
    """A folder of rendered cells addressed by key; every read is checked against the cell's record.

    `damaged` collects, per key, the kind of damage this object's reads found, so a command can say in one
    line per kind what it found and redid. Inspections are remembered while the files' stat is unchanged,
    so planning and measuring one study read each file once."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)
        self.damaged: dict[str, str] = {}
        self._seen: dict[str, tuple[Any, Inspection]] = {}

    def image_path(self, key: str) -> Path:
        """Where the cell's PNG lives."""
        return self.root / "images" / key[:2] / f"{key}.png"

    def latents_path(self, key: str) -> Path:
        """Where the cell's final latents live."""
        return self.root / "latents" / key[:2] / f"{key}.npy"

    def metrics_path(self, key: str) -> Path:
        """Where the cell's cached distances live."""
        return self.root / "metrics" / key[:2] / f"{key}.json"

    def get(self, key: str) -> StoredCell | None:
        """The stored cell, or None if it is missing or damaged (then `damaged` names the kind)."""
        found = self.inspect(key)
        if found.problem is not None:
            self.damaged[key] = found.problem
        return found.cell

    def has(self, key: str) -> bool:
        """Whether the cell is stored whole."""
        return self.get(key) is not None

    def inspect(self, key: str) -> Inspection:
        """Check the cell's PNG, record and latents against each other: one read of each file."""
        png, npy = self.image_path(key), self.latents_path(key)
        signature = (_signature(png), _signature(npy))
        seen = self._seen.get(key)
        if seen is not None and seen[0] == signature:
            return seen[1]
        found = self._inspect(key, png, npy)
        self._seen[key] = (signature, found)
        return found

    def _inspect(self, key: str, png: Path, npy: Path) -> Inspection:
        for path in (png, npy):
            blocker = self.obstacle(path)
            if blocker is not None:
                what = "a folder" if blocker.is_dir() else "not a regular file"
                return Inspection(None, "obstacle", f"{self._rel(blocker)} is {what}", blocker)
        try:
            data = _read(png)
        except FileNotFoundError:
            return Inspection(None)
        except OSError as exc:
            return Inspection(None, "image", f"cannot read {self._rel(png)}: {exc.strerror or exc}")
        record, pixels, why = decode_cell_png(data)
        if record is None:
            return Inspection(None, "record" if why.startswith("record") else "image", f"{self._rel(png)}: {why}")
        if record.get("key") != key:
            return Inspection(None, "record", f"{self._rel(png)}: its record names another key")
        try:
            latents = _read(npy)
        except OSError as exc:
            missing = isinstance(exc, FileNotFoundError)
            return Inspection(None, "latents", f"{self._rel(npy)}: " + ("missing" if missing else
                                                                         f"cannot read: {exc.strerror or exc}"))
        digest = hashlib.sha256(latents).hexdigest()
        cell = StoredCell(key, png, npy, record, hashlib.sha256(data).hexdigest(), pixels, digest)
        expected = record.get("latents_sha256")
        if expected is None:  # written before records named their latents: check what can be checked
            problem = npy_problem(latents)
            if problem is not None:
                return Inspection(None, "latents", f"{self._rel(npy)}: {problem}")
            return Inspection(dataclasses.replace(cell, verified=False), "unverified",
                              f"{self._rel(png)}: its record names no latents digest")
        if expected != digest:
            return Inspection(None, "latents", f"{self._rel(npy)}: does not match the digest its record names")
        return Inspection(cell)

    def read_latents(self, cell: StoredCell) -> np.ndarray:
        """The cell's latents, read again and checked against the digest they had when the cell was read."""
        data = _read(cell.latents)
        if hashlib.sha256(data).hexdigest() != cell.latents_sha256:
            self.damaged[cell.key] = "latents"
            raise StoreError(f"{cell.latents} changed after it was checked; run the command again")
        return np.load(io.BytesIO(data), allow_pickle=False)

    def read_pixels(self, cell: StoredCell) -> np.ndarray:
        """The cell's RGB pixels, decoded and checked against its record's pixel digest."""
        with Image.open(io.BytesIO(_read(cell.image))) as image:
            rgb = image.convert("RGB")
        if pixels_sha256(rgb) != cell.pixels_sha256:
            self.damaged[cell.key] = "image"
            raise StoreError(f"{cell.image} changed after it was checked; run the command again")
        return np.asarray(rgb)

    def put(self, key: str, image: Image.Image, latents: np.ndarray, record: dict[str, Any], parameters: str) -> Path:
        """Store a cell atomically: latents first, then the PNG whose record names both digests."""
        npy = io.BytesIO()
        np.save(npy, np.asarray(latents, dtype=np.float32))
        data = npy.getvalue()
        png, latents_path = self.image_path(key), self.latents_path(key)
        for path in (latents_path, png):
            blocker = self.obstacle(path)
            if blocker is not None:
                self.move_aside(blocker)
        self._seen.pop(key, None)
        if self.inspect(key).problem is None and self.inspect(key).cell is not None:
            return png  # another writer (a render beside this one) finished it, verified: keep theirs
        digest = hashlib.sha256(data).hexdigest()
        atomic_write(latents_path, data)
        record = {**record, "key": key, "latents_sha256": digest}
        try:
            if atomic_create(png, encode_png(image, parameters, record)):
                return png
        except StoreError:
            latents_path.unlink(missing_ok=True)  # no latents without their image
            raise
        # Another writer finished the cell while we wrote it. Its PNG stands unless our latents replaced its
        # own (same digest: the same bits, so nothing is lost); then ours, which match the latents, replace it.
        self._seen.pop(key, None)
        found = self.inspect(key)
        if found.cell is None or found.problem is not None or found.cell.record.get("latents_sha256") != digest:
            atomic_write(png, encode_png(image, parameters, record))
        return png

    def cells(self) -> Iterator[StoredCell]:
        """Every whole cell in the store."""
        for path in sorted((self.root / "images").glob("*/*.png")):
            cell = self.get(path.stem)
            if cell is not None:
                yield cell

    def obstacle(self, path: Path) -> Path | None:
        """The folder or wrong-kind file (a folder, a pipe, a dangling link) standing where `path` or one of
        its folders inside the store should be; None if the way is clear."""
        parts = path.relative_to(self.root).parts
        current = self.root
        for depth, part in enumerate(parts):
            current = current / part
            try:
                mode = os.stat(current).st_mode
            except FileNotFoundError:
                return current if os.path.lexists(current) else None  # a dangling link blocks; nothing there is clear
            except OSError:
                return current
            last = depth == len(parts) - 1
            if (last and not stat.S_ISREG(mode)) or (not last and not stat.S_ISDIR(mode)):
                return current
        return None

    def move_aside(self, path: Path) -> Path:
        """Move `path` (inside the store) into STORE/damaged/, keeping its place in the store's layout."""
        target = self.root / DAMAGED / f"{time.strftime('%Y%m%dT%H%M%S')}-{_HOST}-{os.getpid()}" / self._rel(path)
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            while os.path.lexists(target):
                target = target.with_name(target.name + "~")
            os.rename(path, target)
        except OSError as exc:
            raise StoreError(f"cannot move {path} out of the way into {self.root / DAMAGED}: "
                             f"{exc.strerror or exc}") from None
        return target

    @contextlib.contextmanager
    def lock(self, shard: str | None = None) -> Iterator[None]:
        """Hold the store's lock for a render, or for one shard's render ("2/4"): refuse at once if another
        render holds the same one. Renders of different shards write one store at once (render/shards.py)."""
        from filelock import FileLock, Timeout

        created = not self.root.exists()
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot create store {self.root}: {exc.strerror or exc}") from None
        name = "lock" if shard is None else f"lock-shard-{shard.replace('/', '-of-')}"
        lock = FileLock(str(self.root / name), timeout=0)
        try:
            lock.acquire()
        except Timeout:
            which = "another render" if shard is None else f"another render of shard {shard}"
            raise StoreError(f"store {self.root} is in use by {which}; wait for it to finish") from None
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
        """Remove the store this process created, if it holds no file but the lock (only empty folders)."""
        if not created:
            return
        folders: list[Path] = []
        for top, dirs, files in os.walk(self.root):
            if any(not (Path(top) == self.root and name.startswith("lock")) for name in files):
                return
            folders.extend(Path(top) / d for d in dirs)
        with contextlib.suppress(OSError):
            for lock in self.root.glob("lock*"):
                lock.unlink(missing_ok=True)
            for folder in sorted(folders, key=lambda p: len(p.parts), reverse=True):
                folder.rmdir()
            self.root.rmdir()

    def temporaries(self) -> list[tuple[Path, bool]]:
        """Every temporary file in the store, with whether it is stale (its writer is gone) or may be live."""
        found = [*self.root.glob(".*.tmp"), *self.root.glob("*/*/.*.tmp")]
        return [(path, temporary_stale(path)) for path in sorted(found) if path.parts[-3:-2] != (DAMAGED,)]

    def clean_temporary(self) -> int:
        """Remove the temporary files that writers now gone left behind; return how many."""
        count = 0
        for path, stale in self.temporaries():
            if stale:
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
                    count += 1
        return count

    def _rel(self, path: Path) -> Path:
        return path.relative_to(self.root)


def damage_lines(damaged: Mapping[str, str], done: str, keys: set[str] | None = None) -> list[str]:
    """One line per kind of damage: '2 cells with damaged latents rendered again' (`done` the last words; only
    the cells in `keys`, if given, which a render has written: an obstacle was then moved into STORE/damaged/)."""
    counts = Counter(kind for key, kind in damaged.items() if keys is None or key in keys)
    moved = f" ({DAMAGED}/ holds what was in the way)" if keys is not None else ""
    return [f"{n} cell{'s' if n != 1 else ''} {DAMAGE[kind]} {done}{moved if kind == 'obstacle' else ''}"
            for kind, n in sorted(counts.items())]


def read_record(path: Path) -> dict[str, Any] | None:
    """The JSON record of a stored PNG if the file decodes whole and its pixels match; else None."""
    try:
        return decode_cell_png(_read(path))[0]
    except OSError:
        return None


def decode_cell_png(data: bytes) -> tuple[dict[str, Any] | None, str, str]:
    """(record, pixel digest, "") of a whole PNG whose image matches its record, else (None, "", why).

    A record that names `image_data_sha256` is checked without decoding: the digest of the chunks that decide
    the pixels (IHDR, PLTE, tRNS, IDAT) is compared, and the pixels they decode to are the ones the writer
    digested as `pixels_sha256`. An older record is checked by decoding the pixels."""
    chunks = png_chunks(data)
    if chunks is None:
        return None, "", "does not decode (truncated, or not a PNG)"
    raw = next((data[a:b].split(b"\0", 1)[1].decode("latin-1") for kind, a, b in chunks
                if kind == b"tEXt" and data[a:b].startswith(RECORD_CHUNK.encode() + b"\0")), None)
    if raw is None:
        return _decode_slowly(data)  # a record in another kind of text chunk, or none: Pillow reads it
    record, why = _record(raw)
    if record is None:
        return None, "", why
    if "image_data_sha256" not in record:
        return _decode_slowly(data)
    if record["image_data_sha256"] != image_data_sha256(data, chunks) or not isinstance(record.get("pixels_sha256"),
                                                                                       str):
        return None, "", "its image data does not match the digest its record names"
    return record, record["pixels_sha256"], ""


def _decode_slowly(data: bytes) -> tuple[dict[str, Any] | None, str, str]:
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            raw = image.info.get(RECORD_CHUNK)
            digest = pixels_sha256(image)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        return None, "", f"does not decode ({exc})"
    if raw is None:
        return None, "", "record missing"
    record, why = _record(raw)
    if record is None:
        return None, "", why
    if record.get("pixels_sha256") != digest:
        return None, "", "its image data does not match the digest its record names"
    return record, digest, ""


def _record(raw: str) -> tuple[dict[str, Any] | None, str]:
    try:
        record = json.loads(raw)
    except ValueError:
        return None, "record is not JSON (truncated?)"
    except RecursionError:  # deeply nested JSON: not a record reportgen wrote
        return None, "record is nested too deeply"
    if not isinstance(record, dict):
        return None, f"record is not an object (a {type(record).__name__})"
    return record, ""


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_IMAGE_CHUNKS = (b"IHDR", b"PLTE", b"tRNS", b"IDAT")  # what decides the decoded pixels


def png_chunks(data: bytes) -> list[tuple[bytes, int, int]] | None:
    """(type, start, end) of each chunk's data in a PNG that runs whole to its IEND chunk, else None."""
    if not data.startswith(_PNG_SIGNATURE):
        return None
    chunks, position = [], len(_PNG_SIGNATURE)
    while position + 12 <= len(data):
        length, kind = struct.unpack(">I4s", data[position:position + 8])
        end = position + 8 + length
        if end + 4 > len(data):
            return None
        chunks.append((kind, position + 8, end))
        position = end + 4
        if kind == b"IEND":
            return chunks
    return None


def image_data_sha256(data: bytes, chunks: list[tuple[bytes, int, int]]) -> str:
    """SHA-256 over the PNG's chunks that decide its pixels, in order (not its text chunks)."""
    digest = hashlib.sha256()
    for kind, start, end in chunks:
        if kind in _IMAGE_CHUNKS:
            digest.update(kind)
            digest.update(memoryview(data)[start:end])
    return digest.hexdigest()


def npy_problem(data: bytes) -> str | None:
    """Why `data` is not exactly one whole, finite, C-ordered float32 .npy array (no byte more), or None."""
    handle = io.BytesIO(data)
    try:
        version = np.lib.format.read_magic(handle)
        read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                       else np.lib.format.read_array_header_2_0)
        shape, fortran_order, dtype = read_header(handle)
    except Exception as exc:  # numpy raises many types for a bad header; each means "not whole"
        return f"not a whole .npy array ({type(exc).__name__})"
    if dtype != np.dtype(np.float32) or fortran_order:
        return "not a C-ordered float32 array"
    if len(data) != handle.tell() + math.prod(shape) * 4:
        return "not a whole .npy array (its size does not match its header)"
    if not np.isfinite(np.frombuffer(data, np.float32, offset=handle.tell())).all():
        return "holds NaN or infinite values"
    return None


def encode_png(image: Image.Image, parameters: str, record: dict[str, Any] | None = None) -> bytes:
    """PNG bytes with the `parameters` text chunk and, if given, reportgen's record with the digests of the
    pixels and of the image data (spliced in before the first IDAT chunk, where Pillow and other tools read
    text: the image is encoded once)."""
    info = PngImagePlugin.PngInfo()
    info.add_text(PARAMETERS_CHUNK, parameters)
    png = io.BytesIO()
    image.save(png, format="PNG", pnginfo=info)
    data = png.getvalue()
    if record is None:
        return data
    chunks = png_chunks(data)
    assert chunks is not None  # Pillow wrote it whole
    record = {**record, "pixels_sha256": pixels_sha256(image), "image_data_sha256": image_data_sha256(data, chunks)}
    text = RECORD_CHUNK.encode() + b"\0" + json.dumps(record, sort_keys=True).encode("ascii")
    chunk = struct.pack(">I4s", len(text), b"tEXt") + text + struct.pack(">I", zlib.crc32(b"tEXt" + text))
    first_idat = next(start - 8 for kind, start, _ in chunks if kind == b"IDAT")
    return data[:first_idat] + chunk + data[first_idat:]


def pixels_sha256(image: Image.Image) -> str:
    """SHA-256 of the decoded RGB pixels: identical images have identical digests."""
    rgb = image if image.mode == "RGB" else image.convert("RGB")  # a stored PNG is RGB: no copy to make
    return hashlib.sha256(rgb.tobytes()).hexdigest()


_HOST = re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname())[:64] or "host"


def temporary_name(path: Path) -> Path:
    """A temporary file beside `path` that no other writer, on this host or another, can pick."""
    return path.with_name(f".{path.name}.{_HOST}.{os.getpid()}.{secrets.token_hex(4)}.tmp")


def temporary_stale(path: Path, now: float | None = None) -> bool:
    """Whether a temporary file's writer is gone: older than TEMP_MAX_AGE, or this host's and its process dead.

    Files of live local processes, of other hosts (unless old) and of this process are left alone."""
    try:
        age = (time.time() if now is None else now) - os.lstat(path).st_mtime
    except FileNotFoundError:
        return False
    if age > TEMP_MAX_AGE:
        return True
    parts = path.name[1:-len(".tmp")].rsplit(".", 3)
    if len(parts) == 4 and parts[2].isdigit() and re.fullmatch(r"[0-9a-f]{8}", parts[3]):
        host, pid = parts[1], int(parts[2])
    else:  # `.<name>.<pid>.tmp`, from a reportgen that had one writer per store: its host is unknown
        return False
    return host == _HOST and pid != os.getpid() and not _alive(pid)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's live process
    return True


def _signature(path: Path) -> tuple[int, int, int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns


def _read(path: Path) -> bytes:
    """A regular file's bytes (never opens a pipe or device, which could block)."""
    with open(path, "rb", opener=lambda name, flags: os.open(name, flags | os.O_NONBLOCK)) as handle:
        if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
            raise IsADirectoryError(errno.EISDIR, "not a regular file")
        return handle.read()


def _write_synced(tmp: Path, data: bytes) -> None:
    """Write `data` to the temporary file `tmp` (its folder made if need be) and flush it to disk."""
    tmp.parent.mkdir(parents=True, exist_ok=True)
    with open(tmp, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def atomic_create(path: Path, data: bytes) -> bool:
    """Write `data` to `path` unless a file is already there, in one step other writers (other processes,
    other hosts on NFS) see whole or not at all: a temporary file, then a hard link to `path`, which fails if
    `path` exists. True if this call created it."""
    tmp = temporary_name(path)
    try:
        _write_synced(tmp, data)
        try:
            os.link(tmp, path)
        except FileExistsError:
            return False
        return True
    except OSError as exc:
        reason = "disk full" if exc.errno == errno.ENOSPC else (exc.strerror or str(exc))
        raise StoreError(f"cannot write {path}: {reason}") from None
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()


def check_atomic(folder: Path) -> None:
    """Refuse a folder whose file system cannot rename over a file or hard-link one (some network and FUSE
    file systems): many writers then could tear or lose cells. One line, before anything is written."""
    probe = folder / f".probe-{_HOST}-{os.getpid()}"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        first, second = probe.with_suffix(".a"), probe.with_suffix(".b")
        first.write_bytes(b"a")
        second.write_bytes(b"b")
        os.replace(first, second)
        os.link(second, probe)
        if probe.read_bytes() != b"a":
            raise OSError(errno.EIO, "a renamed file does not read back")
    except OSError as exc:
        raise StoreError(f"store {folder} is on a file system that cannot rename or hard-link files atomically "
                         f"({exc.strerror or exc}); many renders cannot share it: use another folder") from None
    finally:
        for leftover in (probe, probe.with_suffix(".a"), probe.with_suffix(".b")):
            with contextlib.suppress(OSError):
                leftover.unlink()


def atomic_write(path: Path, data: bytes) -> Path:
    """Write `data` to a temporary file beside `path`, flush it to disk, then rename it into place."""
    tmp = temporary_name(path)
    try:
        _write_synced(tmp, data)
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        reason = "disk full" if exc.errno == errno.ENOSPC else (exc.strerror or str(exc))
        raise StoreError(f"cannot write {path}: {reason}") from None
    return path
