"""Read the top-level ``hosts:`` map and each app's and environment's ``host:`` and ``backend:``.

A host is a Docker Engine the daemon drives: the local one by default, others over TCP (+TLS) or SSH.
Its name, never its URL, is what metrics, status and logs show. Reference: docs/hosts.md.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from reconciler.config.readers import _Readers
from reconciler.config.yaml_lines import _Map

DEFAULT_HOST = "local"
BACKENDS = ("compose", "swarm")
_SCHEMES = ("unix", "tcp", "ssh")
_LOCAL_SCHEMES = ("unix",)
DEFAULT_REMOTE_SOCKET = "/var/run/docker.sock"


@dataclass(frozen=True, kw_only=True)
class TlsFiles:
    """Client TLS for a ``tcp://`` engine (paths, absolute). ``ca`` verifies the engine's certificate."""

    ca: str | None = None
    cert: str | None = None
    key: str | None = None


@dataclass(frozen=True, kw_only=True)
class HostConfig:
    """One Docker Engine. ``docker`` None: this process's DOCKER_HOST (or the local socket)."""

    name: str
    docker: str | None = None
    tls: TlsFiles | None = None
    # Whether paths of this machine (the checkout, the state directory) are the same paths on the engine's
    # machine: true for a local socket; a remote host must say so (an NFS mount, the same machine over tcp).
    shared_fs: bool = True
    ssh_identity: str | None = None  # a private key for ssh:// (else ssh's own configuration and agent)
    ssh_known_hosts: str | None = None  # a known_hosts file for ssh:// (else ssh's own)
    ssh_socket: str = DEFAULT_REMOTE_SOCKET  # the engine's socket on the ssh:// machine
    line: int = 0

    @property
    def url(self) -> str:
        return self.docker or os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"

    @property
    def remote(self) -> bool:
        return urlsplit(self.url).scheme not in _LOCAL_SCHEMES


def local_host() -> HostConfig:
    return HostConfig(name=DEFAULT_HOST)


def read_hosts(r: _Readers, doc: _Map) -> dict[str, HostConfig]:
    """The ``hosts:`` map, with ``local`` (this process's engine) added when not declared."""
    hosts: dict[str, HostConfig] = {}
    m = r.mapping(doc, "hosts", "hosts")
    for name in m or ():
        where = f"hosts.{name}"
        line = m.key_lines[name] if m is not None else 0
        r.check_name(name, line, where, "host")
        h = r.mapping(m, name, where, required=True) if m is not None else None
        assert h is not None
        r.check_keys(h, ("docker", "tls", "shared_fs", "ssh"), where)
        url = r.string(h, "docker", f"{where}.docker", required=True)
        assert url is not None
        scheme = _check_url(r, url, h.key_lines["docker"], f"{where}.docker")
        tls = _read_tls(r, h, where, scheme)
        identity = known = None
        socket = DEFAULT_REMOTE_SOCKET
        ssh = r.mapping(h, "ssh", f"{where}.ssh")
        if ssh is not None:
            if scheme != "ssh":
                raise r.fail(
                    "`ssh` only applies to an ssh:// engine",
                    h.key_lines["ssh"],
                    f"{where}.ssh",
                    hint="remove `ssh`, or use docker: ssh://USER@HOST",
                )
            r.check_keys(ssh, ("identity_file", "known_hosts", "socket"), f"{where}.ssh")
            identity = _file(r, ssh, "identity_file", f"{where}.ssh")
            known = _file(r, ssh, "known_hosts", f"{where}.ssh")
            socket = _remote_socket(r, ssh, f"{where}.ssh.socket") or socket
        shared = scheme in _LOCAL_SCHEMES
        if "shared_fs" in h:
            shared = r.boolean(h, "shared_fs", f"{where}.shared_fs")
        hosts[name] = HostConfig(
            name=name,
            docker=url,
            tls=tls,
            shared_fs=shared,
            ssh_identity=identity,
            ssh_known_hosts=known,
            ssh_socket=socket,
            line=line,
        )
    hosts.setdefault(DEFAULT_HOST, local_host())
    return hosts


def read_host_ref(r: _Readers, m: _Map, where: str, hosts: dict[str, HostConfig], default: str) -> str:
    """An app's or environment's ``host:``: a name of ``hosts`` (``default`` when absent)."""
    name = r.string(m, "host", f"{where}.host")
    if name is None:
        return default
    if name not in hosts:
        known = ", ".join(sorted(hosts))
        raise r.fail(
            f"unknown host {name!r} (hosts: {known})",
            m.key_lines["host"],
            f"{where}.host",
            hint="declare it under the top-level `hosts:` map",
        )
    return name


def read_backend(r: _Readers, m: _Map, where: str) -> str:
    value = r.string(m, "backend", f"{where}.backend")
    if value is None:
        return "compose"
    if value not in BACKENDS:
        raise r.fail(
            f"`backend` must be one of {', '.join(BACKENDS)}, not {value!r}",
            m.key_lines["backend"],
            f"{where}.backend",
            hint="compose: containers on one engine; swarm: a Docker Swarm stack",
        )
    return value


def _check_url(r: _Readers, url: str, line: int, where: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in _SCHEMES:
        raise r.fail(
            f"engine address {url!r} must start with one of {', '.join(s + '://' for s in _SCHEMES)}",
            line,
            where,
            hint='e.g. "unix:///var/run/docker.sock", "tcp://10.0.0.5:2376", "ssh://deploy@host"',
        )
    # unix://run/docker.sock parses as host "run", path "/docker.sock": the path needs its third slash.
    if parts.scheme == "unix" and (parts.netloc or not parts.path.startswith("/")):
        raise r.fail(f"{url!r}: a unix socket needs an absolute path", line, where)
    if parts.scheme != "unix" and not parts.hostname:
        raise r.fail(f"{url!r} names no host", line, where)
    if parts.password:
        raise r.fail(
            f"engine address of {where.split('.')[1]!r} carries a password",
            line,
            where,
            hint="use a key (ssh.identity_file) or TLS client certificates (tls:), not a password",
        )
    try:
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError:
        raise r.fail(f"{url!r} has an invalid port", line, where) from None
    return parts.scheme


def _read_tls(r: _Readers, h: _Map, where: str, scheme: str) -> TlsFiles | None:
    m = r.mapping(h, "tls", f"{where}.tls")
    if m is None:
        return None
    if scheme != "tcp":
        raise r.fail(
            "`tls` only applies to a tcp:// engine", h.key_lines["tls"], f"{where}.tls", hint="remove `tls`"
        )
    r.check_keys(m, ("ca", "cert", "key"), f"{where}.tls")
    tls = TlsFiles(
        ca=_file(r, m, "ca", f"{where}.tls"),
        cert=_file(r, m, "cert", f"{where}.tls"),
        key=_file(r, m, "key", f"{where}.tls"),
    )
    if (tls.cert is None) != (tls.key is None):
        raise r.fail("`tls` needs both `cert` and `key`, or neither", h.key_lines["tls"], f"{where}.tls")
    return tls


def _remote_socket(r: _Readers, m: _Map, where: str) -> str | None:
    """``ssh.socket``: a path on the remote machine, so only its form is checked here."""
    raw = r.string(m, "socket", where)
    if raw is None:
        return None
    # ssh's -L takes LOCAL:REMOTE, so a colon would split the path; a relative path means nothing remotely.
    if not raw.startswith("/") or ":" in raw:
        raise r.fail(
            f"{raw!r} must be an absolute path without a colon",
            m.key_lines["socket"],
            where,
            hint="the Docker socket on the remote machine, e.g. /var/run/docker.sock",
        )
    return raw


def _file(r: _Readers, m: _Map, key: str, where: str) -> str | None:
    raw = r.string(m, key, f"{where}.{key}")
    if raw is None:
        return None
    path = (r.base / Path(raw).expanduser()).resolve()
    if not path.is_file():
        raise r.fail(f"{str(path)!r} is not a readable file", m.key_lines[key], f"{where}.{key}")
    return str(path)
