"""Split a plan's work into N shards by cost, so that N processes or machines can render one study at once.

A lane is the series of one topic, seed and sampler across its step counts (the unit the batched executor
keeps together); a shard takes whole lanes. Lanes are weighed by the model calls of their cells still to
render (a Heun lane weighs about twice a Euler lane of the same steps) and dealt out longest first, each to
the shard with the fewest calls so far (the LPT rule). Every process computes the same partition from the
same pending lanes, and the shards' calls then differ by at most the heaviest lane's calls: when the
heaviest shard took its last lane it was the lightest, so it is at most that lane above any other.
"""

from __future__ import annotations

import heapq
import re
from collections.abc import Iterable
from dataclasses import dataclass

from reportgen.errors import StudyError
from reportgen.render.plan import Cell

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
    """The lane a cell belongs to: one topic, seed and sampler across its step counts."""
    return f"{cell.topic}\0{cell.seed}\0{cell.sampler}"


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
