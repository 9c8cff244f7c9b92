"""`render` and `plan` with ``-c FILE TARGET``: one commit rendered exactly as the daemon would deploy
it to an environment (its overlays, override, env and policy), to review before a merge.

Called by ``commands.render`` and ``commands.converge``; writes a checkout tree next to the
environment's checkout (as a deploy does, without switching to it; the daemon sweeps it later).
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from reconciler.errors import ConfigError

if TYPE_CHECKING:
    from reconciler.daemon.core import Daemon
    from reconciler.daemon.deploy import Resolved, Target


def target_revision(args: argparse.Namespace) -> tuple[Daemon, Target, Resolved]:
    """The environment TARGET (name or project) and its commit: ``--commit``, else the head of
    ``--branch``, else of the environment's branch."""
    from reconciler.commands.daemon import _daemon
    from reconciler.config import load_config
    from reconciler.daemon.deploy import Target
    from reconciler.names import branch_slug

    if not args.config:
        raise ConfigError(
            f"TARGET {args.target!r} needs -c FILE (the environments.yaml that defines it)",
            hint="e.g. reconciler plan -c environments.yaml production --branch feature/x",
        )
    if args.files or args.project:
        raise ConfigError("give either -c FILE TARGET or compose files (-f, -p), not both")
    daemon = _daemon(load_config(args.config))
    if args.branch is None:
        target = daemon.find_target(args.target)
    else:
        envs = [
            (app, env)
            for app in daemon.config.apps
            for env in app.environments
            if args.target in (env.name, f"{app.name}/{env.name}")
        ]
        if len(envs) != 1:
            raise ConfigError(
                f"{'no' if not envs else 'more than one'} environment named {args.target!r}",
                hint="give an environment name (app/environment when two apps share it)",
            )
        app, env = envs[0]
        # A fixed environment keeps its project: the branch is what would be merged into it.
        slug = branch_slug(env.branch if env.branch is not None else args.branch)
        target = Target(app, env, args.branch, env.project_for(slug), branch_slug(args.branch))
    source = daemon.deployer.source_for(target.app.name)
    if args.commit:
        commit = source.resolve(args.commit)
    else:
        heads = source.heads()
        if target.branch not in heads:
            raise ConfigError(
                f"branch {target.branch!r} is not in the repository of app {target.app.name!r}",
                hint="push it, or give --commit",
            )
        commit = heads[target.branch]
    return daemon, target, daemon.deployer.resolve(target, commit)


def policy_violations(daemon: Daemon, target: Target, resolved: Resolved) -> str:
    """The refusal a deploy of ``resolved`` would get, or '' when it passes the policy."""
    from reconciler.errors import PolicyError

    try:
        daemon.deployer.check_policy(target, resolved)
    except PolicyError as err:
        return str(err)
    return ""


def add_target_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "target",
        nargs="?",
        metavar="TARGET",
        help="with -c: an environment (or project) of that file, rendered as the daemon would deploy it",
    )
    p.add_argument("--branch", metavar="BRANCH", help="with TARGET: render this branch's head for it")
    p.add_argument(
        "--commit", metavar="SHA", help="with TARGET: render this commit (default: the branch head)"
    )
    p.add_argument(
        "--show-secrets",
        action="store_true",
        help="with TARGET: print the values of `env`, `env_files` and decrypted files (else ***)",
    )


def masked(text: str, args: argparse.Namespace) -> str:
    """``text`` with the environment's secrets masked, unless ``--show-secrets``."""
    from reconciler.secrets import scrub

    return text if getattr(args, "show_secrets", False) else scrub(text)
