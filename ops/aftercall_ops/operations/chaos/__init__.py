"""The chaos run: N conversations through the local stack while the CRM, the credentials and Lambda fail.

What it does (``tests/system/test_chaos.py`` runs it CI-sized, ``bench/chaos.py`` at 2,000):

1. A local stack (:class:`aftercall_ops.emulator.stack.LocalStack`: moto, the fake HubSpot, the real
   EndHandler in worker processes with Lambda's async retries, timeouts that kill the worker, and
   ``OnFailure`` records), with a small function timeout and a short CRM read timeout
   (``CRM_READ_TIMEOUT_SECONDS``), so hangs past the client's timeout and kills at the deadline
   happen within seconds.
2. N generated conversations (:func:`aftercall_ops.generate.conversations`), emitted in waves
   through PutEvents as the stack takes them. A seeded share is emitted twice: half of those in the
   same PutEvents batch as the original (the two copies run concurrently), half a wave or two later.
3. The fake CRM fails about 30% of requests, drawn from its seeded RNG: 429 with ``Retry-After``,
   500, hangs past the client's read timeout that are then applied, reset connections, 500s after
   the write was applied, and answers that trickle in until Lambda stops the invocation at its
   deadline, in the middle of the action. Midway the CRM's token is rotated and, a little later,
   the secret (in between every request is refused with 401).
4. Checkpoints: every conversation emitted so far is processed (its Powertools idempotency record
   is ``COMPLETED``), in the failed-events queue, or in flight (in the delivery queue or held by
   the dispatcher). They are read in the order an event moves (in flight, then the queue, then the
   records), so an event moving on while they are read is seen at least once.
5. The CRM recovers (faults cleared); once the stack is idle, one ``aftercall replay`` pass
   (the CLI, as an operator runs it); then every conversation's effects are counted against what
   the default End function (``functions/end_handler/end_function.py``) asks for: exactly one
   note, the ticket if ``support_needed``, the disposition if outbound, the follow-up schedules,
   the team notification for hot leads.

Only what a client of the stack can see is read: the fake CRM's objects and request log, the
idempotency table, the queues, Scheduler, an SQS queue subscribed to the notifications topic and
the dispatcher's counters.

The package: :mod:`plan` (configuration, faults, waves, report), :mod:`observe` (reading the stack),
:mod:`run` (the run).
"""

from aftercall_ops.operations.chaos.plan import FAULT_MIX, ChaosConfig, ChaosReport
from aftercall_ops.operations.chaos.run import run

__all__ = ["FAULT_MIX", "ChaosConfig", "ChaosReport", "run"]
