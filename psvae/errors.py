"""Errors a user can cause and fix.

Anything raised as a :class:`UserError` is shown by the command line as one line (no
traceback) and ends the command with exit code 2. The message always names the file or
config field and the offending value, and says what would be accepted instead.
"""

from __future__ import annotations


class UserError(Exception):
    """A problem with the user's input: a file, a config value or a command-line argument."""


class DataError(UserError):
    """An HDF5 data file is missing, unreadable or not in the expected layout."""


class ConfigError(UserError):
    """A config key is unknown, ill-typed or out of range."""
