"""Benchmarks run by `aidoor bench ...`; each module has run() and main() printing one JSON line."""

import contextlib
import logging
import os
import sys
from collections.abc import Iterator


@contextlib.contextmanager
def stdout_to_stderr() -> Iterator[None]:
    """Ultralytics and OpenVINO print to fd 1: send it to stderr meanwhile, so stdout carries
    only a benchmark's one JSON line."""
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        os.dup2(2, 1)
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def log_to_stderr() -> None:
    """INFO logs on stderr, unless the caller set logging up already: stdout is the JSON line's."""
    if not logging.getLogger().handlers:
        logging.basicConfig(
            level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
        )


def percentile(values: list[float], pct: float, digits: int = 2) -> float | None:
    """The pct-th percentile (0-100, linear interpolation) of ``values``, rounded; None if empty."""
    if not values:
        return None
    import numpy as np

    return round(float(np.percentile(values, pct)), digits)
