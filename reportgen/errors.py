"""The exceptions that reportgen raises; the CLI turns each into one line and exit code 2."""


class ReportgenError(Exception):
    """Base class: a problem with the user's input or environment, explained in one line."""


class PromptError(ReportgenError):
    """A prompt in the guide's command syntax could not be parsed or is invalid."""


class SamplerError(ReportgenError):
    """An unknown sampler name."""


class StudyError(ReportgenError):
    """A study folder, its study.toml or a topic file is missing or invalid."""


class ModelError(ReportgenError):
    """A model could not be found or loaded."""


class StoreError(ReportgenError):
    """The image store is locked, unwritable or inconsistent."""


class RenderError(ReportgenError):
    """A cell could not be rendered."""


class SiteError(ReportgenError):
    """The site could not be built."""
