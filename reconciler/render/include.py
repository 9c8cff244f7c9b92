"""Top-level `include`: sub-projects loaded on their own and imported into the including document.

Called by the renderer for each document that has `include`, before it is merged (as compose-go v2.9.1's
loader/include.go does). Paths and precedence follow compose-go, including its relative-directory quirks.
"""

from __future__ import annotations

import os
import posixpath
import stat
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any, Protocol

from reconciler.errors import ComposeError, Location
from reconciler.render.envfile import read_env_file
from reconciler.render.loader import Document, is_special, load_file

MAX_DEPTH = 16  # includes of includes; deeper is refused (a cycle through a non-first path ends here)
RESOURCES = ("services", "volumes", "networks", "secrets", "configs", "models")  # what an include adds
_REMOTE_PREFIXES = ("git@", "github.com/")


class Loader(Protocol):
    """The renderer's steps an include needs (passed per call: no reference cycle to the renderer)."""

    def layer(self, doc: Document, merged: dict[str, Any], scope: Scope, docs: list[Document]) -> None:
        """Merge one document of a (sub-)project into ``merged``."""

    def finish_include(self, model: dict[str, Any], scope: Scope, docs: list[Document]) -> None:
        """Absolute paths and environment of a loaded sub-project."""


@dataclass(frozen=True)
class Scope:
    """One compose-go load: the main project or an included sub-project.

    compose-go keeps an include's directories relative to its parent's (it resolves them again at every
    level up) and, on disk, relative to the process's directory: ``config_wd`` and ``loader_wd`` are those
    strings as compose-go holds them, ``base`` the absolute directory relative paths end up against.
    """

    config_wd: str  # ConfigDetails.WorkingDir: relative paths of this scope, env_file of its includes
    loader_wd: str  # the local resource loader's directory: include paths and extends files
    base: str  # absolute directory this scope's relative paths resolve to in the final model
    env: Mapping[str, str]  # interpolation variables
    chain: tuple[str, ...] = ()  # files on the include path, outermost first (cycle detection)
    depth: int = 0
    serial: int = 0  # tells sub-projects apart (each has its own extends cache)


@dataclass(frozen=True)
class Entry:
    """One `include` item in long syntax."""

    index: int
    paths: tuple[str, ...]
    project_directory: str
    env_files: tuple[str, ...]


def _string_list(value: Any, where: str, doc: Document, index: int) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return tuple(value)
    raise ComposeError(
        f"include[{index}].{where} must be a string or a list of strings",
        Location(
            file=doc.source, line=doc.line_of(("include", index, where)), key=f"include.{index}.{where}"
        ),
    )


def parse_entries(raw: Any, doc: Document) -> list[Entry]:
    """The `include` list in long syntax. Unknown keys are ignored and a missing path includes nothing,
    as compose does."""
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise ComposeError(
            "`include` must be a list of paths or mappings",
            Location(file=doc.source, line=doc.line_of(("include",)), key="include"),
        )
    entries = []
    for index, item in enumerate(raw):
        if item is None:
            continue  # compose decodes an empty item as an include of nothing
        if isinstance(item, str):
            item = {"path": item}
        if not isinstance(item, dict):
            raise ComposeError(
                f"include[{index}] must be a path or a mapping with `path`",
                Location(file=doc.source, line=doc.line_of(("include", index)), key=f"include.{index}"),
            )
        directory = item.get("project_directory")
        if directory is not None and not isinstance(directory, str):
            raise ComposeError(
                f"include[{index}].project_directory must be a string",
                Location(file=doc.source, line=doc.line_of(("include", index, "project_directory"))),
            )
        entries.append(
            Entry(
                index=index,
                paths=_string_list(item.get("path"), "path", doc, index),
                project_directory=directory or "",
                env_files=_string_list(item.get("env_file"), "env_file", doc, index),
            )
        )
    return entries


def is_remote(path: str) -> bool:
    """compose's git and OCI resource loaders would fetch these; reconciler never does."""
    return "://" in path or path.startswith(_REMOTE_PREFIXES)


def _join(base: str, path: str) -> str:
    """Go's filepath.Join: an empty base leaves the path relative; the result is cleaned."""
    return posixpath.normpath(posixpath.join(base, path)) if base else posixpath.normpath(path)


def _go_rel(base: str, target: str) -> str | None:
    """Go's filepath.Rel, lexical; None where Go reports an error (mixed absolute and relative)."""
    if posixpath.isabs(base) != posixpath.isabs(target):
        return None
    if posixpath.isabs(base):
        return posixpath.relpath(target, base)
    # both relative: lexical, as if both hung from the same root
    return posixpath.relpath(posixpath.join("/@", target), posixpath.join("/@", base))


@dataclass
class Includer:
    """Loads `include` entries relative to a scope and imports their resources."""

    working_dir: str  # the process's directory: where compose-go's relative paths land on disk
    loaded: list[Document]  # every included document, for error locations after the merge
    _serials: int = 0

    def _next_serial(self) -> int:
        self._serials += 1
        return self._serials

    def _disk(self, path: str) -> str:
        return os.path.normpath(os.path.join(self.working_dir, path))

    def _is_dir(self, path: str) -> bool:
        return os.path.isdir(self._disk(path))

    def _loader_dir(self, loader_wd: str, original: str) -> str:
        """compose-go localResourceLoader.Dir: the directory (or the file's directory), relative."""
        path = original if posixpath.isabs(original) else _join(loader_wd, original)
        if not self._is_dir(path):
            parent = posixpath.dirname(original) or "."
            path = parent if posixpath.isabs(parent) else _join(loader_wd, parent)
        rel = _go_rel(loader_wd, path)
        return path if rel is None else rel

    def apply(self, data: dict[str, Any], doc: Document, scope: Scope, loader: Loader) -> None:
        """Load every entry of ``data['include']`` and import its resources into ``data``."""
        entries = parse_entries(data.pop("include", None), doc)
        origins: dict[tuple[str, str], str] = {}  # which include brought each resource in
        for entry in entries:
            model, source = self._load(entry, doc, scope, loader)
            if model is not None:
                self._import(model, data, doc, source, origins)

    def _error(self, doc: Document, entry: Entry, message: str, hint: str | None = None) -> ComposeError:
        line = doc.line_of(("include", entry.index))
        return ComposeError(
            message, Location(file=doc.source, line=line, key=f"include.{entry.index}"), hint=hint
        )

    def _load(
        self, entry: Entry, doc: Document, scope: Scope, loader: Loader
    ) -> tuple[dict[str, Any] | None, str]:
        if not entry.paths:
            return None, ""
        for path in entry.paths:
            if is_remote(path):
                raise self._error(
                    doc,
                    entry,
                    f"remote include {path!r} is not supported by reconciler",
                    hint="vendor the file into the repository and include it by a local path",
                )
        if scope.depth + 1 > MAX_DEPTH:
            raise self._error(
                doc, entry, f"includes nested more than {MAX_DEPTH} levels deep (at {entry.paths[0]})"
            )
        paths = [p if posixpath.isabs(p) else _join(scope.loader_wd, p) for p in entry.paths]
        main = paths[0]
        if entry.project_directory == "":
            relworkingdir = self._loader_dir(scope.loader_wd, main)
            project_dir = posixpath.dirname(main)
        elif not posixpath.isabs(entry.project_directory):
            relworkingdir = self._loader_dir(scope.loader_wd, entry.project_directory)
            project_dir = _join(scope.config_wd, entry.project_directory)
        else:
            relworkingdir = project_dir = posixpath.normpath(entry.project_directory)
        if main in scope.chain:
            cycle = " includes ".join((*scope.chain[scope.chain.index(main) :], main))
            raise self._error(doc, entry, f"include cycle: {cycle}", hint="remove one of these includes")
        env = {**self._env_values(entry, doc, scope, project_dir), **scope.env}  # the parent's values win
        child = Scope(
            config_wd=relworkingdir,
            loader_wd=project_dir,
            base=os.path.normpath(os.path.join(scope.base, relworkingdir)),
            env=env,
            chain=scope.chain,
            depth=scope.depth + 1,
            serial=self._next_serial(),
        )
        model: dict[str, Any] = {}
        docs: list[Document] = []
        for path in paths:
            for sub in self._read(path, doc, entry):
                docs.append(sub)
                self.loaded.append(sub)
                # compose-go appends the file to the include path once per document
                loader.layer(sub, model, replace(child, chain=(*child.chain, path)), docs)
        loader.finish_include(model, child, docs)
        return model, main

    def _read(self, path: str, doc: Document, entry: Entry) -> list[Document]:
        """The included file's documents, through the same loader as every compose file."""
        disk = self._disk(path)
        try:
            info = os.stat(disk)
        except FileNotFoundError:
            raise self._error(doc, entry, f"included file {disk} not found") from None
        except OSError as exc:
            raise self._error(doc, entry, f"cannot read included file {disk}: {exc.strerror}") from None
        if stat.S_ISDIR(info.st_mode):
            raise self._error(doc, entry, f"included path {disk} is a directory, not a compose file")
        if not _regular(disk, info):
            raise self._error(doc, entry, f"included path {disk} is not a regular file")
        return load_file(disk, display=disk, allow_empty=True)

    def _env_values(self, entry: Entry, doc: Document, scope: Scope, project_dir: str) -> dict[str, str]:
        """Variables from the include's env_file (default: its project directory's .env)."""
        files: list[str] = []
        if not entry.env_files:
            default = self._disk(_join(project_dir, ".env"))
            if os.path.exists(default) and not os.path.isdir(default):
                files.append(default)
        for name in entry.env_files:
            if name == "/dev/null":
                continue  # an empty file, the usual way to say "no .env"
            disk = self._disk(name if posixpath.isabs(name) else _join(scope.config_wd, name))
            if not os.path.exists(disk):
                raise self._error(
                    doc, entry, f"env file {disk} not found", hint="check the include's env_file"
                )
            files.append(disk)
        for disk in files:
            if not _regular(disk, os.stat(disk)):
                raise self._error(doc, entry, f"env file {disk} is not a regular file")
        values: dict[str, str] = {}
        for path in files:

            def lookup(name: str) -> str | None:
                found = scope.env.get(name)
                return found if found is not None else values.get(name)

            values.update(read_env_file(path, lookup))
        return values

    def _import(
        self,
        model: dict[str, Any],
        data: dict[str, Any],
        doc: Document,
        source: str,
        origins: dict[tuple[str, str], str],
    ) -> None:
        """Add the sub-project's resources; one the including file also defines must be identical."""
        for kind in RESOURCES:
            imported = model.get(kind)
            if not isinstance(imported, dict):
                continue
            target = data.get(kind)
            if not isinstance(target, dict):
                target = {}
            for name, value in imported.items():
                if name in target:
                    if go_equal(value, target[name]):
                        continue
                    earlier = origins.get((kind, name))
                    where = f"the included {earlier}" if earlier else "this file"
                    raise ComposeError(
                        f"{kind}.{name} conflicts with imported resource: {where} and the included "
                        f"{source} define it differently",
                        Location(file=doc.source, line=doc.line_of((kind, name)), key=f"{kind}.{name}"),
                        hint="define it in one place only: an including file cannot override what an "
                        "include defines (use an extra -f file to override)",
                    )
                target[name] = value
                origins[(kind, name)] = source
            data[kind] = target


def _regular(path: str, info: os.stat_result) -> bool:
    """A plain file: a FIFO or device could block or never end, /proc and /sys are not configuration."""
    return stat.S_ISREG(info.st_mode) and not is_special(path)


def go_equal(a: Any, b: Any) -> bool:
    """Go's reflect.DeepEqual on decoded YAML: types must match too (1, 1.0 and true all differ)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(go_equal(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(go_equal(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)
