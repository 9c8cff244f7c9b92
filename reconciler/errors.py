"""The one error tree of the reconciler; every module raises from here.

Split by what the caller should do with it (kopf's TemporaryError/PermanentError, Flux's terminal errors):

    ReconcilerError                     base; ``str(err)`` is a message for users, never a traceback
    ├── PermanentError                  retrying the same input gives the same result: report, don't retry
    │   ├── InputError                  something a user wrote is wrong; carries a Location
    │   │   ├── ComposeError            a compose file (syntax, schema, interpolation, references)
    │   │   ├── ConfigError             environments.yaml
    │   │   ├── UnsupportedError        a compose key we cannot converge (never silently ignored)
    │   │   ├── NameError_              a project/branch-derived name Docker or Compose would refuse
    │   │   └── PolicyError             a revision asks for what its environment's `policy:` refuses
    │   └── DeployError                 a service failed to start or become healthy (per revision)
    └── TransientError                  an outside system is down or slow: retry with backoff
        ├── DockerError                 Docker Engine unreachable or failing
        ├── GitError                    git remote unreachable, auth failure, timeout
        └── StateError                  the state database cannot be opened or written

Adapters translate library errors at their boundary (``raise DockerError(...) from exc``); the rest of
the code never sees docker-py or GitPython exceptions. The CLI prints ``str(err)`` and exits non-zero.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Location:
    """Where a problem is: any field may be unknown."""

    file: str | None = None
    line: int | None = None
    service: str | None = None
    key: str | None = None
    environment: str | None = None
    branch: str | None = None

    def __str__(self) -> str:
        parts: list[str] = []
        if self.file:
            parts.append(f"{self.file}:{self.line}" if self.line else self.file)
        if self.environment:
            parts.append(f"environment {self.environment!r}")
        if self.branch:
            parts.append(f"branch {self.branch!r}")
        if self.service:
            parts.append(f"service {self.service!r}")
        if self.key:
            parts.append(f"key {self.key!r}")
        return ", ".join(parts)


class ReconcilerError(Exception):
    """Base of every error the reconciler raises on purpose."""

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message}\n  hint: {self.hint}" if self.hint else self.message


class PermanentError(ReconcilerError):
    """Retrying with the same input will fail the same way."""


class InputError(PermanentError):
    """Something a user wrote is wrong; the message says where."""

    def __init__(self, message: str, location: Location | None = None, *, hint: str | None = None) -> None:
        self.location = location or Location()
        where = str(self.location)
        super().__init__(f"{where}: {message}" if where else message, hint=hint)
        self.detail = message


class ComposeError(InputError):
    """A compose file is malformed, invalid, or references something undefined."""


class ConfigError(InputError):
    """environments.yaml is malformed or invalid."""


class UnsupportedError(InputError):
    """A compose key we cannot converge faithfully; refusing beats ignoring it."""


class InvalidNameError(InputError):
    """A name (project, volume, container) that Docker or Compose would refuse."""


class PolicyError(InputError):
    """A rendered revision breaks its environment's policy; ``violations`` lists each refused key."""

    def __init__(self, message: str, violations: tuple[str, ...], *, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.violations = violations


class DeployError(PermanentError):
    """A service failed to start, exited, or did not become healthy in time."""

    def __init__(self, message: str, *, service: str | None = None, reason: str = "DeployFailed") -> None:
        super().__init__(message)
        self.service = service
        self.reason = reason


class TransientError(ReconcilerError):
    """An outside system failed; the same call may succeed later.

    ``reason`` is a short, stable word for metrics (``reconciler_retries_total{reason}``): for example
    ``docker_5xx``, ``registry_throttled``, ``registry_5xx``, ``timeout``, ``connection``, ``dns``, ``git``,
    ``state``. Never a message: label values must stay few."""

    default_reason = "transient"

    def __init__(self, message: str, *, hint: str | None = None, reason: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.reason = reason or self.default_reason


class DockerError(TransientError):
    """The Docker Engine is unreachable or returned an unexpected error."""

    default_reason = "docker"


class GitError(TransientError):
    """A git remote is unreachable, refused auth, or timed out. Never means "branch deleted"."""

    default_reason = "git"


class StateError(TransientError):
    """The SQLite state database is unavailable (disk full, locked, permissions)."""

    default_reason = "state"
