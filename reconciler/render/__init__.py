"""Compose files + variables -> the model `docker compose config --format json` prints (Compose v2.40).

The public API of the render stage, used by `reconciler render`, the converge engine and the daemon.
Pure: reads the compose, env, extends and included files it is given (all through ``loader``), never
Docker, git, subprocesses or the clock.
Every bad input raises ComposeError with a Location (file, line, service, key); never anything else.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from reconciler.errors import ComposeError, InvalidNameError
from reconciler.names import validate_project_name
from reconciler.render.loader import confined
from reconciler.render.project import Renderer

__all__ = ["RenderOptions", "RenderedProject", "render", "unescape_dollars"]


@dataclass(frozen=True)
class RenderOptions:
    """What to render; mirrors `docker compose` flags. ``environ`` is the process environment."""

    # empty: discover compose.yaml / compose.yml / docker-compose.yml / docker-compose.yaml (+ the override
    # file) in working_dir or its parents, or use $COMPOSE_FILE from ``environ``
    files: tuple[str, ...] = ()
    project_directory: str | None = None  # default: directory of the first file
    env_files: tuple[str, ...] = ()  # --env-file; when given, replaces <project_directory>/.env
    profiles: tuple[str, ...] = ()  # empty: $COMPOSE_PROFILES from the variables
    project_name: str | None = None  # -p; else $COMPOSE_PROJECT_NAME; else `name:`; else the directory's name
    environ: Mapping[str, str] = field(default_factory=dict)  # process environment (highest precedence)
    # (label, compose document) merged after the files, in order; the label names it in error messages
    inline: tuple[tuple[str, Mapping[str, Any]], ...] = ()
    working_dir: str = "."  # relative files, --env-file and discovery start here; $PWD unless environ has it
    # Not a compose flag: when set, every file read must resolve inside this directory, except the
    # ``confine_exempt`` files (the operator's overlays and env files); see ``loader.confined``.
    confine_to: str | None = None
    confine_exempt: tuple[str, ...] = ()


@dataclass(frozen=True)
class RenderedProject:
    """A rendered project. ``model`` is exactly what `docker compose config --format json` prints.

    As in compose's output, every `$` in ``model`` strings is doubled (`$$`): use ``unescape_dollars``
    to get the literal value a container receives.
    """

    name: str  # validated with reconciler.names.validate_project_name
    working_dir: str  # absolute project directory
    config_files: tuple[str, ...]  # absolute paths of the files used
    model: dict[str, Any]  # exactly what `docker compose config --format json` prints
    environment: dict[str, str]  # the resolved interpolation variables (incl. COMPOSE_PROJECT_NAME)


def render(opts: RenderOptions) -> RenderedProject:
    """Load, interpolate, merge, validate and normalize a compose project. Raises ComposeError."""
    try:
        with confined(opts.confine_to, opts.confine_exempt):
            result = Renderer(opts).run()
    except ComposeError:
        raise
    except RecursionError:
        raise ComposeError("compose model nested too deeply (recursive anchors or extends?)") from None
    except Exception as exc:  # a bug of ours must not become a traceback for the user
        raise ComposeError(
            f"internal error while rendering ({type(exc).__name__}: {exc})",
            hint="this is a reconciler bug; please report it with the compose files",
        ) from exc
    try:
        name = validate_project_name(result.name)
    except InvalidNameError as exc:
        raise ComposeError(exc.detail, hint="pass -p NAME or set `name:`") from None
    return RenderedProject(
        name=name,
        working_dir=result.working_dir,
        config_files=result.config_files,
        model=result.model,
        environment=result.environment,
    )


def unescape_dollars(value: Any) -> Any:
    """Undo the `$$` escaping compose applies to its printed model (strings and mapping keys)."""
    if isinstance(value, str):
        return value.replace("$$", "$")
    if isinstance(value, dict):
        return {unescape_dollars(k): unescape_dollars(v) for k, v in value.items()}
    if isinstance(value, list):
        return [unescape_dollars(item) for item in value]
    return value
