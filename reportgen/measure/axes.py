"""Findings across the axes beyond sampler x steps: how a schedule or a CFG value changes where a sampler
indicates its final and converges to the reference, against the same sampler at the axis's first value (the
default schedule, the first CFG listed), lane for lane (same model, topic and other axes).

Each statement counts the topics where both are measured, and gives the median step counts of each, which
are rendered counts (median_low): "with Karras sigmas DPM++ 2M indicates its own final at 10 steps instead of
20, on 4 of 5 topics". docs/measurement.md, "Across the axes".
"""

from __future__ import annotations

from dataclasses import dataclass
from statistics import median_low

from reportgen.measure.analysis import Analysis, SamplerSummary
from reportgen.samplers import DEFAULT_SCHEDULE, SCHEDULES

# What is compared: (field of SamplerSummary, the phrase).
MEASURES = (
    ("indicator_steps", "indicates its own final"),
    ("reference_converged_steps", "converges to the reference"),
)


@dataclass(frozen=True)
class AxisComparison:
    """One sampler at one value of an axis against the same sampler at the axis's base value, over the topics
    (and other axes' values) where both reached the measure."""

    axis: str  # "schedule" or "cfg"
    value: str | float
    base: str | float
    sampler: str
    label: str
    measure: str  # a field of SamplerSummary (MEASURES)
    steps: int  # median over the pairs, at `value`
    base_steps: int  # median over the pairs, at `base`
    sooner: int  # pairs where `value` got there in fewer steps
    later: int
    pairs: int  # pairs where both got there
    unreached: int  # pairs where only one of them got there within the steps rendered
    topics: tuple[str, ...]
    text: str


def axis_phrase(axis: str, value: str | float) -> str:
    """'with Karras sigmas', 'with its default schedule', 'at CFG 3'."""
    if axis == "cfg":
        return f"at CFG {value:g}" if isinstance(value, float) else f"at CFG {value}"
    if value == DEFAULT_SCHEDULE:
        return "with its default schedule"
    label = SCHEDULES[str(value)].label
    return f"with {label} sigmas" if value != "trailing" else "with trailing timesteps (SGM Uniform)"


def compare_axes(analysis: Analysis) -> list[AxisComparison]:
    """Every deterministic sampler at every non-base value of each varied axis (schedule, cfg), per measure."""
    out = []
    for axis in ("schedule", "cfg"):
        if axis not in analysis.axes:
            continue
        values = analysis.values(axis)
        base = DEFAULT_SCHEDULE if axis == "schedule" and DEFAULT_SCHEDULE in values else values[0]
        others = [a for a in ("model", "schedule", "cfg") if a != axis]
        by = {(s.topic, s.sampler, *(getattr(s, a) for a in others), getattr(s, axis)): s
              for s in analysis.samplers if not s.ancestral}
        for value in (v for v in values if v != base):
            for sampler in dict.fromkeys(s.sampler for s in analysis.samplers if not s.ancestral):
                for measure, phrase in MEASURES:
                    found = _compare(by, axis, value, base, sampler, measure, phrase)
                    if found is not None:
                        out.append(found)
    return out


def _compare(by: dict[tuple, SamplerSummary], axis: str, value: str | float, base: str | float, sampler: str,
             measure: str, phrase: str) -> AxisComparison | None:
    pairs: list[tuple[int, int]] = []
    topics: list[str] = []
    only_value = only_base = 0  # lanes where only `value`, or only `base`, got there within the steps rendered
    label = ""
    for key, summary in by.items():
        if key[1] != sampler or key[-1] != value:
            continue
        other = by.get((*key[:-1], base))
        if other is None:
            continue
        label = summary.label
        mine, theirs = getattr(summary, measure), getattr(other, measure)
        if mine is None and theirs is None:
            continue
        topics.append(summary.topic)
        if mine is None:
            only_base += 1
        elif theirs is None:
            only_value += 1
        else:
            pairs.append((mine, theirs))
    total = len(pairs) + only_value + only_base
    if not total:
        return None
    sooner = sum(a < b for a, b in pairs) + only_value
    later = sum(a > b for a, b in pairs) + only_base
    per_topic = len(set(topics)) == total

    def unit(n: int) -> str:
        word = ("topic" if per_topic else "lane") + ("" if n == 1 else "s")
        return f"{n} {word}" if per_topic else f"{n} {word} (topic, model and the other axes)"

    mine_phrase, base_phrase = axis_phrase(axis, value), axis_phrase(axis, base)
    head = f"{mine_phrase[0].upper()}{mine_phrase[1:]} {label} {phrase}"
    parts = []
    steps = base_steps = 0
    if pairs:
        steps, base_steps = median_low([a for a, _ in pairs]), median_low([b for _, b in pairs])
        if steps == base_steps:
            parts.append(f"{head} at {steps} steps (median), as {base_phrase}")
        else:
            parts.append(f"{head} at {steps} steps instead of {base_steps} ({base_phrase}; medians)")
        parts.append(f"sooner on {sum(a < b for a, b in pairs)}, later on {sum(a > b for a, b in pairs)}, "
                     f"the same on {sum(a == b for a, b in pairs)} of the {unit(len(pairs))} where both do")
    else:
        parts.append(f"{head} where {base_phrase} it does not, or the other way round")
    if only_value:
        parts.append(f"on {unit(only_value)} it gets there within the steps rendered and {base_phrase} it does not")
    if only_base:
        parts.append(f"on {unit(only_base)} {base_phrase} it gets there and {mine_phrase} it does not")
    text = "; ".join(parts) if pairs else f"{head}: " + "; ".join(parts[1:])
    return AxisComparison(axis=axis, value=value, base=base, sampler=sampler, label=label, measure=measure,
                          steps=steps, base_steps=base_steps, sooner=sooner, later=later, pairs=len(pairs),
                          unreached=only_value + only_base, topics=tuple(dict.fromkeys(topics)), text=text)
