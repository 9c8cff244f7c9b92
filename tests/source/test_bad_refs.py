"""A broken ref on the server (a name git refuses, a missing object) never breaks the app's other branches."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from reconciler.errors import GitError
from reconciler.source import branch_problem
from tests.source.helpers import REAL_GIT, Remote, calls, source, write_loose_ref, write_packed_ref

MISSING = "1" * 40  # a valid object name that no object of the server has


@pytest.fixture
def broken(remote: Remote) -> dict[str, str]:
    """A server with two good branches and every kind of broken ref next to them; returns the good heads."""
    remote.commit({"VERSION": "base\n"})
    remote.checkout("feature", new=True)
    feature = remote.commit({"VERSION": "feature\n"})
    remote.push("feature")
    remote.checkout("master")
    master = remote.commit({"VERSION": "master\n"})  # diverged: fetching one never brings the other
    remote.push("master")
    for name in ("bad..name", "ctl\x01x", "sp ace", "foo.lock"):
        write_loose_ref(remote.bare, name, master)
    write_packed_ref(remote.bare, "packed..bad", master)
    write_packed_ref(remote.bare, "packed.lock", master)
    return {"master": master, "feature": feature}


def test_ls_remote_shows_bad_names_with_the_null_sha(remote: Remote, broken: dict[str, str]) -> None:
    """The reproduction: a server advertises refs it cannot read with 000…0 (a loose *.lock not at all)."""
    out = subprocess.run(
        [REAL_GIT, "ls-remote", "--heads", str(remote.bare)], check=True, capture_output=True
    ).stdout.decode()
    listed = {ref: sha for sha, ref in (line.split("\t", 1) for line in out.splitlines())}
    assert listed["refs/heads/bad..name"] == "0" * 40
    assert listed["refs/heads/packed..bad"] == "0" * 40
    assert listed["refs/heads/master"] == broken["master"]
    assert "refs/heads/foo.lock" not in listed


def test_heads_skip_bad_refs_and_report_why(remote: Remote, tmp_path: Path, broken: dict[str, str]) -> None:
    """heads() lists the good branches only and names every skipped one, with a reason, in skipped_refs."""
    src = source(remote, tmp_path)
    assert src.heads() == broken
    skipped = src.skipped_refs
    assert {"bad..name", "ctl\x01x", "packed..bad", "packed.lock"} <= set(skipped)
    # Protocol v2 cuts the name at the space, v0 keeps it: either way it is skipped, not listed.
    assert "sp ace" in skipped or "sp" in skipped
    assert all(why for why in skipped.values())
    assert "'..'" in skipped["packed..bad"]


def test_other_branches_fetch_and_check_out_despite_bad_refs(
    remote: Remote, tmp_path: Path, broken: dict[str, str], git_log: Path
) -> None:
    """With bad refs on the server, fetching the good heads (by branch or not) and checking out work."""
    src = source(remote, tmp_path)
    assert src.ensure_fetched([broken["feature"]], branches=["feature"]) is True
    fetches = [line for line in git_log.read_text().splitlines() if " fetch " in f" {line} "]
    assert fetches and all("refs/heads/feature:refs/remotes/origin/feature" in line for line in fetches)
    assert all("*" not in line for line in fetches)
    assert src.ensure_fetched(src.heads().values()) is True  # master, found through the listing
    dest = src.materialize(broken["master"], tmp_path / "co" / "p")
    assert (dest / "VERSION").read_text() == "master\n"


def test_a_branch_at_a_missing_object_fails_alone(remote: Remote, tmp_path: Path, git_log: Path) -> None:
    """A well-named branch whose object the server lacks raises GitError for its own fetch only."""
    master = remote.commit({"a": "1"})
    remote.push("master")
    write_packed_ref(remote.bare, "broken", MISSING)
    src = source(remote, tmp_path)
    heads = src.heads()
    assert heads == {"master": master, "broken": MISSING}  # a name git accepts is listed as advertised
    with pytest.raises(GitError, match="could not be fetched"):
        src.ensure_fetched([MISSING], branches=["broken"])
    assert src.ensure_fetched([master], branches=["master"]) is True
    # Fetching every head at once still brings in the good one before it reports the broken one.
    other = source(remote, tmp_path / "other")
    with pytest.raises(GitError):
        other.ensure_fetched(heads.values())
    before = calls(git_log, "fetch")
    assert other.ensure_fetched([master]) is False
    assert calls(git_log, "fetch") == before


def test_a_refused_branch_name_never_reaches_git(remote: Remote, tmp_path: Path, git_log: Path) -> None:
    """ensure_fetched refuses a branch name git would refuse with a GitError, before running git."""
    sha = remote.commit({"a": "1"})
    remote.push("master")
    src = source(remote, tmp_path)
    for bad in ("bad..name", "x.lock", "-upload-pack=touch", "a b", "", "HEAD", "a/"):
        with pytest.raises(GitError, match="cannot fetch branch"):
            src.ensure_fetched([sha], branches=[bad])
    assert git_log.read_text() == ""


def test_a_branch_replaced_by_a_nested_one_still_fetches(remote: Remote, tmp_path: Path) -> None:
    """Branch 'a' deleted, then 'a/b' pushed: the stale cache ref origin/a never blocks fetching a/b."""
    first = remote.commit({"v": "1"})
    remote.push("a")
    src = source(remote, tmp_path)
    src.ensure_fetched([first], branches=["a"])
    remote.delete("a")
    second = remote.commit({"v": "2"})
    remote.push("a/b")
    assert src.ensure_fetched([second], branches=["a/b"]) is True
    third = remote.commit({"v": "3"})
    remote.push("a/b")
    remote.delete("a/b")
    remote.push("a")  # and back: origin/a/b must not block origin/a
    assert src.ensure_fetched([third], branches=["a"]) is True


def test_resolve_works_next_to_a_broken_branch(
    remote: Remote, tmp_path: Path, broken: dict[str, str]
) -> None:
    """An abbreviated sha resolves even when the server also has broken refs and a missing object."""
    write_packed_ref(remote.bare, "broken", MISSING)
    src = source(remote, tmp_path)
    assert src.resolve(broken["feature"][:10]) == broken["feature"]


def test_only_broken_branches_is_still_an_outage(remote: Remote, tmp_path: Path) -> None:
    """A server whose every branch is unusable raises GitError (never "all branches deleted")."""
    sha = remote.commit({"a": "1"})
    write_loose_ref(remote.bare, "bad..one", sha)
    src = source(remote, tmp_path)
    with pytest.raises(GitError, match="no usable branches"):
        src.heads()
    assert set(src.skipped_refs) == {"bad..one"}


_NAME_CHARS = st.sampled_from([*"ab/.-@{}~^:?*[\\ \t\x01\x7fé", "lock", "HEAD"])


@settings(max_examples=300, deadline=None)
@given(st.lists(_NAME_CHARS, min_size=1, max_size=8).map("".join))
@example("a..b")
@example(".hidden")
@example("a/.b")
@example("x.lock/y")
@example("ends.")
@example("a@{1}")
@example("@")
@example("a//b")
@example("/a")
@example("a/")
@example("feature/ünïcode")
def test_branch_problem_agrees_with_git_check_ref_format(name: str) -> None:
    """branch_problem accepts exactly what `git check-ref-format` accepts, minus '-…' and 'HEAD'."""
    accepted = (
        subprocess.run([REAL_GIT, "check-ref-format", f"refs/heads/{name}"], capture_output=True).returncode
        == 0
    )
    stricter = name.startswith("-") or name == "HEAD"
    assert (branch_problem(name) is None) == (accepted and not stricter)
