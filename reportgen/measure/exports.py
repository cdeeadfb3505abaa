"""An Analysis as plain data: data/metrics.csv (per cell) and data/fits.json (per topic and sampler)."""

from __future__ import annotations

import csv
import io
import json
from dataclasses import asdict
from typing import Any

from reportgen.measure.analysis import Analysis, CellMetrics


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
    """One plain dict per topic and sampler: derived steps, convergence, and the rate fit."""
    records = []
    for s in analysis.samplers:
        fit = s.fit
        records.append({
            "topic": s.topic, "sampler": s.sampler, "label": s.label, "ancestral": s.ancestral,
            "order": s.order, "expected_exponent": s.expected_exponent,
            "exponent": _round(fit.exponent) if fit else None, "coefficient": _round(fit.coefficient) if fit else None,
            "exponent_spread": _round(fit.spread) if fit else None, "spread_kind": fit.spread_kind if fit else None,
            "residual": _round(fit.residual) if fit else None, "fit_points": fit.points if fit else 0,
            "fit_note": s.fit_note, "metric": analysis.thresholds.metric,
            "indicator_steps": s.indicator_steps, "indicator_nfe": s.indicator_nfe,
            "indicator_seconds": _round(s.indicator_seconds), "converged_steps": s.converged_steps,
            "converged_nfe": s.converged_nfe, "converged_seconds": _round(s.converged_seconds),
            "converges": s.converges, "limit_differs": s.limit_differs, "status": s.status,
            "final_to_reference": _round(s.final_to_reference), "variability": _round(s.variability),
            "max_steps": s.max_steps, "reference_sampler": analysis.reference_sampler,
            "per_seed": [{k: _round(v) if isinstance(v, float) else v for k, v in asdict(seed).items()
                          if k not in ("topic", "sampler", "steps")} for seed in s.seeds],
        })
    return records



def _round(value: float | None) -> float | None:
    return None if value is None else float(f"{value:.6g}")
