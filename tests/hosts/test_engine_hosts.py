"""DockerEngine.for_host against real engines: engine 2 (tests/engines.py) reached over its unix socket, over
plain TCP and TCP+TLS (a TLS-terminating proxy with client certificates), and over ssh:// through a real
local sshd (the system ssh client's socket forward)."""

from __future__ import annotations

import dataclasses
import json
import os
import secrets
import signal
import stat
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from reconciler import labels as L
from reconciler.config import load_config
from reconciler.config.hosts import HostConfig, TlsFiles
from reconciler.converge import Converger
from reconciler.engine import DockerEngine, EngineUnavailable
from reconciler.errors import ConfigError
from reconciler.sshtunnel import ssh_argv
from tests.converge.helpers import render_files
from tests.hosts.conftest import ENGINE2_SOCKET, Certs, Proxy, Sshd, keygen

pytestmark = [pytest.mark.docker, pytest.mark.timeout(300)]

BUSYBOX = "reconciler-test/busybox:latest"
_DEADLINE = 60.0
MAIN_ENGINE = os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"  # before any test changes it


def _docker(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DOCKER_HOST": url}
    return subprocess.run(["docker", *args], capture_output=True, text=True, env=env, timeout=60, check=False)


def _exists(url: str, name: str) -> bool:
    return _docker(url, "container", "inspect", name).returncode == 0


@pytest.fixture
def project() -> Iterator[str]:
    """A throw-away project name; whatever carries it on engine 2 is removed afterwards."""
    name = f"thosts-{secrets.token_hex(3)}"
    yield name
    url = f"unix://{ENGINE2_SOCKET}"
    ids = _docker(url, "ps", "-aq", "--filter", f"label={L.PROJECT}={name}").stdout.split()
    if ids:
        _docker(url, "rm", "-f", *ids)
    nets = _docker(url, "network", "ls", "-q", "--filter", f"label={L.PROJECT}={name}").stdout.split()
    if nets:
        _docker(url, "network", "rm", *nets)


def _roundtrip(engine: DockerEngine, project: str) -> None:
    """List, create, start and remove a container through ``engine``; it lives on engine 2 and only there."""
    name = f"{project}-c"
    body = {"Image": BUSYBOX, "Cmd": ["sleep", "300"], "Labels": {L.PROJECT: project}}
    assert engine.list_containers(project) == []
    cid = engine.create_container(name, body)
    engine.start_container(cid)
    listed = engine.list_containers(project)
    assert [(c["Id"], c["State"]) for c in listed] == [(cid, "running")]
    assert _exists(f"unix://{ENGINE2_SOCKET}", name)
    assert not _exists(MAIN_ENGINE, name)
    engine.remove_container(cid, force=True)
    assert engine.list_containers(project) == []
    assert not _exists(f"unix://{ENGINE2_SOCKET}", name)


def _wait(what: str, check: Any) -> Any:
    deadline = time.monotonic() + _DEADLINE
    while time.monotonic() < deadline:
        out = check()
        if out:
            return out
        time.sleep(0.05)
    raise AssertionError(f"{what}: not within {_DEADLINE}s")


# --- unix and the process's own engine ---


def test_unix_host(engine2: str, project: str, tmp_path: Path) -> None:
    engine = DockerEngine.for_host(HostConfig(name="second", docker=engine2), state_dir=tmp_path)
    try:
        assert engine.host_name == "second"
        _roundtrip(engine, project)
    finally:
        engine.close()


def test_host_without_url_is_this_process_engine(
    engine2: str, project: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`local` (no `docker:`) is what from_env reaches: here DOCKER_HOST points at engine 2."""
    monkeypatch.setenv("DOCKER_HOST", engine2)
    engine = DockerEngine.for_host(HostConfig(name="local"), state_dir=tmp_path)
    try:
        _roundtrip(engine, project)
    finally:
        engine.close()


def test_unix_host_down_names_the_host(tmp_path: Path) -> None:
    host = HostConfig(name="nowhere", docker=f"unix://{tmp_path}/absent.sock")
    engine = DockerEngine.for_host(host, state_dir=tmp_path)
    with pytest.raises(EngineUnavailable) as info:
        engine.list_containers()
    assert "host 'nowhere'" in str(info.value)
    assert info.value.reason == "connection"


# --- tcp and tcp+TLS ---


def test_plain_tcp_host(plain_proxy: Proxy, project: str, tmp_path: Path) -> None:
    host = HostConfig(name="tcp-plain", docker=f"tcp://127.0.0.1:{plain_proxy.port}", shared_fs=False)
    engine = DockerEngine.for_host(host, state_dir=tmp_path)
    try:
        _roundtrip(engine, project)
    finally:
        engine.close()


def _tls_host(proxy: Proxy, tls: TlsFiles) -> HostConfig:
    return HostConfig(name="prod-tls", docker=f"tcp://127.0.0.1:{proxy.port}", tls=tls, shared_fs=False)


def test_tls_host(tls_proxy: Proxy, certs: Certs, project: str, tmp_path: Path) -> None:
    tls = TlsFiles(ca=str(certs.ca), cert=str(certs.client_cert), key=str(certs.client_key))
    engine = DockerEngine.for_host(_tls_host(tls_proxy, tls), state_dir=tmp_path)
    try:
        _roundtrip(engine, project)
    finally:
        engine.close()


@pytest.mark.parametrize("case", ["no client certificate", "wrong CA", "no TLS"])
def test_tls_refused_names_the_host(tls_proxy: Proxy, certs: Certs, tmp_path: Path, case: str) -> None:
    """The engine refuses a client without a certificate; we refuse an engine our CA did not sign; plain
    HTTP to a TLS port gets nowhere. Each is EngineUnavailable naming the host, never the key's content."""
    client = {"cert": str(certs.client_cert), "key": str(certs.client_key)}
    tls = {
        "no client certificate": TlsFiles(ca=str(certs.ca)),
        "wrong CA": TlsFiles(ca=str(certs.other_ca), **client),
        "no TLS": None,
    }[case]
    host = HostConfig(name="prod-tls", docker=f"tcp://127.0.0.1:{tls_proxy.port}", tls=tls, shared_fs=False)
    engine = DockerEngine.for_host(host, state_dir=tmp_path)
    with pytest.raises(EngineUnavailable) as info:
        engine.list_containers()
    message = str(info.value)
    assert "host 'prod-tls'" in message
    assert "Traceback" not in message
    key_body = certs.client_key.read_text().splitlines()[1]
    assert key_body not in message
    if tls is not None:
        assert info.value.hint is not None and "tls.cert" in info.value.hint


def test_tls_files_gone_is_a_config_error(certs: Certs, tmp_path: Path) -> None:
    host = HostConfig(
        name="prod-tls",
        docker="tcp://127.0.0.1:2376",
        tls=TlsFiles(ca=str(certs.ca), cert=str(tmp_path / "gone.pem"), key=str(tmp_path / "gone.key")),
    )
    with pytest.raises(ConfigError) as info:
        DockerEngine.for_host(host, state_dir=tmp_path)
    assert "host 'prod-tls'" in str(info.value)
    assert "hosts.prod-tls.tls" in str(info.value)


# --- ssh ---


def _ssh_host(
    sshd: Sshd, tmp_path: Path, identity: Path | None = None, known: Path | None = None
) -> HostConfig:
    """The host as environments.yaml declares it, read by the real configuration reader."""
    config = tmp_path / "environments.yaml"
    config.write_text(
        textwrap.dedent(
            f"""\
            hosts:
              cheap:
                docker: "{sshd.url()}"
                ssh:
                  identity_file: {identity or sshd.identity}
                  known_hosts: {known or sshd.known_hosts}
                  socket: {ENGINE2_SOCKET}
            apps:
              demo:
                repo: /srv/demo.git
                host: cheap
                environments:
                  production: {{branch: master, project: demo, compose: [compose.yaml]}}
            """
        )
    )
    return load_config(config).hosts["cheap"]


def test_ssh_host(sshd: Sshd, engine2: str, project: str, tmp_path: Path) -> None:
    state = tmp_path / "state"
    engine = DockerEngine.for_host(_ssh_host(sshd, tmp_path), state_dir=state)
    tunnel = engine.tunnel
    assert tunnel is not None
    assert tunnel.pid is None  # nothing runs before the first call
    try:
        _roundtrip(engine, project)
        pid = tunnel.pid
        assert pid is not None
        assert Path(f"/proc/{pid}/comm").read_text().strip() == "ssh"
        assert stat.S_IMODE((state / "ssh").stat().st_mode) == 0o700
        assert tunnel.socket.parent == state / "ssh" and tunnel.socket.is_socket()
    finally:
        engine.close()
    # Closed: the ssh process has ended and its socket is gone.
    assert not Path(f"/proc/{pid}").exists()
    assert not tunnel.socket.exists()


def test_ssh_tunnel_restarts_after_ssh_dies(sshd: Sshd, engine2: str, project: str, tmp_path: Path) -> None:
    engine = DockerEngine.for_host(_ssh_host(sshd, tmp_path), state_dir=tmp_path / "state")
    tunnel = engine.tunnel
    assert tunnel is not None
    try:
        assert engine.list_containers(project) == []
        first = tunnel.pid
        assert first is not None
        os.kill(first, signal.SIGKILL)
        _wait("ssh reaped", lambda: tunnel.pid is None)
        _roundtrip(engine, project)  # the next call starts a new ssh
        assert tunnel.pid not in (None, first)
    finally:
        engine.close()


def test_ssh_wrong_key_is_a_clear_error(sshd: Sshd, tmp_path: Path) -> None:
    other = keygen(tmp_path / "not_authorized")
    engine = DockerEngine.for_host(_ssh_host(sshd, tmp_path, identity=other), state_dir=tmp_path / "state")
    try:
        with pytest.raises(EngineUnavailable) as info:
            engine.list_containers()
    finally:
        engine.close()
    message = str(info.value)
    assert "host 'cheap'" in message
    assert "root@127.0.0.1" in message
    assert "Permission denied" in message
    assert "Traceback" not in message
    assert other.read_text().splitlines()[1] not in message
    assert info.value.reason == "connection"
    assert info.value.hint is not None and "identity_file" in info.value.hint


def test_ssh_unknown_host_key_is_refused(sshd: Sshd, tmp_path: Path) -> None:
    """An engine whose host key is not in known_hosts is never reached (StrictHostKeyChecking)."""
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    engine = DockerEngine.for_host(_ssh_host(sshd, tmp_path, known=empty), state_dir=tmp_path / "state")
    try:
        with pytest.raises(EngineUnavailable) as info:
            engine.list_containers()
    finally:
        engine.close()
    assert "host 'cheap'" in str(info.value)
    assert "Host key verification failed" in str(info.value)


def test_ssh_deploy_and_events(sshd: Sshd, engine2: str, project: str, tmp_path: Path) -> None:
    """A compose project converges on engine 2 through the tunnel, and the daemon's event stream (a long
    HTTP response through the forwarded socket) sees its container start."""
    engine = DockerEngine.for_host(_ssh_host(sshd, tmp_path), state_dir=tmp_path / "state")
    converger = Converger(engine)
    seen: list[dict[str, Any]] = []
    failed: list[BaseException] = []
    stop = threading.Event()

    def watch() -> None:
        try:
            for event in converger.events(stop, window=1.0):
                seen.append(event)
        except Exception as exc:  # reported by the test below
            failed.append(exc)

    (tmp_path / "compose.yaml").write_text(
        textwrap.dedent(
            f"""\
            services:
              web:
                image: {BUSYBOX}
                command: ["sleep", "300"]
            """
        )
    )
    watcher = threading.Thread(target=watch, daemon=True)
    try:
        watcher.start()
        converger.up(render_files([tmp_path / "compose.yaml"], project, tmp_path), timeout=60)
        (live,) = _docker(engine2, "ps", "-q", "--filter", f"label={L.PROJECT}={project}").stdout.split()
        info = json.loads(_docker(engine2, "inspect", live).stdout)[0]
        assert info["State"]["Running"]

        def started() -> bool:
            return any(e.get("Action") == "start" and e.get("id", "").startswith(live) for e in list(seen))

        _wait("the start event through the tunnel", lambda: started() or failed)
        assert not failed, failed
        assert started()
        converger.down(project)
        assert _docker(engine2, "ps", "-aq", "--filter", f"label={L.PROJECT}={project}").stdout.split() == []
    finally:
        stop.set()
        watcher.join(30)
        engine.close()
    assert not watcher.is_alive()


def test_ssh_argv(tmp_path: Path) -> None:
    """The ssh command line: an argv (never a shell), the port, the key alone, the known_hosts strictly."""
    host = HostConfig(
        name="cheap",
        docker="ssh://deploy@previews.example.org:2222",
        ssh_identity="/keys/id",
        ssh_known_hosts="/keys/known",
        ssh_socket="/run/docker.sock",
    )
    argv = ssh_argv(host, tmp_path / "cheap.sock")
    assert argv[0] == "ssh" and argv[1] == "-N"
    assert argv[-2:] == ["--", "deploy@previews.example.org"]
    pairs = {argv[i]: argv[i + 1] for i in range(len(argv) - 1) if argv[i] in ("-L", "-p", "-i")}
    assert pairs == {"-L": f"{tmp_path}/cheap.sock:/run/docker.sock", "-p": "2222", "-i": "/keys/id"}
    options = {argv[i + 1] for i in range(len(argv) - 1) if argv[i] == "-o"}
    assert {
        "BatchMode=yes",
        "ExitOnForwardFailure=yes",
        "StreamLocalBindUnlink=yes",
        "IdentitiesOnly=yes",
        "UserKnownHostsFile=/keys/known",
        "StrictHostKeyChecking=yes",
    } <= options
    bare = ssh_argv(HostConfig(name="b", docker="ssh://previews.example.org"), tmp_path / "b.sock")
    assert "-p" not in bare and "-i" not in bare and bare[-1] == "previews.example.org"
    assert f"{tmp_path}/b.sock:/var/run/docker.sock" in bare


def test_ssh_remote_socket_missing_says_so(sshd: Sshd, tmp_path: Path) -> None:
    """The tunnel is up, but sshd finds no engine at ssh.socket: ssh's own words reach the hint."""
    host = dataclasses.replace(_ssh_host(sshd, tmp_path), ssh_socket="/run/reconciler-test-absent.sock")
    engine = DockerEngine.for_host(host, state_dir=tmp_path / "state")
    try:
        with pytest.raises(EngineUnavailable) as info:
            engine.list_containers()
    finally:
        engine.close()
    assert "host 'cheap'" in str(info.value)
    assert info.value.hint is not None and "open failed" in info.value.hint


def test_ssh_engines_share_a_tunnel(sshd: Sshd, engine2: str, tmp_path: Path) -> None:
    """Two engines of one process for the same host use one ssh; it stops with the last of them."""
    host = _ssh_host(sshd, tmp_path)
    first = DockerEngine.for_host(host, state_dir=tmp_path / "state")
    second = DockerEngine.for_host(host, state_dir=tmp_path / "state")
    try:
        assert first.tunnel is second.tunnel and first.tunnel is not None
        tunnel = first.tunnel
        first.list_containers("thosts-none")
        pid = tunnel.pid
        first.close()
        assert second.list_containers("thosts-none") == []
        assert tunnel.pid == pid
    finally:
        first.close()
        second.close()
    assert tunnel.pid is None and not tunnel.socket.exists()


def test_ssh_left_by_a_killed_process_is_ended(sshd: Sshd, engine2: str, tmp_path: Path) -> None:
    """A process killed before it could stop its tunnel leaves an ssh behind: the next tunnel started on
    that state directory ends it (and only it: its command line names the dead process's socket)."""
    host = _ssh_host(sshd, tmp_path)
    state = tmp_path / "state"
    child = textwrap.dedent(
        f"""\
        import os, sys
        from reconciler.config.hosts import HostConfig
        from reconciler.engine import DockerEngine
        host = HostConfig(**{dataclasses.asdict(host)!r})
        engine = DockerEngine.for_host(host, state_dir={str(state)!r})
        engine.list_containers("thosts-none")
        print(engine.tunnel.pid, flush=True)
        os.kill(os.getpid(), 9)
        """
    )
    proc = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    orphan = int(proc.stdout)
    assert Path(f"/proc/{orphan}/comm").read_text().strip() == "ssh"
    engine = DockerEngine.for_host(host, state_dir=state)
    try:
        engine.list_containers("thosts-none")
        _wait("the orphan ssh ended", lambda: not Path(f"/proc/{orphan}").exists() or _zombie(orphan))
        assert engine.tunnel is not None
        assert sorted(p.name for p in (state / "ssh").iterdir()) == sorted(
            p.name
            for p in (
                engine.tunnel.socket,
                engine.tunnel.socket.with_suffix(".pid"),
                engine.tunnel.socket.with_suffix(".log"),
            )
        )
    finally:
        engine.close()


def _zombie(pid: int) -> bool:
    """An ended process not yet reaped (the orphan's parent is init, or whoever adopted it)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def test_ssh_client_missing_names_the_host(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    engine = DockerEngine.for_host(HostConfig(name="cheap", docker="ssh://deploy@x"), state_dir=tmp_path)
    try:
        with pytest.raises(EngineUnavailable) as info:
            engine.list_containers()
    finally:
        engine.close()
    assert "host 'cheap': cannot run ssh" in str(info.value)
    assert info.value.hint is not None and "openssh-client" in info.value.hint


def test_state_dir_too_long_for_the_tunnel_socket(tmp_path: Path) -> None:
    state = tmp_path / ("s" * 100)
    with pytest.raises(ConfigError) as info:
        DockerEngine.for_host(HostConfig(name="cheap", docker="ssh://deploy@x"), state_dir=state)
    assert "host 'cheap'" in str(info.value) and "state_dir" in str(info.value)
