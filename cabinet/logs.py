"""Logging set-up: readable lines on a terminal, one JSON object per line anywhere else.

A cabinet's logs go to a collector, so off a terminal each record is a JSON object with UTC
time, level, logger, message and any `extra=` fields. Records never carry face images,
templates or payment tokens: `redact` drops keys that name them before they are written.
"""
from __future__ import annotations

import datetime as dt
import json
import logging
import sys
from typing import Any

SECRET_KEYS = ("payment_token", "token", "encoding", "template", "face_image", "photo_pixels")
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


def redact(fields: dict[str, Any]) -> dict[str, Any]:
    return {k: ("[redacted]" if any(s in k.lower() for s in SECRET_KEYS) else v)
            for k, v in fields.items()}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc = {"at": dt.datetime.fromtimestamp(record.created, dt.timezone.utc).isoformat(),
               "level": record.levelname.lower(), "logger": record.name,
               "message": record.getMessage()}
        doc.update(redact({k: v for k, v in vars(record).items() if k not in _STANDARD}))
        if record.exc_info:
            doc["error"] = self.formatException(record.exc_info)
        return json.dumps(doc, default=str)


def setup(verbose: bool = False, stream=None) -> None:
    stream = stream or sys.stderr
    handler = logging.StreamHandler(stream)
    if hasattr(stream, "isatty") and stream.isatty():
        handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    else:
        handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO if verbose else logging.WARNING)
    logging.getLogger("transitions").setLevel(logging.WARNING)
