"""Per-case guards for the fuzz tests: a hang becomes a failure, and only clear errors count as answers."""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from hypothesis import settings

from reconciler.errors import ReconcilerError

T = TypeVar("T")
CASE_SECONDS = 5.0  # far above any real case (a few ms): only a hang or a resource bomb gets here


class Hang(BaseException):  # BaseException: the code under test must not swallow it
    """A case ran past its time limit."""


@contextmanager
def time_limit(seconds: float = CASE_SECONDS) -> Iterator[None]:
    """Raise Hang in the main thread after ``seconds`` (SIGALRM; a no-op off the main thread)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def expire(signum: int, frame: Any) -> None:
        raise Hang(f"case ran longer than {seconds}s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def answer(call: Callable[[], T]) -> T | ReconcilerError:
    """The result of ``call`` or the ReconcilerError it raised, which must be a clear user-facing message."""
    with time_limit():
        try:
            return call()
        except ReconcilerError as exc:
            message = str(exc)
            assert message.strip(), f"{type(exc).__name__} without a message"
            # the renderer's wrapper for a bug of ours (the input itself may well say "internal error")
            assert "internal error while" not in message and "reconciler bug" not in message, message
            assert "Traceback" not in message, message
            return exc


def budget(examples: int) -> settings:
    """``examples`` cases in CI; ``FUZZ_SCALE`` times more in a long run (scripts/fuzz.sh)."""
    return settings(max_examples=examples * int(os.environ.get("FUZZ_SCALE", "1")))
