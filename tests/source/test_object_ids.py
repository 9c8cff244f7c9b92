"""object_ids: git's own content ids of files, directories and symlinks in a commit, in one git call."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from reconciler.errors import GitError
from tests.source.helpers import Remote, calls, git, source


def rev_parse(remote: Remote, spec: str) -> str:
    return git("-C", str(remote.work), "rev-parse", spec).strip()


@pytest.fixture
def layout(remote: Remote) -> str:
    """A pushed commit with nested files, a directory, a symlink to a file and one to a directory."""
    remote.commit(
        {"README": "readme\n", "a/b/c/f.conf": "nested\n", "site/index.html": "<p>x</p>", "with space": "s"}
    )
    (remote.work / "link").symlink_to("README")
    (remote.work / "linkdir").symlink_to("a/b")
    sha = remote.commit({}, "links")
    remote.push("master")
    return sha


def test_ids_of_files_directories_root_and_symlinks(
    remote: Remote, tmp_path: Path, layout: str, git_log: Path
) -> None:
    """Each path gets the id git gives it (blob, tree, link blob, root tree); absent paths are left out."""
    src = source(remote, tmp_path)
    src.ensure_fetched([layout])
    asked = [
        "README",
        "a/b/c/f.conf",
        "a/b/c",
        "a/b",
        "site",
        ".",
        "",
        "./site/",
        "link",
        "linkdir/c",
        "missing",
        "a/missing",
        "with space",
    ]
    before = len(git_log.read_text().splitlines())
    ids = src.object_ids(layout, asked)
    assert len(git_log.read_text().splitlines()) == before + 1 and calls(git_log, "cat-file") >= 1
    root = rev_parse(remote, f"{layout}^{{tree}}")
    assert ids == {
        "README": rev_parse(remote, f"{layout}:README"),
        "a/b/c/f.conf": rev_parse(remote, f"{layout}:a/b/c/f.conf"),
        "a/b/c": rev_parse(remote, f"{layout}:a/b/c"),
        "a/b": rev_parse(remote, f"{layout}:a/b"),
        "site": rev_parse(remote, f"{layout}:site"),
        ".": root,
        "": root,
        "./site/": rev_parse(remote, f"{layout}:site"),
        "link": rev_parse(remote, f"{layout}:link"),
        "with space": rev_parse(remote, f"{layout}:with space"),
    }
    # A symlink's id is its own (the link text), not its target's; git never follows it.
    assert ids["link"] != ids["README"]
    assert git("-C", str(remote.work), "cat-file", "-p", ids["link"]) == os.readlink(remote.work / "link")


def test_ids_change_only_with_content(remote: Remote, tmp_path: Path, layout: str) -> None:
    """A README-only commit changes README's id and the root's, never the mounted directory's."""
    src = source(remote, tmp_path)
    second = remote.commit({"README": "new readme\n"})
    remote.push("master")
    src.ensure_fetched([layout, second])
    paths = ["site", "a/b/c/f.conf", "README", "."]
    before, after = src.object_ids(layout, paths), src.object_ids(second, paths)
    assert before["site"] == after["site"] and before["a/b/c/f.conf"] == after["a/b/c/f.conf"]
    assert before["README"] != after["README"] and before["."] != after["."]


def test_paths_outside_the_repository_are_refused(remote: Remote, tmp_path: Path, layout: str) -> None:
    """Absolute paths and '..' are a ValueError before any git call."""
    src = source(remote, tmp_path)
    src.ensure_fetched([layout])
    for bad in ("/etc/passwd", "..", "../x", "a/../../x", "a/../b", "a\nb"):
        with pytest.raises(ValueError):
            src.object_ids(layout, [bad])
    with pytest.raises(ValueError):
        src.object_ids("HEAD", ["README"])
    assert src.object_ids(layout, []) == {}


def test_a_commit_not_in_the_cache_is_an_error(remote: Remote, tmp_path: Path, layout: str) -> None:
    """object_ids for a commit that was never fetched raises GitError instead of answering "no paths"."""
    src = source(remote, tmp_path)
    src.ensure_fetched([layout])
    with pytest.raises(GitError, match="not in the cache"):
        src.object_ids("f" * 40, ["README"])
