"""Read an environment's ``sops:``: its age key file and the SOPS-encrypted env files in the repository.

Called by the parser; the files are decrypted at deploy time by ``reconciler.sops``. Reference:
docs/environments.md, SOPS.
"""

from __future__ import annotations

from dataclasses import dataclass

from reconciler.config.readers import _Readers
from reconciler.config.yaml_lines import _Map


@dataclass(frozen=True, kw_only=True)
class SopsConfig:
    age_key_file: str  # absolute path on the daemon's host
    env_files: tuple[str, ...]  # paths inside the repository, dotenv encrypted with sops


def read_sops(r: _Readers, m: _Map, where: str) -> SopsConfig | None:
    sm = r.mapping(m, "sops", f"{where}.sops")
    if sm is None:
        return None
    where = f"{where}.sops"
    r.check_keys(sm, ("age_key_file", "env_files"), where)
    keys = r.paths(sm, "age_key_file", where, required=True)
    files = r.paths(sm, "env_files", where, required=True, in_repo=True)
    if not files:
        raise r.fail(
            "`env_files` is empty", sm.key_lines["env_files"], f"{where}.env_files", hint="list a file"
        )
    return SopsConfig(age_key_file=keys[0], env_files=files)
