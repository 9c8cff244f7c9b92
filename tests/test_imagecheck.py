"""The registry image check: its pure decisions, its configuration keys, and the checker's bookkeeping
(with a recording engine; the real registry behaviour is tested in tests/daemon/test_image_drift.py)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from reconciler.config import AppConfig, EnvConfig
from reconciler.config.parser import parse_config
from reconciler.daemon.deploy import Target
from reconciler.engine import EngineError, EngineUnavailable
from reconciler.errors import ConfigError
from reconciler.imagecheck import (
    ImageChecker,
    check_due,
    images_to_check,
    normalized,
    repository,
    tag_moved,
)
from reconciler.status import DriftReason

OLD = "sha256:" + "a" * 64
NEW = "sha256:" + "b" * 64


@pytest.mark.parametrize(
    ("last", "now", "due"),
    [(None, 0.0, True), (100.0, 100.0, False), (100.0, 399.9, False), (100.0, 400.0, True)],
)
def test_check_due_at_most_once_per_interval(last: float | None, now: float, due: bool) -> None:
    """A check is due when none ran yet or the interval (300s here) has passed since the last began."""
    assert check_due(last, now, 300.0) is due


@pytest.mark.parametrize(
    ("ref", "repo"),
    [
        ("127.0.0.1:5000/app:1", "127.0.0.1:5000/app"),
        ("127.0.0.1:5000/app", "127.0.0.1:5000/app"),
        ("busybox:1.36", "busybox"),
        ("ghcr.io/org/app@" + OLD, "ghcr.io/org/app"),
        ("localhost:5000/a/b:v2@" + OLD, "localhost:5000/a/b"),
    ],
)
def test_repository_drops_tag_and_digest(ref: str, repo: str) -> None:
    """A registry port is not a tag; a digest goes too."""
    assert repository(ref) == repo


@pytest.mark.parametrize(
    ("name", "short"),
    [
        ("docker.io/library/busybox", "busybox"),
        ("library/busybox", "busybox"),
        ("index.docker.io/org/app", "org/app"),
        ("busybox", "busybox"),
        ("localhost:5000/library/app", "localhost:5000/library/app"),
        ("ghcr.io/org/app", "ghcr.io/org/app"),
    ],
)
def test_normalized_as_repo_digests_write_names(name: str, short: str) -> None:
    """Docker Hub names lose their host and `library/`, as in RepoDigests; other registries keep theirs."""
    assert normalized(name) == short


def test_images_to_check_only_tags_from_registries_once() -> None:
    """Digest-pinned refs, built (or never pulled) images and repeats are not asked about."""
    images = [
        ("reg:5000/app:1", False),
        ("reg:5000/app:1", False),
        ("reg:5000/pinned@" + OLD, False),
        ("reg:5000/built:1", True),
        ("busybox", False),
        ("", False),
    ]
    assert images_to_check(images) == ("reg:5000/app:1", "busybox")


def test_tag_moved_compares_digests_of_the_same_repository() -> None:
    """Moved when the registry's digest is not among the local image's digests for that repository;
    no verdict (None) when the image never came from that repository."""
    local = (f"reg:5000/app@{OLD}", f"other:5000/app@{NEW}")
    assert tag_moved("reg:5000/app:1", local, OLD) is False
    assert tag_moved("reg:5000/app:1", local, NEW) is True
    assert tag_moved("reg:5000/app:1", (), NEW) is None
    assert tag_moved("reg:5000/app:1", (f"other:5000/app@{OLD}",), NEW) is None
    assert tag_moved("docker.io/library/busybox:1.36", (f"busybox@{OLD}",), OLD) is False
    assert tag_moved("busybox:1.36", (f"busybox@{OLD}",), NEW) is True


# --- configuration ---

CONFIG = """\
apps:
  app:
    repo: https://example.org/app.git
    environments:
      production:
        branch: master
        project: app-production
        compose: docker-compose.yml
"""


def _env(extra: str = "") -> EnvConfig:
    return parse_config(CONFIG + extra, Path("/tmp/environments.yaml")).apps[0].environments[0]


def test_image_check_defaults_to_local_every_five_minutes() -> None:
    """Without the keys: `image_check: local`, `image_check_interval: 5m`."""
    env = _env()
    assert (env.image_check, env.image_check_interval) == ("local", 300.0)


def test_image_check_registry_with_an_interval() -> None:
    """`image_check: registry` and a duration like the other durations of the file."""
    env = _env("        image_check: registry\n        image_check_interval: 1m30s\n")
    assert (env.image_check, env.image_check_interval) == ("registry", 90.0)
    assert _env("        image_check_interval: 1s\n").image_check_interval == 1.0


@pytest.mark.parametrize(
    ("extra", "key", "words"),
    [
        ("        image_check: remote\n", "image_check", "must be one of local, registry"),
        ("        image_check: true\n", "image_check", "must be a string"),
        ("        image_check_interval: 500ms\n", "image_check_interval", "between 1s and 365d"),
        ("        image_check_interval: 0\n", "image_check_interval", "positive duration"),
        ("        image_check_interval: soon\n", "image_check_interval", "positive duration"),
    ],
)
def test_bad_image_check_keys_are_located(extra: str, key: str, words: str) -> None:
    """A bad value names the file, the line and the key, and says what is allowed."""
    with pytest.raises(ConfigError) as info:
        _env(extra)
    err = info.value
    assert err.location.line == 9
    assert err.location.key == f"apps.app.environments.production.{key}"
    assert words in str(err)


# --- the checker's bookkeeping, with a recording engine ---


@dataclass
class _Engine:
    """Answers as the Engine would; ``fail`` makes registry lookups raise it."""

    local: dict[str, tuple[str, ...]] = field(default_factory=dict)
    remote: dict[str, str] = field(default_factory=dict)
    fail: Exception | None = None
    calls: list[tuple[str, str]] = field(default_factory=list)

    def image_repo_digests(self, ref: str) -> tuple[str, ...] | None:
        self.calls.append(("local", ref))
        return self.local.get(ref)

    def registry_digest(self, ref: str) -> str:
        self.calls.append(("registry", ref))
        if self.fail is not None:
            raise self.fail
        return self.remote[ref]

    def pull_image(self, ref: str, *, platform: str | None = None) -> str:
        self.calls.append(("pull", ref))
        if self.fail is not None:
            raise self.fail
        self.local[ref] = (f"{repository(ref)}@{self.remote[ref]}",)
        return "sha256:" + "c" * 64


@dataclass(frozen=True)
class _Rendered:
    name: str
    model: dict[str, Any]
    working_dir: str = "/tmp"
    config_files: tuple[str, ...] = ()


REF = "reg:5000/app:1"
RENDERED = _Rendered(
    "p",
    {
        "name": "p",
        "services": {
            "web": {"image": REF},
            "worker": {"image": REF},
            "built": {"image": "reg:5000/built:1", "build": {"context": "/tmp"}},
            "pinned": {"image": f"reg:5000/app@{OLD}"},
        },
        "networks": {"default": {"name": "p_default"}},
    },
)


def _target(image_check: str = "registry") -> Target:
    env = EnvConfig(
        app="demo",
        name="production",
        project="p",
        compose=("c.yml",),
        branch="master",
        image_check=image_check,
        image_check_interval=60.0,
    )
    return Target(AppConfig(name="demo", repo="/r", environments=(env,)), env, "master", "p", "master")


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _checker(engine: _Engine, clock: _Clock, counted: list[str]) -> ImageChecker:
    return ImageChecker(lambda: engine, lambda app, env, reason: counted.append(reason), clock)


def test_newer_digest_is_drift_for_each_service_of_the_tag_asked_once_per_interval() -> None:
    """Both services on the moved tag drift; the registry is asked once per image per interval."""
    engine = _Engine(local={REF: (f"reg:5000/app@{OLD}",)}, remote={REF: NEW})
    clock, counted = _Clock(), []
    checker = _checker(engine, clock, counted)
    drifts = checker.drifts(_target(), RENDERED)
    assert [(d.service, d.reason) for d in drifts] == [("web", "image"), ("worker", "image")]
    assert all(d.reason is DriftReason.IMAGE for d in drifts)
    assert "registry has a newer image for reg:5000/app:1: bbbbbbbbbbbb" in drifts[0].detail
    assert engine.calls == [("local", REF), ("registry", REF)]
    clock.now += 59
    assert len(checker.drifts(_target(), RENDERED)) == 2
    assert len(engine.calls) == 2  # not due: the last verdict, no new lookup
    assert counted == []


def test_same_digest_or_local_mode_is_no_drift() -> None:
    """The registry serving the local image is no drift; `image_check: local` never asks the registry."""
    engine = _Engine(local={REF: (f"reg:5000/app@{OLD}",)}, remote={REF: OLD})
    checker = _checker(engine, _Clock(), [])
    assert checker.drifts(_target(), RENDERED) == ()
    engine.calls.clear()
    assert checker.drifts(_target("local"), RENDERED) == ()
    checker.before_up(_target("local"), RENDERED)
    assert engine.calls == []


@pytest.mark.parametrize(
    "failure",
    [
        EngineUnavailable("registry 503", reason="docker_5xx", status=500),
        EngineUnavailable("read timed out", reason="timeout"),
        EngineError("manifest unknown", status=404),
    ],
)
def test_failing_registry_is_no_verdict_but_counted(failure: Exception) -> None:
    """An unreachable, slow or failing registry gives no drift, is counted, and keeps an earlier verdict."""
    engine = _Engine(local={REF: (f"reg:5000/app@{OLD}",)}, remote={REF: NEW}, fail=failure)
    clock, counted = _Clock(), []
    checker = _checker(engine, clock, counted)
    assert checker.drifts(_target(), RENDERED) == ()
    assert counted == ["image_check"]
    engine.fail = None
    clock.now += 60
    assert len(checker.drifts(_target(), RENDERED)) == 2
    engine.fail = failure
    clock.now += 60
    assert len(checker.drifts(_target(), RENDERED)) == 2  # the outage changes nothing
    assert counted == ["image_check", "image_check"]


def test_before_up_pulls_moved_tags_once_and_clears_the_drift() -> None:
    """Healing pulls each moved tag (once for two services), after which the drift is gone; a failed
    pull keeps the drift and is counted."""
    engine = _Engine(local={REF: (f"reg:5000/app@{OLD}",)}, remote={REF: NEW})
    clock, counted = _Clock(), []
    checker = _checker(engine, clock, counted)
    assert len(checker.drifts(_target(), RENDERED)) == 2
    engine.fail = EngineUnavailable("connection refused", reason="connection")
    checker.before_up(_target(), RENDERED)
    assert counted == ["image_check"]
    assert len(checker.drifts(_target(), RENDERED)) == 2
    engine.fail = None
    checker.before_up(_target(), RENDERED)
    assert [c for c in engine.calls if c[0] == "pull"] == [("pull", REF), ("pull", REF)]
    assert checker.drifts(_target(), RENDERED) == ()
    clock.now += 60
    assert checker.drifts(_target(), RENDERED) == ()  # asked again: the local image is the registry's


def test_image_never_pulled_here_is_not_asked_about() -> None:
    """A tag missing on this host is left to the deploy's own pull; one never pulled (no digest) gives no
    verdict."""
    engine = _Engine(remote={REF: NEW})
    checker = _checker(engine, _Clock(), [])
    assert checker.drifts(_target(), RENDERED) == ()
    assert engine.calls == [("local", REF)]
    engine.local[REF] = ()
    checker.forget("p")
    assert checker.drifts(_target(), RENDERED) == ()
