"""Git adapter: lists an app's branch heads, fetches commits into a bare cache, writes checkout trees.

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

from reconciler.errors import GitError, StateError

_SHA_RE = re.compile(r"^(?:[0-9a-f]{40}|[0-9a-f]{64})$")
_ABBREV_RE = re.compile(r"^[0-9a-f]{4,64}$")
_NULL_SHA_RE = re.compile(r"^0+$")
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
_ORIGIN = "refs/remotes/origin/"
# Siblings of a checkout path ``dest``, after the ``.<dest name>@`` prefix: complete trees, their commit
# sidecars, and leftovers of interrupted runs. Anything else in the directory is never touched.
_TREE_RE = re.compile(r"[0-9a-f]{12}-[0-9a-f]{8}")
_SIDECAR = ".commit"
_LEFTOVER_RE = re.compile(r"(?:tmp|index|link|old)-[0-9a-f]{8}")
# Characters git refuses anywhere in a ref name (refs.c refname_disposition): controls, DEL, space, ~^:?*[\
_REF_FORBIDDEN = frozenset(chr(c) for c in range(0x20)) | frozenset("\x7f ~^:?*[\\")


def redact(text: str) -> str:
    """Hide ``user:password@`` in URLs: messages and logs never carry credentials."""
    return _CREDENTIALS_RE.sub(r"\1***@", text)


def check_sha(sha: str) -> str:
    """Return ``sha`` if it is a full lower-case hex object name; anything else never reaches git."""
    if not isinstance(sha, str) or not _SHA_RE.fullmatch(sha):
        raise ValueError(f"not a full commit sha: {sha!r}")
    return sha


def branch_problem(name: str) -> str | None:
    """Why git would refuse ``name`` as a branch (``git check-ref-format --branch`` rules), or None.

    Pure Python, so a listing of many branches costs no process per name.
    """
    if not isinstance(name, str) or not name:
        return "the name is empty"
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return "the name is not valid UTF-8"
    if name.startswith("-"):
        return "git refuses branch names that start with '-'"
    if name == "HEAD":
        return "git refuses 'HEAD' as a branch name"
    bad = sorted({c for c in name if c in _REF_FORBIDDEN})
    if bad:
        shown = ", ".join("space" if c == " " else repr(c) for c in bad)
        return f"git refuses {shown} in ref names"
    if ".." in name:
        return "git refuses '..' in ref names"
    if "@{" in name:
        return "git refuses '@{' in ref names"
    if name.endswith("."):
        return "git refuses ref names that end with '.'"
    for part in name.split("/"):
        if not part:
            return "git refuses empty path components ('//', or a leading or trailing '/')"
        if part.startswith("."):
            return "git refuses path components that start with '.'"
        if part.endswith(".lock"):
            return "git refuses path components that end with '.lock'"
    return None


def git_env(base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of every git call: the user's credential setup, but never an interactive prompt."""
    env = {k: v for k, v in (os.environ if base is None else base).items() if k not in _REPO_VARS}
    env["GIT_TERMINAL_PROMPT"] = "0"
    env["GCM_INTERACTIVE"] = "never"  # Git Credential Manager
    if "GIT_SSH_COMMAND" not in env and "GIT_SSH" not in env:
        env["GIT_SSH_COMMAND"] = "ssh -o BatchMode=yes"
    return env


class _GitFailed(GitError):
    """git ran and exited non-zero; ``summary`` is its stderr on one line (for callers that re-word it)."""

    def __init__(self, message: str, *, hint: str, summary: str) -> None:
        super().__init__(message, hint=hint)
        self.summary = summary


class GitSource:
    """One app's repository: ``heads()`` per poll; ``ensure_fetched``, ``prepare``, ``activate`` per deploy.

    Thread-safe: the daemon's workers share one instance per app. The bare cache lives at
    ``cache_dir/<app>.git``; fetches into it are serialized (also across processes, with a lock file).
    The checkout methods are not locked: callers serialize them per ``dest`` (the deploy's project lock).
    """

    def __init__(self, app: str, repo: str, cache_dir: Path, timeout: float = 60.0) -> None:
        if not repo or repo.startswith("-"):
            raise GitError(f"invalid repository {redact(repo)!r} for app {app!r}")
        self.app = app
        self.repo = repo
        self.cache_dir = Path(cache_dir).absolute()
        self.cache = self.cache_dir / f"{app}.git"
        self.timeout = timeout
        # Branches the last heads() call left out, name -> why; replaced (never mutated) by each call.
        self.skipped_refs: dict[str, str] = {}
        self._lock = threading.Lock()
        self._present: set[str] = set()  # commits known to be in the cache (objects are never pruned)
        self._times: dict[str, float] = {}
        self._last_listing: tuple[bytes, dict[str, str], dict[str, str]] | None = None

    def __repr__(self) -> str:
        return f"GitSource(app={self.app!r}, repo={redact(self.repo)!r})"

    # --- the remote ---

    def heads(self) -> dict[str, str]:
        """Branch name -> head sha, from exactly one ``git ls-remote --heads``.

        Branches git cannot use (a name it refuses, or advertised with the null sha, which is what a
        server sends for a ref it cannot read) are left out and listed in ``self.skipped_refs``.
        Raises GitError on any failure *and* when no usable branch is listed: "no branches" is never
        taken as "every branch was deleted" (an outage must not tear environments down).
        """
        heads, skipped = self._list()
        self.skipped_refs = skipped
        if not heads:
            what = "no branches"
            if skipped:
                what = (
                    f"no usable branches ({len(skipped)} unusable: {', '.join(map(repr, sorted(skipped)))})"
                )
            raise GitError(
                f"app {self.app!r}: {redact(self.repo)} lists {what}; keeping every environment as it is",
                hint="check that the repository URL is right and has been pushed to",
            )
        return heads

    def ensure_fetched(self, shas: Collection[str], branches: Collection[str] | None = None) -> bool:
        """Make sure every commit in ``shas`` is in the cache; fetch only if one is missing.

        ``branches`` names the branches whose heads are wanted: only their refspecs are fetched, so a
        broken ref elsewhere on the server never fails this call. Without it, the branches whose listed
        head is a missing commit are fetched (one more ``ls-remote``). A commit at no head is then asked
        for by sha. Returns True if it fetched. Raises GitError if a wanted commit cannot be had (a
        branch name git refuses, a failed fetch, a commit force-pushed away), for this call alone.
        """
        wanted = [check_sha(s) for s in shas]
        names = None if branches is None else [self._check_branch(b) for b in branches]
        if all(s in self._present for s in wanted):
            return False
        with self._locked():
            missing = self._missing(wanted)
            if not missing:
                self._present.update(wanted)
                return False
            problem: GitError | None = None
            try:
                if names is None:
                    listed, _ = self._list()
                    names = sorted(b for b, sha in listed.items() if sha in missing)
                if names:
                    self._fetch_branches(names)
            except GitError as err:
                problem = err
            missing = self._missing(missing)
            if missing:
                # Not at any fetched head (e.g. force-pushed away): most servers still serve a known sha.
                with contextlib.suppress(GitError):
                    self._git_cache(
                        ["fetch", "--quiet", "--no-tags", "--no-write-fetch-head", self.repo, *missing],
                        what="fetch commits from",
                    )
                missing = self._missing(missing)
            if missing and problem is not None:
                detail = problem.summary if isinstance(problem, _GitFailed) else problem.message
                raise GitError(
                    f"app {self.app!r}: commit {missing[0][:12]} could not be fetched from "
                    f"{redact(self.repo)}: {detail}",
                    hint="if the branch is broken on the server (it names an object the server lacks), "
                    "fix or delete it there; otherwise check the URL, the network and the credentials",
                ) from problem
            if missing:
                raise GitError(
                    f"app {self.app!r}: commit {missing[0][:12]} is not in {redact(self.repo)}",
                    hint="was it force-pushed away? pick a commit that is on a branch",
                )
            self._present.update(wanted)
            return True

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
                    self._fetch_all()
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

    def object_ids(self, sha: str, paths: Collection[str]) -> dict[str, str]:
        """Path -> git object id in the fetched commit ``sha``, in one git call; absent paths are left out.

        ``paths`` are relative to the repository root ('.' or '' is the root tree; './a/' means 'a'; no
        '..', no absolute paths). The id is a blob's for a file, a tree's for a directory and the link's
        own blob for a symlink. git never follows symlinks here, so a path through a symlinked directory
        is absent; so is a submodule (its commit is not in this repository). Keys are the paths as given.
        """
        check_sha(sha)
        clean = {p: _repo_path(p) for p in paths}
        if not clean:
            return {}
        # `<sha>:<path>` names any entry of the commit, the root included (`ls-tree` cannot: it prints
        # nothing for `a/b` when `a/b/c` is asked too, and the children of the root for `.`).
        queries = [sha, *(f"{sha}:{path}" for path in clean.values())]
        out = self._git_cache(
            ["cat-file", "--batch-check=%(objectname) %(objecttype)"],
            what="read the files of",
            stdin="".join(f"{q}\n" for q in queries),
        )
        answers = out.split(b"\n")[: len(queries)]
        commit = answers[0].decode("ascii", "replace").split() if answers else []
        if len(answers) != len(queries) or commit != [sha, "commit"]:
            raise GitError(
                f"app {self.app!r}: commit {sha[:12]} is not in the cache",
                hint="fetch it first (ensure_fetched)",
            )
        ids: dict[str, str] = {}
        for path, answer in zip(clean, answers[1:], strict=True):
            oid, _, kind = answer.decode("utf-8", "surrogateescape").partition(" ")
            if _SHA_RE.fullmatch(oid) and kind in ("blob", "tree"):
                ids[path] = oid
        return ids

    # --- checkout trees ---
    #
    # ``dest`` (state_dir/checkouts/<project>) is a relative symlink to a sibling ``.<name>@<sha12>-<token>``
    # holding one complete tree; its full sha is in ``.<name>@<sha12>-<token>.commit``, next to the tree
    # and never inside it, since containers bind-mount the tree. Docker resolves a bind mount's symlinks
    # when a container starts, so a container that was not recreated keeps the tree it started with: the
    # caller decides which trees are still in use (``sweep``'s ``keep``).

    def prepare(self, sha: str, dest: Path) -> Path:
        """Write the tree of ``sha`` into a new versioned sibling of ``dest``; return that directory.

        ``dest`` is not touched. Returns ``dest``'s current tree if it is a complete tree of ``sha``.
        The tree is written under a tmp- name and renamed when complete; on any failure nothing of it
        stays. Raises StateError when it cannot be written (disk full, read-only state directory).
        """
        check_sha(sha)
        dest = Path(dest).absolute()
        current = self.current_tree(dest)
        if current is not None and self.tree_commit(current) == sha:
            return current
        self.ensure_fetched([sha])
        parent, prefix, token = dest.parent, f".{dest.name}@", secrets.token_hex(4)
        tree = parent / f"{prefix}{sha[:12]}-{token}"
        partial = parent / f"{prefix}tmp-{token}"
        index = parent / f"{prefix}index-{token}"
        sidecar = _sidecar(tree)
        try:
            parent.mkdir(parents=True, exist_ok=True)
            partial.mkdir()
            # A private index, so concurrent checkouts from the shared bare cache never meet.
            env = {"GIT_INDEX_FILE": str(index)}
            try:
                self._git_cache(["read-tree", sha], what="read the tree of", env=env)
                self._git_cache(
                    [f"--work-tree={partial}", "checkout-index", "--all", "--force"],
                    what="check out",
                    env=env,
                )
            except _GitFailed as err:
                # The commit is in the cache (fetched above): a failure here is writing, not git.
                raise _WriteFailed(err.summary) from err
            sidecar.write_text(f"{sha}\n")  # before the rename: a complete tree always has its sidecar
            os.rename(partial, tree)
            _fsync_dir(parent)
        except BaseException as exc:
            for leftover in (partial, tree, sidecar):
                _remove_quietly(leftover)
            if isinstance(exc, _WriteFailed | OSError):
                raise _state_error(f"cannot write the checkout of {sha[:12]} for {dest}", exc) from exc
            raise
        finally:
            _remove_quietly(index)
        return tree

    @staticmethod
    def activate(dest: Path, tree: Path) -> None:
        """Point the ``dest`` symlink at ``tree`` (a ``prepare`` result) with one rename, made durable.

        A plain directory at ``dest`` (from elsewhere) is moved aside for ``sweep``. Raises StateError if
        the link cannot be written; ``dest`` then still shows what it showed before.
        """
        dest, tree = Path(dest).absolute(), Path(tree).absolute()
        parent, prefix = dest.parent, f".{dest.name}@"
        if tree.parent != parent or _kind(prefix, tree.name) != "tree" or not tree.is_dir():
            raise ValueError(f"{tree} is not a checkout tree of {dest}")
        if dest.is_symlink() and os.readlink(dest) == tree.name:
            return
        token = secrets.token_hex(4)
        link, aside = parent / f"{prefix}link-{token}", parent / f"{prefix}old-{token}"
        moved = False
        try:
            os.symlink(tree.name, link)  # relative: the state directory may move
            if dest.exists() and not dest.is_symlink():
                # A directory cannot be replaced by a symlink in one rename: move it aside first.
                os.replace(dest, aside)
                moved = True
            os.replace(link, dest)
            _fsync_dir(parent)
        except OSError as exc:
            _remove_quietly(link)
            if moved and not dest.is_symlink():
                with contextlib.suppress(OSError):
                    os.replace(aside, dest)
            raise _state_error(f"cannot point {dest} at {tree.name}", exc) from exc

    @staticmethod
    def current_tree(dest: Path) -> Path | None:
        """The tree ``dest`` points at, or None (no link, a dangling one, or not one of our trees)."""
        dest = Path(dest).absolute()
        try:
            target = os.readlink(dest)
        except OSError:
            return None
        if _kind(f".{dest.name}@", target) != "tree":
            return None
        tree = dest.parent / target
        return tree if tree.is_dir() else None

    def tree_commit(self, tree: Path) -> str | None:
        """The full sha a tree was written from (its sidecar), or None if unknown.

        A tree written before sidecars existed is named by the cache (its name holds 12 hex digits).
        """
        tree = Path(tree)
        if not tree.is_dir():
            return None
        try:
            sha = _sidecar(tree).read_text().strip()
        except FileNotFoundError:
            return self._legacy_commit(tree)
        except (OSError, UnicodeDecodeError):
            return None
        return sha if _SHA_RE.fullmatch(sha) else None

    @staticmethod
    def tree_name(dest: Path, path: Path | str) -> str | None:
        """Name of the tree of ``dest`` that holds ``path`` (e.g. a container's bind-mount source), or None.

        Lexical: ``path`` is taken as Docker reports it, already resolved. Feeds ``sweep``'s ``keep``.
        """
        dest = Path(dest).absolute()
        try:
            rel = Path(os.path.normpath(Path(path).absolute())).relative_to(dest.parent)
        except ValueError:
            return None
        name = rel.parts[0] if rel.parts else ""
        return name if _kind(f".{dest.name}@", name) == "tree" else None

    @staticmethod
    def sweep(dest: Path, keep: Collection[str]) -> None:
        """Remove the trees of ``dest`` not named in ``keep`` (directory names) and not its current target,
        with their sidecars and any leftovers of interrupted runs. Other files are never touched.

        Raises StateError (after trying every entry) if something could not be removed.
        """
        dest = Path(dest).absolute()
        kept = {Path(k).name for k in keep}
        with contextlib.suppress(OSError):
            kept.add(os.readlink(dest))
        _remove_siblings(dest, kept)

    @staticmethod
    def remove_checkouts(dest: Path) -> None:
        """Remove ``dest`` and every tree, sidecar and leftover of it (a torn-down environment).

        Raises StateError (after trying every entry) if something could not be removed.
        """
        dest = Path(dest).absolute()
        try:
            if dest.is_symlink() or dest.is_file():
                dest.unlink()
            elif dest.is_dir():
                shutil.rmtree(dest)
        except OSError as exc:
            raise _state_error(f"cannot remove the checkout {dest}", exc) from exc
        _remove_siblings(dest, set())

    def materialize(self, sha: str, dest: Path) -> Path:
        """``prepare`` + ``activate`` + ``sweep(keep=())``: ``dest`` shows ``sha``; returns ``dest``.

        Kept for callers that do not track which trees live containers still mount: every other tree
        of ``dest`` is removed.
        """
        dest = Path(dest).absolute()
        self.activate(dest, self.prepare(sha, dest))
        with contextlib.suppress(StateError):  # leftovers are retried by the next sweep
            self.sweep(dest, keep=())
        return dest

    # --- plumbing ---

    def _list(self) -> tuple[dict[str, str], dict[str, str]]:
        """One ``ls-remote --heads``: usable branch -> sha, and skipped branch -> why."""
        out = self._git(["ls-remote", "--heads", "--", self.repo], what="list the branches of")
        last = self._last_listing
        if last is not None and last[0] == out:
            # Nothing moved (the common poll): skip checking a thousand branch names again.
            return dict(last[1]), dict(last[2])
        heads: dict[str, str] = {}
        skipped: dict[str, str] = {}
        for line in out.split(b"\n"):
            raw_sha, _, raw_ref = line.partition(b"\t")
            ref = raw_ref.decode("utf-8", "surrogateescape")
            if not ref.startswith("refs/heads/"):
                continue
            name, sha = ref.removeprefix("refs/heads/"), raw_sha.decode("ascii", "replace")
            problem = branch_problem(name)
            if problem is None and _NULL_SHA_RE.fullmatch(sha):
                # What a server sends for a ref it cannot read, e.g. a name git refuses; protocol v2
                # even cuts the name at a space.
                problem = "the server advertises it with no commit (a broken ref, or a name git refuses)"
            elif problem is None and not _SHA_RE.fullmatch(sha):
                problem = f"the server advertises it with {sha[:64]!r}, not a commit id"
            if problem is None:
                heads[name] = sha
                skipped.pop(name, None)
            elif name not in heads:
                skipped[name] = problem
        self._last_listing = (out, dict(heads), dict(skipped))
        return heads, skipped

    def _legacy_commit(self, tree: Path) -> str | None:
        _, at, rest = tree.name.rpartition("@")
        if not at or not _TREE_RE.fullmatch(rest) or not (self.cache / "HEAD").is_file():
            return None
        try:
            out = self._git_cache(
                ["rev-parse", "--verify", "--quiet", f"{rest[:12]}^{{commit}}"], what="resolve in"
            )
        except GitError:
            return None  # not fetched, or ambiguous
        sha = out.decode().strip()
        return sha if _SHA_RE.fullmatch(sha) else None

    def _check_branch(self, name: str) -> str:
        problem = branch_problem(name)
        if problem is not None:
            raise GitError(
                f"app {self.app!r}: cannot fetch branch {name!r} of {redact(self.repo)}: {problem}",
                hint="rename the branch on the server",
            )
        return name

    def _fetch_all(self) -> None:
        """Fetch every usable branch, dropping cache refs of branches that are gone (under the lock).

        Best effort: a branch that cannot be fetched is left out, never failing the others.
        """
        heads, _ = self._list()
        if heads:  # an empty listing prunes nothing: "no branches" never means "all deleted"
            with contextlib.suppress(GitError):
                self._fetch_branches(sorted(heads), prune=True)

    def _fetch_branches(self, names: list[str], *, prune: bool = False) -> None:
        """Fetch exactly ``names`` into refs/remotes/origin/ (the caller holds the lock).

        A failure of the one fetch for several branches is retried branch by branch, so one broken
        branch fails alone; the first failure is raised after the others were fetched.
        """
        wanted = {f"{_ORIGIN}{name}" for name in names}
        base = ["fetch", "--quiet", "--no-tags", "--no-write-fetch-head", self.repo]
        refspecs = [f"+refs/heads/{n}:{_ORIGIN}{n}" for n in names]
        if prune:
            self._drop_refs(wanted, prune=True)
        else:
            # The common case (a branch moved) needs no cleanup: try first, and list the cache's refs
            # only when the fetch fails, which is also what a blocking ref (see _drop_refs) makes it do.
            try:
                self._git_cache([*base, *refspecs], what="fetch from")
                return
            except GitError:
                self._drop_refs(wanted, prune=False)
        try:
            self._git_cache([*base, *refspecs], what="fetch from")
            return
        except GitError:
            if len(names) == 1:
                raise
        first: GitError | None = None
        for name in names:
            try:
                self._git_cache([*base, f"+refs/heads/{name}:{_ORIGIN}{name}"], what="fetch from")
            except GitError as err:
                first = first or err
        if first is not None:
            raise first

    def _drop_refs(self, wanted: set[str], *, prune: bool) -> None:
        """Delete cache refs that would block ``wanted``: git cannot create origin/a/b while origin/a
        exists (a branch 'a' deleted, then 'a/b' pushed), nor the other way round. With ``prune``, also
        the refs of branches no longer listed (what ``fetch --prune`` did for the old wildcard refspec)."""
        self._init_cache()
        out = self._git_cache(["for-each-ref", "--format=%(refname)", _ORIGIN], what="list the refs of")
        stale = []
        for ref in out.decode("utf-8", "surrogateescape").split("\n"):
            if not ref or ref in wanted:
                continue
            if prune or any(w.startswith(f"{ref}/") or ref.startswith(f"{w}/") for w in wanted):
                stale.append(ref)
        if stale:
            self._git_cache(
                ["update-ref", "--stdin"],
                what="update the refs of",
                stdin="".join(f"delete {r}\n" for r in stale),
            )

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
        tmp = self.cache_dir / f".{self.app}.git.tmp-{secrets.token_hex(4)}"
        try:
            self.cache_dir.mkdir(parents=True, exist_ok=True)
            self._git(["init", "--quiet", "--bare", str(tmp)], what="create a cache for")
            # Keep commits a force-push orphaned: they are rollback targets.
            self._git(["--git-dir", str(tmp), "config", "gc.pruneExpire", "never"], what="configure")
            os.replace(tmp, self.cache)
        except OSError as exc:
            raise _state_error(f"cannot create the git cache {self.cache}", exc) from exc
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """Serialize cache writes between threads and between processes (CLI sync next to the daemon)."""
        with self._lock:
            try:
                self.cache_dir.mkdir(parents=True, exist_ok=True)
                lock = open(self.cache_dir / f"{self.app}.lock", "a")  # noqa: SIM115 (closed below)
            except OSError as exc:
                raise _state_error(f"cannot lock the git cache {self.cache}", exc) from exc
            with lock:
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
        data = stdin.encode("utf-8", "surrogateescape") if stdin is not None else None
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
            out, err = proc.communicate(data, timeout=self.timeout)
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
            summary = _summary(err) or f"exit status {proc.returncode}"
            raise _GitFailed(
                f"app {self.app!r}: git could not {what} {redact(self.repo)}: {summary}",
                hint="check the URL, the network and the credentials (GIT_SSH_COMMAND, credential "
                "helpers); git never prompts here",
                summary=summary,
            )
        return out


def _summary(stderr: bytes) -> str:
    """The informative part of git's stderr, on one line, without credentials."""
    lines = [line.strip() for line in stderr.decode("utf-8", "replace").splitlines()]
    lines = [line for line in lines if line and not line.startswith(_BOILERPLATE)]
    return redact(" / ".join(lines[:3]))


_BOILERPLATE = ("Please make sure you have the correct access rights", "and the repository exists")


def _repo_path(path: str) -> str:
    """``path`` relative to the repository root, normalized ('' for the root); ValueError if it leaves it."""
    if not isinstance(path, str) or path.startswith("/") or any(c in path for c in "\0\n"):
        raise ValueError(f"not a path inside the repository: {path!r}")
    parts = [part for part in path.split("/") if part not in ("", ".")]
    if ".." in parts:
        raise ValueError(f"not a path inside the repository: {path!r}")
    return "/".join(parts)


def _kind(prefix: str, name: str) -> str | None:
    """What a sibling named ``name`` of the checkout with ``prefix`` is: tree, sidecar, leftover or None."""
    if not name.startswith(prefix):
        return None
    rest = name[len(prefix) :]
    if _TREE_RE.fullmatch(rest):
        return "tree"
    if rest.endswith(_SIDECAR) and _TREE_RE.fullmatch(rest.removesuffix(_SIDECAR)):
        return "sidecar"
    return "leftover" if _LEFTOVER_RE.fullmatch(rest) else None


def _sidecar(tree: Path) -> Path:
    return tree.with_name(f"{tree.name}{_SIDECAR}")


def _remove_siblings(dest: Path, kept: set[str]) -> None:
    """Remove the trees (unless in ``kept``), sidecars (unless their tree is) and leftovers of ``dest``."""
    parent, prefix = dest.parent, f".{dest.name}@"
    try:
        entries = sorted(parent.iterdir()) if parent.is_dir() else []
    except OSError as exc:
        raise _state_error(f"cannot list {parent}", exc) from exc
    failed: list[tuple[Path, OSError]] = []
    for entry in entries:
        kind = _kind(prefix, entry.name)
        if kind is None or (kind == "tree" and entry.name in kept):
            continue
        if kind == "sidecar" and entry.name.removesuffix(_SIDECAR) in kept:
            continue
        try:
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink(missing_ok=True)
        except OSError as exc:
            failed.append((entry, exc))
    if failed:
        path, error = failed[0]
        more = f" (and {len(failed) - 1} more)" if len(failed) > 1 else ""
        raise _state_error(f"cannot remove the old checkout {path}{more}", error) from error


def _remove_quietly(path: Path) -> None:
    """Best-effort removal on an error path: the original error is the one to report."""
    with contextlib.suppress(OSError):
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)


class _WriteFailed(Exception):
    """git could not write a checkout (it reports ENOSPC and EROFS on stderr, not through an OSError)."""

    def __init__(self, summary: str) -> None:
        super().__init__(f"git: {summary}")


def _state_error(what: str, exc: BaseException) -> StateError:
    """A StateError naming the path and the OS error, with what to do about it."""
    if isinstance(exc, OSError):
        where = f" ({exc.filename})" if exc.filename else ""
        detail = f"{exc.strerror or exc}{where}"
    else:
        detail = str(exc)
    return StateError(
        f"{what}: {detail}",
        hint="free disk space, or make the state directory (state_dir) writable by the reconciler",
    )


def _fsync_dir(path: Path) -> None:
    """Make a rename durable (a crash right after must not bring back the old symlink)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
