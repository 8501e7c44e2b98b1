"""Fixtures for the operator-tool tests (registered for every test by tests/conftest.py).

The helpers they build on live in ``tests/support/ops.py``. All servers bind 127.0.0.1 on port 0
and every resource name is unique, so the tests run in parallel under ``pytest -n 2``.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from aftercall_ops.emulator import moto_fixes
from tests.support.ops import FaultProxy, OpsTarget, create_ops_target, delete_ops_target

# The moto servers of this test process (conftest's, and the local stack's) run in threads; without
# this, overlapping deletes and sends can lose SQS messages (see aftercall_ops/emulator/moto_fixes.py).
moto_fixes.apply()


@pytest.fixture
def ops_target(moto_endpoint: str) -> Iterator[OpsTarget]:
    """A bus, failed-events queue, delivered-events queue, rule and stack on the moto server."""
    target = create_ops_target(moto_endpoint)
    yield target
    delete_ops_target(target)


@pytest.fixture
def fault_proxy(moto_endpoint: str) -> Iterator[FaultProxy]:
    """A fault-injecting proxy in front of the moto server."""
    with FaultProxy(moto_endpoint) as proxy:
        yield proxy
