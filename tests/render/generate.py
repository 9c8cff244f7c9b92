"""Seeded generator of random multi-file compose projects for the differential oracle test.

Each project has a base file declaring every service, network and volume, then 1-3 override files
that change ports, volumes, environment (list and map), labels, depends_on, command, healthcheck...
with interpolation from the environment and `.env`, and the odd `!reset` / `!override`; in some
projects the base file is a sub-project the main file `include`s.
"""

from __future__ import annotations

import random
from typing import Any

import yaml

from tests.render.harness import Case

SERVICES = ["web", "api", "db", "cache", "worker"]
NETWORKS = ["front", "back"]
VOLUMES = ["data", "logs", "media"]
ENV = {"TAG": "1.25", "PORT": "8081", "EMPTY": "", "GREETING": "hello world", "USER_ID": "1000"}
DOTENV = 'DOTENV_VAR=from-dotenv\nPORT=9999\nQUOTED="a b"\n'


def _dumper() -> type[yaml.SafeDumper]:
    class Dumper(yaml.SafeDumper):
        def ignore_aliases(self, data: Any) -> bool:
            return True

    return Dumper


class Tag:
    def __init__(self, tag: str, value: Any) -> None:
        self.tag = tag
        self.value = value


def _represent_tag(dumper: yaml.SafeDumper, data: Tag) -> yaml.Node:
    if isinstance(data.value, list):
        return dumper.represent_sequence(data.tag, data.value)
    if isinstance(data.value, dict):
        return dumper.represent_mapping(data.tag, data.value)
    return dumper.represent_scalar(data.tag, "" if data.value is None else str(data.value))


class Generator:
    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.seed = seed

    def pick(self, options: list[Any]) -> Any:
        return self.rng.choice(options)

    def chance(self, p: float) -> bool:
        return self.rng.random() < p

    def some(self, options: list[Any], low: int = 1, high: int = 3) -> list[Any]:
        return self.rng.sample(options, self.rng.randint(low, min(high, len(options))))

    # -- values ---------------------------------------------------------------------------------

    def port(self) -> Any:
        target = self.pick([80, 443, 5432, 6379, 8080, 9000])
        return self.pick(
            [
                f"{self.rng.randint(8000, 8010)}:{target}",
                target,
                str(target),
                f"127.0.0.1:{self.rng.randint(9000, 9005)}:{target}/udp",
                "${PORT:-5000}:" + str(target),
                f"{self.rng.randint(7000, 7002)}-{self.rng.randint(7003, 7004)}:{target}",
                {"target": target, "published": str(self.rng.randint(6000, 6005)), "protocol": "tcp"},
                {"target": target, "published": self.rng.randint(6000, 6005), "host_ip": "0.0.0.0"},
                {"target": target},
            ]
        )

    def volume(self) -> Any:
        target = self.pick(["/data", "/var/lib/app", "/logs", "/cache", "/srv/media"])
        return self.pick(
            [
                f"./{self.pick(['src', 'conf', 'html'])}:{target}",
                f"{self.pick(VOLUMES)}:{target}",
                f"{self.pick(VOLUMES)}:{target}:ro",
                f"/opt/{self.pick(['a', 'b'])}:{target}:rw",
                target,
                {"type": "bind", "source": "./conf", "target": target, "read_only": self.chance(0.5)},
                {"type": "volume", "source": self.pick(VOLUMES), "target": target},
                {"type": "tmpfs", "target": target, "tmpfs": {"size": self.pick([1000, "64m"])}},
            ]
        )

    def env_value(self) -> Any:
        return self.pick(
            [
                "1",
                2,
                "${GREETING}",
                "${MISSING:-fallback}",
                "$$literal",
                "${EMPTY:-empty-default}",
                True,
                None,
            ]
        )

    def environment(self) -> Any:
        keys = self.some(["A", "B", "C", "D", "DOTENV_VAR", "TAG"], 1, 4)
        if self.chance(0.5):
            out = []
            for key in keys:
                value = self.env_value()
                out.append(
                    key if value is None else f"{key}={str(value).lower() if value is True else value}"
                )
            return out
        return {key: self.env_value() for key in keys}

    def labels(self) -> Any:
        keys = self.some(["com.example.a", "com.example.b", "tier", "owner"], 1, 3)
        if self.chance(0.5):
            return [f"{k}={self.pick(['x', 'y', '${USER_ID}'])}" for k in keys]
        return {k: self.pick(["x", "y", "${USER_ID}", 3]) for k in keys}

    def command(self) -> Any:
        return self.pick(
            [
                "sleep 10",
                ["sh", "-c", "echo $$HOME"],
                'sh -c "echo ${GREETING}"',
                "${MISSING:-sleep} 5",
                [],
                "",
            ]
        )

    def healthcheck(self) -> Any:
        check: dict[str, Any] = {}
        if self.chance(0.8):
            check["test"] = self.pick(
                [["CMD", "true"], "curl -f http://localhost", ["CMD-SHELL", "exit 0"], ["NONE"]]
            )
        for key in ("interval", "timeout", "start_period"):
            if self.chance(0.4):
                check[key] = self.pick(["5s", "1m30s", "500ms", "2m"])
        if self.chance(0.4):
            check["retries"] = self.rng.randint(1, 5)
        return check or {"disable": True}

    def build(self) -> Any:
        return self.pick(
            [
                "./app",
                {"context": ".", "dockerfile": "Dockerfile.${TAG:-dev}", "args": ["VERSION=${TAG}", "DEBUG"]},
                {"context": "./svc", "args": {"A": 1, "B": None}, "target": "prod", "labels": ["x=y"]},
            ]
        )

    def deploy(self) -> Any:
        deploy: dict[str, Any] = {}
        if self.chance(0.5):
            deploy["replicas"] = self.rng.randint(1, 3)
        if self.chance(0.5):
            deploy["resources"] = {
                "limits": {"cpus": self.pick(["0.5", 1, "1.25"]), "pids": self.pick([10, "20"])},
                **({"reservations": {"memory": "32M"}} if self.chance(0.5) else {}),
            }
        if self.chance(0.5):
            deploy["restart_policy"] = {"condition": "on-failure", "max_attempts": 3, "delay": "5s"}
        if self.chance(0.3):
            deploy["labels"] = {"com.example.deploy": "yes"}
        return deploy

    def depends_on(self, name: str, services: list[str]) -> Any:
        others = [s for s in services if s != name and services.index(s) > services.index(name)]
        if not others:
            return None
        chosen = self.some(others, 1, 2)
        if self.chance(0.5):
            return chosen
        return {
            s: {
                "condition": self.pick(
                    ["service_started", "service_healthy", "service_completed_successfully"]
                ),
                **({"required": self.chance(0.5)} if self.chance(0.3) else {}),
                **({"restart": True} if self.chance(0.3) else {}),
            }
            for s in chosen
        }

    # -- services and files ---------------------------------------------------------------------

    def service(self, name: str, services: list[str], base: bool) -> dict[str, Any]:
        svc: dict[str, Any] = {}
        if base or self.chance(0.3):
            svc["image"] = self.pick(["nginx:${TAG}", "redis:7", "${IMAGE:-busybox}:latest", "postgres"])
        makers = {
            "ports": lambda: [self.port() for _ in range(self.rng.randint(1, 3))],
            "expose": lambda: self.some([80, "443", "9000-9001"], 1, 2),
            "volumes": lambda: [self.volume() for _ in range(self.rng.randint(1, 3))],
            "environment": self.environment,
            "labels": self.labels,
            "command": self.command,
            "entrypoint": lambda: self.pick(["/entry.sh", ["/bin/sh", "-c"], None]),
            "healthcheck": self.healthcheck,
            "restart": lambda: self.pick(["always", "unless-stopped", "no", "on-failure:3"]),
            "cap_add": lambda: self.some(["NET_ADMIN", "SYS_TIME", "CHOWN"], 1, 2),
            "dns": lambda: self.pick(["8.8.8.8", ["1.1.1.1", "8.8.4.4"]]),
            "extra_hosts": lambda: self.pick([["db.local:10.0.0.2"], {"api.local": "10.0.0.3"}]),
            "networks": lambda: self.pick(
                [self.some(NETWORKS, 1, 2), {n: None for n in self.some(NETWORKS, 1, 2)}]
            ),
            "user": lambda: self.pick(["${USER_ID}", "nobody", "1000:1000"]),
            "working_dir": lambda: self.pick(["/app", "/srv"]),
            "stop_grace_period": lambda: self.pick(["10s", "1m", "90s"]),
            "tmpfs": lambda: self.pick(["/run", ["/tmp", "/var/run:size=64m"]]),
            "mem_limit": lambda: self.pick(["512m", "1g", 1048576]),
            "read_only": lambda: self.pick([True, False]),
            "init": lambda: True,
            "hostname": lambda: name,
            "build": self.build,
            "deploy": self.deploy,
            "logging": lambda: self.pick(
                [{"driver": "json-file", "options": {"max-size": "10m"}}, {"options": {"max-file": 3}}]
            ),
            "ulimits": lambda: self.pick([{"nofile": {"soft": 1024, "hard": 4096}}, {"nproc": 512}]),
            "sysctls": lambda: self.pick([["net.core.somaxconn=1024"], {"net.ipv4.tcp_syncookies": 0}]),
            "secrets": lambda: [
                self.pick(["token", {"source": "token", "target": "/etc/token", "mode": 0o440}])
            ],
            "configs": lambda: [self.pick(["settings", {"source": "settings", "target": "/etc/app.ini"}])],
            "env_file": lambda: self.pick(
                ["app.env", ["app.env", {"path": "missing.env", "required": False}]]
            ),
            "stop_signal": lambda: "SIGINT",
            "pull_policy": lambda: self.pick(["always", "if_not_present", "never"]),
            "platform": lambda: "linux/amd64",
            "privileged": lambda: self.pick([True, "${PRIV:-false}"]),
            "x-note": lambda: {"owner": "team"},
        }
        for key in self.some(list(makers), 2, 7):
            value = makers[key]()
            if value is not None:
                svc[key] = value
        if self.chance(0.4):
            dep = self.depends_on(name, services)
            if dep is not None:
                svc["depends_on"] = dep
        if base and self.chance(0.2):
            svc["security_opt"] = ["no-new-privileges:true"]
        if self.chance(0.05):
            svc["profiles"] = self.pick([["debug"], ["tools", "debug"]])
        if not base and self.chance(0.25):
            key = self.pick(["ports", "volumes", "environment", "labels", "command", "dns"])
            if key in svc:
                svc[key] = Tag("!override", svc[key])
            else:
                svc[key] = Tag("!reset", None)
        return svc

    def case(self) -> Case:
        services = self.some(SERVICES, 2, 4)
        services.sort(key=SERVICES.index)
        base: dict[str, Any] = {
            "services": {name: self.service(name, services, True) for name in services},
            "networks": {n: (None if self.chance(0.5) else {"driver": "bridge"}) for n in NETWORKS},
            "volumes": {v: None for v in VOLUMES},
            "secrets": {"token": {"file": "./token.txt"}},
            "configs": {"settings": {"file": "./settings.ini"}},
        }
        if self.chance(0.3):
            base["x-meta"] = {"version": self.rng.randint(1, 9), "ratio": 0.5}
        if self.chance(0.3) and len(services) > 1:
            # a service extending another one of the base file
            child, parent = services[-1], services[0]
            base["services"][child]["extends"] = parent
            base["services"][parent].pop("depends_on", None)
        docs = [base]
        for _ in range(self.rng.randint(1, 3)):
            names = self.some(services, 1, len(services))
            docs.append({"services": {name: self.service(name, services, False) for name in names}})
        dumper = _dumper()
        dumper.add_representer(Tag, _represent_tag)
        files = {}
        order = []
        for i, doc in enumerate(docs):
            filename = "compose.yaml" if i == 0 else f"override{i}.yaml"
            files[filename] = yaml.dump(doc, Dumper=dumper, sort_keys=False)
            order.append(filename)
        if self.chance(0.7):
            files[".env"] = DOTENV
        files["app.env"] = "FROM_ENV_FILE=1\nGREETING_COPY=${GREETING:-none}\n"
        files["token.txt"] = "secret\n"
        files["settings.ini"] = "[app]\n"
        env = {k: v for k, v in ENV.items() if self.chance(0.8)}
        profiles = ["debug"] if self.chance(0.6) else []
        if self.chance(0.3):
            self.include_base(files)
        return Case(
            name=f"generated-{self.seed}", files=files, compose_files=order, env=env, profiles=profiles
        )

    def include_base(self, files: dict[str, str]) -> None:
        """Move the base file into a sub-project the main file includes (its relative paths follow it)."""
        stack = {"compose.yaml": files["compose.yaml"], "token.txt": "secret\n", "settings.ini": "[app]\n"}
        stack["app.env"] = files["app.env"]
        for name, text in stack.items():
            files[f"stack/{name}"] = text
        if self.chance(0.5):
            files["stack/.env"] = "TAG=from-include\nIMAGE=alpine\n"
            files["compose.yaml"] = "include:\n  - stack/compose.yaml\n"
        else:
            files["stack.env"] = "TAG=from-include-env-file\nPORT=7777\n"
            files["compose.yaml"] = "include:\n  - path: [stack/compose.yaml]\n    env_file: stack.env\n"
        files["compose.yaml"] += f"x-seed: {self.seed}\n"  # keeps every generated main file unique


def generated_cases(count: int, seed: int = 20240) -> list[Case]:
    return [Generator(seed + i).case() for i in range(count)]
