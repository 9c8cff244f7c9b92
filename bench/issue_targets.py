"""The performance targets of the issue, measured in one run, side by side with Compose v2 and docker-py.

    .venv/bin/python bench/issue_targets.py [--parts cycle,sync,webhook] [--cycles 30] [--rounds 10]
        [--profile]          # also print a cProfile of 10 no-op cycles

cycle:   a repository with 1,000 branches of which 100 map to live previews: a no-op cycle (poll + drift
         check) timed in-process, with the SQLite writes and the Docker API calls of each cycle counted;
sync:    one-shot `reconciler sync` of 10 and 25 unchanged previews vs a Compose v2 `up -d` loop over as
         many projects (whole processes), and the cost of each extra stack;
webhook: push + webhook POST to `reconciler run` until the new container runs, vs a raw docker-py
         stop/remove/create/start of the same container.
Prints one markdown table for docs/benchmarks.md. Everything is named `tit*` and removed at the end.
"""

from __future__ import annotations

import argparse
import cProfile
import hashlib
import hmac
import json
import os
import pstats
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any

import docker
import yaml
from daemon_bench import (
    IMAGE,
    DaemonProcess,
    Repo,
    compose_binary,
    free_port,
    git,
    log_time,
    ms,
    pct,
    timed,
    wait_for,
)

PREFIX = "tit"
PROJECT_LABEL = "com.docker.compose.project"
SHARED_NETWORK = f"{PREFIX}-shared"
# A preview: one sleeping container on one shared network (Docker's default pools hold ~31 bridges).
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
# The webhook app: a web server and a worker; a round changes REV, which recreates `web` only.
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
Row = tuple[str, str, str]
ROOT = Path(__file__).resolve().parents[1]


def run(*args: str, cwd: Path | None = None) -> str:
    out = subprocess.run(args, check=True, capture_output=True, text=True, cwd=cwd)
    return out.stdout


def med(samples: list[float]) -> float:
    return statistics.median(samples)


def spread(samples: list[float]) -> str:
    return f"{ms(med(samples))} (p95 {ms(pct(samples, 0.95))}, min {ms(min(samples))})"


def config_doc(root: Path, name: str, bare: Path, envs: dict[str, Any], **top: Any) -> Path:
    path = root / f"{name}.yaml"
    doc: dict[str, Any] = {
        "state_dir": str(root / f"state-{name}"),
        "listen": "127.0.0.1:0",
        "drift_interval": "1s",
        **top,
        "apps": {"bench": {"repo": str(bare), "poll_interval": "1h", "environments": envs}},
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
        # The previews share one external network (Docker's default pools hold ~30 bridges); the
        # ephemeral policy refuses external networks unless allowed.
        "policy": {"external": True},
    }


class CountingEngine:
    """Wraps the Docker Engine adapter: counts every call by method name."""

    def __init__(self, engine: Any) -> None:
        self._engine = engine
        self.calls: Counter[str] = Counter()

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._engine, name)
        if not callable(attr):
            return attr

        def counted(*args: Any, **kwargs: Any) -> Any:
            self.calls[name] += 1
            return attr(*args, **kwargs)

        return counted


@contextmanager
def in_process_daemon(config: Path, log: Path) -> Iterator[Any]:
    """The daemon as the daemon tests drive it: `_daemon(load_config(path))`, JSON logs into a file."""
    import structlog

    from reconciler import logs
    from reconciler.commands.daemon import _daemon
    from reconciler.config import load_config

    logs.configure(json=True)
    with log.open("a") as out:
        structlog.configure(logger_factory=structlog.PrintLoggerFactory(out))
        daemon = _daemon(load_config(config), metrics=True)
        try:
            yield daemon
        finally:
            daemon.queue.shutdown(cancel=True)
            daemon.state.close()


# --- cycle: 1,000 branches, 100 live previews ---------------------------------------------------------


def bench_cycle(tmp: Path, previews: int, others: int, cycles: int, profile: bool) -> list[Row]:
    root = tmp / "cycle"
    root.mkdir()
    repo = Repo(root, PREVIEW_COMPOSE)
    repo.add_branches([f"pr/{i:03d}" for i in range(previews)] + [f"wip/{i:03d}" for i in range(others)])
    # As any git server keeps them after `git gc`: fast-import left 1,000 loose ref files.
    git("pack-refs", "--all", cwd=repo.bare)
    branches = len(git("for-each-ref", "refs/heads", cwd=repo.bare).splitlines())
    config = config_doc(root, "cycle", repo.bare, {"preview": preview_env(f"{PREFIX}-c-{{branch}}", "pr/*")})
    with in_process_daemon(config, root / "cycle.log") as daemon:
        start = time.perf_counter()
        daemon.poll("bench")
        daemon.queue.wait_idle()
        bring_up = time.perf_counter() - start
        statuses = [s for s in daemon.environments() if s.project]
        healthy = [s for s in statuses if str(s.sync) == "Synced" and str(s.health) == "Healthy"]
        if len(healthy) != previews or len(statuses) != previews:
            raise RuntimeError(f"{len(healthy)}/{previews} previews converged ({len(statuses)} environments)")
        deploys = {s.project: s.last_deploy.id if s.last_deploy else None for s in statuses}
        engine = CountingEngine(daemon.converger._engine)
        daemon.converger._engine = engine
        daemon.converger.observer._engine = engine  # the drift check lists through its observer
        statements: list[str] = []
        daemon.state._db.set_trace_callback(statements.append)
        daemon.poll("bench")  # warm
        daemon.check_drift()
        polls: list[float] = []
        drifts: list[float] = []
        calls: list[Counter[str]] = []
        writes: list[int] = []
        txs: list[int] = []
        for _ in range(cycles):
            engine.calls.clear()
            statements.clear()
            before = daemon.state.changes()
            polls.append(timed(lambda: daemon.poll("bench")))
            drifts.append(timed(daemon.check_drift))
            calls.append(Counter(engine.calls))
            writes.append(daemon.state.changes() - before)
            txs.append(sum(1 for s in statements if s.upper().startswith("BEGIN")))
        profile_text = ""
        if profile:
            prof = cProfile.Profile()
            prof.enable()
            for _ in range(10):
                daemon.poll("bench")
                daemon.check_drift()
            prof.disable()
            stats = pstats.Stats(prof, stream=(buf := _Buffer()))
            stats.sort_stats("cumulative").print_stats(40)
            profile_text = buf.text
        daemon.state._db.set_trace_callback(None)
        daemon.queue.wait_idle()
        after = {
            s.project: s.last_deploy.id if s.last_deploy else None for s in daemon.environments() if s.project
        }
        if after != deploys:
            raise RuntimeError("a no-op cycle started a deploy")
        scrape = daemon.metrics.exposition()[0].decode() if daemon.metrics else ""
    if profile_text:
        print(profile_text, file=sys.stderr)
    cycle = [p + d for p, d in zip(polls, drifts, strict=True)]
    per_kind = {k: sorted({c[k] for c in calls}) for k in sorted({k for c in calls for k in c})}
    client = docker.from_env()
    listing = [
        timed(lambda: client.api.containers(all=True, filters={"label": PROJECT_LABEL}))
        for _ in range(cycles)
    ]
    running = len(client.api.containers(filters={"label": PROJECT_LABEL}))
    client.close()
    metric_lines = [
        line
        for line in scrape.splitlines()
        if line.startswith(
            ("reconciler_poll_duration_seconds_count", "reconciler_drift_check_duration_seconds_count")
        )
    ]
    return [
        (
            f"cycle: no-op cycle, {branches} branches, {previews} live previews: `poll()` + `check_drift()`,"
            f" {cycles} cycles",
            spread(cycle),
            "target ≤ 60 ms median: " + ("**met**" if med(cycle) <= 0.06 else "**NOT met**"),
        ),
        (
            "cycle: … `poll()` (ls-remote of 1,000 branches, routing, deploy decisions, sweep)",
            spread(polls),
            "",
        ),
        ("cycle: … `check_drift()` (one container list, a plan per preview)", spread(drifts), ""),
        (
            "cycle: SQLite rows written per no-op cycle / write transactions",
            f"{sorted(set(writes))} / {sorted(set(txs))}",
            "target 0: " + ("**met**" if set(writes) == {0} and set(txs) == {0} else "**NOT met**"),
        ),
        (
            "cycle: Docker API calls per no-op cycle, by kind",
            ", ".join(f"{k} {v[0] if len(v) == 1 else v}" for k, v in per_kind.items()),
            "target one list call per object kind: "
            + (
                "**met**"
                if all(v == [1] for k, v in per_kind.items() if k.startswith("list_"))
                else "**NOT met**"
            ),
        ),
        (
            f"cycle: raw docker-py: one container list call ({running} containers running on the host)",
            spread(listing),
            "the floor of any drift check",
        ),
        ("cycle: metrics after the run", "; ".join(metric_lines), ""),
        (f"cycle: bring-up of {previews} previews in-process (setup)", f"{bring_up:.0f} s", ""),
    ]


class _Buffer:
    def __init__(self) -> None:
        self.text = ""

    def write(self, s: str) -> int:
        self.text += s
        return len(s)


# --- sync: one-shot `reconciler sync` vs a Compose `up -d` loop --------------------------------------


def bench_sync(tmp: Path, rounds: int, compose: str) -> list[Row]:
    root = tmp / "sync"
    root.mkdir()
    repo = Repo(root, PREVIEW_COMPOSE)
    sizes = (10, 25)
    repo.add_branches([f"s{n}/{i:03d}" for n in sizes for i in range(n)])
    configs = {
        n: config_doc(
            root, f"sync{n}", repo.bare, {"preview": preview_env(f"{PREFIX}-s{n}-{{branch}}", f"s{n}/*")}
        )
        for n in sizes
    }
    sync = [sys.executable, "-m", "reconciler", "sync", "-c"]
    for n, cfg in configs.items():
        first = subprocess.run([*sync, str(cfg)], capture_output=True, text=True, cwd=ROOT)
        if first.returncode != 0 or first.stdout.count(": success at") != n:
            raise RuntimeError(f"first sync of {n} previews: {first.stdout[-2000:]}{first.stderr[-2000:]}")
    # The Compose comparison: as many projects from the same compose file, started once.
    cdir = root / "compose"
    cdir.mkdir()
    (cdir / "compose.yaml").write_text(PREVIEW_COMPOSE)
    names = [f"{PREFIX}-k{i:02d}" for i in range(max(sizes))]
    with ThreadPoolExecutor(max_workers=2) as pool:
        list(pool.map(lambda name: run(compose, "-p", name, "up", "-d", cwd=cdir), names))
    # This machine sets PYTHONDONTWRITEBYTECODE=1; an installed package ships .pyc files, so the timed
    # runs use a bytecode cache warmed by the first run below (one run without it is reported too).
    cached = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    subprocess.run([*sync, str(configs[sizes[0]])], capture_output=True, cwd=ROOT, env=cached, check=True)
    ours: dict[int, list[float]] = {n: [] for n in sizes}
    theirs: dict[int, list[float]] = {n: [] for n in sizes}

    def reconciler_sync(n: int, env: dict[str, str] | None = None) -> float:
        start = time.perf_counter()
        done = subprocess.run([*sync, str(configs[n])], capture_output=True, text=True, cwd=ROOT, env=env)
        took = time.perf_counter() - start
        if done.returncode != 0 or done.stdout.count(": up to date at") != n:
            raise RuntimeError(f"unchanged sync of {n} previews did something:\n{done.stdout}{done.stderr}")
        return took

    def compose_loop(n: int) -> None:
        for name in names[:n]:
            run(compose, "-p", name, "up", "-d", cwd=cdir)

    for _ in range(rounds):
        for n in sizes:
            ours[n].append(reconciler_sync(n, cached))
            theirs[n].append(timed(partial(compose_loop, n)))
    # PYTHONDONTWRITEBYTECODE alone still reads the cache warmed above: point it at an empty one.
    uncached = {**os.environ, "PYTHONPYCACHEPREFIX": str(root / "no-pycache")}
    no_pyc = [reconciler_sync(max(sizes), uncached) for _ in range(3)]
    # The same `sync` in this process (no interpreter start-up, no imports): the work that grows with
    # the number of stacks, without the start-up's noise on a shared host.
    inproc = {n: [_sync_in_process(configs[n], n) for _ in range(rounds)] for n in sizes}
    lo, hi = sizes
    slope = (med(ours[hi]) - med(ours[lo])) / (hi - lo)
    slope_min = (min(ours[hi]) - min(ours[lo])) / (hi - lo)
    slope_in = (med(inproc[hi]) - med(inproc[lo])) / (hi - lo)
    cslope = (med(theirs[hi]) - med(theirs[lo])) / (hi - lo)
    ratio = med(theirs[hi]) / med(ours[hi])
    rows = [
        (
            f"sync: `reconciler sync` of {n} unchanged previews vs a Compose v2 `up -d` loop over {n}"
            f" projects (whole processes, {rounds} rounds)",
            f"{ms(med(ours[n]))} vs {ms(med(theirs[n]))}",
            f"{med(theirs[n]) / med(ours[n]):.1f} times faster"
            + (f"; target ≥ 3 times: {'**met**' if ratio >= 3 else '**NOT met**'}" if n == hi else ""),
        )
        for n in sizes
    ]
    return [
        *rows,
        (
            f"sync: cost of each extra stack ({lo} → {hi} stacks)",
            f"{slope * 1000:.1f} ms from the medians, {slope_min * 1000:.1f} ms from the minimums"
            f" (Compose: {cslope * 1000:.0f} ms)",
            "target ≤ 5 ms: " + ("**met**" if slope <= 0.005 else "**NOT met**") + " on the medians",
        ),
        (
            f"sync: … the same `sync` in-process (no start-up): {lo} / {hi} stacks",
            f"{ms(med(inproc[lo]))} / {ms(med(inproc[hi]))}",
            f"{slope_in * 1000:.1f} ms per extra stack",
        ),
        (f"sync: … {hi} previews, no bytecode cache (3 runs)", ms(med(no_pyc)), "compiles every module"),
    ]


def _sync_in_process(config: Path, stacks: int) -> float:
    import argparse
    import contextlib
    import io

    from reconciler import logs
    from reconciler.commands import daemon as commands

    logs.configure()  # as `reconciler sync` does: log lines on stderr
    args = argparse.Namespace(command="sync", config=str(config), targets=[])
    out = io.StringIO()
    start = time.perf_counter()
    with contextlib.redirect_stdout(out):
        commands._sync(args)
    took = time.perf_counter() - start
    if out.getvalue().count(": up to date at") != stacks:
        raise RuntimeError(f"in-process sync of {stacks} unchanged previews did something:\n{out.getvalue()}")
    return took


# --- webhook: push + POST → converged vs a raw docker-py recreate ------------------------------------


def bench_webhook(tmp: Path, rounds: int) -> list[Row]:
    root = tmp / "webhook"
    root.mkdir()
    repo = Repo(root, APP_COMPOSE.format(image=IMAGE, rev=0))
    project = f"{PREFIX}-w-production"
    port = free_port()
    secret = secrets.token_hex(16)
    env = {"branch": "master", "project": project, "compose": ["compose.yaml"], "timeout": "60s"}
    cfg = config_doc(
        root, "webhook", repo.bare, {"production": env}, drift_interval="30s", listen=f"127.0.0.1:{port}"
    )
    doc = yaml.safe_load(cfg.read_text())
    doc["apps"]["bench"]["webhook_secret"] = secret
    cfg.write_text(yaml.safe_dump(doc, sort_keys=False))
    client = docker.from_env()
    api = client.api

    def web_rev() -> str | None:
        try:
            info = api.inspect_container(f"{project}-web-1")
        except docker.errors.NotFound:
            return None
        if not info["State"]["Running"]:
            return None
        return next((e[4:] for e in info["Config"]["Env"] if e.startswith("REV=")), None)

    def post(sha: str) -> None:
        body = json.dumps(
            {"ref": "refs/heads/master", "after": sha, "repository": {"clone_url": str(repo.bare)}}
        ).encode()
        sig = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
        req = urllib.request.Request(
            f"http://127.0.0.1:{port}/hooks/github",
            data=body,
            headers={
                "Content-Type": "application/json",
                "X-GitHub-Event": "push",
                "X-GitHub-Delivery": secrets.token_hex(8),
                "X-Hub-Signature-256": sig,
            },
        )
        with urllib.request.urlopen(req, timeout=10) as resp:
            if resp.status != 202:
                raise RuntimeError(f"webhook answered {resp.status}")

    hook: list[float] = []
    detect: list[float] = []  # POST -> deploy.start: ls-remote, fetch of the branch, checkout, render
    api_seen: list[float] = []
    pushes: list[float] = []
    # The same recreate by hand with docker-py: stop, remove, create, start one container like `web`.
    # Its rounds alternate with the webhook's, so both see the same load on this shared host.
    # Like `web`, it lives on a user-defined bridge network under its service alias (Compose's
    # `PROJECT_default`): starting a container there costs more than on Docker's default bridge.
    name = f"{PREFIX}-raw-web"
    raw: list[float] = []
    host = api.create_host_config(init=True)
    net = f"{PREFIX}-raw_default"
    api.create_network(net, driver="bridge", labels={PROJECT_LABEL: f"{PREFIX}-raw"})
    networking = api.create_networking_config({net: api.create_endpoint_config(aliases=["web"])})

    def make(rev: int) -> None:
        api.create_container(
            IMAGE,
            ["httpd", "-f", "-p", "8080"],
            name=name,
            environment={"REV": str(rev)},
            host_config=host,
            networking_config=networking,
            labels={PROJECT_LABEL: f"{PREFIX}-raw"},
        )
        api.start(name)

    def recreate(rev: int) -> None:
        api.stop(name, timeout=10)
        api.remove_container(name)
        make(rev)

    def webhook_round(d: DaemonProcess, i: int) -> None:
        sha = repo.commit({"compose.yaml": APP_COMPOSE.format(image=IMAGE, rev=i)}, push=False)
        pushes.append(timed(repo.push))
        start = time.perf_counter()
        posted = time.time()
        post(sha)
        wait_for(lambda: web_rev() == str(i), 60, f"round {i}", interval=0.005)
        hook.append(time.perf_counter() - start)
        wait_for(
            lambda: (
                (e := d.environments().get(project))
                and e["deployed_commit"] == sha
                and e["health"] == "Healthy"
            ),
            60,
            f"round {i} in the API",
            interval=0.01,
        )
        api_seen.append(time.perf_counter() - start)
        starts = d.events("deploy.start")
        mine = [log_time(e["timestamp"]) for e in starts if e.get("commit") == sha[:12]]
        detect.append(min(mine) - posted)

    make(0)
    try:
        with _daemon_process(cfg, port) as d:
            wait_for(lambda: web_rev() == "0", 120, "the first deploy")
            for i in range(1, rounds + 1):
                for step in (0, 1) if i % 2 else (1, 0):
                    time.sleep(0.5)
                    if step == 0:
                        webhook_round(d, i)
                    else:
                        raw.append(timed(partial(recreate, i)))
    finally:
        api.remove_container(name, force=True)
        client.close()
    gap = med(hook) - med(raw)
    return [
        (
            f"webhook: webhook POST after a push → the new `web` container runs (`reconciler run`),"
            f" {rounds} rounds",
            spread(hook),
            f"{ms(gap)} over raw docker-py; target ≤ 300 ms: " + ("**met**" if gap <= 0.3 else "**NOT met**"),
        ),
        (
            "webhook: raw docker-py stop + remove + create + start of the same container, on its network",
            spread(raw),
            "baseline",
        ),
        (
            "webhook: … of which POST → `deploy.start` (ls-remote, fetch the branch, checkout, render)",
            spread(detect),
            "the rest is the recreate itself",
        ),
        ("webhook: … until `/api/environments` shows the commit Synced and Healthy", spread(api_seen), ""),
        ("webhook: `git push` to the bare repository (before the POST, not counted)", ms(med(pushes)), ""),
    ]


@contextmanager
def _daemon_process(config: Path, port: int) -> Iterator[DaemonProcess]:
    d = DaemonProcess(config, port)
    try:
        yield d
    finally:
        d.stop()


# --- main -------------------------------------------------------------------------------------------


def cleanup(client: docker.DockerClient) -> None:
    def mine(labels: dict[str, str] | None) -> bool:
        return (labels or {}).get(PROJECT_LABEL, "").startswith(PREFIX)

    listed = client.api.containers(all=True, filters={"label": PROJECT_LABEL})
    ids = [c["Id"] for c in listed if mine(c.get("Labels"))]
    with ThreadPoolExecutor(max_workers=4) as pool:
        list(pool.map(lambda cid: client.api.remove_container(cid, force=True, v=True), ids))
    for n in client.networks.list():
        if (n.name or "").startswith(PREFIX) or mine(n.attrs.get("Labels")):
            try:
                n.remove()
            except docker.errors.APIError as err:
                print(f"cleanup: could not remove network {n.name}: {err}", file=sys.stderr)
    # The per-project flock files (reconciler.daemon.instance.project_lock) outlive their stacks.
    from reconciler.daemon.instance import lock_dir

    for lock in lock_dir().glob(f"{PREFIX}-*.lock"):
        lock.unlink(missing_ok=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--parts", default="cycle,sync,webhook")
    parser.add_argument("--previews", type=int, default=100)
    parser.add_argument("--others", type=int, default=900, help="branches no environment matches")
    parser.add_argument("--cycles", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--profile", action="store_true")
    opts = parser.parse_args()
    parts = opts.parts.split(",")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    client = docker.from_env()
    tmp = Path(tempfile.mkdtemp(prefix=f"{PREFIX}-"))
    rows: list[Row] = []
    loads: list[str] = []
    began = time.perf_counter()
    benches: dict[str, Callable[[], list[Row]]] = {
        "cycle": lambda: bench_cycle(tmp, opts.previews, opts.others, opts.cycles, opts.profile),
        "sync": lambda: bench_sync(tmp, opts.rounds, compose_binary()),
        "webhook": lambda: bench_webhook(tmp, opts.rounds),
    }
    try:
        cleanup(client)  # a run killed with SIGKILL leaves its stacks and the shared network behind
        client.networks.create(SHARED_NETWORK, labels={PROJECT_LABEL: f"{PREFIX}-shared"})
        for part in parts:
            loads.append(f"{part}: " + "/".join(f"{x:.1f}" for x in os.getloadavg()))
            rows += benches[part]()
            cleanup_containers(client)
    finally:
        cleanup(client)
    print(
        f"\n(total {time.perf_counter() - began:.0f} s; load average 1/5/15 min at the start of each part: "
        f"{'; '.join(loads)}; at the end: {'/'.join(f'{x:.1f}' for x in os.getloadavg())}; files in {tmp})\n"
    )
    print("| measurement | result | target / note |")
    print("|---|---|---|")
    for what, value, note in rows:
        print(f"| {what} | {value} | {note} |")


def cleanup_containers(client: docker.DockerClient) -> None:
    listed = client.api.containers(all=True, filters={"label": PROJECT_LABEL})
    ids = [c["Id"] for c in listed if (c.get("Labels") or {}).get(PROJECT_LABEL, "").startswith(PREFIX)]
    with ThreadPoolExecutor(max_workers=4) as pool:
        list(pool.map(lambda cid: client.api.remove_container(cid, force=True, v=True), ids))


if __name__ == "__main__":
    main()
