"""Shared plumbing of the Hydra entry points."""

from __future__ import annotations

import functools
import inspect
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import hydra
from hydra._internal.utils import get_args_parser
from omegaconf import DictConfig

from batteryct.errors import BatteryCTError
from batteryct.overrides import check_overrides

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


def entry_point(config_name: str) -> Callable[[Callable[[DictConfig], T]], Callable[[], None]]:
    """`@hydra.main` of an entry point whose config is `conf/<config_name>.yaml` beside it.

    The command line's overrides are checked against the config before Hydra composes it (a
    misspelt key gets one message naming the valid keys, see batteryct.overrides), and user
    errors print one line and exit with status 2 (`report_user_errors`).
    """

    def decorate(task: Callable[[DictConfig], T]) -> Callable[[], None]:
        config_dir = Path(inspect.getfile(task)).resolve().parent / "conf"
        run = hydra.main(version_base="1.3", config_path="conf", config_name=config_name)(
            report_user_errors(task)
        )

        @functools.wraps(task)
        def main() -> None:
            args = get_args_parser().parse_args()
            if not (args.config_dir or args.config_path or args.experimental_rerun):
                name = args.config_name or config_name
                report_user_errors(check_overrides)(config_dir, name, args.overrides)
            run()

        return main

    return decorate
