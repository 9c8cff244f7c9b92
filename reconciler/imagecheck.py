"""`image_check: registry`: is a newer image pushed under a tag a service runs? Drift `image` if so.

The daemon's drift check calls ``ImageChecker.drifts``; the deployer calls ``before_up`` so that healing
(self-heal or `reconciler sync`) pulls the tag. The decisions (is a check due, which images, did the tag
move) are the pure functions at the top; the Engine is reached only through ``RegistryEngine``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Protocol

from reconciler import logs
from reconciler.errors import ReconcilerError
from reconciler.status import Drift, DriftReason

if TYPE_CHECKING:
    from reconciler.daemon.deploy import Target
    from reconciler.spec import RenderedLike

REGISTRY = "registry"
# Docker Hub's spellings: RepoDigests drop them (and "library/" of official images).
_HUB_HOSTS = ("docker.io", "index.docker.io", "registry-1.docker.io")


# --- pure decisions ---


def check_due(last: float | None, now: float, interval: float) -> bool:
    """A registry check runs at most once per ``interval`` seconds (``last``: when the previous began)."""
    return last is None or now - last >= interval


def repository(ref: str) -> str:
    """``ref`` without its tag or digest: ``host:5000/app:1`` -> ``host:5000/app``."""
    name = ref.split("@", 1)[0]
    slash = name.rfind("/")
    colon = name.rfind(":")
    return name[:colon] if colon > slash else name


def normalized(name: str) -> str:
    """A repository as Docker shortens it in RepoDigests: Docker Hub's host and its ``library/`` dropped
    (``docker.io/library/x`` and ``library/x`` are ``x``); other registries' names are kept as written."""
    first, _, rest = name.partition("/")
    if rest and first in _HUB_HOSTS:
        name = rest
    elif rest and ("." in first or ":" in first or first == "localhost"):
        return name  # another registry: its names are not shortened
    library, _, image = name.partition("/")
    return image if library == "library" and image and "/" not in image else name


def images_to_check(images: Iterable[tuple[str, bool]]) -> tuple[str, ...]:
    """The distinct image refs worth asking a registry about, from (ref, built-or-never-pulled) pairs:
    a tag (written or implicit ``latest``), not pinned by digest and not built from `build:`."""
    out: list[str] = []
    for ref, local_only in images:
        if not ref or local_only or "@" in ref or ref in out:
            continue
        out.append(ref)
    return tuple(out)


def tag_moved(ref: str, repo_digests: Iterable[str], registry_digest: str) -> bool | None:
    """True when the registry serves ``registry_digest`` for ``ref`` and the local image is none of the
    manifests it was pulled or pushed as; None when the local image never came from that repository
    (built or loaded here): without a digest to compare, there is no verdict."""
    wanted = normalized(repository(ref))
    local = {
        digest for name, _, digest in (d.partition("@") for d in repo_digests) if normalized(name) == wanted
    }
    if not local:
        return None
    return registry_digest not in local


# --- the adapter side ---


class RegistryEngine(Protocol):
    """What the registry check needs from the Docker Engine (``reconciler.engine.DockerEngine``)."""

    def image_repo_digests(self, ref: str) -> tuple[str, ...] | None: ...
    def registry_digest(self, ref: str) -> str: ...
    def pull_image(self, ref: str, *, platform: str | None = None) -> str: ...


class ImageChecker:
    """Per project: when the registry was last asked, and which tags it serves a newer image for.
    Safe to share between the drift check, the event-triggered checks and the deploy workers."""

    def __init__(
        self,
        engine: Callable[[], RegistryEngine],
        count: Callable[[str, str, str], None],
        clock: Callable[[], float] = time.monotonic,
        *,
        lookups: Callable[[], RegistryEngine] | None = None,
        host_of: Callable[[Target], str] | None = None,
        per_host: Callable[[str, str], RegistryEngine] | None = None,
    ) -> None:
        """``engine`` makes the adapter on first use (pulls, local inspects); ``lookups`` the one asking
        registries (a shorter timeout: a slow registry is no verdict); ``count(app, environment, reason)``
        counts a registry check or pull that failed (the daemon passes ``reconciler_retries_total``).
        With several hosts, ``per_host(which, host)`` makes them for the host ``host_of(target)`` names:
        a tag is checked and pulled on the engine that runs the environment."""
        self._makers = {"engine": engine, "lookups": lookups or engine}
        self._per_host = per_host
        self._host_of = host_of
        self._engines: dict[tuple[str, str], RegistryEngine] = {}
        self._count = count
        self._clock = clock
        self._lock = threading.Lock()
        self._last: dict[str, float] = {}
        self._moved: dict[str, dict[str, str]] = {}  # project -> image ref -> the registry's digest

    def drifts(self, target: Target, rendered: RenderedLike) -> tuple[Drift, ...]:
        """Drift `image` for every service whose tag the registry now serves another image for; asks the
        registry first when a check is due. Nothing for environments with `image_check: local`."""
        if target.env.image_check != REGISTRY:
            return ()
        services = _services(rendered)
        self.check(target, services)
        with self._lock:
            moved = dict(self._moved.get(target.project, {}))
        return tuple(
            Drift(
                name,
                DriftReason.IMAGE,
                f"the registry has a newer image for {ref}: {moved[ref].removeprefix('sha256:')[:12]}",
            )
            for name, (ref, _) in services.items()
            if ref in moved
        )

    def check(self, target: Target, services: Mapping[str, tuple[str, bool]]) -> None:
        """Ask the registry about each tag of ``services`` if the environment's interval has passed."""
        project = target.project
        with self._lock:
            if not check_due(self._last.get(project), self._clock(), target.env.image_check_interval):
                return
            self._last[project] = self._clock()  # before asking: concurrent checks don't ask twice
        log = logs.get(app=target.app.name, environment=target.env.name, project=project)
        moved: dict[str, str] = {}
        for ref in images_to_check(services.values()):
            try:
                local = self._adapter(target).image_repo_digests(ref)
                if local is None:
                    continue  # not on this host: the next deploy pulls it anyway (pull_policy missing)
                remote = self._adapter(target, "lookups").registry_digest(ref)
            except ReconcilerError as err:
                # An unreachable, slow or failing registry is no verdict: keep the last one, try later.
                log.warning("image_check.failed", image=ref, error=str(err))
                self._count(target.app.name, target.env.name, "image_check")
                with self._lock:
                    if ref in self._moved.get(project, {}):
                        moved[ref] = self._moved[project][ref]
                continue
            if tag_moved(ref, local, remote):
                moved[ref] = remote
                log.info("image_check.newer", image=ref, digest=remote)
        with self._lock:
            self._moved[project] = moved

    def before_up(self, target: Target, rendered: RenderedLike) -> None:
        """Before a deploy or heal converges: pull the tags the registry serves a newer image for, so the
        plan sees the tag's new image ID and recreates (`pull_policy: missing` alone would keep the old)."""
        if target.env.image_check != REGISTRY:
            return
        services = _services(rendered)
        self.check(target, services)
        with self._lock:
            moved = dict(self._moved.get(target.project, {}))
        log = logs.get(app=target.app.name, environment=target.env.name, project=target.project)
        for ref in images_to_check(services.values()):
            if ref not in moved:
                continue  # unchanged in the registry, or no longer used by this revision
            try:
                self._adapter(target).pull_image(ref)
            except ReconcilerError as err:
                # The running image stays; the drift stays reported and the next heal tries again.
                log.warning("image_check.pull_failed", image=ref, error=str(err))
                self._count(target.app.name, target.env.name, "image_check")
                continue
            log.info("image_check.pulled", image=ref)
            with self._lock:
                self._moved.get(target.project, {}).pop(ref, None)

    def forget(self, project: str) -> None:
        with self._lock:
            self._last.pop(project, None)
            self._moved.pop(project, None)

    def _adapter(self, target: Target, which: str = "engine") -> RegistryEngine:
        host = self._host_of(target) if self._host_of is not None else ""
        with self._lock:
            key = (which, host)
            if key not in self._engines:
                if self._per_host is not None and self._host_of is not None:
                    self._engines[key] = self._per_host(which, host)
                else:
                    self._engines[key] = self._makers[which]()
            return self._engines[key]


def _services(rendered: RenderedLike) -> dict[str, tuple[str, bool]]:
    """Service -> (image ref, whether it only ever comes from this host: `build:` or `pull_policy: never`)."""
    from reconciler.spec import PullPolicy, project_spec

    local_only = (PullPolicy.NEVER, PullPolicy.BUILD)
    return {
        svc.name: (svc.image, svc.build is not None or svc.pull_policy in local_only)
        for svc in project_spec(rendered).services
    }
