"""The render pipeline, step by step, as compose-go's loader runs it.

Called by ``reconciler.render.render``. Files are found, variables collected, the project named; each
document is interpolated, validated, extended, its includes imported, merged and brought to long
syntax; then paths are resolved, defaults added, profiles applied, references checked and the typed
model printed.
"""

from __future__ import annotations

import datetime
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from reconciler.errors import ComposeError, Location
from reconciler.render import gotypes as gt
from reconciler.render import model as out
from reconciler.render.checks import Checker
from reconciler.render.envfile import read_env_file
from reconciler.render.extends import Extender
from reconciler.render.gofmt import float64_number, go_time
from reconciler.render.include import Includer, Scope
from reconciler.render.interpolate import InterpolationError, TemplateError, interpolate, substitute
from reconciler.render.loader import Document, load_file
from reconciler.render.merge import MergeError, apply_resets, enforce_unicity, merge_mappings
from reconciler.render.normalize import (
    NormalizeError,
    canonical,
    normalize,
    resolve_list_environment,
    resolve_paths,
)
from reconciler.render.validate import SchemaError, dotted, validate_document, validate_merged

if TYPE_CHECKING:
    from reconciler.render import RenderOptions

# compose-go cli.DefaultFileNames / DefaultOverrideFileNames, in compose's order of preference
DEFAULT_FILES = ("compose.yaml", "compose.yml", "docker-compose.yml", "docker-compose.yaml")
OVERRIDE_FILES = (
    "compose.override.yml",
    "compose.override.yaml",
    "docker-compose.override.yml",
    "docker-compose.override.yaml",
)
_NAME_CHARS = re.compile(r"[a-z0-9_-]")


@dataclass(frozen=True)
class Result:
    name: str
    working_dir: str
    config_files: tuple[str, ...]
    model: dict[str, Any]
    environment: dict[str, str]


def normalize_project_name(text: str) -> str:
    """compose-go NormalizeProjectName: lower-case, keep [a-z0-9_-], no leading '_' or '-'."""
    return "".join(_NAME_CHARS.findall(text.lower())).lstrip("_-")


def _plain(value: Any, path: tuple[str, ...], label: str) -> Any:
    """A deep, plain copy of an inline document (any Mapping/sequence), refusing non-string keys."""
    if isinstance(value, Mapping):
        result = {}
        for key, item in value.items():
            if not isinstance(key, str):
                where = ".".join(path) or "top level"
                raise ComposeError(f"non-string key {key!r} in {where}", Location(file=label))
            result[key] = _plain(item, (*path, key), label)
        return result
    if isinstance(value, list | tuple):
        return [_plain(item, path, label) for item in value]
    return value


def _depth(data: Any, path: tuple[str | int, ...]) -> int:
    """How many leading parts of ``path`` exist in ``data``."""
    depth = 0
    for part in path:
        if isinstance(data, list) and isinstance(part, str) and part.isascii() and part.isdigit():
            part = int(part)
        found = (isinstance(data, dict) and isinstance(part, str) and part in data) or (
            isinstance(data, list) and isinstance(part, int) and part < len(data)
        )
        if not found:
            break
        data = data[part]
        depth += 1
    return depth


def _as_path(path: tuple[Any, ...]) -> tuple[str | int, ...]:
    return tuple(int(p) if isinstance(p, str) and p.isascii() and p.isdigit() else p for p in path)


class Renderer:
    """One render: holds the options, documents and environment while the pipeline runs."""

    def __init__(self, opts: RenderOptions) -> None:
        self.opts = opts
        self.working_dir = os.path.abspath(opts.working_dir)
        self.environ = {str(k): str(v) for k, v in opts.environ.items()}
        # docker compose adds PWD=os.Getwd() when its environment lacks PWD (cmd/compose toProjectOptions):
        # the working directory, not the project's, and as process environment it beats a PWD in .env
        self.environ.setdefault("PWD", self.working_dir)
        self.docs: list[Document] = []
        self.env: dict[str, str] = {}
        self.included: list[Document] = []  # documents of included files (error locations)
        self.extenders: dict[int, Extender] = {}  # by Scope.serial: one per (sub-)project
        self.includer = Includer(self.working_dir, self.included)

    # -- locations ------------------------------------------------------------------------------

    def best_doc(self, path: tuple[Any, ...], docs: list[Document]) -> Document | None:
        """The latest of ``docs`` that has most of ``path``."""
        path = _as_path(path)
        found = None
        best = -1
        for candidate in docs:
            depth = _depth(candidate.data, path)
            if depth >= best and depth > 0:
                best, found = depth, candidate
        return found

    def location(self, path: tuple[Any, ...], doc: Document | None = None) -> Location:
        """Where ``path`` (services.web.ports.0...) was written: the latest document that has it."""
        path = _as_path(path)
        if doc is None:
            # the including files win ties over what they include
            doc = self.best_doc(path, [*self.included, *self.docs])
        service = key = None
        if len(path) >= 2 and path[0] == "services":
            service = str(path[1])
            key = ".".join(str(p) for p in path[2:]) or None
        elif path:
            key = dotted(path)
        if doc is None:
            return Location(service=service, key=key)
        return Location(file=doc.source, line=doc.line_of(path), service=service, key=key)

    def error(
        self, message: str, path: tuple[Any, ...], doc: Document | None = None, hint: str | None = None
    ) -> ComposeError:
        return ComposeError(message, self.location(path, doc), hint=hint)

    # -- inputs ---------------------------------------------------------------------------------

    def _abs(self, path: str) -> str:
        return os.path.normpath(os.path.join(self.working_dir, os.path.expanduser(path)))

    def find_files(self) -> list[str]:
        if self.opts.files:
            return [self._abs(f) for f in self.opts.files]
        from_env = self.environ.get("COMPOSE_FILE")
        if from_env:
            separator = self.environ.get("COMPOSE_PATH_SEPARATOR", os.pathsep)
            return [self._abs(f) for f in from_env.split(separator) if f]
        directory = self.working_dir
        while True:
            for candidate in DEFAULT_FILES:
                main = os.path.join(directory, candidate)
                if os.path.isfile(main):
                    files = [main]
                    for override in OVERRIDE_FILES:
                        extra = os.path.join(directory, override)
                        if os.path.isfile(extra):
                            files.append(extra)
                            break
                    return files
            parent = os.path.dirname(directory)
            if parent == directory:
                if self.opts.inline:
                    return []  # inline documents alone make a project
                raise ComposeError(
                    f"no compose file found in {self.working_dir} or its parents",
                    hint=f"create {DEFAULT_FILES[0]} or pass -f FILE",
                )
            directory = parent

    def load_environment(self, project_dir: str) -> dict[str, str]:
        """Interpolation variables: the env files (or the project's .env), overridden by the environment."""
        if self.opts.env_files:
            paths = [self._abs(f) for f in self.opts.env_files]
            for path in paths:
                if not os.path.exists(path):  # a FIFO or device exists: reading it gives the clear error
                    raise ComposeError("env file not found", Location(file=path), hint="check --env-file")
        else:
            # compose reads .env before it looks for compose files: when they are discovered (no -f, no
            # --project-directory) a .env in the working directory wins over the project's one
            candidates = [os.path.join(project_dir, ".env")]
            if not self.opts.files and not self.opts.project_directory:
                candidates.insert(0, os.path.join(self.working_dir, ".env"))
            paths = [path for path in candidates if os.path.isfile(path)][:1]
        values: dict[str, str] = {}
        for path in paths:

            def lookup(name: str) -> str | None:
                found = self.environ.get(name)
                return found if found is not None else values.get(name)

            values.update(read_env_file(path, lookup))
        return {**values, **self.environ}

    def project_name(self, project_dir: str) -> str:
        explicit = self.opts.project_name or self.env.get("COMPOSE_PROJECT_NAME") or None
        if explicit is not None:
            if normalize_project_name(explicit) != explicit:
                source = "-p" if self.opts.project_name else "COMPOSE_PROJECT_NAME"
                raise ComposeError(
                    f"invalid project name {explicit!r} (from {source}): it must contain only lower-case "
                    "letters, digits, '-' and '_', and start with a letter or digit"
                )
            return explicit
        from_files = ""
        source_doc = None
        for doc in self.docs:
            raw = doc.data.get("name")
            if isinstance(raw, str) and raw:
                from_files, source_doc = raw, doc
        if from_files:
            try:
                from_files = substitute(from_files, self.env.get)
            except TemplateError as exc:
                raise self.error(str(exc), ("name",), source_doc) from None
            from_files = normalize_project_name(from_files)
        if from_files:
            return from_files
        name = normalize_project_name(os.path.basename(project_dir))
        if not name:
            raise ComposeError(
                f"cannot derive a project name from {project_dir}", hint="pass -p NAME or set `name:`"
            )
        return name

    # -- the pipeline ---------------------------------------------------------------------------

    def prepare(self, doc: Document, env: Mapping[str, str] | None = None) -> dict[str, Any]:
        """Interpolate one document (values only, never keys) and cast typed fields."""
        try:
            return interpolate(doc.data, (self.env if env is None else env).get)
        except InterpolationError as exc:
            where = dotted(exc.path)
            hint: str | None
            if exc.variable and "required variable" in exc.message:
                message = f"{exc.message} (in {where})"
                hint = f"set {exc.variable} in the environment or the .env file"
            else:
                message = f"invalid interpolation in {where}: {exc.message}"
                hint = "write a literal $ as $$" if "interpolation format" in exc.message else None
            raise self.error(message, exc.path, doc, hint) from None

    def layer(self, doc: Document, merged: dict[str, Any], scope: Scope, docs: list[Document]) -> None:
        """One document onto ``merged``: interpolate, validate, extends, include, merge, long syntax."""
        data = self.prepare(doc, scope.env)
        try:
            validate_document(data)
        except SchemaError as exc:
            raise self.error(exc.message, exc.path, doc, exc.hint) from None
        if "models" in data:
            raise self.error("top-level `models` is not supported by reconciler", ("models",), doc)
        extender = self.extenders.get(scope.serial)
        if extender is None:
            # extends of an included file interpolate with the include's variables
            extender = Extender(lambda d: self.prepare(d, scope.env), self.environ.get("HOME", ""))
            self.extenders[scope.serial] = extender
        extender.apply(doc, data, os.path.normpath(os.path.join(self.working_dir, scope.loader_wd)))
        if "include" in data:
            self.includer.apply(data, doc, scope, self)
        # honour !reset/!override, merge onto the earlier layers, bring to long syntax
        apply_resets(merged, (*doc.resets, *doc.overrides))
        services = data.get("services")
        touched = list(services) if isinstance(services, dict) else []
        try:
            merge_mappings(merged, data, ())
            merged.pop("version", None)  # obsolete, ignored
            canonical(merged, touched)
            # compose also runs unicity before `canonical`; after it alone gives the same result
            enforce_unicity(merged, touched)
        except (MergeError, NormalizeError) as exc:
            raise self.error(str(exc), exc.path, self.best_doc(exc.path, docs)) from None

    def finish_include(self, model: dict[str, Any], scope: Scope, docs: list[Document]) -> None:
        """What compose-go does to a loaded sub-project: absolute paths, `- VAR` entries from its env."""
        try:
            resolve_paths(model, scope.base, self.environ.get("HOME", ""))
        except NormalizeError as exc:
            raise self.error(str(exc), exc.path, self.best_doc(exc.path, docs)) from None
        services = model.get("services")
        for service in services.values() if isinstance(services, dict) else ():
            if isinstance(service, dict) and isinstance(service.get("environment"), list):
                service["environment"] = resolve_list_environment(service["environment"], scope.env)
        # compose-go fills these in the sub-project already: an included config with `environment`
        # then also has `content`, which the main project's checks refuse (compose does the same)
        for kind, key in (("secrets", "x-#value"), ("configs", "content")):
            section = model.get(kind)
            for item in section.values() if isinstance(section, dict) else ():
                variable = item.get("environment") if isinstance(item, dict) else None
                if isinstance(variable, str) and variable in scope.env:
                    item[key] = scope.env[variable]

    def run(self) -> Result:
        files = self.find_files()
        project_dir = (
            self._abs(self.opts.project_directory)
            if self.opts.project_directory
            else (os.path.dirname(files[0]) if files else self.working_dir)
        )
        self.env = self.load_environment(project_dir)
        for path in files:
            self.docs.extend(load_file(path))
        for label, document in self.opts.inline:
            if not isinstance(document, Mapping):
                raise ComposeError("an inline compose document must be a mapping", Location(file=label))
            self.docs.append(Document(label, _plain(document, (), label)))
        if not self.docs:
            raise ComposeError("no compose file given")
        name = self.project_name(project_dir)
        self.env["COMPOSE_PROJECT_NAME"] = name
        home = self.environ.get("HOME", "")

        merged: dict[str, Any] = {}
        main = Scope(config_wd=project_dir, loader_wd=project_dir, base=project_dir, env=self.env)
        try:
            for doc in self.docs:
                self.layer(doc, merged, replace(main, chain=(doc.source,)), self.docs)
        finally:
            self.extenders.clear()  # they refer back to this renderer: no cycle left for the GC
        # checks on the merged model, absolute paths, implicit defaults
        try:
            validate_merged(merged)
            resolve_paths(merged, project_dir, home)
            normalize(merged, self.env, name)
        except SchemaError as exc:
            raise self.error(exc.message, exc.path) from None
        except NormalizeError as exc:
            raise self.error(str(exc), exc.path) from None
        model = self.build_model(merged, name)
        return Result(
            name=name,
            working_dir=project_dir,
            config_files=tuple(files),
            model=gt.escape_dollars(model),
            environment=dict(self.env),
        )

    # -- typed model ----------------------------------------------------------------------------

    def profiles(self) -> set[str]:
        if self.opts.profiles:
            return set(self.opts.profiles)
        from_env = self.env.get("COMPOSE_PROFILES", "")
        return {p.strip() for p in from_env.split(",") if p.strip()}

    def build_model(self, merged: dict[str, Any], name: str) -> dict[str, Any]:
        services: dict[str, Any] = merged.get("services") or {}
        for service_name, service in list(services.items()):
            if service is None:
                services[service_name] = {}
            for key in services[service_name]:
                if key in out.UNSUPPORTED:
                    raise self.error(
                        f"{out.UNSUPPORTED[key]} by reconciler",
                        ("services", service_name, key),
                        hint="remove it, or render with docker compose instead",
                    )
        active = self.profiles()
        enabled = {
            n: s
            for n, s in services.items()
            if not s.get("profiles") or "*" in active or active.intersection(map(str, s["profiles"]))
        }
        disabled = set(services) - set(enabled)
        Checker(self.error).check(merged, enabled, disabled)
        for service in enabled.values():
            # compose copies `scale` into deploy.replicas once the checker has seen that both agree
            if service.get("scale") is not None and isinstance(service.get("deploy"), dict):
                service["deploy"]["replicas"] = service["scale"]

        rendered: dict[str, Any] = {}
        for service_name in sorted(enabled):
            service = enabled[service_name]
            environment = self.service_environment(service_name, service)
            try:
                rendered[service_name] = out.service_model(service_name, service, environment)
            except gt.ModelError as exc:
                raise self.error(str(exc), exc.path) from None

        # WithoutUnnecessaryResources: only what enabled services use is printed
        used: dict[str, set[str]] = {"networks": set(), "volumes": set(), "secrets": set(), "configs": set()}
        for service in rendered.values():
            used["networks"].update(service.get("networks") or {})
            for volume in service.get("volumes") or ():
                if volume.get("type") == "volume" and volume.get("source"):
                    used["volumes"].add(volume["source"])
            used["secrets"].update(s["source"] for s in service.get("secrets") or () if "source" in s)
            used["secrets"].update(
                s["source"] for s in (service.get("build") or {}).get("secrets") or () if "source" in s
            )
            used["configs"].update(c["source"] for c in service.get("configs") or () if "source" in c)

        result: dict[str, Any] = {"name": name, "services": rendered}
        converters = {
            "networks": out.network_model,
            "volumes": out.volume_model,
            "secrets": out.secret_model,
            "configs": out.config_model,
        }
        for kind, convert in converters.items():
            section = merged.get(kind) or {}
            try:
                printed = {key: convert(key, section[key]) for key in sorted(used[kind]) if key in section}
            except gt.ModelError as exc:
                raise self.error(str(exc), exc.path) from None
            if printed:
                result[kind] = printed
        for key, value in merged.items():
            if key.startswith("x-"):
                try:
                    result[key] = _json_numbers(value)
                except ValueError as exc:
                    raise self.error(f"{key}: {exc}", (key,)) from None
        return {key: result[key] for key in sorted(result)}

    def service_environment(self, name: str, service: dict[str, Any]) -> dict[str, str | None]:
        """env_file values overridden by `environment` (compose's WithServicesEnvironmentResolved)."""
        try:
            declared = gt.mapping_with_equals(service.get("environment"), ("services", name, "environment"))
        except gt.ModelError as exc:
            raise self.error(str(exc), exc.path) from None
        for key, value in declared.items():
            if value is None and key in self.env:
                declared[key] = self.env[key]
        from_files: dict[str, str | None] = {}
        for i, entry in enumerate(service.get("env_file") or ()):
            path = entry.get("path") if isinstance(entry, dict) else entry
            where = ("services", name, "env_file", i)
            # docker compose knows compose-go's dotenv format (".env", the default) and registers `raw`
            env_format = entry.get("format") if isinstance(entry, dict) else None
            if env_format not in (None, "", ".env", "raw"):
                raise self.error(
                    f'unsupported env_file format "{env_format}"',
                    (*where, "format"),
                    hint="use `format: raw` (KEY=VALUE taken literally) or leave it out (.env syntax)",
                )
            required = not isinstance(entry, dict) or entry.get("required", True) not in (
                False,
                "false",
                "False",
            )
            if not isinstance(path, str):
                raise self.error("env_file path must be a string", where)
            if not os.path.exists(path):  # a FIFO or device exists: reading it gives the clear error
                if required:
                    raise self.error(
                        f"env file {path} not found",
                        where,
                        hint="create it, or mark it optional with `required: false`",
                    )
                continue

            # compose resolves env_file variables from the project environment, then the service's
            # `environment`, then the env files read before this one
            def lookup(key: str) -> str | None:
                for source in (self.env, declared, from_files):
                    found = source.get(key)
                    if found is not None:
                        return found
                return None

            try:
                from_files.update(read_env_file(path, lookup, raw=env_format == "raw"))
            except ComposeError as exc:
                raise ComposeError(
                    exc.detail, Location(file=path, line=exc.location.line, service=name, key="env_file")
                ) from None
        return {**from_files, **declared}


def _json_numbers(value: Any) -> Any:
    """Raw YAML values (x- extensions) as Go's encoding/json prints them."""
    if isinstance(value, float):
        if not math.isfinite(value):  # `docker compose config` fails: json: unsupported value: +Inf
            raise ValueError(f"{value} cannot be written as JSON: use a finite number or quote it")
        return float64_number(value)
    if isinstance(value, datetime.datetime):
        return go_time(value)
    if isinstance(value, dict):
        return {k: _json_numbers(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_numbers(v) for v in value]
    return value
