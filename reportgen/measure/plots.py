"""SVG charts of an Analysis with matplotlib: per topic, distance against steps and model calls; a summary
of fitted rates. Glyphs are drawn as paths and no date is written, so the files are offline-safe and
the same data gives the same bytes.
"""

from __future__ import annotations

import io
from typing import TYPE_CHECKING, Any

import numpy as np

from reportgen.measure.analysis import Analysis, CellMetrics, SamplerSummary

if TYPE_CHECKING:
    from matplotlib.typing import RcKeyType

_STYLE: dict[RcKeyType, Any] = {"svg.fonttype": "path", "svg.hashsalt": "reportgen", "font.size": 8,
                                "axes.titlesize": 9, "axes.grid": True, "grid.alpha": 0.3, "legend.fontsize": 7}


def topic_plots(analysis: Analysis, topic: str) -> dict[str, str]:
    """Two SVGs for a topic: "steps" (distance to own final and to the reference against steps) and
    "calls" (the same against model calls)."""
    return {axis: _topic_figure(analysis, topic, axis) for axis in ("steps", "calls")}


def rates_plot(analysis: Analysis) -> str:
    """SVG: each deterministic sampler's fitted exponent per topic (with spread) beside minus its order."""
    import matplotlib

    with matplotlib.rc_context(_style()):
        from matplotlib.figure import Figure

        fitted = [s for s in analysis.samplers if s.fit is not None]
        names = list(dict.fromkeys(s.sampler for s in analysis.samplers if not s.ancestral))
        topics = analysis.topics()
        fig = Figure(figsize=(max(4.0, 0.7 * len(names) + 1.5), 3.2), layout="constrained")
        ax = fig.add_subplot()
        width = 0.6 / max(1, len(topics))
        for t_index, topic in enumerate(topics):
            rows = [s for s in fitted if s.topic == topic]
            x = [names.index(s.sampler) - 0.3 + width * (t_index + 0.5) for s in rows]
            y = [s.fit.exponent for s in rows if s.fit]
            err = [s.fit.spread or 0.0 for s in rows if s.fit]
            ax.errorbar(x, y, yerr=err, fmt="o", ms=4, capsize=2, label=topic)
        labels = {s.sampler: s.label for s in analysis.samplers}
        orders = {s.sampler: s.order for s in analysis.samplers}
        for i, name in enumerate(names):
            ax.hlines(-orders[name], i - 0.4, i + 0.4, colors="black", linestyles="dashed", linewidth=1,
                      label="expected: minus the order" if i == 0 else "")  # "": no legend entry, as None
        ax.set_xticks(range(len(names)), [labels[n] for n in names], rotation=30, ha="right")
        ax.set_ylabel("fitted exponent b (distance ~ a·steps^b)")
        ax.set_title(f"Rates of approach to {analysis.reference_label} ({analysis.thresholds.metric} distance)")
        ax.legend(loc="best")
        return _svg(fig)


def _topic_figure(analysis: Analysis, topic: str, axis: str) -> str:
    import matplotlib

    with matplotlib.rc_context(_style()):
        from matplotlib import ticker
        from matplotlib.figure import Figure

        metric = analysis.thresholds.metric
        fig = Figure(figsize=(8.0, 3.4), layout="constrained")
        own, ref = fig.subplots(1, 2, sharex=True)
        for summary in analysis.for_topic(topic):
            rows = [m for m in analysis.cells if m.topic == topic and m.sampler == summary.sampler]
            style = _line_style(summary)
            for ax, target in ((own, "final"), (ref, "reference")):
                x, y = _mean_series(rows, metric, target, axis)
                if len(x):
                    line, = ax.plot(x, y, label=summary.label, **style)
                    fit = summary.fit
                    if target == "reference" and fit is not None and axis == "steps":  # the fit, over its range
                        n = np.asarray(fit.steps, dtype=float)
                        ax.plot(n, fit.coefficient * n**fit.exponent, color=line.get_color(), linestyle=":",
                                linewidth=2.5, alpha=0.6)
        t = analysis.thresholds
        own.axhline(t.indicator, color="grey", linestyle=":", linewidth=1)
        own.axhline(t.converged, color="grey", linestyle="--", linewidth=1)
        for value, what in ((t.indicator, "indicator"), (t.converged, "converged")):
            own.annotate(f"{what} {value:g}", (0.99, value), xycoords=("axes fraction", "data"), fontsize=6,
                         color="grey", va="bottom", ha="right")
        label = "steps" if axis == "steps" else "model calls"
        name = "1 − SSIM" if metric == "ssim" else "relative latent RMS distance"
        own.set_title("to the sampler's own highest-step image")
        steps_of = dict(analysis.reference_steps).get(topic)
        ref.set_title(f"to the reference ({analysis.reference_label} at {steps_of} steps)" if steps_of else
                      f"to the reference ({analysis.reference_label}, most steps)")
        steps = sorted({m.steps for m in analysis.cells if m.topic == topic})
        for ax in (own, ref):
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_xlabel(label)
            ax.set_ylabel(name)
            # Plain numbers on the x axis: the study's own step counts, or decades of model calls.
            ax.xaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}"))
            ax.xaxis.set_minor_formatter(ticker.NullFormatter())
            if axis == "steps":
                ax.set_xticks(steps)
        handles, labels = own.get_legend_handles_labels()  # every sampler has a final; not all a reference
        if handles:
            fig.legend(handles, labels, loc="outside right center")
        return _svg(fig)


def _style() -> dict[RcKeyType, Any]:
    import matplotlib
    from matplotlib.colors import ListedColormap
    from matplotlib.rcsetup import cycler

    # tab20 keeps 20 samplers apart; the default cycle repeats after 10.
    tab20 = matplotlib.colormaps["tab20"]
    assert isinstance(tab20, ListedColormap)  # a fixed list of colours, which a cycle needs
    return {**_STYLE, "axes.prop_cycle": cycler(color=tab20.colors)}


def _mean_series(rows: list[CellMetrics], metric: str, target: str, axis: str) -> tuple[np.ndarray, np.ndarray]:
    """Mean over seeds per step count; zero distances (the target itself) cannot sit on a log axis."""
    by_x: dict[int, list[float]] = {}
    for m in rows:
        d = m.distance(metric, target)
        if d is not None and d > 0:
            by_x.setdefault(m.steps if axis == "steps" else m.nfe, []).append(d)
    xs = sorted(by_x)
    return np.asarray(xs, dtype=float), np.asarray([np.mean(by_x[x]) for x in xs])


def _line_style(summary: SamplerSummary) -> dict[str, Any]:
    # Ancestral samplers dashed: they are not expected to approach anything.
    return {"marker": "o", "markersize": 3, "linewidth": 1.2, "linestyle": "--" if summary.ancestral else "-"}


def _svg(fig: Any) -> str:
    buffer = io.StringIO()
    fig.savefig(buffer, format="svg", metadata={"Date": None, "Creator": None})
    return buffer.getvalue()
