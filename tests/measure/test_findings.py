"""The summary's claims from synthetic distances: ties stated as ties, claims that need a majority of seeds,
only rendered step counts, fixed budgets, and the reference sampler never fitted against itself."""

from __future__ import annotations

import math
import re

import pytest

from reportgen.measure.analysis import Analysis, CellMetrics, Thresholds, at_budget, summarize
from reportgen.measure.findings import findings
from reportgen.render.schedule import Schedule
from reportgen.samplers import get_sampler

Series = dict[int, list[tuple[float, float]]]  # steps -> per seed: (distance to own final, to the reference)
STEPS = (10, 20, 40)


K_SAMPLER = Schedule(999.0, 0.0292, True, "")  # the reference's schedule, and every K-sampler's
LEADING = Schedule(976.0, 0.0292, False, "")  # DDIM's and PLMS's at 40 steps: leading spacing, no final denoise


def synthetic(series: dict[tuple[str, str], Series], reference_steps: int = 160,
              schedules: dict[str, Schedule] | None = None) -> Analysis:
    """An Analysis made by the module's own summarize() from given distances (latent metric, k_heun reference),
    with each sampler's schedule from `schedules` (at every step count)."""
    thresholds = Thresholds()
    cells = []
    for (topic, sampler), by_steps in series.items():
        facts = (schedules or {}).get(sampler)
        for n, per_seed in sorted(by_steps.items()):
            for seed, (own, ref) in enumerate(per_seed):
                previous = by_steps.get(max((m for m in by_steps if m < n), default=0))
                cells.append(CellMetrics(topic, seed, sampler, n, get_sampler(sampler).nfe(n), 1.0,
                                         f"{topic}-{sampler}-{n}-{seed}", own, own, ref, ref,
                                         abs(previous[seed][0] - own) if previous else None, None,
                                         *((facts.first_timestep, facts.last_sigma, facts.final_denoise,
                                            facts.step_problem) if facts else ())))
    budgets = tuple(sorted({n for by_steps in series.values() for n in by_steps}))
    summaries = tuple(summarize(t, s, [m for m in cells if (m.topic, m.sampler) == (t, s)], thresholds, "k_heun",
                                reference_steps, reference_facts=K_SAMPLER if schedules else None, budgets=budgets)
                      for t, s in series)
    topics = tuple(dict.fromkeys(t for t, _ in series))
    return Analysis("k_heun", thresholds, tuple(cells), summaries, 0, 0, 0, (),
                    reference_steps=tuple((t, reference_steps) for t in topics), budgets=budgets)


def converging(at: int, seeds: int = 3, gap: float = 0.01) -> Series:
    """A series that reaches its own final (and the reference, `gap` away from it) from `at` steps on."""
    return {n: [(0.0 if n == STEPS[-1] else (0.02 if n >= at else 0.3), gap if n >= at else 0.3)] * seeds
            for n in STEPS}


def test_a_three_way_tie_is_stated_once_as_a_tie():
    """DDIM, K_EULER and K_LMS all converge at 20 steps (20 calls) in every seed; K_HEUN at 20 steps needs 39 calls."""
    analysis = synthetic({("a", s): converging(20) for s in ("ddim", "k_euler", "k_lms", "k_heun")}
                         | {("b", "ddim"): converging(40), ("b", "k_euler"): converging(20),
                            ("b", "k_lms"): converging(40), ("b", "k_heun"): converging(20)})
    facts = findings(analysis)
    answer = next(a for a in facts.soonest if (a.topic, a.what, a.target) == ("a", "converged", "reference"))
    assert answer.samplers == ("ddim", "k_euler", "k_lms") and answer.tie
    assert (answer.steps, answer.calls, answer.agree, answer.seeds) == ((20, 20, 20), (20, 20, 20), 3, 3)
    assert answer.below == (10, 10, 10)  # the crossing lies between 10 and 20: the grid limits the answer
    lines = [s for s in facts.statements if s.startswith("Fewest model calls until it converged to the reference")]
    assert lines == ["Fewest model calls until it converged to the reference (a majority of 3 seeds): K_EULER in 1 of "
                     "2 topics (b: 20 steps, 20 calls); a tie of DDIM, K_EULER and K_LMS in 1 of 2 topics "
                     "(a: 20 steps, 20 calls)."]
    assert not any("K_HEUN" in s for s in lines)


def test_a_win_in_one_seed_of_three_is_no_claim():
    """K_EULER converges first in seed 0 only; DDIM in seeds 1 and 2: the topic's answer is DDIM."""
    euler = converging(40)
    euler[20] = [(0.02, 0.01), (0.3, 0.3), (0.3, 0.3)]
    ddim = converging(40)
    ddim[20] = [(0.3, 0.3), (0.02, 0.01), (0.02, 0.01)]
    answer = next(a for a in findings(synthetic({("a", "k_euler"): euler, ("a", "ddim"): ddim})).soonest
                  if (a.what, a.target) == ("converged", "reference"))
    assert answer.samplers == ("ddim",) and answer.agree == 2 and answer.steps == (20,)


@pytest.mark.parametrize("flagged", [1, 2])
def test_a_different_limit_in_one_seed_is_no_finding(flagged: int):
    """DDIM's final stays 0.19 from the reference in `flagged` of 3 seeds (0.03 in the others), while its own last
    change is small: a majority (2 of 3) makes it a finding; one seed does not, and no suggestion generalises it."""
    ddim = converging(20)
    ddim[40] = [(0.0, 0.19 if seed < flagged else 0.03) for seed in range(3)]
    analysis = synthetic({("a", "ddim"): ddim, ("a", "k_euler"): converging(20)})
    summary = next(s for s in analysis.samplers if s.sampler == "ddim")
    assert summary.limit_seeds == flagged and summary.limit_differs == (flagged == 2)
    facts = findings(analysis)
    limits = [f for f in facts.findings if f.kind == "different_limit"]
    if flagged == 1:
        assert limits == [] and summary.status == "converged by 20"
        assert not any("Do not expect" in s for s in facts.suggestions)
    else:
        assert [f.samplers for f in limits] == [("ddim",)] and "a: 0.137, 2 of 3 seeds" in limits[0].text
        assert summary.status == "converges to a different limit (2 of 3 seeds)"
        assert any(s.startswith("Do not expect DDIM") for s in facts.suggestions)  # 1 of 1 topics: a majority


def test_one_seed_says_its_claims_rest_on_it():
    facts = findings(synthetic({("a", "ddim"): converging(20, seeds=1), ("a", "k_euler"): converging(40, seeds=1)}))
    assert facts.seeds == 1 and facts.findings[0].kind == "seeds"
    assert facts.statements[0].startswith("These findings rest on one seed per topic")
    three = findings(synthetic({("a", "ddim"): converging(20), ("a", "k_euler"): converging(40)}))
    assert not any(f.kind == "seeds" for f in three.findings)


def test_statements_name_only_rendered_step_counts():
    """Two topics whose samplers converged at 10 and 20: the topic order's median is a rendered count (10), never
    the 15 a plain median would give."""
    analysis = synthetic({("a", "ddim"): converging(10), ("a", "k_euler"): converging(20),
                          ("b", "ddim"): converging(20), ("b", "k_euler"): converging(40)})
    facts = findings(analysis)
    order = next(s for s in facts.statements if s.startswith("Earliest to converge"))
    assert order == ("Earliest to converge: a (median 10 steps over the samplers that converged in a majority of "
                     "seeds); latest: b (median 20 steps).")
    for text in facts.statements:
        assert {int(n) for n in re.findall(r"(\d+) steps", text)} <= set(STEPS), text


def test_fixed_budgets_compare_samplers_at_the_same_model_calls():
    # Heun at 10 and 20 steps makes 19 and 39 calls: at 20 calls it is interpolated in log-log, at 10 it is not there.
    slope = math.log(0.1 / 0.4) / math.log(39 / 19)
    assert at_budget([19, 39, 79], [0.4, 0.1, 0.025], 20) == pytest.approx(0.4 * (20 / 19) ** slope)
    assert at_budget([19, 39, 79], [0.4, 0.1, 0.025], 39) == 0.1
    assert at_budget([19, 39, 79], [0.4, 0.1, 0.025], 10) is None
    heun = {10: [(0.2, 0.02)] * 3, 20: [(0.05, 0.005)] * 3, 40: [(0.0, 0.001)] * 3}
    euler = {10: [(0.3, 0.1)] * 3, 20: [(0.1, 0.05)] * 3, 40: [(0.0, 0.02)] * 3}
    facts = findings(synthetic({("a", "k_euler"): euler, ("a", "k_heun"): heun}))
    by_calls = {b.calls: b for b in facts.budgets}
    assert sorted(by_calls) == [20, 40]  # at 10 calls only K_EULER was rendered: no comparison
    assert by_calls[20].closest == "k_heun" and by_calls[20].agree == 3
    assert dict(by_calls[40].distances)["k_euler"] == 0.02
    line = next(s for s in facts.statements if s.startswith("Closest to the reference for a fixed budget"))
    assert "interpolated in log-log" in line and "at 20 calls K_HEUN in 1 of 1 topic" in line


def test_the_reference_sampler_is_never_fitted_against_itself():
    """With reference_steps = 0 the reference is K_HEUN's own highest step: K_HEUN gets no fit (it would be a fit
    of its own convergence order against its own image); the others are fitted against it, below its steps."""
    thresholds = Thresholds()
    rows = [CellMetrics("a", 0, "k_heun", n, 2 * n - 1, None, str(n), 0.0, 0.0, 0.0 if n == 160 else 2.0 / n**2,
                        0.0, None, None) for n in (10, 20, 40, 80, 160)]
    alone = summarize("a", "k_heun", rows, thresholds, "k_heun", 160, separate=False)
    assert alone.fit is None and alone.fit_note.startswith("no separate reference (reference_steps = 0)")
    separate = summarize("a", "k_heun", rows, thresholds, "k_heun", 160, separate=True)
    assert separate.fit is not None and separate.fit.steps == (10, 20, 40, 80)
    assert separate.fit_range is not None and separate.fit_range.dropped == ((160, "reference"),)
    assert separate.fit.exponent == pytest.approx(-2.0)


def test_a_different_limit_names_its_schedule_and_what_a_peer_with_the_same_schedule_shows():
    """PLMS ends 1.1 from the reference, DDIM (the same leading schedule, no final denoise) 0.03: the finding names the
    schedule's differences and says they account for about DDIM's 0.03, not for PLMS's 1.1."""
    plms = converging(20)
    plms[40] = [(0.0, 1.1)] * 3
    analysis = synthetic({("a", "plms"): plms, ("a", "ddim"): converging(20, gap=0.03),
                          ("a", "k_euler"): converging(20)},
                         schedules={"plms": LEADING, "ddim": LEADING, "k_euler": K_SAMPLER})
    text = next(f.text for f in findings(analysis).findings if f.kind == "different_limit")
    assert "it ends at sigma 0.0292 without a final denoise" in text
    assert "it starts at timestep 976, the reference at 999" in text  # the same start at every count here
    assert "depends on the steps" not in text
    assert text.endswith("In a, DDIM, with the same schedule, ends 0.03 from the reference: the schedule accounts for "
                         "about that much of the 1.1.")
    assert next(s for s in analysis.samplers if s.sampler == "k_euler").differences == ()


def test_a_budget_where_every_sampler_is_still_far_names_no_winner():
    far = {10: [(1.0, 0.9)] * 3, 20: [(0.1, 0.05)] * 3, 40: [(0.0, 0.01)] * 3}
    farther = {10: [(1.0, 1.2)] * 3, 20: [(0.2, 0.1)] * 3, 40: [(0.0, 0.02)] * 3}
    facts = findings(synthetic({("a", "ddim"): far, ("a", "k_euler"): farther}))
    at10 = next(b for b in facts.budgets if b.calls == 10)
    assert at10.far and at10.closest is None
    line = next(s for s in facts.statements if s.startswith("Closest to the reference"))
    assert "at 10 calls none yet within 0.5 of it in 1 of 1 topic; at 20 calls DDIM in 1 of 1 topic" in line
