"""study.toml's axes beyond samplers, steps and seeds: `schedules`, `cfg` and `models`, read and validated
(docs/study-format.md, "Axes"); each optional, so a study without them means what it meant before them."""

from __future__ import annotations

from typing import Any

from reportgen.errors import SamplerError, StudyError
from reportgen.samplers import DEFAULT_SCHEDULE, get_schedule


def _list(data: dict[str, Any], key: str, where: str, what: str) -> list[Any] | None:
    if key not in data:
        return None
    value = data[key]
    if not isinstance(value, list) or not value:
        raise StudyError(f"{where}: {key} must be a non-empty list of {what}")
    return value


def read_schedules(data: dict[str, Any], where: str) -> tuple[str, ...]:
    """`schedules = ["default", "karras", ...]`: each a name of samplers.SCHEDULES or its web UI label."""
    value = _list(data, "schedules", where, "schedule names")
    if value is None:
        return (DEFAULT_SCHEDULE,)
    names = []
    for item in value:
        if not isinstance(item, str):
            raise StudyError(f"{where}: schedules must be names, got {item!r}")
        try:
            names.append(get_schedule(item))
        except SamplerError as exc:
            raise StudyError(f"{where}: schedules: {exc}") from None
    return tuple(dict.fromkeys(names))


def read_cfgs(data: dict[str, Any], where: str) -> tuple[float, ...]:
    """`cfg = [3, 7.5, 12]`: CFG scales, numbers > 0 (finite), overriding every topic's -C."""
    value = _list(data, "cfg", where, "numbers")
    if value is None:
        return ()
    for item in value:
        if not isinstance(item, int | float) or isinstance(item, bool):
            raise StudyError(f"{where}: cfg must be a list of numbers, got {item!r}")
        if not 0 < item < float("inf"):
            raise StudyError(f"{where}: cfg values must be > 0, got {item!r}")
    return tuple(dict.fromkeys(float(v) for v in value))


def read_models(data: dict[str, Any], where: str) -> tuple[str, ...]:
    """`models = [...]`: model specs (as `model`), each once; not together with `model`."""
    value = _list(data, "models", where, "model specs")
    if value is None:
        return ()
    if "model" in data:
        raise StudyError(f"{where}: give model or models, not both")
    for item in value:
        if not isinstance(item, str) or not item.strip():
            raise StudyError(f"{where}: models must be non-empty strings, got {item!r}")
    seen: set[str] = set()
    for item in value:
        if item in seen:
            raise StudyError(f"{where}: models lists {item!r} twice")
        seen.add(item)
    return tuple(value)
