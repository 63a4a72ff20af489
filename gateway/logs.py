"""Structured logging: key=value text by default, one JSON object per line on request.

Messages lead with ``room=``, ``participant=``, ``session=`` and ``request=`` tags; the JSON format
lifts them into fields. A line written while an HTTP request is handled (or by a task that request
started, such as a session it created) also carries that request's id, from :data:`REQUEST_ID`.
No line is ever written per packet. With several workers on a host, each worker's lines also name it
(``worker=node-w1``), since they share the supervisor's output.
"""

from __future__ import annotations

import contextvars
import json
import logging
import time

REQUEST_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar("cherry_request_id", default=None)
TAGS = ("room", "participant", "session", "request")


class RequestIdFilter(logging.Filter):
    """Puts the current request id (or None) on every record as ``request_id``."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            record.request_id = REQUEST_ID.get()
        return True


class JsonFormatter(logging.Formatter):
    def __init__(self, worker: str | None = None) -> None:
        super().__init__()
        self._worker = worker

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if self._worker is not None:
            entry["worker"] = self._worker
        # Our messages lead with key=value tags (room=, participant=, session=): lift them out.
        for part in str(entry["msg"]).split(" "):
            key, sep, value = part.partition("=")
            if sep and key in TAGS and key not in entry:
                entry[key] = value
        for key in TAGS:  # tags passed as extra={...} win
            tag = record.__dict__.get(key)
            if tag is not None:
                entry[key] = tag
        request_id = getattr(record, "request_id", None)
        if request_id and "request" not in entry:
            entry["request"] = request_id
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry)


class TextFormatter(logging.Formatter):
    """``time LEVEL logger [worker=ID] message``, plus ``request=ID`` when the message does not name one."""

    def __init__(self, worker: str | None = None) -> None:
        tag = f"worker={worker.replace('%', '%%')} " if worker is not None else ""
        super().__init__(f"%(asctime)s %(levelname)s %(name)s {tag}%(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        request_id = getattr(record, "request_id", None)
        if request_id and "request=" not in record.getMessage():
            first, nl, rest = line.partition("\n")
            line = f"{first} request={request_id}{nl}{rest}"
        return line


def setup_logging(level: str, as_json: bool, worker: str | None = None) -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter(worker) if as_json else TextFormatter(worker))
    handler.addFilter(RequestIdFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # aiortc/aioice are chatty at INFO about every ICE check.
    for noisy in ("aioice", "aiortc"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
