"""Several hosts (issue 12): a no-op cycle over 3 engines and 30 environments, and a host that hangs.

    .venv/bin/python bench/hosts_bench.py [--per-host 10] [--rounds 15] [--hang 60] [--latency-ms 0]

Hosts: `a` the main engine, `b` and `c` test engines 7 and 8 (scripts/dockerd2.sh), each reached through a
proxy process of its own (tests/dockerproxy.py) that adds ``--latency-ms`` to every request (a remote
engine's round trip) and, for `c`, can hold every request unanswered (a host that hangs). One app, one
preview environment per host, ``--per-host`` branches each, every preview a one-service stack.

1. One no-op drift cycle (every host observed and every plan made), in-process: each host alone, the
   hosts one after another, and the daemon's cycle (hosts in parallel). Target: the cycle costs no more than
   its slowest host's own check plus 10 %.
2. Host `c` hangs for ``--hang`` seconds under `reconciler run`'s scheduler (drift_interval 1 s): the gaps
   between drift checks of hosts `a` and `b`, and how long a poll of the app takes, during the hang.
Prints markdown for docs/benchmarks.md. Everything it creates is named `tbh*` and removed at the end.
"""

from __future__ import annotations

import argparse
import itertools
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import docker
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.dockerproxy import DockerProxy  # noqa: E402

PREFIX = "tbh"
IMAGE = "reconciler-test/busybox:latest"
COMPOSE = f"""\
services:
  web:
    image: {IMAGE}
    init: true
    command: ["httpd", "-f", "-p", "8080"]
"""
ENGINES = {"b": 7, "c": 8}


def git(*args: str, cwd: Path) -> None:
    subprocess.run(
        ["git", "-c", "user.name=b", "-c", "user.email=b@example.org", *args],
        cwd=cwd,
        check=True,
        capture_output=True,
    )


def engine(index: int) -> str:
    subprocess.run(["bash", str(ROOT / "scripts" / "dockerd2.sh"), "start", str(index)], check=True)
    return f"unix:///run/reconciler-test-{index}.sock"


def make_repo(tmp: Path, per_host: int) -> Path:
    bare, work = tmp / "app.git", tmp / "work"
    git("init", "-q", "--bare", "-b", "master", str(bare), cwd=tmp)
    git("init", "-q", "-b", "master", str(work), cwd=tmp)
    (work / "compose.yaml").write_text(COMPOSE)
    git("add", "-A", cwd=work)
    git("commit", "-qm", "app", cwd=work)
    git("remote", "add", "origin", str(bare), cwd=work)
    git("push", "-q", "origin", "master", cwd=work)
    for host in ("a", "b", "c"):
        for i in range(per_host):
            git("push", "-q", "origin", f"master:refs/heads/{host}-{i}", cwd=work)
    return bare


def config(tmp: Path, bare: Path, urls: dict[str, str]) -> Path:
    envs = {
        f"on-{host}": {
            "branches": [f"{host}-*"],
            "project": f"{PREFIX}{host}-{{branch}}",
            "compose": ["compose.yaml"],
            "ephemeral": True,
            "host": host,
        }
        for host in ("a", "b", "c")
    }
    doc = {
        "state_dir": str(tmp / "state"),
        "listen": "127.0.0.1:0",
        "drift_interval": "1s",
        "hosts": {host: {"docker": url} for host, url in urls.items()},
        "apps": {"bench": {"repo": str(bare), "poll_interval": "1h", "environments": envs}},
    }
    path = tmp / "environments.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def timed(fn: Any, *args: Any, **kwargs: Any) -> float:
    start = time.perf_counter()
    fn(*args, **kwargs)
    return (time.perf_counter() - start) * 1000


def cycle_bench(daemon: Any, rounds: int) -> dict[str, float]:
    alone: dict[str, list[float]] = {h: [] for h in ("a", "b", "c")}
    sequential, parallel, slowest_inside = [], [], []
    inside: dict[str, float] = {}
    original = daemon._check_drift

    def recording(host: str, targets: list[Any]) -> None:
        start = time.perf_counter()
        original(host, targets)
        inside[host] = (time.perf_counter() - start) * 1000

    for _ in range(rounds):
        for host in alone:
            alone[host].append(timed(daemon.check_drift, host=host))
        sequential.append(sum(timed(daemon.check_drift, host=h) for h in alone))
        inside.clear()
        daemon._check_drift = recording
        parallel.append(timed(daemon.check_drift))
        daemon._check_drift = original
        slowest_inside.append(max(inside.values()))
    out = {f"alone_{h}": statistics.median(v) for h, v in alone.items()}
    out["sequential"] = statistics.median(sequential)
    out["parallel"] = statistics.median(parallel)
    out["slowest_inside"] = statistics.median(slowest_inside)
    out["slowest_alone"] = max(out[f"alone_{h}"] for h in alone)
    return out


class ProxyProcess:
    """tests/dockerproxy.py in a process of its own (so it takes no GIL time from the daemon measured):
    every request delayed by ``latency`` seconds; SIGUSR1 holds every request, SIGUSR2 lets them pass."""

    def __init__(self, upstream: str, latency: float) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "--serve-proxy", upstream, "--latency-ms", str(latency * 1000)],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        self.url = self.proc.stdout.readline().strip()

    def hang(self) -> None:
        self.proc.send_signal(signal.SIGUSR1)

    def release(self) -> None:
        self.proc.send_signal(signal.SIGUSR2)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


def serve_proxy(upstream: str, latency_ms: float) -> int:
    proxy = DockerProxy(upstream=upstream).start()
    if latency_ms > 0:
        proxy.add(None, "", action="forward", before=lambda _r: time.sleep(latency_ms / 1000))
    held: list[Any] = []

    def hang(*_: Any) -> None:
        held.append(proxy.hang(None, ""))
        # Rules apply in order: the hang goes before the latency rule.
        proxy.rules.insert(0, proxy.rules.pop())

    def release(*_: Any) -> None:
        while held:
            proxy.remove(held.pop())

    signal.signal(signal.SIGUSR1, hang)
    signal.signal(signal.SIGUSR2, release)
    print(proxy.url, flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        while not stop.wait(0.5):
            pass
    finally:
        proxy.stop()
    return 0


def hang_bench(daemon: Any, proxy: ProxyProcess, seconds: float) -> dict[str, Any]:
    from reconciler.daemon.runtime import Runtime

    checks: dict[str, list[float]] = {"a": [], "b": [], "c": []}
    original = daemon.check_drift

    def recording(only: Any = None, *, host: str | None = None) -> None:
        original(only, host=host)
        if host is not None:
            checks[host].append(time.monotonic())

    daemon.check_drift = recording
    runtime = Runtime(daemon)
    runtime.start()
    try:
        time.sleep(3)  # a few checks of every host before the hang
        proxy.hang()
        hang_start = time.monotonic()
        polls = []
        while time.monotonic() - hang_start < seconds:
            polls.append(timed(daemon.poll, "bench"))
            time.sleep(2)
        hang_end = time.monotonic()
        proxy.release()
        time.sleep(3)
    finally:
        runtime.stop()
        daemon.check_drift = original

    def gaps(host: str) -> list[float]:
        during = [t for t in checks[host] if hang_start <= t <= hang_end]
        return [b - a for a, b in itertools.pairwise(during)]

    return {
        "a_checks": len([t for t in checks["a"] if hang_start <= t <= hang_end]),
        "b_checks": len([t for t in checks["b"] if hang_start <= t <= hang_end]),
        "c_checks": len([t for t in checks["c"] if hang_start <= t <= hang_end]),
        "a_max_gap": max(gaps("a"), default=float("nan")),
        "b_max_gap": max(gaps("b"), default=float("nan")),
        "poll_median_ms": statistics.median(polls),
        "poll_max_ms": max(polls),
        "seconds": hang_end - hang_start,
    }


def cleanup(urls: dict[str, str]) -> None:
    for url in urls.values():
        client = docker.DockerClient(base_url=url)
        for c in client.api.containers(all=True, filters={"label": "com.docker.compose.project"}):
            if (c.get("Labels") or {}).get("com.docker.compose.project", "").startswith(PREFIX):
                client.api.remove_container(c["Id"], force=True, v=True)
        for n in client.networks.list(filters={"label": "com.docker.compose.project"}):
            if n.attrs["Labels"].get("com.docker.compose.project", "").startswith(PREFIX):
                n.remove()
        client.close()


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--per-host", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--hang", type=float, default=60.0)
    parser.add_argument("--latency-ms", type=float, default=0.0, help="added to every request to b and c")
    parser.add_argument("--serve-proxy", metavar="UPSTREAM", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_proxy:
        return serve_proxy(args.serve_proxy, args.latency_ms)

    from reconciler.commands.daemon import _daemon
    from reconciler.config import load_config

    direct = {"a": "unix:///var/run/docker.sock", **{h: engine(i) for h, i in ENGINES.items()}}
    proxies = {h: ProxyProcess(direct[h].removeprefix("unix://"), args.latency_ms / 1000) for h in ENGINES}
    proxy = proxies["c"]
    urls = {**direct, **{h: p.url for h, p in proxies.items()}}
    try:
        with tempfile.TemporaryDirectory(prefix="tbh") as tmp_name:
            tmp = Path(tmp_name)
            bare = make_repo(tmp, args.per_host)
            daemon = _daemon(load_config(config(tmp, bare, urls)))
            daemon.poll("bench")
            daemon.queue.wait_idle(600)
            healthy = sum(1 for s in daemon.environments() if s.health == "Healthy")
            daemon.check_drift()
            cycle = cycle_bench(daemon, args.rounds)
            hang = hang_bench(daemon, proxy, args.hang)
            daemon.queue.shutdown(cancel=True)
    finally:
        for p in proxies.values():
            p.stop()
        cleanup(direct)
    load = Path("/proc/loadavg").read_text().split()[:3]
    n = 3 * args.per_host
    print(
        f"### Hosts: 3 engines, {n} environments ({healthy} healthy), {args.latency_ms:g} ms added per "
        f"request to hosts b and c, {datetime.now():%Y-%m-%d}, load {load}"
    )
    print()
    print("| measurement | median | note |")
    print("|---|---|---|")
    for h in ("a", "b", "c"):
        print(f"| drift check of host {h} alone ({args.per_host} envs) | {cycle[f'alone_{h}']:.1f} ms | |")
    print(
        f"| the three hosts one after another | {cycle['sequential']:.1f} ms | "
        "what one engine per loop would cost |"
    )
    ratio = cycle["parallel"] / cycle["slowest_inside"]
    print(
        f"| **one cycle, hosts in parallel** | **{cycle['parallel']:.1f} ms** | slowest host inside it "
        f"{cycle['slowest_inside']:.1f} ms: {ratio:.2f}x (target ≤ 1.10x) |"
    )
    print(
        f"| slowest host alone | {cycle['slowest_alone']:.1f} ms | cycle / slowest alone: "
        f"{cycle['parallel'] / cycle['slowest_alone']:.2f}x |"
    )
    print()
    print(f"Host c hanging for {hang['seconds']:.0f} s (every request held; drift_interval 1 s):")
    print()
    print("| during the hang | value |")
    print("|---|---|")
    print(
        f"| drift checks of host a / b / c | {hang['a_checks']} / {hang['b_checks']} / {hang['c_checks']} |"
    )
    print(
        f"| longest gap between two checks of host a / b | {hang['a_max_gap']:.2f} s / "
        f"{hang['b_max_gap']:.2f} s |"
    )
    print(
        f"| a poll of the app (median / max) | {hang['poll_median_ms']:.0f} ms / "
        f"{hang['poll_max_ms']:.0f} ms |"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
