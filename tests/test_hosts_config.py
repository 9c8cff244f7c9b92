"""`hosts:` in environments.yaml: engines by name (unix, tcp with tls, ssh with its key, known_hosts and the
remote socket), `host:` per app and environment; every mistake is a located ConfigError."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from reconciler.config import Config, load_config
from reconciler.config.hosts import DEFAULT_REMOTE_SOCKET, HostConfig, TlsFiles
from reconciler.errors import ConfigError

APPS = """\
apps:
  demo:
    repo: /srv/demo.git
    environments:
      production: {branch: master, project: demo, compose: [compose.yaml]}
"""


def _write(tmp_path: Path, hosts: str, apps: str = APPS) -> Path:
    for name in ("ca.pem", "cert.pem", "key.pem", "id_deploy", "known_hosts"):
        (tmp_path / name).write_text("x\n")
    path = tmp_path / "environments.yaml"
    path.write_text(textwrap.dedent(hosts) + apps)
    return path


def _load(tmp_path: Path, hosts: str, apps: str = APPS) -> Config:
    return load_config(_write(tmp_path, hosts, apps))


def _error(tmp_path: Path, hosts: str) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        _load(tmp_path, hosts)
    return info.value


def test_issue_example(tmp_path: Path) -> None:
    cfg = _load(
        tmp_path,
        """\
        hosts:
          local:   {docker: "unix:///var/run/docker.sock"}
          prod-1:  {docker: "tcp://10.0.0.5:2376", tls: {ca: ca.pem, cert: cert.pem, key: key.pem}}
          cheap:   {docker: "ssh://deploy@previews.example.org"}
        """,
    )
    assert set(cfg.hosts) == {"local", "prod-1", "cheap"}
    prod = cfg.hosts["prod-1"]
    assert prod.tls == TlsFiles(
        ca=str(tmp_path / "ca.pem"), cert=str(tmp_path / "cert.pem"), key=str(tmp_path / "key.pem")
    )
    assert prod.remote and not prod.shared_fs
    cheap = cfg.hosts["cheap"]
    assert cheap.url == "ssh://deploy@previews.example.org"
    assert cheap.ssh_socket == DEFAULT_REMOTE_SOCKET == "/var/run/docker.sock"
    assert cheap.ssh_identity is None and cheap.ssh_known_hosts is None
    assert not cfg.hosts["local"].remote and cfg.hosts["local"].shared_fs


def test_local_is_added_when_not_declared(tmp_path: Path) -> None:
    cfg = _load(tmp_path, "")
    assert cfg.hosts == {"local": HostConfig(name="local")}
    assert cfg.hosts["local"].docker is None  # this process's DOCKER_HOST


def test_ssh_keys(tmp_path: Path) -> None:
    """identity_file and known_hosts are files relative to environments.yaml; socket is the engine's
    socket on the remote machine (not checked here: it is not on this one)."""
    cfg = _load(
        tmp_path,
        """\
        hosts:
          cheap:
            docker: ssh://deploy@previews.example.org:2222
            shared_fs: true
            ssh: {identity_file: id_deploy, known_hosts: known_hosts, socket: /run/user/1000/docker.sock}
        """,
    )
    cheap = cfg.hosts["cheap"]
    assert cheap.ssh_identity == str(tmp_path / "id_deploy")
    assert cheap.ssh_known_hosts == str(tmp_path / "known_hosts")
    assert cheap.ssh_socket == "/run/user/1000/docker.sock"
    assert cheap.shared_fs


def test_host_per_app_and_environment(tmp_path: Path) -> None:
    cfg = _load(
        tmp_path,
        """\
        hosts:
          cheap: {docker: "ssh://deploy@previews.example.org"}
        """,
        apps="""\
apps:
  demo:
    repo: /srv/demo.git
    host: cheap
    environments:
      production: {branch: master, project: demo, compose: [compose.yaml], host: local}
      staging: {branch: develop, project: demo-staging, compose: [compose.yaml]}
""",
    )
    envs = {e.name: e for e in cfg.apps[0].environments}
    assert envs["production"].host == "local"
    assert envs["staging"].host == "cheap"
    assert cfg.host_of(envs["staging"]).name == "cheap"


@pytest.mark.parametrize(
    ("hosts", "words", "key"),
    [
        ('h: {docker: "http://x"}', "must start with one of", "hosts.h.docker"),
        ('h: {docker: "unix://run/docker.sock"}', "absolute path", "hosts.h.docker"),
        ('h: {docker: "tcp://:2376"}', "names no host", "hosts.h.docker"),
        ('h: {docker: "ssh://u:secret@x"}', "carries a password", "hosts.h.docker"),
        ('h: {docker: "tcp://x:99999"}', "invalid port", "hosts.h.docker"),
        ('h: {docker: "ssh://x", tls: {ca: ca.pem}}', "only applies to a tcp://", "hosts.h.tls"),
        ('h: {docker: "tcp://x:2376", tls: {cert: cert.pem}}', "both `cert` and `key`", "hosts.h.tls"),
        ('h: {docker: "tcp://x:2376", tls: {ca: absent.pem}}', "not a readable file", "hosts.h.tls.ca"),
        ('h: {docker: "tcp://x:2376", ssh: {socket: /s}}', "only applies to an ssh://", "hosts.h.ssh"),
        ('h: {docker: "ssh://x", ssh: {socket: docker.sock}}', "absolute path", "hosts.h.ssh.socket"),
        ('h: {docker: "ssh://x", ssh: {socket: "/a:b"}}', "without a colon", "hosts.h.ssh.socket"),
        (
            'h: {docker: "ssh://x", ssh: {identity_file: nope}}',
            "not a readable file",
            "hosts.h.ssh.identity_file",
        ),
        ('h: {docker: "ssh://x", ssh: {user: root}}', "user", "hosts.h.ssh"),
        ("h: {tls: {}}", "docker", "hosts.h"),
        ('Bad_Name: {docker: "ssh://x"}', "invalid host name", "hosts.Bad_Name"),
    ],
)
def test_errors_are_located(tmp_path: Path, hosts: str, words: str, key: str) -> None:
    err = _error(tmp_path, f"hosts:\n  {hosts}\n")
    assert words in str(err)
    assert err.location.key is not None and err.location.key.startswith(key)
    assert err.location.file == str(tmp_path / "environments.yaml")


def test_unknown_host_reference(tmp_path: Path) -> None:
    apps = APPS.replace("repo: /srv/demo.git", "repo: /srv/demo.git\n    host: nowhere")
    with pytest.raises(ConfigError) as info:
        _load(tmp_path, "", apps=apps)
    assert "unknown host 'nowhere'" in str(info.value)
    assert info.value.location.key == "apps.demo.host"
