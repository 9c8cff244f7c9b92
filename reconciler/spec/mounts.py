"""A service's mounts, normalized: ``volumes`` (volume, bind, tmpfs) and file-based ``secrets``/``configs``
(declared at the top level, read by ``_files``). Called by ``service`` and ``project``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from reconciler.errors import Location, UnsupportedError
from reconciler.spec.contents import SOURCES, _content_mount, is_content
from reconciler.spec.context import _Context, _unsupported
from reconciler.spec.units import _bytes


def _by_target(mount: Mapping[str, Any]) -> str:
    return str(mount["target"])


def _mount(ctx: _Context, service: str, v: Any) -> dict[str, Any]:
    if not isinstance(v, Mapping):
        raise _unsupported(service, "volumes", f"volume {v!r} is not in long syntax (render normalizes it)")
    kind = v.get("type")
    m: dict[str, Any] = {"type": kind, "target": str(v["target"])}
    if v.get("read_only"):
        m["read_only"] = True
    # `consistency` (cached/delegated) only ever tuned Docker Desktop for Mac's file sharing; Docker
    # Engine ignores it, and so may we.
    unknown = set(v) - {"type", "source", "target", "read_only", "bind", "volume", "tmpfs", "consistency"}
    if unknown:
        raise _unsupported(service, "volumes", f"volume option(s) {sorted(unknown)} are not supported")
    if kind == "volume":
        source = v.get("source")
        if source:
            if source not in ctx.volumes:
                raise _unsupported(service, "volumes", f"volume {source!r} is not declared at the top level")
            m["source"] = ctx.volumes[source]
        selinux = (v.get("bind") or {}).get("selinux")
        if selinux:
            # `:z`/`:Z` on a named volume: Compose passes it in the legacy Binds string (`vol:/d:rw,z`),
            # which has no nocopy and needs a name.
            if not source or (v.get("volume") or {}).get("nocopy"):
                raise _unsupported(service, "volumes", "selinux (:z/:Z) needs a named volume without nocopy")
            m["selinux"] = str(selinux)
        opts = v.get("volume") or {}
        if set(opts) - {"nocopy"}:
            raise _unsupported(service, "volumes", f"volume option(s) {sorted(set(opts) - {'nocopy'})}")
        if opts.get("nocopy"):
            m["nocopy"] = True
    elif kind == "bind":
        # As written, as Compose passes it: Docker resolves symlinks itself when the container starts.
        m["source"] = str(v["source"])
        if m["source"] in ctx.digests:
            m["digest"] = ctx.digests[m["source"]]
        opts = v.get("bind") or {}
        if set(opts) - {"create_host_path", "propagation", "selinux"}:
            raise _unsupported(service, "volumes", f"bind option(s) {sorted(opts)} are not supported")
        for key in ("create_host_path", "propagation", "selinux"):
            if opts.get(key):
                m[key] = opts[key]
    elif kind == "tmpfs":
        opts = v.get("tmpfs") or {}
        if set(opts) - {"size", "mode"}:
            raise _unsupported(service, "volumes", f"tmpfs option(s) {sorted(opts)} are not supported")
        if opts.get("size") is not None:
            m["size"] = _bytes(service, "volumes", opts["size"])
        if opts.get("mode") is not None:
            m["mode"] = int(str(opts["mode"]), 8) if isinstance(opts["mode"], str) else int(opts["mode"])
    else:
        raise _unsupported(service, "volumes", f"volume type {kind!r} is not supported (volume, bind, tmpfs)")
    return m


def _files(model: Mapping[str, Any], kind: str) -> dict[str, str]:
    """Compose key -> file of the file-based ``kind``; the content-based ones are ``contents``'."""
    out: dict[str, str] = {}
    for key, value in (model.get(kind) or {}).items():
        value = value or {}
        if is_content(kind, value):
            continue
        if not value.get("file") or set(value) - {"file", "name"}:
            raise UnsupportedError(
                f"{kind} from {sorted(set(value) - {'name'})} are not supported outside swarm",
                Location(key=f"{kind}.{key}"),
                hint=f"give {kind} a `file:` or {' or '.join(f'`{s}:`' for s in SOURCES[kind])}",
            )
        out[key] = str(value["file"])
    return out


def _file_mount(ctx: _Context, service: str, kind: str, ref: Any) -> dict[str, Any]:
    """File-based secrets and configs are read-only bind mounts, as Compose does outside swarm."""
    ref = {"source": ref} if isinstance(ref, str) else dict(ref)
    source = str(ref.get("source"))
    files = ctx.secrets if kind == "secrets" else ctx.configs
    # Compose's defaults: /run/secrets/<name> for secrets, /<name> for configs; relative targets likewise.
    target = str(ref.get("target") or source)
    if kind == "secrets" and not target.startswith("/"):
        target = f"/run/secrets/{target}"
    elif not target.startswith("/"):
        target = f"/{target}"
    digest = (ctx.contents.get(kind) or {}).get(source)
    if digest is not None:
        return _content_mount(service, kind, ref, target, digest)
    if source not in files:
        raise _unsupported(service, kind, f"{kind[:-1]} {source!r} is not declared at the top level")
    if set(ref) - {"source", "target"}:
        raise _unsupported(
            service,
            kind,
            f"{kind} option(s) {sorted(set(ref) - {'source', 'target'})} (only for `content`/`environment`)",
        )
    out = {"source": files[source], "target": target}
    if files[source] in ctx.digests:
        out["digest"] = ctx.digests[files[source]]
    return out
