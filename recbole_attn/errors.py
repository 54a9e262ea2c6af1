"""The project's exception type, in a module of its own so that ``config.py``, the models
and the data code all import it without importing each other.

Every error a user can fix (a bad option, a missing or malformed file, data that cannot
train a model) is a ``ConfigError``: the command line prints its message on one line
and exits with status 2 (``--debug`` prints the traceback too).
"""

from __future__ import annotations


class ConfigError(ValueError):
    """Bad user input: an unknown model or key, a value out of range, unusable data or files."""


class DatasetNotFoundError(ConfigError, FileNotFoundError):
    """The dataset's atomic files are not where the config says."""
