"""``aftercall emit`` against careless input: every read is bounded, nothing ends in a traceback (issue 11, item 5).

A tired operator points emit at the wrong thing: a file nested 100,000 deep, a symlink to
``/dev/zero``, a FIFO whose writer never stops, an endless standard input. Each must end at once
with one clear line and exit code 2, having read at most the cap (never until the kernel steps in).
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from aftercall_ops.cli import app
from aftercall_ops.operations import emit
from tests.support.events import conversation_detail

DRY_RUN = ("emit", "--bus", "aftercall-sandbox", "--environment", "sandbox", "--dry-run")


def run(*args: str, stdin: str | None = None) -> Any:
    return CliRunner().invoke(app, [*DRY_RUN, *args], env={"COLUMNS": "200"}, input=stdin, catch_exceptions=False)


def _no_traceback(result: Any) -> None:
    assert "Traceback" not in result.stdout + result.stderr
    assert result.exception is None or isinstance(result.exception, SystemExit)


@pytest.mark.parametrize("suffix", [".json", ".jsonl"])
@pytest.mark.parametrize("opener", ["[", '{"a":'])
def test_a_file_nested_100000_deep_is_refused_with_exit_2(tmp_path: Path, suffix: str, opener: str) -> None:
    # Given a file whose JSON nests 100,000 levels deep
    closer = "]" if opener == "[" else "}"
    path = tmp_path / f"deep{suffix}"
    path.write_text(opener * 100_000 + ("1" if opener != "[" else "") + closer * 100_000 + "\n")
    # When emit reads it
    result = run(str(path))
    # Then it says so in one line and exits 2, with no traceback
    assert result.exit_code == 2, result.stdout + result.stderr
    assert "nests too deep" in result.stderr
    assert str(path) in result.stderr
    _no_traceback(result)


def test_an_integer_of_5000_digits_is_refused_with_exit_2(tmp_path: Path) -> None:
    path = tmp_path / "huge.json"
    path.write_text(json.dumps(conversation_detail())[:-1] + ', "turns": ' + "1" * 5000 + "}")
    result = run(str(path))
    assert result.exit_code == 2
    assert str(path) in result.stderr
    _no_traceback(result)


def test_a_symlink_to_dev_zero_is_refused_after_reading_the_cap(tmp_path: Path) -> None:
    # Given a "file" that never ends
    path = tmp_path / "events.json"
    path.symlink_to("/dev/zero")
    # When emit reads it
    result = run(str(path))
    # Then it stops at the cap, says so and exits 2
    assert result.exit_code == 2
    assert f"over the {emit.MAX_INPUT_BYTES:,}-byte limit" in result.stderr
    _no_traceback(result)


@pytest.fixture
def small_cap(monkeypatch: pytest.MonkeyPatch) -> int:
    """A 1 MiB cap, so the endless inputs below hit it quickly (the rule is the same at any size)."""
    monkeypatch.setattr(emit.read, "MAX_INPUT_BYTES", 1024 * 1024)  # where the reader looks it up
    return 1024 * 1024


@pytest.fixture
def endless_fifo(tmp_path: Path) -> Iterator[Path]:
    """A FIFO whose writer writes JSON lines until the reader goes away."""
    path = tmp_path / "events.jsonl"
    os.mkfifo(path)
    line = (json.dumps(conversation_detail()) + "\n").encode()
    stop = threading.Event()

    def write() -> None:
        try:
            with path.open("wb") as fifo:
                while not stop.is_set():
                    fifo.write(line)
        except BrokenPipeError:
            pass  # the reader stopped reading: exactly what the test wants

    writer = threading.Thread(target=write, daemon=True)
    writer.start()
    yield path
    stop.set()
    writer.join(timeout=10)
    assert not writer.is_alive()


def test_a_fifo_that_never_ends_is_refused_after_reading_the_cap(small_cap: int, endless_fifo: Path) -> None:
    result = run(str(endless_fifo))
    assert result.exit_code == 2
    assert f"over the {small_cap:,}-byte limit" in result.stderr
    _no_traceback(result)


def test_standard_input_over_the_cap_is_refused(small_cap: int) -> None:
    # Given more JSON lines on stdin than the cap allows
    line = json.dumps(conversation_detail()) + "\n"
    stdin = line * (small_cap // len(line) + 2)
    # When emit reads them, Then it refuses with exit 2 before sending anything
    result = run("-", stdin=stdin)
    assert result.exit_code == 2
    assert "stdin" in result.stderr
    assert f"over the {small_cap:,}-byte limit" in result.stderr
    _no_traceback(result)


def test_one_line_on_stdin_without_an_end_is_refused(small_cap: int) -> None:
    result = run("-", stdin="[" * (small_cap + 10))
    assert result.exit_code == 2
    _no_traceback(result)


def test_inputs_under_the_cap_still_work(tmp_path: Path) -> None:
    # Given ordinary files: one event, a list and JSON lines
    single, many, lines = tmp_path / "one.json", tmp_path / "many.json", tmp_path / "some.jsonl"
    single.write_text(json.dumps(conversation_detail()))
    many.write_text(json.dumps([conversation_detail(), conversation_detail()]))
    lines.write_text("\n".join(json.dumps(conversation_detail()) for _ in range(3)) + "\n")
    # When emit reads them in a dry run, Then all six are ready to send
    result = run(str(single), str(many), str(lines), "--json")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["total"] == 6
