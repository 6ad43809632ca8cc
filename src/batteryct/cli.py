"""Shared plumbing of the Hydra entry points."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import TypeVar

from batteryct.errors import BatteryCTError

T = TypeVar("T")


def report_user_errors(task: Callable[..., T]) -> Callable[..., T]:
    """Wrap a Hydra task: a user error prints one line to stderr and exits with status 2."""

    @functools.wraps(task)
    def wrapper(*args: object, **kwargs: object) -> T:
        try:
            return task(*args, **kwargs)
        except BatteryCTError as err:
            print(f"batteryct: error: {err}", file=sys.stderr)
            sys.exit(2)

    return wrapper
