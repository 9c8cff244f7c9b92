"""Read an environment's ``policy:`` into ``reconciler.policy.Policy``, over the defaults of its kind.

Called by the parser once ``ephemeral`` is known: previews start from the safe defaults, fixed
environments from the permissive ones; every key given replaces its default. Reference: docs/environments.md.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from reconciler.config.readers import _Readers
from reconciler.config.yaml_lines import _Map, _Seq, _type_name
from reconciler.policy import RULES, Allow, Limits, Policy, default_policy, parse_memory

_BOOL_KEYS = (
    "privileged",
    "host_namespaces",
    "devices",
    "docker_socket",
    "binds_outside_checkout",
    "unconfined",
    "external",
)
_KEYS = (*_BOOL_KEYS, "cap_add", "limits", "max_replicas", "ports", "database_images", "allow")


def read_policy(r: _Readers, m: _Map, where: str, *, ephemeral: bool) -> Policy:
    """The environment's policy: its kind's defaults with the keys of ``policy:`` applied."""
    base = default_policy(ephemeral)
    pm = r.mapping(m, "policy", f"{where}.policy")
    if pm is None:
        return base
    where = f"{where}.policy"
    r.check_keys(pm, _KEYS, where)
    changes: dict[str, Any] = {
        k: r.boolean(pm, k, f"{where}.{k}") for k in _BOOL_KEYS if k in pm and k != "external"
    }
    if "external" in pm:
        changes.update(_external(r, pm, where))
    if "cap_add" in pm:
        changes["cap_add"] = _caps(r, pm, where)
    if "limits" in pm:
        changes["limits"] = _limits(r, pm, where, base.limits)
    if "max_replicas" in pm:
        changes["max_replicas"] = (
            None if pm["max_replicas"] is None else r.integer(pm, "max_replicas", where, minimum=1)
        )
    if "ports" in pm:
        changes.update(_ports(r, pm, where))
    if "database_images" in pm:
        extra = tuple(g for g, _ in r.strings(pm, "database_images", f"{where}.database_images"))
        changes["database_images"] = base.database_images + extra
    if "allow" in pm:
        changes["allow"] = _allow(r, pm, where)
    return replace(base, **changes)


def _external(r: _Readers, pm: _Map, where: str) -> dict[str, Any]:
    """`external: true|false`, or a list of volume/network names (globs) that alone are allowed."""
    value = pm["external"]
    if isinstance(value, bool):
        return {"external": value}
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise r.fail(
            f"`external` must be true, false or a list of names, not {_type_name(value)}",
            pm.key_lines["external"],
            f"{where}.external",
            hint='e.g. external: [proxy, "shared-*"] (volume or network names, globs allowed)',
        )
    return {"external": False, "external_names": tuple(value)}


def _caps(r: _Readers, pm: _Map, where: str) -> tuple[str, ...] | None:
    if pm["cap_add"] == "any":
        return None
    caps = tuple(c.strip().upper() for c, _ in r.strings(pm, "cap_add", f"{where}.cap_add"))
    return tuple(c[4:] if c.startswith("CAP_") else c for c in caps)


def _limits(r: _Readers, pm: _Map, where: str, base: Limits) -> Limits:
    lm = r.mapping(pm, "limits", f"{where}.limits")
    assert lm is not None
    where = f"{where}.limits"
    r.check_keys(lm, ("memory", "cpus", "pids"), where)
    out = base
    if "memory" in lm:
        memory = None if lm["memory"] is None else parse_memory(lm["memory"])
        if lm["memory"] is not None and (memory is None or memory <= 0):
            raise r.fail(
                f"`memory` must be a size such as 512m or 2g, not {_type_name(lm['memory'])}",
                lm.key_lines["memory"],
                f"{where}.memory",
                hint="write null for no limit",
            )
        out = replace(out, memory=memory)
    if "cpus" in lm:
        cpus = lm["cpus"]
        if cpus is not None and (isinstance(cpus, bool) or not isinstance(cpus, int | float) or cpus <= 0):
            raise r.fail(
                f"`cpus` must be a positive number, not {_type_name(cpus)}",
                lm.key_lines["cpus"],
                f"{where}.cpus",
                hint="e.g. 0.5 or 2; null for no limit",
            )
        out = replace(out, cpus=None if cpus is None else float(cpus))
    if "pids" in lm:
        out = replace(
            out, pids=None if lm["pids"] is None else r.integer(lm, "pids", f"{where}.pids", minimum=1)
        )
    return out


def _ports(r: _Readers, pm: _Map, where: str) -> dict[str, Any]:
    ports = r.mapping(pm, "ports", f"{where}.ports")
    assert ports is not None
    where = f"{where}.ports"
    r.check_keys(ports, ("range", "database"), where)
    out: dict[str, Any] = {}
    if "range" in ports:
        raw = ports["range"]
        low, _, high = str(raw).partition("-")
        ok = raw is not None and low.isdigit() and high.isdigit() and 1 <= int(low) <= int(high) <= 65535
        if raw is not None and not ok:
            raise r.fail(
                f"`range` must be LOW-HIGH host ports, not {_type_name(raw)}",
                ports.key_lines["range"],
                f"{where}.range",
                hint='e.g. range: "8000-8999"; null for any port',
            )
        out["port_range"] = (int(low), int(high)) if raw is not None else None
    if "database" in ports:
        if ports["database"] not in ("allow", "deny"):
            raise r.fail(
                f"`database` must be allow or deny, not {_type_name(ports['database'])}",
                ports.key_lines["database"],
                f"{where}.database",
                hint="deny refuses a database image's port published on a non-loopback address",
            )
        out["database_ports"] = ports["database"] == "allow"
    return out


def _allow(r: _Readers, pm: _Map, where: str) -> tuple[Allow, ...]:
    items = pm["allow"]
    where = f"{where}.allow"
    if not isinstance(items, _Seq):
        raise r.fail(f"`allow` must be a list, not {_type_name(items)}", pm.key_lines["allow"], where)
    out = []
    hint = 'e.g. - {service: traefik, image: "traefik:*", docker_socket: true}'
    for item, line in zip(items, items.item_lines, strict=True):
        if not isinstance(item, _Map):
            raise r.fail(f"each exception must be a mapping, not {_type_name(item)}", line, where, hint=hint)
        r.check_keys(item, ("service", "image", *RULES), where)
        service = r.string(item, "service", f"{where}.service", required=True)
        image = r.string(item, "image", f"{where}.image", required=True)
        assert service is not None and image is not None
        if not service.strip() or not image.strip():
            raise r.fail("`service` and `image` must not be empty", line, where, hint=hint)
        rules = frozenset(k for k in RULES if r.boolean(item, k, f"{where}.{k}"))
        if not rules:
            raise r.fail(
                f"the exception for service {service!r} allows nothing",
                line,
                where,
                hint=f"set one of {', '.join(RULES)} to true",
            )
        out.append(Allow(service=service, image=image, rules=rules))
    return tuple(out)
