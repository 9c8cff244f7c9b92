"""Read an environment's ``hooks:`` (one-off commands around a deploy) and ``health_gate:`` (an HTTP check
on the host after it). Called by the parser; run by ``reconciler.hooks`` and ``reconciler.healthgate``.
Reference: docs/environments.md, "Hooks" and "Health gate"."""

from __future__ import annotations

import re
import shlex
import urllib.parse
from dataclasses import dataclass

from reconciler.config.readers import _Readers
from reconciler.config.yaml_lines import _Map, _Seq, _type_name

DEFAULT_HOOK_TIMEOUT = 600.0  # seconds: a backup or a migration may take minutes
DEFAULT_GATE_TIMEOUT = 60.0
PHASES = ("pre_deploy", "post_deploy")
# `{NAME}` in a gate's host: a template field (branch, app, project) or a variable of the environment.
_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")


@dataclass(frozen=True)
class HookStep:
    """One command run in a one-off container of ``service``, from the revision being deployed."""

    service: str
    command: tuple[str, ...]  # argv: never run through a shell on the host
    timeout: float = DEFAULT_HOOK_TIMEOUT  # seconds

    def describe(self, phase: str) -> str:
        return f"{phase} hook `{shlex.join(self.command)}` (service {self.service!r})"


@dataclass(frozen=True)
class Hooks:
    pre_deploy: tuple[HookStep, ...] = ()
    post_deploy: tuple[HookStep, ...] = ()


@dataclass(frozen=True)
class HealthGate:
    """A deploy succeeds once ``url`` answers ``expect_status`` with the ``Host`` header ``host``."""

    url: str
    host: str | None = None  # template: {branch}, {app}, {project}, or {VAR} of the environment
    expect_status: int = 200
    timeout: float = DEFAULT_GATE_TIMEOUT  # seconds


NO_HOOKS = Hooks()


def read_hooks(r: _Readers, m: _Map, where: str) -> Hooks:
    """The environment's ``hooks:``; none when the key is absent."""
    hm = r.mapping(m, "hooks", f"{where}.hooks")
    if hm is None:
        return NO_HOOKS
    where = f"{where}.hooks"
    r.check_keys(hm, PHASES, where)
    return Hooks(**{phase: _steps(r, hm, phase, f"{where}.{phase}") for phase in PHASES if phase in hm})


def _steps(r: _Readers, hm: _Map, phase: str, where: str) -> tuple[HookStep, ...]:
    items = hm[phase]
    hint = 'e.g. - {service: web, run: "app migrate --noinput", timeout: 5m}'
    if items is None:
        return ()
    if not isinstance(items, _Seq):
        raise r.fail(
            f"`{phase}` must be a list of steps, not {_type_name(items)}", hm.key_lines[phase], where
        )
    out = []
    for item, line in zip(items, items.item_lines, strict=True):
        if not isinstance(item, _Map):
            raise r.fail(f"each step must be a mapping, not {_type_name(item)}", line, where, hint=hint)
        r.check_keys(item, ("service", "run", "timeout"), where)
        service = r.string(item, "service", f"{where}.service", required=True)
        assert service is not None
        if not service.strip():
            raise r.fail("`service` is empty", item.key_lines["service"], f"{where}.service", hint=hint)
        command = _command(r, item, line, f"{where}.run", hint)
        timeout = r.duration(item, "timeout", f"{where}.timeout", DEFAULT_HOOK_TIMEOUT)
        out.append(HookStep(service=service, command=command, timeout=float(timeout)))
    return tuple(out)


def _command(r: _Readers, item: _Map, line: int, where: str, hint: str) -> tuple[str, ...]:
    """A string is split as a shell splits words (and never run by one); a list is the argv as written."""
    if "run" not in item:
        raise r.fail("a step needs `run`, the command to run", line, where, hint=hint)
    raw, line = item["run"], item.key_lines["run"]
    if isinstance(raw, str):
        try:
            argv = shlex.split(raw)
        except ValueError as exc:
            raise r.fail(f"cannot split `run` {raw!r} into words: {exc}", line, where, hint=hint) from None
    elif isinstance(raw, list) and all(isinstance(a, str) for a in raw):
        argv = list(raw)
    else:
        raise r.fail(f"`run` must be a string or a list of strings, not {_type_name(raw)}", line, where)
    if not argv:
        raise r.fail("`run` is empty", line, where, hint=hint)
    return tuple(argv)


def read_health_gate(r: _Readers, m: _Map, where: str) -> HealthGate | None:
    """The environment's ``health_gate:``; None when absent."""
    gm = r.mapping(m, "health_gate", f"{where}.health_gate")
    if gm is None:
        return None
    where = f"{where}.health_gate"
    r.check_keys(gm, ("url", "host", "expect_status", "timeout"), where)
    url = r.string(gm, "url", f"{where}.url", required=True)
    assert url is not None
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise r.fail(
            f"`url` must be an http:// or https:// URL, not {url!r}",
            gm.key_lines["url"],
            f"{where}.url",
            hint="e.g. http://127.0.0.1:8000/ (a port published on 127.0.0.1 of this host)",
        )
    host = r.string(gm, "host", f"{where}.host")
    if host is not None and not host.strip():
        raise r.fail("`host` is empty", gm.key_lines["host"], f"{where}.host", hint='e.g. host: "{HOST}"')
    status = r.integer(gm, "expect_status", f"{where}.expect_status", minimum=100)
    if status is not None and status > 599:
        raise r.fail(
            f"`expect_status` must be an HTTP status (100-599), not {status}",
            gm.key_lines["expect_status"],
            f"{where}.expect_status",
        )
    timeout = r.duration(gm, "timeout", f"{where}.timeout", DEFAULT_GATE_TIMEOUT)
    return HealthGate(url=url, host=host, expect_status=status or 200, timeout=float(timeout))


def placeholders(template: str) -> list[str]:
    """The ``{NAME}`` placeholders of a gate's ``host`` or ``url``, in order."""
    return _PLACEHOLDER.findall(template)
