"""`reconciler move -c FILE TARGET HOST`: confirm a change of an environment's ``host:``.

The daemon refuses to deploy an environment whose configured host is not the one it runs on. This command
stops the stack on the old host first (its volumes stay there), then deploys the same revision on the new
one, so two copies of production never run at once. Reference: docs/hosts.md.
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from reconciler.errors import ConfigError, DockerError, ReconcilerError
from reconciler.status import Result

if TYPE_CHECKING:
    from reconciler.daemon.core import Daemon
    from reconciler.daemon.deploy import Target


def main(args: argparse.Namespace) -> int:
    from reconciler import logs
    from reconciler.commands.daemon import _config, _daemon

    logs.configure()
    cfg = _config(args)
    if args.host not in cfg.hosts:
        raise ConfigError(
            f"unknown host {args.host!r} (hosts: {', '.join(sorted(cfg.hosts))})",
            hint="declare it under `hosts:` and set `host:` on the environment first",
        )
    daemon = _daemon(cfg)
    failed = False
    for target in _targets(daemon, args.target):
        failed |= not move(daemon, target, args.host, abandon=args.abandon)
    return 1 if failed else 0


def _targets(daemon: Daemon, name: str) -> list[Target]:
    """A project, or every project of an environment (a preview environment has one per branch)."""
    try:
        return [daemon.find_target(name)]
    except ConfigError:
        found = [t for t in _known(daemon) if t.env.name == name]
        if not found:
            raise
        return found


def _known(daemon: Daemon) -> list[Target]:
    from reconciler.branches import slug_of
    from reconciler.daemon.deploy import Target

    out = []
    for row in daemon.state.environments():
        env = daemon._env(row.app, row.environment)
        if env is not None:
            app = daemon.config.app(row.app)
            out.append(Target(app, env, row.branch, row.project, slug_of(env, row.branch, row.project)))
    return out


def move(daemon: Daemon, target: Target, host: str, *, abandon: bool = False) -> bool:
    """Move one project to ``host``; True when it runs there (or already did)."""
    from reconciler.daemon.instance import project_lock

    deployer = daemon.deployer
    if target.env.host != host:
        raise ConfigError(
            f"the configuration places environment {target.env.name!r} on host {target.env.host!r}, "
            f"not {host!r}: `move` confirms a change of `host:`, it does not make one",
            hint=f"set `host: {host}` on environment {target.env.name!r} in {daemon.config.path}, then move",
        )
    old = deployer.host_of(target)
    if old == host:
        print(f"{target.project}: already on host {host}")
        return True
    with project_lock(target.project):
        commit = daemon.state.pinned(target.project) or daemon.state.last_applied(target.project)
        # 1. stop it where it runs (a preview's volumes go with it; a persistent one's stay there)
        if old not in daemon.config.hosts:
            if not abandon:
                raise ConfigError(
                    f"{target.project} runs on host {old!r}, which the configuration no longer declares",
                    hint=f"declare host {old!r} again so its stack can be stopped, or pass --abandon",
                )
        elif not abandon:
            try:
                daemon.backends.get(old, target.env.backend).down(
                    target.project,
                    volumes=target.ephemeral,
                    images=False,
                    owner=deployer.owner(target.app.name, target.env.name),
                )
            except DockerError as err:
                raise DockerError(
                    f"cannot stop {target.project} on host {old!r}: {err}",
                    hint="nothing was moved; if that host is gone for good, pass --abandon "
                    "(its stack would run again if the host came back)",
                ) from err
        # 2. from now on the daemon observes and deploys it on the new host
        daemon.state.place(target.project, host)
    print(f"{target.project}: stopped on host {old}" + (" (abandoned)" if abandon else ""))
    if commit is None:
        print(f"{target.project}: placed on host {host}; the next poll deploys it there")
        return True
    # 3. the same revision on the new host
    try:
        outcome = deployer.deploy(target, commit, trigger="move")
        ok, error = outcome.result in (Result.SUCCESS, Result.NOOP), outcome.error
    except ReconcilerError as err:
        ok, error = False, str(err)
    if not ok:
        print(
            f"{target.project}: deploy of {commit[:12]} on host {host} failed: {error}; it is stopped on "
            f"{old}: fix and `reconciler sync`, or move it back",
            file=sys.stderr,
        )
        return False
    kept = "" if target.ephemeral else f"; its volumes stay on host {old} (docs/hosts.md: moving data)"
    print(f"{target.project}: moved to host {host} at {commit[:12]}{kept}")
    return True
