"""The validated configuration: frozen dataclasses for the file, its apps and environments, and defaults.

Built by the parser; read by the daemon, the CLI commands and ``reconciler.branches``.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from reconciler.config.globs import glob_match
from reconciler.config.hooks import NO_HOOKS, HealthGate, Hooks
from reconciler.config.hosts import DEFAULT_HOST, HostConfig, local_host
from reconciler.config.http_auth import HttpAuth
from reconciler.config.sops import SopsConfig
from reconciler.jobs.model import BackupsConfig, JobConfig
from reconciler.policy import PERMISSIVE, Policy

DEFAULT_LISTEN = ("127.0.0.1", 9469)
DEFAULT_DRIFT_INTERVAL = 15.0
DEFAULT_POLL_INTERVAL = 30.0
DEFAULT_DEPLOY_TIMEOUT = 120.0
DEFAULT_MAX_CONCURRENT_DEPLOYS = 2
DEFAULT_IMAGE_CHECK_INTERVAL = 300.0
# Every registry check is one manifest request per image tag: below a second it is polling, not checking.
MIN_IMAGE_CHECK_INTERVAL = 1.0
IMAGE_CHECKS = ("local", "registry")


@dataclass(frozen=True, kw_only=True)
class EnvConfig:
    """One environment of an app: which branches, which compose files, how it is named and kept."""

    app: str
    name: str
    project: str  # template: {branch} is the branch slug, {app} the app name
    compose: tuple[str, ...]  # paths inside the repository, merged in order
    branch: str | None = None  # exactly one of branch / branches is set
    branches: tuple[str, ...] = ()  # fnmatch globs ('*' also matches '/'), tried in file order
    exclude: tuple[str, ...] = ()
    overlays: tuple[str, ...] = ()  # absolute paths, merged after `compose`
    override: Mapping[str, Any] | None = field(default=None, hash=False)  # inline compose, merged last
    env: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}), hash=False, repr=False)
    env_files: tuple[str, ...] = ()  # absolute paths
    ephemeral: bool = False
    self_heal: bool = False
    allow_empty: bool = False  # a commit with no services may remove the running stack
    max: int | None = None
    ttl: float | None = None  # seconds
    url: str | None = None  # template: {branch} (slug), {app}, {project}
    deploy_timeout: float = DEFAULT_DEPLOY_TIMEOUT  # seconds, per service, to start / become healthy
    # "local": drift when a tag on this host moved; "registry": also when the registry's tag moved.
    image_check: str = "local"
    image_check_interval: float = DEFAULT_IMAGE_CHECK_INTERVAL  # seconds between registry checks
    policy: Policy = field(default=PERMISSIVE, hash=False)  # what a rendered revision may ask for
    hooks: Hooks = NO_HOOKS  # one-off commands before and after a deploy
    health_gate: HealthGate | None = None  # an HTTP check on this host that a deploy must pass
    jobs: tuple[JobConfig, ...] = field(default=(), hash=False)  # scheduled backups, drills, copies
    sops: SopsConfig | None = None  # encrypted env files in the repository and the key that opens them
    host: str = DEFAULT_HOST  # a name of Config.hosts: the Docker Engine it runs on
    backend: str = "compose"  # "compose": containers on the host's engine; "swarm": a Swarm stack
    line: int = field(default=0, compare=False)  # where it is defined in environments.yaml

    @property
    def key(self) -> str:
        """``app/environment``: unique across the file."""
        return f"{self.app}/{self.name}"

    def matches(self, branch: str) -> bool:
        """True if this environment takes ``branch`` by its own rules (ignores other environments)."""
        if self.branch is not None:
            return branch == self.branch
        return glob_match(branch, self.branches) and not glob_match(branch, self.exclude)

    def project_for(self, slug: str) -> str:
        """The project name for a branch slug (not validated: callers run validate_project_name)."""
        return self.project.format(branch=slug, app=self.app)

    def url_for(self, slug: str, project: str) -> str | None:
        return self.url.format(branch=slug, app=self.app, project=project) if self.url else None


@dataclass(frozen=True, kw_only=True)
class AppConfig:
    """One application: its repository and its environments in file order."""

    name: str
    repo: str  # a git URL, or an absolute local path
    poll_interval: float = DEFAULT_POLL_INTERVAL
    webhook_secret: str | None = field(default=None, repr=False)
    host: str = DEFAULT_HOST  # its environments' host unless they name one
    environments: tuple[EnvConfig, ...]
    line: int = field(default=0, compare=False)

    def environment(self, name: str) -> EnvConfig:
        for env in self.environments:
            if env.name == name:
                return env
        raise KeyError(name)


@dataclass(frozen=True, kw_only=True)
class Config:
    """The whole file."""

    path: Path  # absolute
    state_dir: Path  # absolute
    listen: tuple[str, int] = DEFAULT_LISTEN
    drift_interval: float = DEFAULT_DRIFT_INTERVAL
    max_concurrent_deploys: int = DEFAULT_MAX_CONCURRENT_DEPLOYS
    # CIDR from which ephemeral environments' networks get a /24 each, so previews never use up Docker's
    # default address pools that production and staging need. None: Docker's default pools.
    networks_pool: str | None = None
    backups: BackupsConfig | None = None  # the restic repository of `backup` jobs
    http_auth: HttpAuth | None = None  # what the HTTP API and status page require (None: nothing)
    # name -> Docker Engine; always has "local" (this process's DOCKER_HOST) unless the file redefines it
    hosts: Mapping[str, HostConfig] = field(
        default_factory=lambda: MappingProxyType({DEFAULT_HOST: local_host()}), hash=False
    )
    apps: tuple[AppConfig, ...]

    def app(self, name: str) -> AppConfig:
        for app in self.apps:
            if app.name == name:
                return app
        raise KeyError(name)

    def host_of(self, env: EnvConfig) -> HostConfig:
        return self.hosts[env.host]

    def environments(self) -> Iterator[EnvConfig]:
        for app in self.apps:
            yield from app.environments
