"""The two errors a user can fix: bad configuration and bad data. Entry points
print their message as one line (no traceback) and exit non-zero."""


class ConfigError(ValueError):
    """A config key is unknown, has the wrong type or an impossible value."""


class DataError(ValueError):
    """The input data is unusable; the message names the file, column and fix."""
