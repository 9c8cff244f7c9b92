"""Command-line entry point: parses arguments and dispatches to ``reconciler.commands.*``.

Handlers are imported lazily so ``reconciler render`` never pays for docker-py, GitPython or APScheduler.
Every ReconcilerError becomes one message on stderr and a non-zero exit: never a traceback for bad input.
"""

from __future__ import annotations

import argparse
import gc
import importlib
import sys
from collections.abc import Sequence

from reconciler.commands.revision import add_target_args

# command -> module in reconciler.commands that defines ``main(args) -> int``
_HANDLERS = {
    "render": "render",
    "up": "converge",
    "plan": "converge",
    "down": "converge",
    "run": "daemon",
    "sync": "daemon",
    "status": "daemon",
    "history": "daemon",
    "rollback": "daemon",
    "suspend": "daemon",
    "resume": "daemon",
    "move": "move",
    "jobs": "jobs",
    "backups": "jobs",
}


def _compose_args(p: argparse.ArgumentParser, *, project_required: bool = False) -> None:
    p.add_argument(
        "-f",
        "--file",
        dest="files",
        action="append",
        default=[],
        metavar="FILE",
        help="compose file (repeatable; merged in order). Default: compose.yaml/docker-compose.yml",
    )
    p.add_argument(
        "--project-directory", metavar="DIR", help="base for relative paths (default: first file's dir)"
    )
    p.add_argument(
        "--env-file",
        dest="env_files",
        action="append",
        default=[],
        metavar="FILE",
        help="interpolation variables (repeatable; replaces the project's .env)",
    )
    p.add_argument(
        "--profile",
        dest="profiles",
        action="append",
        default=[],
        metavar="NAME",
        help="enable a profile (repeatable)",
    )
    p.add_argument("-p", "--project-name", dest="project", required=project_required, metavar="NAME")


def _config_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("-c", "--config", required=True, metavar="FILE", help="environments.yaml")


def _state_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "-c",
        "--config",
        metavar="FILE",
        help="environments.yaml whose state_dir holds the files of content-based secrets and configs "
        "(default: $XDG_STATE_HOME/reconciler, else ~/.local/state/reconciler)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="reconciler", description=__doc__.splitlines()[0] if __doc__ else None
    )
    parser.add_argument("--version", action="version", version="reconciler 0.1.0")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("render", help="print the merged compose model (like `docker compose config`)")
    _compose_args(p)
    p.add_argument("--format", choices=["yaml", "json"], default="yaml")
    p.add_argument("-c", "--config", metavar="FILE", help="environments.yaml, to render TARGET's commit")
    add_target_args(p)

    for name, text in (
        ("up", "converge a project (docker compose up -d --remove-orphans)"),
        ("plan", "show what `up` would change; exit 0 none, 2 pending, 1 error"),
    ):
        p = sub.add_parser(name, help=text)
        _compose_args(p, project_required=False)
        _state_arg(p)
        p.add_argument(
            "--timeout",
            type=float,
            default=120.0,
            metavar="SECONDS",
            help="wait this long for each service to start/become healthy (default 120)",
        )
        if name == "plan":
            p.add_argument("--format", choices=["text", "json"], default="text")
            add_target_args(p)
        else:
            p.add_argument(
                "--allow-empty",
                action="store_true",
                help="let a project with no services remove the running containers (refused otherwise)",
            )

    p = sub.add_parser("down", help="remove a project's containers and networks")
    p.add_argument("-p", "--project-name", dest="project", required=True, metavar="NAME")
    p.add_argument("-v", "--volumes", action="store_true", help="also remove the project's volumes")
    p.add_argument("--timeout", type=float, default=10.0, metavar="SECONDS")
    _state_arg(p)

    p = sub.add_parser("run", help="the GitOps daemon (foreground)")
    _config_arg(p)

    p = sub.add_parser("sync", help="one reconcile pass, then exit; non-zero if any target failed")
    _config_arg(p)
    p.add_argument("targets", nargs="*", metavar="TARGET", help="project or environment name")

    p = sub.add_parser("status", help="table of environments: sync, health, commits, last deploy")
    _config_arg(p)
    p.add_argument("--format", choices=["table", "json"], default="table")

    p = sub.add_parser("history", help="deploy history of one environment")
    _config_arg(p)
    p.add_argument("target", metavar="TARGET")
    p.add_argument("--format", choices=["table", "json"], default="table")

    p = sub.add_parser("rollback", help="redeploy the last good (or a given) revision")
    _config_arg(p)
    p.add_argument("target", metavar="TARGET")
    p.add_argument("--to", metavar="COMMIT")

    for name in ("suspend", "resume"):
        p = sub.add_parser(name, help=f"{name} changes to an environment (it stays observed)")
        _config_arg(p)
        p.add_argument("target", metavar="TARGET")
        if name == "suspend":
            p.add_argument("--reason", default="", metavar="TEXT")

    p = sub.add_parser(
        "move", help="confirm an environment's new `host:`: stop it on the old host, deploy it on the new"
    )
    _config_arg(p)
    p.add_argument("target", metavar="TARGET", help="project or environment name (all its previews)")
    p.add_argument("host", metavar="HOST", help="the host the configuration now names for it")
    p.add_argument(
        "--abandon",
        action="store_true",
        help="the old host is gone for good: move without stopping the stack there",
    )
    _jobs_parsers(sub)
    return parser


def _jobs_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("jobs", help="scheduled jobs: backups, restore drills, copies")
    jobs = p.add_subparsers(dest="jobs_command", required=True, metavar="ACTION")
    q = jobs.add_parser("list", help="each job: schedule, last run, result, next run")
    _config_arg(q)
    q = jobs.add_parser("run", help="run a job now; the exit status is its result")
    _config_arg(q)
    q.add_argument("names", nargs="+", metavar="[TARGET] JOB", help="environment (optional) and job name")
    p = sub.add_parser("backups", help="backups in the restic repository")
    backups = p.add_subparsers(dest="backups_command", required=True, metavar="ACTION")
    q = backups.add_parser("list", help="snapshots of an environment's backup jobs")
    _config_arg(q)
    q.add_argument("target", metavar="TARGET")


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from reconciler.errors import ReconcilerError

    try:
        module = importlib.import_module(f"reconciler.commands.{_HANDLERS[args.command]}")
        code: int = module.main(args)
        return code
    except ReconcilerError as err:
        from reconciler.secrets import scrub

        print(f"reconciler {args.command}: error: {scrub(str(err))}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0


def entry() -> None:
    # A command's start-up makes several hundred thousand objects that all live to the end (modules,
    # classes, docker-py and structlog); the collector would walk them over and over as they pile up
    # (~10% of a one-shot `sync`'s time) to find next to no garbage. Collections stay on, only rarer, so
    # a long one-shot command (`up`, `jobs run`) still frees cyclic garbage; `reconciler run` goes back
    # to Python's defaults (``commands.daemon``).
    gc.set_threshold(50_000, 50, 100)
    code = main()
    # The process ends here. Its last full garbage collection would walk every object docker-py,
    # structlog and the plans left behind (~30 ms, a tenth of a one-shot `sync`) only to free memory the
    # OS takes back anyway. Frozen objects are skipped by it; reference counting still frees the rest,
    # atexit handlers still run, and what must be closed closes by itself (the state database: ``State``).
    gc.freeze()
    sys.exit(code)


if __name__ == "__main__":
    entry()
