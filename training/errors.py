"""Errors a user can cause in training. Each carries one clear message naming the file, field or value;
all are `common.errors.UserError`s (one error contract for every CLI: `error: MESSAGE`, exit 2)."""

from common.errors import UserError


class DatasetError(UserError):
    """The data set is missing, corrupt or inconsistent (the message names the files)."""


class ConfigError(UserError):
    """A parameter is missing or invalid (the message names the key)."""


class PretrainedWeightsMissing(UserError):
    """Pretrained weights were asked for but are not in the local cache; nothing downloads here."""
