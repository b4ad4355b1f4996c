"""Benchmarks run by `aidoor bench ...`; each module has run() and main() printing one JSON line."""

import contextlib
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
