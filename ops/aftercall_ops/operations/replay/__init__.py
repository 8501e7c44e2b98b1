"""``aftercall replay``: one pass over the failed-events queue, handing each event back.

The rules that make a replay safe to run at any time, and to kill at any time:

* **Delete only after success.** A message is deleted (DeleteMessageBatch) only once its event
  was accepted by PutEvents or the End function answered without error. Killed midway, a replay
  loses nothing: undeleted messages reappear when their visibility timeout ends.
* **One pass.** Every message received is remembered by id and held invisible until the pass
  ends, so none is handled twice; the pass stops when a receive returns nothing or only
  messages already seen. Messages whose event this pass itself produced (a re-failure of an
  event just handed back: same event id) are left for the next pass, so a poison message is
  reported once per pass and never loops.
* **Failed again stays.** A message whose hand-back failed is kept, and made visible again when
  the pass ends (ChangeMessageVisibilityBatch 0) so ``aftercall status``, the DLQ alarm and the
  next replay see it at once; if the replay dies first, it reappears after its visibility timeout.
* **Dry run changes nothing.** Messages are received to be listed, then made visible again.

Cost in ``put-events`` mode: one ReceiveMessage, one PutEvents and one DeleteMessageBatch per ten
messages (0.3 calls per message), ``concurrency`` such loops at a time.

The package: :mod:`report` (options, outcomes), :mod:`replay_pass` (the pass's shared state),
:mod:`held` (its messages in SQS), :mod:`hand_back` (PutEvents or Invoke), :mod:`run` (the loops).
"""

from aftercall_ops.operations.replay.report import (
    MODES,
    REPLAY_RETRY,
    SQS_BATCH,
    Action,
    MessageOutcome,
    Mode,
    ReplayOptions,
    ReplayReport,
)
from aftercall_ops.operations.replay.run import invoke_client, queue_depth, replay

__all__ = [
    "MODES",
    "REPLAY_RETRY",
    "SQS_BATCH",
    "Action",
    "MessageOutcome",
    "Mode",
    "ReplayOptions",
    "ReplayReport",
    "invoke_client",
    "queue_depth",
    "replay",
]
