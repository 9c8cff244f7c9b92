"""CLI handlers for the daemon commands: run, sync, status, history, rollback, suspend, resume.

Each loads environments.yaml, opens the state database and, when it needs Docker, the engine adapter.
``status`` asks this configuration's running daemon first (so CLI, page and metrics agree) and computes
locally otherwise. Output goes to stdout; log lines and warnings go to stderr.
"""

from __future__ import annotations

import argparse
import http.client
import ipaddress
import json
import os
import sys
import urllib.error
import urllib.request
from dataclasses import asdict
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from reconciler.errors import ConfigError, StateError
from reconciler.status import DeployRecord, Result

if TYPE_CHECKING:
    from reconciler.config import Config
    from reconciler.daemon.core import Daemon


def main(args: argparse.Namespace) -> int:
    from reconciler import logs

    # Every command: log lines on stderr, so stdout carries only the command's own output.
    logs.configure()
    handler = {
        "run": _run,
        "sync": _sync,
        "status": _status,
        "history": _history,
        "rollback": _rollback,
        "suspend": _suspend,
        "resume": _resume,
    }[args.command]
    return handler(args)


def _config(args: argparse.Namespace) -> Config:
    from reconciler.config import load_config

    return load_config(args.config)


def _daemon(cfg: Config, *, metrics: bool = False, owner: bool = False) -> Daemon:
    from reconciler.converge import Converger
    from reconciler.daemon.core import Daemon
    from reconciler.engine import DockerEngine
    from reconciler.state import State

    converger = Converger(DockerEngine.from_env(), state_dir=cfg.state_dir)
    daemon = Daemon(cfg, state=State.open(cfg.state_dir), converger=converger, owner=owner)
    if metrics:
        from reconciler.report.metrics import Metrics

        daemon.attach_metrics(Metrics(daemon))
    return daemon


def _run(args: argparse.Namespace) -> int:
    import gc

    from reconciler.daemon.instance import DaemonLock
    from reconciler.daemon.runtime import Runtime

    gc.set_threshold(700, 10, 10)  # Python's defaults: the CLI's start-up raised them (``cli.entry``)
    cfg = _config(args)
    # Before anything else: a second daemon on the same state_dir must not act on the same stacks,
    # whatever port it listens on. The kernel drops the lock when this process dies.
    lock = DaemonLock(cfg.state_dir)
    lock.acquire(listen=_listen_text(*cfg.listen))
    warn_world_readable(cfg)
    try:
        return Runtime(_daemon(cfg, metrics=True, owner=True)).run_forever()
    finally:
        lock.release()


def warn_world_readable(cfg: Config) -> None:
    """A warning per secret file (env_files, http_auth files, age keys) any local user may read."""
    from reconciler import logs
    from reconciler.secrets import secret_files, world_readable

    for path in world_readable(secret_files(cfg)):
        logs.get().warning(
            "secret_file.world_readable", path=path, hint=f"chmod 600 {path} (it holds secrets)"
        )


def _sync(args: argparse.Namespace) -> int:
    cfg = _config(args)
    daemon = _daemon(cfg)
    # Targets are checked after the pass: a poll may create the project a target names.
    only = set(args.targets) or None
    for app in cfg.apps:
        daemon.poll(app.name, only=only, trigger="sync", manual=True)
    daemon.queue.wait_idle()
    daemon.queue.shutdown(cancel=False)
    failed = False
    statuses = daemon.environments()
    seen = set()
    for app_name, error in daemon.git_errors().items():
        print(f"{app_name}: git error: {error}", file=sys.stderr)
        failed = True
    for s in statuses:
        if not s.project:
            continue
        if only and s.project not in only and s.environment not in only:
            continue
        seen.add(s.project)
        seen.add(s.environment)
        outcome = daemon.outcome(s.project)
        target = daemon.target(s.project)
        moving = daemon.deployer.moving(target) if target is not None else ""
        if outcome is None and moving:
            print(f"{s.project}: waiting for a move at {(s.deployed_commit or '-')[:12]}")
            print(f"  {moving}", file=sys.stderr)
            failed = True
            continue
        if outcome is None:
            print(f"{s.project}: up to date at {(s.deployed_commit or '-')[:12]}")
            continue
        if outcome.skipped:
            print(f"{s.project}: skipped at {outcome.commit[:12]} ({outcome.skipped})")
            continue
        line = f"{s.project}: {outcome.result} at {outcome.commit[:12]}"
        if outcome.rolled_back_to:
            line += f" (rolled back to {outcome.rolled_back_to[:12]})"
        print(line)
        if outcome.result not in (Result.SUCCESS, Result.NOOP):
            failed = True
            print(f"  {outcome.error}", file=sys.stderr)
    missing = sorted((only or set()) - seen)
    if missing:
        print(f"no environment or project named: {', '.join(missing)}", file=sys.stderr)
        failed = True
    return 1 if failed else 0


def _listen_text(host: str, port: int) -> str:
    """``listen`` as written in environments.yaml: an IPv6 address in brackets."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _api_url(host: str, port: int, path: str) -> str:
    """Where a client on this host reaches a server listening on ``host:port``.

    A wildcard listen (0.0.0.0, ::) accepts loopback connections, and loopback is the one address sure
    to be ours; an IPv6 literal needs brackets in a URL (RFC 3986), else ``http://::1:9469`` is no URL.
    """
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        address = None  # a host name: connect to it as given
    if address is not None and address.is_unspecified:
        host = "::1" if address.version == 6 else "127.0.0.1"
    return f"http://{_listen_text(host, port)}{path}"


def _instance(cfg: Config) -> str:
    from reconciler.daemon.instance import instance_id

    try:
        return instance_id(cfg.state_dir)
    except OSError as exc:  # e.g. a state_dir only the daemon's user may read
        raise StateError(
            f"cannot read the instance id in {str(cfg.state_dir)!r}: {exc.strerror or exc}",
            hint="run `reconciler status` as the user that runs the daemon",
        ) from exc


def _api_status(cfg: Config) -> list[dict[str, Any]] | None:
    """The rows of this configuration's running daemon; None when none answers on ``listen``.

    Whatever answers there must name this configuration's instance: another configuration's daemon on
    the same address would show its own environments as ours."""
    from reconciler.report import auth
    from reconciler.report.http import INSTANCE_HEADER

    host, port = cfg.listen
    if port == 0:
        return None  # the daemon picks a free port at start: there is no address to ask
    # `listen` is an address of this host: never ask an http_proxy from the environment for it.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        request = urllib.request.Request(  # noqa: S310 - an http:// URL built by _api_url
            _api_url(host, port, "/api/environments"), headers=auth.header(cfg.http_auth)
        )
        with opener.open(request, timeout=2) as resp:
            owner = resp.headers.get(INSTANCE_HEADER)
            data = json.load(resp)
    except urllib.error.HTTPError as exc:
        if exc.code == 401:
            print(
                f"reconciler status: the daemon on {_listen_text(host, port)} refused this configuration's"
                " credentials (`http_auth`), so status is computed here",
                file=sys.stderr,
            )
        return None
    except (OSError, http.client.HTTPException, ValueError):
        return None  # nothing there, or not an HTTP server, or not JSON (URLError is an OSError)
    if not isinstance(data, list):
        return None
    mine = _instance(cfg)
    if owner != mine:
        print(
            f"reconciler status: the daemon on {_listen_text(host, port)} belongs to another configuration"
            f" (instance {owner or 'not given'}; this configuration's is {mine}),"
            " so its answer is ignored and status is computed here",
            file=sys.stderr,
        )
        return None
    return data


def _docker_where() -> str:
    # Where docker-py connects (the engine adapter's rule): DOCKER_HOST, else the local socket.
    return os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"


def _local_status(cfg: Config) -> tuple[list[dict[str, Any]], set[str]]:
    """The rows computed in this process, and the hosts whose engine did not answer (their health and
    drift are unknown). The state database gives environments, commits and deploys; Docker gives health
    and drift."""
    from reconciler.report.api import environments_json

    daemon = _daemon(cfg)
    # One call per host first, so an engine that is down is told apart from one with nothing of ours.
    down = {host for host in daemon.backends.names() if not daemon.docker_answers(host)}
    daemon.check_drift()
    down |= {host for host, up in daemon.hosts_up().items() if not up}
    for host in sorted(down):
        if host == "local" and host not in _declared(cfg):
            what = f"the Docker Engine at {_docker_where()}"
        else:
            what = f"the Docker Engine of host {host!r} at {cfg.hosts[host].url}"
        print(
            f"reconciler status: {what} is unreachable, so health and drift are unknown"
            + (" for its environments" if len(daemon.backends.names()) > 1 else "")
            + "; the table shows the state database only.",
            file=sys.stderr,
        )
    return environments_json(daemon.environments()), down


def _declared(cfg: Config) -> set[str]:
    return {name for name, host in cfg.hosts.items() if host.docker is not None}


def _status(args: argparse.Namespace) -> int:
    cfg = _config(args)
    rows = _api_status(cfg)
    down: set[str] = set()
    if rows is None:
        rows, down = _local_status(cfg)
    if args.format == "json":
        print(json.dumps(rows, indent=2))
        return 0
    _table(
        [
            "APP",
            "ENVIRONMENT",
            "PROJECT",
            "HOST",
            "BRANCH",
            "HEAD",
            "DEPLOYED",
            "SYNC",
            "HEALTH",
            "LAST DEPLOY",
        ],
        [
            [
                r["app"],
                r["environment"] or "-",
                r["project"] or "-",
                r.get("host") or "-",
                r["branch"],
                (r.get("head_commit") or "-")[:8],
                (r.get("deployed_commit") or "-")[:8],
                r["sync"],
                (r["health"] if r.get("host") not in down else "unknown")
                + (" (suspended)" if r.get("suspended") else ""),
                _last(r),
            ]
            for r in rows
        ],
    )
    return 0


def _last(r: dict[str, Any]) -> str:
    last = r.get("last_deploy")
    if not last:
        return r.get("error") or "-"
    when = _when(last.get("finished") or last.get("started"))
    text = f"{last['result']} {when} ({(last.get('commit') or '')[:8]})"
    if last.get("error"):
        text += f": {last['error'].splitlines()[0][:80]}"
    return text


def _when(ts: float | None) -> str:
    if not ts:
        return "-"
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def _table(header: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows, strict=False)]
    for row in [header, *rows]:
        print("  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=False)).rstrip())


def _history(args: argparse.Namespace) -> int:
    cfg = _config(args)
    daemon = _daemon(cfg)
    target = daemon.find_target(args.target)
    records = daemon.state.history(target.project)
    if args.format == "json":
        out = [{**_record_json(r), "hooks": _hooks_json(daemon.state.hook_runs(r.id))} for r in records]
        print(json.dumps(out, indent=2))
        return 0
    rows: list[list[str]] = []
    for r in records:
        rows.append(
            [
                str(r.id),
                _when(r.started),
                r.commit[:12],
                r.trigger + (f" of {r.rollback_of[:8]}" if r.rollback_of else ""),
                str(r.result),
                (r.error.splitlines()[0][:100] if r.error else ""),
            ]
        )
        for hook in daemon.state.hook_runs(r.id):  # each deploy hook step, under its deploy
            code = "-" if hook.exit_code is None else str(hook.exit_code)
            last = hook.output.strip().splitlines()[-1][:60] if hook.output.strip() else ""
            rows.append(
                ["", "", "", f"  {hook.phase}", f"exit {code}", f"{hook.service}: {hook.command[:40]} {last}"]
            )
    _table(["ID", "STARTED", "COMMIT", "TRIGGER", "RESULT", "ERROR"], rows)
    return 0


def _hooks_json(hooks: list[Any]) -> list[dict[str, Any]]:
    return [asdict(h) for h in hooks]


def _record_json(r: DeployRecord) -> dict[str, Any]:
    d = asdict(r)
    d["result"] = str(r.result)
    return d


def _rollback(args: argparse.Namespace) -> int:
    cfg = _config(args)
    daemon = _daemon(cfg)
    target = daemon.find_target(args.target)
    records = daemon.state.history(target.project, limit=500)
    current = daemon.state.last_applied(target.project)
    if args.to:
        want = args.to.lower()
        commits = [r.commit for r in records if r.commit.startswith(want)]
        if not commits:
            raise ConfigError(
                f"commit {args.to!r} was never deployed to {target.project}",
                hint=f"see `reconciler history -c {args.config} {target.project}`",
            )
        commit = commits[0]
    else:
        good = [r.commit for r in records if r.result is Result.SUCCESS and r.commit != current]
        if not good:
            raise ConfigError(f"{target.project} has no earlier successful deploy to roll back to")
        commit = good[0]
    # Pin, so the daemon keeps this revision instead of redeploying the branch head (`resume` unpins).
    daemon.state.pin(target.project, commit)
    outcome = daemon.deployer.rollback(target, commit, failed_commit=current, trigger="manual-rollback")
    if outcome.result is not Result.SUCCESS:
        print(f"rollback of {target.project} to {commit[:12]} failed: {outcome.error}", file=sys.stderr)
        return 1
    print(
        f"{target.project}: rolled back to {commit[:12]} "
        "(pinned; `reconciler resume` follows the branch again)"
    )
    return 0


def _suspend(args: argparse.Namespace) -> int:
    cfg = _config(args)
    daemon = _daemon(cfg)
    target = daemon.find_target(args.target)
    daemon.state.suspend(target.project, args.reason or "suspended by hand")
    print(f"{target.project}: suspended (observed, not changed)")
    return 0


def _resume(args: argparse.Namespace) -> int:
    cfg = _config(args)
    daemon = _daemon(cfg)
    target = daemon.find_target(args.target)
    daemon.state.resume(target.project)
    daemon.state.unpin(target.project)
    daemon.state.clear_failed(target.project)
    print(f"{target.project}: resumed (follows branch {target.branch!r})")
    return 0
