"""The policy of environments.yaml refuses a preview branch that asks for the host, before anything is
created; production, whose policy allows the same keys, runs them; a loopback database port is fine."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import docker
import pytest

from reconciler.commands.daemon import _daemon
from reconciler.config import load_config
from reconciler.report.api import environments_json
from reconciler.report.page import render_page
from tests.daemon.conftest import Repo
from tests.daemon.helpers import unique_prefix, write_config
from tests.daemon.test_lifecycle import containers, sync_all

pytestmark = pytest.mark.docker

Doc = dict[str, Any]


def _web(**keys: Any) -> Callable[[Doc], None]:
    def edit(doc: Doc) -> None:
        doc["services"]["web"].update(keys)

    return edit


def _mount(spec: str) -> Callable[[Doc], None]:
    def edit(doc: Doc) -> None:
        doc["services"]["web"]["volumes"].append(spec)

    return edit


def _top(section: str, name: str, value: Any, web: Doc) -> Callable[[Doc], None]:
    def edit(doc: Doc) -> None:
        doc.setdefault(section, {})[name] = value
        for key, item in web.items():
            doc["services"]["web"].setdefault(key, []).append(item)

    return edit


def _maildev(image: str) -> Callable[[Doc], None]:
    def edit(doc: Doc) -> None:
        doc["services"]["maildev"].update(image=image, cap_add=["NET_ADMIN"])

    return edit


def _postgres(doc: Doc) -> None:
    doc["services"]["pg"] = {"image": "postgres:16", "ports": ["5432:5432"]}


# branch -> (edit of docker-compose.yml, the key and the rule the refusal must name)
DENIED: dict[str, tuple[Callable[[Doc], None] | None, str, str]] = {
    "privileged": (_web(privileged=True), "privileged", "privileged"),
    "host-network": (_web(network_mode="host"), "network_mode", "host_namespaces"),
    "host-pid": (_web(pid="host"), "pid", "host_namespaces"),
    "devices": (_web(devices=["/dev/fuse:/dev/fuse"]), "devices", "devices"),
    "socket": (_mount("/var/run/docker.sock:/var/run/docker.sock"), "volumes", "docker_socket"),
    "run-dir": (_mount("/run:/host-run"), "volumes", "docker_socket"),
    "host-root": (_mount("/:/host"), "volumes", "docker_socket"),
    "host-etc": (_mount("/etc:/host-etc"), "volumes", "binds_outside_checkout"),
    "symlink": (None, "volumes", "docker_socket"),  # ./hostrun, a link to /var/run committed to git
    "caps": (_web(cap_add=["SYS_ADMIN"]), "cap_add", "cap_add"),
    "unconfined": (_web(security_opt=["seccomp=unconfined"]), "security_opt", "unconfined"),
    "external": (
        _top("volumes", "ext", {"external": True}, {"volumes": "ext:/ext"}),
        "volumes.ext",
        "external",
    ),
    "secret-file": (_top("secrets", "s", {"file": "/etc/hostname"}, {"secrets": "s"}), "secrets.s", "binds"),
    "db-public": (_web(ports=["8000"]), "ports", "database_ports"),
    "postgres": (_postgres, "ports", "database_ports"),
    "scale": (_web(scale=9), "scale", "max_replicas"),
    # The exception for maildev is pinned to its image: another image loses it.
    "maildev-other-image": (_maildev("reconciler-test/busybox:latest"), "cap_add", "cap_add"),
    "memory": (_web(mem_limit="8g"), "mem_limit", "limits"),
}


def _push(repo: Repo, branch: str, edit: Callable[[Doc], None] | None) -> None:
    repo.branch(branch)
    if edit is not None:
        # maildev is defined (and its image set) by the maildev file, merged after the main one.
        rel = "docker-compose.maildev.yml" if branch.startswith("maildev") else "docker-compose.yml"
        repo.edit_yaml(branch, rel, edit)
        return
    os.symlink("/var/run", repo.work / "hostrun")
    repo.edit_yaml(branch, "docker-compose.yml", _mount("./hostrun:/host-run"))


def _objects(client: docker.DockerClient, project: str) -> list[str]:
    """Every container, network and volume of ``project``, by label or by name."""
    label = {"label": f"com.docker.compose.project={project}"}
    found = [c.name for c in client.containers.list(all=True, filters=label)]
    found += [n.name for n in client.networks.list() if n.name.startswith(f"{project}_")]
    found += [n.name for n in client.networks.list(filters=label)]
    found += [v.name for v in client.volumes.list() if v.name.startswith(f"{project}_")]
    return found + [v.name for v in client.volumes.list(filters=label)]


def test_policy_refuses_previews_and_allows_production(
    tmp_path: Path, repo: Repo, docker_client: docker.DockerClient, cleanup: Any
) -> None:
    """One preview branch per denied key: each is refused with its reason and leaves nothing on the host;
    production runs the same keys; a preview publishing its database on 127.0.0.1 runs, with limits."""
    prefix = unique_prefix()
    cleanup(prefix)
    # Production (permissive by default) mounts the host and the socket, unconfined, with extra caps
    # (not privileged: this test engine runs without the capabilities that needs).
    repo.commit(
        "master",
        {
            "prod-extra.yml": (
                "services:\n  web:\n    cap_add: [NET_ADMIN]\n"
                "    security_opt: [apparmor=unconfined]\n    pids_limit: 100000\n    volumes:\n"
                "      - /etc:/host-etc:ro\n      - /var/run/docker.sock:/var/run/docker.sock:ro\n"
            )
        },
    )
    for branch, (edit, _, _) in DENIED.items():
        _push(repo, branch, edit)
    repo.branch("db-loopback")
    repo.edit_yaml("db-loopback", "docker-compose.yml", _web(ports=["127.0.0.1::8000"]))
    _push(repo, "maildev-caps", _maildev("busybox:1.36"))
    # The production volume's name, claimed by a preview after production exists.
    foreign = f"{prefix}-production-dbdata"
    cfg = write_config(
        tmp_path,
        repo.bare,
        prefix,
        envs={
            "production": {
                "compose": ["docker-compose.yml", "docker-compose.persist.yml", "prod-extra.yml"],
            },
            "staging": {"branch": "none"},
            "preview": {
                "exclude": ["master"],
                "max": 30,
                "policy": {
                    # busybox plays the database; an exception for traefik does not cover busybox.
                    "database_images": ["busybox"],
                    "allow": [
                        {"service": "web", "image": "traefik:*", "docker_socket": True},
                        {"service": "maildev", "image": "busybox:1.*", "cap_add": True},
                    ],
                },
            },
        },
    )
    daemon = _daemon(load_config(cfg), metrics=True)
    try:
        sync_all(daemon)
        production = containers(docker_client, f"{prefix}-production")
        assert production["web"].status == "running"
        assert production["web"].attrs["HostConfig"]["CapAdd"] == ["NET_ADMIN"]

        _push(repo, "foreign-volume", _top("volumes", "dbdata", {"name": foreign}, {}))
        sync_all(daemon)

        errors = {s.branch: s.error for s in daemon.environments()}
        expected = {
            **{b: (k, r) for b, (_, k, r) in DENIED.items()},
            "foreign-volume": ("volumes.dbdata", "external"),
        }
        for branch, (key, rule) in expected.items():
            project = f"{prefix}-test-{branch}"
            assert "refused by policy: " in errors[branch], (branch, errors[branch])
            assert f"{key}" in errors[branch] and f"`{rule}" in errors[branch], (branch, errors[branch])
            assert _objects(docker_client, project) == [], branch
        assert "volumes.dbdata.name" in errors["foreign-volume"]
        # The API and the page show the refusal as the environment's error.
        statuses = daemon.environments()
        api = {e["branch"]: e for e in environments_json(statuses)}
        assert "service 'web': privileged = true" in api["privileged"]["error"]
        page = render_page(statuses, docker_up=True, generated_at=0.0)
        assert "refused by policy: service" in page
        assert "host_namespaces" in errors["host-network"] and "service 'web'" in errors["host-network"]

        # The loopback database port passes, and the preview gets the policy's default limits.
        web = containers(docker_client, f"{prefix}-test-db-loopback")["web"]
        assert web.status == "running" and errors["db-loopback"] == ""
        host = web.attrs["HostConfig"]
        assert (host["Memory"], host["NanoCpus"], host["PidsLimit"]) == (1 << 30, 10**9, 512)
        assert host["PortBindings"]["8000/tcp"][0]["HostIp"] == "127.0.0.1"

        # The exception lets maildev (busybox:1.*) add its capability.
        maildev = containers(docker_client, f"{prefix}-test-maildev-caps")["maildev"]
        assert maildev.status == "running" and maildev.attrs["HostConfig"]["CapAdd"] == ["NET_ADMIN"]

        # Production kept running, untouched, and the gauge counts each environment's violations.
        assert containers(docker_client, f"{prefix}-production")["web"].id == production["web"].id
        text = daemon.metrics.exposition()[0].decode()
        gauge = "reconciler_policy_violations{"
        assert f'{gauge}app="demo",environment="production",project="{prefix}-production"}} 0.0' in text
        assert f'environment="preview",project="{prefix}-test-privileged"}} 1.0' in text
    finally:
        daemon.queue.shutdown()


def test_plan_and_render_show_violations_before_a_merge(
    tmp_path: Path, repo: Repo, docker_client: docker.DockerClient, cleanup: Any, capsys: Any
) -> None:
    """`plan -c FILE TARGET --branch B` lists every violation B would meet there and exits 1, creating
    nothing; `render` prints the model the daemon would deploy (with the policy's limits) and the
    violations; a clean branch passes and shows its plan."""
    from reconciler.cli import main as cli

    prefix = unique_prefix()
    cleanup(prefix)
    _push(repo, "privileged", _web(privileged=True, pid="host"))
    cfg = str(write_config(tmp_path, repo.bare, prefix, envs={"staging": {"branch": "none"}}))

    assert cli(["plan", "-c", cfg, "preview", "--branch", "privileged"]) == 1
    err = capsys.readouterr().err
    assert "(+1 more)" in err and "2 violation(s)" in err
    assert "privileged = true" in err and "pid = host" in err
    assert _objects(docker_client, f"{prefix}-test-privileged") == []

    # Before the merge: the branch judged as production would deploy it (permissive: it passes).
    assert cli(["plan", "-c", cfg, "production", "--branch", "privileged"]) == 2
    assert "passes the policy of demo/production" in capsys.readouterr().out

    assert cli(["render", "-c", cfg, "preview", "--branch", "privileged", "--format", "json"]) == 0
    out, err = capsys.readouterr()
    assert '"pids_limit": 512' in out and "pid = host" in err


def test_refused_commit_leaves_a_fixed_environment_running(
    tmp_path: Path, repo: Repo, docker_client: docker.DockerClient, cleanup: Any
) -> None:
    """A fixed environment whose policy denies a key: a commit using it is refused, the running revision
    stays (nothing to roll back), and the next clean commit deploys."""
    prefix = unique_prefix()
    cleanup(prefix)
    cfg = write_config(
        tmp_path,
        repo.bare,
        prefix,
        envs={
            "production": {"policy": {"privileged": False}},
            "staging": {"branch": "none"},
            "preview": {"branches": ["none"]},
        },
    )
    daemon = _daemon(load_config(cfg), metrics=True)
    try:
        sync_all(daemon)
        web = containers(docker_client, f"{prefix}-production")["web"]
        good = daemon.state.last_applied(f"{prefix}-production")
        bad = repo.edit_yaml("master", "docker-compose.yml", _web(privileged=True))
        sync_all(daemon)
        (status,) = [s for s in daemon.environments() if s.environment == "production"]
        assert "refused by policy: service 'web': privileged = true" in status.error
        assert bad[:12] in status.error and status.deployed_commit == good
        assert containers(docker_client, f"{prefix}-production")["web"].id == web.id
        text = daemon.metrics.exposition()[0].decode()
        labels = f'app="demo",environment="production",project="{prefix}-production"'
        assert f"reconciler_policy_violations{{{labels}}} 1.0" in text
        assert 'reconciler_rollbacks_total{app="demo",environment="production"} 0.0' in text

        fixed = repo.edit_yaml("master", "docker-compose.yml", _web(privileged=False))
        sync_all(daemon)
        assert daemon.state.last_applied(f"{prefix}-production") == fixed
    finally:
        daemon.queue.shutdown()
