"""Errors a user can fix: the CLI prints them as one line and exits with status 2."""


class UserError(Exception):
    """Bad input from the user: a file, a field or a value, named in the message."""


class ConfigError(UserError):
    """A configuration value that does not parse or does not validate."""


class DataError(UserError):
    """A dataset that cannot be read: corrupt file, wrong shape, bad labels."""


class CheckpointError(UserError):
    """A checkpoint that is missing, truncated or does not match its model."""


class WriteError(UserError):
    """A file that cannot be written: disk full, permission denied, read-only file system."""


class TrainingDiverged(RuntimeError):
    """A loss became NaN or inf; the last good checkpoint is left intact."""
