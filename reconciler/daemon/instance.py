"""Who this reconciler is, and that it runs once: the instance id kept in state_dir, the daemon lock, and
the per-project lock every process that changes a stack takes (daemon workers, `sync`, `rollback`, `up`).

The locks are OS file locks (flock): the kernel releases them when the process dies, so a SIGKILL never
leaves a stale lock behind.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import secrets
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from reconciler.errors import PermanentError, StateError

_ID_FILE = "instance-id"
_LOCK_FILE = "daemon.lock"


class AlreadyRunningError(PermanentError):
    """Another `reconciler run` holds this state directory."""


def ensure_state_dir(state_dir: Path) -> Path:
    """Create ``state_dir`` (0700: it holds the state database and checkouts) or raise a clear StateError."""
    path = Path(state_dir)
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise StateError(
            f"cannot create the state directory {str(path)!r}: {exc.strerror or exc}",
            hint="check `state_dir` in environments.yaml, its permissions and free space",
        ) from exc
    return path


def instance_id(state_dir: Path) -> str:
    """The stable id of this reconciler instance (12 hex digits), created once in ``state_dir``.

    It names the owner of every object we create (``io.reconciler.owner``), so two configurations with
    different state directories never take each other's stacks for their own."""
    path = ensure_state_dir(state_dir) / _ID_FILE
    with contextlib.suppress(FileNotFoundError):
        text = path.read_text(encoding="ascii").strip()
        if len(text) == 12 and all(c in "0123456789abcdef" for c in text):
            return text
        raise StateError(
            f"{str(path)!r} does not hold an instance id",
            hint="restore it from a backup; deleting it makes this reconciler a stranger to its stacks",
        )
    new = secrets.token_hex(6)
    tmp = path.with_name(f".{_ID_FILE}.{new}")
    try:
        tmp.write_text(new + "\n", encoding="ascii")
        # link() fails if another process created the id meanwhile: then theirs wins.
        with contextlib.suppress(FileExistsError):
            os.link(tmp, path)
    except OSError as exc:
        raise StateError(f"cannot write {str(path)!r}: {exc.strerror or exc}") from exc
    finally:
        tmp.unlink(missing_ok=True)
    return path.read_text(encoding="ascii").strip()


class DaemonLock:
    """Held for the life of `reconciler run`: a second daemon on the same state directory exits at once."""

    def __init__(self, state_dir: Path) -> None:
        self.path = ensure_state_dir(state_dir) / _LOCK_FILE
        self._handle: IO[str] | None = None

    def acquire(self, listen: str) -> None:
        try:
            handle = open(self.path, "a+", encoding="utf-8")  # noqa: SIM115 - held until release()
        except OSError as exc:
            raise StateError(f"cannot open {str(self.path)!r}: {exc.strerror or exc}") from exc
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = _describe(handle.read())
            handle.close()
            raise AlreadyRunningError(
                f"another reconciler daemon is already running on state_dir {str(self.path.parent)!r}"
                f" ({holder})",
                hint="stop it first, or give this configuration its own state_dir",
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(json.dumps({"pid": os.getpid(), "listen": listen}) + "\n")
        handle.flush()
        self._handle = handle

    def release(self) -> None:
        if self._handle is not None:
            fcntl.flock(self._handle, fcntl.LOCK_UN)
            self._handle.close()
            self._handle = None


def _describe(text: str) -> str:
    try:
        data = json.loads(text)
        return f"pid {int(data['pid'])}, listening on {data.get('listen') or '?'}"
    except (ValueError, KeyError, TypeError):
        return "pid unknown"


def lock_dir() -> Path:
    """Where project locks live: one place per host, so processes with different configurations (and
    `reconciler up` with none) still take the same lock for the same project."""
    configured = os.environ.get("RECONCILER_LOCK_DIR")
    candidates = [Path(configured)] if configured else []
    candidates += [Path("/run/reconciler/locks"), Path(tempfile.gettempdir()) / f"reconciler-{os.getuid()}"]
    for candidate in candidates:
        try:
            candidate.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError:
            continue
        if os.access(candidate, os.W_OK):
            return candidate
    raise StateError("no writable directory for project locks", hint="set RECONCILER_LOCK_DIR")


@contextlib.contextmanager
def project_lock(project: str) -> Iterator[None]:
    """One change at a time per project, across every process of this host."""
    path = lock_dir() / f"{project}.lock"
    try:
        handle = open(path, "a", encoding="utf-8")  # noqa: SIM115 - closed below
    except OSError as exc:
        raise StateError(f"cannot open the project lock {str(path)!r}: {exc.strerror or exc}") from exc
    with handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
