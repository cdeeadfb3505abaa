"""The guide's summary tables and statements, generated from an Analysis instead of judged by eye.

Every number here is a field of DIR/data/fits.json (steps, model calls, seconds, exponents), so a reader
can trace each statement to the data. A claim about a topic holds in a majority of its seeds (one seed's
result is not the sampler's); samplers that share a result are stated once, as a tie; a step count in a
statement is always one that was rendered. docs/measurement.md, "The index page's summary".
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from statistics import median_low

from reportgen.measure.analysis import Analysis, SamplerSummary, SeedSummary
from reportgen.measure.distances import UNRELATED, scale
from reportgen.measure.fits import PRE_ASYMPTOTIC
from reportgen.samplers import get_sampler

CANDIDATES, KEPT = 100, 3  # the guide's worked example: 100 candidates, 3 kept and polished
ENOUGH_SEEDS = 3  # below this a majority is every seed, and the findings say what they rest on

# What the per-topic "soonest" answers are about: (what, target, the phrase).
SOONEST = (
    ("converged", "reference", "converged to the reference"),
    ("converged", "final", "converged to its own final image"),
    ("indicator", "final", "predicted its own final image"),
)


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
class Soonest:
    """One topic: the deterministic samplers that reach `what` ("indicator"/"converged") against `target`
    ("final": own highest-step image; "reference") in the fewest model calls, in a majority of its seeds."""

    topic: str
    what: str
    target: str
    samplers: tuple[str, ...]  # several: a tie; () when none reached it in a majority of seeds, or no majority agrees
    steps: tuple[int, ...]  # per sampler: the step count by which it got there in a majority of seeds (rendered)
    calls: tuple[int, ...]
    seconds: tuple[float | None, ...]  # mean over seeds of the cell's seconds at that step count
    below: tuple[int | None, ...]  # per sampler: the rendered step count below (the crossing lies in between)
    agree: int  # seeds in which every one of `samplers` is among the fewest
    seeds: int
    reached: bool  # some sampler got there in a majority of seeds

    @property
    def tie(self) -> bool:
        """More than one sampler shares the answer."""
        return len(self.samplers) > 1


@dataclass(frozen=True)
class AtBudget:
    """One topic at a fixed budget of model calls: each deterministic sampler's distance to the reference there
    (log-log interpolated between rendered step counts), and the closest in a majority of seeds."""

    topic: str
    calls: int
    distances: tuple[tuple[str, float], ...]  # (sampler, mean over seeds), for samplers rendered around `calls`
    closest: str | None  # the closest in a majority of seeds, or None
    agree: int
    seeds: int
    far: bool = False  # every sampler is still pre-asymptotic there (above PRE_ASYMPTOTIC): no comparison worth a claim


@dataclass(frozen=True)
class Finding:
    """One statement of the summary with the facts it is made of (for pages that phrase them their own way)."""

    kind: str  # "seeds", "soonest", "budget", "ancestral", "not_converged", "different_limit", "topic_order";
    # across the axes (measure/axes.py): "schedule", "cfg"
    text: str
    samplers: tuple[str, ...] = ()  # registry names it is about
    topics: tuple[str, ...] = ()  # topics where it holds
    seeds: int = 0  # the fewest seeds measured in those topics


@dataclass(frozen=True)
class Findings:
    """Statements, the per-topic answers they are made of, the "predicts the final result at" table, suggestions."""

    findings: tuple[Finding, ...]
    soonest: tuple[Soonest, ...]
    budgets: tuple[AtBudget, ...]
    topics: tuple[str, ...]
    predicts: tuple[tuple[SamplerSummary, tuple[SamplerSummary | None, ...]], ...]  # per sampler, per topic
    suggestions: tuple[str, ...]
    workflow: Workflow | None
    seeds: int  # the fewest seeds measured in any topic

    @property
    def statements(self) -> tuple[str, ...]:
        """The findings' sentences, in order."""
        return tuple(f.text for f in self.findings)


def findings(analysis: Analysis) -> Findings:
    """Derive the index page's statements, tables and suggestions from measured facts only: those of one sampler x
    steps matrix from the default view of a study with more axes (Analysis.default_view), then what the schedules
    and CFG values change (measure/axes.py)."""
    if not analysis.axes:
        return matrix_findings(analysis)
    from reportgen.measure.axes import compare_axes

    found = matrix_findings(analysis.default_view())
    across = tuple(Finding(kind=c.axis, text=c.text, samplers=(c.sampler,), topics=c.topics,
                           seeds=found.seeds) for c in compare_axes(analysis))
    return replace(found, findings=found.findings + across)


def matrix_findings(analysis: Analysis) -> Findings:
    """The statements, tables and suggestions of one sampler x steps matrix (one value of every other axis)."""
    topics = tuple(analysis.topics())
    names = list(dict.fromkeys(s.sampler for s in analysis.samplers))
    by = {(s.topic, s.sampler): s for s in analysis.samplers}
    seeds = min(len(s.seeds) for s in analysis.samplers)
    labels = {s.sampler: s.label for s in analysis.samplers}
    soonest = tuple(soonest_in(analysis, topic, what, target) for what, target, _ in SOONEST for topic in topics)
    budgets = tuple(b for topic in topics for calls in analysis.budgets
                    if (b := at_budget(analysis, topic, calls)) is not None)
    differ = {(s.topic, s.sampler) for s in analysis.samplers if s.limit_differs}
    statements = [*_seeds(seeds), *_soonest(soonest, labels, len(topics), differ),
                  *_budgets(budgets, labels, topics, PRE_ASYMPTOTIC[analysis.thresholds.metric]),
                  *_never(analysis, names), *_limits(analysis, names),
                  *_topic_order(analysis, topics)]
    predicts = tuple((first, tuple(by.get((t, name)) for t in topics))
                     for name in names
                     if not (first := next(s for s in analysis.samplers if s.sampler == name)).ancestral)
    plans = workflows(analysis, topics)
    plan = min((p for p in plans if p.workflow_nfe < p.direct_nfe), key=lambda p: (p.workflow_nfe, p.final_nfe),
               default=None)  # the cheapest plan that costs less than rendering every candidate in full
    return Findings(findings=tuple(statements), soonest=soonest, budgets=budgets, topics=topics, predicts=predicts,
                    suggestions=tuple(_suggestions(analysis, names, plan, bool(plans), len(topics))), workflow=plan,
                    seeds=seeds)


def majority(values: list[int | None]) -> int | None:
    """The smallest count by which a majority of seeds got there (a rendered count), or None if no majority did."""
    need = len(values) // 2 + 1
    reached = sorted(v for v in values if v is not None)
    return reached[need - 1] if len(reached) >= need else None


def soonest_in(analysis: Analysis, topic: str, what: str, target: str) -> Soonest:
    """Per seed, the samplers that reach `what` against `target` in the fewest calls; those that do so in a
    majority of the topic's seeds are the topic's answer (several: a tie)."""
    rows = [s for s in analysis.for_topic(topic) if not s.ancestral]
    seed_list = list(dict.fromkeys(seed.seed for s in rows for seed in s.seeds))
    wins: dict[str, int] = {}
    for seed in seed_list:
        calls = {s.sampler: n for s in rows if (n := _calls(s, seed, what, target)) is not None}
        if calls:
            best = min(calls.values())
            for name, n in calls.items():
                if n == best:
                    wins[name] = wins.get(name, 0) + 1
    need = len(seed_list) // 2 + 1
    chosen = [s for s in rows if wins.get(s.sampler, 0) >= need]
    counts = {s.sampler: majority([_steps(seed, what, target) for seed in s.seeds]) for s in rows}
    topic_steps = sorted({n for s in rows for n in s.seeds[0].steps})
    steps = tuple(counts[s.sampler] or 0 for s in chosen)
    return Soonest(
        topic=topic, what=what, target=target, samplers=tuple(s.sampler for s in chosen), steps=steps,
        calls=tuple(get_sampler(s.sampler).nfe(n) for s, n in zip(chosen, steps, strict=True)),
        seconds=tuple(_seconds(analysis, topic, s.sampler, n) for s, n in zip(chosen, steps, strict=True)),
        below=tuple(max((m for m in topic_steps if m < n), default=None) for n in steps),
        agree=min((wins[s.sampler] for s in chosen), default=0), seeds=len(seed_list),
        reached=any(v is not None for v in counts.values()),
    )


def at_budget(analysis: Analysis, topic: str, calls: int) -> AtBudget | None:
    """The topic's deterministic samplers at `calls` model calls; None when fewer than two were rendered around it."""
    rows = [s for s in analysis.for_topic(topic) if not s.ancestral]
    distances = []
    for s in rows:
        value = dict(s.budgets).get(calls)
        if value is not None:
            distances.append((s.sampler, value))
    if len(distances) < 2:
        return None
    seed_list = list(dict.fromkeys(seed.seed for s in rows for seed in s.seeds))
    wins: dict[str, int] = {}
    for seed in seed_list:
        here = {s.sampler: d for s in rows for one in s.seeds if one.seed == seed
                if (d := dict(one.budgets).get(calls)) is not None}
        if len(here) >= 2:
            best = min(here, key=lambda name: here[name])
            wins[best] = wins.get(best, 0) + 1
    need = len(seed_list) // 2 + 1
    far = min(d for _, d in distances) > PRE_ASYMPTOTIC[analysis.thresholds.metric]
    closest = None if far else next((name for name, n in wins.items() if n >= need), None)
    return AtBudget(topic=topic, calls=calls, distances=tuple(distances), closest=closest,
                    agree=wins.get(closest, 0) if closest else 0, seeds=len(seed_list), far=far)


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


def _steps(seed: SeedSummary, what: str, target: str) -> int | None:
    prefix = "reference_" if target == "reference" else ""
    value = getattr(seed, f"{prefix}{what}_steps")
    return value if isinstance(value, int) else None


def _calls(summary: SamplerSummary, seed: int, what: str, target: str) -> int | None:
    one = next((s for s in summary.seeds if s.seed == seed), None)
    steps = _steps(one, what, target) if one is not None else None
    return get_sampler(summary.sampler).nfe(steps) if steps is not None else None


def _seconds(analysis: Analysis, topic: str, sampler: str, steps: int) -> float | None:
    """The mean over seeds of the cells' own seconds at that step count (None where no record holds them)."""
    seconds = [m.seconds for m in analysis.cells if (m.topic, m.sampler, m.steps) == (topic, sampler, steps)
               and m.seconds is not None]
    return sum(seconds) / len(seconds) if seconds else None


def _seeds(seeds: int) -> list[Finding]:
    if seeds >= ENOUGH_SEEDS:
        return []
    text = ("These findings rest on one seed per topic: another seed may overturn any of them. Render "
            f"{ENOUGH_SEEDS} seeds (seeds = {ENOUGH_SEEDS} in study.toml) to test them." if seeds == 1 else
            f"These findings rest on {seeds} seeds per topic, so each holds in every seed measured; render "
            f"{ENOUGH_SEEDS} or more (seeds in study.toml) to find which survive another.")
    return [Finding("seeds", text, seeds=seeds)]


def _soonest(answers: tuple[Soonest, ...], labels: dict[str, str], topics: int,
             differ: set[tuple[str, str]] | None = None) -> list[Finding]:
    """One statement per question: which samplers got there first in which topics, ties stated as ties; a sampler
    that converges to its own final where its final is not the reference's (`differ`: (topic, sampler)) says so, so
    that no statement reads as contradicting the different-limit one."""
    out = []
    differ = differ or set()
    for what, target, phrase in SOONEST:
        mine = [a for a in answers if a.what == what and a.target == target]
        alone: dict[str, list[Soonest]] = {}
        ties: dict[tuple[str, ...], list[Soonest]] = {}
        none, split = [], []
        for a in mine:
            if not a.reached:
                none.append(a.topic)
            elif not a.samplers:
                split.append(a.topic)
            elif a.tie:
                ties.setdefault(a.samplers, []).append(a)
            else:
                alone.setdefault(a.samplers[0], []).append(a)
        if not alone and not ties:
            continue
        seeds = min(a.seeds for a in mine)
        def name_of(name: str, where: list[Soonest], target: str = target) -> str:
            mark = target == "final" and any((a.topic, name) in differ for a in where)
            return labels[name] + (" (to a different limit from the reference's)" if mark else "")

        clauses = [f"{name_of(name, where)} in {_of(len(where), topics)} ({'; '.join(_where(a) for a in where)})"
                   for name, where in sorted(alone.items(), key=lambda kv: -len(kv[1]))]
        clauses += [f"a tie of {_and([name_of(n, where) for n in group])} in {_of(len(where), topics)} "
                    f"({'; '.join(_where(a) for a in where)})" for group, where in ties.items()]
        if split:
            clauses.append(f"no sampler in a majority of seeds in {', '.join(split)}")
        if none:
            clauses.append(f"none within the steps rendered in {', '.join(none)}")
        majority_of = f"a majority of {seeds} seeds" if seeds > 1 else "one seed"
        out.append(Finding(
            "soonest", f"Fewest model calls until it {phrase} ({majority_of}): {'; '.join(clauses)}.",
            samplers=tuple(dict.fromkeys([*alone, *(n for g in ties for n in g)])),
            topics=tuple(a.topic for a in mine if a.samplers), seeds=seeds))
    return out


def _where(a: Soonest) -> str:
    """'landscape: 20 steps, 20 calls' (a tie: each sampler's steps and calls)."""
    parts = [f"{n} steps, {c} calls" for n, c in zip(a.steps, a.calls, strict=True)]
    some = f", {a.agree} of {a.seeds} seeds" if a.agree < a.seeds else ""  # the tables' counts hold in every seed
    return f"{a.topic}: {' / '.join(dict.fromkeys(parts))}{some}"


def _budgets(rows: tuple[AtBudget, ...], labels: dict[str, str], topics: tuple[str, ...],
             level: float) -> list[Finding]:
    """Which sampler is closest to the reference at each budget of model calls, in a majority of seeds."""
    if not rows:
        return []
    clauses = []
    for calls in dict.fromkeys(b.calls for b in rows):
        mine = [b for b in rows if b.calls == calls]
        winners: dict[str, list[str]] = {}
        for b in mine:
            winners.setdefault(labels[b.closest] if b.closest else ("-far" if b.far else ""), []).append(b.topic)
        parts = [f"{name} in {_of(len(where), len(topics))}" for name, where in
                 sorted(winners.items(), key=lambda kv: -len(kv[1])) if not name.startswith("-") and name]
        if "" in winners:
            parts.append(f"no sampler in a majority of seeds in {', '.join(winners[''])}")
        if "-far" in winners:
            parts.append(f"none yet within {level:g} of it in {_of(len(winners['-far']), len(topics))}")
        clauses.append(f"at {calls} calls {', '.join(parts)}")
    seeds = min(b.seeds for b in rows)
    return [Finding("budget", "Closest to the reference for a fixed budget of model calls (the distance at that "
                              "many calls, interpolated in log-log between the rendered step counts around it; "
                              f"{'a majority of ' + str(seeds) + ' seeds' if seeds > 1 else 'one seed'}): "
                              f"{'; '.join(clauses)}.",
                    samplers=tuple(dict.fromkeys(b.closest for b in rows if b.closest)),
                    topics=tuple(dict.fromkeys(b.topic for b in rows)), seeds=seeds)]


def _never(analysis: Analysis, names: list[str]) -> list[Finding]:
    """Ancestral samplers, and deterministic ones that converged in no topic in a majority of seeds."""
    out = []
    for name in names:
        rows = [s for s in analysis.samplers if s.sampler == name]
        label = rows[0].label
        if rows[0].ancestral:
            variability = [s.variability for s in rows if s.variability is not None]
            score = f" (mean change between step counts {median_low(variability):.3g})" if variability else ""
            out.append(Finding("ancestral", f"{label} is ancestral: it adds fresh noise at every step and never "
                                            f"converges{score}.", samplers=(name,),
                               topics=tuple(s.topic for s in rows)))
        elif not any(majority([seed.converged_steps for seed in s.seeds]) is not None for s in rows):
            out.append(Finding("not_converged", f"{label} did not converge to its own final image within the steps "
                                                f"rendered in any topic (up to {max(s.max_steps for s in rows)} "
                                                "steps, a majority of seeds).", samplers=(name,),
                               topics=tuple(s.topic for s in rows), seeds=min(len(s.seeds) for s in rows)))
    return out


def _limits(analysis: Analysis, names: list[str]) -> list[Finding]:
    """Deterministic samplers whose final image stays away from the reference's in a majority of seeds, with the
    differences of schedule that explain it (render/schedule.py)."""
    out = []
    for name in names:
        rows = [s for s in analysis.samplers if s.sampler == name and s.limit_differs]
        if not rows:
            continue
        metric = analysis.thresholds.metric
        gaps = "; ".join(f"{s.topic}: {s.final_to_reference:.3g}"
                         + (f", {s.limit_seeds} of {len(s.seeds)} seeds" if len(s.seeds) > 1 else "")
                         + f" ({scale(s.final_to_reference, metric)})" for s in rows)
        causes = list(dict.fromkeys(d for s in rows for d in s.differences))
        why = (f" Its schedule differs from the reference's: {'; '.join(causes)}." if causes else
               " No difference between its schedule and the reference's explains it.")
        # A sampler with the same schedule in the same topic shows how much the schedule alone accounts for.
        for s in rows:
            peers = [p for p in analysis.for_topic(s.topic) if p.sampler != s.sampler and not p.ancestral
                     and not p.limit_differs and p.final_schedule is not None and p.final_schedule == s.final_schedule
                     and p.final_to_reference is not None]
            if peers and s.differences and s.final_to_reference is not None:
                peer = min(peers, key=lambda p: p.final_to_reference or 0.0)
                why += (f" In {s.topic}, {peer.label}, with the same schedule, ends {peer.final_to_reference:.3g} from "
                        f"the reference: the schedule accounts for about that much of the {s.final_to_reference:.3g}.")
        unrelated = UNRELATED[analysis.thresholds.metric]
        wild = [s.topic for s in rows if (s.final_to_reference or 0) > unrelated]
        if wild:  # farther than unrelated images: not a nearby limit but another picture, or a diverged run
            why += (f" In {', '.join(wild)} it is farther from the reference than two unrelated images are "
                    f"({unrelated:.2g}): it drew another picture there, or diverged.")
        out.append(Finding(
            "different_limit", f"{rows[0].label}'s final image stays away from the reference ({gaps}; threshold "
                               f"{analysis.thresholds.limit:g}), farther than its own last change: it approaches a "
                               f"different limit.{why}",
            samplers=(name,), topics=tuple(s.topic for s in rows), seeds=min(len(s.seeds) for s in rows)))
    return out


def _topic_order(analysis: Analysis, topics: tuple[str, ...]) -> list[Finding]:
    """Topics ordered by the lower median of the step counts by which their samplers converged (a majority of
    seeds): a count that was rendered."""
    medians = {}
    for topic in topics:
        steps = [n for s in analysis.for_topic(topic) if not s.ancestral
                 if (n := majority([seed.converged_steps for seed in s.seeds])) is not None]
        if steps:
            medians[topic] = median_low(steps)
    if len(medians) < 2 or len(set(medians.values())) < 2:
        return []
    low, high = min(medians.values()), max(medians.values())
    first = [t for t in topics if medians.get(t) == low]
    last = [t for t in topics if medians.get(t) == high]
    return [Finding("topic_order", f"Earliest to converge: {_and(first)} (median {low} steps over the samplers that "
                                   f"converged in a majority of seeds); latest: {_and(last)} (median {high} steps).",
                    topics=tuple(first + last))]


def _suggestions(analysis: Analysis, names: list[str], plan: Workflow | None, planned: bool, topics: int) -> list[str]:
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
    # A general warning needs the different limit in a majority of topics (each in a majority of its seeds).
    differ = [n for n in names if 2 * sum(s.limit_differs for s in analysis.samplers if s.sampler == n) > topics]
    if differ:
        labels = _and([next(s.label for s in analysis.samplers if s.sampler == n) for n in differ])
        out.append(f"Do not expect {labels} to match the other samplers at high step counts: their final images "
                   f"stay away from {analysis.reference_label}'s in most topics.")
    return out


def _of(count: int, total: int) -> str:
    return f"{count} of {total} topic{'s' if total != 1 else ''}"


def _and(labels: list[str]) -> str:
    return labels[0] if len(labels) == 1 else f"{', '.join(labels[:-1])} and {labels[-1]}"
