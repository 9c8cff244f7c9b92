"""GitSource against real bare repositories: heads, fetch-only-when-moved, atomic checkouts, failures."""

from __future__ import annotations

import http.server
import os
import shutil
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from reconciler.errors import GitError
from reconciler.source import GitSource, git_env, redact
from tests.source.helpers import Remote, calls, source


def test_heads_follow_push_force_push_and_delete(remote: Remote, tmp_path: Path) -> None:
    """heads() lists every branch at its current sha, through pushes, force-pushes and deletions."""
    src = source(remote, tmp_path)
    first = remote.commit({"a.txt": "1"})
    remote.push("master")
    remote.checkout("feature/login", new=True)
    feature = remote.commit({"a.txt": "2"})
    remote.push("feature/login")
    assert src.heads() == {"master": first, "feature/login": feature}

    remote.checkout("master")
    rewritten = remote.commit({"b.txt": "x"}, "rewritten")
    remote.push("feature/login", force=True)
    assert src.heads() == {"master": first, "feature/login": rewritten}

    remote.delete("feature/login")
    assert src.heads() == {"master": first}


def test_one_ls_remote_per_call(remote: Remote, tmp_path: Path, git_log: Path) -> None:
    """Each heads() call runs exactly one git command: ls-remote."""
    remote.commit({"a": "1"})
    remote.push("master")
    src = source(remote, tmp_path)
    src.heads()
    src.heads()
    assert calls(git_log, "ls-remote") == 2
    assert len(git_log.read_text().splitlines()) == 2


def test_fetch_only_when_a_head_moved(remote: Remote, tmp_path: Path, git_log: Path) -> None:
    """ensure_fetched fetches for new commits only; known commits cost no git call at all."""
    remote.commit({"a": "1"})
    remote.push("master")
    remote.push("develop")
    src = source(remote, tmp_path)
    heads = src.heads()
    assert src.ensure_fetched(heads.values()) is True
    assert calls(git_log, "fetch") == 1

    before = len(git_log.read_text().splitlines())
    assert src.ensure_fetched(src.heads().values()) is False
    assert len(git_log.read_text().splitlines()) == before + 1  # the ls-remote only
    assert calls(git_log, "fetch") == 1

    # A restarted daemon (new instance, same cache) finds the commits already there.
    assert source(remote, tmp_path).ensure_fetched(heads.values()) is False
    assert calls(git_log, "fetch") == 1

    remote.checkout("develop", new=True)
    remote.commit({"a": "2"})
    remote.push("develop")
    assert src.ensure_fetched(src.heads().values()) is True
    assert calls(git_log, "fetch") == 2


def test_materialize_swaps_atomically_at_a_stable_path(
    remote: Remote, tmp_path: Path, git_log: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """dest keeps its path, always shows one complete tree, and only the current tree is kept."""
    one = remote.commit(
        {"VERSION": "one\n", "site/index.html": "<p>one</p>", "docker-compose.yml": "services: {}\n"}
    )
    two = remote.commit({"VERSION": "two\n", "site/index.html": "<p>two</p>", "site/new.html": "new"})
    src = source(remote, tmp_path)
    remote.push("master")
    src.ensure_fetched([one, two])
    dest = tmp_path / "checkouts" / "demo-production"

    assert src.materialize(one, dest) == dest
    assert (dest / "VERSION").read_text() == "one\n"
    assert (dest / "site/index.html").read_text() == "<p>one</p>"
    first_target = os.readlink(dest)

    # While the new tree is being written, dest still shows the old, complete one.
    monkeypatch.setenv("DURING_CHECKOUT", str(dest))
    assert src.materialize(two, dest) == dest
    assert Path(f"{git_log}.during").read_text() == "one\n"
    assert (dest / "VERSION").read_text() == "two\n"
    assert (dest / "site/new.html").read_text() == "new"
    assert dest.is_symlink() and os.readlink(dest) != first_target
    siblings = sorted(p.name for p in dest.parent.iterdir())
    # Temp files and the previous tree are gone (materialize is prepare + activate + sweep(keep=())).
    assert siblings == sorted(["demo-production", os.readlink(dest), f"{os.readlink(dest)}.commit"])

    # Going back works too (a rollback), and the same commit again writes nothing.
    src.materialize(one, dest)
    assert (dest / "VERSION").read_text() == "one\n" and not (dest / "site/new.html").exists()
    checkouts = calls(git_log, "checkout-index")
    target = os.readlink(dest)
    src.materialize(one, dest)
    assert os.readlink(dest) == target and calls(git_log, "checkout-index") == checkouts
    src.materialize(two, dest)
    src.materialize(one, dest)
    trees = [p for p in dest.parent.iterdir() if p.name != "demo-production"]
    assert [p.name for p in trees if p.is_dir()] == [os.readlink(dest)]
    assert first_target not in {p.name for p in trees}


def test_materialize_cleans_up_after_a_crash_and_replaces_a_directory(remote: Remote, tmp_path: Path) -> None:
    """Leftovers of an interrupted run are swept; a plain directory at dest is replaced by the tree."""
    sha = remote.commit({"VERSION": "one\n"})
    remote.push("master")
    src = source(remote, tmp_path)
    dest = tmp_path / "checkouts" / "p"
    dest.mkdir(parents=True)
    (dest / "stale").write_text("x")
    leftover = dest.parent / ".p@tmp-deadbeef"
    leftover.mkdir()
    (leftover / "half").write_text("written")
    other = dest.parent / ".p2@abc"  # another project's files are left alone
    other.mkdir()
    src.materialize(sha, dest)
    assert (dest / "VERSION").read_text() == "one\n" and not (dest / "stale").exists()
    assert not leftover.exists() and other.exists()
    tree = os.readlink(dest)
    assert sorted(p.name for p in dest.parent.iterdir()) == sorted(["p", tree, f"{tree}.commit", ".p2@abc"])


def test_materialize_keeps_modes_and_symlinks(remote: Remote, tmp_path: Path) -> None:
    """The checkout is git's own: executable bits and symlinks survive."""
    remote.commit({"run.sh": "#!/bin/sh\n", "conf/app.conf": "x"})
    (remote.work / "run.sh").chmod(0o755)
    (remote.work / "link.conf").symlink_to("conf/app.conf")
    sha = remote.commit({}, "modes")
    remote.push("master")
    dest = tmp_path / "co" / "p"
    source(remote, tmp_path).materialize(sha, dest)
    assert os.access(dest / "run.sh", os.X_OK)
    assert (dest / "link.conf").is_symlink() and (dest / "link.conf").read_text() == "x"


def test_commit_time(remote: Remote, tmp_path: Path) -> None:
    """commit_time is the committer time of a fetched commit."""
    sha = remote.commit({"a": "1"}, date="@1600000000 +0200")
    remote.push("master")
    src = source(remote, tmp_path)
    src.ensure_fetched([sha])
    assert src.commit_time(sha) == 1600000000.0
    assert src.commit_times([sha, sha]) == {sha: 1600000000.0}


def test_remote_that_disappears(remote: Remote, tmp_path: Path) -> None:
    """A deleted remote is a GitError, never an empty listing; fetched commits still check out offline."""
    sha = remote.commit({"VERSION": "one\n"})
    remote.push("master")
    src = source(remote, tmp_path)
    src.ensure_fetched(src.heads().values())
    shutil.rmtree(remote.bare)
    with pytest.raises(GitError) as info:
        src.heads()
    assert "demo" in str(info.value) and str(remote.bare) in str(info.value)
    dest = src.materialize(sha, tmp_path / "co" / "p")
    assert (dest / "VERSION").read_text() == "one\n"


def test_empty_repository_is_an_error(remote: Remote, tmp_path: Path) -> None:
    """A repository without branches raises GitError: "no branches" never means "all deleted"."""
    with pytest.raises(GitError, match="lists no branches"):
        source(remote, tmp_path).heads()


def test_unknown_commit(remote: Remote, tmp_path: Path) -> None:
    """A commit that is on no branch of the remote is reported, not silently skipped."""
    remote.commit({"a": "1"})
    remote.push("master")
    with pytest.raises(GitError, match="is not in"):
        source(remote, tmp_path).ensure_fetched(["0" * 40])


def test_only_full_shas_reach_git(remote: Remote, tmp_path: Path) -> None:
    """Anything but a full hex sha is refused before any git call."""
    src = source(remote, tmp_path)
    for bad in ("HEAD", "--upload-pack=touch /tmp/x", "abc", "A" * 40):
        with pytest.raises(ValueError):
            src.ensure_fetched([bad])
        with pytest.raises(ValueError):
            src.materialize(bad, tmp_path / "co" / "p")
        with pytest.raises(ValueError):
            src.prepare(bad, tmp_path / "co" / "p")


def test_resolve_abbreviated_sha(remote: Remote, tmp_path: Path) -> None:
    """An abbreviated sha (rollback --to) resolves to the full one, fetching if needed."""
    sha = remote.commit({"a": "1"})
    remote.push("master")
    src = source(remote, tmp_path)
    assert src.resolve(sha[:8]) == sha
    assert src.resolve(sha.upper()) == sha
    with pytest.raises(GitError):
        src.resolve("ffffffff")
    with pytest.raises(GitError):
        src.resolve("master")


def test_unreachable_https_fails_fast(tmp_path: Path) -> None:
    """An https URL to a closed port is a GitError (well before the timeout)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again when the block ends
    src = GitSource("demo", f"https://127.0.0.1:{port}/app.git", tmp_path / "cache", timeout=30)
    with pytest.raises(GitError) as info:
        src.heads()
    assert "timed out" not in str(info.value)


class _AuthRequired(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(401)
        self.send_header("WWW-Authenticate", 'Basic realm="git"')
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def auth_server() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _AuthRequired)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_auth_failure_never_prompts(
    tmp_path: Path, auth_server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A server asking for credentials makes git fail at once instead of waiting on a prompt."""
    monkeypatch.delenv("GIT_ASKPASS", raising=False)
    monkeypatch.delenv("SSH_ASKPASS", raising=False)
    src = GitSource("demo", f"http://{auth_server}/app.git", tmp_path / "cache", timeout=30)
    with pytest.raises(GitError) as info:
        src.heads()
    assert "timed out" not in str(info.value)
    assert "prompt" in str(info.value).lower() or "auth" in str(info.value).lower()


def test_credentials_never_appear_in_errors(tmp_path: Path, auth_server: str) -> None:
    """user:password in a repository URL is redacted from every message."""
    src = GitSource("demo", f"http://user:hunter2@{auth_server}/app.git", tmp_path / "cache", timeout=30)
    with pytest.raises(GitError) as info:
        src.heads()
    assert "hunter2" not in str(info.value)
    assert "hunter2" not in repr(src)
    assert redact("https://u:p@host/x and ssh://git@host/y") == "https://***@host/x and ssh://***@host/y"


def test_a_silent_server_times_out(tmp_path: Path) -> None:
    """A server that accepts connections but never answers is cut off by the timeout with a GitError."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        port = listener.getsockname()[1]
        src = GitSource("demo", f"http://127.0.0.1:{port}/app.git", tmp_path / "cache", timeout=1)
        with pytest.raises(GitError, match="timed out"):
            src.heads()


def test_git_environment_never_prompts() -> None:
    """Every git call disables terminal prompts and ssh passwords, keeping the user's own ssh command."""
    env = git_env({"PATH": "/bin", "GIT_DIR": "/elsewhere"})
    assert env["GIT_TERMINAL_PROMPT"] == "0" and env["GCM_INTERACTIVE"] == "never"
    assert env["GIT_SSH_COMMAND"] == "ssh -o BatchMode=yes"
    assert "GIT_DIR" not in env
    assert git_env({"GIT_SSH_COMMAND": "ssh -i key"})["GIT_SSH_COMMAND"] == "ssh -i key"


def test_a_branch_that_moved_or_vanished_since_listing(remote: Remote, tmp_path: Path) -> None:
    """A listed head force-pushed away or a deleted branch is still fetched by sha when the server has it."""
    base = remote.commit({"a": "1"})
    remote.push("master")
    remote.checkout("feature", new=True)
    listed = remote.commit({"a": "2"})
    remote.push("feature")
    src = source(remote, tmp_path)
    assert src.heads()["feature"] == listed
    remote.checkout("master")
    remote.commit({"a": "3"})
    remote.push("feature", force=True)  # `listed` is now on no branch
    assert src.ensure_fetched([listed], branches=["feature"]) is True
    remote.delete("feature")
    other = source(remote, tmp_path / "other")
    assert other.ensure_fetched([base], branches=["feature"]) is True  # base is still on master
    with pytest.raises(GitError, match="could not be fetched"):
        other.ensure_fetched(["f" * 40], branches=["feature"])
