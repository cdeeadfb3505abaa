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


# Ctrl-C, remembered. A library that catches BaseException (some optional-import checks do) can swallow the
# KeyboardInterrupt of a Ctrl-C that comes while a model loads; the render then stops at its next check instead
# of running on. The CLI's SIGINT handler calls request_interrupt(); the render's loops call check_interrupt().
_interrupt = {"requested": False}


def request_interrupt(requested: bool = True) -> None:
    """Remember a Ctrl-C (or, with False, forget it: a new command starts)."""
    _interrupt["requested"] = requested


def check_interrupt() -> None:
    """Raise KeyboardInterrupt if a Ctrl-C came and was lost on the way."""
    if _interrupt["requested"]:
        raise KeyboardInterrupt


_BIDI = {0x061C, 0x200E, 0x200F, *range(0x202A, 0x202F), *range(0x2066, 0x206A)}


def printable(text: str, *, newlines: bool = False) -> str:
    """`text` safe for a terminal: control characters, escape sequences, bidirectional overrides, line
    separators and lone surrogates shown escaped (`\\x1b`, `\\u202e`); newlines kept only if asked."""
    import unicodedata

    out = []
    for ch in str(text):
        code = ord(ch)
        if ch == "\n" and newlines:
            out.append(ch)
        elif code < 0x20 or 0x7F <= code < 0xA0:
            out.append(f"\\x{code:02x}")
        elif code in _BIDI or unicodedata.category(ch) in ("Zl", "Zp", "Cs"):
            out.append(f"\\u{code:04x}")
        else:
            out.append(ch)
    return "".join(out)
