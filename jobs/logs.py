"""Structured logs with secrets redacted: one JSON object per line, nothing usable by a reader of the logs.

Every line goes through a :class:`Redactor` before it is written, whatever logger produced it
(ours, uvicorn, httpx, a traceback):

* API keys (``ipfvr_...``) and webhook secrets (``whsec_...``) are cut to their prefix;
* ``Authorization`` values (``Bearer ...``, ``Basic ...``) and credentials in URLs (``user:pw@``);
* query and header parameters that sign or authenticate: presigned S3 URLs' ``X-Amz-Signature``,
  ``X-Amz-Credential`` and ``X-Amz-Security-Token``, and ``token=``, ``secret=``, ``key=``... ;
* AWS access key ids, and the configured secrets themselves (the HMAC key, the S3 secret key);
* the values of extra fields whose name says they are secret (``authorization``, ``token``...).

Some libraries log signing material at DEBUG in forms no pattern can recognise (botocore prints
the bare hex signature of every request and presigned URL), so :func:`configure_logging` keeps
them at WARNING whatever the service's level.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from jobs.settings import Settings

REDACTED = "[REDACTED]"
HANDLER_NAME = "ipfvr"  # the root handler this module installs (replaced, never duplicated)

# Libraries that log signatures, canonical requests or request lines with credentials at DEBUG.
QUIET_LIBRARIES = ("botocore", "boto3", "s3transfer", "urllib3", "python_multipart")
_SENSITIVE_FIELDS = frozenset(
    {
        "authorization",
        "api_key",
        "apikey",
        "secret",
        "password",
        "token",
        "cookie",
        "webhook_secret",
        "secret_key",
        "x-api-key",
    }
)
_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"(?i)\b(bearer|basic)(\s+)(?!bearer\b|basic\b)[A-Za-z0-9._~+/=-]{4,}"), r"\1\2" + REDACTED),
    (re.compile(r"\b(ipfvr_)[A-Za-z0-9_-]{16,}"), r"\1" + REDACTED),
    (re.compile(r"\b(whsec_)[A-Za-z0-9+/=]{8,}"), r"\1" + REDACTED),
    (
        re.compile(
            r"(?i)\b(x-amz-signature|x-amz-credential|x-amz-security-token|signature|credential|awsaccesskeyid|"
            r"access_token|id_token|token|secret|password|passwd|api[_-]?key|sig|key)(=|%3D)[^&\s\"'<>,;]+"
        ),
        r"\1\2" + REDACTED,
    ),
    (re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/\s:@]*:[^/\s@]*@"), r"\1" + REDACTED + "@"),
    (re.compile(r"\b(?:AKIA|ASIA)[A-Z0-9]{16}\b"), REDACTED),
)
_MIN_LITERAL = 8  # shorter configured values are not redacted verbatim (they would match everywhere)
_STANDARD_FIELDS = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName", "color_message"}


class Redactor:
    """Removes secrets from text, and from the strings inside nested values."""

    def __init__(self, literals: Iterable[str] = ()) -> None:
        self._literals = sorted({s for s in literals if len(s) >= _MIN_LITERAL}, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for literal in self._literals:
            text = text.replace(literal, REDACTED)
        for pattern, replacement in _PATTERNS:
            text = pattern.sub(replacement, text)
        return text

    def value(self, value: Any, name: str = "") -> Any:
        """``value`` with every string redacted; a field named like a secret is redacted whole."""
        if name.lower() in _SENSITIVE_FIELDS and value is not None:
            return REDACTED
        if isinstance(value, str):
            return self(value)
        if isinstance(value, bool | int | float) or value is None:
            return value
        if isinstance(value, dict):
            return {str(k): self.value(v, str(k)) for k, v in value.items()}
        if isinstance(value, list | tuple | set | frozenset):
            return [self.value(v) for v in value]
        return self(str(value))


class RedactingFilter(logging.Filter):
    """Redacts a record's message in place (for loggers whose handlers this module does not own)."""

    def __init__(self, redactor: Redactor) -> None:
        super().__init__()
        self.redactor = redactor

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = self.redactor(record.getMessage())
        record.args = None
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time, level, logger, message, the record's extra fields, the traceback."""

    def __init__(self, redactor: Redactor, service: str) -> None:
        super().__init__()
        self.redactor = redactor
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "service": self.service,
            "message": record.getMessage(),
        }
        for name, value in vars(record).items():
            if name not in _STANDARD_FIELDS and not name.startswith("_") and name not in entry:
                entry[name] = value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(self.redactor.value(entry), ensure_ascii=False, default=str)


class TextFormatter(logging.Formatter):
    """Classic one-line text, redacted."""

    def __init__(self, redactor: Redactor) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")
        self.redactor = redactor

    def format(self, record: logging.LogRecord) -> str:
        return self.redactor(super().format(record))


def redactor_for(settings: Settings) -> Redactor:
    """A redactor that also knows the configured secrets."""
    secrets = [settings.secret_key, settings.s3_secret_access_key]
    return Redactor(s.get_secret_value() for s in secrets if s is not None)


def configure_logging(settings: Settings, *, service: str, stream: Any = None) -> None:
    """Send every log record of this process through one redacting handler on the root logger.

    Idempotent: a second call replaces the handler. uvicorn's own handlers are removed so that its
    records take the same path, and its access log is off (the API writes structured access
    records instead); :data:`QUIET_LIBRARIES` stay at WARNING or above.
    """
    redactor = redactor_for(settings)
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.set_name(HANDLER_NAME)
    handler.setFormatter(JsonFormatter(redactor, service) if settings.log_format == "json" else TextFormatter(redactor))
    root = logging.getLogger()
    for existing in list(root.handlers):
        if existing.get_name() == HANDLER_NAME:
            root.removeHandler(existing)
    root.addHandler(handler)
    level = logging.getLevelName(settings.log_level)
    root.setLevel(level)
    for name in ("uvicorn", "uvicorn.error"):
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True
    access = logging.getLogger("uvicorn.access")  # replaced by the API's structured access records
    access.handlers.clear()
    access.propagate = False
    for name in QUIET_LIBRARIES:
        logging.getLogger(name).setLevel(max(level, logging.WARNING))
