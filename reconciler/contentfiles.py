"""Files of content-based secrets and configs (``ProjectSpec.files``) under
``<state_dir>/files/<project>/<secrets|configs>/``: written before `up` creates containers, pruned after a
successful `up`, removed by `down`. Called by ``reconciler.converge``; values never reach a log or message."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Collection, Iterable
from pathlib import Path

from reconciler.errors import DeployError, StateError
from reconciler.spec.contents import ContentFile

_KINDS = ("secrets", "configs")


def project_dir(state_dir: str | os.PathLike[str], project: str) -> Path:
    return Path(state_dir) / "files" / project


def write(state_dir: str | os.PathLike[str], project: str, files: Iterable[ContentFile]) -> Path:
    """Write every file that is not there yet (the digest in its name says its content), atomically: a
    temp file in the same directory, mode and owner set, then renamed. Directories are 0700."""
    root = project_dir(state_dir, project)
    for f in files:
        path = root / f.path
        try:
            Path(state_dir).mkdir(mode=0o700, parents=True, exist_ok=True)
            _mkdirs(path.parent, stop=Path(state_dir))
            if not _current(path, f):
                _write(path, f)
        except PermissionError as exc:
            if f.uid is not None or f.gid is not None:
                raise DeployError(
                    f"cannot give {path} the uid/gid of its secret or config ({exc.strerror}): only root "
                    "may change a file's owner; run the reconciler as root or drop `uid`/`gid`",
                    reason="FilesFailed",
                ) from None
            raise _state_error(path, exc) from None
        except OSError as exc:
            raise _state_error(path, exc) from None
    return root


def prune(state_dir: str | os.PathLike[str], project: str, keep: Collection[str]) -> None:
    """Remove the project's files no container uses any more (``keep``: the paths the spec needs, relative
    to the project's directory), then the directories left empty. Only called after a successful `up`."""
    root = project_dir(state_dir, project)
    for kind in _KINDS:
        directory = root / kind
        if not directory.is_dir():
            continue
        for path in directory.iterdir():
            if f"{kind}/{path.name}" not in keep and (path.is_file() or path.is_symlink()):
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
        with contextlib.suppress(OSError):
            directory.rmdir()  # only when empty
    with contextlib.suppress(OSError):
        root.rmdir()


def remove(state_dir: str | os.PathLike[str], project: str) -> None:
    """Remove every file of the project (`down`)."""
    root = project_dir(state_dir, project)
    try:
        shutil.rmtree(root)
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise _state_error(root, exc) from None


def _mkdirs(path: Path, *, stop: Path) -> None:
    """Create ``path`` and its missing parents below ``stop`` with mode 0700 (umask notwithstanding)."""
    missing = []
    while not path.exists() and path != stop and path != path.parent:
        missing.append(path)
        path = path.parent
    for directory in reversed(missing):
        with contextlib.suppress(FileExistsError):  # a concurrent deploy of the same project
            directory.mkdir(mode=0o700)
        os.chmod(directory, 0o700)


def _current(path: Path, f: ContentFile) -> bool:
    """Whether ``path`` already holds ``f``: same name (so same digest), mode and owner."""
    try:
        st = path.lstat()
    except FileNotFoundError:
        return False
    owner_ok = (f.uid is None or st.st_uid == f.uid) and (f.gid is None or st.st_gid == f.gid)
    return path.is_file() and (st.st_mode & 0o7777) == f.mode and owner_ok


def _write(path: Path, f: ContentFile) -> None:
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")  # 0600 from the start
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(f.value)
            out.flush()
            os.fsync(out.fileno())
            if f.uid is not None or f.gid is not None:
                os.fchown(out.fileno(), -1 if f.uid is None else f.uid, -1 if f.gid is None else f.gid)
            os.fchmod(out.fileno(), f.mode)
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise


def _state_error(path: Path, exc: OSError) -> StateError:
    return StateError(
        f"cannot write the secret/config file {path}: {exc.strerror or exc}",
        hint="free disk space, or make the state directory (state_dir) writable by the reconciler",
    )
