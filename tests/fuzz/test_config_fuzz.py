"""Hostile environments.yaml documents: a Config or a located ConfigError, never another exception."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from reconciler.config import Config
from reconciler.config.parser import parse_config
from reconciler.errors import ConfigError
from tests.fuzz.guard import answer, budget
from tests.fuzz.strategies import HOSTILE_STRINGS, branch_names, scalars, values

MINIMAL: dict[str, Any] = {
    "apps": {
        "app": {
            "repo": "https://example.org/app.git",
            "environments": {
                "production": {
                    "branch": "master",
                    "project": "app-production",
                    "compose": "docker-compose.yml",
                }
            },
        }
    }
}


def with_changes(top: dict[str, Any] | None = None, app: dict[str, Any] | None = None, **env: Any) -> str:
    doc = yaml.safe_load(yaml.safe_dump(MINIMAL))
    doc.update(top or {})
    doc["apps"]["app"].update(app or {})
    doc["apps"]["app"]["environments"]["production"].update(env)
    return yaml.safe_dump(doc, allow_unicode=True)


def config_answer(tmp_path: Path, text: str) -> Config | ConfigError:
    result = answer(lambda: parse_config(text, tmp_path / "environments.yaml"))
    assert isinstance(result, Config | ConfigError), type(result)
    return result


@pytest.mark.parametrize(
    ("text", "key", "words"),
    [
        (with_changes({"drift_interval": "1e400"}), "drift_interval", "positive duration"),
        (with_changes({"drift_interval": "nan"}), "drift_interval", "positive duration"),
        (with_changes({"drift_interval": 10**400}), "drift_interval", "positive duration"),
        (with_changes({"drift_interval": "0.5s"}), "drift_interval", "between 1s and 365d"),
        (with_changes({"drift_interval": "400d"}), "drift_interval", "between 1s and 365d"),
        (with_changes(app={"poll_interval": "1ms"}), "poll_interval", "between 1s and 365d"),
        (with_changes(timeout="2d"), "timeout", "between 1s and 1d"),
        (with_changes(branch="a b"), "branch", "not a valid git branch name"),
        (with_changes(branch="feature/../x"), "branch", "not a valid git branch name"),
        (with_changes(branch="x" * 300), "branch", "longer than 255 bytes"),
        (with_changes(env_files=["a" * 256]), "env_files", "longer than 255 bytes"),
        (with_changes(env_files=["/" + "a/" * 200]), "env_files", "longer than 255 bytes"),
        (with_changes(overlays=["b" * 300]), "overlays", "longer than 255 bytes"),
    ],
)
def test_known_findings_are_located_errors(tmp_path: Path, text: str, key: str, words: str) -> None:
    """Values once accepted (then crashing `run`) or crashing the parser are now located ConfigErrors."""
    result = config_answer(tmp_path, text)
    assert isinstance(result, ConfigError), f"accepted: {text}"
    assert key in str(result) and words in str(result) and "environments.yaml:" in str(result)


def test_durations_inside_the_bounds_are_kept(tmp_path: Path) -> None:
    """The bounds refuse only mistakes: usual values still load."""
    config = config_answer(tmp_path, with_changes({"drift_interval": "1s"}, {"poll_interval": "5s"}))
    assert isinstance(config, Config), str(config)
    assert (config.drift_interval, config.apps[0].poll_interval) == (1.0, 5.0)


durations = st.one_of(scalars, st.sampled_from(("1ms", "0.5s", "1s", "5s", "1e400", "nan", "-inf", "1h30m")))
env_values = {
    "branch": st.one_of(branch_names, scalars),
    "branches": st.one_of(st.lists(st.one_of(branch_names, scalars), max_size=3), scalars),
    "exclude": st.lists(branch_names, max_size=2),
    "project": st.one_of(st.sampled_from(("app-{branch}", "{branch}", "{nope}", "{", "x" * 300)), scalars),
    "compose": st.one_of(st.lists(st.sampled_from(HOSTILE_STRINGS), max_size=2), scalars),
    "overlays": st.lists(st.sampled_from(HOSTILE_STRINGS), max_size=2),
    "env_files": st.lists(st.sampled_from(HOSTILE_STRINGS), max_size=2),
    "override": values(6),
    "env": st.dictionaries(st.text(max_size=5), scalars, max_size=3),
    "ephemeral": scalars,
    "self_heal": scalars,
    "max": scalars,
    "ttl": durations,
    "url": st.one_of(st.sampled_from(("http://{branch}.x", "{project}", "{x}")), scalars),
    "timeout": durations,
    "bogus": scalars,
}
environment = st.fixed_dictionaries({}, optional=env_values)
app = st.fixed_dictionaries(
    {"repo": st.one_of(st.just("https://example.org/app.git"), scalars)},
    optional={
        "poll_interval": durations,
        "webhook_secret": scalars,
        "environments": st.dictionaries(
            st.sampled_from(("production", "preview", "X", "", "a b")), environment
        ),
    },
)
documents = st.fixed_dictionaries(
    {"apps": st.dictionaries(st.sampled_from(("app", "other", "", "A", "²")), app, max_size=2)},
    optional={
        "drift_interval": durations,
        "listen": st.one_of(st.sampled_from(("127.0.0.1:0", ":80", "[::1]:99999", "x")), scalars),
        "state_dir": st.one_of(st.sampled_from(HOSTILE_STRINGS), scalars),
        "max_concurrent_deploys": scalars,
        "networks_pool": st.one_of(st.sampled_from(("10.0.0.0/8", "x", "10.0.0.0/33")), scalars),
    },
)


@budget(600)
@given(document=documents)
def test_structured_environments_documents(tmp_path: Path, document: dict[str, Any]) -> None:
    """Plausible-but-hostile environments.yaml: a Config or a ConfigError naming the file."""
    result = config_answer(tmp_path, yaml.safe_dump(document, allow_unicode=True))
    if isinstance(result, ConfigError):
        assert "environments.yaml" in str(result)


@budget(1500)
@given(text=st.text(max_size=200))
def test_arbitrary_environments_text(tmp_path: Path, text: str) -> None:
    """Any text at all: a Config or a ConfigError."""
    config_answer(tmp_path, text)
