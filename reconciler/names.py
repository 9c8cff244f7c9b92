"""Names derived from untrusted input (branch names, compose keys), validated before any Docker call.

Used by the CLI, the converge engine and the daemon.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from typing import NewType

from reconciler.errors import InvalidNameError, Location

ProjectName = NewType("ProjectName", str)

# Docker Compose v2 refuses any other project name (compose-go loader.NormalizeProjectName's check).
_PROJECT_RE = re.compile(r"^[a-z0-9][a-z0-9_-]*$")
_SLUG_MAX = 40


def validate_project_name(name: str, location: Location | None = None) -> ProjectName:
    """Return ``name`` as a ProjectName, or raise if Compose would reject it."""
    if not isinstance(name, str) or not _PROJECT_RE.fullmatch(name) or len(name) > 200:
        raise InvalidNameError(
            f"invalid project name {name!r}: it must match [a-z0-9][a-z0-9_-]* "
            "(lower-case letters, digits, '_' and '-', starting with a letter or digit)",
            location,
        )
    return ProjectName(name)


def branch_hash(branch: str) -> str:
    """First 6 hex characters of sha1(raw branch name): the disambiguating suffix of a slug."""
    return hashlib.sha1(branch.encode("utf-8"), usedforsecurity=False).hexdigest()[:6]


def branch_slug(branch: str, taken: Iterable[str] = ()) -> str:
    """Slug of a branch name: lower-case, runs outside [a-z0-9] become '-', trimmed, at most 40 chars.

    When the slug was truncated, or collides with a slug in ``taken`` (other live branches of the
    same app), '-' and the first 6 hex of sha1(branch) are appended so two branches never share a stack.
    """
    raw = re.sub(r"[^a-z0-9]+", "-", branch.lower()).strip("-")
    slug = raw[:_SLUG_MAX].strip("-")
    if len(raw) > _SLUG_MAX or slug in set(taken) or not slug:
        slug = f"{slug}-{branch_hash(branch)}" if slug else branch_hash(branch)
    return slug
