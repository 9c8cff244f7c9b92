"""Branch globs: fnmatch matching, why a glob can never match a branch name, when an exclude covers one.

Used by ``EnvConfig.matches`` and by the parser's checks on ``branches`` and ``exclude``.
"""

from __future__ import annotations

import fnmatch
import re

# Characters git never allows in a branch name (git-check-ref-format(1)); a glob needing one never matches.
_REF_FORBIDDEN = set(" ~^:\\?*[\x7f") | {chr(c) for c in range(32)}


def branch_problem(name: str) -> str | None:
    """Why git would refuse ``name`` as a branch (git-check-ref-format(1)), or None if it is valid."""
    if len(name.encode("utf-8", "surrogatepass")) > 255:
        return "it is longer than 255 bytes"
    bad = sorted(set(name) & _REF_FORBIDDEN)
    if bad:
        return f"it contains {bad[0]!r}"
    if name.startswith(("/", "-")) or name.endswith(("/", ".")) or name == "@":
        return "it starts with '/' or '-', ends with '/' or '.', or is '@'"
    if "//" in name or ".." in name or "@{" in name:
        return "it contains '//', '..' or '@{'"
    if any(part.startswith(".") or part.endswith(".lock") for part in name.split("/")):
        return "a part of it starts with '.' or ends with '.lock'"
    return None


def glob_match(branch: str, patterns: tuple[str, ...]) -> bool:
    """fnmatch semantics, case-sensitive ('*' matches '/' too, as git branch names are paths)."""
    return any(_compiled(p).fullmatch(branch) for p in patterns)


_GLOB_CACHE: dict[str, re.Pattern[str]] = {}


def _compiled(pattern: str) -> re.Pattern[str]:
    rx = _GLOB_CACHE.get(pattern)
    if rx is None:
        rx = _GLOB_CACHE[pattern] = re.compile(fnmatch.translate(pattern))
    return rx


def glob_problem(pattern: str) -> str | None:
    """Why ``pattern`` can never match a git branch name, or None if it can."""
    if not pattern:
        return "it is empty"
    literal = []  # the characters the pattern requires literally, with wildcards as '\0'
    i = 0
    while i < len(pattern):
        c = pattern[i]
        if c in "*?":
            literal.append("\0")
        elif c == "[":
            # fnmatch: a '[' with no closing ']' is a literal '[' (which git forbids in branch names).
            j = i + 1
            if j < len(pattern) and pattern[j] == "!":
                j += 1
            if j < len(pattern) and pattern[j] == "]":
                j += 1
            close = pattern.find("]", j)
            if close < 0:
                return "'[' is never closed"
            literal.append("\0")
            i = close
        else:
            if c in _REF_FORBIDDEN:
                return f"branch names never contain {c!r}"
            literal.append(c)
        i += 1
    text = "".join(literal)
    for bad in ("..", "@{", "//"):
        if bad in text:
            return f"branch names never contain {bad!r}"
    if text.startswith("/"):
        return "branch names never start with '/'"
    if text.endswith(("/", ".", ".lock")):
        return "branch names never end with '/', '.' or '.lock'"
    return None


def _literal_prefix(pattern: str) -> str:
    cut = min((i for i, c in enumerate(pattern) if c in "*?["), default=len(pattern))
    return pattern[:cut]


def _covers(exclude: str, pattern: str) -> bool:
    """True if every branch ``pattern`` matches is certainly matched by ``exclude`` (sound, not complete)."""
    if exclude == pattern or set(exclude) == {"*"}:
        return True
    if _literal_prefix(pattern) == pattern:  # a literal "glob"
        return glob_match(pattern, (exclude,))
    stem = exclude[:-1]
    # "P*" removes everything starting with P; a pattern whose fixed prefix starts with P is gone.
    return (
        exclude.endswith("*") and _literal_prefix(stem) == stem and _literal_prefix(pattern).startswith(stem)
    )
