"""Short-syntax parsers: volume specs (compose-go format.ParseVolume) and port specs (docker nat).

Called by the canonical transform, the unicity pass and the model builder. Quirks are kept on purpose:
a one-letter volume name such as `v:/data` parses as a Windows drive path, exactly as compose does.
"""

from __future__ import annotations

import functools
import ipaddress
import posixpath
from typing import Any

_PROPAGATIONS = frozenset(("rprivate", "private", "rshared", "shared", "rslave", "slave"))
_SELINUX = frozenset(("z", "Z"))


class SpecError(ValueError):
    """A short-syntax string compose would reject; the message is compose's."""


def _is_windows_drive(buffer: list[str], char: str) -> bool:
    return char == ":" and len(buffer) == 1 and buffer[0].isalpha()


def _is_file_path(source: str) -> bool:
    if not source:
        return False
    if source[0] in "./~" or source.startswith("\\\\"):
        return True
    return len(source) > 1 and _is_windows_drive([source[0]], source[1])


def parse_volume(spec: str) -> dict[str, Any]:
    """A service volume short spec ("./src:/app:ro") as compose's canonical mapping (a fresh copy)."""
    return {k: dict(v) if isinstance(v, dict) else v for k, v in _parse_volume(spec).items()}


@functools.lru_cache(maxsize=4096)
def _parse_volume(spec: str) -> dict[str, Any]:
    if not spec:
        raise SpecError("invalid empty volume spec")
    if len(spec) <= 2:
        return {"type": "volume", "target": spec}
    source = target = ""
    read_only = False
    bind: dict[str, Any] | None = None
    volume: dict[str, Any] | None = None
    buffer: list[str] = []
    depth = 0  # inside ${...}
    end = "\0"
    text = spec + end
    for i, char in enumerate(text):
        if char == "$" and i + 1 < len(spec) and spec[i + 1] == "{":
            depth += 1
            buffer.append(char)
            continue
        if char == "}" and depth > 0:
            depth -= 1
            buffer.append(char)
            continue
        if _is_windows_drive(buffer, char):
            buffer.append(char)
        elif char in (":", end) and depth == 0:
            chunk = "".join(buffer)
            if not buffer:
                raise SpecError(f"invalid spec: {spec}: empty section between colons")
            if not source and char == end:
                target = chunk
            elif not source:
                source = chunk
            elif not target:
                target = chunk
            elif char == ":":
                raise SpecError(f"invalid spec: {spec}: too many colons")
            else:
                for option in chunk.split(","):
                    if option == "ro":
                        read_only = True
                    elif option == "rw":
                        read_only = False
                    elif option == "nocopy":
                        volume = {"nocopy": True}
                    elif option in _PROPAGATIONS:
                        bind = {**(bind or {}), "propagation": option}
                    elif option in _SELINUX:
                        bind = {**(bind or {}), "selinux": option}
            buffer = []
        else:
            buffer.append(char)
    out: dict[str, Any] = {}
    if _is_file_path(source):
        out["type"] = "bind"
        # short syntax binds create the host path, for docker-compose v1 compatibility
        bind = {**(bind or {}), "create_host_path": True}
    else:
        out["type"] = "volume"
        if volume is None:
            volume = {}
    if source:
        out["source"] = source
    if target:
        out["target"] = posixpath.normpath(target) if target else target
        if out["target"].startswith("//") and not out["target"].startswith("///"):
            out["target"] = "/" + out["target"].lstrip("/")  # Go's path.Clean keeps one slash
    if read_only:
        out["read_only"] = True
    if bind is not None:
        out["bind"] = bind
    if volume is not None:
        out["volume"] = volume
    return out


# -- ports (github.com/docker/go-connections/nat) ---------------------------------------------


def _parse_uint16(text: str) -> int:
    if not text or not text.isdigit() or not text.isascii():
        raise SpecError("invalid")
    value = int(text)
    if value > 65535:
        raise SpecError("invalid")
    return value


def _port_range(text: str) -> tuple[int, int]:
    if not text:
        raise SpecError("empty string specified for ports")
    if "-" not in text:
        value = _parse_uint16(text)
        return value, value
    parts = text.split("-")
    start, end = _parse_uint16(parts[0]), _parse_uint16(parts[1])
    if end < start:
        raise SpecError(f"invalid range specified for port: {text}")
    return start, end


def _split_parts(raw: str) -> tuple[str, str, str]:
    parts = raw.split(":")
    if len(parts) == 1:
        return "", "", parts[0]
    if len(parts) == 2:
        return "", parts[0], parts[1]
    if len(parts) == 3:
        return parts[0], parts[1], parts[2]
    return ":".join(parts[:-2]), parts[-2], parts[-1]


def _split_proto(raw: str) -> tuple[str, str]:
    parts = raw.split("/")
    if not raw or not parts[0]:
        return "", ""
    if len(parts) == 1:
        return "tcp", raw
    if not parts[1]:
        return "tcp", parts[0]
    return parts[1], parts[0]


def parse_ports(raw: str) -> list[dict[str, Any]]:
    """A port short spec ("127.0.0.1:8000-8001:80-81/udp") as compose's long-syntax entries (fresh)."""
    return [dict(entry) for entry in _parse_ports(raw)]


@functools.lru_cache(maxsize=4096)
def _parse_ports(raw: str) -> list[dict[str, Any]]:
    ip, host_port, container_port = _split_parts(raw)
    proto, container_port = _split_proto(container_port)
    if ip.startswith("["):
        if not ip.endswith("]"):
            raise SpecError(f"invalid IP address {ip}")
        ip = ip[1:-1]
    if ip:
        try:
            ipaddress.ip_address(ip)
        except ValueError:
            raise SpecError(f"invalid IP address: {ip}") from None
    if not container_port:
        raise SpecError(f"no port specified: {raw}<empty>")
    try:
        start, end = _port_range(container_port)
    except SpecError:
        raise SpecError(f"invalid containerPort: {container_port}") from None
    host_start = host_end = 0
    if host_port:
        try:
            host_start, host_end = _port_range(host_port)
        except SpecError:
            raise SpecError(f"invalid hostPort: {host_port}") from None
    if host_port and (end - start) != (host_end - host_start) and end != start:
        raise SpecError(
            f"invalid ranges specified for container and host Ports: {container_port} and {host_port}"
        )
    proto = proto.lower()
    if proto not in ("tcp", "udp", "sctp"):
        raise SpecError(f"invalid proto: {proto}")
    bindings: dict[str, list[tuple[int, str]]] = {}
    for i in range(end - start + 1):
        port = start + i
        published = str(host_start + i) if host_port else ""
        if start == end and host_start != host_end:
            published = f"{published}-{host_end}"
        bindings.setdefault(f"{port}/{proto}", []).append((port, published))
    out: list[dict[str, Any]] = []
    # nat returns a map; compose sorts its keys as strings ("100/tcp" < "99/tcp")
    for key in sorted(bindings):
        for port, published in bindings[key]:
            entry: dict[str, Any] = {"mode": "ingress"}
            if ip:
                entry["host_ip"] = ip
            entry["target"] = port
            if published:
                entry["published"] = published
            entry["protocol"] = proto
            out.append(entry)
    return out


def parse_device(spec: str) -> dict[str, str]:
    """A device short spec ("/dev/a:/dev/b:rwm") as compose's mapping."""
    parts = spec.split(":")
    if len(parts) == 3:
        return {"source": parts[0], "target": parts[1], "permissions": parts[2]}
    if len(parts) == 2:
        return {"source": parts[0], "target": parts[1], "permissions": "rwm"}
    if len(parts) == 1:
        return {"source": parts[0], "target": parts[0], "permissions": "rwm"}
    raise SpecError(f"confusing device mapping, please use long syntax: {spec}")
