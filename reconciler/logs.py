"""structlog set-up for the CLI and the daemon: log lines go to stderr (stdout is each command's output),
as JSON lines when stderr is not a TTY and for the console when it is.

Every daemon log line carries app, environment, project and commit (bound by the caller); secrets are
masked in every line (``reconciler.secrets``).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Mapping, MutableMapping
from typing import TYPE_CHECKING, Any

from reconciler import secrets


def _import_structlog() -> Any:
    """structlog, imported without rich unless something already loaded rich.

    structlog's console renderer picks rich for tracebacks whenever rich is importable, and rich costs
    about 30 ms of every command's start-up (`reconciler sync` is timed whole against Compose). rich
    is no dependency of ours (only of a test tool), so whether it is installed must not decide how we
    log: the console renderer is given plain tracebacks explicitly, and JSON lines never used rich."""
    blocked = "rich" not in sys.modules
    if blocked:
        sys.modules["rich"] = None  # type: ignore[assignment]  # None makes `import rich` fail fast
    try:
        import structlog as module
    finally:
        if blocked and sys.modules.get("rich", "") is None:
            del sys.modules["rich"]  # others (import-linter) may still import rich later
    return module


if TYPE_CHECKING:
    import structlog
else:
    structlog = _import_structlog()


def configure(level: str = "info", *, json: bool | None = None) -> None:
    """Configure structlog; ``json=None`` picks JSON unless stderr is a terminal.

    Always stderr: `reconciler sync` or `status --format json` piped into another program must give it
    their own output only, whatever the daemon code logs meanwhile."""
    use_json = (not sys.stderr.isatty()) if json is None else json
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if use_json
        else structlog.dev.ConsoleRenderer(
            colors=sys.stderr.isatty(), exception_formatter=structlog.dev.plain_traceback
        )
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            _scrub,  # last before rendering: exception text and bound context are masked too
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        # sys.stderr as it is when a logger is made, not when this runs (as structlog's own default does
        # for stdout): a test harness that swaps and closes stderr must not leave loggers a closed file.
        logger_factory=_stderr_logger,
        cache_logger_on_first_use=True,
    )
    # APScheduler logs through stdlib logging; keep its chatter at warning level.
    logging.basicConfig(
        level=logging.WARNING, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s"
    )
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, _ScrubFilter) for f in handler.filters):
            handler.addFilter(_ScrubFilter())
    # "skipped: maximum number of running instances reached" is by design (a drift check never stacks).
    logging.getLogger("apscheduler.scheduler").setLevel(logging.ERROR)


def _scrub(_logger: Any, _method: str, event: MutableMapping[str, Any]) -> Mapping[str, Any]:
    """Mask every registered secret (``reconciler.secrets``) in the event's keys and values."""
    if not secrets.active():
        return event
    return {str(k): _masked(v) for k, v in event.items()}


def _masked(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, str | Mapping | list | tuple):
        return secrets.scrub_value(value)
    return secrets.scrub(str(value))  # an exception or path: rendered as its text anyway


class _ScrubFilter(logging.Filter):
    """The same masking for stdlib log records (APScheduler, urllib3...)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if secrets.active():
            record.msg = secrets.scrub(record.getMessage())
            record.args = None
        return True


def _stderr_logger(*_args: Any) -> structlog.PrintLogger:
    return structlog.PrintLogger(sys.stderr)


def get(**bound: Any) -> Any:
    """A logger with ``bound`` context (app, environment, project, commit...).

    Configures logging first if no one has: structlog's own default prints to stdout, which would mix log
    lines into a command's output (`reconciler up` logs through the converger)."""
    if not structlog.is_configured():
        configure()
    return structlog.get_logger("reconciler").bind(**bound)
