"""The restic adapter: snapshots written from a stream, read back as a stream, listed and pruned.

Runs Debian's ``restic`` binary with ``RESTIC_REPOSITORY`` / ``RESTIC_PASSWORD_FILE`` in its environment;
used by ``reconciler.jobs.runner`` and ``reconciler backups list``. Its failures become ``JobError``.
"""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass
from typing import IO, Any

from reconciler.errors import PermanentError
from reconciler.jobs.model import BackupsConfig

RESTIC = "restic"


class JobError(PermanentError):
    """A scheduled job failed: its message says which step and why."""


@dataclass(frozen=True)
class Snapshot:
    id: str
    time: str
    tags: tuple[str, ...]
    paths: tuple[str, ...]
    size: int | None = None


class Restic:
    """One repository; every call is one ``restic`` process, never a shell."""

    def __init__(self, config: BackupsConfig) -> None:
        self.config = config

    def _env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("RESTIC_")}
        env["RESTIC_REPOSITORY"] = self.config.repository
        env["RESTIC_PASSWORD_FILE"] = str(self.config.password_file)
        env.setdefault("RESTIC_CACHE_DIR", os.path.join(os.path.expanduser("~"), ".cache", "restic"))
        return env

    def _run(self, *args: str, timeout: float = 600.0) -> str:
        try:
            proc = subprocess.run(
                [RESTIC, *args], env=self._env(), capture_output=True, text=True, timeout=timeout, check=False
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise JobError(
                f"restic {args[0]} failed: {exc}", hint="install restic (apt-get install restic)"
            ) from exc
        if proc.returncode != 0:
            raise JobError(f"restic {args[0]} failed: {_tail(proc.stderr)}")
        return proc.stdout

    def ensure_repository(self) -> None:
        """Initialise the repository on first use; clear locks left by a crashed run (only stale ones)."""
        try:
            self._run("cat", "config", timeout=120)
        except JobError:
            self._run("init", timeout=120)
        self._run("unlock", timeout=120)

    def backup_process(self, filename: str, tag: str) -> subprocess.Popen[bytes]:
        """``restic backup --stdin`` waiting for the dump; closing its stdin commits the snapshot."""
        return subprocess.Popen(
            [RESTIC, "backup", "--stdin", "--stdin-filename", filename, "--tag", tag, "--json", "--quiet"],
            env=self._env(),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )

    def dump_process(self, filename: str, tag: str) -> subprocess.Popen[bytes]:
        """``restic dump latest FILE``: the newest snapshot with ``tag``, as a stream on stdout."""
        return subprocess.Popen(
            [RESTIC, "dump", "--tag", tag, "latest", f"/{filename}"],
            env=self._env(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )

    def snapshots(self, tag: str | None = None) -> list[Snapshot]:
        args = ["snapshots", "--json"] + (["--tag", tag] if tag else [])
        raw: list[dict[str, Any]] = json.loads(self._run(*args) or "[]") or []
        return [
            Snapshot(
                id=s.get("short_id") or s["id"][:8],
                time=s.get("time", ""),
                tags=tuple(s.get("tags") or ()),
                paths=tuple(s.get("paths") or ()),
            )
            for s in raw
        ]

    def latest_size(self, filename: str, tag: str) -> int | None:
        """Size of ``filename`` in the newest snapshot with ``tag``; None when there is none yet."""
        if not self.snapshots(tag):
            return None
        for line in self._run("ls", "--json", "--tag", tag, "latest").splitlines():
            node = json.loads(line)
            if node.get("struct_type") == "node" and node.get("path") == f"/{filename}":
                return int(node.get("size", 0))
        return None

    def forget(self, tag: str, keep_last: int | None, keep_within: str | None) -> None:
        args = ["forget", "--prune", "--tag", tag, "--group-by", "tags"]
        if keep_last:
            args += ["--keep-last", str(keep_last)]
        if keep_within:
            args += ["--keep-within", keep_within]
        self._run(*args, timeout=1800)


def _tail(text: str, lines: int = 5) -> str:
    return " | ".join(line.strip() for line in text.strip().splitlines()[-lines:]) or "(no output)"


def read_stream(stream: IO[bytes] | None) -> str:
    return stream.read().decode("utf-8", "replace") if stream else ""
