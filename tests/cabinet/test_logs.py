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


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_terminal_gets_readable_lines_and_quiet_drops_info():
    stream = _Terminal()
    logs.setup(verbose=False, stream=stream)
    try:
        log = logging.getLogger("cabinet.test")
        log.info("not shown when quiet")
        log.warning("door open for %d s", 61)
    finally:
        logs.setup(verbose=False)
    lines = stream.getvalue().splitlines()
    assert len(lines) == 1 and "not shown" not in stream.getvalue()
    assert lines[0].endswith("cabinet.test WARNING door open for 61 s"), lines[0]
    assert not lines[0].startswith("{")
