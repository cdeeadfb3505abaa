"""The answer a page opens with: which sampler, how many steps, and whether to preview first.

Computed from measure/findings.py's structured findings (never written by hand): per topic, the deterministic
sampler that indicates its own final image in the fewest model calls and the one that converges in the fewest
(left out: samplers whose final image is not the reference's, since they converge to another picture), ties stated
once as ties, and where the answer is limited by the step counts rendered, the count to render next. The
preview-then-polish plan is `findings.workflows` at the data's step counts, or why none saves anything. Seconds are
a sampler's measured cost alone (`reportgen speed`, speed.json) where there is one: a batched render's per-cell
seconds are shares of shared calls, not what an image costs (site/speed.py, `seconds_alone`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

from reportgen.measure.analysis import Analysis
from reportgen.measure.findings import CANDIDATES, KEPT, Findings, Soonest, Workflow, soonest_in, workflows
from reportgen.samplers import get_sampler

# (sampler, model calls, topic) -> seconds alone, or None where no speed was measured
Cost = Callable[[str, int, str], float | None]


@dataclass(frozen=True)
class Answer:
    """One question's answer in one topic: the sampler(s), their steps and calls, and what limits it."""

    question: str  # "indicates" or "converges"
    samplers: tuple[str, ...]  # registry names; several: a tie; () when there is no answer
    steps: tuple[int, ...]
    calls: tuple[int, ...]
    seconds: tuple[float | None, ...]  # alone, from speed.json
    text: str  # the sentence
    short: str = ""  # for a table cell: "K_EULER at 20 steps (20 model calls)", "–" when there is no answer
    edge: str = ""  # the grid's limit on the answer, and what to render to know more ("" when exact)
    left_out: tuple[str, ...] = ()  # samplers not considered: their final image differs from the reference's


@dataclass(frozen=True)
class TopicVerdict:
    """A topic's verdict: the two answers and the plan."""

    topic: str
    title: str
    indicates: Answer
    converges: Answer
    plan: str

    @property
    def lines(self) -> tuple[str, ...]:
        """The verdict's sentences, in order."""
        return tuple(" ".join(x for x in parts if x) for parts in ((self.indicates.text, self.indicates.edge),
                                                                  (self.converges.text, self.converges.edge),
                                                                  (self.plan,)) if any(parts))


@dataclass(frozen=True)
class Verdict:
    """The study's verdict (the index opens with it) and each topic's (each topic page opens with its own)."""

    headline: tuple[str, ...]  # across topics, one sentence per question, then the plan
    topics: tuple[TopicVerdict, ...]
    seeds: int
    plan: Workflow | None

    def for_topic(self, slug: str) -> TopicVerdict | None:
        """The topic's verdict, or None when it has no measurements."""
        return next((t for t in self.topics if t.topic == slug), None)


QUESTIONS = {"indicates": "indicated its final image", "converges": "converged"}  # the verb each answer uses


def verdict(analysis: Analysis, facts: Findings, titles: dict[str, str], cost: Cost | None = None) -> Verdict:
    """The verdict of every measured topic and across them, from the findings' per-topic answers."""
    cost = cost or (lambda sampler, calls, topic: None)
    topics = []
    for slug in facts.topics:
        indicates = next(a for a in facts.soonest if (a.topic, a.what, a.target) == (slug, "indicator", "final"))
        # Converged to its own final, among the samplers whose final is the reference's: a sampler that converges
        # to another picture is not an answer to "how many steps until the image stops changing toward the result".
        differ = tuple(s.sampler for s in analysis.for_topic(slug) if s.limit_differs and not s.ancestral)
        same = dataclasses.replace(analysis, samplers=tuple(s for s in analysis.samplers if s.sampler not in differ
                                                            or s.topic != slug))
        converges = soonest_in(same, slug, "converged", "final")
        steps = sorted({n for s in analysis.for_topic(slug) for n in s.seeds[0].steps})
        topics.append(TopicVerdict(
            topic=slug, title=titles.get(slug, slug),
            indicates=_answer("indicates", indicates, steps, analysis, cost),
            converges=_answer("converges", converges, steps, analysis, cost, differ),
            plan=_plan_text(_cheapest(workflows(_only(analysis, slug), (slug,))), cost, slug, topic_wide=True,
                            reason=_no_plan_reason(workflows(_only(analysis, slug), (slug,))))))
    plans = workflows(analysis, facts.topics)
    plan = _cheapest(plans)
    headline = [_across(topics, "indicates", analysis), _across(topics, "converges", analysis),
                _plan_text(plan, cost, facts.topics[0] if facts.topics else "", topic_wide=False,
                           reason=_no_plan_reason(plans))]
    return Verdict(headline=tuple(h for h in headline if h), topics=tuple(topics), seeds=facts.seeds, plan=plan)


def _only(analysis: Analysis, slug: str) -> Analysis:
    return dataclasses.replace(analysis, samplers=tuple(s for s in analysis.samplers if s.topic == slug))


def _cheapest(plans: list[Workflow]) -> Workflow | None:
    """The plan with the fewest calls among those that cost less than rendering every candidate in full."""
    return min((p for p in plans if p.workflow_nfe < p.direct_nfe), key=lambda p: (p.workflow_nfe, p.final_nfe),
               default=None)


def _label(name: str) -> str:
    return get_sampler(name).label


def _and(words: list[str]) -> str:
    return words[0] if len(words) == 1 else f"{', '.join(words[:-1])} and {words[-1]}"


def _seconds(values: list[float | None]) -> str:
    known = [v for v in values if v is not None]
    if not known or len(known) < len(values):
        return ""
    low, high = min(known), max(known)
    return f", {low:.2g} s alone" if high - low < 0.005 * max(high, 1e-9) else f", {low:.2g}–{high:.2g} s alone"


def _answer(question: str, a: Soonest, steps: list[int], analysis: Analysis, cost: Cost,
            left_out: tuple[str, ...] = ()) -> Answer:
    """The sentence for one topic's answer, with the step grid's limit on it."""
    past = QUESTIONS[question]
    what = "Indicates its final image soonest" if question == "indicates" else "Converges soonest"
    seeds = _seed_clause(question, a, analysis, steps) if a.seeds > 1 else ""
    skipped = (f" {_and([_label(n) for n in left_out])} {'is' if len(left_out) == 1 else 'are'} left out: "
               f"{'its final image is' if len(left_out) == 1 else 'their final images are'} not the reference's."
               if left_out and question == "converges" else "")
    if not a.samplers:
        why = (f"no sampler {past} within the steps rendered (up to {steps[-1]} steps): render more steps"
               if not a.reached else f"no sampler {past} first in a majority of the {a.seeds} seeds")
        return Answer(question, (), (), (), (), f"{what}: {why}.{skipped}", "–", left_out=left_out)
    seconds = tuple(cost(name, calls, a.topic) for name, calls in zip(a.samplers, a.calls, strict=True))
    groups: dict[tuple[int, int], list[str]] = {}
    for name, n, c in zip(a.samplers, a.steps, a.calls, strict=True):
        groups.setdefault((n, c), []).append(_label(name))
    if len(groups) == 1:
        (n, c), names = next(iter(groups.items()))
        each = " each" if len(names) > 1 else ""
        who = f"{'a tie of ' if len(names) > 1 else ''}{_and(names)} at {n} steps ({c} model calls{each}"
    else:
        who = "a tie of " + _and([f"{', '.join(names)} at {n} steps" for (n, _), names in groups.items()]) + \
              f" ({next(iter(groups))[1]} model calls each"
    text = f"{what}: {who}{_seconds(list(seconds))}){seeds}.{skipped}"
    return Answer(question, a.samplers, a.steps, a.calls, seconds, text, f"{who})", _edge(past, a, steps), left_out)


def _seed_clause(question: str, a: Soonest, analysis: Analysis, steps: list[int]) -> str:
    """How many seeds got there by the answer's step count, and by when every seed did (the count the topic's
    tables and the plan use: they hold for every seed), so the verdict and the tables never seem to disagree."""
    field = "indicator_steps" if question == "indicates" else "converged_steps"
    clauses = []
    for name, n in zip(a.samplers, a.steps, strict=True):
        summary = next(s for s in analysis.for_topic(a.topic) if s.sampler == name)
        reached = sum(1 for seed in summary.seeds if (m := getattr(seed, field)) is not None and m <= n)
        worst = getattr(summary, field)
        if reached == len(summary.seeds):
            clauses.append("in every seed")
        else:
            every = f"every seed by {worst} steps" if worst is not None else \
                f"not every seed within {steps[-1]} steps"
            clauses.append(f"in {reached} of {len(summary.seeds)} seeds; {every}")
    unique = list(dict.fromkeys(clauses))
    if len(unique) == 1:
        return f", {unique[0]}"
    return ", " + "; ".join(f"{_label(name)} {c}" for name, c in zip(a.samplers, clauses, strict=True))


def _edge(past: str, a: Soonest, steps: list[int]) -> str:
    """Where the step counts rendered limit the answer: the crossing lies between the count below and this one."""
    notes = []
    for n, below in dict.fromkeys(zip(a.steps, a.below, strict=True)):
        if below is None:
            notes.append(f"{past} by {n}, the fewest steps rendered: render fewer steps to know whether fewer are "
                         "enough")
        elif n - below > 1:
            notes.append(f"{past} by {n}, the smallest count rendered after {below}: render {(below + n) // 2} to "
                         "know more")
    return ("The step counts rendered limit this answer: " + "; ".join(notes) + ".") if notes else ""


def _across(topics: list[TopicVerdict], question: str, analysis: Analysis) -> str:
    """One sentence across topics: the sampler(s) that answer in the most topics, and the most steps they needed."""
    answers = [getattr(t, question) for t in topics]
    what = "Indicates its final image soonest" if question == "indicates" else "Converges soonest"
    counts: dict[str, list[int]] = {}
    for a in answers:
        for name, n in zip(a.samplers, a.steps, strict=True):
            counts.setdefault(name, []).append(n)
    if not counts:
        return f"{what}: no sampler in any topic within the steps rendered."
    most = max(len(v) for v in counts.values())
    total = len(topics)
    if 2 * most <= total:  # no sampler answers in a majority of topics: one name would mislead
        return f"{what}: a different sampler in different topics; each topic's answer is in the table below."
    best = [name for name, v in counts.items() if len(v) == most]
    groups: dict[tuple[int, int], list[str]] = {}
    for name in best:
        groups.setdefault((max(counts[name]), get_sampler(name).nfe(max(counts[name]))), []).append(_label(name))
    parts = [f"{_and(names)} (by {n} steps, {c} model calls{' each' if len(names) > 1 else ''}, at most)"
             for (n, c), names in groups.items()]
    tie = "a tie of " if len(best) > 1 else ""
    where = "every topic" if most == total else f"{most} of {total} topics"
    others = [t.title for t, a in zip(topics, answers, strict=True) if not set(best) & set(a.samplers)]
    rest = f"; elsewhere ({', '.join(others)}) see the topic's own answer" if others else ""
    return f"{what}, across topics: {tie}{_and(parts)}, in {where}{rest}."


def _no_plan_reason(plans: list[Workflow]) -> str:
    if not plans:
        return ("no sampler both indicated and converged in every seed within the steps rendered (a plan takes the "
                "worst seed), so there is no measured preview step count to plan with")
    return ("in every seed (a plan takes the worst seed), no sampler's image indicated its final at fewer steps than "
            f"it needed to converge, so previews would cost as much as finals ({CANDIDATES} previews plus {KEPT} "
            f"finals cost more than {CANDIDATES} finals); render finer step counts below the converged ones to find a "
            "cheaper preview")


def _plan_text(plan: Workflow | None, cost: Cost, topic: str, *, topic_wide: bool, reason: str) -> str:
    """The preview-then-polish plan the data supports, or why none does."""
    where = "in this topic" if topic_wide else "with one plan for every topic (each sampler's worst case over topics)"
    if plan is None:
        return f"Preview, then polish {where}: none saves anything: {reason}."
    text = (f"Preview, then polish {where}: preview with {plan.label} at {plan.preview_steps} steps "
            f"({plan.preview_nfe} model calls), polish the keepers at {plan.final_steps} steps ({plan.final_nfe} "
            f"calls); {CANDIDATES} previews plus {KEPT} finals cost {plan.workflow_nfe} model calls instead of "
            f"{plan.direct_nfe} ({plan.direct_nfe / plan.workflow_nfe:.1f}x fewer)")
    preview, final = cost(plan.sampler, plan.preview_nfe, topic), cost(plan.sampler, plan.final_nfe, topic)
    if preview is not None and final is not None:
        text += (f", about {CANDIDATES * preview + KEPT * final:.0f} s instead of {CANDIDATES * final:.0f} s at the "
                 "speed measured alone")
    return text + "."
