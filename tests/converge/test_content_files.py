"""Secrets from `environment:` and configs from `content:`/`environment:`: written under the state directory
(0400 files, 0700 directories, named by digest), bind-mounted read-only, recreated on a new value, pruned,
removed by `down`; the value never in a label, a log line or the plan."""

from __future__ import annotations

import argparse
import json
import os
import secrets
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from reconciler import contentfiles
from reconciler.converge import Converger
from reconciler.engine import DockerEngine
from reconciler.errors import ComposeError, DeployError
from reconciler.plan import Action
from reconciler.spec import project_spec
from tests.converge.conftest import BUSYBOX, Stack, docker, inspect
from tests.converge.helpers import compose

pytestmark = pytest.mark.docker

STACK = f"""
services:
  app:
    image: {BUSYBOX}
    command: ["sleep", "3600"]
    stop_grace_period: 1s
    secrets:
      - token
      - {{source: token, target: copy, uid: "1000", gid: "1001", mode: 0440}}
    configs:
      - motd
      - {{source: greeting, target: /etc/greeting}}
secrets:
  token: {{environment: TOKEN}}
configs:
  motd: {{content: "welcome to ${{APP_NAME:-app}}\\n"}}
  greeting: {{environment: GREETING}}
"""


@pytest.fixture
def files_stack(stack: Stack, tmp_path: Path) -> Stack:
    """The stack with a converger that writes its files under ``tmp_path/state``."""
    stack.converger = Converger(DockerEngine(), state_dir=tmp_path / "state")
    return stack


def write(stack: Stack, token: str, greeting: str = "hi") -> None:
    stack.write(STACK, **{".env": f"TOKEN={token}\nGREETING={greeting}\n"})


def read(stack: Stack, path: str) -> str:
    return docker("exec", f"{stack.name}-app-1", "cat", path).stdout


def files(state: Path, stack: Stack, kind: str) -> list[Path]:
    directory = contentfiles.project_dir(state, stack.name) / kind
    return sorted(directory.iterdir()) if directory.is_dir() else []


def test_secret_from_environment_is_a_0400_file_mounted_read_only(files_stack: Stack, tmp_path: Path) -> None:
    """The container reads the value at /run/secrets/token; on the host it is a 0400 file in 0700 dirs."""
    stack, state, token = files_stack, tmp_path / "state", f"tok-{secrets.token_hex(8)}"
    write(stack, token)
    with capture_logs() as logs:
        stack.up()
    assert read(stack, "/run/secrets/token") == token
    assert read(stack, "/run/secrets/copy") == token
    assert read(stack, "/motd") == "welcome to app\n"
    assert read(stack, "/etc/greeting") == "hi"
    plain, owned = files(state, stack, "secrets")
    assert plain.name.startswith("token-") and plain.read_text() == token
    assert stat.S_IMODE(plain.stat().st_mode) == 0o400
    st = owned.stat()
    assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (0o440, 1000, 1001)
    for directory in (state / "files", plain.parent.parent, plain.parent):
        assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    mounts = {m["Destination"]: m for m in inspect(f"{stack.name}-app-1")["Mounts"]}
    assert mounts["/run/secrets/token"]["Source"] == str(plain) and not mounts["/run/secrets/token"]["RW"]
    info = json.dumps(inspect(f"{stack.name}-app-1")["Config"]["Labels"])
    assert token not in info and token not in json.dumps(logs)
    assert stack.plan().is_noop


def test_new_value_recreates_and_prunes_the_old_file(files_stack: Stack, tmp_path: Path) -> None:
    """A changed value recreates the container with the new file; the old file is removed after `up`."""
    stack, state = files_stack, tmp_path / "state"
    old, new = f"old-{secrets.token_hex(8)}", f"new-{secrets.token_hex(8)}"
    write(stack, old)
    stack.up()
    before = inspect(f"{stack.name}-app-1")["Id"]
    write(stack, new)
    with capture_logs() as logs:
        plan = stack.plan()
        assert [(c.action, c.fields) for c in plan.changes] == [(Action.RECREATE, ("secrets",))]
        stack.up()
    dumped = json.dumps(plan.to_dict())
    assert old not in dumped and new not in dumped
    assert new not in json.dumps(logs) and old not in json.dumps(logs)
    assert inspect(f"{stack.name}-app-1")["Id"] != before
    assert read(stack, "/run/secrets/token") == new
    assert [p.read_text() for p in files(state, stack, "secrets")] == [new, new]
    assert stack.plan().is_noop


def test_down_removes_the_project_files(files_stack: Stack, tmp_path: Path) -> None:
    """`down` removes the containers and then the project's files directory."""
    stack, state = files_stack, tmp_path / "state"
    write(stack, "x")
    stack.up()
    assert contentfiles.project_dir(state, stack.name).is_dir()
    stack.converger.down(stack.name, timeout=1)
    assert not contentfiles.project_dir(state, stack.name).exists()
    assert (state / "files").is_dir()


def test_unset_variable_is_named_never_a_value(stack: Stack) -> None:
    """`environment: VAR` with VAR unset is an error naming the variable and the secret."""
    stack.write(STACK, **{".env": "GREETING=hello-there\n"})
    with pytest.raises(ComposeError) as err:
        project_spec(stack.render())
    assert "'TOKEN'" in str(err.value) and "'token'" in str(err.value)
    assert "hello-there" not in str(err.value)


def test_a_converger_without_state_dir_refuses_before_any_change(stack: Stack) -> None:
    """Without a state directory there is nowhere to write the files: nothing is created."""
    write(stack, "x")
    with pytest.raises(DeployError) as err:
        Converger(DockerEngine()).up(stack.render(), timeout=10)
    assert err.value.reason == "FilesFailed"
    assert stack.containers() == {}


def test_cli_uses_xdg_state_home_and_keeps_values_out_of_its_output(stack: Stack, tmp_path: Path) -> None:
    """`reconciler up` writes under $XDG_STATE_HOME/reconciler; `plan --format json` and every log line
    (stderr) leave the value out; `down` removes the files."""
    token = f"cli-{secrets.token_hex(8)}"
    write(stack, token)
    env = {**os.environ, "XDG_STATE_HOME": str(tmp_path / "xdg")}
    compose = str(stack.dir / "compose.yaml")

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "reconciler", *args],
            capture_output=True,
            text=True,
            env=env,
            cwd=stack.dir,
            timeout=120,
        )

    up = cli("up", "-f", compose, "-p", stack.name, "--timeout", "30")
    assert up.returncode == 0, up.stderr
    assert read(stack, "/run/secrets/token") == token
    state = tmp_path / "xdg" / "reconciler"
    assert [p.read_text() for p in files(state, stack, "secrets")] == [token, token]
    write(stack, token + "-2")
    plan = cli("plan", "-f", compose, "-p", stack.name, "--format", "json")
    assert plan.returncode == 2, plan.stderr
    assert json.loads(plan.stdout)["changes"][0]["fields"] == ["secrets"]
    down = cli("down", "-p", stack.name, "--timeout", "1")
    assert down.returncode == 0, down.stderr
    assert not contentfiles.project_dir(state, stack.name).exists()
    for out in (up, plan, down):
        assert token not in out.stdout + out.stderr


def test_spec_hashes_the_digest_never_the_value(tmp_path: Path) -> None:
    """The normalized config, its hashes and the spec's repr carry a digest; a new value changes the hash."""
    from tests.converge.helpers import Rendered

    model = {
        "services": {
            "app": {"image": "x", "network_mode": "none", "secrets": [{"source": "token", "target": "token"}]}
        },
        "secrets": {"token": {"environment": "TOKEN"}},
    }
    one = project_spec(Rendered("p", str(tmp_path), (), model, {"TOKEN": "value-one"}))
    two = project_spec(Rendered("p", str(tmp_path), (), model, {"TOKEN": "value-two"}))
    svc = one.services[0]
    assert "value-one" not in json.dumps(svc.config) + repr(one)
    assert svc.config["secrets"][0]["target"] == "/run/secrets/token"
    assert svc.config_hash != two.services[0].config_hash
    assert [f.value for f in one.files] == [b"value-one"]


def test_cli_state_dir_is_the_configs_then_xdg_then_home(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`-c environments.yaml` gives its state_dir (the daemon's files); else $XDG_STATE_HOME/reconciler,
    else ~/.local/state/reconciler."""
    from reconciler.commands.converge import state_dir
    from tests.daemon.helpers import write_config

    config = write_config(tmp_path, tmp_path / "app.git", "tdmcli")
    assert state_dir(argparse.Namespace(config=str(config))) == tmp_path / "state"
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg"))
    assert state_dir(argparse.Namespace(config=None)) == tmp_path / "xdg" / "reconciler"
    monkeypatch.delenv("XDG_STATE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert state_dir(argparse.Namespace(config=None)) == tmp_path / "home" / ".local" / "state" / "reconciler"


def test_containers_see_what_compose_gives_them(files_stack: Stack) -> None:
    """Compose v2 copies such files into the container, we bind-mount them: same content, same targets."""
    stack = files_stack
    write(stack, f"tok-{secrets.token_hex(8)}", "hello")
    stack.up()
    theirs = f"{stack.name}-compose"
    targets = ("/run/secrets/token", "/run/secrets/copy", "/motd", "/etc/greeting")
    try:
        done = compose(theirs, "-f", str(stack.dir / "compose.yaml"), "up", "-d", cwd=stack.dir)
        assert done.returncode == 0, done.stderr
        for target in targets:
            ours = docker("exec", f"{stack.name}-app-1", "cat", target).stdout
            reference = docker("exec", f"{theirs}-app-1", "cat", target).stdout
            assert ours == reference != "", target
    finally:
        compose(theirs, "down", "-t", "1")
