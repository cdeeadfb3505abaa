"""What every measured quantity on the site means, with its scale and the thresholds in force: the methodology
page's "Reading the numbers" table (HTML and Markdown from the same rows), and the phrase that gives a distance its
scale where it stands (measure/distances.py's `scale`: "10% of the way to an unrelated image")."""

from __future__ import annotations

from dataclasses import dataclass

from reportgen.measure.analysis import DEFAULT_THRESHOLDS, Thresholds
from reportgen.measure.distances import UNRELATED, scale
from reportgen.measure.fits import FLOOR_FACTOR, PRE_ASYMPTOTIC
from reportgen.site.speed import SLOWER

FAR_FROM_ORDER = 1.0  # a fitted exponent this far from minus the order is called far from it where it is shown


@dataclass(frozen=True)
class Quantity:
    """One row of the table: what is shown, what it is, how to read its size, and the threshold it is held to."""

    name: str
    meaning: str
    scale: str
    threshold: str


def far_from_order(exponent: float | None, expected: int | None) -> str:
    """'far from the expected -4' where a fit's exponent is FAR_FROM_ORDER or more away from minus the order."""
    if exponent is None or expected is None or abs(exponent - expected) < FAR_FROM_ORDER:
        return ""
    return (f"measured {exponent:.2g}, far from the expected {expected}: the nominal order does not hold at these step "
            "counts (see the notes)")


def quantities(thresholds: Thresholds | None, reference: str) -> tuple[Quantity, ...]:
    """The rows, with the thresholds this build measured with (the defaults before anything is measured)."""
    t = thresholds or Thresholds()
    unrelated = UNRELATED[t.metric]
    latent = t.metric == "latent"
    distance = ("the RMS difference of the final latents, relative to the target's RMS" if latent else
                "1 − SSIM of the two images' pixels")
    return (
        Quantity("Distance", f"How different two images are: {distance} (metric `{t.metric}`; the other metric, "
                 f"{'1 − SSIM' if latent else 'relative latent RMS'}, is in metrics.csv).",
                 f"0 for the same image; about {unrelated:.2g} for two unrelated images. 0.05 is "
                 f"{scale(0.05, t.metric)}; 0.15 is {scale(0.15, t.metric)}.", "–"),
        Quantity("To its own final", "A cell's distance to the same sampler's image at the most steps rendered (same "
                 "topic and seed).", "As the distance; 0 at the final itself.", "–"),
        Quantity("To the reference", f"A cell's distance to the reference image: {reference} at the reference step "
                 "count, rendered beside the matrix: the common result every deterministic sampler approaches.",
                 "As the distance.", "–"),
        Quantity("Indicates at", "The first step count from which the distance to its own final stays at or under "
                 "the indicator threshold at every higher step count rendered: a preview there shows the final's "
                 "composition.", "A rendered step count; the crossing lies between it and the count below.",
                 f"{t.indicator:g} ({scale(t.indicator, t.metric)})"),
        Quantity("Converged at", "The same with the stricter converged threshold: from there more steps barely change "
                 "the image.", "A rendered step count.", f"{t.converged:g} ({scale(t.converged, t.metric)})"),
        Quantity("Different limit", "A deterministic sampler whose final image stays more than the limit threshold "
                 "from the reference and farther than its own last change (the distance between its two highest step "
                 "counts, about what more steps could still close), in a majority of seeds: it approaches another "
                 "picture, usually because its schedule differs (each topic page names how).",
                 "Final to reference, as the distance.", f"{t.limit:g} ({scale(t.limit, t.metric)})"),
        Quantity("At a fixed budget", "The distance to the reference after a number of model calls, interpolated in "
                 "log-log between the two rendered cells around it: samplers compared at equal cost.",
                 "As the distance.", "–"),
        Quantity("Exponent b", "The slope of log(distance to the reference) against log(steps), over the fit range: "
                 "distance ≈ a · steps^b.", "Expected: minus the method's order (−1 for Euler and DDIM, −2 for Heun "
                 f"and DPM2). A fit {FAR_FROM_ORDER:g} or more from it is marked far from the expected order, with "
                 "the reason where one is known.",
                 f"Left out of the fit: distances above {PRE_ASYMPTOTIC[t.metric]:g} (pre-asymptotic), within "
                 f"{FLOOR_FACTOR:g}x of the floor, and step counts at or above the reference's."),
        Quantity("Seconds", "Alone: what an image costs with nothing else running, from `reportgen speed` (batch 1). "
                 "Share: a batched render's per-cell seconds, the cell's share of the model calls it shared with "
                 "others; cheaper than alone, and not a sampler's speed.",
                 "On this machine, at this size; another machine differs.",
                 f"A render is marked as made on a loaded machine when its load average exceeded the CPU count, or "
                 f"its seconds are {SLOWER:g}x or more what speed.json says the same calls cost alone."),
    )


__all__ = ["DEFAULT_THRESHOLDS", "Quantity", "far_from_order", "quantities", "scale"]
