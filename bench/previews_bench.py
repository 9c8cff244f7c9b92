"""100 live previews on one host, each on its own bridge network from `networks_pool`; not a test.

    .venv/bin/python bench/previews_bench.py [--previews 100] [--pool 10.247.0.0/16] [--cycles 15] [--keep]
    .venv/bin/python bench/previews_bench.py --cleanup tpvXXXXXX     # remove what a --keep run left

1. `reconciler run` (a subprocess) brings up N previews from N branches `preview/NNN` of a bare repository
   (`branches: ["*"]`, `ephemeral`, one busybox httpd each, no published port); checked: every container
   runs, every preview has exactly one network, its subnet is a /24 inside the pool and no two are alike;
2. then a persistent environment (production, from a `production` branch pushed only now, on Docker's
   default address pools) must still be able to create its network;
3. the daemon's RSS and CPU with N live previews; the daemon is then stopped and a no-op cycle
   (`poll()` + `check_drift()`) is timed in-process on the same state_dir, as bench/daemon_bench.py does;
4. `reconciler run` again: the restart must redeploy nothing; the N branches are deleted and the daemon's
   own sweep must remove every container, network, volume, checkout and state row of the previews.
Prints a markdown table for docs/benchmarks.md. Everything is named `tpv<6 hex>-*` and removed at the end,
also on failure, SIGTERM or Ctrl-C (unless --keep).
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import re
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import docker
import yaml
from daemon_bench import IMAGE, DaemonProcess, free_port, git, log_time, ms, pct, timed

PROJECT_LABEL = "com.docker.compose.project"
APP = "bench"
PREVIEW_COMPOSE = f"""\
services:
  web:
    image: {IMAGE}
    init: true
    command: ["httpd", "-f", "-p", "8080"]
"""
Row = tuple[str, str, str]


class BenchFailure(RuntimeError):
    """The product did not do what the bench checks; the message says what, with Docker's words."""


# --- the host ---------------------------------------------------------------------------------------


def host_subnets(client: docker.DockerClient) -> dict[str, str]:
    """Every IPv4 subnet on this host, Docker's networks' and the kernel's routes -> who uses it."""
    used: dict[str, str] = {}
    for net in client.api.networks():
        for cfg in (net.get("IPAM") or {}).get("Config") or ():
            if cfg and cfg.get("Subnet"):
                used[cfg["Subnet"]] = f"docker network {net['Name']}"
    routes = subprocess.run(["ip", "-4", "route", "show"], capture_output=True, text=True, check=True)
    for line in routes.stdout.splitlines():
        dest = line.split()[0]
        if dest != "default":
            used.setdefault(dest if "/" in dest else f"{dest}/32", f"route `{line.strip()}`")
    return used


def check_pool(client: docker.DockerClient, pool: ipaddress.IPv4Network) -> None:
    for cidr, who in host_subnets(client).items():
        try:
            net = ipaddress.ip_network(cidr, strict=False)
        except ValueError:
            continue
        if net.version == 4 and net.overlaps(pool):
            raise SystemExit(f"--pool {pool} overlaps {cidr} ({who}): choose another range")


def mine(labels: dict[str, str] | None, prefix: str) -> bool:
    return (labels or {}).get(PROJECT_LABEL, "").startswith(f"{prefix}-")


def leftovers(client: docker.DockerClient, prefix: str) -> dict[str, list[str]]:
    """Containers, networks and volumes of `prefix-*` projects that still exist."""
    api = client.api
    flt = {"label": PROJECT_LABEL}
    return {
        "containers": [
            c["Names"][0].lstrip("/")
            for c in api.containers(all=True, filters=flt)
            if mine(c["Labels"], prefix)
        ],
        "networks": [n["Name"] for n in api.networks(filters=flt) if mine(n.get("Labels"), prefix)],
        "volumes": [
            v["Name"] for v in api.volumes(filters=flt).get("Volumes") or () if mine(v.get("Labels"), prefix)
        ],
    }


def cleanup(client: docker.DockerClient, prefix: str) -> dict[str, list[str]]:
    """Remove everything of the `prefix-*` projects and their lock files; return what could not go."""
    left = leftovers(client, prefix)
    api = client.api
    with ThreadPoolExecutor(max_workers=4) as pool:
        list(pool.map(lambda name: api.remove_container(name, force=True, v=True), left["containers"]))
    for name in left["networks"]:
        try:
            api.remove_network(name)
        except docker.errors.APIError as err:
            print(f"cleanup: could not remove network {name}: {err}", file=sys.stderr)
    for name in left["volumes"]:
        api.remove_volume(name, force=True)
    # The per-project flock files (reconciler.daemon.instance.project_lock) outlive their stacks.
    from reconciler.daemon.instance import lock_dir

    for lock in lock_dir().glob(f"{prefix}-*.lock"):
        lock.unlink(missing_ok=True)
    return {kind: names for kind, names in leftovers(client, prefix).items() if names}


# --- the repository and the configuration ------------------------------------------------------------


def make_repo(root: Path, branches: list[str]) -> tuple[Path, str]:
    """A bare repository holding only `branches`, one commit each on a common base (one fast-import).

    No `master`: `branches: ["*"]` must see exactly the previews, and production's branch comes later."""
    bare = root / "app.git"
    git("init", "-q", "--bare", str(bare))
    now = int(time.time())
    stream = [
        "commit refs/tags/base",
        "mark :1",
        f"committer bench <bench@example.org> {now} +0000",
        "data 4",
        "base",
        f"M 644 inline compose.yaml\ndata {len(PREVIEW_COMPOSE)}\n{PREVIEW_COMPOSE}",
        "",
    ]
    for name in branches:
        stream += [
            f"commit refs/heads/{name}",
            f"committer bench <bench@example.org> {now} +0000",
            f"data {len(name)}",
            name,
            "from :1",
            f"M 644 inline BRANCH\ndata {len(name)}\n{name}",
            "",
        ]
    git("fast-import", "--quiet", cwd=bare, stdin="\n".join(stream) + "\n")
    return bare, git("rev-parse", "refs/tags/base^{commit}", cwd=bare)


def write_config(root: Path, bare: Path, port: int, prefix: str, pool: str) -> Path:
    doc = {
        "state_dir": str(root / "state"),
        "listen": f"127.0.0.1:{port}",
        "drift_interval": "1s",
        "networks_pool": pool,
        "apps": {
            APP: {
                "repo": str(bare),
                "poll_interval": "2s",
                "environments": {
                    "production": {
                        "branch": "production",
                        "project": f"{prefix}-production",
                        "compose": ["compose.yaml"],
                        "timeout": "120s",
                    },
                    "preview": {
                        "branches": ["*"],
                        "project": f"{prefix}-{{branch}}",
                        "compose": ["compose.yaml"],
                        "ephemeral": True,
                        "timeout": "120s",
                        "policy": {"external": True},  # the shared external network
                    },
                },
            }
        },
    }
    path = root / "environments.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


# --- waiting on the daemon's API ---------------------------------------------------------------------


def previews_of(d: DaemonProcess, prefix: str) -> dict[str, dict[str, Any]]:
    return {p: e for p, e in d.environments().items() if p.startswith(f"{prefix}-preview-")}


def wait_converged(d: DaemonProcess, projects: set[str], timeout: float) -> None:
    """Until every project in `projects` is Synced and Healthy; a failed deploy stops the wait at once."""
    deadline = time.monotonic() + timeout
    while True:
        envs = d.environments()
        ready = {
            p for p in projects if envs.get(p, {}).get("sync") == "Synced" and envs[p]["health"] == "Healthy"
        }
        if ready == projects:
            return
        failed = {
            p: envs[p]["error"]
            for p in projects - ready
            if p in envs and envs[p]["error"] and envs[p].get("failed_commit")
        }
        if failed or time.monotonic() > deadline:
            missing = {
                p: (envs[p]["sync"], envs[p]["health"], envs[p]["error"]) if p in envs else "not listed"
                for p in sorted(projects - ready)
            }
            what = "failed" if failed else f"not converged after {timeout:.0f} s"
            sample = dict(list(failed.items() if failed else missing.items())[:5])
            raise BenchFailure(
                f"{len(projects) - len(ready)} of {len(projects)} environments {what}, e.g. {sample}"
            )
        time.sleep(0.5)


def preview_objects(client: docker.DockerClient, prefix: str) -> list[str]:
    """The previews' containers, networks and volumes still in Docker."""
    return [
        f"{kind[:-1]} {name}"
        for kind, names in leftovers(client, prefix).items()
        for name in names
        if name.startswith(f"{prefix}-preview-")
    ]


def log_problems(log: Path) -> str:
    """Warnings and errors in the daemon's log (JSON from structlog, plain lines from APScheduler)."""
    seen: Counter[str] = Counter()
    for line in log.read_text().splitlines():
        if line.startswith("{"):
            entry = json.loads(line)
            if entry.get("level") in ("warning", "error", "critical"):
                seen[f"{entry['level']} {entry.get('event')}"] += 1
        elif line.strip():
            seen[re.sub(r'"[^"]*"|\d+', "…", line.strip())[:90]] += 1
    return "; ".join(f"{n} x `{what}`" for what, n in seen.most_common()) or "none"


def count_events(d: DaemonProcess, name: str) -> int:
    return len(d.events(name))


# --- the checks --------------------------------------------------------------------------------------


def check_previews(
    client: docker.DockerClient, projects: set[str], pool: ipaddress.IPv4Network
) -> dict[str, ipaddress.IPv4Network]:
    """Every preview runs one container, on one network of its own whose subnet is a /24 of the pool."""
    api = client.api
    flt = {"label": PROJECT_LABEL}
    containers = [c for c in api.containers(all=True, filters=flt) if c["Labels"][PROJECT_LABEL] in projects]
    networks = [n for n in api.networks(filters=flt) if n["Labels"][PROJECT_LABEL] in projects]
    problems: list[str] = []
    by_project: dict[str, list[dict[str, Any]]] = {}
    for c in containers:
        by_project.setdefault(c["Labels"][PROJECT_LABEL], []).append(c)
    for p in sorted(projects):
        states = [c["State"] for c in by_project.get(p, [])]
        if states != ["running"]:
            problems.append(f"{p}: containers {states}")
    subnets: dict[str, ipaddress.IPv4Network] = {}
    for n in networks:
        project = n["Labels"][PROJECT_LABEL]
        cfg = (n.get("IPAM") or {}).get("Config") or []
        if project in subnets:
            problems.append(f"{project}: a second network {n['Name']}")
        elif len(cfg) != 1 or not cfg[0].get("Subnet"):
            problems.append(f"{project}: network {n['Name']} has IPAM config {cfg}")
        else:
            subnets[project] = ipaddress.ip_network(cfg[0]["Subnet"])
    for p in sorted(projects - subnets.keys()):
        problems.append(f"{p}: no network")
    for p, net in subnets.items():
        if net.prefixlen != 24 or not net.subnet_of(pool):
            problems.append(f"{p}: subnet {net} is not a /24 of {pool}")
    if len(set(subnets.values())) != len(subnets):
        problems.append(f"{len(subnets) - len(set(subnets.values()))} subnets are used twice")
    # ... and each container's address is on its own project's network.
    for p, cs in by_project.items():
        for c in cs:
            ips = [e.get("IPAddress") for e in (c["NetworkSettings"]["Networks"] or {}).values()]
            if p in subnets and not any(ip and ipaddress.ip_address(ip) in subnets[p] for ip in ips):
                problems.append(f"{p}: container addresses {ips} are outside {subnets[p]}")
    if problems:
        raise BenchFailure(f"{len(problems)} problems with the previews, e.g. {problems[:5]}")
    return subnets


def check_gone(client: docker.DockerClient, prefix: str, state_dir: Path, keep: str) -> list[str]:
    """What is left of the previews (every project of `prefix` but `keep`): Docker objects, checkouts,
    state rows, branch assignments."""
    left = [
        f"{kind[:-1]} {name}"
        for kind, names in leftovers(client, prefix).items()
        for name in names
        if not name.startswith(keep)
    ]
    checkouts = state_dir / "checkouts"
    left += [f"checkout {e.name}" for e in checkouts.iterdir() if not e.name.lstrip(".").startswith(keep)]
    from reconciler.state import State

    state = State.open(state_dir)
    try:
        left += [f"state row {r.project}" for r in state.environments() if r.project != keep]
        left += [f"assignment {b} -> {p}" for b, p in state.assignments(APP).items() if p != keep]
    finally:
        state.close()
    return left


# --- the parts ---------------------------------------------------------------------------------------


def sample_steady(d: DaemonProcess, seconds: int = 10) -> tuple[dict[str, int], list[int], float]:
    """VmRSS every second for `seconds`, and the CPU share over the window."""
    cpu0, t0 = d.cpu_seconds(), time.monotonic()
    samples = []
    for _ in range(seconds):
        time.sleep(1)
        samples.append(d.proc_status()["VmRSS"])
    cpu = (d.cpu_seconds() - cpu0) / (time.monotonic() - t0)
    return d.proc_status(), samples, cpu


def noop_cycles(config: Path, cycles: int, log: Path) -> tuple[list[float], list[float], int]:
    """In-process, as bench/daemon_bench.py part 2: `poll()` + `check_drift()` on the live previews.

    Returns the poll and drift times and how many deploys the cycles started (must be 0)."""
    import structlog

    from reconciler import logs
    from reconciler.commands.daemon import _daemon
    from reconciler.config import load_config

    logs.configure(json=True)
    with log.open("w") as out:
        structlog.configure(logger_factory=structlog.PrintLoggerFactory(out))
        daemon = _daemon(load_config(config), metrics=True)
        try:
            before = {s.project: s.last_deploy.id if s.last_deploy else None for s in daemon.environments()}
            daemon.poll(APP)  # warm: after a restart the first cycle renders each checkout once
            daemon.check_drift()
            daemon.queue.wait_idle()
            polls: list[float] = []
            drifts: list[float] = []
            for _ in range(cycles):
                polls.append(timed(lambda: daemon.poll(APP)))
                drifts.append(timed(daemon.check_drift))
            daemon.queue.wait_idle()
            after = {s.project: s.last_deploy.id if s.last_deploy else None for s in daemon.environments()}
        finally:
            daemon.queue.shutdown(cancel=True)
            daemon.state.close()
    return polls, drifts, sum(1 for p, i in after.items() if before.get(p) != i)


def run_bench(opts: argparse.Namespace, client: docker.DockerClient, prefix: str, tmp: Path) -> list[Row]:
    pool = ipaddress.ip_network(opts.pool)
    assert isinstance(pool, ipaddress.IPv4Network)
    n = opts.previews
    branches = [f"preview/{i:03d}" for i in range(n)]
    projects = {f"{prefix}-preview-{i:03d}" for i in range(n)}
    production = f"{prefix}-production"
    bare, base = make_repo(tmp, branches)
    port = free_port()
    config = write_config(tmp, bare, port, prefix, opts.pool)
    state_dir = tmp / "state"
    rows: list[Row] = []

    # 1. bring-up by `reconciler run`
    start = time.perf_counter()
    d = DaemonProcess(config, port)
    try:
        wait_converged(d, projects, timeout=60 + 5 * n)
        bring_up = time.perf_counter() - start
        began = {e["project"]: log_time(e["timestamp"]) for e in d.events("deploy.start")}
        done = {e["project"]: log_time(e["timestamp"]) for e in d.events("deploy.done")}
        per = [done[p] - began[p] for p in projects if p in began and p in done]
        subnets = check_previews(client, projects, pool)
        rows += [
            (
                f"1. bring-up of {n} previews by `reconciler run`: start → all `Synced`/`Healthy` in the API",
                f"**{bring_up:.0f} s** ({bring_up / n * 1000:.0f} ms per preview)",
                "`max_concurrent_deploys: 2`, includes the daemon's start",
            ),
            (
                "1. ... one preview's deploy (`deploy.start` → `deploy.done`: network + create + start)",
                f"{ms(statistics.median(per))} median, p95 {ms(pct(per, 0.95))}, max {ms(max(per))}",
                f"{len(per)} deploys",
            ),
            (
                f"1. ... checked: {n} containers running, {len(subnets)} networks, one per preview",
                f"{len(set(subnets.values()))} distinct /24s",
                f"{min(subnets.values())} … {max(subnets.values())}, all inside {pool}",
            ),
        ]

        # 3a. RSS with N live previews (10 s of drift checks every 1 s and polls every 2 s)
        final, samples, cpu = sample_steady(d)
        rows += [
            (
                f"3. daemon RSS with {n} live previews (after 10 s steady state)",
                f"**{final['VmRSS'] / 1024:.1f} MB**",
                f"max sampled {max(samples) / 1024:.1f} MB; peak (VmHWM) {final['VmHWM'] / 1024:.1f} MB, "
                f"{final['Threads']} threads",
            ),
            ("3. ... CPU in that steady state", f"{cpu * 100:.1f} % of one core", "drift 1 s, poll 2 s"),
        ]

        # 2. a persistent environment still gets a network from Docker's default pools
        git("update-ref", "refs/heads/production", base, cwd=bare)
        t0 = time.perf_counter()
        wait_converged(d, {production}, timeout=120)
        prod_time = time.perf_counter() - t0
        nets = client.api.networks(filters={"label": f"{PROJECT_LABEL}={production}"})
        prod_subnets = [c["Subnet"] for net in nets for c in (net.get("IPAM") or {}).get("Config") or ()]
        if len(prod_subnets) != 1 or ipaddress.ip_network(prod_subnets[0]).overlaps(pool):
            raise BenchFailure(f"production's networks have subnets {prod_subnets}, want one outside {pool}")
        rows.append(
            (
                f"2. then production (persistent) from a new branch, with {n} previews live",
                f"converged in {ms(prod_time)}",
                f"its network got {prod_subnets[0]} from Docker's default pools",
            )
        )
        wait_converged(d, projects, timeout=30)  # still all there
    finally:
        d.stop()

    # 3b. no-op cycle, in-process on the same state_dir (the daemon is stopped: one process acts at a time)
    polls, drifts, started = noop_cycles(config, opts.cycles, tmp / "noop.log")
    if started:
        raise BenchFailure(f"{started} no-op cycles started a deploy")
    cycle = [p + dr for p, dr in zip(polls, drifts, strict=True)]
    med = statistics.median
    rows += [
        (
            f"3. no-op cycle with {n} live previews + production: `poll()` + `check_drift()`, "
            f"{opts.cycles} cycles",
            f"**{ms(med(cycle))}** median, p95 {ms(pct(cycle, 0.95))}, min {ms(min(cycle))}",
            "goal ≤ 200 ms: " + ("met" if med(cycle) <= 0.2 else "NOT met"),
        ),
        ("3. ... `poll()`", f"{ms(med(polls))} (p95 {ms(pct(polls, 0.95))})", "ls-remote, assign, sweep"),
        ("3. ... `check_drift()`", f"{ms(med(drifts))} (p95 {ms(pct(drifts, 0.95))})", "1 list call, plans"),
    ]
    if opts.keep:
        return [*rows, ("5. daemon log: warnings and errors", log_problems(d.log), "")]

    # 4. restart, then delete the branches: the daemon's sweep removes every preview
    t0 = time.perf_counter()
    d = DaemonProcess(config, port)
    try:
        deploys = count_events(d, "deploy.start")
        wait_converged(d, {*projects, production}, timeout=60 + n)
        restart = time.perf_counter() - t0
        time.sleep(3)  # a few more polls and drift checks
        if count_events(d, "deploy.start") != deploys:
            raise BenchFailure("the restart redeployed live environments")
        rows.append(
            (
                f"4. `reconciler run` restarted on {n} live previews: start → all `Synced`/`Healthy`",
                ms(restart),
                "nothing redeployed",
            )
        )
        stdin = "".join(f"delete refs/heads/{b}\n" for b in branches)
        git("update-ref", "--stdin", cwd=bare, stdin=stdin)
        t0 = time.perf_counter()
        deadline = time.monotonic() + 60 + 3 * n
        while previews_of(d, prefix) or preview_objects(client, prefix):
            if time.monotonic() > deadline:
                raise BenchFailure(
                    f"{len(previews_of(d, prefix))} previews still listed after the branches were deleted; "
                    f"Docker objects left: {preview_objects(client, prefix)[:5]}"
                )
            time.sleep(0.5)
        sweep = time.perf_counter() - t0
        time.sleep(3)  # let a last poll run: nothing must come back
        failed = [e.get("error") for e in d.events("teardown.failed")]
    finally:
        d.stop()
    left = check_gone(client, prefix, state_dir, production)
    if failed or left:
        raise BenchFailure(f"teardown left {left[:10]} ({len(left)} in all); teardown.failed: {failed[:3]}")
    rows.append(
        (
            f"4. {n} branches deleted → the daemon's sweep removed every preview",
            f"**{sweep:.0f} s** ({sweep / n * 1000:.0f} ms per preview)",
            "checked: no container, network, volume, checkout, state row or assignment left",
        )
    )
    return [*rows, ("5. daemon log (both runs): warnings and errors", log_problems(d.log), "")]


# --- main -------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--previews", type=int, default=100, help="live previews to bring up")
    parser.add_argument("--pool", default="10.247.0.0/16", help="networks_pool (must be free on this host)")
    parser.add_argument("--cycles", type=int, default=15, help="timed no-op cycles")
    parser.add_argument("--keep", action="store_true", help="leave the previews running for inspection")
    parser.add_argument("--cleanup", metavar="PREFIX", help="only remove what a --keep run named PREFIX left")
    opts = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))  # a SIGTERM to the bench must still clean up
    client = docker.from_env()
    if opts.cleanup:
        if not re.fullmatch(r"tpv[0-9a-f]{6}", opts.cleanup):
            raise SystemExit(
                f"--cleanup takes a prefix this bench printed (tpv + 6 hex), not {opts.cleanup!r}"
            )
        left = cleanup(client, opts.cleanup)
        for kept in Path(tempfile.gettempdir()).glob(f"{opts.cleanup}-*"):
            shutil.rmtree(kept, ignore_errors=True)
        raise SystemExit(f"left behind: {left}" if left else 0)
    pool = ipaddress.ip_network(opts.pool)
    if not isinstance(pool, ipaddress.IPv4Network) or pool.prefixlen > 24:
        raise SystemExit("--pool must be an IPv4 network of /24 or larger")
    if opts.previews > pool.num_addresses // 256:
        raise SystemExit(f"--pool {pool} holds only {pool.num_addresses // 256} /24 networks")
    check_pool(client, pool)
    prefix = f"tpv{secrets.token_hex(3)}"
    tmp = Path(tempfile.mkdtemp(prefix=f"{prefix}-"))
    began = time.perf_counter()
    ok = False
    rows: list[Row] = []
    try:
        rows = run_bench(opts, client, prefix, tmp)
        ok = True
    finally:
        if opts.keep and ok:
            print(
                f"\nkept: projects {prefix}-*, files in {tmp}; remove them with\n"
                f"  .venv/bin/python bench/previews_bench.py --cleanup {prefix}"
            )
        else:
            left = cleanup(client, prefix)
            if left:
                print(f"cleanup left behind: {left}", file=sys.stderr)
            if ok:
                shutil.rmtree(tmp, ignore_errors=True)
            else:
                print(f"files (daemon log: environments.log) kept in {tmp}", file=sys.stderr)
    load = "/".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"\n(total {time.perf_counter() - began:.0f} s; load average {load} at the end; prefix {prefix})\n")
    print("| measurement | result | note |")
    print("|---|---|---|")
    for what, value, note in sorted(rows, key=lambda r: r[0][0]):
        print(f"| {what} | {value} | {note} |")


if __name__ == "__main__":
    main()
