"""structlog set-up for the CLI and the daemon: JSON lines when stdout is not a TTY, console when it is.

Every daemon log line carries app, environment, project and commit (bound by the caller).
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import structlog


def configure(level: str = "info", *, json: bool | None = None) -> None:
    """Configure structlog once; ``json=None`` picks JSON unless stdout is a terminal."""
    use_json = (not sys.stdout.isatty()) if json is None else json
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if use_json
        else structlog.dev.ConsoleRenderer(colors=sys.stdout.isatty())
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=structlog.PrintLoggerFactory(sys.stdout),
        cache_logger_on_first_use=True,
    )
    # APScheduler logs through stdlib logging; keep its chatter at warning level.
    logging.basicConfig(
        level=logging.WARNING, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s"
    )
    # "skipped: maximum number of running instances reached" is by design (a drift check never stacks).
    logging.getLogger("apscheduler.scheduler").setLevel(logging.ERROR)


def get(**bound: Any) -> Any:
    """A logger with ``bound`` context (app, environment, project, commit...)."""
    return structlog.get_logger("reconciler").bind(**bound)
