"""The deploy policy: which keys of a rendered compose project an environment refuses (issue 10).

Pure: ``evaluate`` takes the final rendered model and the facts the deployer resolved on the host
(``Facts``: real paths of mounted sources, owners of fixed-name volumes and networks) and lists every
``Violation``; ``apply_limits`` gives services without limits the policy's defaults. Config builds ``Policy``.
"""

from __future__ import annotations

import fnmatch
import ipaddress
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

# Rule names: the keys of `policy:` that switch a check on or off, and of `allow:` exceptions.
RULES = (
    "privileged",
    "host_namespaces",
    "devices",
    "docker_socket",
    "binds_outside_checkout",
    "cap_add",
    "unconfined",
    "external",
    "limits",
    "max_replicas",
    "ports",
    "database_ports",
)
DATABASE_IMAGES = ("postgres", "postgresql", "postgis", "mysql", "mariadb", "mongo", "mongodb", "redis")
SAFE_CAPS = ("CHOWN", "DAC_OVERRIDE", "FOWNER", "SETGID", "SETUID", "NET_BIND_SERVICE", "KILL")
HOST_NAMESPACE_KEYS = ("network_mode", "pid", "ipc", "uts", "userns_mode", "cgroup")
# Paths of the Docker socket on the host; the adapter adds their real paths (and DOCKER_HOST's).
DOCKER_SOCKETS = ("/var/run/docker.sock", "/run/docker.sock")
# security_opt values that turn a confinement off: `key=value` or Docker's older `key:value`.
_UNCONFINED = {("apparmor", "unconfined"), ("seccomp", "unconfined"), ("systempaths", "unconfined")}
_MEMORY_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([bkmgt]?)i?b?\s*$", re.IGNORECASE)
_MEMORY_UNITS = {"": 1, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


@dataclass(frozen=True)
class Limits:
    """Per-service resource ceilings; each is also the default given to a service that sets none."""

    memory: int | None = None  # bytes
    cpus: float | None = None
    pids: int | None = None


@dataclass(frozen=True)
class Allow:
    """An exception for one service running one image (fnmatch glob): the rules it may break."""

    service: str
    image: str
    rules: frozenset[str]

    def covers(self, service: str, image: str, rule: str) -> bool:
        return service == self.service and fnmatch.fnmatchcase(image, self.image) and rule in self.rules


@dataclass(frozen=True)
class Policy:
    """One environment's policy: ``True`` allows a rule's keys; ``None`` bounds mean unbounded."""

    privileged: bool = True
    host_namespaces: bool = True
    devices: bool = True
    docker_socket: bool = True
    binds_outside_checkout: bool = True
    cap_add: tuple[str, ...] | None = None  # allowed capabilities; None: any
    unconfined: bool = True
    external: bool = True
    external_names: tuple[str, ...] = ()  # globs of volume/network names allowed when `external` is off
    limits: Limits = field(default_factory=Limits)
    max_replicas: int | None = None
    port_range: tuple[int, int] | None = None  # allowed published host ports
    database_ports: bool = False  # publish a database image's port on a non-loopback address
    database_images: tuple[str, ...] = DATABASE_IMAGES  # globs on the image's repository basename
    allow: tuple[Allow, ...] = ()


PERMISSIVE = Policy()
# Previews run whatever a pushed branch says: deny everything that reaches the host or other stacks.
EPHEMERAL = Policy(
    privileged=False,
    host_namespaces=False,
    devices=False,
    docker_socket=False,
    binds_outside_checkout=False,
    cap_add=SAFE_CAPS,
    unconfined=False,
    external=False,
    limits=Limits(memory=1 << 30, cpus=1.0, pids=512),
    max_replicas=3,
)


def default_policy(ephemeral: bool) -> Policy:
    return EPHEMERAL if ephemeral else PERMISSIVE


@dataclass(frozen=True)
class Facts:
    """What the deployer resolved on the host when the revision was deployed.

    ``real_paths``: each host path of the model (bind, secret/config file, build context, volume
    device) to its real path, symlinks followed; ``checkout``: the real path of the revision's tree;
    ``sockets``: real paths of the Docker socket; ``owners``: ``("volume"|"network", name)`` of an
    existing object to its compose project label ('' when it has none)."""

    checkout: str = ""
    real_paths: Mapping[str, str] = field(default_factory=dict)
    sockets: tuple[str, ...] = DOCKER_SOCKETS
    owners: Mapping[tuple[str, str], str] = field(default_factory=dict)
    project: str = ""


@dataclass(frozen=True)
class Violation:
    """One refused key: which service (None for a top-level object), the key, its value and the rule."""

    service: str | None
    key: str
    value: str
    rule: str

    def __str__(self) -> str:
        where = f"service {self.service!r}: " if self.service else ""
        return f"{where}{self.key} = {self.value} (policy `{self.rule}`)"


def evaluate(model: Mapping[str, Any], policy: Policy, facts: Facts) -> list[Violation]:
    """Every violation of ``policy`` in the rendered ``model``, services in name order."""
    out: list[Violation] = []
    services = model.get("services") or {}
    for name in sorted(services):
        svc = services[name] or {}
        image = str(svc.get("image") or "")
        for v in _service(name, svc, model, policy, facts):
            if not any(a.covers(name, image, v.rule) for a in policy.allow):
                out.append(v)
    out.extend(_top_level(model, policy, facts))
    return out


def apply_limits(model: dict[str, Any], policy: Policy) -> dict[str, Any]:
    """``model`` with the policy's limits set on every service that sets none (model left unchanged)."""
    lim = policy.limits
    if lim == Limits():
        return model
    services = {}
    for name, svc in (model.get("services") or {}).items():
        svc = dict(svc or {})
        res = ((svc.get("deploy") or {}).get("resources") or {}).get("limits") or {}
        if lim.memory is not None and svc.get("mem_limit") is None and res.get("memory") is None:
            svc["mem_limit"] = str(lim.memory)
        if lim.cpus is not None and svc.get("cpus") is None and res.get("cpus") is None:
            svc["cpus"] = lim.cpus
        if lim.pids is not None and svc.get("pids_limit") is None and res.get("pids") is None:
            svc["pids_limit"] = lim.pids
        services[name] = svc
    return {**model, "services": services}


def parse_memory(value: Any) -> int | None:
    """Bytes from 512m, 1g, 1.5GiB or a number of bytes; None if it is none of these."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return int(value)
    m = _MEMORY_RE.match(str(value))
    return int(float(m.group(1)) * _MEMORY_UNITS[m.group(2).lower()]) if m else None


def is_database_image(image: str, globs: tuple[str, ...]) -> bool:
    """True if the image's repository basename (``postgis/postgis:16`` -> ``postgis``) matches a glob."""
    base = image.split("@", 1)[0].rsplit("/", 1)[-1].split(":", 1)[0].lower()
    return any(fnmatch.fnmatchcase(base, g.lower()) for g in globs)


# -- the checks -------------------------------------------------------------------------------------

_Make = Callable[[str, Any, str], Violation]  # (key, value, rule) -> a violation of the current service


def _service(
    name: str, svc: Mapping[str, Any], model: Mapping[str, Any], p: Policy, facts: Facts
) -> Iterator[Violation]:
    def v(key: str, value: Any, rule: str) -> Violation:
        return Violation(name, key, str(value).lower() if isinstance(value, bool) else str(value), rule)

    if not p.privileged and svc.get("privileged"):
        yield v("privileged", True, "privileged")
    if not p.host_namespaces:
        for key in HOST_NAMESPACE_KEYS:
            if str(svc.get(key) or "").lower() == "host":
                yield v(key, "host", "host_namespaces")
    if not p.external:
        # `container:NAME` joins or mounts a container of another stack (production's database, say).
        for key in ("network_mode", "pid", "ipc"):
            if str(svc.get(key) or "").startswith("container:"):
                yield v(key, svc[key], "external")
        for ref in svc.get("volumes_from") or ():
            if str(ref).startswith("container:"):
                yield v("volumes_from", ref, "external")
    if not p.devices:
        for dev in svc.get("devices") or ():
            yield v("devices", dev.get("source") if isinstance(dev, Mapping) else dev, "devices")
        for rule in svc.get("device_cgroup_rules") or ():
            yield v("device_cgroup_rules", rule, "devices")
    if p.cap_add is not None:
        allowed = {_cap(c) for c in p.cap_add}
        for cap in svc.get("cap_add") or ():
            if _cap(cap) not in allowed:
                yield v("cap_add", cap, "cap_add")
    if not p.unconfined:
        for opt in svc.get("security_opt") or ():
            if _unconfined(str(opt)):
                yield v("security_opt", opt, "unconfined")
    for key, source in _host_paths(name, svc, model):
        real = facts.real_paths.get(source, source)
        if not p.docker_socket and _reaches_socket(source, real, facts.sockets):
            yield v(key, source if real == source else f"{source} -> {real}", "docker_socket")
        if not p.binds_outside_checkout and not _inside(real, facts.checkout):
            yield v(key, source if real == source else f"{source} -> {real}", "binds_outside_checkout")
    yield from _bounds(svc, p, v)
    yield from _ports(svc, p, v)


def _bounds(svc: Mapping[str, Any], p: Policy, v: _Make) -> Iterator[Violation]:
    deploy = svc.get("deploy") or {}
    res = (deploy.get("resources") or {}).get("limits") or {}
    lim = p.limits
    memory = svc.get("mem_limit") if svc.get("mem_limit") is not None else res.get("memory")
    if lim.memory is not None and memory is not None:
        asked = parse_memory(memory)
        if asked is None or asked > lim.memory or asked <= 0:
            yield v("mem_limit", memory, "limits")
    cpus = svc.get("cpus") if svc.get("cpus") is not None else res.get("cpus")
    if lim.cpus is not None and cpus is not None and not 0 < _float(cpus) <= lim.cpus:
        yield v("cpus", cpus, "limits")
    pids = svc.get("pids_limit") if svc.get("pids_limit") is not None else res.get("pids")
    if lim.pids is not None and pids is not None and not 0 < _float(pids) <= lim.pids:
        yield v("pids_limit", pids, "limits")
    replicas = svc.get("scale") if svc.get("scale") is not None else deploy.get("replicas")
    if p.max_replicas is not None and replicas is not None and _float(replicas) > p.max_replicas:
        yield v("scale" if svc.get("scale") is not None else "deploy.replicas", replicas, "max_replicas")


def _ports(svc: Mapping[str, Any], p: Policy, v: _Make) -> Iterator[Violation]:
    database = not p.database_ports and is_database_image(str(svc.get("image") or ""), p.database_images)
    for port in svc.get("ports") or ():
        if not isinstance(port, Mapping):
            continue
        host_ip = str(port.get("host_ip") or "")
        published = str(port.get("published") or "")
        any_ip = "0.0.0.0"  # noqa: S104 - what Docker binds when no host_ip is given; shown, not bound
        shown = f"{host_ip or any_ip}:{published or '(any)'}:{port.get('target')}"
        if database and not _loopback(host_ip):
            yield v("ports", shown, "database_ports")
        if p.port_range is not None and published:
            low, _, high = published.partition("-")
            lo, hi = p.port_range
            if not (low.isdigit() and (high or low).isdigit() and lo <= int(low) and int(high or low) <= hi):
                yield v("ports", shown, "ports")


def _top_level(model: Mapping[str, Any], p: Policy, facts: Facts) -> Iterator[Violation]:
    if p.external:
        return
    for kind, section in (("volume", "volumes"), ("network", "networks")):
        for key, obj in sorted((model.get(section) or {}).items()):
            obj = obj or {}
            if any(fnmatch.fnmatchcase(str(obj.get("name") or key), g) for g in p.external_names):
                continue  # e.g. the load balancer's network that an operator's overlay joins
            if obj.get("external"):
                yield Violation(None, f"{section}.{key}.external", "true", "external")
                continue
            name = str(obj.get("name") or "")
            owner = facts.owners.get((kind, name))
            if owner is not None and owner != facts.project:
                who = f"project {owner!r}" if owner else "no compose project"
                yield Violation(None, f"{section}.{key}.name", f"{name} (owned by {who})", "external")


def host_paths(model: Mapping[str, Any]) -> set[str]:
    """Every host path of ``model`` the deployer must resolve for ``Facts.real_paths``."""
    return {
        src
        for name, svc in (model.get("services") or {}).items()
        for _, src in _host_paths(name, svc or {}, model)
    }


def _host_paths(name: str, svc: Mapping[str, Any], model: Mapping[str, Any]) -> Iterator[tuple[str, str]]:
    """(key, host path) of what a service mounts or sends to the engine from the host."""
    volumes = model.get("volumes") or {}
    for vol in svc.get("volumes") or ():
        if not isinstance(vol, Mapping):
            continue
        if vol.get("type") == "bind" and vol.get("source"):
            yield "volumes", str(vol["source"])
        elif vol.get("type") == "volume" and vol.get("source") in volumes:
            # The local driver's `o: bind` mounts `device` from the host: a bind mount by another name.
            opts = (volumes[vol["source"]] or {}).get("driver_opts") or {}
            if "bind" in str(opts.get("o") or "").split(",") and opts.get("device"):
                yield f"volumes.{vol['source']}.driver_opts.device", str(opts["device"])
    for kind in ("secrets", "configs"):
        top = model.get(kind) or {}
        for ref in svc.get(kind) or ():
            src = ref.get("source") if isinstance(ref, Mapping) else ref
            item = top.get(src) or {}
            if item.get("file"):
                yield f"{kind}.{src}.file", str(item["file"])
    build = svc.get("build")
    if isinstance(build, Mapping):
        # Local paths are read by the reconciler into the build context; a git or http URL is
        # fetched by the engine, not read from the host.
        for key, path in (("context", build.get("context")), ("dockerfile", build.get("dockerfile"))):
            if isinstance(path, str) and path.startswith("/"):
                yield f"build.{key}", path
        for name, path in sorted((build.get("additional_contexts") or {}).items()):
            if isinstance(path, str) and path.startswith("/"):
                yield f"build.additional_contexts.{name}", path


def _reaches_socket(source: str, real: str, sockets: tuple[str, ...]) -> bool:
    """True if mounting ``source`` exposes a Docker socket: the socket itself or any directory above it."""
    for path in {source.rstrip("/") or "/", real.rstrip("/") or "/"}:
        for sock in sockets:
            if sock == path or path == "/" or sock.startswith(path + "/"):
                return True
    return False


def _inside(path: str, root: str) -> bool:
    return bool(root) and (path == root or path.startswith(root.rstrip("/") + "/"))


def _unconfined(opt: str) -> bool:
    key, _, value = _split_opt(opt)
    return (key, value) in _UNCONFINED or (key == "label" and value == "disable")


def _split_opt(opt: str) -> tuple[str, str, str]:
    text = opt.strip().lower().replace(" ", "")
    cut = min((i for i in (text.find("="), text.find(":")) if i >= 0), default=-1)
    return (text[:cut], text[cut], text[cut + 1 :]) if cut >= 0 else (text, "", "")


def _cap(cap: Any) -> str:
    text = str(cap).strip().upper()
    return text[4:] if text.startswith("CAP_") else text


def _loopback(host_ip: str) -> bool:
    try:
        return ipaddress.ip_address(host_ip.strip("[]")).is_loopback
    except ValueError:
        return host_ip == "localhost"


def _float(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("inf")
