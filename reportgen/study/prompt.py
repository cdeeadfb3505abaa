"""Parse and write the guide's command syntax: `"an anime girl" -W512 -H512 -C7.5 -S3031912972`.

The syntax is the one of the dream.py / InvokeAI command line the original guide used:

    "prompt text [negative prompt]" -W width -H height -C cfg -S seed -s steps -A sampler -n count

Text inside square brackets in the quoted prompt is the negative prompt, as in InvokeAI. Every flag is
optional; its value may follow with or without a space (`-W512` or `-W 512`). Long forms are accepted:
--width, --height, --cfg_scale, --seed, --steps, --sampler, --iterations.
"""

from __future__ import annotations

import math
import re
import shlex
from dataclasses import dataclass, replace

from reportgen.errors import PromptError

MAX_SEED = 2**32 - 1
NEGATIVE_LABEL = "Negative prompt:"

# flag -> (field, type); long forms map to the same fields.
_FLAGS: dict[str, tuple[str, type]] = {
    "-W": ("width", int),
    "--width": ("width", int),
    "-H": ("height", int),
    "--height": ("height", int),
    "-C": ("cfg", float),
    "--cfg_scale": ("cfg", float),
    "-S": ("seed", int),
    "--seed": ("seed", int),
    "-s": ("steps", int),
    "--steps": ("steps", int),
    "-A": ("sampler", str),
    "--sampler": ("sampler", str),
    "-n": ("count", int),
    "--iterations": ("count", int),
}
_NEGATIVE = re.compile(r"\[([^\[\]]*)\]")


@dataclass(frozen=True)
class Prompt:
    """One prompt with its generation parameters, as written in the guide's syntax."""

    text: str
    negative: str = ""
    width: int = 512
    height: int = 512
    cfg: float = 7.5
    seed: int | None = None
    steps: int | None = None
    sampler: str | None = None
    count: int | None = None

    def to_command(self) -> str:
        """Write the prompt back in the guide's syntax; `parse_prompt` reads it back unchanged."""
        text = self.text + (f" [{self.negative}]" if self.negative else "")
        parts = [_quote(text), f"-W{self.width}", f"-H{self.height}", f"-C{_number(self.cfg)}"]
        if self.seed is not None:
            parts.append(f"-S{self.seed}")
        if self.steps is not None:
            parts.append(f"-s{self.steps}")
        if self.sampler is not None:
            parts.append(f"-A {shlex.quote(self.sampler)}" if " " in self.sampler else f"-A{self.sampler}")
        if self.count is not None:
            parts.append(f"-n{self.count}")
        return " ".join(parts)

    def with_(self, **changes: object) -> Prompt:
        """A copy with some fields changed, validated again."""
        return validate(replace(self, **changes))  # type: ignore[arg-type]


def parse_prompt(command: str) -> Prompt:
    """Parse `"prompt [negative]" -W512 -H512 -C7.5 -S123 -s50 -A k_lms -n4` into a Prompt."""
    if not isinstance(command, str):
        raise PromptError(f"prompt must be a string, got {type(command).__name__}")
    _check_characters(command)
    words: list[str] = []
    try:
        lexer = shlex.shlex(command.strip(), posix=True)
        lexer.whitespace_split = True
        if command.strip()[:1] in ("'", '"'):
            # A quoted prompt is text even if it starts with '-'.
            words.append(lexer.get_token() or "")
        tokens = list(lexer)
    except ValueError as exc:
        raise PromptError(f"cannot parse prompt {command!r}: {exc}") from None

    values: dict[str, object] = {}
    i = 0
    while i < len(tokens):
        token = tokens[i]
        flag, inline = _split_flag(token)
        if flag is None:
            if values:
                raise PromptError(f"unexpected text {token!r} after the options in {command!r}")
            words.append(token)
            i += 1
            continue
        field, kind = _FLAGS[flag]
        if inline == "":
            if i + 1 >= len(tokens):
                raise PromptError(f"option {flag} needs a value")
            inline = tokens[i + 1]
            i += 1
        if field in values:
            raise PromptError(f"option {flag} is given twice")
        values[field] = _convert(flag, inline, kind)
        i += 1

    text = " ".join(words)
    negatives = _NEGATIVE.findall(text)
    if len(negatives) > 1:
        raise PromptError("prompt has more than one [negative prompt]")
    negative = negatives[0].strip() if negatives else ""
    text = _NEGATIVE.sub("", text).strip()
    if "[" in text or "]" in text:
        raise PromptError("prompt has an unbalanced '[' or ']'")
    text = " ".join(text.split())
    if not text:
        raise PromptError(f"prompt text is empty in {command!r}")
    return validate(Prompt(text=text, negative=negative, **values))  # type: ignore[arg-type]


def validate(prompt: Prompt) -> Prompt:
    """Check the values that diffusers would reject or silently change; return the prompt."""
    for name in ("width", "height"):
        value = getattr(prompt, name)
        if value <= 0 or value % 8:
            raise PromptError(f"{name} must be a positive multiple of 8, got {value}")
    if not math.isfinite(prompt.cfg) or prompt.cfg < 0:
        raise PromptError(f"CFG scale must be a finite number >= 0, got {prompt.cfg}")
    if prompt.seed is not None and not 0 <= prompt.seed <= MAX_SEED:
        raise PromptError(f"seed must be between 0 and {MAX_SEED}, got {prompt.seed}")
    if prompt.steps is not None and prompt.steps <= 0:
        raise PromptError(f"steps must be > 0, got {prompt.steps}")
    if prompt.count is not None and prompt.count <= 0:
        raise PromptError(f"count (-n) must be > 0, got {prompt.count}")
    if "[" in prompt.negative or "]" in prompt.negative or "[" in prompt.text or "]" in prompt.text:
        raise PromptError("prompt and negative prompt cannot contain '[' or ']'")
    for part in (prompt.text, prompt.negative):
        _check_characters(part)
        if NEGATIVE_LABEL in part:  # other tools split the image's parameters text there (render/metadata.py)
            raise PromptError(f"prompt and negative prompt cannot contain {NEGATIVE_LABEL!r}; write the negative "
                              "prompt in [brackets]")
    return prompt


def _check_characters(text: str) -> None:
    """Refuse tabs, carriage returns and other control characters (a newline is whitespace like a space)."""
    if "\t" in text:
        raise PromptError("prompt contains a tab; use a space")
    if "\r" in text:
        raise PromptError("prompt contains a carriage return; use a space")
    if any(ord(ch) < 32 and ch != "\n" or 0x7F <= ord(ch) < 0xA0 for ch in text):
        raise PromptError("prompt contains control characters")


def _split_flag(token: str) -> tuple[str | None, str]:
    """Return (flag, inline value) for `-W512` or `--width=512`; (None, "") for plain text."""
    if token.startswith("--"):
        name, _, value = token.partition("=")
        if name in _FLAGS:
            return name, value
        raise PromptError(f"unknown option {name!r}")
    if token.startswith("-") and len(token) >= 2 and not _is_number(token):
        flag = token[:2]
        if flag in _FLAGS:
            return flag, token[2:]
        raise PromptError(f"unknown option {flag!r}")
    return None, ""


def _convert(flag: str, raw: str, kind: type) -> object:
    try:
        if kind is int:
            return int(raw, 10)
        if kind is float:
            value = float(raw)
            if not math.isfinite(value):
                raise ValueError
            return value
    except ValueError:
        raise PromptError(f"option {flag} expects {'an integer' if kind is int else 'a number'}, got {raw!r}") from None
    if not raw.strip():
        raise PromptError(f"option {flag} needs a value")
    return raw


def _is_number(token: str) -> bool:
    try:
        float(token)
    except ValueError:
        return False
    return True


def _number(value: float) -> str:
    text = repr(float(value))
    return text[:-2] if text.endswith(".0") else text


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
