"""`extends`: a service built on another one, from the same file or another file.

Called by the renderer on each document before it is merged (as compose-go's ApplyExtends does).
Services from another file are loaded, interpolated and brought to long syntax, with their relative
paths resolved against that file's directory.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from reconciler.errors import ComposeError, Location
from reconciler.render.loader import Document, Path, load_file
from reconciler.render.merge import MergeError, apply_resets, enforce_unicity, merge_mappings, merge_value
from reconciler.render.normalize import NormalizeError, canonical, resolve_paths

# Turns a freshly loaded document into interpolated data (the renderer owns the environment).
Prepare = Callable[[Document], dict[str, Any]]


@dataclass
class _Source:
    """Where a services mapping came from: its document (for messages) and its base directory."""

    doc: Document
    services: dict[str, Any]
    base_dir: str
    resets: list[Path] = field(default_factory=list)


@dataclass
class Extender:
    """Resolves `extends` for the services of one document."""

    prepare: Prepare
    home: str
    _files: dict[str, _Source] = field(default_factory=dict)

    def apply(self, doc: Document, data: dict[str, Any], base_dir: str) -> None:
        services = data.get("services")
        if not isinstance(services, dict):
            return
        source = _Source(doc, services, base_dir, list(doc.resets) + list(doc.overrides))
        for name in list(services):
            services[name] = self._extend(source, name, ())

    def _error(self, source: _Source, name: str, message: str) -> ComposeError:
        line = source.doc.line_of(("services", name, "extends"))
        return ComposeError(message, Location(file=source.doc.source, line=line, service=name, key="extends"))

    def _extend(self, source: _Source, name: str, chain: tuple[tuple[str, str], ...]) -> Any:
        service = source.services.get(name)
        if not isinstance(service, dict) or "extends" not in service:
            return service
        spec = service["extends"]
        if isinstance(spec, str):
            ref, file = spec, None
        elif isinstance(spec, dict) and isinstance(spec.get("service"), str):
            ref, file = spec["service"], spec.get("file")
        else:
            raise self._error(source, name, "extends needs a service name (`extends: web` or `service: web`)")
        here = (source.doc.source, name)
        if here in chain:
            cycle = " -> ".join(f"{svc} ({path})" for path, svc in (*chain, here))
            raise self._error(source, name, f"circular extends: {cycle}")
        if file is not None:
            if not isinstance(file, str):
                raise self._error(source, name, "extends.file must be a string")
            target = self._load(source, name, file)
            if ref not in target.services:
                raise self._error(
                    source, name, f"cannot extend service {name!r}: service {ref!r} not found in {file}"
                )
        else:
            target = source
            if ref not in source.services:
                raise self._error(source, name, f"cannot extend service {name!r}: service {ref!r} not found")
        base = self._extend(target, ref, (*chain, here))
        if base is None:
            return service
        if not isinstance(base, dict):
            raise self._error(source, name, f"cannot extend service {name!r}: {ref!r} is not a mapping")
        base = copy.deepcopy(base)
        # `!reset` / `!override` in the extending service clear what the base set
        wrapper = {"services": {name: base}}
        apply_resets(wrapper, target.resets if target is not source else [])
        apply_resets(wrapper, source.resets)
        base = wrapper["services"][name]
        try:
            merged = merge_value(base, service, ("services", "x"))
        except MergeError as exc:
            raise self._error(source, name, str(exc)) from None
        merged.pop("extends", None)
        source.services[name] = merged
        return merged

    def _load(self, source: _Source, name: str, file: str) -> _Source:
        path = file if os.path.isabs(file) else os.path.join(source.base_dir, file)
        path = os.path.normpath(path)
        cached = self._files.get(path)
        if cached is not None:
            return cached
        try:
            docs = load_file(path)
        except ComposeError as exc:
            raise self._error(source, name, f"cannot load extends file {file}: {exc.detail}") from None
        model: dict[str, Any] = {}
        resets: list[Path] = []
        doc = docs[-1]
        base_dir = os.path.dirname(path)
        for doc in docs:
            data = self.prepare(doc)
            apply_resets(model, (*doc.resets, *doc.overrides))
            try:
                merge_mappings(model, data, ())
                enforce_unicity(model)
                canonical(model)
                enforce_unicity(model)
            except (MergeError, NormalizeError) as exc:
                raise ComposeError(str(exc), Location(file=doc.source, line=doc.line_of(exc.path))) from None
            resets = [*doc.resets, *doc.overrides]
        try:
            resolve_paths(model, base_dir, self.home)
        except NormalizeError as exc:
            raise ComposeError(str(exc), Location(file=doc.source)) from None
        services = model.get("services")
        if not isinstance(services, dict):
            raise self._error(source, name, f"cannot extend service {name!r}: {file} has no services section")
        # nested `extends: {file: ...}` in that file are relative to it
        for service in services.values():
            spec = service.get("extends") if isinstance(service, dict) else None
            if isinstance(spec, dict) and isinstance(spec.get("file"), str):
                spec["file"] = os.path.join(base_dir, spec["file"])
        loaded = _Source(doc, services, base_dir, resets)
        self._files[path] = loaded
        return loaded
