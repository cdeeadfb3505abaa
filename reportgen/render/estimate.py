"""How long new cells will take, before they are rendered, from what this study has measured.

Seconds per model call come from STUDY/speed.json (`reportgen speed`: one image at a time) or else from
the records of cells already stored on the same kind of device (a batched render's share of its shared
calls). Either is scaled to each cell's size by its pixel count, since a denoiser call costs about in
proportion to the latent's area. Without either there is no estimate, only the calls and pixels.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from reportgen.errors import StudyError
from reportgen.render.plan import Cell
from reportgen.render.store import Store
from reportgen.render.timing import load_speed

RECORDS_SAMPLED = 200  # stored cells read to estimate from records: enough for a median, cheap to read


@dataclass(frozen=True)
class Estimate:
    """The cost of some cells: model calls, megapixel-calls, and seconds where a speed was measured."""

    cells: int
    calls: int
    megapixel_calls: float
    seconds: float | None
    source: str  # "speed.json", "stored cells" or "" (nothing measured)


def estimate(cells: Iterable[Cell], study_root: Path, store: Store, device: str) -> Estimate:
    """Estimate `cells` on `device` from the study's measured speed, else from its stored cells' records."""
    cells = list(cells)
    calls = sum(c.nfe for c in cells)
    megapixel_calls = sum(c.nfe * c.width * c.height for c in cells) / 1e6
    per_call, source = _from_speed(study_root, device)
    if per_call is None:
        per_call, source = _from_records(store, device)
    seconds = None
    if per_call is not None:
        seconds = sum(per_call.get(c.sampler, per_call[""]) * c.nfe * c.width * c.height / 1e6 for c in cells)
    return Estimate(len(cells), calls, megapixel_calls, seconds, source if per_call is not None else "")


def _from_speed(study_root: Path, device: str) -> tuple[dict[str, float] | None, str]:
    """Seconds per model call per megapixel by sampler ("" for their mean), from speed.json on this device kind."""
    try:
        speed = load_speed(study_root)  # checked against its schema: positive sizes, calls and seconds
    except StudyError:
        return None, ""  # a speed.json that does not fit gives no estimate here; build names what is wrong
    if speed is None or str(speed["device"]).split(":")[0] != device.split(":")[0]:
        return None, ""
    pixels = float(speed["width"]) * float(speed["height"]) / 1e6
    rates = {row["sampler"]: float(row["s_per_image"]) / float(row["nfe"]) / pixels for row in speed["samplers"]}
    if not rates:
        return None, ""
    return {**rates, "": statistics.fmean(rates.values())}, "speed.json"


def _from_records(store: Store, device: str) -> tuple[dict[str, float] | None, str]:
    """Seconds per model call per megapixel from the records of stored cells rendered on this device kind."""
    rates = []
    for number, stored in enumerate(store.cells()):
        if number >= RECORDS_SAMPLED:
            break
        record = stored.record
        environment = record.get("environment")
        seconds, calls = record.get("seconds"), record.get("nfe_counted")
        width, height = record.get("width"), record.get("height")
        if not (isinstance(environment, dict) and environment.get("device") == device.split(":")[0]):
            continue
        numbers = (seconds, calls, width, height)
        if all(isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0 for v in numbers):
            rates.append(seconds / calls / (width * height / 1e6))  # type: ignore[operator]
    if not rates:
        return None, ""
    return {"": statistics.median(rates)}, "stored cells"
