"""A circuit breaker per service: after ``threshold`` consecutive failures, calls are not
attempted for ``cooldown`` seconds; then one trial call decides (half-open). This keeps an
outage from turning every certificate's retry budget into load on a service that is down.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from jobs.mailbox.adapter import CircuitOpenError


class CircuitBreaker:
    def __init__(
        self,
        name: str,
        threshold: int = 20,
        cooldown: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self.threshold = threshold
        self.cooldown = cooldown
        self._clock = clock
        self._failures = 0
        self._opened_at: float | None = None
        self._trial_out = False
        self.opened = 0  # how often it opened (for the step's summary)

    @property
    def state(self) -> str:
        if self._opened_at is None:
            return "closed"
        return "half-open" if self._clock() - self._opened_at >= self.cooldown else "open"

    def before_call(self) -> None:
        """Raise CircuitOpenError unless a call may go out now."""
        if self._opened_at is None:
            return
        waited = self._clock() - self._opened_at
        if waited < self.cooldown:
            raise CircuitOpenError(self.name, self.cooldown - waited)
        if self._trial_out:  # half-open: one trial at a time
            raise CircuitOpenError(self.name, min(1.0, self.cooldown) or 0.05)
        self._trial_out = True

    def abandon(self) -> None:
        """A call ended without a verdict on the service (cancelled, or an error of ours):
        a half-open trial is given back, so the next call may try."""
        self._trial_out = False

    def success(self) -> None:
        self._failures = 0
        self._opened_at = None
        self._trial_out = False

    def failure(self) -> None:
        self._failures += 1
        if self._opened_at is not None:  # the half-open trial failed: open again
            self._opened_at = self._clock()
            self._trial_out = False
        elif self._failures >= self.threshold:
            self._opened_at = self._clock()
            self.opened += 1
