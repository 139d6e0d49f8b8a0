"""paho's network thread: one delivery → the intake → the input queue, or settled at once.

Never blocks (except under drop policy `block`, by design) and never raises: an error in here
would kill paho's network thread, so whatever fails is counted (rejected "handler-error"),
logged and settled like any other reject.
"""

from __future__ import annotations

import logging

from runtime.engine.types import Message
from runtime.ingest.intake import Intake, Rejected, Reset
from runtime.ingest.queue import DropPolicy, InputQueue
from runtime.mqtt.delivery import Delivery
from runtime.ops.counts import Tally
from runtime.service.acks import Acks

__all__ = ["QueueItem", "Router"]

log = logging.getLogger("edgewatch.service")

QueueItem = Message | Reset


class Router:
    def __init__(
        self, intake: Intake, queue: InputQueue[QueueItem], acks: Acks, tally: Tally, *, drop_policy: DropPolicy
    ) -> None:
        self._intake = intake
        self._queue = queue
        self._acks = acks
        self._tally = tally
        self._policy = drop_policy

    def __call__(self, delivery: Delivery) -> None:
        try:
            item = self._intake.accept(delivery)
            if item is None or isinstance(item, Rejected):
                self._acks.settle(delivery)  # it will never become valid: do not let the broker resend it
                return
            for queued in [item, *(self._intake.copies(item) if isinstance(item, Message) else ())]:
                dropped = self._queue.put(queued)
                if dropped is not None:
                    self._tally.add_reason("dropped", self._policy)
                    if dropped.delivery is not None:  # a shadow copy has none
                        self._acks.settle(dropped.delivery)  # the policy chose to lose it
        except Exception:
            self._tally.add_reason("rejected", "handler-error")
            log.exception("routing a delivery failed; it is acknowledged and dropped")
            self._acks.settle(delivery)
