"""``aftercall local``, the one way to start the local stack: it prints the environment to export,
that environment reaches the stack, and Ctrl-C stops it cleanly."""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _command(*args: str) -> list[str]:
    return [sys.executable, "-m", "aftercall_ops.cli", *args]


def test_aftercall_local_prints_a_working_environment_and_stops_on_ctrl_c() -> None:
    # Given `aftercall local` started with a parameter override and one environment
    stack_name = f"cli-local-{os.getpid()}"
    process = subprocess.Popen(  # noqa: S603 - our own command, fixed arguments
        _command("local", "--stack-name", stack_name, "-p", "MaxRetryAttempts=0", "--workers", "1"),
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        # When its instructions are read up to the end of the exports
        assert process.stdout is not None
        exports: dict[str, str] = {}
        lines = []
        for line in process.stdout:
            lines.append(line)
            if line.startswith("export "):
                key, _, value = line.removeprefix("export ").strip().partition("=")
                exports[key] = shlex.split(value)[0]
            if line.startswith("unset "):
                break
        # Then they name this stack, and with them `aftercall status` reaches its (empty) failed-events queue
        assert exports.get("AFTERCALL_STACK") == stack_name, "".join(lines)
        status = subprocess.run(  # noqa: S603 - our own command, fixed arguments
            _command("status", "--json"),
            cwd=ROOT,
            env={**os.environ, **exports},
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert status.returncode == 0, status.stderr
        assert json.loads(status.stdout)["visible"] == 0
    finally:
        # When Ctrl-C reaches it
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=60)
    # Then it stops on its own, saying so, with exit code 0
    assert process.returncode == 0, stderr
    assert "stopping the local stack" in stderr
