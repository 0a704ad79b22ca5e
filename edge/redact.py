"""Secrets out of everything the device shows: user info in URLs and credential-like query parameters.

A camera URL such as `rtsp://admin:pw@10.0.0.5:554/live` is redacted to `rtsp://*:*@10.0.0.5:554/live`
(as Frigate's `clean_camera_user_pass` does) and `...?user=admin&password=pw` to `...?user=*&password=*`,
wherever text leaves the process: log records (a filter on the root handlers), the retained MQTT status,
/healthz, the device page and /metrics (all built from the runner's status) and deployment events.
"""

from __future__ import annotations

import logging
import re
from typing import Any

MASK = "*"
# scheme://userinfo@ : userinfo runs to the last '@' before the host's '/', whitespace or '"' (a ' may be in a password)
_USERINFO = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.\-]*://)(?P<userinfo>[^/\s\"<>]*)@")
_QUERY = re.compile(
    r"(?P<key>[?&;](?:user|username|login|password|passwd|pwd|pass|token|access_token|auth|authorization|"
    r"key|apikey|api_key|secret|passphrase|signature|sig|credential|x-amz-signature|x-amz-credential|"
    r"x-amz-security-token)=)(?P<value>[^&;\s'\"#<>]*)",
    re.IGNORECASE,
)


def redact(text: str) -> str:
    """`text` with URL user info (`user:password@` -> `*:*@`) and credential query values replaced by '*'."""
    if "@" not in text and "=" not in text:
        return text
    text = _USERINFO.sub(lambda m: m["scheme"] + (f"{MASK}:{MASK}@" if ":" in m["userinfo"] else f"{MASK}@"), text)
    return _QUERY.sub(lambda m: m["key"] + MASK, text)


def redact_all(value: Any) -> Any:
    """A copy of a JSON-like value (dicts, lists, strings) with every string redacted."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {redact_all(k): redact_all(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact_all(v) for v in value]
    return value


class RedactingFilter(logging.Filter):
    """Rewrites a record's message (and its traceback text) with `redact` before any handler formats it."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a bad format string: let the handler report it as logging does
            return True
        clean = redact(message)
        if clean != message:
            record.msg, record.args = clean, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True


def install_log_redaction(logger: logging.Logger | None = None) -> None:
    """Add a RedactingFilter to every handler of `logger` (default: the root logger), once."""
    for handler in (logger or logging.getLogger()).handlers:
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(RedactingFilter())
