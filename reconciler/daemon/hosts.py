"""The Docker Engines one daemon drives: a converger per (host, backend), each made on first use.

The daemon observes, checks drift and listens to events per host, so a host that is down or slow only
holds up its own environments. Where a stack runs is the host recorded for it (``placements``): a change
of ``host:`` in the configuration moves nothing until `reconciler move` confirms it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from reconciler.config.hosts import DEFAULT_HOST

if TYPE_CHECKING:
    from reconciler.config import Config, EnvConfig
    from reconciler.config.hosts import HostConfig
    from reconciler.converge import Converger

# (host, backend) -> a converger for that engine
Factory = Callable[["HostConfig", str], Any]


class Backends:
    """Convergers by host name and backend. ``default`` serves ("local", "compose") when given (the
    one-engine daemon and the tests construct it themselves)."""

    def __init__(self, config: Config, factory: Factory | None = None, *, default: Converger | None = None):
        self.config = config
        self._factory = factory or (lambda host, backend: make_converger(config, host, backend))
        self._made: dict[tuple[str, str], Any] = {}
        if default is not None:
            self._made[(DEFAULT_HOST, "compose")] = default
        self._lock = threading.Lock()

    def get(self, host: str, backend: str = "compose") -> Any:
        """The converger of ``host`` for ``backend`` (a name of ``config.hosts``)."""
        key = (host, backend)
        with self._lock:
            made = self._made.get(key)
            if made is None:
                made = self._made[key] = self._factory(self.config.hosts[host], backend)
            return made

    def names(self) -> list[str]:
        """Every host an environment is configured on, the default first."""
        used = {env.host for env in self.config.environments()} or {DEFAULT_HOST}
        return sorted(used, key=lambda h: (h != DEFAULT_HOST, h))

    def backends_on(self, host: str) -> list[str]:
        """The backends environments use on ``host`` (compose always: sweeps and events use it)."""
        used = {env.backend for env in self.config.environments() if env.host == host}
        return sorted(used | {"compose"})

    def for_env(self, env: EnvConfig, host: str | None = None) -> Any:
        return self.get(host or env.host, env.backend)

    def all(self, host: str) -> Iterable[Any]:
        return [self.get(host, b) for b in self.backends_on(host)]


def make_converger(config: Config, host: HostConfig, backend: str) -> Any:
    """A converger on ``host``'s engine, for ``backend``."""
    from reconciler.engine import DockerEngine

    engine = DockerEngine.for_host(host, state_dir=config.state_dir)
    if backend == "swarm":
        from reconciler.swarm.converge import SwarmConverger

        return SwarmConverger(engine, state_dir=config.state_dir)
    from reconciler.converge import Converger

    return Converger(engine, state_dir=config.state_dir)
