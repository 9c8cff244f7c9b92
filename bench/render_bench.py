"""Render benchmark: a 15-service project merged from 4 files, in-process vs the compose v2 CLI.

Run: .venv/bin/python bench/render_bench.py [--runs 300] [--cli-runs 20]
Prints the per-render time of ``reconciler.render.render`` (target <= 10 ms) and of
`docker-compose config --format json` on the same files. Not a test: nothing asserts on time.
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
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from reconciler.render import RenderOptions, render
from reconciler.render.loader import clear_cache

SERVICES = [f"svc{i:02d}" for i in range(15)]


def base_file() -> str:
    lines = [
        "name: bench",
        "x-logging: &logging",
        "  driver: json-file",
        "  options: {max-size: 10m}",
        "services:",
    ]
    for i, name in enumerate(SERVICES):
        lines += [
            f"  {name}:",
            f"    image: registry.example.com/{name}:${{TAG:-1.0}}",
            "    restart: unless-stopped",
            "    logging: *logging",
            f'    ports: ["{8000 + i}:80", "127.0.0.1:{9000 + i}:9000/udp"]',
            f"    volumes: [./conf/{name}:/etc/{name}:ro, data:/var/lib/{name}, /tmp/cache]",
            "    environment:",
            f"      SERVICE: {name}",
            "      LOG_LEVEL: ${LOG_LEVEL:-info}",
            "      DATABASE_URL: postgres://db:5432/app",
            "    labels: [com.example.team=platform, com.example.tier=backend]",
            "    healthcheck:",
            '      test: ["CMD", "wget", "-q", "-O-", "http://localhost/health"]',
            "      interval: 30s",
            "      timeout: 5s",
            "      retries: 3",
            "    networks: [front, back]",
        ]
        if i > 0:
            lines.append(f"    depends_on: [{SERVICES[i - 1]}]")
    lines += ["networks:", "  front: {}", "  back: {driver: bridge}", "volumes:", "  data: {}"]
    return "\n".join(lines) + "\n"


def override_file(step: int) -> str:
    lines = ["services:"]
    for i, name in enumerate(SERVICES):
        if (i + step) % 2:
            continue
        lines += [
            f"  {name}:",
            f'    ports: ["{10000 + 100 * step + i}:8080"]',
            "    environment: [FEATURE_FLAG=on, REPLICA=" + str(step) + "]",
            "    labels: {com.example.override: 'yes'}",
            "    command: ['serve', '--port', '8080']",
            "    deploy:",
            "      resources:",
            "        limits: {cpus: '0.50', memory: 256M}",
        ]
        if step == 3:
            lines.append("    healthcheck: {test: ['CMD-SHELL', 'exit 0'], interval: 10s}")
    return "\n".join(lines) + "\n"


def write_project(root: Path) -> list[str]:
    files = {"compose.yaml": base_file()}
    for step in (1, 2, 3):
        files[f"override{step}.yaml"] = override_file(step)
    for name, text in files.items():
        (root / name).write_text(text)
    (root / ".env").write_text("TAG=2.3\nLOG_LEVEL=debug\n")
    return list(files)


def compose_binary() -> str:
    spec = importlib.util.find_spec("compose")
    assert spec is not None and spec.submodule_search_locations
    return str(Path(next(iter(spec.submodule_search_locations))) / "docker-compose")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=300)
    parser.add_argument("--cli-runs", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "bench"
        root.mkdir()
        files = write_project(root)
        env = {"PATH": os.environ.get("PATH", ""), "HOME": os.environ.get("HOME", "/root")}
        opts = RenderOptions(files=tuple(files), environ=env, working_dir=str(root))
        project = render(opts)  # warm-up (imports, regex compilation)
        samples = []  # files unchanged since the last render: parsed documents are reused
        cold = []  # parse cache emptied first: every file is read and parsed again
        cpu = {"unchanged files": 0.0, "cold, no parse cache": 0.0}  # CPU time: robust to a busy host
        for _ in range(args.runs):
            start, start_cpu = time.perf_counter(), time.process_time()
            render(opts)
            samples.append((time.perf_counter() - start) * 1000)
            cpu["unchanged files"] += time.process_time() - start_cpu
            clear_cache()
            start, start_cpu = time.perf_counter(), time.process_time()
            render(opts)
            cold.append((time.perf_counter() - start) * 1000)
            cpu["cold, no parse cache"] += time.process_time() - start_cpu
        cli = []
        command = [compose_binary()]
        for name in files:
            command += ["-f", name]
        command += ["config", "--format", "json"]
        for _ in range(args.cli_runs):
            start = time.perf_counter()
            subprocess.run(command, cwd=root, env=env, capture_output=True, check=True)
            cli.append((time.perf_counter() - start) * 1000)
    services = len(project.model["services"])
    print(f"project: {services} services, {len(files)} files ({', '.join(files)})")
    for label, values in (("unchanged files", samples), ("cold, no parse cache", cold)):
        print(
            f"reconciler render, {label} ({args.runs} runs): median {statistics.median(values):.2f} ms, "
            f"p95 {sorted(values)[int(len(values) * 0.95) - 1]:.2f} ms, min {min(values):.2f} ms, "
            f"CPU {cpu[label] / args.runs * 1000:.2f} ms/render"
        )
    print(
        f"docker-compose config (CLI, {args.cli_runs} runs):  median {statistics.median(cli):.1f} ms, "
        f"min {min(cli):.1f} ms"
    )


if __name__ == "__main__":
    main()
