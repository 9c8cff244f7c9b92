"""Converge benchmarks (issue 3), side by side with Docker Compose v2 and raw docker-py; not a test.

    .venv/bin/python bench/converge_bench.py [--projects 20] [--rounds 7]

(a) no-op check of N converged projects in one process (one container-list call) vs a Compose `up -d` loop;
(b) a fresh 2-service stack: Converger.up vs raw docker-py create+start vs Compose `up -d`;
(c) CLI start-up: `python -m reconciler --help`, `reconciler plan` on an up-to-date project, `import docker`.
Prints a markdown table for docs/benchmarks.md. Everything it creates is named `tcvb-*` and removed.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import docker

from reconciler import labels as L
from reconciler.converge import Converger
from reconciler.engine import DockerEngine
from reconciler.render import RenderedProject, RenderOptions, render

IMAGE = "reconciler-test/busybox:latest"
COMPOSE_FILE = f"""
services:
  web:
    image: {IMAGE}
    init: true
    command: ["sleep", "3600"]
    environment: {{ROLE: web}}
  worker:
    image: {IMAGE}
    init: true
    command: ["sleep", "3600"]
    environment: {{ROLE: worker}}
"""
# (a) needs 2 x N projects at once: they share one external network, because Docker's default address
# pools hold only ~31 bridge networks per host (and other test runs need some too).
SHARED_NETWORK = "tcvb-shared"
NOOP_FILE = COMPOSE_FILE + f"networks:\n  default:\n    name: {SHARED_NETWORK}\n    external: true\n"


def compose_binary() -> str:
    spec = importlib.util.find_spec("compose")
    assert spec is not None and spec.submodule_search_locations
    return str(Path(spec.submodule_search_locations[0]) / "docker-compose")


def run(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None) -> None:
    subprocess.run(args, check=True, capture_output=True, cwd=cwd, env=env)


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def median_ms(samples: list[float]) -> str:
    return f"{statistics.median(samples) * 1000:.0f} ms"


def rendered(directory: Path, name: str, file: str = "compose.yaml") -> RenderedProject:
    files = (str(directory / file),)
    return render(
        RenderOptions(
            files=files, project_directory=str(directory), project_name=name, environ=dict(os.environ)
        )
    )


def raw_up(api: docker.APIClient, name: str) -> None:
    """What a bare docker-py deploy of the same stack does: a network, then create+start each container."""
    net = f"{name}_default"
    api.create_network(net, labels={L.PROJECT: name})
    for service in ("web", "worker"):
        cname = f"{name}-{service}-1"
        host = api.create_host_config(init=True, network_mode=net)
        networking = api.create_networking_config({net: api.create_endpoint_config(aliases=[service, cname])})
        api.create_container(
            IMAGE,
            ["sleep", "3600"],
            name=cname,
            environment={"ROLE": service},
            labels={L.PROJECT: name, L.SERVICE: service, L.CONTAINER_NUMBER: "1"},
            host_config=host,
            networking_config=networking,
        )
        api.start(cname)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--projects", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=7)
    opts = parser.parse_args()
    compose = compose_binary()
    api = docker.APIClient(version="auto")
    converger = Converger(DockerEngine())
    tmp = Path(tempfile.mkdtemp(prefix="tcvb-"))
    (tmp / "compose.yaml").write_text(COMPOSE_FILE)
    (tmp / "noop.yaml").write_text(NOOP_FILE)
    api.create_network(SHARED_NETWORK)
    ours = [f"tcvb-r{i:02d}" for i in range(opts.projects)]
    theirs = [f"tcvb-c{i:02d}" for i in range(opts.projects)]
    rows: list[tuple[str, str, str]] = []
    try:
        # --- (a) no-op check of N converged projects ---
        projects = {name: rendered(tmp, name, "noop.yaml") for name in ours}
        for project in projects.values():
            converger.up(project)
        for name in theirs:
            run(compose, "-p", name, "-f", "noop.yaml", "up", "-d", cwd=tmp)

        def noop_check() -> None:
            live = converger.observe(ours)  # one container-list call for all of them
            for name, project in projects.items():
                assert converger.plan(project, live[name]).is_noop

        def render_all() -> None:
            for name in ours:
                rendered(tmp, name, "noop.yaml")

        ours_noop = [timed(noop_check) for _ in range(opts.rounds)]
        ours_render = [timed(render_all) for _ in range(opts.rounds)]

        def compose_loop() -> None:
            for name in theirs:
                run(compose, "-p", name, "-f", "noop.yaml", "up", "-d", cwd=tmp)

        theirs_noop = [timed(compose_loop) for _ in range(2)]
        n = opts.projects
        rows += [
            (
                f"(a) no-op check of {n} projects: observe + plan (1 list call)",
                median_ms(ours_noop),
                "target <= 100 ms",
            ),
            (
                f"(a) ... plus rendering the {n} projects",
                median_ms([a + b for a, b in zip(ours_noop, ours_render, strict=False)]),
                "",
            ),
            (
                f"(a) Compose v2 `up -d` loop over {n} converged projects",
                median_ms(theirs_noop),
                "issue: ~2.4 s",
            ),
        ]
        for name in ours:
            converger.down(name, timeout=1)
        for name in theirs:
            run(compose, "-p", name, "down", "-t", "1", cwd=tmp)

        # --- (b) fresh 2-service stack ---
        fresh: dict[str, list[float]] = {"ours": [], "raw": [], "compose": []}
        for i in range(opts.rounds):  # interleaved, so a slow moment of the engine hits all three
            name = f"tcvb-f{i:02d}"
            project = rendered(tmp, f"{name}o")
            fresh["ours"].append(timed(lambda p=project: converger.up(p)))  # type: ignore[misc]
            fresh["raw"].append(timed(lambda n=f"{name}r": raw_up(api, n)))  # type: ignore[misc]
            cmd = (compose, "-p", f"{name}c", "-f", "compose.yaml", "up", "-d")
            fresh["compose"].append(timed(lambda c=cmd: run(*c, cwd=tmp)))  # type: ignore[misc]
            for suffix in "orc":
                converger.down(f"{name}{suffix}", timeout=1)
        ratio = statistics.median(fresh["ours"]) / statistics.median(fresh["raw"])
        rows += [
            (
                "(b) fresh 2-service stack: Converger.up",
                median_ms(fresh["ours"]),
                f"{ratio:.2f}x raw (target <= 1.3x)",
            ),
            ("(b) raw docker-py: network + create + start x2", median_ms(fresh["raw"]), ""),
            ("(b) Compose v2 `up -d`", median_ms(fresh["compose"]), ""),
        ]

        # --- (c) CLI start-up ---
        # This machine sets PYTHONDONTWRITEBYTECODE=1, so every run compiles our sources; an installed
        # package ships .pyc files. Measure both: as configured, and with the bytecode cache (warmed once).
        converger.up(projects[ours[0]])
        py = sys.executable
        cached = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
        cli = (py, "-m", "reconciler", "plan", "-f", "noop.yaml", "-p", ours[0])
        run(*cli, cwd=tmp, env=cached)
        run(py, "-m", "reconciler", "--help", env=cached)
        for label, env in (("no .pyc", None), ("with .pyc", cached)):
            help_ = [
                timed(lambda e=env: run(py, "-m", "reconciler", "--help", env=e)) for _ in range(opts.rounds)
            ]  # type: ignore[misc]
            plan = [timed(lambda e=env: run(*cli, cwd=tmp, env=e)) for _ in range(opts.rounds)]  # type: ignore[misc]
            rows += [
                (f"(c) `python -m reconciler --help` ({label})", median_ms(help_), ""),
                (f"(c) `reconciler plan` on an up-to-date project ({label})", median_ms(plan), "exit 0"),
            ]
        imp = [timed(lambda: run(py, "-c", "import docker")) for _ in range(opts.rounds)]
        bare = [timed(lambda: run(py, "-c", "pass")) for _ in range(opts.rounds)]
        run(compose, "-p", theirs[0], "-f", "noop.yaml", "up", "-d", cwd=tmp)
        one = [
            timed(lambda: run(compose, "-p", theirs[0], "-f", "noop.yaml", "up", "-d", cwd=tmp))
            for _ in range(3)
        ]
        rows += [
            ("(c) `python -c 'import docker'`", median_ms(imp), "paid by up/plan/down only, never by render"),
            ("(c) `python -c pass`", median_ms(bare), "the interpreter alone"),
            ("(c) Compose v2 `up -d` on one up-to-date project", median_ms(one), ""),
        ]
    finally:
        for name in [*ours, *theirs]:
            converger.down(name, timeout=1)
        api.remove_network(SHARED_NETWORK)
    print("| measurement | median | note |\n|---|---|---|")
    for what, value, note in rows:
        print(f"| {what} | {value} | {note} |")


if __name__ == "__main__":
    main()
