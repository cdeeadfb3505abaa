"""`reportgen verify`: check every file of a study's store against the records, as a file system check does,
and repair what is damaged.

Every planned cell's PNG, record and latents are checked (render/store.py: one read per file), and so is
every cached distance (measure/distances.py: the digests it names and its checksum). Every other file in
the store is accounted for or listed: files of keys no plan names are *orphaned* (`--prune` removes
them; a store shared with other studies holds theirs), temporary files are a killed writer's (removed by
`--repair`) or a live writer's (left alone; render/store.py says how that is told), and anything else is
*unknown* and never deleted. `--repair` moves obstacles into `STORE/damaged/`, renders damaged cells again
through the normal render path, computes damaged distances again and removes stale temporaries.

This is in measure/ because a distance can only be checked and computed again here; it renders through
render/jobs.py like the `render` command.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from reportgen.errors import StoreError
from reportgen.measure.distances import DistanceCache, entry, entry_problem, read_metrics
from reportgen.render.jobs import RenderJob, run_render
from reportgen.render.outputs import CellOutput
from reportgen.render.plan import Cell, Plan
from reportgen.render.store import DAMAGE, DAMAGED, SITE_DIGESTS, Store, StoredCell, damage_lines

KEY = re.compile(r"[0-9a-f]{64}")
FOLDERS = {"images": ".png", "latents": ".npy", "metrics": ".json"}
# What a record must agree on with the planned cell it is stored for (the fields that decide its pixels).
RECORD_FIELDS = ("text", "negative", "width", "height", "cfg", "seed", "sampler", "steps")


@dataclass(frozen=True)
class Problem:
    """One damaged thing: where (relative to the store), what kind, and why."""

    path: str
    kind: str  # a DAMAGE kind, "distance" or "site-digests"
    why: str
    key: str | None = None
    obstacle: Path | None = None


@dataclass
class Report:
    """What `verify` found in a store, and what `--repair`/`--prune` did about it."""

    store: Path
    cells: int = 0
    good: int = 0
    missing: int = 0
    damaged: list[Problem] = field(default_factory=list)
    unverified: list[Problem] = field(default_factory=list)
    distances: int = 0  # cached distances checked and good
    distance_problems: list[Problem] = field(default_factory=list)
    orphaned: list[str] = field(default_factory=list)
    unknown: list[str] = field(default_factory=list)
    temporary: list[str] = field(default_factory=list)  # writers gone: removed by --repair
    in_progress: list[str] = field(default_factory=list)  # writers that may be live: left alone
    repaired: list[str] = field(default_factory=list)  # one line per kind of repair made
    failed: list[str] = field(default_factory=list)  # cells that rendering again did not fix

    @property
    def clean(self) -> bool:
        """Nothing damaged, unverifiable or left behind by a killed writer (missing and orphaned are not damage)."""
        return not (self.damaged or self.unverified or self.distance_problems or self.temporary)

    def counts(self) -> dict[str, Any]:
        """The JSON line of `verify --json`."""
        return {"store": str(self.store), "cells": self.cells, "good": self.good, "damaged": len(self.damaged),
                "unverified": len(self.unverified), "missing": self.missing, "distances": self.distances,
                "damaged_distances": len(self.distance_problems), "orphaned": len(self.orphaned),
                "unknown": len(self.unknown), "temporary": len(self.temporary), "in_progress": len(self.in_progress),
                "repaired": self.repaired, "failed": len(self.failed), "clean": self.clean}

    def lines(self) -> list[str]:
        """Every finding as one line, then the repairs, then a summary line."""
        out = [f"damaged: {p.why}" for p in self.damaged]
        out += [f"unverified: {p.why}" for p in self.unverified]
        out += [f"damaged distance: {p.path}: {p.why}" for p in self.distance_problems]
        out += [f"temporary: {p} (its writer is gone)" for p in self.temporary]
        out += [f"in progress: {p} (a writer that may be live; left alone)" for p in self.in_progress]
        out += [f"orphaned: {p} (no cell of this plan; --prune removes it)" for p in self.orphaned]
        out += [f"unknown: {p} (not a store file; never deleted)" for p in self.unknown]
        out += self.repaired + [f"failed: {why}" for why in self.failed]
        out.append(f"{self.cells} cells: {self.good} good, {len(self.damaged)} damaged, {len(self.unverified)} "
                   f"unverified, {self.missing} missing; {self.distances + len(self.distance_problems)} cached "
                   f"distances: {len(self.distance_problems)} damaged; {len(self.orphaned)} orphaned, "
                   f"{len(self.unknown)} unknown, {len(self.temporary)} temporary "
                   f"({len(self.in_progress)} in progress) files")
        return out


def verify(job: RenderJob) -> Report:
    """Check every planned cell, cached distance and other file of the job's store; change nothing."""
    store, cells = job.store, {c.key: c for c in job.plan.cells}
    if not store.root.is_dir():
        raise StoreError(f"no store at {store.root}: nothing is rendered yet")
    report = Report(store=store.root, cells=len(cells))
    good: dict[str, StoredCell] = {}
    for key, cell in cells.items():
        found = store.inspect(key)
        rel = str(store.image_path(key).relative_to(store.root))
        where = f" ({cell.topic}, seed {cell.seed}, {cell.sampler}, {cell.steps} steps)"
        if found.cell is not None and (why := _record_differs(found.cell.record, cell)):
            report.damaged.append(Problem(rel, "record", f"{rel}: {why}{where}", key))
        elif found.problem == "unverified" and found.cell is not None:
            report.unverified.append(Problem(rel, "unverified", found.why + where, key))
            good[key] = found.cell
        elif found.problem is not None:
            report.damaged.append(Problem(rel, found.problem, found.why + where, key, found.obstacle))
        elif found.cell is None:
            report.missing += 1
        else:
            good[key] = found.cell
    report.good = len(good) - len(report.unverified)
    _check_distances(store, cells, good, report)
    _scan_files(store, cells, report)
    return report


def verify_and_repair(job: RenderJob, *, repair: bool = False, prune: bool = False, executor: str = "batched",
                      batch_size: int | None = None,
                      on_cell: Callable[[CellOutput], None] | None = None) -> Report:
    """Verify the job's store; with `repair`, fix what is damaged, with `prune` remove orphans; then verify again."""
    report = verify(job)
    if prune and report.orphaned and not (report.good or report.unverified or report.damaged):
        raise StoreError(f"refusing to prune: none of this plan's {report.cells} cells is in {job.store.root}, so "
                         "every file would go; check --model, --device and --dtype (or --store)")
    done: list[str] = []
    failed: list[str] = []
    if repair:
        done, failed = _repair(job, report, executor, batch_size, on_cell)
    if prune:
        for rel in report.orphaned:
            with contextlib.suppress(FileNotFoundError):
                (job.store.root / rel).unlink()
        if report.orphaned:
            done.append(f"{_count(len(report.orphaned), 'orphaned file')} pruned")
    if not (repair or prune):
        return report
    final = verify(replace(job, store=Store(job.store.root)))
    final.repaired, final.failed = done, failed
    return final


def _repair(job: RenderJob, report: Report, executor: str, batch_size: int | None,
            on_cell: Callable[[CellOutput], None] | None) -> tuple[list[str], list[str]]:
    """Move obstacles aside, remove stale temporaries, render damaged cells again, compute damaged distances."""
    store, done = job.store, []
    for problem in report.damaged:
        if problem.obstacle is not None and os.path.lexists(problem.obstacle):
            store.move_aside(problem.obstacle)
    moved = len({p.obstacle for p in report.damaged if p.obstacle is not None})
    if moved:
        done.append(f"{_count(moved, 'folder or wrong-kind file')} in the way of the store's files moved into "
                    f"{store.root / DAMAGED}")
    if any(p.kind == "site-digests" for p in report.damaged):
        (store.root / SITE_DIGESTS).unlink(missing_ok=True)  # a cache of the site's: made again by build
        done.append(f"the damaged {SITE_DIGESTS} removed (the next build makes it again)")
    removed = store.clean_temporary()
    if removed:
        done.append(f"{_count(removed, 'temporary file')} of writers now gone removed")

    redo = {p.key for p in [*report.damaged, *report.unverified] if p.key is not None}
    failed: list[str] = []
    if redo:
        cells = job.plan.cells
        plan = Plan(cells, tuple(c for c in cells if c.key not in redo), tuple(c for c in cells if c.key in redo),
                    job.plan.environment)
        result, _ = run_render(replace(job, plan=plan), executor, on_cell, batch_size)
        failed_keys = {c.key for c, _ in result.failed}
        kinds = {p.key: p.kind for p in [*report.damaged, *report.unverified] if p.key is not None}
        done += damage_lines(kinds, "rendered again", redo - failed_keys)
        failed = [f"{c.topic} seed {c.seed} {c.sampler} {c.steps} steps: {why}" for c, why in result.failed]

    # Distances are checked again against the cells as they are now: a cell rendered again has new digests.
    after = verify(replace(job, store=Store(store.root)))
    recomputed, dropped = _repair_distances(Store(store.root), {c.key: c for c in job.plan.cells}, after)
    if recomputed:
        done.append(f"{_count(recomputed, 'cached distance')} computed again")
    if dropped:
        done.append(f"{_count(dropped, 'damaged distances file')} removed (analyze computes them again)")
    return done, failed


def _repair_distances(store: Store, cells: dict[str, Cell], report: Report) -> tuple[int, int]:
    """Compute every damaged cached distance again; remove distance files that are not distance files at all."""
    cache = DistanceCache(store)
    recomputed = dropped = 0
    for problem in report.distance_problems:
        if problem.kind != "distance" or problem.key is None:
            continue
        path = store.metrics_path(problem.key)
        targets = read_metrics(path)
        if not isinstance(targets, dict):  # unreadable or malformed: nothing in it can be kept
            path.unlink(missing_ok=True)
            dropped += 1
            continue
        cell = store.get(problem.key)
        fixed: dict[str, Any] = {}
        for target_key, found in targets.items():
            target = store.get(target_key) if target_key in cells else None
            if cell is None or target is None:
                continue  # a pair this plan cannot check is dropped: analyze computes it when it is needed
            if entry_problem(found, cell, target) is None:
                fixed[target_key] = found
            else:
                fixed[target_key] = entry(cache.compute(cell, target), cell, target)
                recomputed += 1
        cache.files[problem.key] = fixed
        cache.dirty.add(problem.key)
    failure = cache.save()
    if failure is not None:
        raise StoreError(failure)
    return recomputed, dropped


def _record_differs(record: dict[str, Any], cell: Cell) -> str | None:
    """Why a whole cell's record does not describe the planned cell (a file copied under another key), or None."""
    for name in RECORD_FIELDS:
        if record.get(name) != getattr(cell, name):
            return f"its record's {name} is {record.get(name)!r}, not the planned {getattr(cell, name)!r}"
    return None


def _scan_files(store: Store, cells: dict[str, Cell], report: Report) -> None:
    """Account for every file in the store: cells' files, temporaries, orphans and anything unknown."""
    root = store.root
    planned = {str(p.relative_to(root)) for key in cells
               for p in (store.image_path(key), store.latents_path(key), store.metrics_path(key))}
    blocked = {str(p.obstacle.relative_to(root)) for p in report.damaged if p.obstacle is not None}
    for path, stale in store.temporaries():
        (report.temporary if stale else report.in_progress).append(str(path.relative_to(root)))
    temporaries = set(report.temporary) | set(report.in_progress)
    for entry_ in sorted(os.scandir(root), key=lambda e: e.name):
        name = entry_.name
        if name in FOLDERS and entry_.is_dir(follow_symlinks=True):
            _scan_folder(root, name, planned, blocked, temporaries, report)
        elif name == SITE_DIGESTS:
            problem = _site_digests_problem(Path(entry_.path))
            if problem:
                report.damaged.append(Problem(name, "site-digests", f"{name}: {problem}"))
        elif name in (DAMAGED, "lock") or name in temporaries or name in blocked:
            continue
        else:
            report.unknown.append(name + ("/" if entry_.is_dir() else ""))


def _scan_folder(root: Path, folder: str, planned: set[str], blocked: set[str], temporaries: set[str],
                 report: Report) -> None:
    suffix = FOLDERS[folder]
    for prefix in sorted(os.scandir(root / folder), key=lambda e: e.name):
        rel_prefix = f"{folder}/{prefix.name}"
        if rel_prefix in blocked:
            continue
        if not (prefix.is_dir() and re.fullmatch(r"[0-9a-f]{2}", prefix.name)):
            report.unknown.append(rel_prefix + ("/" if prefix.is_dir() else ""))
            continue
        for item in sorted(os.scandir(prefix.path), key=lambda e: e.name):
            rel = f"{rel_prefix}/{item.name}"
            if rel in planned or rel in blocked or rel in temporaries:
                continue
            stem = item.name[:-len(suffix)] if item.name.endswith(suffix) else ""
            if KEY.fullmatch(stem) and stem.startswith(prefix.name) and item.is_file(follow_symlinks=False):
                report.orphaned.append(rel)
            else:
                report.unknown.append(rel + ("/" if item.is_dir() else ""))


def _check_distances(store: Store, cells: dict[str, Cell], good: dict[str, StoredCell], report: Report) -> None:
    """Check every cached distance of a planned cell whose cells are whole: digests, numbers, checksum."""
    for key in cells:
        path = store.metrics_path(key)
        rel = str(path.relative_to(store.root))
        blocker = store.obstacle(path)
        if blocker is not None:
            if any(p.obstacle == blocker for p in report.damaged):
                continue
            what = "a folder" if blocker.is_dir() else "not a regular file"
            report.damaged.append(Problem(rel, "obstacle", f"{blocker.relative_to(store.root)} is {what} (in the "
                                          "place of a distances file)", obstacle=blocker))
            continue
        targets = read_metrics(path)
        if targets is None:
            continue
        if isinstance(targets, str):
            report.distance_problems.append(Problem(rel, "distance", targets, key))
            continue
        cell = good.get(key)
        for target_key, found in targets.items():
            target = good.get(target_key)
            if cell is None or target is None:
                continue  # a damaged or missing cell: its distances are checked once it is rendered again
            problem = entry_problem(found, cell, target)
            if problem is None:
                report.distances += 1
            else:
                why = ("computed from other latents or pixels than the cells' own" if problem == "stale"
                       else "not numbers, or not matching its checksum")
                report.distance_problems.append(Problem(f"{rel} -> {target_key[:12]}", "distance", why, key))


def _site_digests_problem(path: Path) -> str | None:
    from reportgen.schemas import FileProblem, SiteDigests, read_json, validate

    try:
        validate(SiteDigests, read_json(path))
    except FileProblem as exc:
        return str(exc)
    return None


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


__all__ = ["DAMAGE", "Problem", "Report", "verify", "verify_and_repair"]
