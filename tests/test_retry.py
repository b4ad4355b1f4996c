"""The one backoff helper (detection_service/retry.py)."""

from __future__ import annotations

import threading
import time

import pytest

from detection_service.retry import Backoff


def test_delays_double_up_to_the_cap_and_reset():
    backoff = Backoff(0.5, 3.0)
    assert backoff.delay == 0.5
    assert [backoff.next_delay() for _ in range(5)] == [0.5, 1.0, 2.0, 3.0, 3.0]
    assert backoff.failures == 5
    backoff.reset()
    assert backoff.failures == 0 and backoff.next_delay() == 0.5


def test_delay_for_an_attempt_follows_the_same_curve():
    # The notifier schedules alert retries in the database with these delays.
    backoff = Backoff(1.0, 300.0)
    assert [backoff.delay_for(n) for n in (1, 2, 3, 9, 10)] == [1.0, 2.0, 4.0, 256.0, 300.0]
    assert backoff.delay_for(0) == 1.0


def test_wait_ends_early_when_stopped():
    stop = threading.Event()
    backoff = Backoff(5.0, 5.0)
    threading.Timer(0.05, stop.set).start()
    started = time.monotonic()
    assert backoff.wait(stop) is True
    assert time.monotonic() - started < 2.0
    assert Backoff(0.01, 0.01).wait(threading.Event()) is False


@pytest.mark.parametrize("args", [(0, 1), (2, 1), (1, 2, 0.5)])
def test_rejects_a_curve_that_does_not_grow(args):
    with pytest.raises(ValueError):
        Backoff(*args)
