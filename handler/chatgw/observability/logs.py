"""JSON-line logs. Never a key or secret; prompts only when CHATGW_LOG_PROMPTS is on."""

from __future__ import annotations

import json
import logging
import secrets
import sys
from datetime import UTC, datetime
from typing import Any

LOGGER_NAME = "chatgw"
log = logging.getLogger(LOGGER_NAME)
_identity = {"container": secrets.token_hex(6)}


def container_id() -> str:
    """This execution environment's identity in every log line: new after a SnapStart restore."""
    return _identity["container"]


def renew_container_id() -> str:
    _identity["container"] = secrets.token_hex(6)
    return _identity["container"]


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "msg": record.getMessage(),
            "container": _identity["container"],
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            line.update(fields)
        if record.exc_info and record.exc_info[0] is not None:
            line["error_type"] = record.exc_info[0].__name__
        return json.dumps(line, default=str)


QUIET_LOGGERS = ("botocore", "boto3", "s3transfer", "urllib3", "httpx", "httpcore", "hpack", "asyncio", "mangum")
"""Libraries that log request and response bodies (credentials, DynamoDB items, prompts) at DEBUG:
they stay at WARNING whatever CHATGW_LOG_LEVEL says, even under a root logger at DEBUG."""


def quiet_libraries() -> None:
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)


def configure(level: str) -> None:
    """Install the JSON handler on the `chatgw` logger only (never the root logger); only chatgw's
    loggers follow `level`: the libraries of `QUIET_LOGGERS` are held at WARNING."""
    quiet_libraries()
    if any(isinstance(h.formatter, JsonFormatter) for h in log.handlers):
        log.setLevel(level)
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    log.addHandler(handler)
    log.setLevel(level)
    log.propagate = False


def event(msg: str, level: int = logging.INFO, **fields: Any) -> None:
    if log.isEnabledFor(level):
        log.log(level, msg, extra={"fields": fields})
