"""Checkout trees: prepare writes beside the stable path, activate moves it, sweep and teardown clean up."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from reconciler.errors import StateError
from reconciler.source import GitSource
from tests.source.helpers import Remote, calls, source


@pytest.fixture
def commits(remote: Remote) -> list[str]:
    """Three pushed commits, each with its own VERSION and site/index.html."""
    shas = [
        remote.commit({"VERSION": f"{n}\n", "site/index.html": f"<p>{n}</p>"})
        for n in ("one", "two", "three")
    ]
    remote.push("master")
    return shas


def names(directory: Path) -> set[str]:
    return {p.name for p in directory.iterdir()}


def test_prepare_writes_beside_dest_without_moving_it(
    remote: Remote, tmp_path: Path, commits: list[str]
) -> None:
    """prepare writes a complete tree next to dest, records its commit beside it, and leaves dest alone."""
    one, two, _ = commits
    src = source(remote, tmp_path)
    dest = tmp_path / "checkouts" / "p"
    src.materialize(one, dest)
    before = os.readlink(dest)

    tree = src.prepare(two, dest)
    assert tree.parent == dest.parent and tree.name.startswith(f".p@{two[:12]}-")
    assert (tree / "VERSION").read_text() == "two\n"
    assert os.readlink(dest) == before and (dest / "VERSION").read_text() == "one\n"
    assert src.current_tree(dest) == dest.parent / before
    assert src.tree_commit(tree) == two and src.tree_commit(dest.parent / before) == one
    # The commit is recorded next to the tree, never inside it (containers bind-mount the tree).
    assert names(tree) == {"VERSION", "site"}
    assert (dest.parent / f"{tree.name}.commit").read_text().strip() == two
    assert not any("@tmp-" in n or "@index-" in n for n in names(dest.parent))


def test_prepare_reuses_the_current_tree(
    remote: Remote, tmp_path: Path, commits: list[str], git_log: Path
) -> None:
    """prepare for the commit dest already shows returns that tree and writes nothing."""
    src = source(remote, tmp_path)
    dest = tmp_path / "checkouts" / "p"
    src.materialize(commits[0], dest)
    written = calls(git_log, "checkout-index")
    assert src.prepare(commits[0], dest) == src.current_tree(dest)
    assert calls(git_log, "checkout-index") == written


def test_activate_moves_the_link_in_one_rename(remote: Remote, tmp_path: Path, commits: list[str]) -> None:
    """activate points dest at the prepared tree with a relative link and leaves no temporary link behind."""
    one, two, _ = commits
    src = source(remote, tmp_path)
    dest = tmp_path / "checkouts" / "p"
    first = src.prepare(one, dest)
    assert src.current_tree(dest) is None and not dest.exists()
    src.activate(dest, first)
    second = src.prepare(two, dest)
    src.activate(dest, second)
    assert os.readlink(dest) == second.name  # relative: the state directory may move
    assert (dest / "VERSION").read_text() == "two\n" and src.current_tree(dest) == second
    assert first.is_dir()  # activate removes nothing: that is sweep's job
    assert not any("@link-" in n for n in names(dest.parent))
    src.activate(dest, first)  # and back, as a rollback does
    assert (dest / "VERSION").read_text() == "one\n"


def test_activate_replaces_a_plain_directory_and_refuses_foreign_trees(
    remote: Remote, tmp_path: Path, commits: list[str]
) -> None:
    """A real directory at dest is moved aside for sweep; a directory not a tree of dest is refused."""
    src = source(remote, tmp_path)
    dest = tmp_path / "checkouts" / "p"
    dest.mkdir(parents=True)
    (dest / "stale").write_text("x")
    tree = src.prepare(commits[0], dest)
    with pytest.raises(ValueError):
        src.activate(dest, tmp_path)
    with pytest.raises(ValueError):
        src.activate(dest.parent / "q", tree)  # a tree of p is not a tree of q
    src.activate(dest, tree)
    assert (dest / "VERSION").read_text() == "one\n" and not (dest / "stale").exists()
    src.sweep(dest, keep=())
    assert names(dest.parent) == {"p", tree.name, f"{tree.name}.commit"}


def test_sweep_keeps_named_trees_and_the_current_one(
    remote: Remote, tmp_path: Path, commits: list[str]
) -> None:
    """sweep removes every tree not kept and not current, with sidecars and leftovers; others' files stay."""
    src = source(remote, tmp_path)
    dest = tmp_path / "checkouts" / "p"
    old, middle, new = (src.prepare(sha, dest) for sha in commits)
    src.activate(dest, new)
    parent = dest.parent
    for leftover in (".p@tmp-0badc0de", ".p@index-0badc0de", ".p@old-0badc0de"):
        (parent / leftover).mkdir()
        (parent / leftover / "half").write_text("x")
    os.symlink(old.name, parent / ".p@link-0badc0de")
    (parent / ".p@0123456789ab-0badc0de.commit").write_text("orphan sidecar\n")
    foreign = {".p2@0123456789ab-0badc0de", ".p@unknown", "other-project"}
    for name in foreign:
        (parent / name).mkdir()

    src.sweep(dest, keep={old.name})
    assert names(parent) == {"p", old.name, f"{old.name}.commit", new.name, f"{new.name}.commit", *foreign}
    assert not middle.exists()

    src.sweep(dest, keep=())  # the current tree is never swept
    assert names(parent) == {"p", new.name, f"{new.name}.commit", *foreign}
    assert (dest / "VERSION").read_text() == "three\n"


def test_tree_name_maps_a_mount_source_to_its_tree(
    remote: Remote, tmp_path: Path, commits: list[str]
) -> None:
    """tree_name finds the tree of dest holding a resolved bind source, and nothing for other paths."""
    src = source(remote, tmp_path)
    dest = tmp_path / "checkouts" / "p"
    tree = src.prepare(commits[0], dest)
    assert GitSource.tree_name(dest, tree / "site" / "index.html") == tree.name
    assert GitSource.tree_name(dest, str(tree)) == tree.name
    assert GitSource.tree_name(dest, dest / "site") is None
    assert GitSource.tree_name(dest, tmp_path / "elsewhere") is None
    assert GitSource.tree_name(dest.parent / "q", tree) is None


def test_remove_checkouts_leaves_nothing(remote: Remote, tmp_path: Path, commits: list[str]) -> None:
    """remove_checkouts deletes dest, every tree, sidecar and leftover of it, and nothing of anyone else."""
    src = source(remote, tmp_path)
    dest = tmp_path / "checkouts" / "p"
    for sha in commits[:2]:
        src.activate(dest, src.prepare(sha, dest))
    src.prepare(commits[2], dest)
    (dest.parent / ".p@tmp-0badc0de").mkdir()
    (dest.parent / "p2").mkdir()
    src.remove_checkouts(dest)
    assert names(dest.parent) == {"p2"}
    src.remove_checkouts(dest)  # nothing left to remove is fine
    src.remove_checkouts(tmp_path / "never" / "there")


def test_tree_commit_of_a_tree_written_before_sidecars(
    remote: Remote, tmp_path: Path, commits: list[str]
) -> None:
    """A tree without a sidecar (an older reconciler) is named by the cache, and reused by prepare."""
    one = commits[0]
    src = source(remote, tmp_path)
    dest = tmp_path / "checkouts" / "p"
    tree = src.prepare(one, dest)
    src.activate(dest, tree)
    (dest.parent / f"{tree.name}.commit").unlink()
    assert src.tree_commit(tree) == one
    assert src.prepare(one, dest) == tree
    assert source(remote, tmp_path / "empty-cache").tree_commit(tree) is None


@pytest.fixture
def tiny_fs(tmp_path: Path) -> Iterator[Path]:
    """A 200 KiB tmpfs (needs root or CAP_SYS_ADMIN), unmounted afterwards."""
    mountpoint = tmp_path / "tiny"
    mountpoint.mkdir()
    try:
        mounted = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=200k", "tmpfs", str(mountpoint)],
            capture_output=True,
            text=True,
        )
    except OSError as exc:
        pytest.skip(f"cannot run mount ({exc}): a full or read-only disk needs a tmpfs of its own")
    if mounted.returncode != 0:
        pytest.skip(f"mounting a tmpfs is not permitted here ({mounted.stderr.strip()}): needs root")
    try:
        yield mountpoint
    finally:
        subprocess.run(["umount", str(mountpoint)], check=True)


def test_a_full_disk_is_a_state_error_and_leaves_dest_intact(
    remote: Remote, tmp_path: Path, tiny_fs: Path
) -> None:
    """A tree that does not fit raises StateError naming the path, leaves no partial tree nor moves dest."""
    small = remote.commit({"VERSION": "small\n"})
    big = remote.commit({"VERSION": "big\n", "blob.bin": os.urandom(600_000).hex()})
    remote.push("master")
    src = source(remote, tmp_path)
    dest = tiny_fs / "checkouts" / "p"
    src.materialize(small, dest)
    before = names(dest.parent)

    with pytest.raises(StateError) as info:
        src.prepare(big, dest)
    message = str(info.value)
    assert str(dest) in message and big[:12] in message and "hint:" in message
    assert names(dest.parent) == before  # no tmp-, no index-, no tree, no sidecar
    assert (dest / "VERSION").read_text() == "small\n"
    with pytest.raises(StateError):
        src.materialize(big, dest)
    assert names(dest.parent) == before and src.tree_commit(src.current_tree(dest) or dest) == small


def test_a_read_only_state_dir_is_a_state_error(remote: Remote, tmp_path: Path, tiny_fs: Path) -> None:
    """On a read-only state directory every write raises StateError, and dest keeps its complete tree."""
    one = remote.commit({"VERSION": "one\n"})
    two = remote.commit({"VERSION": "two\n"})
    remote.push("master")
    src = source(remote, tmp_path)
    dest = tiny_fs / "checkouts" / "p"
    src.materialize(one, dest)
    spare = src.prepare(two, dest)
    subprocess.run(["mount", "-o", "remount,ro", str(tiny_fs)], check=True)
    try:
        before = names(dest.parent)
        with pytest.raises(StateError, match="Read-only file system"):
            src.prepare(two, dest)
        with pytest.raises(StateError, match="Read-only file system"):
            src.activate(dest, spare)
        with pytest.raises(StateError):
            src.sweep(dest, keep=())
        with pytest.raises(StateError):
            src.remove_checkouts(dest)
        assert names(dest.parent) == before and (dest / "VERSION").read_text() == "one\n"
    finally:
        subprocess.run(["mount", "-o", "remount,rw", str(tiny_fs)], check=True)
