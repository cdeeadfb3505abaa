"""Models: identifying a model from its source without loading it, loading it as a pipeline, the tiny model."""
