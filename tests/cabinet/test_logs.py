"""Logs off a terminal are JSON lines and never carry tokens or face templates."""
from __future__ import annotations

import io
import json
import logging

from cabinet import logs


def test_json_lines_with_extra_fields_and_secrets_redacted():
    stream = io.StringIO()
    logs.setup(verbose=True, stream=stream)
    try:
        logging.getLogger("cabinet.test").info("hold placed for %s", "session-1",
                                               extra={"session": "session-1",
                                                      "payment_token": "tok_visa_ok",
                                                      "face_encoding": [0.1] * 128})
    finally:
        logs.setup(verbose=False)
    line = stream.getvalue().strip()
    doc = json.loads(line)
    assert doc["message"] == "hold placed for session-1" and doc["level"] == "info"
    assert doc["session"] == "session-1"
    assert doc["payment_token"] == "[redacted]" and doc["face_encoding"] == "[redacted]"
    assert "tok_visa_ok" not in line and doc["at"].endswith("+00:00")
