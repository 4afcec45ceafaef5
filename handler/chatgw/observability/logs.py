"""JSON-line logs. Never a key or secret; prompts only when CHATGW_LOG_PROMPTS is on."""

from __future__ import annotations

import json
import logging
import secrets
import sys
import threading
import time
from collections.abc import Callable
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


THROTTLE_SECONDS = 60.0
THROTTLE_MAX_SUBJECTS = 10_000
"""Subjects remembered at most; past it the oldest are forgotten (they may log once more)."""


class Throttle:
    """At most one line per subject (a key id) every `every_s` seconds in this container: for a line a
    client can cause on every request (a key of a pepper version nobody holds), so that it cannot
    flood the logs. The next line that passes says how many were held back."""

    def __init__(self, every_s: float = THROTTLE_SECONDS, clock: Callable[[], float] = time.monotonic) -> None:
        self.every_s = every_s
        self.clock = clock
        self._last: dict[str, tuple[float, int]] = {}  # subject: (when it last logged, held back since)
        self._lock = threading.Lock()

    def admit(self, subject: str) -> int | None:
        """None: hold this line back; else how many lines of this subject were held back before it."""
        now = self.clock()
        with self._lock:
            last = self._last.get(subject)
            if last is not None and now - last[0] < self.every_s:
                self._last[subject] = (last[0], last[1] + 1)
                return None
            self._last.pop(subject, None)
            if len(self._last) >= THROTTLE_MAX_SUBJECTS:
                del self._last[next(iter(self._last))]  # dicts keep insertion order: the oldest
            self._last[subject] = (now, 0)
            return last[1] if last is not None else 0


_throttles: dict[str, Throttle] = {}


def throttled_event(msg: str, subject: str, level: int = logging.INFO, **fields: Any) -> None:
    """`event`, at most once per `subject` per minute per container (see `Throttle`)."""
    throttle = _throttles.get(msg) or _throttles.setdefault(msg, Throttle())
    held = throttle.admit(subject)
    if held is not None:
        event(msg, level, **fields, **({"suppressed": held} if held else {}))
