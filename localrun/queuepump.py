"""The queue side of the local runner: queue triggers driven from Azurite as the host drives them.

What happens to an activation notice that fails is a product behaviour, not a detail of the
runner: a transient Exchange failure is retried by the product itself, but a bug must reach
`<queue>-poison` after host.json's maxDequeueCount deliveries, where the poison trigger
records it as failed so that nothing vanishes. This module reproduces the Functions host's
queue listener (Microsoft.Azure.WebJobs.Extensions.Storage.Queues) closely enough that the
local stack shows the same behaviour:

- a poll takes up to `batchSize` messages, and the next poll waits until no more than
  `newBatchThreshold` are still running; an idle queue is polled less and less often, up to
  `maxPollingInterval`, and at once again when a message turns up;
- a message being processed is invisible for 10 minutes, renewed every 5 while it runs, so a
  slow provisioning run is never delivered twice because it was slow;
- success deletes the message; failure makes it visible again after `visibilityTimeout`, or,
  once its dequeue count has reached `maxDequeueCount`, copies its text unchanged to
  `<queue>-poison` and deletes it; a message seen more often than that (its run crashed the
  process) goes to the poison queue without running again;
- `messageEncoding` "none" hands the function the text as sent; "base64" decodes it first.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import logging
import math
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from azure.core.exceptions import AzureError, ResourceExistsError, ResourceNotFoundError
from azure.functions.queue import QueueMessage as BoundQueueMessage
from azure.storage.queue import QueueClient, QueueMessage, QueueServiceClient

from .hostconfig import MIN_POLLING_INTERVAL, QueueOptions
from .httpserver import invoke

log = logging.getLogger("localrun.queues")

POISON_SUFFIX = "-poison"
# The host hides a message it is processing for 10 minutes and renews that halfway through.
PROCESSING_VISIBILITY_SECONDS = 600
RENEW_EVERY_SECONDS = PROCESSING_VISIBILITY_SECONDS / 2


@dataclass(frozen=True)
class QueueFunction:
    """One queue-triggered function, its queue name and connection resolved from the app settings."""

    name: str
    queue_name: str
    connection_string: str
    arg_name: str
    user_function: Callable[..., Any]


class QueueCounters:
    """Outcomes of deliveries on one queue (thread-safe), for the CLI and tests."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.processed = 0  # invocations that succeeded (message deleted)
        self.failed = 0  # invocations that raised (message released or poisoned)
        self.poisoned = 0  # messages moved to the poison queue

    def add(self, *, processed: int = 0, failed: int = 0, poisoned: int = 0) -> None:
        with self._lock:
            self.processed += processed
            self.failed += failed
            self.poisoned += poisoned


class QueuePump:
    """Polls one queue and runs its function for each message, honouring host.json."""

    def __init__(self, function: QueueFunction, options: QueueOptions, *,
                 service: QueueServiceClient | None = None) -> None:
        self.function = function
        self.options = options
        self.counters = QueueCounters()
        self._service = service or QueueServiceClient.from_connection_string(function.connection_string)
        self._queue: QueueClient = self._service.get_queue_client(function.queue_name)
        self._poison: QueueClient = self._service.get_queue_client(function.queue_name + POISON_SUFFIX)
        self._stopping = threading.Event()
        self._changed = threading.Condition()
        self._in_flight = 0
        self._thread: threading.Thread | None = None

    @property
    def queue_name(self) -> str:
        return self.function.queue_name

    @property
    def in_flight(self) -> int:
        with self._changed:
            return self._in_flight

    def ensure_queue(self) -> None:
        with contextlib.suppress(ResourceExistsError):
            self._queue.create_queue()

    def start(self) -> None:
        if self._thread is not None:
            return
        self._stopping.clear()
        self._thread = threading.Thread(target=self._poll_loop, name=f"queue:{self.queue_name}", daemon=True)
        self._thread.start()

    def stop_polling(self) -> None:
        self._stopping.set()
        with self._changed:
            self._changed.notify_all()

    def stop(self, timeout: float = 30.0) -> int:
        """Stop polling and wait for running messages, up to `timeout` s; returns how many still run.

        A message still running when this returns stays invisible until its visibility ends
        and is then delivered again, as after a host restart in Azure.
        """
        deadline = time.monotonic() + timeout
        self.stop_polling()
        if self._thread is not None:
            self._thread.join(timeout=max(0.0, deadline - time.monotonic()))
            self._thread = None
        with self._changed:
            while self._in_flight and time.monotonic() < deadline:
                self._changed.wait(max(0.0, deadline - time.monotonic()))
            remaining = self._in_flight
        if remaining:
            log.warning("%d message(s) of queue %s still running at shutdown; they will be delivered again "
                        "after their visibility timeout", remaining, self.queue_name)
        else:
            self._service.close()
        return remaining

    # -- polling -------------------------------------------------------------------------------
    def _poll_loop(self) -> None:
        delay = MIN_POLLING_INTERVAL
        while not self._stopping.is_set():
            with self._changed:
                while self._in_flight > self.options.new_batch_threshold and not self._stopping.is_set():
                    self._changed.wait()
            if self._stopping.is_set():
                return
            try:
                messages = self._receive()
            except ResourceNotFoundError:
                self._recreate()
                messages = []
            except AzureError as exc:
                log.warning("polling queue %s failed: %s", self.queue_name, exc)
                messages = []
            if messages:
                delay = MIN_POLLING_INTERVAL
                for message in messages:
                    self._dispatch(message)
                continue
            self._stopping.wait(delay)
            delay = min(self.options.max_polling_interval, delay * 2)

    def _receive(self) -> list[QueueMessage]:
        # One request per poll, as the host makes: the first page only.
        paged = self._queue.receive_messages(
            messages_per_page=self.options.batch_size,
            max_messages=self.options.batch_size,
            visibility_timeout=PROCESSING_VISIBILITY_SECONDS,
        )
        page = next(paged.by_page(), None)
        return [] if page is None else list(page)

    def _recreate(self) -> None:
        log.warning("queue %s does not exist; creating it", self.queue_name)
        with contextlib.suppress(AzureError):
            self.ensure_queue()
        self._stopping.wait(MIN_POLLING_INTERVAL)

    def _dispatch(self, message: QueueMessage) -> None:
        with self._changed:
            self._in_flight += 1
        thread = threading.Thread(target=self._deliver, args=(message,), daemon=True,
                                  name=f"queue:{self.queue_name}:{message.id}")
        thread.start()

    # -- one message ---------------------------------------------------------------------------
    def _deliver(self, message: QueueMessage) -> None:
        lease = _Lease(self._queue, message)
        try:
            self._run(message, lease)
        except Exception:  # a storage failure while settling: the message reappears; never kill the pump
            log.exception("settling message %s of queue %s failed", message.id, self.queue_name)
        finally:
            lease.stop()
            with self._changed:
                self._in_flight -= 1
                self._changed.notify_all()

    def _run(self, message: QueueMessage, lease: _Lease) -> None:
        dequeue_count = int(message.dequeue_count or 0)
        limit = self.options.max_dequeue_count
        if dequeue_count > limit:
            # Seen more often than allowed: an earlier delivery never finished (the process
            # died mid-run). Running it again could crash again; the host gives up on it.
            self._move_to_poison(message, lease)
            return
        invocation = str(uuid.uuid4())
        started = time.monotonic()
        log.info("Executing 'Functions.%s' (Reason='New queue message detected on '%s'.', Id=%s)",
                 self.function.name, self.queue_name, invocation)
        try:
            bound = BoundQueueMessage(  # type: ignore[no-untyped-call]
                id=message.id,
                body=self._decode(message.content),
                pop_receipt=lease.pop_receipt,
                dequeue_count=dequeue_count,
                insertion_time=message.inserted_on,
                expiration_time=message.expires_on,
                time_next_visible=message.next_visible_on,
            )
            invoke(self.function.user_function, {self.function.arg_name: bound})
        except Exception:
            log.exception("Executed 'Functions.%s' (Failed, Id=%s, Duration=%.0fms)",
                          self.function.name, invocation, (time.monotonic() - started) * 1000)
            self.counters.add(failed=1)
            lease.stop()
            if dequeue_count >= limit:
                self._move_to_poison(message, lease)
            else:
                self._queue.update_message(message.id, lease.pop_receipt,
                                           visibility_timeout=math.ceil(self.options.visibility_timeout))
            return
        log.info("Executed 'Functions.%s' (Succeeded, Id=%s, Duration=%.0fms)",
                 self.function.name, invocation, (time.monotonic() - started) * 1000)
        lease.stop()
        self._queue.delete_message(message.id, lease.pop_receipt)
        self.counters.add(processed=1)

    def _decode(self, content: object) -> bytes:
        text = "" if content is None else content if isinstance(content, str) else str(content)
        if self.options.message_encoding == "base64":
            try:
                return base64.b64decode(text, validate=True)
            except binascii.Error as exc:
                raise ValueError(f"message is not valid base64 (host.json messageEncoding is base64): {exc}") from exc
        return text.encode("utf-8")

    def _move_to_poison(self, message: QueueMessage, lease: _Lease) -> None:
        lease.stop()
        log.warning("Message has reached MaxDequeueCount of %d. Moving message to queue '%s'.",
                    self.options.max_dequeue_count, self._poison.queue_name)
        # The text is copied unchanged (still encoded, when the queue uses base64), as the host does.
        try:
            self._poison.send_message(message.content)
        except ResourceNotFoundError:
            with contextlib.suppress(ResourceExistsError):
                self._poison.create_queue()
            self._poison.send_message(message.content)
        self._queue.delete_message(message.id, lease.pop_receipt)
        self.counters.add(poisoned=1)


class _Lease:
    """Keeps a running message invisible: renews its visibility every 5 minutes until stopped."""

    def __init__(self, queue: QueueClient, message: QueueMessage) -> None:
        self._queue = queue
        self._id = str(message.id)
        self._lock = threading.Lock()
        self._receipt = str(message.pop_receipt)
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._renew, daemon=True, name=f"lease:{self._id}")
        self._thread.start()

    @property
    def pop_receipt(self) -> str:
        with self._lock:
            return self._receipt

    def stop(self) -> None:
        """Stop renewing; afterwards `pop_receipt` no longer changes."""
        self._stopped.set()
        if self._thread is not threading.current_thread():
            self._thread.join()

    def _renew(self) -> None:
        while not self._stopped.wait(RENEW_EVERY_SECONDS):
            with self._lock:
                try:
                    updated = self._queue.update_message(self._id, self._receipt,
                                                         visibility_timeout=PROCESSING_VISIBILITY_SECONDS)
                except AzureError as exc:
                    log.warning("could not extend the visibility of message %s: %s", self._id, exc)
                    continue
                if updated.pop_receipt:
                    self._receipt = str(updated.pop_receipt)
