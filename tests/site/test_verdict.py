"""The verdict pages open with, from synthetic distances: ties stated once, a different-limit sampler left out of
"converges soonest", the step grid's limit named with the count to render next, and the preview-then-polish plan the
data supports or why none does; the same sentences on the HTML and the Markdown pages."""

from __future__ import annotations

import html
import re
from types import SimpleNamespace

from reportgen.measure.analysis import Analysis, CellMetrics, Thresholds, summarize
from reportgen.measure.findings import findings
from reportgen.samplers import get_sampler
from reportgen.site.verdict import Verdict, verdict

Series = dict[int, list[tuple[float, float]]]  # steps -> per seed: (distance to own final, to the reference)
STEPS = (10, 20, 40)


def synthetic(series: dict[tuple[str, str], Series], steps: tuple[int, ...] = STEPS) -> Analysis:
    """An Analysis made by measure/analysis.py's own summarize() from given distances (latent, k_heun reference)."""
    thresholds = Thresholds()
    cells = []
    for (topic, sampler), by_steps in series.items():
        for n, per_seed in sorted(by_steps.items()):
            for seed, (own, ref) in enumerate(per_seed):
                previous = by_steps.get(max((m for m in by_steps if m < n), default=0))
                cells.append(CellMetrics(topic, seed, sampler, n, get_sampler(sampler).nfe(n), 1.0,
                                         f"{topic}-{sampler}-{n}-{seed}", own, own, ref, ref,
                                         abs(previous[seed][0] - own) if previous else None, None))
    summaries = tuple(summarize(t, s, [m for m in cells if (m.topic, m.sampler) == (t, s)], thresholds, "k_heun",
                                4 * max(steps), budgets=steps) for t, s in series)
    topics = tuple(dict.fromkeys(t for t, _ in series))
    return Analysis("k_heun", thresholds, tuple(cells), summaries, 0, 0, 0, (),
                    reference_steps=tuple((t, 4 * max(steps)) for t in topics), budgets=steps)


def series(indicates: int, converges: int, seeds: int = 3, limit: float = 0.01,
           steps: tuple[int, ...] = STEPS) -> Series:
    """Within the indicator threshold (0.15) of its own final from `indicates` steps, within the converged one (0.05)
    from `converges`; its final `limit` from the reference (above 0.1: a different limit)."""
    out = {}
    for n in steps:
        own = 0.0 if n == steps[-1] else (0.02 if n >= converges else (0.1 if n >= indicates else 0.4))
        out[n] = [(own, limit + own if n >= converges else 0.4)] * seeds
    return out


def made(analysis: Analysis) -> Verdict:
    return verdict(analysis, findings(analysis), {"a": "Alpha", "b": "Beta"},
                   cost=lambda sampler, calls, topic: 0.5 * calls)  # 0.5 s per model call alone


def pages(v: Verdict) -> tuple[str, str]:
    """The study's and every topic's verdict as the site's own partials render them: (HTML, Markdown)."""
    import jinja2

    from reportgen.site.pages import environment, template_dirs

    env = environment(template_dirs())
    env.loader = jinja2.ChoiceLoader([jinja2.DictLoader({
        f"page.{ext}": f'{{% import "_verdict.{ext}" as v %}}{{{{ v.study_verdict(site, "") }}}}'
                       f'{{% for t in site.verdict.topics %}}{{{{ v.topic_verdict(site, {{"slug": t.topic}}, "") }}}}'
                       "{% endfor %}"
        for ext in ("html", "md")}), env.loader])
    site = SimpleNamespace(verdict=v)
    page, md = (env.get_template(f"page.{ext}").render(site=site) for ext in ("html", "md"))
    return page, md


def text_of(html_page: str) -> str:
    return html.unescape(re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html_page)))


def markdown_text(md: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"\\(.)", r"\1", md))


def every_sentence_on_both_pages(v: Verdict) -> None:
    page, md = pages(v)
    shown_html, shown_md = text_of(page), markdown_text(md)
    lines = [*v.headline, *(line for t in v.topics for line in t.lines)]
    assert lines
    for line in lines:
        assert line in shown_html, line
        assert line in shown_md, line


def test_a_tie_is_stated_once_and_the_grid_limit_says_what_to_render():
    """DDIM, K_EULER and K_LMS all indicate and converge at 20 steps (20 calls) in every seed; K_HEUN at 20 steps
    needs 39 calls. The crossing lies between 10 and 20: the answer says so and asks for 15."""
    v = made(synthetic({("a", s): series(20, 20) for s in ("ddim", "k_euler", "k_lms", "k_heun")}))
    a = v.for_topic("a")
    assert a is not None
    assert a.converges.samplers == ("ddim", "k_euler", "k_lms") and a.indicates.samplers == a.converges.samplers
    assert a.converges.text == ("Converges soonest: a tie of DDIM, K_EULER and K_LMS at 20 steps (20 model calls "
                                "each, 10 s alone), in every seed.")
    assert a.converges.edge == ("The step counts rendered limit this answer: converged by 20, the smallest count "
                                "rendered after 10: render 15 to know more.")
    assert a.indicates.edge.endswith("indicated its final image by 20, the smallest count rendered after 10: render "
                                     "15 to know more.")
    lines = " ".join(a.lines)
    assert lines.count("DDIM") == 2 and "K_HEUN" not in lines  # once per question, the tie named together
    assert v.headline[1] == ("Converges soonest, across topics: a tie of DDIM, K_EULER and K_LMS (by 20 steps, 20 "
                             "model calls each, at most), in every topic.")
    every_sentence_on_both_pages(v)


def test_a_sampler_converging_to_a_different_limit_is_not_the_answer():
    """K_LMS settles on its own final at 10 steps, but that final stays 0.3 from the reference (a different limit):
    "converges soonest" is K_EULER at 20, and the sentence says why K_LMS is left out."""
    analysis = synthetic({("a", "k_lms"): series(10, 10, limit=0.3), ("a", "k_euler"): series(10, 20)})
    lms = next(s for s in analysis.samplers if s.sampler == "k_lms")
    assert lms.limit_differs and lms.converged_steps == 10  # the case the issue found on the demo
    a = made(analysis).for_topic("a")
    assert a is not None and a.converges.samplers == ("k_euler",) and a.converges.steps == (20,)
    assert a.converges.text == ("Converges soonest: K_EULER at 20 steps (20 model calls, 10 s alone), in every seed. "
                                "K_LMS is left out: its final image is not the reference's.")
    # indicating its own final is still a fair answer for a preview: both did at 10 steps, the fewest rendered
    assert a.indicates.samplers == ("k_lms", "k_euler") and "a tie of K_LMS and K_EULER at 10 steps" in a.indicates.text
    assert a.indicates.edge == ("The step counts rendered limit this answer: indicated its final image by 10, the "
                                "fewest steps rendered: render fewer steps to know whether fewer are enough.")
    every_sentence_on_both_pages(made(analysis))


def test_the_plan_is_the_one_the_data_supports_or_says_why_there_is_none():
    """Indicating at 10 and converging at 40 saves calls: 100 x 10 + 3 x 40 = 1,120 against 4,000. Indicating only
    where it converges saves nothing, and the verdict says so instead of quoting the guide's arithmetic."""
    saving = made(synthetic({(t, "k_euler"): series(10, 40, steps=(10, 40, 80)) for t in ("a", "b")}))
    plan = saving.headline[-1]
    assert plan == ("Preview, then polish with one plan for every topic (each sampler's worst case over topics): "
                    "preview with K_EULER "
                    "at 10 steps (10 model calls), polish the keepers at 40 steps (40 calls); 100 previews plus 3 "
                    "finals cost 1120 model calls instead of 4000 (3.6x fewer), about 560 s instead of 2000 s at the "
                    "speed measured alone.")
    assert saving.plan is not None and saving.plan.sampler == "k_euler"
    every_sentence_on_both_pages(saving)

    none = made(synthetic({(t, s): series(20, 20) for t in ("a", "b") for s in ("ddim", "k_euler")}))
    assert none.plan is None
    assert none.headline[-1].startswith("Preview, then polish with one plan for every topic (each sampler's worst case "
                                        "over topics): none saves anything")
    assert ("in every seed (a plan takes the worst seed), no sampler's image indicated its final at fewer steps "
            "than it needed to converge") in none.headline[-1]
    for t in none.topics:
        assert t.plan.startswith("Preview, then polish in this topic: none saves anything")
    every_sentence_on_both_pages(none)


def test_no_answer_within_the_steps_rendered_says_what_to_render():
    never = {n: [(0.0 if n == 40 else 0.4, 0.4)] * 3 for n in STEPS}
    v = made(synthetic({("a", "ddim"): never, ("a", "k_euler"): never}))
    a = v.for_topic("a")
    assert a is not None and a.converges.samplers == () and a.converges.short == "–"
    assert a.converges.text == ("Converges soonest: no sampler converged within the steps rendered (up to 40 steps): "
                                "render more steps.")
    assert v.headline[0] == "Indicates its final image soonest: no sampler in any topic within the steps rendered."
    every_sentence_on_both_pages(v)


def test_a_majority_answer_says_when_every_seed_got_there():
    """DDIM converges at 20 steps in 2 of 3 seeds and at 40 in the third: the verdict gives 20 (a majority) and says
    every seed needed 40, the count the topic's table (every seed) and the plan use."""
    steps = (10, 20, 40, 80)
    ddim = series(10, 20, steps=steps)
    ddim[20] = [(0.02, 0.03), (0.02, 0.03), (0.1, 0.11)]
    a = made(synthetic({("a", "ddim"): ddim, ("a", "k_euler"): series(10, 40, steps=steps)}, steps)).for_topic("a")
    assert a is not None and a.converges.samplers == ("ddim",)
    assert a.converges.text == ("Converges soonest: DDIM at 20 steps (20 model calls, 10 s alone), in 2 of 3 seeds; "
                                "every seed by 40 steps.")


def test_across_topics_no_sampler_is_named_for_topics_it_does_not_win():
    """DDIM converges first in topic a, K_EULER in b: the headline names neither for both, the table gives each."""
    v = made(synthetic({("a", "ddim"): series(10, 20), ("a", "k_euler"): series(10, 40),
                        ("b", "ddim"): series(10, 40), ("b", "k_euler"): series(10, 20)}))
    assert v.headline[1] == ("Converges soonest: a different sampler in different topics; each topic's answer is in "
                             "the table below.")
    assert [t.converges.short for t in v.topics] == ["DDIM at 20 steps (20 model calls)",
                                                     "K_EULER at 20 steps (20 model calls)"]
    every_sentence_on_both_pages(v)
