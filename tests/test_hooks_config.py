"""`hooks:` and `health_gate:` in environments.yaml: parsed into steps and a gate, every error located."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from reconciler.config import load_config
from reconciler.config.hooks import DEFAULT_GATE_TIMEOUT, DEFAULT_HOOK_TIMEOUT, HealthGate, HookStep
from reconciler.errors import ConfigError


def _config(tmp_path: Path, env_extra: str) -> Path:
    body = textwrap.dedent(
        """\
        apps:
          demo:
            repo: /srv/demo.git
            environments:
              production:
                branch: master
                project: demo
                compose: [docker-compose.yml]
        """
    )
    body += textwrap.indent(textwrap.dedent(env_extra), " " * 8)
    path = tmp_path / "environments.yaml"
    path.write_text(body)
    return path


def _env(tmp_path: Path, env_extra: str):  # type: ignore[no-untyped-def]
    return load_config(_config(tmp_path, env_extra)).apps[0].environments[0]


def _error(tmp_path: Path, env_extra: str) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load_config(_config(tmp_path, env_extra))
    return info.value


def test_issue_example(tmp_path: Path) -> None:
    """The issue's hooks: a string is split into words as a shell would, a list kept; timeouts default."""
    env = _env(
        tmp_path,
        """\
        hooks:
          pre_deploy:  [{service: db, run: "pg_dump -Fc -U postgres -f /backups/pre-deploy.dump app"}]
          post_deploy:
            - {service: web, run: "app migrate --noinput", timeout: 5m}
            - {service: web, run: [sh, -c, "echo 'a b' > /x"]}
        health_gate: {url: "http://127.0.0.1:8000/", host: "{HOST}", expect_status: 204, timeout: 90s}
        """,
    )
    assert env.hooks.pre_deploy == (
        HookStep("db", ("pg_dump", "-Fc", "-U", "postgres", "-f", "/backups/pre-deploy.dump", "app")),
    )
    assert env.hooks.pre_deploy[0].timeout == DEFAULT_HOOK_TIMEOUT
    assert env.hooks.post_deploy == (
        HookStep("web", ("app", "migrate", "--noinput"), 300.0),
        HookStep("web", ("sh", "-c", "echo 'a b' > /x")),
    )
    assert env.health_gate == HealthGate("http://127.0.0.1:8000/", "{HOST}", 204, 90.0)


def test_quotes_are_split_not_interpreted(tmp_path: Path) -> None:
    """Quotes group words; `;`, `$` and `>` stay literal arguments (no shell on the host)."""
    run = """echo 'hello world' \\"$HOME\\"; rm -rf /"""
    env = _env(tmp_path, f'hooks: {{post_deploy: [{{service: web, run: "{run}"}}]}}\n')
    assert env.hooks.post_deploy[0].command == ("echo", "hello world", "$HOME;", "rm", "-rf", "/")


def test_defaults(tmp_path: Path) -> None:
    """No hooks and no gate unless configured; a gate expects 200 within 60s by default."""
    env = _env(tmp_path, "")
    assert env.hooks.pre_deploy == () and env.hooks.post_deploy == () and env.health_gate is None
    gate = _env(tmp_path, 'health_gate: {url: "http://127.0.0.1:1/"}\n').health_gate
    assert gate == HealthGate("http://127.0.0.1:1/", None, 200, DEFAULT_GATE_TIMEOUT)


@pytest.mark.parametrize(
    ("extra", "key", "words"),
    [
        ("hooks: {during: []}\n", "hooks", "during"),
        ("hooks: {pre_deploy: {service: db}}\n", "pre_deploy", "must be a list"),
        ("hooks: {pre_deploy: [{service: db}]}\n", "pre_deploy.run", "needs `run`"),
        ("hooks: {pre_deploy: [{run: ls}]}\n", "pre_deploy.service", "service"),
        ('hooks: {pre_deploy: [{service: db, run: "echo \'oops"}]}\n', "pre_deploy.run", "cannot split"),
        ('hooks: {pre_deploy: [{service: db, run: ""}]}\n', "pre_deploy.run", "empty"),
        ("hooks: {pre_deploy: [{service: db, run: [ls, 1]}]}\n", "pre_deploy.run", "string"),
        ("hooks: {pre_deploy: [{service: db, run: ls, timeout: soon}]}\n", "pre_deploy.timeout", "duration"),
        ('health_gate: {url: "127.0.0.1:8000"}\n', "health_gate.url", "http://"),
        ('health_gate: {url: "http://x/", expect_status: 42}\n', "health_gate.expect_status", "100"),
        ('health_gate: {url: "http://x/", expect_status: 700}\n', "health_gate.expect_status", "100-599"),
        ('health_gate: {url: "http://x/", timeout: -1}\n', "health_gate.timeout", "duration"),
        ('health_gate: {host: "{HOST}"}\n', "health_gate.url", "url"),
    ],
)
def test_errors_are_located(tmp_path: Path, extra: str, key: str, words: str) -> None:
    """Every mistake names the file, a line and the key."""
    err = _error(tmp_path, extra)
    assert err.location is not None and err.location.line is not None
    assert key in str(err) and words in str(err)
