"""Capturing every line a test's code writes: the runtime's logs, every logger at a level, stdout and stderr.

The no-leaks and planted-personal-data tests scan what it captures.
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Callable, Iterator

import pytest

from aftercall.observability import logger as runtime_logger


class _Everything(logging.Handler):
    """Formats every record with its exception and stack, as a log shipper would see it."""

    def __init__(self, buffer: io.StringIO) -> None:
        super().__init__(logging.DEBUG)
        self.buffer = buffer
        self.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        self.buffer.write(self.format(record) + "\n")
        self.buffer.write(json.dumps(record.__dict__, default=repr) + "\n")  # extra fields too


@pytest.fixture
def everything(request: pytest.FixtureRequest, capsys: pytest.CaptureFixture[str]) -> Iterator[Callable[[], str]]:
    """Every line written while the test runs: the runtime's logs, all logs at the function's log
    level (``request.param``, default INFO as the template deploys it), stdout and stderr."""
    level = getattr(request, "param", logging.INFO)
    buffer = io.StringIO()
    runtime_handler = logging.StreamHandler(buffer)
    runtime_handler.setFormatter(runtime_logger.registered_formatter)
    runtime = logging.getLogger(runtime_logger.name)
    root = logging.getLogger()
    catch_all = _Everything(buffer)
    previous_levels = (root.level, runtime.level)
    root.setLevel(level)  # what Lambda does with the template's LoggingConfig ApplicationLogLevel
    runtime.setLevel(level)  # and Powertools with POWERTOOLS_LOG_LEVEL
    runtime.addHandler(runtime_handler)
    runtime.addHandler(catch_all)
    root.addHandler(catch_all)

    def read() -> str:
        captured = capsys.readouterr()
        return buffer.getvalue() + captured.out + captured.err

    yield read
    root.removeHandler(catch_all)
    runtime.removeHandler(catch_all)
    runtime.removeHandler(runtime_handler)
    root.setLevel(previous_levels[0])
    runtime.setLevel(previous_levels[1])
