"""Split a plan's work into N shards by cost, so that N processes or machines can render one study at once.

A lane is the series of one topic, seed and sampler across its step counts (the unit the batched executor
keeps together); a shard takes whole lanes. Lanes are weighed by the model calls of their cells still to
render (a Heun lane weighs about twice a Euler lane of the same steps) and dealt out longest first, each to
the shard with the fewest calls so far (the LPT rule). Every process computes the same partition from the
same pending lanes, and the shards' calls then differ by at most the heaviest lane's calls: when the
heaviest shard took its last lane it was the lightest, so it is at most that lane above any other.
"""

from __future__ import annotations

import hashlib
import heapq
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from reportgen.errors import StudyError
from reportgen.render.plan import Cell
from reportgen.render.store import Store, atomic_create, atomic_write

_SHARD = re.compile(r"^\s*(\d+)\s*/\s*(\d+)\s*$")
MAX_SHARDS = 100_000


@dataclass(frozen=True)
class Shard:
    """Shard `index` (1-based, as users write it) of `count`."""

    index: int
    count: int

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


def parse_shard(text: str) -> Shard:
    """'2/4' -> Shard(2, 4); StudyError naming the problem otherwise."""
    match = _SHARD.match(text)
    if not match:
        raise StudyError(f"--shard {text!r}: expected K/N, e.g. 1/4")
    index, count = int(match.group(1)), int(match.group(2))
    if not 1 <= count <= MAX_SHARDS:
        raise StudyError(f"--shard {text!r}: N must be between 1 and {MAX_SHARDS}")
    if not 1 <= index <= count:
        raise StudyError(f"--shard {text!r}: K must be between 1 and N ({count})")
    return Shard(index, count)


def lane_id(cell: Cell) -> str:
    """The unit a shard takes: one topic, seed and sampler across its step counts (and its cfg values), with the
    model and schedule where the study varies them; a study without those axes names its lanes as before them."""
    axes = "" if (cell.model, cell.schedule_type) == ("", "default") else f"\0{cell.model}\0{cell.schedule_type}"
    return f"{cell.topic}\0{cell.seed}\0{cell.sampler}{axes}"


def lane_costs(cells: Iterable[Cell]) -> dict[str, int]:
    """Model calls per lane over `cells`, lanes in first-seen order."""
    costs: dict[str, int] = {}
    for cell in cells:
        costs[lane_id(cell)] = costs.get(lane_id(cell), 0) + cell.nfe
    return costs


def partition(costs: dict[str, int], count: int) -> dict[str, int]:
    """Each lane's shard (0-based) by the LPT rule: heaviest lane first, to the lightest shard (lowest index
    on ties); lanes of equal cost in id order, so every process gets the same answer."""
    loads = [(0, shard) for shard in range(count)]
    heapq.heapify(loads)
    assignment = {}
    for lane in sorted(costs, key=lambda lane: (-costs[lane], lane)):
        load, shard = heapq.heappop(loads)
        assignment[lane] = shard
        heapq.heappush(loads, (load + costs[lane], shard))
    return assignment


def shard_loads(costs: dict[str, int], assignment: dict[str, int], count: int) -> list[int]:
    """The model calls each shard was given."""
    loads = [0] * count
    for lane, shard in assignment.items():
        loads[shard] += costs[lane]
    return loads


# --- The partition, shared by every process that renders the same plan into one store ---------------------

SHARDS_DIR = "shards"  # STORE/shards/<plan digest>-of-<N>.json: the lanes of a plan dealt to N shards
SHARDS_FORMAT = 1


@dataclass(frozen=True)
class ShardWork:
    """What one shard renders: its cells, and the model calls left to every shard of the partition."""

    shard: Shard
    cells: tuple[Cell, ...]
    loads: tuple[int, ...]  # model calls still to render per shard (0-based), this one's included
    record: Path  # the partition's file in the store
    made: bool  # this process wrote the partition (else it read one another process wrote)


def plan_digest(cells: Iterable[Cell]) -> str:
    """SHA-256 over the keys of every cell of a plan: processes rendering the same plan (same study, filters,
    model, device type and dtype) share one partition."""
    return hashlib.sha256("\n".join(sorted(c.key for c in cells)).encode()).hexdigest()


def shard_work(cells: tuple[Cell, ...], to_render: tuple[Cell, ...], store: Store, shard: Shard, *,
               reshard: bool = False, write: bool = True) -> ShardWork:
    """This shard's cells of `to_render`. The partition is computed from the cells still to render by the
    first process to start (and kept in the store), so every later process, on this machine or another, a
    shard rerun alone included, gets the same one; `reshard` deals what is left anew. Cells to render that the
    partition never saw (damaged since) go to a shard by a hash of their lane. `write` False (a dry run)
    writes nothing."""
    digest = plan_digest(cells)[:16]
    folder = store.root / SHARDS_DIR
    path = folder / f"{digest}-of-{shard.count}.json"
    pending = lane_costs(to_render)
    if not reshard:
        for other in sorted(folder.glob(f"{digest}-of-*.json")) if folder.is_dir() else []:
            if other != path and set(_read_partition(other)) & set(pending):
                count = other.stem.rsplit("-of-", 1)[1]
                raise StudyError(f"the store {store.root} is being rendered in {count} shards ({other}), and "
                                 f"their cells are not all rendered yet: render with --shard K/{count}, or add "
                                 f"--reshard to deal what is left into {shard.count}")
    assignment = None if reshard or not path.exists() else _read_partition(path)
    made = False
    if assignment is None:
        assignment = partition(pending, shard.count)
        if write:
            made = _write_partition(path, assignment, shard.count, digest, replace=reshard)
            if not made:  # another process of this partition started first: its partition is everyone's
                assignment = _read_partition(path)
            if reshard:
                for other in folder.glob(f"{digest}-of-*.json"):
                    if other != path:
                        other.unlink(missing_ok=True)
    loads = [0] * shard.count
    for lane, cost in pending.items():
        loads[_owner(lane, assignment, shard.count)] += cost
    mine = tuple(c for c in to_render if _owner(lane_id(c), assignment, shard.count) == shard.index - 1)
    return ShardWork(shard, mine, tuple(loads), path, made)


def _owner(lane: str, assignment: dict[str, int], count: int) -> int:
    """A lane's shard: the partition's, else (a lane it never saw) one by a hash every process computes alike."""
    if lane in assignment:
        return assignment[lane]
    return int.from_bytes(hashlib.sha256(lane.encode()).digest()[:8], "big") % count


def _read_partition(path: Path) -> dict[str, int]:
    """A partition file's lanes; StudyError naming the file if it is not one."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise StudyError(f"{path}: unreadable shard partition ({exc}); add --reshard to make a new one") from None
    lanes = data.get("lanes") if isinstance(data, dict) else None
    count = data.get("count") if isinstance(data, dict) else None
    if (not isinstance(lanes, dict) or not isinstance(count, int) or data.get("format") != SHARDS_FORMAT
            or not all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v < count for v in lanes.values())):
        raise StudyError(f"{path}: not a shard partition reportgen wrote; add --reshard to make a new one")
    return {str(k): v for k, v in lanes.items()}


def _write_partition(path: Path, assignment: dict[str, int], count: int, digest: str, *, replace: bool) -> bool:
    """Write the partition; unless `replace`, only if no other process has (True if this one did)."""
    body = json.dumps({"format": SHARDS_FORMAT, "count": count, "plan": digest, "lanes": assignment},
                      sort_keys=True).encode()
    if replace:
        atomic_write(path, body)
        return True
    return atomic_create(path, body)
