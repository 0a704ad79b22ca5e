"""Errors a user can cause. Each carries one clear message naming the file, field or value."""


class LensOpsError(Exception):
    """Base class for user-facing errors: the CLI prints the message and exits non-zero."""

    exit_code = 2


class DatasetError(LensOpsError):
    """The data set is missing, corrupt or inconsistent (the message names the files)."""


class ConfigError(LensOpsError):
    """A parameter is missing or invalid (the message names the key)."""


class PretrainedWeightsMissing(LensOpsError):
    """Pretrained weights were asked for but are not in the local cache; nothing downloads here."""
