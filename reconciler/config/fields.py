"""Readers for the settings with a syntax of their own: state directory, listen address, network pool,
repository and webhook secret. A layer of the parser, between the generic readers and the document structure.
"""

from __future__ import annotations

from pathlib import Path

from reconciler.config.model import DEFAULT_LISTEN
from reconciler.config.readers import _Readers
from reconciler.config.yaml_lines import _Map, _type_name


class _FieldReaders(_Readers):
    """Readers for keys whose value is more than a plain type: addresses, networks, paths, secrets."""

    def network_pool(self, doc: _Map) -> str | None:
        raw = self.string(doc, "networks_pool", "networks_pool")
        if raw is None:
            return None
        import ipaddress

        try:
            net = ipaddress.IPv4Network(raw.strip(), strict=True)
        except ValueError as exc:
            raise self.fail(
                f"`networks_pool` must be an IPv4 network in CIDR form, not {raw!r} ({exc})",
                doc.key_lines["networks_pool"],
                "networks_pool",
                hint="e.g. 10.210.0.0/16: each preview network gets a /24 of it",
            ) from None
        if net.prefixlen > 24:
            raise self.fail(
                f"`networks_pool` {raw!r} is smaller than one /24 network",
                doc.key_lines["networks_pool"],
                "networks_pool",
                hint="give a /16 to /24 (a /16 holds 256 preview networks)",
            )
        return str(net)

    def listen(self, doc: _Map) -> tuple[str, int]:
        if "listen" not in doc:
            return DEFAULT_LISTEN
        value = doc["listen"]
        host, port = "127.0.0.1", None
        if isinstance(value, int) and not isinstance(value, bool):
            port = value
        elif isinstance(value, str) and ":" in value:
            host, _, raw = value.rpartition(":")
            host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
            port = int(raw) if raw.isdigit() else None
        if port is None or not 0 <= port <= 65535 or not host:
            raise self.fail(
                f"`listen` must be HOST:PORT, not {_type_name(value)}",
                doc.key_lines["listen"],
                "listen",
                hint="e.g. 127.0.0.1:9469, 0.0.0.0:9469 or [::1]:9469 (port 0 picks a free port)",
            )
        return host, port

    def path_value(self, m: _Map, key: str, where: str, *, default: str) -> str:
        raw = self.string(m, key, where)
        if raw is not None and not raw.strip():
            raise self.fail(f"`{key}` is empty", m.key_lines[key], where)
        return str((self.base / Path(raw if raw is not None else default).expanduser()).resolve())

    def repo(self, repo: str, line: int, where: str) -> str:
        if not repo.strip() or repo.startswith("-"):
            raise self.fail(
                f"invalid repository {repo!r}", line, where, hint="give a git URL or a local path"
            )
        # git's own rule: "scheme://..." is a URL; "host:path" with no '/' before the ':' is scp-like ssh.
        head = repo.split(":", 1)[0]
        if "://" in repo or (":" in repo and "/" not in head and len(head) > 1):
            return repo
        return str((self.base / Path(repo).expanduser()).resolve())

    def secret(self, m: _Map, where: str) -> str | None:
        if "webhook_secret" in m and "webhook_secret_file" in m:
            raise self.fail(
                "give either `webhook_secret` or `webhook_secret_file`, not both",
                m.key_lines["webhook_secret_file"],
                f"{where}.webhook_secret_file",
            )
        inline = self.string(m, "webhook_secret", f"{where}.webhook_secret")
        if inline is not None:
            if not inline.strip():
                raise self.fail("`webhook_secret` is empty", m.key_lines["webhook_secret"], where)
            return inline
        raw = self.string(m, "webhook_secret_file", f"{where}.webhook_secret_file")
        if raw is None:
            return None
        line = m.key_lines["webhook_secret_file"]
        file = (self.base / Path(raw).expanduser()).resolve()
        try:
            secret = file.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
            raise self.fail(
                f"cannot read the webhook secret file {str(file)!r}: {reason}",
                line,
                f"{where}.webhook_secret_file",
            ) from None
        if not secret:
            raise self.fail(f"the webhook secret file {str(file)!r} is empty", line, where)
        return secret
