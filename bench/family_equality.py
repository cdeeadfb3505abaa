"""How far the batched executor's images are from each model family's own diffusers pipeline, per sampler: the
cells tests/render/test_batched.py renders (every sampler the tiny model of each family takes), the largest
latent and pixel difference per family and sampler, printed as a Markdown table (docs/models.md has one).

    OMP_NUM_THREADS=1 python bench/family_equality.py [tiny tiny-sd2-v tiny-sdxl tiny-sd3 tiny-flux ...]
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "render"))  # the test's own cells

import numpy as np  # noqa: E402
from test_batched import MODELS, render_both  # noqa: E402


def main() -> None:
    """Render each model's cells with both executors and print the largest differences per sampler."""
    print("| model | sampler | cells | largest latent difference | largest pixel difference (of 255) |")
    print("| --- | --- | --- | --- | --- |")
    for spec in sys.argv[1:] or MODELS:
        with tempfile.TemporaryDirectory() as folder:
            _, reference, batched, _ = render_both(Path(folder), spec)
        worst: dict[str, tuple[int, float, int]] = {}
        for output in batched:
            expected = reference[output.cell.key]
            latent = float(np.abs(output.latents - expected.latents).max())
            pixel = int(np.abs(np.asarray(output.image, dtype=int) - np.asarray(expected.image, dtype=int)).max())
            count, a, b = worst.get(output.cell.sampler, (0, 0.0, 0))
            worst[output.cell.sampler] = (count + 1, max(a, latent), max(b, pixel))
        for sampler, (count, latent, pixel) in worst.items():
            print(f"| {spec} | {sampler} | {count} | {latent:.1e} | {pixel} |", flush=True)


if __name__ == "__main__":
    main()
