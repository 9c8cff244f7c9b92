"""Load and validate ``environments.yaml`` into frozen dataclasses; every error names file, line and key.

Called by the daemon and by the CLI commands that take ``-c FILE``. The reference is docs/environments.md.
"""

from __future__ import annotations

import difflib
import fnmatch
import re
import string
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

import yaml

from reconciler.errors import ConfigError, InvalidNameError, Location
from reconciler.names import branch_slug, validate_project_name

DEFAULT_LISTEN = ("127.0.0.1", 9469)
DEFAULT_DRIFT_INTERVAL = 15.0
DEFAULT_POLL_INTERVAL = 30.0
DEFAULT_DEPLOY_TIMEOUT = 120.0
DEFAULT_MAX_CONCURRENT_DEPLOYS = 2

# App and environment names end up in labels, CLI targets and cache paths: keep them boring.
_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
_VAR_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_DURATION_RE = re.compile(r"^(?:\d+(?:\.\d+)?(?:ms|s|m|h|d|w))+$")
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
# Characters git never allows in a branch name (git-check-ref-format(1)); a glob needing one never matches.
_REF_FORBIDDEN = set(" ~^:\\?*[\x7f") | {chr(c) for c in range(32)}

_TOP_KEYS = ("state_dir", "listen", "drift_interval", "max_concurrent_deploys", "networks_pool", "apps")
_APP_KEYS = ("repo", "poll_interval", "webhook_secret", "webhook_secret_file", "environments")
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
)


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
    apps: tuple[AppConfig, ...]

    def app(self, name: str) -> AppConfig:
        for app in self.apps:
            if app.name == name:
                return app
        raise KeyError(name)

    def environments(self) -> Iterator[EnvConfig]:
        for app in self.apps:
            yield from app.environments


def glob_match(branch: str, patterns: tuple[str, ...]) -> bool:
    """fnmatch semantics, case-sensitive ('*' matches '/' too, as git branch names are paths)."""
    return any(_compiled(p).fullmatch(branch) for p in patterns)


_GLOB_CACHE: dict[str, re.Pattern[str]] = {}


def _compiled(pattern: str) -> re.Pattern[str]:
    rx = _GLOB_CACHE.get(pattern)
    if rx is None:
        rx = _GLOB_CACHE[pattern] = re.compile(fnmatch.translate(pattern))
    return rx


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


# --- YAML with line numbers ------------------------------------------------------------------------------


class _Map(dict[Any, Any]):
    """A YAML mapping that remembers where it and each of its keys are."""

    line = 0
    key_lines: dict[Any, int]


class _Seq(list[Any]):
    line = 0
    item_lines: list[int]


class _Loader(yaml.SafeLoader):
    pass


def _construct_map(loader: _Loader, node: yaml.MappingNode) -> _Map:
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":
            continue
        key = loader.construct_object(key_node, deep=True)
        try:
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None,
                    None,
                    f"duplicate key {key!r} (first at line {seen[key]})",
                    key_node.start_mark,
                )
            seen[key] = key_node.start_mark.line + 1
        except TypeError:
            raise yaml.constructor.ConstructorError(
                None, None, "a key must be a plain value, not a list or mapping", key_node.start_mark
            ) from None
    loader.flatten_mapping(node)
    result = _Map()
    result.line = node.start_mark.line + 1
    result.key_lines = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        result[key] = loader.construct_object(value_node, deep=True)
        result.key_lines[key] = key_node.start_mark.line + 1
    return result


def _construct_seq(loader: _Loader, node: yaml.SequenceNode) -> _Seq:
    result = _Seq(loader.construct_object(child, deep=True) for child in node.value)
    result.line = node.start_mark.line + 1
    result.item_lines = [child.start_mark.line + 1 for child in node.value]
    return result


_Loader.add_constructor("tag:yaml.org,2002:map", _construct_map)
_Loader.add_constructor("tag:yaml.org,2002:seq", _construct_seq)


def _plain(value: Any) -> Any:
    """Deep copy into plain dicts and lists (inline compose goes to the renderer as ordinary data)."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def _type_name(value: Any) -> str:
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return f"a boolean ({str(value).lower()})"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, int | float):
        return f"a number ({value})"
    if isinstance(value, str):
        return f"a string ({value!r})"
    return f"a {type(value).__name__} ({value})"


# --- validation -------------------------------------------------------------------------------------------


class _Parser:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.base = path.parent
        self.file = str(path)

    def fail(self, message: str, line: int | None, key: str | None, hint: str | None = None) -> ConfigError:
        return ConfigError(message, Location(file=self.file, line=line, key=key), hint=hint)

    # Each reader takes the containing mapping, the key and the dotted path of the key, and returns a
    # validated Python value (or the default when the key is absent).

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
        apps_map = self.mapping(doc, "apps", "apps", required=True)
        assert apps_map is not None
        if not apps_map:
            raise self.fail("`apps` is empty", doc.key_lines["apps"], "apps", hint="declare at least one app")
        apps = tuple(self.app(apps_map, name) for name in apps_map)
        self.check_unique(apps, apps_map)
        return Config(
            path=self.path,
            state_dir=Path(state_dir),
            listen=listen,
            drift_interval=drift,
            max_concurrent_deploys=concurrent or DEFAULT_MAX_CONCURRENT_DEPLOYS,
            networks_pool=pool,
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
        envs_map = self.mapping(m, "environments", f"{where}.environments", required=True)
        assert envs_map is not None
        if not envs_map:
            raise self.fail(
                "`environments` is empty",
                m.key_lines["environments"],
                f"{where}.environments",
                hint="declare at least one environment",
            )
        envs = tuple(self.environment(envs_map, name, env, f"{where}.environments") for env in envs_map)
        return AppConfig(
            name=name, repo=repo, poll_interval=poll, webhook_secret=secret, environments=envs, line=line
        )

    def environment(self, envs_map: _Map, app: str, name: Any, parent: str) -> EnvConfig:
        line = envs_map.key_lines[name]
        where = f"{parent}.{name}"
        self.check_name(name, line, where, "environment")
        m = self.mapping(envs_map, name, where, required=True)
        assert m is not None
        self.check_keys(m, _ENV_KEYS, where)
        branch = self.string(m, "branch", f"{where}.branch")
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
        self.check_cancelled(branches, exclude, m, where)
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
            ephemeral=self.boolean(m, "ephemeral", f"{where}.ephemeral"),
            self_heal=self.boolean(m, "self_heal", f"{where}.self_heal"),
            allow_empty=self.boolean(m, "allow_empty", f"{where}.allow_empty"),
            max=max_,
            ttl=ttl,
            url=self.template(m, "url", where, ("branch", "app", "project")),
            deploy_timeout=self.duration(m, "timeout", f"{where}.timeout", DEFAULT_DEPLOY_TIMEOUT),
            line=line,
        )

    # --- cross-checks ---

    def check_unique(self, apps: tuple[AppConfig, ...], apps_map: _Map) -> None:
        """Two environments must never be able to produce the same project name."""

        def env_line(env: EnvConfig, key: str) -> int:
            return int(apps_map[env.app]["environments"][env.name].key_lines.get(key, env.line))

        fixed: dict[str, EnvConfig] = {}
        patterns: dict[str, EnvConfig] = {}
        for app in apps:
            exact: dict[str, EnvConfig] = {}
            for env in app.environments:
                key = f"apps.{app.name}.environments.{env.name}"
                if env.branch is not None:
                    if env.branch in exact:
                        other = exact[env.branch]
                        raise self.fail(
                            f"branch {env.branch!r} is already taken by environment {other.name!r} "
                            f"(line {env_line(other, 'branch')})",
                            env_line(env, "branch"),
                            f"{key}.branch",
                            hint="each branch feeds at most one environment of an app",
                        )
                    exact[env.branch] = env
                    name = env.project_for(branch_slug(env.branch))
                    table, what = fixed, f"project {name!r}"
                else:
                    # Compare templates with {app} filled in: "test-{branch}" in two apps collides.
                    name = env.project.replace("{app}", app.name)
                    table, what = patterns, f"project template {env.project!r}"
                if name in table:
                    other = table[name]
                    raise self.fail(
                        f"{what} is already used by environment {other.key!r} "
                        f"(line {env_line(other, 'project')}): two environments would share one stack",
                        env_line(env, "project"),
                        f"{key}.project",
                        hint="give each environment its own project name (e.g. include {app})",
                    )
                table[name] = env

    def check_cancelled(
        self, branches: tuple[str, ...], exclude: tuple[str, ...], m: _Map, where: str
    ) -> None:
        for pattern in branches:
            for ex in exclude:
                if _covers(ex, pattern):
                    raise self.fail(
                        f"exclude {ex!r} removes every branch that {pattern!r} matches: "
                        "this glob can never select a branch",
                        m.key_lines["exclude"],
                        f"{where}.exclude",
                        hint="narrow `exclude` or remove the glob from `branches`",
                    )

    # --- typed readers ---

    def check_keys(self, m: _Map, allowed: tuple[str, ...], where: str) -> None:
        for key in m:
            if key not in allowed:
                close = difflib.get_close_matches(str(key), allowed, n=1)
                path = f"{where}.{key}" if where else str(key)
                raise self.fail(
                    f"unknown key {key!r}" + (f" (did you mean {close[0]!r}?)" if close else ""),
                    m.key_lines[key],
                    path,
                    hint=f"allowed here: {', '.join(allowed)}",
                )

    def check_name(self, name: Any, line: int, where: str, what: str) -> None:
        if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
            raise self.fail(
                f"invalid {what} name {name!r}: use lower-case letters, digits, '-' and '_' "
                "(at most 63, starting with a letter or digit)",
                line,
                where,
                hint="YAML reads yes/no/on/off as booleans and digits as numbers: quote such names",
            )

    def value(self, m: _Map, key: str, where: str, required: bool) -> Any:
        if key not in m:
            if required:
                raise self.fail(f"missing required key `{key}`", m.line, where)
            return None
        return m[key]

    def mapping(self, m: _Map, key: Any, where: str, *, required: bool = False) -> _Map | None:
        value = self.value(m, key, where, required)
        if value is None and not required and key not in m:
            return None
        if not isinstance(value, _Map):
            raise self.fail(f"`{where}` must be a mapping, not {_type_name(value)}", m.key_lines[key], where)
        return value

    def string(self, m: _Map, key: str, where: str, *, required: bool = False) -> str | None:
        value = self.value(m, key, where, required)
        if key not in m:
            return None
        if not isinstance(value, str):
            raise self.fail(
                f"`{key}` must be a string, not {_type_name(value)}",
                m.key_lines[key],
                where,
                hint="quote the value",
            )
        return value

    def boolean(self, m: _Map, key: str, where: str) -> bool:
        value = m.get(key, False)
        if not isinstance(value, bool):
            raise self.fail(
                f"`{key}` must be true or false, not {_type_name(value)}", m.key_lines[key], where
            )
        return value

    def integer(self, m: _Map, key: str, where: str, *, minimum: int) -> int | None:
        if key not in m:
            return None
        value = m[key]
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise self.fail(
                f"`{key}` must be a whole number >= {minimum}, not {_type_name(value)}",
                m.key_lines[key],
                where,
            )
        return value

    def duration(self, m: _Map, key: str, where: str, default: Any) -> Any:
        if key not in m:
            return default
        seconds = parse_duration(m[key])
        if seconds is None or seconds <= 0:
            raise self.fail(
                f"`{key}` must be a positive duration, not {_type_name(m[key])}",
                m.key_lines[key],
                where,
                hint="write a number of seconds or e.g. 15s, 5m, 2h, 14d, 1h30m",
            )
        return seconds

    def network_pool(self, doc: _Map) -> str | None:
        raw = self.string(doc, "networks_pool", "networks_pool")
        if raw is None:
            return None
        import ipaddress

        try:
            net = ipaddress.IPv4Network(raw.strip(), strict=True)
        except ValueError as exc:
            raise self.fail(
                f"`networks_pool` must be an IPv4 network in CIDR form, not {raw!r} ({exc})",
                doc.key_lines["networks_pool"],
                "networks_pool",
                hint="e.g. 10.210.0.0/16: each preview network gets a /24 of it",
            ) from None
        if net.prefixlen > 24:
            raise self.fail(
                f"`networks_pool` {raw!r} is smaller than one /24 network",
                doc.key_lines["networks_pool"],
                "networks_pool",
                hint="give a /16 to /24 (a /16 holds 256 preview networks)",
            )
        return str(net)

    def listen(self, doc: _Map) -> tuple[str, int]:
        if "listen" not in doc:
            return DEFAULT_LISTEN
        value = doc["listen"]
        host, port = "127.0.0.1", None
        if isinstance(value, int) and not isinstance(value, bool):
            port = value
        elif isinstance(value, str) and ":" in value:
            host, _, raw = value.rpartition(":")
            host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
            port = int(raw) if raw.isdigit() else None
        if port is None or not 0 <= port <= 65535 or not host:
            raise self.fail(
                f"`listen` must be HOST:PORT, not {_type_name(value)}",
                doc.key_lines["listen"],
                "listen",
                hint="e.g. 127.0.0.1:9469, 0.0.0.0:9469 or [::1]:9469 (port 0 picks a free port)",
            )
        return host, port

    def path_value(self, m: _Map, key: str, where: str, *, default: str) -> str:
        raw = self.string(m, key, where)
        if raw is not None and not raw.strip():
            raise self.fail(f"`{key}` is empty", m.key_lines[key], where)
        return str((self.base / Path(raw if raw is not None else default).expanduser()).resolve())

    def repo(self, repo: str, line: int, where: str) -> str:
        if not repo.strip() or repo.startswith("-"):
            raise self.fail(
                f"invalid repository {repo!r}", line, where, hint="give a git URL or a local path"
            )
        # git's own rule: "scheme://..." is a URL; "host:path" with no '/' before the ':' is scp-like ssh.
        head = repo.split(":", 1)[0]
        if "://" in repo or (":" in repo and "/" not in head and len(head) > 1):
            return repo
        return str((self.base / Path(repo).expanduser()).resolve())

    def secret(self, m: _Map, where: str) -> str | None:
        if "webhook_secret" in m and "webhook_secret_file" in m:
            raise self.fail(
                "give either `webhook_secret` or `webhook_secret_file`, not both",
                m.key_lines["webhook_secret_file"],
                f"{where}.webhook_secret_file",
            )
        inline = self.string(m, "webhook_secret", f"{where}.webhook_secret")
        if inline is not None:
            if not inline.strip():
                raise self.fail("`webhook_secret` is empty", m.key_lines["webhook_secret"], where)
            return inline
        raw = self.string(m, "webhook_secret_file", f"{where}.webhook_secret_file")
        if raw is None:
            return None
        line = m.key_lines["webhook_secret_file"]
        file = (self.base / Path(raw).expanduser()).resolve()
        try:
            secret = file.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
            raise self.fail(
                f"cannot read the webhook secret file {str(file)!r}: {reason}",
                line,
                f"{where}.webhook_secret_file",
            ) from None
        if not secret:
            raise self.fail(f"the webhook secret file {str(file)!r} is empty", line, where)
        return secret

    def strings(self, m: _Map, key: str, where: str, *, required: bool = False) -> list[tuple[str, int]]:
        """A list of strings with the line of each item; a single string is accepted as a list of one."""
        value = self.value(m, key, where, required)
        if key not in m:
            return []
        if isinstance(value, str):
            return [(value, m.key_lines[key])]
        if not isinstance(value, _Seq):
            raise self.fail(
                f"`{key}` must be a list of strings, not {_type_name(value)}", m.key_lines[key], where
            )
        out = []
        for item, line in zip(value, value.item_lines, strict=True):
            if not isinstance(item, str):
                raise self.fail(
                    f"each entry of `{key}` must be a string, not {_type_name(item)}",
                    line,
                    where,
                    hint="quote the value",
                )
            out.append((item, line))
        return out

    def globs(self, m: _Map, key: str, where: str) -> tuple[str, ...]:
        out = []
        for pattern, line in self.strings(m, key, f"{where}.{key}"):
            problem = glob_problem(pattern)
            if problem:
                raise self.fail(
                    f"glob {pattern!r} can never match a branch: {problem}",
                    line,
                    f"{where}.{key}",
                    hint="globs use fnmatch syntax (* ? [abc]); '*' also matches '/'",
                )
            out.append(pattern)
        return tuple(out)

    def paths(
        self, m: _Map, key: str, where: str, *, required: bool = False, in_repo: bool = False
    ) -> tuple[str, ...]:
        out = []
        for raw, line in self.strings(m, key, f"{where}.{key}", required=required):
            if not raw.strip():
                raise self.fail(f"empty path in `{key}`", line, f"{where}.{key}")
            if in_repo:
                # Paths inside the checkout: refuse anything that escapes it.
                norm = Path(raw).as_posix()
                parts = Path(norm).parts
                if Path(raw).is_absolute() or ".." in parts or raw.startswith("~"):
                    raise self.fail(
                        f"{raw!r} must be a path inside the repository",
                        line,
                        f"{where}.{key}",
                        hint="use a relative path such as docker-compose.yml; files outside git go "
                        "in `overlays`",
                    )
                out.append(str(Path(norm)))
            else:
                # Checked now, not at the first deploy: a typo should stop the daemon from starting.
                file = (self.base / Path(raw).expanduser()).resolve()
                if not file.is_file():
                    raise self.fail(
                        f"{str(file)!r} is not a readable file",
                        line,
                        f"{where}.{key}",
                        hint=f"paths in `{key}` are relative to {self.file}",
                    )
                out.append(str(file))
        return tuple(out)

    def env(self, m: _Map, where: str) -> Mapping[str, str]:
        value = self.mapping(m, "env", f"{where}.env")
        if value is None:
            return MappingProxyType({})
        out: dict[str, str] = {}
        for key, item in value.items():
            line = value.key_lines[key]
            if not isinstance(key, str) or not _VAR_RE.fullmatch(key):
                raise self.fail(
                    f"invalid variable name {key!r}", line, f"{where}.env", hint="use [A-Za-z_][A-Za-z0-9_]*"
                )
            if isinstance(item, bool) or not isinstance(item, str | int | float):
                raise self.fail(
                    f"variable {key} must be a string or a number, not {_type_name(item)}",
                    line,
                    f"{where}.env.{key}",
                    hint="quote the value",
                )
            out[key] = str(item)
        return MappingProxyType(out)

    def template(
        self, m: _Map, key: str, where: str, fields: tuple[str, ...], *, required: bool = False
    ) -> str | None:
        value = self.string(m, key, f"{where}.{key}", required=required)
        if value is None:
            return None
        line, path = m.key_lines[key], f"{where}.{key}"
        allowed = ", ".join("{" + f + "}" for f in fields)
        try:
            parsed = list(string.Formatter().parse(value))
        except ValueError as exc:
            raise self.fail(
                f"invalid template {value!r}: {exc}",
                line,
                path,
                hint=f"placeholders are {allowed}; write {{{{ and }}}} for literal braces",
            ) from None
        for _, name, spec, conversion in parsed:
            if name is not None and (name not in fields or spec or conversion):
                raise self.fail(
                    f"unknown placeholder {{{name}}} in {value!r}", line, path, hint=f"use {allowed}"
                )
        if not value.strip():
            raise self.fail(f"`{key}` is empty", line, path)
        return value


def parse_duration(value: Any) -> float | None:
    """Seconds from a number or a string like ``15s``, ``5m``, ``2h``, ``14d``, ``1h30m``; None if invalid."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if not isinstance(value, str):
        return None
    text = value.strip().lower()
    try:
        return float(text)
    except ValueError:
        pass
    if not _DURATION_RE.fullmatch(text):
        return None
    return sum(float(n) * _UNITS[u] for n, u in _DURATION_PART.findall(text))


def glob_problem(pattern: str) -> str | None:
    """Why ``pattern`` can never match a git branch name, or None if it can."""
    if not pattern:
        return "it is empty"
    literal = []  # the characters the pattern requires literally, with wildcards as '\0'
    i = 0
    while i < len(pattern):
        c = pattern[i]
        if c in "*?":
            literal.append("\0")
        elif c == "[":
            # fnmatch: a '[' with no closing ']' is a literal '[' (which git forbids in branch names).
            j = i + 1
            if j < len(pattern) and pattern[j] == "!":
                j += 1
            if j < len(pattern) and pattern[j] == "]":
                j += 1
            close = pattern.find("]", j)
            if close < 0:
                return "'[' is never closed"
            literal.append("\0")
            i = close
        else:
            if c in _REF_FORBIDDEN:
                return f"branch names never contain {c!r}"
            literal.append(c)
        i += 1
    text = "".join(literal)
    for bad in ("..", "@{", "//"):
        if bad in text:
            return f"branch names never contain {bad!r}"
    if text.startswith("/"):
        return "branch names never start with '/'"
    if text.endswith(("/", ".", ".lock")):
        return "branch names never end with '/', '.' or '.lock'"
    return None


def _literal_prefix(pattern: str) -> str:
    cut = min((i for i, c in enumerate(pattern) if c in "*?["), default=len(pattern))
    return pattern[:cut]


def _covers(exclude: str, pattern: str) -> bool:
    """True if every branch ``pattern`` matches is certainly matched by ``exclude`` (sound, not complete)."""
    if exclude == pattern or set(exclude) == {"*"}:
        return True
    if _literal_prefix(pattern) == pattern:  # a literal "glob"
        return glob_match(pattern, (exclude,))
    stem = exclude[:-1]
    # "P*" removes everything starting with P; a pattern whose fixed prefix starts with P is gone.
    return (
        exclude.endswith("*") and _literal_prefix(stem) == stem and _literal_prefix(pattern).startswith(stem)
    )
