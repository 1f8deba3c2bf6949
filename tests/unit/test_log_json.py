"""LogFormat json: the fields of the text line as one JSON object per line."""

from __future__ import annotations

import json
import logging
import os
import re

import pytest

from dkimd.config import ConfigError
from dkimd.config.load import parse_config_text
from dkimd.log import LOGGER_NAME, QueueIdAdapter, get_logger, setup_logging


def lines(text: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in text.splitlines()]


def test_json_lines_carry_the_text_lines_fields(capsys: pytest.CaptureFixture[str]) -> None:
    setup_logging(syslog=False, stderr=True, ident="opendkim", log_format="json")
    try:
        log = QueueIdAdapter(get_logger("session"))
        log.info("no message yet")
        log.queue_id = "4F2xyz"
        log.warning("DKIM-Signature field added (s=%s, d=%s)", "mail", "example.com")
        get_logger("daemon").error('two\nlines "quoted" ünïcode')
        try:
            raise ValueError("boom")
        except ValueError:
            get_logger("daemon").exception("failed")
    finally:
        setup_logging(syslog=False, stderr=False)
    first, second, third, fourth = lines(capsys.readouterr().err)
    assert first["queue_id"] == "NOQUEUE" and first["message"] == "no message yet"
    assert second == {
        "time": second["time"],
        "level": "warning",
        "ident": "opendkim",
        "pid": os.getpid(),
        "queue_id": "4F2xyz",
        "message": "DKIM-Signature field added (s=mail, d=example.com)",
    }
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}[+-]\d\d:\d\d", str(second["time"]))
    assert "queue_id" not in third  # not a line about a message
    assert third["level"] == "error" and third["message"] == 'two\nlines "quoted" ünïcode'
    assert fourth["message"] == "failed"
    assert "ValueError: boom" in str(fourth["exception"])


def test_text_lines_are_unchanged_by_the_queue_id_field(capsys: pytest.CaptureFixture[str]) -> None:
    setup_logging(syslog=False, stderr=True, ident="dkimd")
    try:
        log = QueueIdAdapter(get_logger("session"))
        log.queue_id = "ABC123"
        log.info("hello %s", "there", extra={"other": 1})
    finally:
        setup_logging(syslog=False, stderr=False)
    assert re.fullmatch(
        r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} dkimd\[\d+\]: ABC123: hello there\n",
        capsys.readouterr().err,
    )
    assert logging.getLogger(LOGGER_NAME).handlers == []


def test_log_format_option() -> None:
    base = "Mode v\nSocket inet:8891@127.0.0.1\n"
    assert parse_config_text(base).log_format == "text"
    assert parse_config_text(base + "LogFormat JSON\n").log_format == "json"
    with pytest.raises(ConfigError, match='LogFormat: "yaml" is not text or json'):
        parse_config_text(base + "LogFormat yaml\n")
