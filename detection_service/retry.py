"""The one backoff of the code base: exponential delays for the in-process retry loops.

Every loop that retries something that failed (re-opening a camera, an event writer's database
or store write, the Telegram poller, the camera client's reconnect, the runner restarting a child
process) keeps one ``Backoff``: ``next_delay()`` after each failure, ``reset()`` after a success,
``wait(stop)`` to sleep the next delay unless a stop event is set first. The notifier's alerts
are retried on a database schedule instead (``next_attempt_at``); they take their delay for
attempt *n* from ``delay_for(n)``, so both follow the same curve.

A library (tenacity, stamina) was weighed: these loops do not retry one call, they keep a thread
alive across failures, log each new error once and are stopped from outside; wrapping them in
decorators would not make them shorter.
"""

from __future__ import annotations

import threading


class Backoff:
    """``initial_s``, doubling (``factor``) after each failure, never above ``max_s``."""

    def __init__(self, initial_s: float, max_s: float, factor: float = 2.0) -> None:
        if initial_s <= 0 or max_s < initial_s or factor < 1:
            raise ValueError("backoff needs 0 < initial_s <= max_s and factor >= 1")
        self.initial_s = initial_s
        self.max_s = max_s
        self.factor = factor
        self.failures = 0  # since the last reset

    @property
    def delay(self) -> float:
        """The delay ``next_delay`` will return (for a log line before the wait)."""
        return self.delay_for(self.failures + 1)

    def delay_for(self, attempt: int) -> float:
        """The delay after the ``attempt``-th failure in a row (1 = the first)."""
        return min(self.max_s, self.initial_s * self.factor ** max(0, attempt - 1))

    def next_delay(self) -> float:
        """One more failure: the delay to wait before the next try."""
        self.failures += 1
        return self.delay_for(self.failures)

    def reset(self) -> None:
        """A success: the next failure waits ``initial_s`` again."""
        self.failures = 0

    def wait(self, stop: threading.Event) -> bool:
        """Wait the next delay; returns True when ``stop`` was set (before or during the wait)."""
        return stop.wait(self.next_delay())
