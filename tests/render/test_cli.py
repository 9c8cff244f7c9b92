"""`reconciler render` as a user runs it: exit codes, output formats, messages without tracebacks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

from tests.render.harness import HOME


def run(cwd: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    environ = {"PATH": os.environ.get("PATH", ""), "HOME": HOME, **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "reconciler", "render", *args],
        cwd=cwd,
        env={**environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def write(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


def test_json_output_of_two_files(tmp_path: Path) -> None:
    """-f twice, --project-directory and --format json print the merged model and exit 0."""
    write(
        tmp_path,
        {
            "a.yml": "services:\n  web:\n    image: nginx\n    ports: ['8080:80']\n",
            "b.yml": "services:\n  web:\n    environment: ['MODE=${MODE:-dev}']\n",
        },
    )
    result = run(tmp_path, "-f", "a.yml", "-f", "b.yml", "--project-directory", ".", "--format", "json")
    assert result.returncode == 0, result.stderr
    model = json.loads(result.stdout)
    assert model["services"]["web"]["environment"] == {"MODE": "dev"}
    assert model["services"]["web"]["ports"][0]["published"] == "8080"


def test_yaml_output_is_the_same_model(tmp_path: Path) -> None:
    """The default YAML output parses to the same model as the JSON output."""
    write(tmp_path, {"compose.yaml": "services:\n  app:\n    image: busybox\n    command: echo $$HOME\n"})
    as_yaml = run(tmp_path, "-p", "demo")
    as_json = run(tmp_path, "-p", "demo", "--format", "json")
    assert as_yaml.returncode == 0 and as_json.returncode == 0
    assert yaml.safe_load(as_yaml.stdout) == json.loads(as_json.stdout)
    assert yaml.safe_load(as_yaml.stdout)["name"] == "demo"


def test_environment_env_file_and_profile_flags(tmp_path: Path) -> None:
    """--env-file and --profile are honoured, and the process environment wins over env files."""
    write(
        tmp_path,
        {
            "vars.env": "TAG=from-file\nOTHER=from-file\n",
            "compose.yaml": (
                "services:\n  app:\n    image: busybox:${TAG}\n    environment: ['OTHER=${OTHER}']\n"
                "  debug:\n    image: busybox\n    profiles: [debug]\n"
            ),
        },
    )
    result = run(
        tmp_path, "--env-file", "vars.env", "--profile", "debug", "--format", "json", env={"OTHER": "shell"}
    )
    assert result.returncode == 0, result.stderr
    model = json.loads(result.stdout)
    assert model["services"]["app"]["image"] == "busybox:from-file"
    assert model["services"]["app"]["environment"] == {"OTHER": "shell"}
    assert "debug" in model["services"]


def test_bad_input_exits_1_with_located_message(tmp_path: Path) -> None:
    """An unknown key exits 1 with file:line, service and key on stderr, and no traceback."""
    write(tmp_path, {"compose.yaml": "services:\n  app:\n    image: busybox\n    imagee: typo\n"})
    result = run(tmp_path)
    assert result.returncode == 1
    assert result.stdout == ""
    assert "compose.yaml:4" in result.stderr
    assert "service 'app'" in result.stderr and "'imagee'" in result.stderr
    assert "did you mean 'image'" in result.stderr
    assert "Traceback" not in result.stderr


def test_malformed_yaml_exits_1_without_traceback(tmp_path: Path) -> None:
    """Malformed YAML is a one-line error with the line number, not a traceback."""
    write(tmp_path, {"compose.yaml": "services:\n  app:\n    image: 'unterminated\n"})
    result = run(tmp_path)
    assert result.returncode == 1
    assert "invalid YAML" in result.stderr and "compose.yaml:" in result.stderr
    assert "Traceback" not in result.stderr


def test_missing_variable_and_missing_files_exit_1(tmp_path: Path) -> None:
    """A missing required variable, a missing -f file and an empty directory each exit 1 cleanly."""
    project = write(
        tmp_path / "proj", {"compose.yaml": "services:\n  app:\n    image: ${IMAGE:?set IMAGE}\n"}
    )
    for args, expected in (
        ((), "required variable IMAGE is missing a value: set IMAGE"),
        (("-f", "nope.yml"), "nope.yml: file not found"),
    ):
        result = run(project, *args)
        assert result.returncode == 1
        assert expected in result.stderr
        assert "Traceback" not in result.stderr
    empty = tmp_path / "empty"
    empty.mkdir()
    result = run(empty)
    assert result.returncode == 1 and "no compose file found" in result.stderr
