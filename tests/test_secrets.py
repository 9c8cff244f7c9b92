"""The scrubber: which values are masked, and the boundaries that apply it (logs, state)."""

from __future__ import annotations

import io
import json
import logging
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from reconciler import logs, secrets
from reconciler.state import State
from reconciler.status import Result


@pytest.fixture(autouse=True)
def _clean() -> Iterator[None]:
    secrets.clear()
    yield
    secrets.clear()


def test_values_are_masked_longest_first_and_short_ones_kept() -> None:
    secrets.register("p1", ["hunter22", "hunter22-extended", "abc", ""])
    assert secrets.scrub("a=hunter22-extended b=hunter22 c=abc") == "a=*** b=*** c=abc"
    assert secrets.scrub_value({"k": ["x hunter22", ("hunter22",)], "hunter22": 1}) == {
        "k": ["x ***", ("***",)],
        "***": 1,
    }


def test_regex_characters_in_a_value_are_literal() -> None:
    secrets.register("p1", ["a.b*c(d"])
    assert secrets.scrub("xa.b*c(dx aXbbc(d") == "x***x aXbbc(d"


def test_register_replaces_a_projects_values_and_other_projects_stay() -> None:
    secrets.register("p1", ["first-value"])
    secrets.register("p2", ["other-value"])
    secrets.register("p1", ["second-value"])
    assert secrets.scrub("first-value second-value other-value") == "first-value *** ***"
    secrets.forget("p2")
    assert secrets.scrub("other-value") == "other-value"


def test_env_secrets_reads_env_values_and_env_file_values(tmp_path: Path) -> None:
    f = tmp_path / "x.env"
    f.write_text("# comment\nA=from-file-1\nB='quoted value'\nC=${REF}-suffix\n")
    values = secrets.env_secrets({"REF": "referenced"}, [str(f), str(tmp_path / "missing.env")])
    assert values == {"referenced", "from-file-1", "quoted value", "referenced-suffix"}


def test_log_lines_are_masked(monkeypatch: pytest.MonkeyPatch) -> None:
    err = io.StringIO()
    monkeypatch.setattr("sys.stderr", err)
    logs.configure(json=True)
    secrets.register("p1", ["s3cr3t-value"])
    logs.get(project="p1", bound="has s3cr3t-value").error(
        "deploy.failed", error=RuntimeError("boom s3cr3t-value"), n=3
    )
    logging.getLogger("apscheduler.test").warning("job said %s", "s3cr3t-value")
    text = err.getvalue()
    assert "s3cr3t-value" not in text
    line = json.loads(text.splitlines()[0])
    assert line["error"] == "boom ***" and line["bound"] == "has ***" and line["n"] == 3


def test_state_stores_errors_and_rendered_configs_masked(tmp_path: Path) -> None:
    secrets.register("p1", ["db-pass-1234"])
    with State.open(tmp_path) as state:
        deploy = state.start_deploy("a", "e", "p1", "main", "c" * 40, "poll", '{"PW": "db-pass-1234"}')
        state.finish_deploy(deploy, Result.FAILURE, "container said db-pass-1234")
        record = state.deploy(deploy)
        assert record is not None and record.error == "container said ***"
        assert state.rendered_config(deploy) == '{"PW": "***"}'
    raw = b"".join(p.read_bytes() for p in tmp_path.glob("state.db*"))
    assert b"db-pass-1234" not in raw


def test_values_with_quotes_and_newlines_are_masked_in_json_too() -> None:
    value = 'pa"ss\nword\\x'
    secrets.register("p1", [value])
    assert value not in secrets.scrub(f"raw {value}")
    serialized = json.dumps({"PW": value})
    assert secrets.scrub(serialized) == '{"PW": "***"}'


def test_logging_does_not_depend_on_rich_being_installed() -> None:
    """structlog would pick rich (a test tool's dependency, not ours) for console tracebacks and pay
    ~30 ms of start-up for it: reconciler.logs imports structlog without it, and rich stays importable."""
    code = (
        "import sys, importlib.util\n"
        "from reconciler import logs\n"
        "logs.configure(json=False)\n"
        "assert 'rich' not in sys.modules, 'rich was imported'\n"
        "if importlib.util.find_spec('rich') is not None:\n"
        "    import rich  # noqa: F401 - still importable by whoever wants it\n"
        "try:\n"
        "    raise ValueError('boom')\n"
        "except ValueError:\n"
        "    logs.get().exception('failed')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "failed" in done.stderr
    assert "ValueError: boom" in done.stderr
