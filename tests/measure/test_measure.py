import json
import math
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from conftest import run_main, write_study
from typer.testing import CliRunner

from reportgen.cli import app
from reportgen.errors import StudyError
from reportgen.measure.analysis import (
    Analysis,
    CellMetrics,
    Thresholds,
    analyze,
    first_from,
    first_staying_under,
    load_thresholds,
    reference_points,
    summarize_seed,
)
from reportgen.measure.exports import export_files
from reportgen.measure.findings import findings
from reportgen.measure.fits import fit_power_law, fit_rate
from reportgen.measure.plots import rates_plot, topic_plots
from reportgen.render import jobs as workflow
from reportgen.study.load import load_study

runner = CliRunner()
STEPS = [2, 4, 8, 16]


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One topic at 32x32: three deterministic samplers and one ancestral; the reference is k_heun at the default
    reference_steps (4 x 16 = 64), rendered beside the matrix."""
    root = write_study(tmp_path_factory.mktemp("measure") / "study",
                       samplers=["k_euler", "ddim", "k_euler_a", "k_heun"], steps=STEPS,
                       topics={"anime": '"an anime girl" -W32 -H32 -C7.5 -S3031912972'},
                       reference_steps=None)
    result, _ = workflow.run_render(workflow.prepare_render(root))
    assert result.rendered == 17 and not result.failed
    return root


@pytest.fixture(scope="module")
def analysis(rendered: Path) -> Analysis:
    job = workflow.prepare_render(rendered)
    return analyze(job.study, job.store, job.plan.cells, job.model.scheduler_config)


def series(analysis: Analysis, sampler: str, target: str = "final") -> list[float]:
    rows = sorted((m for m in analysis.cells if m.sampler == sampler), key=lambda m: m.steps)
    assert [m.steps for m in rows] == STEPS
    return [m.distance("latent", target) for m in rows]


@pytest.mark.parametrize("sampler", ["k_euler", "ddim"])
def test_distance_to_own_final_is_zero_at_the_final_and_falls_with_steps(analysis: Analysis, sampler: str):
    latent = series(analysis, sampler)
    assert latent[-1] == 0.0
    assert all(d > 0 for d in latent[:-1])
    assert latent[0] > latent[1] > latent[2], latent  # more steps, closer to the sampler's own limit
    ssim = [m.ssim_to_final for m in sorted((m for m in analysis.cells if m.sampler == sampler), key=lambda m: m.steps)]
    assert ssim[-1] == 0.0 and ssim[0] > ssim[-2]


def test_the_reference_sampler_is_measured_against_the_separate_reference(analysis: Analysis):
    """k_heun at 64 steps is the reference: it is no row of the matrix, and k_heun's own cells (2-16 steps) are
    measured and fitted against it, never against k_heun's own highest step."""
    assert analysis.reference_steps == (("anime", 64),)
    assert all(m.steps in STEPS for m in analysis.cells)  # the reference cell is a target, not a measured row
    heun = series(analysis, "k_heun", "reference")
    assert all(d > 0 for d in heun) and heun != series(analysis, "k_heun")
    summary = next(s for s in analysis.samplers if s.sampler == "k_heun")
    assert summary.reference_steps == 64 and summary.fit_range is not None
    assert set(summary.fit_range.steps) | {n for n, _ in summary.fit_range.dropped} == set(STEPS)
    euler = next(s for s in analysis.samplers if s.sampler == "k_euler")
    own = series(analysis, "k_euler")
    assert euler.indicator_steps == first_staying_under(STEPS, own, analysis.thresholds.indicator)
    if euler.indicator_steps is not None:
        assert euler.indicator_nfe == euler.indicator_steps  # Euler: one model call per step
        assert euler.indicator_seconds is not None and euler.indicator_seconds > 0
    to_ref = series(analysis, "k_euler", "reference")
    assert euler.reference_converged_steps == first_from(STEPS, to_ref, analysis.thresholds.converged)


def test_every_cell_carries_its_schedule(rendered: Path, analysis: Analysis):
    """Each row has its first timestep, last sigma and final denoise: from its record, and for a cell rendered before
    records held them, from the registry with the model's scheduler config."""
    from dataclasses import replace

    from reportgen.render.store import Store, StoredCell

    class OldRecords(Store):  # the same store, as a render before the schedule was recorded left it
        def get(self, key: str) -> StoredCell | None:
            found = super().get(key)
            return found and replace(found, record={k: v for k, v in found.record.items() if k != "schedule"})

    ddim = sorted((m for m in analysis.cells if m.sampler == "ddim"), key=lambda m: m.steps)
    assert [m.first_timestep for m in ddim] == [(n - 1) * (1000 // n) + 1 for n in STEPS] == [501, 751, 876, 931]
    end = math.sqrt(0.00085 / (1 - 0.00085))  # alphas_cumprod[0] = 1 - beta_start: where set_alpha_to_one=False ends
    assert all(m.final_denoise is False and m.last_sigma == pytest.approx(end, rel=1e-4) for m in ddim)  # float32
    assert [bool(m.step_problem) for m in ddim] == [False, False, False, True]  # 1000 % 16 != 0
    assert all(m.final_denoise is True for m in analysis.cells if m.sampler == "k_euler")
    records = {c.key: c.record for c in Store(rendered / "store").cells()}
    assert all(records[m.key]["schedule"]["first_timestep"] == m.first_timestep for m in analysis.cells)
    job = workflow.prepare_render(rendered)
    old = OldRecords(job.store.root)
    assert analyze(job.study, old, job.plan.cells, job.model.scheduler_config).cells == analysis.cells
    unknown = analyze(job.study, old, job.plan.cells)  # neither a record nor the model's config: unknown
    assert all(m.first_timestep is None and m.final_denoise is None for m in unknown.cells)


def test_ancestral_sampler_is_flagged_not_given_a_converged_step(analysis: Analysis):
    ancestral = next(s for s in analysis.samplers if s.sampler == "k_euler_a")
    assert ancestral.ancestral and not ancestral.converges
    assert ancestral.indicator_steps is None and ancestral.converged_steps is None and ancestral.fit is None
    assert ancestral.variability is not None and ancestral.variability > 0
    assert ancestral.status == "ancestral: does not converge"
    facts = findings(analysis)
    assert any(s.startswith("K_EULER_A is ancestral") and "never converges" in s for s in facts.statements)
    assert all(row.sampler != "k_euler_a" for row, _ in facts.predicts)


def test_distances_are_cached(rendered: Path, analysis: Analysis):
    assert analysis.computed > 0
    job = workflow.prepare_render(rendered)
    again = analyze(job.study, job.store, job.plan.cells)
    assert (again.computed, again.cached) == (0, analysis.computed + analysis.cached)
    assert again.cells == analysis.cells


def test_analyze_command_json_and_exports(rendered: Path, analysis: Analysis, tmp_path: Path):
    result = runner.invoke(app, ["analyze", str(rendered), "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert (out["cells"], out["missing"], out["computed"]) == (16, 0, 0)
    fits = {f["sampler"]: f for f in out["fits"]}
    assert fits["k_euler_a"]["converges"] is False and fits["k_euler_a"]["exponent"] is None
    assert fits["k_euler"]["expected_exponent"] == -1

    exports = export_files(analysis)
    assert sorted(exports) == ["data/fits.json", "data/metrics.csv"]
    lines = exports["data/metrics.csv"].decode().splitlines()
    assert lines[0].startswith("topic,seed,sampler,steps,nfe,") and len(lines) == 17
    # the cell's schedule, then the lane's other axes (a study without them: no model, the default schedule)
    assert lines[0].endswith(",first_timestep,last_sigma,final_denoise,step_problem,model,schedule,cfg")
    assert all(line.endswith(",,default,7.5") for line in lines[1:])
    assert json.loads(exports["data/fits.json"]) == out["fits"]


def test_plots_are_offline_svg(analysis: Analysis):
    rates = rates_plot(analysis)
    svgs = [*topic_plots(analysis, "anime").values(), rates]
    for svg in svgs:
        assert svg.lstrip().startswith("<?xml") and "<svg" in svg
        assert "<text" not in svg  # glyphs drawn as paths: no font needed
        assert "href=\"http" not in svg and "url(http" not in svg
    assert rates_plot(analysis) == rates  # same data, same bytes


def test_fit_recovers_a_known_exponent_from_noisy_data():
    rng = np.random.default_rng(7)
    steps = [10, 20, 30, 40, 50, 100, 200]
    for exponent in (-1.0, -2.0, -1.5):
        rows = [CellMetrics("t", seed, "k_heun", n, 2 * n - 1, None, f"{seed}-{n}", 0.0, 0.0,
                            0.3 * n**exponent * math.exp(rng.normal(0, 0.05)), 0.0, None, None)
                for seed in (1, 2, 3) for n in steps]
        fit, chosen, note = fit_rate(reference_points(rows, "latent"))
        assert fit is not None and note == "" and chosen.steps == tuple(steps) and chosen.dropped == ()
        assert abs(fit.exponent - exponent) < 0.05
        assert fit.spread_kind == "seeds" and 0 < fit.spread < 0.1 and fit.seeds == 3
        assert 0 < fit.residual < 0.1
        assert fit.sensitivity is not None and fit.sensitivity < 0.1
    b, a, residual = fit_power_law([1, 2, 4, 8], [5.0, 2.5, 1.25, 0.625])
    assert (round(b, 9), round(a, 9), round(residual, 9)) == (-1.0, 5.0, 0.0)


@pytest.mark.parametrize(("order", "floor"), [(1.0, 0.02), (2.0, 0.004)])
def test_fit_range_leaves_out_the_pre_asymptotic_start_and_the_floor(order: float, floor: float):
    """A known order between a start farther than unrelated images (non-monotone, as K_LMS at 5-10 steps) and a
    floor (a limit `floor` away from the reference's): the fit finds the order within 0.1 and names its range."""
    rng = np.random.default_rng(3)
    steps = [4, 8, 16, 32, 64, 128, 256, 512, 1024]
    start = {4: 1.1, 8: 1.6}  # pre-asymptotic: farther at 8 than at 4

    def distance(n: int) -> float:  # 0.3 at 16 steps; the error and the gap add in quadrature
        return start.get(n) or math.hypot(0.3 * (n / 16) ** -order, floor)

    points = [(n, distance(n) * math.exp(rng.normal(0, 0.03)), seed) for seed in (1, 2, 3) for n in steps]
    fit, chosen, note = fit_rate(points, level=0.5)
    assert fit is not None and note == ""
    assert abs(fit.exponent + order) < 0.1, (fit.exponent, chosen)
    assert chosen.dropped[0] == (4, "pre-asymptotic") and (8, "pre-asymptotic") in chosen.dropped
    assert chosen.floor is not None and 0.9 * floor < chosen.floor < 1.5 * floor
    assert chosen.dropped[-1] == (1024, "floor") and fit.steps == chosen.steps
    assert all(distance(n) > 0.5 or distance(n) <= 3 * chosen.floor for n, _ in chosen.dropped)
    text = chosen.describe(0.5)
    assert text.startswith(f"{chosen.steps[0]}-{chosen.steps[-1]} steps (left out: 4, ")
    assert "4, 8 pre-asymptotic, distance above 0.5" in text
    assert f"on the floor, within 3x of {chosen.floor:.3g})" in text
    # Without the range the same points miss the order by more than the 0.1 the range achieves.
    assert abs(fit_power_law([n for n, _, _ in points], [d for _, d, _ in points])[0] + order) > 0.1


def test_points_at_or_above_the_reference_steps_are_not_fitted():
    points = [(n, 0.3 * n**-1.0, 1) for n in (10, 20, 40, 80, 160)]
    fit, chosen, _ = fit_rate(points, below=80)
    assert fit is not None and fit.steps == (10, 20, 40) and chosen.dropped == ((80, "reference"), (160, "reference"))


def test_fit_says_too_few_points_and_skips_zero_distances():
    rows = [CellMetrics("t", 1, "k_euler", n, n, None, str(n), 0.0, 0.0, d, 0.0, None, None)
            for n, d in ((10, 0.3), (20, 0.2), (40, 0.0))]
    fit, chosen, note = fit_rate(reference_points(rows, "latent"))
    assert fit is None and chosen.dropped == ((40, "no distance"),)
    assert note.startswith("too few points: 2 step counts in the fit range, need 3; range 10-20 steps (left out: 40 "
                           "no distance above 0)")


def test_thresholds_apply_as_documented():
    steps = [10, 20, 30, 40, 50, 100]
    # Dips under 0.15 at 30, goes back over at 40: the indicator step is where it stays under (50).
    assert first_staying_under(steps, [0.5, 0.2, 0.12, 0.16, 0.04, 0.0], 0.15) == 50
    assert first_staying_under(steps, [0.5, 0.14, 0.12, 0.10, 0.04, 0.0], 0.15) == 20
    assert first_staying_under(steps, [0.14, 0.1, 0.1, 0.1, 0.04, 0.0], 0.15) == 10
    assert first_staying_under(steps, [0.5, 0.1, 0.1, 0.1, 0.06, 0.0], 0.05) is None  # only the final: not counted
    assert first_staying_under(steps, [0.15, 0.1, 0.1, 0.1, 0.05, 0.0], 0.15) == 10  # "under" includes equal

    t = Thresholds(indicator=0.15, converged=0.05, limit=0.10)

    def rows(own: list[float], final_to_ref: float) -> list[CellMetrics]:
        return [CellMetrics("t", 1, "ddim", n, n, 0.5 * n, str(n), d, 0.0, final_to_ref if n == 100 else 1.0, 0.0,
                            None if i == 0 else 0.2, None) for i, (n, d) in enumerate(zip(steps, own, strict=True))]

    summary = summarize_seed(rows([0.5, 0.2, 0.12, 0.1, 0.04, 0.0], 0.02), t, ancestral=False)
    assert (summary.indicator_steps, summary.converged_steps) == (30, 50)
    assert (summary.indicator_nfe, summary.indicator_seconds) == (30, 15.0)
    assert summary.variability == pytest.approx(0.2) and not summary.limit_differs
    # The final is 0.3 from the reference but its own last change was 0.04: a different limit.
    assert summarize_seed(rows([0.5, 0.2, 0.12, 0.1, 0.04, 0.0], 0.3), t, ancestral=False).limit_differs
    # 0.3 from the reference while its last change is 0.4: it is still moving; no verdict on its limit.
    assert not summarize_seed(rows([0.9, 0.8, 0.7, 0.6, 0.4, 0.0], 0.3), t, ancestral=False).limit_differs
    ancestral = summarize_seed(rows([0.5, 0.02, 0.02, 0.02, 0.02, 0.0], 0.3), t, ancestral=True)
    assert (ancestral.indicator_steps, ancestral.converged_steps, ancestral.limit_differs) == (None, None, False)


def test_thresholds_from_study_toml(tmp_path: Path):
    topics = {"a": '"x" -W32 -H32 -S1'}
    study = load_study(write_study(tmp_path / "d", samplers=["k_euler"], steps=[2], topics=topics))
    assert load_thresholds(study) == Thresholds("latent", 0.15, 0.05, 0.10)
    study = load_study(write_study(tmp_path / "s", samplers=["k_euler"], steps=[2], topics=topics,
                                   extra='[thresholds]\nmetric = "ssim"\nconverged = 0.02\n'))
    assert load_thresholds(study) == Thresholds("ssim", 0.20, 0.02, 0.10)
    for bad, message in (('metric = "lpips"', "metric must be one of"), ("indicator = -1", "indicator must be"),
                         ("converged = 0.5", "converged (0.5) must not exceed indicator")):
        # (an unknown key is refused earlier, by load_study: tests/test_study_errors.py)
        study = load_study(write_study(tmp_path / "bad", samplers=["k_euler"], steps=[2], topics=topics,
                                       extra=f"[thresholds]\n{bad}\n"))
        with pytest.raises(StudyError, match=message.replace("(", r"\(").replace(")", r"\)")):
            load_thresholds(study)


def test_analyze_bad_thresholds_and_unrendered_study_exit_2(tmp_path: Path, capsys, monkeypatch):
    root = write_study(tmp_path / "s", samplers=["k_euler"], steps=[2], topics={"a": '"x" -W32 -H32 -S1'},
                       extra="[thresholds]\nindicator = 0\n")
    code, err = run_main(capsys, monkeypatch, "analyze", str(root))
    assert (code, err.splitlines()) == (2, [f"error: {root / 'study.toml'}: [thresholds]: indicator must be a "
                                            "number between 0 and 10, got 0"])
    (root / "study.toml").write_text((root / "study.toml").read_text().replace("indicator = 0", ""))
    code, err = run_main(capsys, monkeypatch, "analyze", str(root))
    assert code == 2 and err.splitlines()[-1].startswith("error: no rendered cells of this study in ")
    assert not (root / "store").exists()


class _Tables(HTMLParser):
    """Collect the text of every cell of the tables with the given ids, by row's data-sampler and cell key."""

    def __init__(self, ids: set[str]) -> None:
        super().__init__()
        self.ids, self.table, self.row, self.key, self.text = ids, None, None, None, None
        self.cells: dict[tuple[str, str, str], str] = {}

    def handle_starttag(self, tag: str, attrs: list) -> None:
        a = dict(attrs)
        if tag == "table" and a.get("id") in self.ids:
            self.table = a["id"]
        elif self.table and tag == "tr":
            self.row = a.get("data-sampler")
        elif self.table and self.row and tag == "td" and ("data-field" in a or "data-topic" in a):
            self.key, self.text = a.get("data-field") or a.get("data-topic"), []

    def handle_endtag(self, tag: str) -> None:
        if tag == "table":
            self.table = None
        elif tag == "td" and self.key is not None:
            self.cells[(self.table, self.row, self.key)] = " ".join("".join(self.text).split())
            self.key = None

    def handle_data(self, data: str) -> None:
        if self.key is not None:
            self.text.append(data)


def test_site_pages_show_what_the_exports_hold(rendered: Path, analysis: Analysis, tmp_path: Path):
    from reportgen.site.build import build_site

    out = tmp_path / "site"
    build_site(rendered, out)
    fits = json.loads((out / "data" / "fits.json").read_text())
    rows = (out / "data" / "metrics.csv").read_text().splitlines()
    assert len(rows) == 1 + 16 and {f["sampler"] for f in fits} == {"k_euler", "ddim", "k_euler_a", "k_heun"}

    topic = _Tables({"convergence-table", "rate-table", "budget-table", "schedule-table"})
    topic.feed((out / "topics" / "anime.html").read_text())
    index = _Tables({"predicts-table", "rates-table"})
    index.feed((out / "index.html").read_text())
    for f in fits:
        shown = {k: v for (_, sampler, k), v in topic.cells.items() if sampler == f["sampler"]}
        for field in ("indicator_steps", "indicator_nfe", "converged_steps", "converged_nfe",
                      "reference_converged_steps", "reference_converged_nfe"):
            assert shown[field] == ("–" if f[field] is None else str(f[field])), (f["sampler"], field)
        assert shown["final_to_reference"] == f"{f['final_to_reference']:,.3f}"
        assert shown["status"] == f["status"]
        if f["ancestral"]:
            assert ("predicts-table", f["sampler"], "anime") not in index.cells and "exponent" not in shown
            continue
        for field in ("exponent", "exponent_spread", "residual"):
            assert shown[field] == ("–" if f[field] is None else f"{f[field]:,.2f}"), (f["sampler"], field)
        assert shown["expected_exponent"] == str(f["expected_exponent"])
        assert shown["fit_steps"] == (f"{f['fit_steps'][0]}–{f['fit_steps'][-1]}" if f["fit_steps"] else "–")
        for budget in f["budgets"]:
            d = budget["distance"]
            assert shown[f"budget-{budget['calls']}"] == ("–" if d is None else f"{d:,.3f}")
        starts = [(m.steps, m.first_timestep) for m in analysis.cells if m.sampler == f["sampler"]]
        assert shown["first_timestep"] == (f"{starts[0][1]:,.0f} (every step count)" if len({t for _, t in starts}) == 1
                                           else ", ".join(f"{t:,.0f} ({n})" for n, t in starts))
        predicted = index.cells[("predicts-table", f["sampler"], "anime")]
        assert predicted == ("–" if f["indicator_steps"] is None
                             else f"{f['indicator_steps']} ({f['indicator_nfe']} calls)")
        rate = index.cells[("rates-table", f["sampler"], "anime")]
        assert rate == ("–" if f["exponent"] is None else f"{f['exponent']:.2f} ± {f['exponent_spread']:.2f} "
                        f"({f['fit_steps'][0]}–{f['fit_steps'][-1]})")
    md = (out / "topics" / "anime.md").read_text()
    assert "## Convergence, measured" in md and "img/plots/anime-steps-" in md
    index_html = (out / "index.html").read_text()
    assert "K_EULER_A is ancestral" in index_html and 'href="data/fits.json"' in index_html
    for svg in (out / "img" / "plots").iterdir():
        assert svg.suffix == ".svg" and svg.name.split("-")[0] in ("anime", "rates")


def _derived(analysis: Analysis, **by_sampler: tuple[int, int]) -> Analysis:
    """The analysis with each named sampler's (indicator, converged) steps replaced."""
    from dataclasses import replace

    from reportgen.samplers import get_sampler

    def nfe(name: str, steps: int) -> int:
        return get_sampler(name).nfe(steps)

    samplers = tuple(replace(s, indicator_steps=(i := by_sampler[s.sampler][0]), indicator_nfe=nfe(s.sampler, i),
                             converged_steps=(c := by_sampler[s.sampler][1]), converged_nfe=nfe(s.sampler, c),
                             limit_differs=False)
                     if s.sampler in by_sampler else s for s in analysis.samplers)
    return replace(analysis, samplers=samplers)


def test_workflow_suggested_only_when_previews_save_calls(analysis: Analysis):
    saving = findings(_derived(analysis, k_euler=(4, 16), ddim=(8, 16), k_heun=(8, 16)))
    assert saving.workflow is not None and saving.workflow.sampler == "k_euler"
    assert saving.workflow.workflow_nfe == 100 * 4 + 3 * 16 and saving.workflow.direct_nfe == 100 * 16
    assert any(s.startswith("Preview with K_EULER at 4 steps") and "(3.6x fewer)" in s for s in saving.suggestions)
    # previews that need as many steps as the finals cost more than the finals alone: no plan, and it says why
    none = findings(_derived(analysis, k_euler=(16, 16), ddim=(8, 8), k_heun=(16, 16)))
    assert none.workflow is None
    assert not any(s.startswith("Preview with") for s in none.suggestions)
    assert any("no sampler predicted its final image at fewer steps" in s for s in none.suggestions)


def test_a_store_that_cannot_take_the_cache_is_still_analysed_and_built(rendered: Path, tmp_path: Path, capsys,
                                                                         monkeypatch):
    """The distances cache is optional: where it cannot be written (here STORE/metrics is a file, as a read-only
    store would refuse it too), analyze says so and goes on, and build publishes."""
    import shutil

    study = tmp_path / "study"
    shutil.copytree(rendered, study)
    shutil.rmtree(study / "store" / "metrics", ignore_errors=True)
    (study / "store" / "metrics").write_text("not a folder")
    code, err = run_main(capsys, monkeypatch, "analyze", study, "--json")
    assert code == 0, err
    assert "note: the distances were not cached (cannot write" in err
    code, err = run_main(capsys, monkeypatch, "build", study, "--out", tmp_path / "site")
    assert code == 0, err
    assert (tmp_path / "site" / "data" / "fits.json").is_file()


def test_an_interrupted_analyze_keeps_the_distances_it_computed(rendered: Path, tmp_path: Path, monkeypatch):
    import shutil

    from reportgen.measure import distances as measure

    study = tmp_path / "study"
    shutil.copytree(rendered, study)
    shutil.rmtree(study / "store" / "metrics", ignore_errors=True)
    job = workflow.prepare_render(study)
    real, calls = measure.ssim_distance, [0]

    def ssim_then_ctrl_c(*args):
        calls[0] += 1
        if calls[0] == 6:
            raise KeyboardInterrupt
        return real(*args)

    monkeypatch.setattr(measure, "ssim_distance", ssim_then_ctrl_c)
    with pytest.raises(KeyboardInterrupt):
        analyze(job.study, job.store, job.plan.cells)
    assert list((study / "store" / "metrics").rglob("*.json"))  # what was computed before Ctrl-C was saved
    monkeypatch.setattr(measure, "ssim_distance", real)
    resumed = analyze(job.study, job.store, job.plan.cells)
    shutil.rmtree(study / "store" / "metrics")
    fresh = analyze(job.study, job.store, job.plan.cells)
    assert resumed.computed == fresh.computed - 5  # the 5 pairs finished before Ctrl-C were not computed again
