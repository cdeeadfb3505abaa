"""An Analysis as plain data: data/metrics.csv (per cell) and data/fits.json (per topic and sampler)."""

from __future__ import annotations

import csv
import io
import json
from dataclasses import asdict
from typing import Any

from reportgen.measure.analysis import Analysis, CellMetrics, SeedSummary
from reportgen.measure.fits import PRE_ASYMPTOTIC


def export_files(analysis: Analysis) -> dict[str, bytes]:
    """The exports as site-relative paths and bytes: data/metrics.csv and data/fits.json."""
    return {"data/metrics.csv": metrics_csv(analysis).encode(),
            "data/fits.json": (json.dumps(fits_records(analysis), indent=1) + "\n").encode()}



def metrics_csv(analysis: Analysis) -> str:
    """The per-cell distances as CSV text."""
    buffer = io.StringIO()
    fields = list(CellMetrics.__dataclass_fields__)
    writer = csv.DictWriter(buffer, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    for m in analysis.cells:
        writer.writerow({k: "" if v is None else (f"{v:.6g}" if isinstance(v, float) else v)
                         for k, v in asdict(m).items()})
    return buffer.getvalue()



def fits_records(analysis: Analysis) -> list[dict[str, Any]]:
    """One plain dict per topic and sampler: derived steps (to the own final and to the reference), convergence,
    the rate fit with its range, and the schedule differences from the reference."""
    records = []
    for s in analysis.samplers:
        fit, chosen = s.fit, s.fit_range
        records.append({
            "topic": s.topic, "sampler": s.sampler, "label": s.label, "ancestral": s.ancestral,
            "model": s.model, "schedule": s.schedule, "cfg": s.cfg,  # the lane's other axes
            "order": s.order, "expected_exponent": s.expected_exponent, "expected_note": s.expected_note,
            "exponent": _round(fit.exponent) if fit else None, "coefficient": _round(fit.coefficient) if fit else None,
            "exponent_spread": _round(fit.spread) if fit else None, "spread_kind": fit.spread_kind if fit else None,
            "exponent_high": _round(fit.exponent_high) if fit else None,
            "exponent_low": _round(fit.exponent_low) if fit else None,
            "residual": _round(fit.residual) if fit else None, "fit_points": fit.points if fit else 0,
            "fit_steps": list(chosen.steps) if chosen else [],
            "fit_dropped": [{"steps": n, "reason": why} for n, why in chosen.dropped] if chosen else [],
            "fit_floor": _round(chosen.floor) if chosen else None,
            "fit_range": chosen.describe(PRE_ASYMPTOTIC[analysis.thresholds.metric]) if chosen else "",
            "fit_note": s.fit_note, "metric": analysis.thresholds.metric,
            "indicator_steps": s.indicator_steps, "indicator_nfe": s.indicator_nfe,
            "indicator_seconds": _round(s.indicator_seconds), "converged_steps": s.converged_steps,
            "converged_nfe": s.converged_nfe, "converged_seconds": _round(s.converged_seconds),
            "reference_indicator_steps": s.reference_indicator_steps,
            "reference_indicator_nfe": s.reference_indicator_nfe,
            "reference_converged_steps": s.reference_converged_steps,
            "reference_converged_nfe": s.reference_converged_nfe,
            "converges": s.converges, "converges_to_reference": s.converges_to_reference,
            "limit_differs": s.limit_differs, "limit_seeds": s.limit_seeds, "seeds": len(s.seeds),
            "differences": list(s.differences), "status": s.status,
            "final_to_reference": _round(s.final_to_reference), "variability": _round(s.variability),
            "budgets": [{"calls": calls, "distance": _round(d)} for calls, d in s.budgets],
            "max_steps": s.max_steps, "reference_sampler": analysis.reference_sampler,
            "reference_steps": s.reference_steps,
            "per_seed": [_seed_record(seed) for seed in s.seeds],
        })
    return records


def _seed_record(seed: SeedSummary) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in asdict(seed).items():
        if k in ("topic", "sampler", "steps"):
            continue
        if k == "budgets":
            out[k] = [{"calls": calls, "distance": _round(d)} for calls, d in seed.budgets]
        else:
            out[k] = _round(v) if isinstance(v, float) else v
    return out


def _round(value: float | None) -> float | None:
    return None if value is None else float(f"{value:.6g}")
