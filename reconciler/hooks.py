"""Run deploy hooks: each step is a one-off container of a service of the revision being deployed, like
`docker compose run --rm SERVICE CMD`. Called by ``reconciler.daemon.deploy``; Docker only via ``Engine``.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from reconciler import labels as L
from reconciler.config.hooks import HookStep
from reconciler.engine import Engine, EngineError, EngineUnavailable
from reconciler.errors import DeployError, ReconcilerError
from reconciler.spec import ProjectSpec, ServiceSpec, container_request

OUTPUT_LINES = 40  # the last lines of a hook's output kept in history and logs
OUTPUT_CHARS = 4000
SLUG_LABEL = f"{L.COMPOSE}.slug"  # Compose's label for a one-off's random id (the name carries its first 12)
_POLL_FIRST, _POLL_MAX = 0.1, 1.0  # seconds between looks at a running hook container


@dataclass(frozen=True)
class HookRun:
    """What one step did: its container's name, exit code and the tail of its output."""

    container: str
    exit_code: int
    output: str


class HookFailed(DeployError):
    """A step exited non-zero, timed out, or its container could not be created or started."""

    def __init__(self, message: str, *, service: str, phase: str, run: HookRun | None = None) -> None:
        super().__init__(message, service=service, reason=f"{_camel(phase)}HookFailed")
        self.phase = phase
        self.run = run


def _camel(phase: str) -> str:
    return "".join(w.capitalize() for w in phase.split("_"))


class HookRunner:
    """Runs steps against one Docker Engine; every container it creates is removed before it returns."""

    def __init__(self, engine: Engine, *, files_dir: str = "") -> None:
        self.engine = engine
        self.files_dir = files_dir  # where the converger wrote content-based secrets and configs

    def run(
        self,
        spec: ProjectSpec,
        step: HookStep,
        phase: str,
        *,
        image_ids: Mapping[str, str | None],
        labels: Mapping[str, str],
    ) -> HookRun:
        """Run ``step`` to completion; raise HookFailed unless it exits 0 within its timeout."""
        what = step.describe(phase)
        service = spec.service(step.service)
        if service is None:
            raise HookFailed(
                f"{what}: the revision has no service {step.service!r} (services: "
                f"{', '.join(s.name for s in spec.services) or 'none'}); fix `hooks:` in environments.yaml",
                service=step.service,
                phase=phase,
            )
        slug = secrets.token_hex(32)
        name = f"{spec.name}-{service.name}-run-{slug[:12]}"
        image_id = image_ids.get(service.image) or self.engine.image_id(service.image) or ""
        labels = {**labels, SLUG_LABEL: slug}
        body, connect = self._request(spec, service, step, image_id, labels, name, phase)
        try:
            cid = self.engine.create_container(name, body, platform=service.platform)
        except (EngineError, EngineUnavailable) as exc:
            raise HookFailed(
                f"{what}: cannot create its container: {exc}", service=service.name, phase=phase
            ) from exc
        try:
            for network, endpoint in connect:
                self.engine.connect_network(network, cid, endpoint)
            self.engine.start_container(cid)
            exit_code = self._wait(cid, step.timeout)
            output = _tail(self.engine.container_logs(cid, tail=OUTPUT_LINES))
        except (EngineError, EngineUnavailable) as exc:
            raise HookFailed(f"{what}: {exc}", service=service.name, phase=phase) from exc
        except TimeoutError:
            output = _tail(self._logs(cid))
            run = HookRun(name, -1, output)
            raise HookFailed(
                f"{what} did not finish within {step.timeout:g}s and was killed{_block(output)}",
                service=service.name,
                phase=phase,
                run=run,
            ) from None
        finally:
            self._remove(cid)
        run = HookRun(name, exit_code, output)
        if exit_code != 0:
            raise HookFailed(
                f"{what} exited with code {exit_code}{_block(output)}",
                service=service.name,
                phase=phase,
                run=run,
            )
        return run

    def _request(
        self,
        spec: ProjectSpec,
        service: ServiceSpec,
        step: HookStep,
        image_id: str,
        labels: Mapping[str, str],
        name: str,
        phase: str,
    ) -> tuple[dict[str, Any], tuple[tuple[str, Mapping[str, Any]], ...]]:
        """The converge create request, changed as `compose run` changes it: the command replaced, no
        published ports, no restart policy, no TTY or stdin, and no service aliases on its networks (a
        one-off must not receive the service's traffic)."""
        config = {**service.config, "command": list(step.command), "ports": [], "restart": "no"}
        config.update(tty=False, stdin_open=False)
        one_off = replace(service, config=config, container_name=name)
        req = container_request(
            spec,
            one_off,
            1,
            image_id=image_id,
            extra_labels=labels,
            joined=self._joined(spec, service, phase),
            files_dir=self.files_dir,
        )
        body = dict(req.body)
        body["Labels"] = {k: v for k, v in req.body["Labels"].items() if k != L.CONTAINER_NUMBER}
        body["Labels"][L.ONEOFF] = "True"
        networking = body.get("NetworkingConfig", {}).get("EndpointsConfig", {})
        body["NetworkingConfig"] = {
            "EndpointsConfig": {n: {**ep, "Aliases": [name]} for n, ep in networking.items()}
        }
        if not networking:
            body.pop("NetworkingConfig")
        connect = tuple((n, {**ep, "Aliases": [name]}) for n, ep in req.connect)
        return body, connect

    def _joined(self, spec: ProjectSpec, service: ServiceSpec, phase: str) -> dict[str, str]:
        """`service:NAME` namespaces join NAME's running replica 1, as the service's own containers do."""
        out: dict[str, str] = {}
        for other in service.joins:
            target = spec.service(other)
            ref = target.container(spec.name, 1) if target else f"{spec.name}-{other}-1"
            info = self.engine.inspect_container(ref)
            if info is None:
                raise HookFailed(
                    f"service {service.name!r} shares a namespace with {other!r}, which has no container "
                    f"{ref} to join yet: run this hook as post_deploy",
                    service=service.name,
                    phase=phase,
                )
            out[other] = str(info["Id"])
        return out

    def _wait(self, cid: str, timeout: float) -> int:
        """The exit code once the container stops; TimeoutError at the deadline. Polls inspect (the
        Engine protocol has no blocking wait) with a short, growing interval."""
        deadline = time.monotonic() + timeout
        delay = _POLL_FIRST
        while True:
            info = self.engine.inspect_container(cid)
            if info is None:
                raise EngineError(f"container {cid[:12]} vanished while it ran", status=404)
            state = info.get("State") or {}
            if not state.get("Running") and state.get("Status") not in ("created", "restarting"):
                return int(state.get("ExitCode", -1))
            if time.monotonic() + delay > deadline:
                raise TimeoutError
            time.sleep(delay)
            delay = min(delay * 2, _POLL_MAX)

    def _logs(self, cid: str) -> str:
        try:
            return self.engine.container_logs(cid, tail=OUTPUT_LINES)
        except ReconcilerError:
            return ""

    def _remove(self, cid: str) -> None:
        """Kill and remove (with its anonymous volumes, as `run --rm`); retried once on an engine hiccup."""
        for attempt in range(2):
            try:
                self.engine.remove_container(cid, volumes=True, force=True)
                return
            except ReconcilerError:
                if attempt:
                    raise


def _tail(text: str) -> str:
    """The last OUTPUT_LINES lines, at most OUTPUT_CHARS characters: a noisy hook never floods history."""
    lines = text.rstrip().splitlines()[-OUTPUT_LINES:]
    out = "\n".join(lines)
    return out if len(out) <= OUTPUT_CHARS else "…" + out[-OUTPUT_CHARS:]


def _block(output: str) -> str:
    return f"; last output:\n{output}" if output else " (no output)"
