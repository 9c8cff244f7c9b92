"""Real git repositories for the source tests: a bare "server" plus a working clone to push from."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from reconciler.source import GitSource

REAL_GIT = shutil.which("git") or "/usr/bin/git"
IDENTITY = {
    "GIT_AUTHOR_NAME": "t",
    "GIT_AUTHOR_EMAIL": "t@example.org",
    "GIT_COMMITTER_NAME": "t",
    "GIT_COMMITTER_EMAIL": "t@example.org",
}


class Remote:
    """A bare repository plus a working clone to commit and push from."""

    def __init__(self, root: Path) -> None:
        self.bare = root / "remote.git"
        self.work = root / "work"
        git("init", "-q", "--bare", "-b", "master", str(self.bare))
        git("init", "-q", "-b", "master", str(self.work))

    def commit(self, files: dict[str, str], message: str = "change", *, date: str | None = None) -> str:
        for name, text in files.items():
            path = self.work / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
        git("-C", str(self.work), "add", "-A")
        env = {"GIT_COMMITTER_DATE": date, "GIT_AUTHOR_DATE": date} if date else {}
        git("-C", str(self.work), "commit", "-q", "--allow-empty", "-m", message, env=env)
        return git("-C", str(self.work), "rev-parse", "HEAD").strip()

    def push(self, branch: str, *, force: bool = False) -> None:
        git(
            "-C",
            str(self.work),
            "push",
            "-q",
            *(["-f"] if force else []),
            str(self.bare),
            f"HEAD:refs/heads/{branch}",
        )

    def delete(self, branch: str) -> None:
        git("-C", str(self.work), "push", "-q", str(self.bare), f":refs/heads/{branch}")

    def checkout(self, branch: str, *, new: bool = False) -> None:
        git("-C", str(self.work), "checkout", "-q", *(["-b"] if new else []), branch)


def git(*args: str, env: dict[str, str] | None = None) -> str:
    return subprocess.run(
        [REAL_GIT, *args],
        check=True,
        capture_output=True,
        text=True,
        env={**os.environ, **IDENTITY, **(env or {})},
    ).stdout


def calls(log: Path, word: str) -> int:
    return sum(1 for line in log.read_text().splitlines() if word in line.split())


def source(remote: Remote, tmp_path: Path, **kw: float) -> GitSource:
    return GitSource("demo", str(remote.bare), tmp_path / "cache", **kw)


def write_loose_ref(bare: Path, name: str, sha: str) -> None:
    """Write ``refs/heads/<name>`` as a file, bypassing git's name checks (as a broken server tool might)."""
    path = bare / "refs" / "heads" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"{sha}\n")


def write_packed_ref(bare: Path, name: str, sha: str) -> None:
    """Append ``refs/heads/<name>`` to packed-refs, bypassing git's name and object checks."""
    packed = bare / "packed-refs"
    text = packed.read_text() if packed.exists() else "# pack-refs with: peeled fully-peeled sorted \n"
    packed.write_text(f"{text}{sha} refs/heads/{name}\n")
