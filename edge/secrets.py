"""Passwords for the broker and for cameras: never in the YAML, read from an environment variable or a file."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Optional


def refuse_password_key(data: Any) -> Any:
    """A `model_validator(mode="before")` body: a `password` key in the YAML is an error naming the two ways."""
    if isinstance(data, dict) and "password" in data:
        raise ValueError("password: secrets are not read from the YAML; use password_env or password_file")
    return data


def read_password(password_env: Optional[str], password_file: Optional[Path], where: str = "") -> Optional[str]:
    """The password from the environment variable `password_env` or the file `password_file` (its line
    ending dropped), read now; None when neither is set; ValueError naming what is missing."""
    if password_env:
        value = os.environ.get(password_env)
        if value is None:
            raise ValueError(f"{where}password_env: environment variable {password_env} is not set")
        return value
    if password_file:
        return Path(password_file).read_text(encoding="utf-8").rstrip("\r\n")
    return None
