"""Daemon benchmarks (issue 4), side by side with Docker Compose v2; not a test.

    .venv/bin/python bench/daemon_bench.py [--previews 50] [--branches 100] [--rounds 5] [--cycles 15]

1. push-to-converged latency of `reconciler run` with a 2 s poll, vs `git pull` + Compose `up -d` by hand;
2. a no-op cycle (poll + drift check) with N converged previews, in-process, vs a Compose `up -d` loop;
3. the RSS of `reconciler run` with 0 environments and with N live previews.
Prints a markdown table for docs/benchmarks.md. Everything it creates is named `tbn*` and removed at the end.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Any

import docker
import yaml

ROOT = Path(__file__).resolve().parents[1]
IMAGE = "reconciler-test/busybox:latest"
PREFIX = "tbn"
# Docker's default address pools hold ~31 bridge networks per host and every preview would create its own,
# so the preview stacks (and the Compose comparison projects) all join one pre-created network.
SHARED_NETWORK = f"{PREFIX}-shared"

# 1. a small production app: a web server and a worker; a round changes REV, which recreates `web` only.
APP_COMPOSE = """\
services:
  web:
    image: {image}
    init: true
    command: ["httpd", "-f", "-p", "8080"]
    environment: {{REV: "{rev}"}}
  worker:
    image: {image}
    init: true
    command: ["sleep", "3600"]
"""
# 2 and 3. a preview: one sleeping container on the shared network.
PREVIEW_COMPOSE = f"""\
services:
  app:
    image: {IMAGE}
    init: true
    command: ["sleep", "3600"]
networks:
  default:
    name: {SHARED_NETWORK}
    external: true
"""

Row = tuple[str, str, str]


# --- helpers ---------------------------------------------------------------------------------------


def compose_binary() -> str:
    spec = importlib.util.find_spec("compose")
    assert spec is not None and spec.submodule_search_locations
    return str(Path(spec.submodule_search_locations[0]) / "docker-compose")


def run(*args: str, cwd: Path | None = None, stdin: str | None = None) -> str:
    out = subprocess.run(args, check=True, capture_output=True, text=True, cwd=cwd, input=stdin)
    return out.stdout.strip()


def git(*args: str, cwd: Path | None = None, stdin: str | None = None) -> str:
    return run(
        "git", "-c", "user.name=bench", "-c", "user.email=bench@example.org", *args, cwd=cwd, stdin=stdin
    )


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms"


def pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(predicate: Callable[[], object], timeout: float, what: str, interval: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(interval)


def log_time(stamp: str) -> float:
    """structlog's ISO UTC timestamp -> unix time."""
    return datetime.fromisoformat(stamp).timestamp()


class Repo:
    """A bare repository and a working clone pushing to it, as a developer would."""

    def __init__(self, root: Path, compose: str) -> None:
        self.bare = root / "app.git"
        self.work = root / "work"
        git("init", "-q", "--bare", "-b", "master", str(self.bare))
        git("init", "-q", "-b", "master", str(self.work))
        git("remote", "add", "origin", str(self.bare), cwd=self.work)
        self.commit({"compose.yaml": compose})

    def commit(self, files: dict[str, str], push: bool = True) -> str:
        for rel, text in files.items():
            (self.work / rel).write_text(text)
        git("add", "-A", cwd=self.work)
        git("commit", "-qm", "change", cwd=self.work)
        if push:
            git("push", "-q", "origin", "master", cwd=self.work)
        return git("rev-parse", "HEAD", cwd=self.work)

    def push(self) -> None:
        git("push", "-q", "origin", "master", cwd=self.work)

    def add_branches(self, names: list[str]) -> None:
        """One commit per branch on top of master, written straight into the bare repo (one fast-import)."""
        master = git("rev-parse", "master", cwd=self.bare)
        now = int(time.time())
        stream = []
        for name in names:
            stream += [
                f"commit refs/heads/{name}",
                f"committer bench <bench@example.org> {now} +0000",
                f"data {len(name)}",
                name,
                f"from {master}",
                "M 644 inline BRANCH",
                f"data {len(name)}",
                name,
                "",
            ]
        git("fast-import", "--quiet", cwd=self.bare, stdin="\n".join(stream) + "\n")


def write_config(path: Path, repo: Path, port: int, environments: dict[str, Any], **top: Any) -> Path:
    doc: dict[str, Any] = {
        "state_dir": str(path.parent / f"state-{path.stem}"),
        "listen": f"127.0.0.1:{port}",
        "drift_interval": "1s",
        **top,
        "apps": {"bench": {"repo": str(repo), "poll_interval": "2s", "environments": environments}},
    }
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def preview_env(project: str, glob: str) -> dict[str, Any]:
    return {
        "branches": [glob],
        "project": project,
        "compose": ["compose.yaml"],
        "ephemeral": True,
        "max": 200,
        "timeout": "120s",
    }


class DaemonProcess:
    """`python -m reconciler run -c CFG` as users run it, with its log in a file."""

    def __init__(self, config: Path, port: int) -> None:
        self.port = port
        self.log = config.with_suffix(".log")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "reconciler", "run", "-c", str(config)],
            cwd=ROOT,
            stdout=self.log.open("ab"),
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        self.started = time.time()
        wait_for(self._answers, 60, "the daemon's HTTP server", interval=0.1)

    def _answers(self) -> bool:
        if self.proc.poll() is not None:
            raise RuntimeError(f"daemon exited {self.proc.returncode}:\n{self.log.read_text()[-3000:]}")
        try:
            self.get("/healthz")
        except OSError:
            return False
        return True

    def get(self, path: str) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=10) as resp:
            return str(resp.read().decode())

    def environments(self) -> dict[str, dict[str, Any]]:
        return {e["project"]: e for e in json.loads(self.get("/api/environments")) if e["project"]}

    def proc_status(self) -> dict[str, int]:
        """VmRSS, VmHWM... in kB, from /proc/<pid>/status."""
        out = {}
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.startswith("Vm") or key == "Threads":
                out[key] = int(value.split()[0])
        return out

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def events(self, name: str) -> list[dict[str, Any]]:
        out = []
        for line in self.log.read_text().splitlines():
            if line.startswith("{"):
                entry = json.loads(line)
                if entry.get("event") == name:
                    out.append(entry)
        return out

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@contextmanager
def daemon_process(config: Path, port: int) -> Iterator[DaemonProcess]:
    d = DaemonProcess(config, port)
    try:
        yield d
    finally:
        d.stop()


def all_converged(d: DaemonProcess, count: int, commits: dict[str, str] | None = None) -> bool:
    envs = d.environments()
    good = [
        e
        for e in envs.values()
        if e["sync"] == "Synced"
        and e["health"] == "Healthy"
        and (commits is None or e["deployed_commit"] == commits.get(e["project"]))
    ]
    return len(good) >= count


def cleanup(client: docker.DockerClient) -> None:
    """Remove every container, network and volume of a `tbn*` project, and the shared network."""

    def mine(labels: dict[str, str] | None) -> bool:
        return (labels or {}).get("com.docker.compose.project", "").startswith(PREFIX)

    containers = [
        c
        for c in client.containers.list(all=True, filters={"label": "com.docker.compose.project"})
        if mine(c.labels)
    ]
    with ThreadPoolExecutor(max_workers=4) as pool:
        list(pool.map(lambda c: c.remove(force=True, v=True), containers))
    for n in client.networks.list():
        if (n.name or "").startswith(PREFIX) or mine(n.attrs.get("Labels")):
            try:
                n.remove()
            except docker.errors.APIError as err:
                print(f"cleanup: could not remove network {n.name}: {err}", file=sys.stderr)
    for v in client.volumes.list(filters={"label": "com.docker.compose.project"}):
        if mine(v.attrs.get("Labels")):
            v.remove(force=True)


def cleanup_containers_only(client: docker.DockerClient) -> None:
    """Between parts: drop the previous part's containers, keep the shared network."""
    containers = [
        c
        for c in client.containers.list(all=True, filters={"label": "com.docker.compose.project"})
        if c.labels.get("com.docker.compose.project", "").startswith(PREFIX)
    ]
    with ThreadPoolExecutor(max_workers=4) as pool:
        list(pool.map(lambda c: c.remove(force=True, v=True), containers))


# --- 1. push-to-converged latency --------------------------------------------------------------------


def bench_latency(tmp: Path, rounds: int, compose: str) -> list[Row]:
    root = tmp / "latency"
    root.mkdir()
    repo = Repo(root, APP_COMPOSE.format(image=IMAGE, rev=0))
    project = f"{PREFIX}-lat-production"
    port = free_port()
    env = {"branch": "master", "project": project, "compose": ["compose.yaml"], "timeout": "60s"}
    config = write_config(root / "latency.yaml", repo.bare, port, {"production": env}, drift_interval="15s")
    manual = root / "manual"
    git("clone", "-q", str(repo.bare), str(manual))
    up = (compose, "-p", f"{PREFIX}-lat-manual", "up", "-d", "--remove-orphans")
    run(*up, cwd=manual)
    latency: list[float] = []
    detect: list[float] = []  # push -> deploy.start: poll wait + ls-remote + fetch + checkout + render
    wait: list[float] = []  # push -> next scheduled poll (the 2 s timer)
    converge: list[float] = []  # deploy.start -> deploy.done: recreate web, wait until it runs
    pulls: list[float] = []
    ups: list[float] = []
    with daemon_process(config, port) as d:
        head = git("rev-parse", "HEAD", cwd=repo.work)
        first = time.perf_counter()
        wait_for(lambda: all_converged(d, 1, {project: head}), 120, "the first deploy")
        first_deploy = time.perf_counter() - first
        # APScheduler fires the poll at start-up and then every 2 s from when the job was added.
        phase = log_time(d.events("daemon.started")[0]["timestamp"])
        rss_one = d.proc_status()
        for i in range(1, rounds + 1):
            time.sleep(random.uniform(0, 2))  # push at a random point of the poll period
            sha = repo.commit({"compose.yaml": APP_COMPOSE.format(image=IMAGE, rev=i)}, push=False)
            repo.push()
            pushed = time.time()
            start = time.perf_counter()
            wait_for(partial(all_converged, d, 1, {project: sha}), 120, f"round {i}", interval=0.02)
            latency.append(time.perf_counter() - start)
            short = sha[:12]
            began = [log_time(e["timestamp"]) for e in d.events("deploy.start") if e.get("commit") == short]
            done = [log_time(e["timestamp"]) for e in d.events("deploy.done") if e.get("commit") == short]
            detect.append(began[0] - pushed)
            converge.append(done[0] - began[0])
            wait.append(2.0 - ((pushed - phase) % 2.0))
            # The same change by hand: pull, then Compose v2 `up -d` (which recreates web too).
            pulls.append(timed(lambda: git("pull", "-q", cwd=manual)))
            ups.append(timed(lambda: run(*up, cwd=manual)))
    med = statistics.median
    rest = [a - b for a, b in zip(detect, wait, strict=True)]
    return [
        (
            f"1. push → converged (`/api/environments` shows the commit, Healthy), 2 s poll, {rounds} rounds",
            f"{ms(med(latency))} (max {ms(max(latency))})",
            "recreates 1 of 2 services",
        ),
        (
            "1. ... of which waiting for the next poll (2 s timer)",
            f"{ms(med(wait))} (mean {ms(statistics.fmean(wait))})",
            "expected ~1 s on average",
        ),
        (
            "1. ... push → converged minus that wait (what a webhook trigger would give)",
            f"{ms(med([a - b for a, b in zip(latency, wait, strict=True)]))}",
            "",
        ),
        (
            "1. ... ls-remote + fetch + checkout + render",
            f"{ms(med(rest))}",
            "push → `deploy.start` minus the wait",
        ),
        (
            "1. ... converge (recreate web, wait until running)",
            f"{ms(med(converge))}",
            "`deploy.start` → `deploy.done`",
        ),
        (
            "1. ... converged → visible in the API",
            f"{ms(med([a - b - c for a, b, c in zip(latency, detect, converge, strict=True)]))}",
            "API polled every 20 ms",
        ),
        ("1. by hand: `git pull`", f"{ms(med(pulls))}", ""),
        (
            "1. by hand: Compose v2 `up -d --remove-orphans`",
            f"{ms(med(ups))} (max {ms(max(ups))})",
            "returns once started",
        ),
        ("1. first deploy after `reconciler run` starts", ms(first_deploy), "network + 2 containers"),
        ("3. daemon RSS with 1 environment (after the rounds)", f"{rss_one['VmRSS'] / 1024:.1f} MB", ""),
    ]


# --- 2. no-op cycle with N branches ------------------------------------------------------------------


def bench_noop(tmp: Path, branches: int, cycles: int, compose: str, client: docker.DockerClient) -> list[Row]:
    import structlog

    from reconciler import logs
    from reconciler.commands.daemon import _daemon
    from reconciler.config import load_config

    root = tmp / "noop"
    root.mkdir()
    repo = Repo(root, PREVIEW_COMPOSE)
    repo.add_branches([f"pr/{i:03d}" for i in range(branches)])
    env = preview_env(f"{PREFIX}-n-{{branch}}", "pr/*")
    config = write_config(root / "noop.yaml", repo.bare, 0, {"preview": env})
    # Log as `reconciler run` does (JSON, info), into a file rather than this table.
    logs.configure(json=True)
    log_file = (root / "noop.log").open("w")
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(log_file))
    daemon = _daemon(load_config(config), metrics=True)
    try:
        start = time.perf_counter()
        daemon.poll("bench")
        daemon.queue.wait_idle()
        bring_up = time.perf_counter() - start
        statuses = [s for s in daemon.environments() if s.project]
        healthy = [s for s in statuses if str(s.sync) == "Synced" and str(s.health) == "Healthy"]
        if len(healthy) != branches:
            bad = [
                (s.project, str(s.sync), str(s.health), s.error[:200]) for s in statuses if s not in healthy
            ]
            raise RuntimeError(f"{len(healthy)}/{branches} previews converged; not converged: {bad[:5]}")
        deploys = {s.project: s.last_deploy.id if s.last_deploy else None for s in statuses}
        daemon.poll("bench")  # warm: the first cycle after bring-up renders nothing new but fills caches
        daemon.check_drift()
        polls: list[float] = []
        drifts: list[float] = []
        for _ in range(cycles):
            polls.append(timed(lambda: daemon.poll("bench")))
            drifts.append(timed(daemon.check_drift))
        daemon.queue.wait_idle()
        after = {
            s.project: s.last_deploy.id if s.last_deploy else None for s in daemon.environments() if s.project
        }
        if after != deploys:
            raise RuntimeError("a no-op cycle started a deploy")
    finally:
        daemon.queue.shutdown(cancel=True)
        daemon.state.close()
        log_file.close()
    cycle = [p + d for p, d in zip(polls, drifts, strict=True)]

    # What a shell-based tool does every cycle: `docker compose up -d` per project. A sample of 10 projects
    # (same compose file, started once), timed twice, extrapolated to N.
    sample = 10
    cdir = root / "compose"
    cdir.mkdir()
    (cdir / "compose.yaml").write_text(PREVIEW_COMPOSE)
    names = [f"{PREFIX}-c{i:02d}" for i in range(sample)]
    for name in names:
        run(compose, "-p", name, "up", "-d", cwd=cdir)
    per_up = [timed(partial(run, compose, "-p", n, "up", "-d", cwd=cdir)) for _ in range(2) for n in names]
    running = len(client.containers.list(filters={"label": "com.docker.compose.project"}))
    med = statistics.median
    return [
        (
            f"2. no-op cycle, {branches} converged previews: `poll()` + `check_drift()`, {cycles} cycles",
            f"{ms(med(cycle))} (p95 {ms(pct(cycle, 0.95))}, min {ms(min(cycle))})",
            "goal ≤ 200 ms: " + ("met" if med(cycle) <= 0.2 else "NOT met"),
        ),
        (
            "2. ... `poll()` (ls-remote, branch → env, sweep)",
            f"{ms(med(polls))} (p95 {ms(pct(polls, 0.95))}, min {ms(min(polls))})",
            "",
        ),
        (
            "2. ... `check_drift()` (1 list call, plan and health per preview)",
            f"{ms(med(drifts))} (p95 {ms(pct(drifts, 0.95))}, min {ms(min(drifts))})",
            "",
        ),
        (
            f"2. Compose v2 `up -d` loop over {branches} projects",
            f"{med(per_up) * branches:.1f} s",
            f"{ms(med(per_up))} per project x {branches}, sampled on {sample} "
            f"({running} containers on the host)",
        ),
        (
            f"2. bring-up of {branches} previews in-process (setup)",
            f"{bring_up:.0f} s",
            "max_concurrent_deploys 2",
        ),
    ]


# --- 3. RSS -----------------------------------------------------------------------------------------


def bench_rss(tmp: Path, previews: int) -> list[Row]:
    root = tmp / "rss"
    root.mkdir()
    repo = Repo(root, PREVIEW_COMPOSE)
    repo.add_branches([f"pr/{i:03d}" for i in range(previews)])
    rows: list[Row] = []
    # Idle: the same repository, but a glob no branch matches.
    port = free_port()
    idle_cfg = write_config(
        root / "idle.yaml", repo.bare, port, {"preview": preview_env(f"{PREFIX}-i-{{branch}}", "none/*")}
    )
    with daemon_process(idle_cfg, port) as d:
        time.sleep(6)  # 3 polls, 6 drift cycles
        idle = d.proc_status()
    rows.append(
        (
            "3. daemon RSS, 0 environments (6 s after start)",
            f"{idle['VmRSS'] / 1024:.1f} MB",
            f"peak {idle['VmHWM'] / 1024:.1f} MB",
        )
    )
    port = free_port()
    cfg = write_config(
        root / "live.yaml", repo.bare, port, {"preview": preview_env(f"{PREFIX}-r-{{branch}}", "pr/*")}
    )
    with daemon_process(cfg, port) as d:
        start = time.perf_counter()
        wait_for(lambda: all_converged(d, previews), 900, f"{previews} healthy previews", interval=0.5)
        bring_up = time.perf_counter() - start
        # Steady state: 10 s of drift checks (1 s) and polls (2 s) with nothing to do.
        cpu0, t0 = d.cpu_seconds(), time.monotonic()
        samples = []
        for _ in range(10):
            time.sleep(1)
            samples.append(d.proc_status()["VmRSS"])
        cpu = (d.cpu_seconds() - cpu0) / (time.monotonic() - t0)
        final = d.proc_status()
        if not all_converged(d, previews):
            raise RuntimeError("previews stopped being Synced/Healthy during the steady-state window")
    rss = final["VmRSS"] / 1024
    rows += [
        (
            f"3. daemon RSS, {previews} live previews (after 10 s steady state)",
            f"{rss:.1f} MB",
            "goal ≤ 100 MB: "
            + ("met" if rss <= 100 else "NOT met")
            + f"; max sampled {max(samples) / 1024:.1f} MB",
        ),
        (
            "3. ... peak RSS (VmHWM) over the whole run, incl. bring-up",
            f"{final['VmHWM'] / 1024:.1f} MB",
            f"{final['Threads']} threads",
        ),
        ("3. ... CPU in steady state", f"{cpu * 100:.1f} % of one core", "drift 1 s, poll 2 s"),
        (
            f"3. bring-up of {previews} previews by `reconciler run` (setup)",
            f"{bring_up:.0f} s",
            "max_concurrent_deploys 2",
        ),
    ]
    return rows


# --- main -------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--previews", type=int, default=50, help="live previews for the RSS measurement")
    parser.add_argument("--branches", type=int, default=100, help="converged previews for the no-op cycle")
    parser.add_argument("--rounds", type=int, default=5, help="pushes for the latency measurement")
    parser.add_argument("--cycles", type=int, default=15, help="timed no-op cycles")
    parser.add_argument("--parts", default="1,2,3", help="which measurements to run, e.g. 2,3")
    opts = parser.parse_args()
    parts = set(opts.parts.split(","))
    # A SIGTERM to the bench must still clean up.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    compose = compose_binary()
    client = docker.from_env()
    tmp = Path(tempfile.mkdtemp(prefix=f"{PREFIX}-"))
    rows: list[Row] = []
    began = time.perf_counter()
    try:
        client.networks.create(SHARED_NETWORK, labels={"com.docker.compose.project": f"{PREFIX}-shared"})
        if "1" in parts:
            rows += bench_latency(tmp, opts.rounds, compose)
        if "3" in parts:
            rows += bench_rss(tmp, opts.previews)
            cleanup_containers_only(client)
        if "2" in parts:
            rows += bench_noop(tmp, opts.branches, opts.cycles, compose, client)
    finally:
        cleanup(client)
        left = [
            c.name
            for c in client.containers.list(all=True, filters={"label": "com.docker.compose.project"})
            if c.labels.get("com.docker.compose.project", "").startswith(PREFIX)
        ]
        if left:
            print(f"cleanup left containers behind: {left}", file=sys.stderr)
    load = "/".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"\n(total {time.perf_counter() - began:.0f} s; load average {load} at the end; files in {tmp})\n")
    print("| measurement | result | note |")
    print("|---|---|---|")
    # Rows in the order of the three measurements, whichever part produced them.
    for what, value, note in sorted(rows, key=lambda r: r[0][0]):
        print(f"| {what} | {value} | {note} |")


if __name__ == "__main__":
    main()
