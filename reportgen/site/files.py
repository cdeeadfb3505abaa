"""The files of a built site: thumbnails, reuse of the previous build, and the write-then-swap of the folder.

A build writes its whole site into a temporary folder beside DIR, then swaps it into place, so a build that
fails at any point leaves the previous site as it was, and the new site holds only the files its pages
name. A file of the previous site is reused (hard-linked, falling back to a copy) only when it is a plain
file (no link of any kind) whose SHA-256 is the digest of what it should hold, taken from the store: a
full PNG must equal the store's file; a thumbnail, grid or plot the digest `site-digests.json` in the store
recorded when it was made. Anything else is made again. The manifest only marks DIR as a reportgen site;
one that is damaged (not JSON, not an object, another format) means a full rebuild: nothing is reused.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import shutil
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from reportgen.errors import SiteError

MANIFEST = ".reportgen-site.json"
MANIFEST_FORMAT = 1
THUMB_SIZE = 256  # longest side in pixels: sharp at 2x for the ~110 px cells of a topic page


@dataclass(frozen=True)
class SiteFile:
    """One file of the site: its site-relative path and either its bytes or a file to copy or link."""

    path: str
    data: bytes | None = None
    source: Path | None = None
    link: bool = False  # hard-link `source` (a file of the previous site) rather than copy it


@dataclass(frozen=True)
class Previous:
    """The site already in DIR, if any: its folder, its manifest, and why the manifest was malformed (then
    nothing is reused: the build is a full one)."""

    root: Path
    manifest: dict[str, Any]
    problem: str | None = None

    def reuse(self, path: str, sha256: str | None) -> SiteFile | None:
        """A link to `path` in the previous site if it is a plain file whose digest is `sha256`, else None."""
        if self.problem is not None or sha256 is None:
            return None
        source = self.root / path
        try:
            st = os.lstat(source)
            if not stat.S_ISREG(st.st_mode) or st.st_nlink != 1:  # a link of any kind is never carried on
                return None
            if file_sha256(source) != sha256:
                return None
        except OSError:
            return None
        return SiteFile(path, source=source, link=True)


def file_sha256(path: Path) -> str:
    """SHA-256 of a file's bytes."""
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


class Digests:
    """What each file the site derives from the store should hold (`STORE/site-digests.json`): a name for what
    the file shows (a thumbnail of pixels P, a grid of cells K...) -> the SHA-256 of the file made for it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.known: dict[str, str] = _read_digests(path)
        self.new: dict[str, str] = {}

    def get(self, name: str) -> str | None:
        """The digest recorded for `name`, if any."""
        return self.new.get(name) or self.known.get(name)

    def add(self, name: str, data: bytes) -> bytes:
        """Record the digest of a file just made for `name`; return its bytes."""
        self.new[name] = hashlib.sha256(data).hexdigest()
        return data

    def save(self) -> str | None:
        """Merge the new digests into the file (another build may have written it meanwhile); say why it failed."""
        if not self.new:
            return None
        from reportgen.errors import StoreError
        from reportgen.render.store import atomic_write

        if not self.path.parent.is_dir():
            return None  # nothing rendered yet: nothing worth remembering
        merged = {**_read_digests(self.path), **self.new}
        try:
            atomic_write(self.path, json.dumps(merged, sort_keys=True, indent=0).encode())
        except StoreError as exc:
            return str(exc)
        return None


def _read_digests(path: Path) -> dict[str, str]:
    from reportgen.schemas import SiteDigests, load_cache

    body = load_cache(path, SiteDigests, "the site's file digests")
    return dict(body.root) if body is not None else {}


def read_previous(out: Path) -> Previous | None:
    """The previous site in `out`; SiteError if `out` holds something that is not a reportgen site."""
    if not out.exists():
        return None
    if not out.is_dir():
        raise SiteError(f"--out {out} exists and is not a folder")
    manifest_path = out / MANIFEST
    if not manifest_path.is_file():
        if any(out.iterdir()):
            raise SiteError(f"refusing to replace {out}: it is not a site built by reportgen (no {MANIFEST}); "
                            "choose a new or empty folder")
        return None
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except OSError as exc:
        return Previous(out, {}, f"it cannot be read ({exc.strerror or exc})")
    except ValueError:
        return Previous(out, {}, "it is not JSON")  # a damaged manifest only costs a full rebuild
    if not isinstance(manifest, dict):
        return Previous(out, {}, "it is not a JSON object")
    if manifest.get("format") != MANIFEST_FORMAT:
        return Previous(out, {}, f"its format is {manifest.get('format')!r}, not {MANIFEST_FORMAT}")
    return Previous(out, manifest)


def thumbnail(image_path: Path) -> tuple[bytes, tuple[int, int]]:
    """A WebP thumbnail of an image, at most THUMB_SIZE pixels on its longest side, and its size."""
    from PIL import Image

    with Image.open(image_path) as source:
        im = source.convert("RGB")
        im.thumbnail((THUMB_SIZE, THUMB_SIZE))
        buffer = io.BytesIO()
        im.save(buffer, format="WEBP", quality=82, method=4)
        return buffer.getvalue(), im.size


def write_site(out: Path, pages: dict[str, str], files: list[SiteFile], manifest: dict[str, Any]) -> None:
    """Write pages and files into a temporary folder beside `out`, then swap it into place."""
    out = out.absolute()
    _sweep_leftovers(out)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir()
        for path, text in pages.items():
            _write(tmp, SiteFile(path, data=text.encode("utf-8")))
        for file in files:
            _write(tmp, file)
        _write(tmp, SiteFile(MANIFEST, data=json.dumps({**manifest, "format": MANIFEST_FORMAT}).encode()))
        _swap(tmp, out)
    except OSError as exc:
        raise SiteError(f"cannot write the site to {out}: {exc.strerror or exc}") from None
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _write(root: Path, file: SiteFile) -> None:
    """Write one file under `root`; a previous site's file is hard-linked when the file system allows."""
    target = root / file.path
    if not target.resolve().is_relative_to(root.resolve()):
        raise SiteError(f"site file {file.path!r} would be written outside the site")
    target.parent.mkdir(parents=True, exist_ok=True)
    if file.data is not None:
        target.write_bytes(file.data)
        return
    assert file.source is not None
    if file.link:
        try:
            os.link(file.source, target)
            return
        except OSError:
            pass  # another file system, or no hard links here: copy instead
    shutil.copyfile(file.source, target)


def _swap(tmp: Path, out: Path) -> None:
    """Put `tmp` where `out` is: rename the old site aside, rename the new one in, then delete the old."""
    if not out.exists():
        os.rename(tmp, out)
        return
    old = out.parent / f".{out.name}.old-{os.getpid()}"
    os.rename(out, old)
    try:
        os.rename(tmp, out)
    except OSError:
        os.rename(old, out)  # put the previous site back before reporting the failure
        raise
    shutil.rmtree(old, ignore_errors=True)


def _sweep_leftovers(out: Path) -> None:
    """Remove temporary folders that a killed build (whose process is gone) left beside `out`."""
    if not out.parent.is_dir():
        return
    for pattern in (f".{out.name}.tmp-*", f".{out.name}.old-*"):
        for path in out.parent.glob(pattern):
            pid = path.name.rsplit("-", 1)[-1]
            if pid.isdigit() and not _alive(int(pid)):
                shutil.rmtree(path, ignore_errors=True)


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return False  # ours, from an earlier build in this same process that failed
    with contextlib.suppress(ProcessLookupError):
        try:
            os.kill(pid, 0)
        except PermissionError:
            return True
        return True
    return False
