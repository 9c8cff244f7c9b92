"""`reconciler up`, `plan` and `down`: one compose project against the local Docker Engine.

Called by ``reconciler.cli``. The project is rendered and its name validated before Docker is touched
(or docker-py even imported). `plan` exits 0 when nothing would change, 2 when changes are pending.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from reconciler.names import validate_project_name

if TYPE_CHECKING:
    from reconciler.converge import Converger
    from reconciler.plan import Plan
    from reconciler.spec import RenderedLike

EXIT_PENDING = 2
_SIGNS = {"create": "+", "recreate": "~", "update": "~", "start": ">", "remove": "-"}


def main(args: argparse.Namespace) -> int:
    from reconciler.daemon.instance import project_lock

    if args.command == "down":
        project = validate_project_name(args.project)
        with project_lock(project):  # the daemon's lock: never in the middle of one of its deploys
            _converger(args).down(project, volumes=args.volumes, timeout=args.timeout)
        print(f"{project}: removed containers and networks" + (" and volumes" if args.volumes else ""))
        return 0
    if args.command == "plan" and args.target:
        return _plan_target(args)
    if args.project:
        validate_project_name(args.project)  # before reading any file, let alone calling Docker
    rendered = _render(args)
    validate_project_name(rendered.name)
    if args.command == "plan":
        plan = _converger(args).plan(rendered)
        if args.format == "json":
            print(json.dumps(plan.to_dict(), indent=2))
        else:
            _print_plan(plan)
        return 0 if plan.is_noop else EXIT_PENDING
    started = time.monotonic()
    with project_lock(rendered.name):
        plan = _converger(args).up(rendered, timeout=args.timeout, allow_empty=args.allow_empty)
    _print_plan(plan, done=True)
    print(f"{rendered.name}: converged in {time.monotonic() - started:.1f}s")
    return 0


def _plan_target(args: argparse.Namespace) -> int:
    """`plan -c FILE TARGET`: a commit as the daemon would deploy it. A policy violation is an error
    (exit 1, every violation listed); otherwise the changes it would make to the live stack."""
    from reconciler.commands.revision import masked, target_revision

    daemon, target, resolved = target_revision(args)
    daemon.deployer.check_policy(target, resolved)  # raises PolicyError, listing every violation
    out = io.StringIO()
    with contextlib.redirect_stdout(out):  # printed once masked: a change's details may quote a value
        print(f"{target.project}: commit {resolved.commit[:12]} passes the policy of {target.env.key}")
        plan = daemon.deployer.converger_for(target).plan(resolved)
        if args.format == "json":
            print(json.dumps(plan.to_dict(), indent=2))
        else:
            _print_plan(plan)
    sys.stdout.write(masked(out.getvalue(), args))
    sys.stdout.flush()
    return 0 if plan.is_noop else EXIT_PENDING


def _render(args: argparse.Namespace) -> RenderedLike:
    from reconciler.render import RenderOptions, render

    options = RenderOptions(
        files=tuple(args.files),
        project_directory=args.project_directory,
        env_files=tuple(args.env_files),
        profiles=tuple(args.profiles),
        project_name=args.project,
        environ=dict(os.environ),
    )
    return render(options)


def _converger(args: argparse.Namespace) -> Converger:
    from reconciler.converge import Converger  # imports docker-py: only once we know we need Docker
    from reconciler.engine import DockerEngine

    return Converger(DockerEngine(), state_dir=state_dir(args))


def state_dir(args: argparse.Namespace) -> Path:
    """Where `up` writes (and `down` removes) the files of content-based secrets and configs: the
    daemon's state_dir with ``-c``, so both find the same files; else $XDG_STATE_HOME/reconciler, or
    ~/.local/state/reconciler (the XDG default)."""
    if getattr(args, "config", None):
        from reconciler.config import load_config

        return Path(load_config(args.config).state_dir)
    xdg = os.environ.get("XDG_STATE_HOME")
    base = Path(xdg) if xdg and os.path.isabs(xdg) else Path.home() / ".local" / "state"
    return base / "reconciler"


def _print_plan(plan: Plan, *, done: bool = False) -> None:
    if plan.is_noop:
        print(f"{plan.project}: up to date, nothing to do (health: {plan.health})")
    else:
        verb = "applied" if done else "would apply"
        print(f"{plan.project}: {verb} {len(plan.changes)} change(s)")
    for c in plan.changes:
        print(f"  {_SIGNS[c.action]} {c.action:<8} {c.container:<32} {c.details}")
    for d in (*plan.unhealthy, *plan.reported):  # reported only: never changed by up
        print(f"  ! {d.reason:<8} {d.service:<32} {d.detail}")
    sys.stdout.flush()
