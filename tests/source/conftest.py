"""Fixtures of the source tests: a fresh remote, and a logging `git` first on PATH."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from tests.source.helpers import REAL_GIT, Remote


@pytest.fixture
def remote(tmp_path: Path) -> Remote:
    return Remote(tmp_path)


@pytest.fixture
def git_log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Put a logging `git` first on PATH: one line per git invocation (and hooks for specific commands)."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    log = tmp_path / "git.log"
    log.touch()
    wrapper = bindir / "git"
    wrapper.write_text(
        "#!/bin/sh\n"
        f'echo "$*" >> "{log}"\n'
        'if [ -n "$DURING_CHECKOUT" ] && echo "$*" | grep -q checkout-index; then\n'
        '  cat "$DURING_CHECKOUT/VERSION" >> "' + str(log) + '.during"\n'
        "fi\n"
        f'exec "{REAL_GIT}" "$@"\n'
    )
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    return log
