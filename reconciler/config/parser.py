"""Parse environments.yaml: the top level, each app and each environment, into the model's dataclasses.

``load_config`` / ``parse_config`` are the entry points (re-exported by ``reconciler.config``).
"""

from __future__ import annotations

from pathlib import Path
from types import MappingProxyType
from typing import Any

import yaml

from reconciler.config.checks import check_cancelled, check_unique
from reconciler.config.fields import _FieldReaders
from reconciler.config.hooks import read_health_gate, read_hooks
from reconciler.config.hosts import HostConfig, read_backend, read_host_ref, read_hosts
from reconciler.config.http_auth import read_http_auth
from reconciler.config.jobs import check_job_refs, read_backups, read_jobs
from reconciler.config.model import (
    DEFAULT_DEPLOY_TIMEOUT,
    DEFAULT_DRIFT_INTERVAL,
    DEFAULT_IMAGE_CHECK_INTERVAL,
    DEFAULT_MAX_CONCURRENT_DEPLOYS,
    DEFAULT_POLL_INTERVAL,
    IMAGE_CHECKS,
    MIN_IMAGE_CHECK_INTERVAL,
    AppConfig,
    Config,
    EnvConfig,
)
from reconciler.config.policy import read_policy
from reconciler.config.sops import read_sops
from reconciler.config.yaml_lines import _Loader, _Map, _plain, _type_name
from reconciler.errors import ConfigError, InvalidNameError, Location
from reconciler.names import branch_slug, validate_project_name

_TOP_KEYS = (
    "state_dir",
    "listen",
    "drift_interval",
    "max_concurrent_deploys",
    "networks_pool",
    "backups",
    "http_auth",
    "hosts",
    "apps",
)
_APP_KEYS = ("repo", "poll_interval", "webhook_secret", "webhook_secret_file", "host", "environments")
_ENV_KEYS = (
    "branch",
    "branches",
    "exclude",
    "project",
    "compose",
    "overlays",
    "override",
    "env",
    "env_files",
    "ephemeral",
    "self_heal",
    "allow_empty",
    "max",
    "ttl",
    "url",
    "timeout",
    "image_check",
    "image_check_interval",
    "policy",
    "hooks",
    "health_gate",
    "jobs",
    "sops",
    "host",
    "backend",
)


def load_config(path: str | Path) -> Config:
    """Read, parse and validate ``path``; raise ConfigError (with file, line and key) on any problem."""
    path = Path(path).expanduser().absolute()
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(
            f"cannot read the configuration: {exc.strerror or exc}",
            Location(file=str(path)),
            hint="pass the path of environments.yaml with -c",
        ) from exc
    except UnicodeDecodeError as exc:
        raise ConfigError("the configuration is not UTF-8 text", Location(file=str(path))) from exc
    return parse_config(text, path)


def parse_config(text: str, path: Path) -> Config:
    """Validate YAML ``text`` as if read from ``path`` (relative paths resolve against its directory)."""
    return _Parser(path).parse(text)


class _Parser(_FieldReaders):
    """Reads the document structure; the typed readers come from the base classes."""

    def parse(self, text: str) -> Config:
        try:
            doc = yaml.load(text, Loader=_Loader)  # noqa: S506 - _Loader is a SafeLoader subclass
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            line = mark.line + 1 if mark else None
            raise self.fail(
                f"invalid YAML: {exc.problem or exc}",
                line,
                None,
                hint="fix the YAML syntax; quote values that start with '{' or contain ': '",
            ) from None
        except yaml.YAMLError as exc:
            raise self.fail(f"invalid YAML: {exc}", None, None) from None
        if not isinstance(doc, _Map):
            raise self.fail(
                f"the file must be a mapping with an `apps` key, not {_type_name(doc)}",
                getattr(doc, "line", None) or 1,
                None,
                hint="see docs/environments.md for the format",
            )
        self.check_keys(doc, _TOP_KEYS, "")
        state_dir = self.path_value(doc, "state_dir", "state_dir", default="state")
        listen = self.listen(doc)
        drift = self.duration(doc, "drift_interval", "drift_interval", DEFAULT_DRIFT_INTERVAL)
        concurrent = self.integer(doc, "max_concurrent_deploys", "max_concurrent_deploys", minimum=1)
        pool = self.network_pool(doc)
        http_auth = read_http_auth(self, doc)
        self.hosts: dict[str, HostConfig] = read_hosts(self, doc)
        apps_map = self.mapping(doc, "apps", "apps", required=True)
        assert apps_map is not None
        if not apps_map:
            raise self.fail("`apps` is empty", doc.key_lines["apps"], "apps", hint="declare at least one app")
        apps = tuple(self.app(apps_map, name) for name in apps_map)
        check_unique(self, apps, apps_map)
        backups = read_backups(self, doc)
        for app in apps:
            check_job_refs(self, app, backups is not None)
        return Config(
            path=self.path,
            state_dir=Path(state_dir),
            listen=listen,
            drift_interval=drift,
            max_concurrent_deploys=concurrent or DEFAULT_MAX_CONCURRENT_DEPLOYS,
            networks_pool=pool,
            backups=backups,
            http_auth=http_auth,
            hosts=MappingProxyType(self.hosts),
            apps=apps,
        )

    def app(self, apps_map: _Map, name: Any) -> AppConfig:
        line = apps_map.key_lines[name]
        where = f"apps.{name}"
        self.check_name(name, line, where, "app")
        m = self.mapping(apps_map, name, where, required=True)
        assert m is not None
        self.check_keys(m, _APP_KEYS, where)
        repo = self.string(m, "repo", f"{where}.repo", required=True)
        assert repo is not None
        repo = self.repo(repo, m.key_lines["repo"], f"{where}.repo")
        poll = self.duration(m, "poll_interval", f"{where}.poll_interval", DEFAULT_POLL_INTERVAL)
        secret = self.secret(m, where)
        host = read_host_ref(self, m, where, self.hosts, "local")
        envs_map = self.mapping(m, "environments", f"{where}.environments", required=True)
        assert envs_map is not None
        if not envs_map:
            raise self.fail(
                "`environments` is empty",
                m.key_lines["environments"],
                f"{where}.environments",
                hint="declare at least one environment",
            )
        envs = tuple(self.environment(envs_map, name, env, f"{where}.environments", host) for env in envs_map)
        return AppConfig(
            name=name,
            repo=repo,
            poll_interval=poll,
            webhook_secret=secret,
            host=host,
            environments=envs,
            line=line,
        )

    def image_check(self, m: _Map, where: str) -> str:
        value = self.string(m, "image_check", f"{where}.image_check")
        if value is None:
            return "local"
        if value not in IMAGE_CHECKS:
            raise self.fail(
                f"`image_check` must be one of {', '.join(IMAGE_CHECKS)}, not {value!r}",
                m.key_lines["image_check"],
                f"{where}.image_check",
                hint="local: a tag moved on this host; registry: also ask the registry for the tag's digest",
            )
        return value

    def image_check_interval(self, m: _Map, where: str) -> float:
        key = "image_check_interval"
        seconds: float = self.duration(m, key, f"{where}.{key}", DEFAULT_IMAGE_CHECK_INTERVAL)
        if seconds < MIN_IMAGE_CHECK_INTERVAL:
            raise self.fail(
                f"`{key}` must be at least {MIN_IMAGE_CHECK_INTERVAL:g}s, not {seconds:g}s: each check asks "
                "the registry for every image tag of the environment",
                m.key_lines[key],
                f"{where}.{key}",
                hint="e.g. image_check_interval: 5m",
            )
        return seconds

    def environment(self, envs_map: _Map, app: str, name: Any, parent: str, app_host: str) -> EnvConfig:
        line = envs_map.key_lines[name]
        where = f"{parent}.{name}"
        self.check_name(name, line, where, "environment")
        m = self.mapping(envs_map, name, where, required=True)
        assert m is not None
        self.check_keys(m, _ENV_KEYS, where)
        branch = self.branch(m, "branch", f"{where}.branch")
        branches = self.globs(m, "branches", where)
        exclude = self.globs(m, "exclude", where)
        if (branch is None) == ("branches" not in m):
            raise self.fail(
                "an environment needs exactly one of `branch` (one branch) or `branches` (globs)",
                line,
                where,
                hint='e.g. `branch: master`, or `branches: ["*"]` for previews',
            )
        if branch is not None and not branch.strip():
            raise self.fail("`branch` is empty", m.key_lines["branch"], f"{where}.branch")
        if branch is not None and "exclude" in m:
            raise self.fail(
                "`exclude` only applies to `branches` globs",
                m.key_lines["exclude"],
                f"{where}.exclude",
                hint="remove `exclude`, or use `branches`",
            )
        if "branches" in m and not branches:
            raise self.fail(
                "`branches` is empty: this environment would never match a branch",
                m.key_lines["branches"],
                f"{where}.branches",
                hint='list at least one glob, e.g. ["*"]',
            )
        check_cancelled(self, branches, exclude, m, where)
        project = self.template(m, "project", where, ("branch", "app"), required=True)
        assert project is not None
        if branch is None and "{branch}" not in project:
            raise self.fail(
                f"project {project!r} must contain {{branch}}: every branch matched by `branches` "
                "needs its own project name",
                m.key_lines["project"],
                f"{where}.project",
                hint='e.g. project: "test-{branch}"',
            )
        sample = project.format(branch=branch_slug(branch) if branch is not None else "x", app=app)
        try:
            validate_project_name(sample)
        except InvalidNameError as exc:
            what = f"project {project!r} gives {sample!r}, " if sample != project else ""
            raise self.fail(
                f"{what}{exc.detail}",
                m.key_lines["project"],
                f"{where}.project",
                hint="use lower-case letters, digits, '-' and '_'",
            ) from None
        compose = self.paths(m, "compose", where, required=True, in_repo=True)
        if not compose:
            raise self.fail(
                "`compose` is empty", m.key_lines["compose"], f"{where}.compose", hint="list a compose file"
            )
        max_ = self.integer(m, "max", f"{where}.max", minimum=1)
        ttl = self.duration(m, "ttl", f"{where}.ttl", None)
        for key, value in (("max", max_), ("ttl", ttl)):
            if value is not None and branch is not None:
                raise self.fail(
                    f"`{key}` only applies to environments with `branches` globs",
                    m.key_lines[key],
                    f"{where}.{key}",
                    hint=f"remove `{key}`",
                )
        override = m.get("override")
        if "override" in m and not isinstance(override, dict):
            raise self.fail(
                f"`override` must be a mapping (inline compose), not {_type_name(override)}",
                m.key_lines["override"],
                f"{where}.override",
                hint="e.g. override: {services: {web: {restart: unless-stopped}}}",
            )
        ephemeral = self.boolean(m, "ephemeral", f"{where}.ephemeral")
        return EnvConfig(
            app=app,
            name=name,
            project=project,
            compose=compose,
            branch=branch,
            branches=branches,
            exclude=exclude,
            overlays=self.paths(m, "overlays", where),
            override=MappingProxyType(_plain(override)) if override is not None else None,
            env=self.env(m, where),
            env_files=self.paths(m, "env_files", where),
            ephemeral=ephemeral,
            self_heal=self.boolean(m, "self_heal", f"{where}.self_heal"),
            allow_empty=self.boolean(m, "allow_empty", f"{where}.allow_empty"),
            max=max_,
            ttl=ttl,
            url=self.template(m, "url", where, ("branch", "app", "project")),
            deploy_timeout=self.duration(m, "timeout", f"{where}.timeout", DEFAULT_DEPLOY_TIMEOUT),
            image_check=self.image_check(m, where),
            image_check_interval=self.image_check_interval(m, where),
            policy=read_policy(self, m, where, ephemeral=ephemeral),
            hooks=read_hooks(self, m, where),
            health_gate=read_health_gate(self, m, where),
            jobs=read_jobs(self, m, where),
            sops=read_sops(self, m, where),
            host=read_host_ref(self, m, where, self.hosts, app_host),
            backend=read_backend(self, m, where),
            line=line,
        )
