"""Errors a user can fix.

A `UserError` carries one sentence that names the file, key or value at fault and the
fix. `train.py` prints it without a traceback and exits non-zero; everything else is a
bug and keeps its traceback.
"""


class UserError(Exception):
    """Bad input: a missing file, a wrong key or value, an impossible request."""


class ConfigError(UserError, KeyError):
    """An unknown config key or a value of the wrong type."""

    def __str__(self):  # KeyError would wrap the message in quotes
        return str(self.args[0]) if self.args else ""


class DataError(UserError):
    """A dataset folder, split file or image that cannot be used."""


class CheckpointError(UserError):
    """A checkpoint that is missing, truncated, or does not fit the model."""
