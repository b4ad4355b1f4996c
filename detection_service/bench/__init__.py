"""Benchmarks run by `aidoor bench ...`; each module has run() and main() printing one JSON line."""

import contextlib
import json
import logging
import os
import sys
from collections.abc import Callable, Iterator
from typing import Any


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


def run_and_print(run: Callable[..., dict[str, Any]], **kwargs: Any) -> int:
    """A benchmark's main(): logs on stderr, ``run(**kwargs)`` with fd 1 sent there too, then the
    one JSON line on stdout."""
    log_to_stderr()
    with stdout_to_stderr():
        result = run(**kwargs)
    print(json.dumps(result), flush=True)
    return 0


def percentile(values: list[float], pct: float, digits: int = 2) -> float | None:
    """The pct-th percentile (0-100, linear interpolation) of ``values``, rounded; None if empty."""
    if not values:
        return None
    import numpy as np

    return round(float(np.percentile(values, pct)), digits)
