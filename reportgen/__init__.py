"""reportgen: reproducible, measured sampler-convergence guides for Stable Diffusion."""

__version__ = "0.1.0"
