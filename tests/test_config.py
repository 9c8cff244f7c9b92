"""environments.yaml: a valid file becomes frozen dataclasses; every mistake is a located ConfigError."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from reconciler.cli import main as cli_main
from reconciler.config import (
    AppConfig,
    Config,
    EnvConfig,
    glob_problem,
    load_config,
    parse_duration,
)
from reconciler.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent

ISSUE_EXAMPLE = """\
state_dir: /var/lib/reconciler
listen: 127.0.0.1:9469
drift_interval: 15s
apps:
  mrs:
    repo: https://github.com/betagouv/mrs.git
    poll_interval: 30s
    environments:
      production:
        branch: master
        project: mrs-production
        compose: [docker-compose.yml, docker-compose.persist.yml]
        overlays: [compose/traefik.yml]
        override:
          services: {django: {restart: unless-stopped}}
        env: {HOME: /home/mrs-production, HOST: mrs.example.org}
        env_files: [secrets/mrs-production.env]
        self_heal: true
      staging:
        branch: develop
        project: mrs-staging
        compose: [docker-compose.yml, docker-compose.persist.yml, docker-compose.maildev.yml]
      preview:
        branches: ["*"]
        exclude: ["dependabot/*"]
        project: "test-{branch}"
        compose: [docker-compose.yml, docker-compose.maildev.yml]
        ephemeral: true
        max: 20
        ttl: 14d
"""

MINIMAL = """\
apps:
  app:
    repo: https://example.org/app.git
    environments:
      production:
        branch: master
        project: app-production
        compose: docker-compose.yml
"""


@pytest.fixture
def write(tmp_path: Path):
    """Write a config (plus the overlay and env files the issue example references) and return its path."""
    (tmp_path / "compose").mkdir()
    (tmp_path / "compose/traefik.yml").write_text("services: {}\n")
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets/mrs-production.env").write_text("SECRET_KEY=x\n")

    def _write(text: str) -> Path:
        path = tmp_path / "environments.yaml"
        path.write_text(textwrap.dedent(text))
        return path

    return _write


def error_of(path: Path) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load_config(path)
    return info.value


def test_issue_example_becomes_dataclasses(write, tmp_path: Path) -> None:
    """The example from the issue loads with every key typed, defaulted and resolved."""
    config = load_config(write(ISSUE_EXAMPLE))
    assert isinstance(config, Config)
    assert config.path == tmp_path / "environments.yaml"
    assert config.state_dir == Path("/var/lib/reconciler")
    assert config.listen == ("127.0.0.1", 9469)
    assert config.drift_interval == 15.0
    assert config.max_concurrent_deploys == 2
    (app,) = config.apps
    assert isinstance(app, AppConfig)
    assert (app.name, app.repo, app.poll_interval, app.webhook_secret) == (
        "mrs",
        "https://github.com/betagouv/mrs.git",
        30.0,
        None,
    )
    prod, staging, preview = app.environments
    assert isinstance(prod, EnvConfig)
    assert prod.app == "mrs" and prod.name == "production" and prod.branch == "master"
    assert prod.project == "mrs-production"
    assert prod.compose == ("docker-compose.yml", "docker-compose.persist.yml")
    assert prod.overlays == (str(tmp_path / "compose/traefik.yml"),)
    assert prod.override == {"services": {"django": {"restart": "unless-stopped"}}}
    assert dict(prod.env) == {"HOME": "/home/mrs-production", "HOST": "mrs.example.org"}
    assert prod.env_files == (str(tmp_path / "secrets/mrs-production.env"),)
    assert prod.self_heal and not prod.ephemeral and prod.deploy_timeout == 120.0
    assert staging.compose[-1] == "docker-compose.maildev.yml" and not staging.self_heal
    assert preview.branch is None and preview.branches == ("*",) and preview.exclude == ("dependabot/*",)
    assert preview.ephemeral and preview.max == 20 and preview.ttl == 14 * 86400
    assert preview.project_for("feature-login") == "test-feature-login"
    assert [e.name for e in config.environments()] == ["production", "staging", "preview"]
    assert hash(config) == hash(load_config(write(ISSUE_EXAMPLE)))


def test_defaults_and_relative_paths(write, tmp_path: Path) -> None:
    """Optional keys get their documented defaults; relative paths resolve against the file's directory."""
    config = load_config(
        write(
            """\
            apps:
              app:
                repo: ./repos/app.git
                environments:
                  production: {branch: master, project: app-production, compose: docker-compose.yml}
            """
        )
    )
    assert config.state_dir == tmp_path / "state"
    assert config.listen == ("127.0.0.1", 9469)
    assert config.drift_interval == 15.0
    assert config.apps[0].repo == str(tmp_path / "repos/app.git")
    assert config.apps[0].poll_interval == 30.0
    env = config.apps[0].environments[0]
    assert env.compose == ("docker-compose.yml",) and env.overlays == () and env.override is None
    assert (env.ephemeral, env.self_heal, env.max, env.ttl, env.url) == (False, False, None, None, None)


def test_extra_keys(write, tmp_path: Path) -> None:
    """webhook_secret_file, url, timeout, max_concurrent_deploys and listen forms are understood."""
    (tmp_path / "hook.secret").write_text("s3cret\n")
    config = load_config(
        write(
            """\
            listen: "[::1]:0"
            max_concurrent_deploys: 4
            apps:
              app:
                repo: git@github.com:org/app.git
                webhook_secret_file: hook.secret
                environments:
                  preview:
                    branches: feature/*
                    project: "{app}-{branch}"
                    compose: [compose.yaml]
                    url: "https://{branch}.{app}.example.org/?p={project}"
                    timeout: 1h30m
            """
        )
    )
    assert config.listen == ("::1", 0)
    assert config.max_concurrent_deploys == 4
    app = config.apps[0]
    assert app.repo == "git@github.com:org/app.git"
    assert app.webhook_secret == "s3cret"
    assert "s3cret" not in repr(app)
    env = app.environments[0]
    assert env.branches == ("feature/*",)
    assert env.deploy_timeout == 5400.0
    assert env.url_for("x", "app-x") == "https://x.app.example.org/?p=app-x"


def test_root_environments_yaml_loads() -> None:
    """The example at the repository root is valid and mirrors the handbooks."""
    config = load_config(ROOT / "environments.yaml")
    app = config.app("demo")
    prod, staging, preview = (app.environment(n) for n in ("production", "staging", "preview"))
    assert prod.branch == "master" and "docker-compose.persist.yml" in prod.compose
    assert any(o.endswith("traefik.yml") for o in prod.overlays)
    assert staging.branch == "develop" and "docker-compose.persist.yml" in staging.compose
    assert "docker-compose.maildev.yml" in staging.compose
    assert preview.ephemeral and preview.branches == ("*",) and preview.exclude == ("dependabot/*",)
    assert preview.project == "test-{branch}" and "docker-compose.maildev.yml" in preview.compose
    assert preview.max == 20 and preview.ttl == 14 * 86400
    assert app.repo == str(ROOT / "state/demo.git")


# (yaml text, line, key, words the message must contain)
ERRORS = [
    pytest.param(
        MINIMAL.replace("        compose:", "        brnach: x\n        compose:"),
        8,
        "apps.app.environments.production.brnach",
        ["unknown key", "did you mean 'branch'"],
        id="unknown-key",
    ),
    pytest.param("state_dir: x\nport: 1\n" + MINIMAL, 2, "port", ["unknown key 'port'"], id="unknown-top"),
    pytest.param(
        MINIMAL.replace("project: app-production", "project: 42"),
        7,
        "apps.app.environments.production.project",
        ["must be a string", "number"],
        id="wrong-type",
    ),
    pytest.param(
        MINIMAL.replace("    environments:", "    poll_interval: soon\n    environments:"),
        4,
        "apps.app.poll_interval",
        ["positive duration", "'soon'"],
        id="bad-duration",
    ),
    pytest.param(
        "drift_interval: 0s\n" + MINIMAL,
        1,
        "drift_interval",
        ["positive duration"],
        id="zero-duration",
    ),
    pytest.param(
        MINIMAL.replace("        branch: master\n", ""),
        5,
        "apps.app.environments.production",
        ["exactly one of `branch`", "`branches`"],
        id="neither-branch",
    ),
    pytest.param(
        MINIMAL.replace("branch: master", "branch: master\n        branches: ['*']"),
        5,
        "apps.app.environments.production",
        ["exactly one of"],
        id="both-branch",
    ),
    pytest.param(
        MINIMAL.replace("branch: master", "branches: ['*']\n        exclude: ['*']").replace(
            "app-production", "app-{branch}"
        ),
        7,
        "apps.app.environments.production.exclude",
        ["never select a branch"],
        id="exclude-cancels-all",
    ),
    pytest.param(
        MINIMAL.replace("branch: master", "branches: ['feature/*']\n        exclude: ['feat*']").replace(
            "app-production", "app-{branch}"
        ),
        7,
        "apps.app.environments.production.exclude",
        ["'feat*' removes every branch"],
        id="exclude-prefix-covers",
    ),
    pytest.param(
        MINIMAL.replace("branch: master", "branches: ['ok/*', 'has space*']").replace(
            "app-production", "app-{branch}"
        ),
        6,
        "apps.app.environments.production.branches",
        ["can never match a branch", "' '"],
        id="glob-impossible",
    ),
    pytest.param(
        MINIMAL.replace("branch: master", "branches:\n          - ''").replace(
            "app-production", "app-{branch}"
        ),
        7,
        "apps.app.environments.production.branches",
        ["it is empty"],
        id="glob-empty",
    ),
    pytest.param(
        MINIMAL.replace("branch: master", "branches: []").replace("app-production", "app-{branch}"),
        6,
        "apps.app.environments.production.branches",
        ["`branches` is empty"],
        id="branches-empty-list",
    ),
    pytest.param(
        MINIMAL.replace("branch: master", "branches: ['*']"),
        7,
        "apps.app.environments.production.project",
        ["must contain {branch}"],
        id="template-without-branch",
    ),
    pytest.param(
        MINIMAL.replace("app-production", "App_Production"),
        7,
        "apps.app.environments.production.project",
        ["invalid project name 'App_Production'"],
        id="invalid-fixed-project",
    ),
    pytest.param(
        MINIMAL.replace("app-production", "App-{branch}").replace("branch: master", "branches: ['*']"),
        7,
        "apps.app.environments.production.project",
        ["gives 'App-x'"],
        id="invalid-template-project",
    ),
    pytest.param(
        MINIMAL.replace("app-production", "app-{env}"),
        7,
        "apps.app.environments.production.project",
        ["unknown placeholder {env}"],
        id="unknown-placeholder",
    ),
    pytest.param(
        MINIMAL + "      staging:\n        branch: develop\n        project: app-production\n"
        "        compose: [a.yml]\n",
        11,
        "apps.app.environments.staging.project",
        ["'app-production' is already used by environment 'app/production' (line 7)"],
        id="same-fixed-project",
    ),
    pytest.param(
        MINIMAL + "  other:\n    repo: /srv/other.git\n    environments:\n      prod:\n        branch: main\n"
        "        project: app-production\n        compose: [a.yml]\n",
        14,
        "apps.other.environments.prod.project",
        ["already used by environment 'app/production'"],
        id="same-fixed-project-across-apps",
    ),
    pytest.param(
        MINIMAL.replace("app-production", "'{app}-{branch}'")
        + "  app2:\n    repo: /srv/other.git\n    environments:\n      prod:\n        branch: master\n"
        "        project: app-master\n        compose: [a.yml]\n",
        14,
        "apps.app2.environments.prod.project",
        ["'app-master' is already used"],
        id="fixed-template-renders-same",
    ),
    pytest.param(
        MINIMAL
        + "      a:\n        branches: ['a/*']\n        project: 'test-{branch}'\n        compose: [a.yml]\n"
        "      b:\n        branches: ['b/*']\n        project: 'test-{branch}'\n        compose: [a.yml]\n",
        15,
        "apps.app.environments.b.project",
        ["template 'test-{branch}' is already used by environment 'app/a'"],
        id="same-template",
    ),
    pytest.param(
        MINIMAL
        + "      staging:\n        branch: master\n        project: app-staging\n        compose: [a.yml]\n",
        10,
        "apps.app.environments.staging.branch",
        ["branch 'master' is already taken by environment 'production'"],
        id="same-exact-branch",
    ),
    pytest.param(
        MINIMAL.replace("compose: docker-compose.yml", "compose: [../outside.yml]"),
        8,
        "apps.app.environments.production.compose",
        ["must be a path inside the repository"],
        id="compose-escapes-repo",
    ),
    pytest.param(
        MINIMAL.replace("compose: docker-compose.yml", "compose: []"),
        8,
        "apps.app.environments.production.compose",
        ["`compose` is empty"],
        id="compose-empty",
    ),
    pytest.param(
        MINIMAL.replace("compose: docker-compose.yml", "compose: x.yml\n        overlays: [missing.yml]"),
        9,
        "apps.app.environments.production.overlays",
        ["is not a readable file"],
        id="overlay-missing",
    ),
    pytest.param(
        MINIMAL.replace("compose: docker-compose.yml", "compose: x.yml\n        max: 3"),
        9,
        "apps.app.environments.production.max",
        ["only applies to environments with `branches`"],
        id="max-on-fixed",
    ),
    pytest.param(
        MINIMAL.replace("branch: master", "branches: ['*']\n        max: 0").replace(
            "app-production", "app-{branch}"
        ),
        7,
        "apps.app.environments.production.max",
        ["whole number >= 1"],
        id="max-zero",
    ),
    pytest.param(
        MINIMAL.replace("compose: docker-compose.yml", "compose: x.yml\n        ephemeral: yes please"),
        9,
        "apps.app.environments.production.ephemeral",
        ["true or false"],
        id="bool-wrong",
    ),
    pytest.param(
        MINIMAL.replace("compose: docker-compose.yml", "compose: x.yml\n        override: [1]"),
        9,
        "apps.app.environments.production.override",
        ["must be a mapping"],
        id="override-not-mapping",
    ),
    pytest.param(
        MINIMAL.replace("compose: docker-compose.yml", "compose: x.yml\n        env: {DEBUG: yes}"),
        9,
        "apps.app.environments.production.env.DEBUG",
        ["string or a number"],
        id="env-bool",
    ),
    pytest.param(
        MINIMAL.replace("  app:", "  My App:"),
        2,
        "apps.My App",
        ["invalid app name"],
        id="bad-app-name",
    ),
    pytest.param(
        MINIMAL.replace("      production:", "      yes:"),
        5,
        "apps.app.environments.True",
        ["invalid environment name True", "quote"],
        id="yaml-boolean-name",
    ),
    pytest.param(
        MINIMAL.replace(
            "    environments:", "    webhook_secret: a\n    webhook_secret_file: b\n    environments:"
        ),
        5,
        "apps.app.webhook_secret_file",
        ["either `webhook_secret` or `webhook_secret_file`"],
        id="two-secrets",
    ),
    pytest.param("listen: localhost\n" + MINIMAL, 1, "listen", ["HOST:PORT"], id="listen-without-port"),
    pytest.param(
        MINIMAL + "  app:\n    repo: x\n", 9, None, ["duplicate key 'app' (first at line 2)"], id="duplicate"
    ),
    pytest.param("apps: [\n", 2, None, ["invalid YAML"], id="yaml-syntax"),
    pytest.param("- a\n- b\n", 1, None, ["must be a mapping with an `apps` key"], id="not-a-mapping"),
    pytest.param("state_dir: x\n", 1, "apps", ["missing required key `apps`"], id="no-apps"),
    pytest.param(
        MINIMAL.replace("    repo: https://example.org/app.git\n", ""),
        3,
        "apps.app.repo",
        ["missing required key `repo`"],
        id="no-repo",
    ),
]


@pytest.mark.parametrize(("text", "line", "key", "words"), ERRORS)
def test_errors_name_file_line_and_key(
    write, tmp_path: Path, text: str, line: int, key: str | None, words: list[str]
) -> None:
    """Each mistake raises ConfigError whose message names the file, the line and the key."""
    path = write(text)
    err = error_of(path)
    assert err.location.file == str(path)
    assert err.location.line == line
    assert err.location.key == key
    message = str(err)
    assert message.startswith(f"{path}:{line}")
    if key:
        assert repr(key) in message
    for word in words:
        assert word in message


def test_cli_prints_the_error_without_traceback(write, capsys: pytest.CaptureFixture[str]) -> None:
    """A bad file makes the CLI exit 1 with one located message, never a traceback."""
    path = write(MINIMAL.replace("project: app-production", "project: [x]"))
    assert cli_main(["status", "-c", str(path)]) == 1
    err = capsys.readouterr().err
    assert f"{path}:7" in err and "Traceback" not in err


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    """A path that does not exist is reported as such."""
    err = error_of(tmp_path / "nope.yaml")
    assert "cannot read" in str(err) and str(tmp_path / "nope.yaml") in str(err)


def test_yaml_anchors_and_merge_keys_work(write) -> None:
    """Shared settings can be written once with anchors and `<<` merge keys."""
    config = load_config(
        write(
            """\
            apps:
              app:
                repo: /srv/app.git
                environments:
                  production: &base
                    branch: master
                    project: app-production
                    compose: [docker-compose.yml]
                    self_heal: true
                  staging:
                    <<: *base
                    branch: develop
                    project: app-staging
            """
        )
    )
    staging = config.apps[0].environment("staging")
    assert staging.branch == "develop" and staging.self_heal and staging.compose == ("docker-compose.yml",)


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("15s", 15),
        ("5m", 300),
        ("2h", 7200),
        ("14d", 14 * 86400),
        ("1w", 604800),
        ("1h30m", 5400),
        ("500ms", 0.5),
        (30, 30),
        (2.5, 2.5),
        ("45", 45),
        ("1.5h", 5400),
        ("soon", None),
        ("5 m", None),
        ("", None),
        (True, None),
        (None, None),
    ],
)
def test_durations(value: object, seconds: float | None) -> None:
    """Durations are numbers of seconds or number+unit strings."""
    assert parse_duration(value) == seconds


@pytest.mark.parametrize(
    ("pattern", "valid"),
    [
        ("*", True),
        ("feature/*", True),
        ("release-[0-9]*", True),
        ("fix/?", True),
        ("[!d]*", True),
        ("", False),
        ("a b", False),
        ("a..b*", False),
        ("x:*", False),
        ("/x*", False),
        ("x/", False),
        ("*.lock", False),
        ("feat[", False),
        ("a~1", False),
    ],
)
def test_glob_problems(pattern: str, valid: bool) -> None:
    """Globs that could never match a git branch name are recognized."""
    assert (glob_problem(pattern) is None) is valid


def test_networks_pool_and_allow_empty(write) -> None:
    """`networks_pool` is an IPv4 CIDR of at least a /24; `allow_empty` a boolean, off by default."""
    cfg = load_config(write("networks_pool: 10.210.0.0/16\n" + MINIMAL))
    assert cfg.networks_pool == "10.210.0.0/16"
    assert cfg.apps[0].environments[0].allow_empty is False
    cfg = load_config(write(MINIMAL + "        allow_empty: true\n"))
    assert cfg.networks_pool is None
    assert cfg.apps[0].environments[0].allow_empty is True


@pytest.mark.parametrize(
    ("pool", "words"),
    [
        ("10.210.0.1/16", "CIDR"),
        ("banana", "CIDR"),
        ("10.210.0.0/28", "smaller than one /24"),
        ("fd00::/64", "CIDR"),
    ],
)
def test_bad_networks_pool_is_located(write, pool: str, words: str) -> None:
    """A pool that is not an IPv4 network of a /24 or more is refused with file, line and key."""
    path = write(f"networks_pool: {pool!r}\n" + MINIMAL)
    err = error_of(path)
    assert err.location.line == 1 and err.location.key == "networks_pool"
    assert words in str(err)
