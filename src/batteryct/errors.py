"""Errors a user can cause. Entry points print their message (no traceback) and exit with 2."""

from __future__ import annotations


class BatteryCTError(Exception):
    """Base of every user-facing error: the message names the thing and the fix."""


class ConfigError(BatteryCTError, ValueError):
    """A setting that cannot work; the message names the setting, its value and what is valid."""
