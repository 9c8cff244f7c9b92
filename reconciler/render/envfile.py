"""`.env` / `env_file` parsing with compose's dotenv rules (quotes, escapes, `export`, interpolation).

Called by the renderer for the project's `.env` (or `--env-file`) and for each service `env_file`
(also in docker's `raw` KEY=VALUE format).
"""

from __future__ import annotations

import re
from collections.abc import Callable

from reconciler.errors import ComposeError, Location
from reconciler.render.interpolate import TemplateError, substitute
from reconciler.render.loader import read_text

Lookup = Callable[[str], "str | None"]

_EXPORT = re.compile(r"^export\s+")
_ESCAPES = re.compile(r"(\\(?:[abcfnrtv$\"\\]|0\d{0,3}))")
_SIMPLE_ESCAPES = {
    "a": "\a",
    "b": "\b",
    "f": "\f",
    "n": "\n",
    "r": "\r",
    "t": "\t",
    "v": "\v",
    '"': '"',
    "\\": "\\",
}
_INLINE_SPACE = "\t\v\f\r \x85\xa0"  # dotenv's isSpace: whitespace that is not a line break


def _unescape(value: str) -> str:
    def one(match: re.Match[str]) -> str:
        text = match.group(0)
        if text == "\\$":
            return "$$"  # a literal `$`, kept away from interpolation
        char = text[1]
        if char in _SIMPLE_ESCAPES:
            return _SIMPLE_ESCAPES[char]
        digits = text[2:]  # `\0NNN` is an octal escape; Go wants exactly three digits
        if len(digits) == 3 and all(c in "01234567" for c in digits) and int(digits, 8) < 256:
            return chr(int(digits, 8))
        return text

    return _ESCAPES.sub(one, value)


def parse_env(text: str, source: str, lookup: Lookup) -> dict[str, str]:
    """Variables defined by one env file; ``lookup`` resolves `${VAR}` and bare `VAR` lines first."""
    out: dict[str, str] = {}
    text = text.removeprefix("\ufeff")
    pos = 0
    line = 1
    length = len(text)

    def expand(value: str) -> str:
        def find(name: str) -> str | None:
            found = lookup(name)
            return found if found is not None else out.get(name)

        try:
            return substitute(value, find)
        except TemplateError as exc:
            raise ComposeError(str(exc), Location(file=source, line=line)) from None

    while True:
        # skip blank space and comment lines
        while pos < length and text[pos].isspace():
            if text[pos] == "\n":
                line += 1
            pos += 1
        if pos >= length:
            break
        if text[pos] == "#":
            newline = text.find("\n", pos)
            if newline < 0:
                break
            pos = newline
            continue
        rest = _EXPORT.sub("", text[pos:], count=1).lstrip(_INLINE_SPACE)
        pos = length - len(rest)
        key = None
        inherited = False
        for i, char in enumerate(rest):
            if char in _INLINE_SPACE:
                continue
            if char in "=:\n":
                key = rest[:i].rstrip()
                inherited = char == "\n"
                pos += i + 1
                break
            if not (char in "_.-[]" or char.isalnum()):
                raise ComposeError(
                    f"unexpected character {char!r} in variable name", Location(file=source, line=line)
                )
        if key is None:  # a last line with a bare name and no newline
            key = rest.rstrip()
            inherited = True
            pos = length
        if " " in key:
            raise ComposeError("key cannot contain a space", Location(file=source, line=line))
        if inherited:
            line += 1
            found = lookup(key)
            if found is not None:
                out[key] = found
            continue
        while pos < length and text[pos] in _INLINE_SPACE:
            pos += 1
        quote = text[pos] if pos < length and text[pos] in "'\"" else None
        if quote is None:
            end = text.find("\n", pos)
            raw = text[pos:] if end < 0 else text[pos:end]
            pos = length if end < 0 else end + 1
            raw = raw.split(" #", 1)[0].rstrip()
            out[key] = expand(raw)
            line += 1
            continue
        start_line = line
        value, pos, line = _quoted(text, pos, line)
        if pos < 0:
            raise ComposeError(f"unterminated quoted value for {key}", Location(file=source, line=start_line))
        if quote == '"':
            value = expand(_unescape(value))
        out[key] = value
    return out


def _quoted(text: str, pos: int, line: int) -> tuple[str, int, int]:
    r"""The quoted value opening at ``pos``, the position after it (-1 if unterminated) and the line.

    As compose-go's dotenv parser: a backslash escapes the quote (`\'` is `'`, in single quotes too) and
    a backslash (`\\` stays as written and escapes nothing after it); before anything else it is kept.
    """
    quote = text[pos]
    chars: list[str] = []
    escaped = False
    for i in range(pos + 1, len(text)):
        char = text[i]
        if char == "\n":
            line += 1
        if char != quote:
            if not escaped and char == "\\":
                escaped = True
                continue
            if escaped:
                escaped = False
                chars.append("\\")
            chars.append(char)
            continue
        if escaped:
            escaped = False
            chars.append(char)
            continue
        return "".join(chars), i + 1, line
    return "", -1, line


def parse_raw_env(text: str, source: str, lookup: Lookup) -> dict[str, str]:
    """Variables of a `format: raw` env_file: docker run --env-file's KEY=VALUE lines, taken as written.

    docker compose registers this format with docker/cli's kvfile parser: no quotes, escapes, comments after
    values or interpolation; leading whitespace is dropped, trailing kept; a bare KEY is looked up.
    """
    out: dict[str, str] = {}
    for number, raw in enumerate(text.removeprefix("\ufeff").split("\n"), start=1):
        line = raw.removesuffix("\r").lstrip()
        if not line or line.startswith("#"):
            continue
        key, equals, value = line.partition("=")
        where = Location(file=source, line=number)
        if not key:
            raise ComposeError(f"no variable name on line '{line}'", where)
        if " " in key or "\t" in key:
            raise ComposeError(f"variable '{key}' contains whitespaces", where)
        if equals:
            out[key] = value
            continue
        found = lookup(key)
        if found is not None:
            out[key] = found
    return out


def read_env_file(
    path: str, lookup: Lookup, *, display: str | None = None, raw: bool = False
) -> dict[str, str]:
    """Parse the env file at ``path`` (dotenv syntax, or ``raw``); ComposeError if it cannot be read."""
    text = read_text(path, what="env file", display=display)
    parse = parse_raw_env if raw else parse_env
    return parse(text, display or path, lookup)
