"""Reading what to emit: JSON files (an event, a detail, a list of them, JSON lines), a stream, or generated."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any, TextIO

from aftercall.models.event import MAX_STATE_DEPTH
from aftercall_ops.operations.emit.model import MAX_INPUT_BYTES, EmitInputError, RawItem

# ---------------------------------------------------------------------------------------------- reading


def _too_much(name: str) -> EmitInputError:
    return EmitInputError(
        [
            f"{name}: over the {MAX_INPUT_BYTES:,}-byte limit for one input (is it the right file? "
            "/dev/zero, a FIFO or a stream that never ends?); split large inputs into several files"
        ]
    )


def _loads(text: str, where: str, *, one_line: bool = False) -> Any:
    """``json.loads`` whose every failure on input is one line naming ``where`` (ValueError)."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        at = f"column {exc.colno}" if one_line else f"line {exc.lineno}, column {exc.colno}"
        raise ValueError(f"{where}: invalid JSON at {at}: {exc.msg}") from None
    except RecursionError:
        raise ValueError(
            f"{where}: the JSON nests too deep to read (an event nests {MAX_STATE_DEPTH} levels at most)"
        ) from None
    except ValueError as exc:  # e.g. an integer over Python's 4,300-digit conversion limit
        raise ValueError(f"{where}: JSON that cannot be read ({str(exc)[:120]})") from None


def read_file(path: Path) -> list[RawItem]:
    """The JSON values in a file: one value, a list of values, or JSON lines (``.jsonl``/``.ndjson``).

    At most :data:`MAX_INPUT_BYTES` are read: a path to something endless (``/dev/zero``, a FIFO
    whose writer never stops) ends with a clear error, not when the machine runs out of memory.
    """
    name = str(path)
    try:
        with path.open("rb") as handle:
            data = handle.read(MAX_INPUT_BYTES + 1)
    except FileNotFoundError:
        raise EmitInputError([f"{name}: no such file"]) from None
    except IsADirectoryError:
        raise EmitInputError([f"{name}: is a directory; pass the files in it (e.g. {name}/*.json)"]) from None
    except OSError as exc:
        raise EmitInputError([f"{name}: cannot be read ({exc})"]) from None
    if len(data) > MAX_INPUT_BYTES:
        raise _too_much(name)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise EmitInputError([f"{name}: cannot be read (not UTF-8 at byte {exc.start})"]) from None
    if path.suffix in (".jsonl", ".ndjson"):
        return read_lines(text.splitlines(), name)
    try:
        value = _loads(text, name)
    except ValueError as exc:
        raise EmitInputError([str(exc)]) from None
    if isinstance(value, list):
        return [RawItem(f"{name}[{index}]", item) for index, item in enumerate(value)]
    return [RawItem(name, value)]


def read_lines(lines: Iterable[str], name: str = "stdin") -> list[RawItem]:
    """One JSON value per non-blank line; every malformed line is reported with its number."""
    items: list[RawItem] = []
    problems: list[str] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            items.append(RawItem(f"{name} line {number}", _loads(line, f"{name} line {number}", one_line=True)))
        except ValueError as exc:
            problems.append(str(exc))
    if problems:
        raise EmitInputError(problems)
    return items


def read_stream(stream: TextIO, name: str = "stdin") -> list[RawItem]:
    """JSON lines from a text stream (standard input), at most :data:`MAX_INPUT_BYTES` of it."""
    text = stream.read(MAX_INPUT_BYTES + 1)
    if len(text) > MAX_INPUT_BYTES:
        raise _too_much(name)
    return read_lines(text.splitlines(), name)


def generated(count: int, *, seed: int | None, duplicates: float, invalid: float, environment: str) -> list[RawItem]:
    """``count`` synthetic details from :func:`aftercall_ops.generate.conversations`."""
    from aftercall_ops.generate import conversations

    details = conversations(count, seed=seed, duplicates=duplicates, invalid=invalid, environment=environment)
    return [RawItem(f"generated #{index + 1}", detail) for index, detail in enumerate(details)]
