"""A moto server in a child process, on a free loopback port, for the benchmarks.

In its own process so the server's work does not compete with the client under measurement for
one interpreter's GIL (in production the two are on different machines).

moto's SQS does work in proportion to the queue's length for every message it touches: "now" is
computed through datetime arithmetic for each message of the queue on each scan, each message
received re-reads all queue attributes (three full scans) just to check the retention period, and
each message deleted rebuilds the queue's whole message list. With 2,000 messages that costs
milliseconds *per message*, and the cost of the calls themselves (what batching saves, and what
dominates against real SQS) disappears under it. Unless ``fast_moto=False`` (``--moto-as-is``),
the server process therefore swaps in ``time.time()`` for moto's clock helper (same value), reads
the retention period directly (same check) and deletes a message by removing it from the list
(same result). The per-call work and every SQS semantic stay as moto has them; both sides of a
comparison get the same server.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.connection
import multiprocessing.synchronize
from types import TracebackType
from typing import Any

import boto3
from botocore.config import Config

REGION = "us-east-1"


def _speed_up_moto() -> None:
    """Remove moto's per-message O(queue length) costs without changing what SQS answers."""
    import time

    import moto.sqs.models as sqs_models
    from moto.core.utils import unix_time as slow_time
    from moto.core.utils import unix_time_millis as slow_millis
    from moto.sqs.exceptions import ReceiptHandleIsInvalid

    def unix_time(dt: Any = None) -> float:
        return time.time() if dt is None else float(slow_time(dt))

    def unix_time_millis(dt: Any = None) -> float:
        return time.time() * 1000.0 if dt is None else float(slow_millis(dt))

    def is_message_valid_based_on_retention_period(self: Any, queue_name: str, message: Any) -> bool:
        queue = self.get_queue(queue_name)
        return bool(int(queue.message_retention_period) + message.sent_timestamp / 1000 > time.time())

    def delete_message(self: Any, receipt_handle: str) -> None:
        # moto's own rebuilds the whole message list per deleted message; this removes the one
        # message that holds the handle (handles are unique), under the queue's lock.
        with self._messages_lock:
            if receipt_handle in self.deleted_messages:
                return
            for index, message in enumerate(self._messages):
                if message.had_receipt_handle(receipt_handle):
                    del self._messages[index]
                    self.pending_messages.discard(message)
                    self.deleted_messages.update(message.all_receipt_handles)
                    return
        raise ReceiptHandleIsInvalid()

    sqs_models.Queue.delete_message = delete_message  # type: ignore[method-assign]
    sqs_models.unix_time = unix_time  # type: ignore[attr-defined]
    sqs_models.unix_time_millis = unix_time_millis  # type: ignore[attr-defined]
    backend = sqs_models.SQSBackend
    backend.is_message_valid_based_on_retention_period = is_message_valid_based_on_retention_period  # type: ignore[method-assign]


def _serve(
    port_pipe: multiprocessing.connection.Connection, stop: multiprocessing.synchronize.Event, fast_moto: bool
) -> None:
    import logging

    from moto.server import ThreadedMotoServer

    from aftercall_ops.emulator.moto_fixes import serialise_sqs_deletes

    if fast_moto:
        _speed_up_moto()
    serialise_sqs_deletes()  # moto can lose concurrent deletes; see aftercall_ops/emulator/moto_fixes.py

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    port_pipe.send(server.get_host_and_port()[1])
    stop.wait(3600)  # bounded: a benchmark never runs for an hour
    server.stop()


class MotoProcess:
    """``with MotoProcess() as moto:`` then ``moto.client("sqs")``; stopped on exit."""

    def __init__(self, *, fast_moto: bool = True) -> None:
        context = multiprocessing.get_context("spawn")
        self._stop = context.Event()
        receiver, sender = context.Pipe(duplex=False)
        self._process = context.Process(target=_serve, args=(sender, self._stop, fast_moto), daemon=True)
        self._receiver = receiver
        self.url = ""

    def __enter__(self) -> MotoProcess:
        self._process.start()
        if not self._receiver.poll(60):
            raise RuntimeError("the moto server did not start within 60 s")
        self.url = f"http://127.0.0.1:{self._receiver.recv()}"
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self._stop.set()
        self._process.join(timeout=10)
        if self._process.is_alive():
            self._process.kill()

    def client(self, service: str, pool: int = 32) -> Any:
        config = Config(retries={"total_max_attempts": 1}, max_pool_connections=pool, read_timeout=60)
        return boto3.session.Session().client(  # type: ignore[call-overload]
            service,
            endpoint_url=self.url,
            region_name=REGION,
            aws_access_key_id="bench",
            aws_secret_access_key="bench",
            config=config,
        )
