"""The guide's summary tables and statements, generated from an Analysis instead of judged by eye.

Every number here is a field of DIR/data/fits.json (steps, model calls, seconds, exponents), so a reader
can trace each statement to the data.
"""

from __future__ import annotations

from dataclasses import dataclass
from statistics import median

from reportgen.measure.analysis import Analysis, SamplerSummary

CANDIDATES, KEPT = 100, 3  # the guide's worked example: 100 candidates, 3 kept and polished


@dataclass(frozen=True)
class Workflow:
    """The guide's preview-then-polish workflow for one sampler, costed from measured step counts."""

    sampler: str
    label: str
    preview_steps: int
    final_steps: int
    preview_nfe: int
    final_nfe: int
    direct_nfe: int  # CANDIDATES finals
    workflow_nfe: int  # CANDIDATES previews + KEPT finals
    direct_seconds: float | None
    workflow_seconds: float | None


@dataclass(frozen=True)
class Findings:
    """Statements, the per-topic "predicts the final result at" table, and suggestions."""

    statements: tuple[str, ...]
    topics: tuple[str, ...]
    predicts: tuple[tuple[SamplerSummary, tuple[SamplerSummary | None, ...]], ...]  # per sampler, per topic
    suggestions: tuple[str, ...]
    workflow: Workflow | None


def findings(analysis: Analysis) -> Findings:
    """Derive the index page's statements, tables and suggestions from measured facts only."""
    topics = tuple(analysis.topics())
    names = list(dict.fromkeys(s.sampler for s in analysis.samplers))
    by = {(s.topic, s.sampler): s for s in analysis.samplers}
    statements = [*_fewest(analysis, topics, "converged", "steps"), *_fewest(analysis, topics, "converged"),
                  *_fewest(analysis, topics, "indicator"),
                  *_never(analysis, names), *_limits(analysis, names), *_topic_order(analysis, topics)]
    predicts = tuple((first, tuple(by.get((t, name)) for t in topics))
                     for name in names
                     if not (first := next(s for s in analysis.samplers if s.sampler == name)).ancestral)
    plans = workflows(analysis, topics)
    plan = min((p for p in plans if p.workflow_nfe < p.direct_nfe), key=lambda p: (p.workflow_nfe, p.final_nfe),
               default=None)  # the cheapest plan that costs less than rendering every candidate in full
    return Findings(statements=tuple(statements), topics=topics, predicts=predicts,
                    suggestions=tuple(_suggestions(analysis, names, plan, bool(plans))), workflow=plan)


def workflows(analysis: Analysis, topics: tuple[str, ...]) -> list[Workflow]:
    """Each deterministic sampler's preview-then-polish plan, from its worst case over topics: previews at the
    most steps any topic needed to predict its final, finals at the most steps any topic needed to converge."""
    plans = []
    for name in dict.fromkeys(s.sampler for s in analysis.samplers):
        rows = [s for s in analysis.samplers if s.sampler == name]
        if len(rows) < len(topics) or any(s.indicator_steps is None or not s.converges for s in rows):
            continue
        preview = max(rows, key=lambda s: s.indicator_steps or 0)
        final = max(rows, key=lambda s: s.converged_steps or 0)
        assert preview.indicator_nfe is not None and final.converged_nfe is not None
        seconds = (preview.indicator_seconds, final.converged_seconds)
        timed = None not in seconds
        p_s, f_s = (seconds[0] or 0.0), (seconds[1] or 0.0)
        plans.append(Workflow(
            sampler=name, label=rows[0].label, preview_steps=preview.indicator_steps or 0,
            final_steps=final.converged_steps or 0, preview_nfe=preview.indicator_nfe, final_nfe=final.converged_nfe,
            direct_nfe=CANDIDATES * final.converged_nfe,
            workflow_nfe=CANDIDATES * preview.indicator_nfe + KEPT * final.converged_nfe,
            direct_seconds=CANDIDATES * f_s if timed else None,
            workflow_seconds=CANDIDATES * p_s + KEPT * f_s if timed else None,
        ))
    return plans


def _fewest(analysis: Analysis, topics: tuple[str, ...], what: str, unit: str = "nfe") -> list[str]:
    """Which samplers reach `what` ("converged"/"indicator") in the fewest model calls ("nfe") or steps."""
    wins: dict[str, list[str]] = {}
    for topic in topics:
        rows = [s for s in analysis.for_topic(topic) if getattr(s, f"{what}_{unit}") is not None and not s.ancestral]
        if not rows:
            continue
        best = min(getattr(s, f"{what}_{unit}") for s in rows)
        for s in rows:
            if getattr(s, f"{what}_{unit}") == best:
                wins.setdefault(s.label, []).append(
                    f"{topic}: {getattr(s, f'{what}_steps')} steps, {getattr(s, f'{what}_nfe')} calls")
    if not wins:
        return []
    fewest = "model calls" if unit == "nfe" else "steps"
    tied: dict[tuple[str, ...], list[str]] = {}  # samplers that won the same topics at the same counts: one line
    for label, where in wins.items():
        tied.setdefault(tuple(where), []).append(label)
    out = []
    for topics_won, labels in sorted(tied.items(), key=lambda kv: -len(kv[0])):
        if len(labels) == 1:
            verb = "converged" if what == "converged" else "predicted its final image"
            who = labels[0]
        else:
            verb = "converged" if what == "converged" else "predicted their final images"
            who = f"{_and(labels)} (tied)"
        out.append(f"{who} {verb} in the fewest {fewest} in {len(topics_won)} of {len(topics)} topics "
                   f"({'; '.join(topics_won)}).")
    return out


def _never(analysis: Analysis, names: list[str]) -> list[str]:
    """Ancestral samplers, and deterministic ones that converged in no topic within the steps rendered."""
    out = []
    for name in names:
        rows = [s for s in analysis.samplers if s.sampler == name]
        label = rows[0].label
        if rows[0].ancestral:
            variability = [s.variability for s in rows if s.variability is not None]
            score = f" (mean change between step counts {median(variability):.3g})" if variability else ""
            out.append(f"{label} is ancestral: it adds fresh noise at every step and never converges{score}.")
        elif not any(s.converges for s in rows):
            out.append(f"{label} did not converge within the steps rendered in any topic "
                       f"(up to {max(s.max_steps for s in rows)} steps).")
    return out


def _limits(analysis: Analysis, names: list[str]) -> list[str]:
    """Deterministic samplers whose final image stays away from the reference's."""
    out = []
    for name in names:
        rows = [s for s in analysis.samplers if s.sampler == name and s.limit_differs]
        if rows:
            gaps = "; ".join(f"{s.topic}: {s.final_to_reference:.3g}" for s in rows)
            out.append(f"{rows[0].label}'s final image stays away from {analysis.reference_label}'s ({gaps}; "
                       f"threshold {analysis.thresholds.limit:g}): it approaches a different limit.")
    return out


def _topic_order(analysis: Analysis, topics: tuple[str, ...]) -> list[str]:
    """Topics ordered by the median converged step count of the samplers that converged there."""
    medians = {}
    for topic in topics:
        steps = [s.converged_steps for s in analysis.for_topic(topic) if s.converges and s.converged_steps]
        if steps:
            medians[topic] = median(steps)
    if len(medians) < 2 or len(set(medians.values())) < 2:
        return []
    order = sorted(medians, key=lambda t: medians[t])
    return [f"Earliest to converge: {order[0]} (median {medians[order[0]]:g} steps over the samplers that "
            f"converged); latest: {order[-1]} (median {medians[order[-1]]:g} steps)."]


def _suggestions(analysis: Analysis, names: list[str], plan: Workflow | None, planned: bool) -> list[str]:
    out = []
    if plan is None and planned:
        out.append("Within the steps rendered, no sampler predicted its final image at fewer steps than it needed to "
                   f"converge, so {CANDIDATES} previews plus {KEPT} finals would cost more than {CANDIDATES} finals: "
                   "render finer step counts to find a cheaper preview.")
    if plan is not None:
        text = (f"Preview with {plan.label} at {plan.preview_steps} steps ({plan.preview_nfe} model calls), then "
                f"polish the keepers at {plan.final_steps} steps ({plan.final_nfe} calls): {CANDIDATES} previews "
                f"plus {KEPT} finals cost {plan.workflow_nfe} model calls instead of {plan.direct_nfe} "
                f"({plan.direct_nfe / plan.workflow_nfe:.1f}x fewer)")
        if plan.direct_seconds and plan.workflow_seconds:
            text += f"; at the measured speed {plan.workflow_seconds:.0f} s instead of {plan.direct_seconds:.0f} s"
        out.append(text + ".")
    ancestral = [n for n in names if next(s for s in analysis.samplers if s.sampler == n).ancestral]
    if ancestral:
        labels = _and([next(s.label for s in analysis.samplers if s.sampler == n) for n in ancestral])
        out.append(f"Do not use low-step previews of {labels}: an ancestral sampler's image keeps changing with the "
                   "step count, so a preview does not predict it.")
    differ = [n for n in names if any(s.limit_differs for s in analysis.samplers if s.sampler == n)]
    if differ:
        labels = _and([next(s.label for s in analysis.samplers if s.sampler == n) for n in differ])
        out.append(f"Do not expect {labels} to match the other samplers at high step counts: their final images "
                   f"stay away from {analysis.reference_label}'s.")
    return out


def _and(labels: list[str]) -> str:
    return labels[0] if len(labels) == 1 else f"{', '.join(labels[:-1])} and {labels[-1]}"
