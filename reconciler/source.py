"""Git adapter: lists an app's branch heads, fetches commits into a bare cache, materializes trees.

The daemon's only contact with git. It runs the git CLI with list argv (never a shell), not GitPython:
every operation here is one short-lived git command, and GitPython's ``Repo`` keeps ``cat-file`` processes
alive, which leak in a long-running daemon (GitPython's own warning). Nothing here ever waits on a prompt.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import secrets
import shutil
import signal
import subprocess
import threading
from collections.abc import Collection, Iterator, Mapping
from pathlib import Path

from reconciler.errors import GitError

_SHA_RE = re.compile(r"^(?:[0-9a-f]{40}|[0-9a-f]{64})$")
_ABBREV_RE = re.compile(r"^[0-9a-f]{4,64}$")
_CREDENTIALS_RE = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/@\s]+@")
# Variables that would point git at another repository than the one we name explicitly.
_REPO_VARS = frozenset(
    {
        "GIT_DIR",
        "GIT_WORK_TREE",
        "GIT_INDEX_FILE",
        "GIT_OBJECT_DIRECTORY",
        "GIT_ALTERNATE_OBJECT_DIRECTORIES",
        "GIT_COMMON_DIR",
        "GIT_NAMESPACE",
        "GIT_PREFIX",
    }
)
_REFSPEC = "+refs/heads/*:refs/remotes/origin/*"


def redact(text: str) -> str:
    """Hide ``user:password@`` in URLs: messages and logs never carry credentials."""
    return _CREDENTIALS_RE.sub(r"\1***@", text)


def check_sha(sha: str) -> str:
    """Return ``sha`` if it is a full lower-case hex object name; anything else never reaches git."""
    if not isinstance(sha, str) or not _SHA_RE.fullmatch(sha):
        raise ValueError(f"not a full commit sha: {sha!r}")
    return sha


def git_env(base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of every git call: the user's credential setup, but never an interactive prompt."""
    env = {k: v for k, v in (os.environ if base is None else base).items() if k not in _REPO_VARS}
    env["GIT_TERMINAL_PROMPT"] = "0"
    env["GCM_INTERACTIVE"] = "never"  # Git Credential Manager
    if "GIT_SSH_COMMAND" not in env and "GIT_SSH" not in env:
        env["GIT_SSH_COMMAND"] = "ssh -o BatchMode=yes"
    return env


class GitSource:
    """One app's repository: ``heads()`` per poll, ``ensure_fetched`` + ``materialize`` per deploy.

    Thread-safe: the daemon's workers share one instance per app. The bare cache lives at
    ``cache_dir/<app>.git``; fetches into it are serialized (also across processes, with a lock file).
    """

    def __init__(self, app: str, repo: str, cache_dir: Path, timeout: float = 60.0) -> None:
        if not repo or repo.startswith("-"):
            raise GitError(f"invalid repository {redact(repo)!r} for app {app!r}")
        self.app = app
        self.repo = repo
        self.cache_dir = Path(cache_dir).absolute()
        self.cache = self.cache_dir / f"{app}.git"
        self.timeout = timeout
        self._lock = threading.Lock()
        self._present: set[str] = set()  # commits known to be in the cache (objects are never pruned)
        self._times: dict[str, float] = {}

    def __repr__(self) -> str:
        return f"GitSource(app={self.app!r}, repo={redact(self.repo)!r})"

    # --- the remote ---

    def heads(self) -> dict[str, str]:
        """Branch name -> head sha, from exactly one ``git ls-remote --heads``.

        Raises GitError on any failure *and* on an empty listing: "no branches" is never taken as
        "every branch was deleted" (an outage must not tear environments down).
        """
        out = self._git(["ls-remote", "--heads", "--", self.repo], what="list the branches of")
        heads: dict[str, str] = {}
        for line in out.decode("utf-8", "surrogateescape").splitlines():
            sha, _, ref = line.partition("\t")
            if _SHA_RE.fullmatch(sha) and ref.startswith("refs/heads/") and len(ref) > len("refs/heads/"):
                heads[ref.removeprefix("refs/heads/")] = sha
        if not heads:
            raise GitError(
                f"app {self.app!r}: {redact(self.repo)} lists no branches; keeping every environment "
                "as it is",
                hint="check that the repository URL is right and has been pushed to",
            )
        return heads

    def ensure_fetched(self, shas: Collection[str]) -> bool:
        """Make sure every commit in ``shas`` is in the cache; fetch only if one is missing.

        Returns True if it fetched. Raises GitError if the fetch fails or a commit is not on the remote.
        """
        wanted = [check_sha(s) for s in shas]
        if all(s in self._present for s in wanted):
            return False
        with self._locked():
            missing = self._missing(wanted)
            fetched = False
            if missing:
                self._fetch_heads()
                fetched = True
                missing = self._missing(missing)
            if missing:
                # Not at any head (e.g. force-pushed away): most servers still serve a reachable sha.
                with contextlib.suppress(GitError):
                    self._git_cache(
                        ["fetch", "--quiet", "--no-tags", "--no-write-fetch-head", self.repo, *missing],
                        what="fetch commits from",
                    )
                missing = self._missing(missing)
            if missing:
                raise GitError(
                    f"app {self.app!r}: commit {missing[0][:12]} is not in {redact(self.repo)}",
                    hint="was it force-pushed away? pick a commit that is on a branch",
                )
            self._present.update(wanted)
            return fetched

    def resolve(self, rev: str) -> str:
        """Full sha of a commit given as a (possibly abbreviated) hex sha, e.g. for ``rollback --to``."""
        rev = rev.strip().lower()
        if not _ABBREV_RE.fullmatch(rev):
            raise GitError(f"{rev!r} is not a commit sha", hint="give at least 4 hex digits of a commit")
        if _SHA_RE.fullmatch(rev):
            self.ensure_fetched([rev])
            return rev
        with self._locked():
            self._init_cache()
            for attempt in range(2):
                try:
                    out = self._git_cache(
                        ["rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}"], what="resolve in"
                    )
                    return check_sha(out.decode().strip())
                except GitError:
                    if attempt:
                        break
                    self._fetch_heads()
        raise GitError(
            f"app {self.app!r}: no unique commit {rev!r} in {redact(self.repo)}",
            hint="give more hex digits, or a commit that is on a branch",
        )

    # --- the cache ---

    def commit_time(self, sha: str) -> float:
        """Committer time of ``sha`` (unix seconds); the commit must have been fetched."""
        return self.commit_times([sha])[sha]

    def commit_times(self, shas: Collection[str]) -> dict[str, float]:
        """Committer times of fetched commits, in one git call (cached: commits never change)."""
        wanted = [check_sha(s) for s in shas]
        todo = sorted({s for s in wanted if s not in self._times})
        if todo:
            out = self._git_cache(["show", "-s", "--format=%H %ct", *todo], what="read commits of")
            for line in out.decode().splitlines():
                sha, _, ts = line.partition(" ")
                if sha in todo and ts.strip().lstrip("-").isdigit():
                    self._times[sha] = float(ts)
        return {s: self._times[s] for s in wanted}

    def materialize(self, sha: str, dest: Path) -> Path:
        """Write the tree of ``sha`` at ``dest`` and return ``dest``, which is always the same path.

        ``dest`` is a symlink to a versioned sibling directory ``.<name>@<sha12>-<token>``; the new tree
        is written in full first, then a new symlink replaces ``dest`` with one rename, so ``dest`` always
        shows one complete tree and relative bind mounts keep one path. Old trees are removed afterwards.
        Idempotent: if ``dest`` already shows ``sha``, nothing is written.
        """
        check_sha(sha)
        dest = Path(dest).absolute()
        parent, prefix = dest.parent, f".{dest.name}@"
        parent.mkdir(parents=True, exist_ok=True)
        current = os.readlink(dest) if dest.is_symlink() else None
        if current and current.startswith(f"{prefix}{sha[:12]}-") and (parent / current).is_dir():
            self._sweep(parent, prefix, keep=current)
            return dest
        self.ensure_fetched([sha])
        token = secrets.token_hex(4)
        # Written under a tmp- name and renamed when complete, so a crash leaves only tmp- leftovers.
        tree = parent / f"{prefix}{sha[:12]}-{token}"
        partial = parent / f"{prefix}tmp-{token}"
        index = parent / f"{prefix}index-{token}"
        partial.mkdir()
        try:
            # A private index, so concurrent checkouts from the shared bare cache never meet.
            env = {"GIT_INDEX_FILE": str(index)}
            self._git_cache(["read-tree", sha], what="read the tree of", env=env)
            self._git_cache(
                [f"--work-tree={partial}", "checkout-index", "--all", "--force"], what="check out", env=env
            )
            os.rename(partial, tree)
        except BaseException:
            shutil.rmtree(partial, ignore_errors=True)
            raise
        finally:
            index.unlink(missing_ok=True)
        link = parent / f"{prefix}link-{token}"
        os.symlink(tree.name, link)  # relative: the state directory may move
        if dest.exists() and not dest.is_symlink():
            # A real directory from elsewhere: a symlink cannot replace it in one rename; move it aside.
            os.replace(dest, parent / f"{prefix}old-{token}")
        os.replace(link, dest)
        _fsync_dir(parent)
        self._sweep(parent, prefix, keep=tree.name)
        return dest

    # --- plumbing ---

    @staticmethod
    def _sweep(parent: Path, prefix: str, keep: str, previous: int = 2) -> None:
        """Remove old trees and leftovers of interrupted runs, keeping the ``previous`` newest trees.

        Docker resolves a bind mount's symlinks when a container starts, so containers that were not
        recreated still mount an older tree; deleting it would empty their mounts. The converger hashes
        the resolved bind source, so a successful deploy moves every such container to the new tree, and
        keeping the last two trees covers a deploy that fails before it gets there.
        """
        trees: list[Path] = []
        for entry in parent.iterdir():
            if not entry.name.startswith(prefix) or entry.name == keep:
                continue
            if entry.is_symlink() or not entry.is_dir():
                entry.unlink(missing_ok=True)
            elif any(f"@{kind}-" in entry.name for kind in ("tmp", "index", "link", "old")):
                shutil.rmtree(entry, ignore_errors=True)
            else:
                trees.append(entry)
        trees.sort(key=lambda p: p.stat().st_mtime, reverse=True)
        for old in trees[previous:]:
            shutil.rmtree(old, ignore_errors=True)

    def _fetch_heads(self) -> None:
        """Fetch every branch into refs/remotes/origin/* (the caller holds the lock)."""
        args = ["fetch", "--quiet", "--no-tags", "--prune", "--no-write-fetch-head", self.repo, _REFSPEC]
        self._git_cache(args, what="fetch from")

    def _missing(self, shas: list[str]) -> list[str]:
        """The commits of ``shas`` not in the cache: one ``cat-file --batch-check`` that exits at EOF."""
        self._init_cache()
        out = self._git_cache(
            ["cat-file", "--batch-check"], what="inspect the cache of", stdin="".join(f"{s}\n" for s in shas)
        )
        present = set()
        for line in out.decode().splitlines():
            sha, _, kind = line.partition(" ")
            if kind.startswith("commit"):
                present.add(sha)
        return [s for s in shas if s not in present]

    def _init_cache(self) -> None:
        if (self.cache / "HEAD").is_file():
            return
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.cache_dir / f".{self.app}.git.tmp-{secrets.token_hex(4)}"
        try:
            self._git(["init", "--quiet", "--bare", str(tmp)], what="create a cache for")
            # Keep commits a force-push orphaned: they are rollback targets.
            self._git(["--git-dir", str(tmp), "config", "gc.pruneExpire", "never"], what="configure")
            os.replace(tmp, self.cache)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """Serialize cache writes between threads and between processes (CLI sync next to the daemon)."""
        with self._lock:
            self.cache_dir.mkdir(parents=True, exist_ok=True)
            with open(self.cache_dir / f"{self.app}.lock", "a") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)
                try:
                    yield
                finally:
                    fcntl.flock(lock, fcntl.LOCK_UN)

    def _git_cache(
        self, args: list[str], *, what: str, env: dict[str, str] | None = None, stdin: str | None = None
    ) -> bytes:
        return self._git(["--git-dir", str(self.cache), *args], what=what, env=env, stdin=stdin)

    def _git(
        self, args: list[str], *, what: str, env: dict[str, str] | None = None, stdin: str | None = None
    ) -> bytes:
        """Run git; GitError on failure or timeout. The child gets its own process group so a timeout
        also kills the ssh or https helper it spawned (which would otherwise hold our pipes open)."""
        argv = ["git", *args]
        try:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env={**git_env(), **(env or {})},
                cwd=self.cache_dir if self.cache_dir.is_dir() else "/",
                start_new_session=True,
            )
        except OSError as exc:
            raise GitError(f"cannot run git: {exc.strerror or exc}", hint="install git") from exc
        try:
            out, err = proc.communicate(stdin.encode() if stdin is not None else None, timeout=self.timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            raise GitError(
                f"app {self.app!r}: git timed out after {self.timeout:g}s trying to {what} "
                f"{redact(self.repo)}",
                hint="is the git server reachable? credentials must work without a prompt",
            ) from None
        finally:
            if proc.poll() is None:  # interrupted (e.g. KeyboardInterrupt): never leave git running
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        if proc.returncode != 0:
            raise GitError(
                f"app {self.app!r}: git could not {what} {redact(self.repo)}: "
                + (_summary(err) or f"exit status {proc.returncode}"),
                hint="check the URL, the network and the credentials (GIT_SSH_COMMAND, credential "
                "helpers); git never prompts here",
            )
        return out


def _summary(stderr: bytes) -> str:
    """The informative part of git's stderr, on one line, without credentials."""
    lines = [line.strip() for line in stderr.decode("utf-8", "replace").splitlines()]
    lines = [line for line in lines if line and not line.startswith(_BOILERPLATE)]
    return redact(" / ".join(lines[:3]))


_BOILERPLATE = ("Please make sure you have the correct access rights", "and the repository exists")


def _fsync_dir(path: Path) -> None:
    """Make a rename durable (a crash right after must not bring back the old symlink)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
