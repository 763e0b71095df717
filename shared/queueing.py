"""The activation queue: notices in, delayed retries back in, failures in `<queue>-poison`.

Messages are plain UTF-8 text, not base64. host.json sets `"messageEncoding": "none"` under
`extensions.queues` (the `MESSAGE_ENCODING` below), so the queue trigger hands the function
exactly the text that was sent. The Python SDK's default policies (no encode, no decode
policy) send and read text unchanged, so this client and the trigger agree; base64 on one side
only would turn every notice into an invalid one. The contract system, operators using
Storage Explorer and the local runner can all read and write the same plain JSON.

A message body is one of two things:

* an activation notice (JSON object, see `shared.notice`), sent by the contract system or
  the operator API;
* a retry envelope, sent by the worker itself after a transient failure::

      {"kind": "activation-retry", "notice_id": "N-1", "series": 1, "attempt": 2}

  It carries no notice: the worker reads the normalised notice stored under `notice_id`,
  so a retry can never run a different notice than the one recorded. `series` is bumped by
  an operator's retry; an envelope from an older series is stale and is dropped. Notices
  cannot be mistaken for envelopes: `kind` is not a notice key, and notices reject unknown keys.
* a drift-check envelope, one per tenant, sent when a drift check of every tenant is asked
  for (the timer, `POST /api/drift` without a scope)::

      {"kind": "drift-check", "tenant_id": "<GUID>", "requested_by": "ops@example.com"}

  so a fleet of thousands of tenants is checked by as many short queue invocations, in
  parallel and each within the function timeout, instead of one request that would outlive it.
"""

from __future__ import annotations

import contextlib
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from itertools import islice
from typing import TYPE_CHECKING, Any

from azure.core.exceptions import ResourceExistsError
from azure.storage.queue import QueueClient, QueueMessage, QueueServiceClient

from .store import StorageConnection, check_key

if TYPE_CHECKING:
    from azure.core.credentials import TokenCredential

    from .settings import Settings

MESSAGE_ENCODING = "none"  # host.json: extensions.queues.messageEncoding
POISON_SUFFIX = "-poison"  # the Functions host's name for a queue's failed messages
RETRY_KIND = "activation-retry"
DRIFT_KIND = "drift-check"
_GUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
MAX_VISIBILITY_DELAY_SECONDS = 7 * 24 * 3600  # the service refuses longer visibility timeouts
MAX_MESSAGE_BYTES = 64 * 1024
MAX_RECEIVE = 32  # the service returns at most 32 messages per call
# Messages never expire: the default 7-day TTL would silently drop a notice (or a retry delayed
# close to 7 days) while the Function App was stopped, and nothing may disappear silently.
NEVER_EXPIRE = -1

# Characters XML 1.0 cannot carry; the service would reject the message with a vague 400.
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff\ud800-\udfff]")


@dataclass(frozen=True)
class RetryEnvelope:
    """A request to run a stored activation again (see the module docstring)."""

    notice_id: str
    series: int
    attempt: int
    # Which scheduled attempt this message stands for (the activation's next_attempt_at), so
    # a duplicate of an older message can be told from the one that is due.
    due: str | None = None
    # Set on a "look again when the lease ends" message: it is only valid while that same
    # worker still holds (or has abandoned) the activation.
    recheck_owner: str | None = None

    def __post_init__(self) -> None:
        check_key(self.notice_id)
        for name in ("due", "recheck_owner"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, str):
                raise ValueError(f"retry envelope: {name} must be text")
        for name in ("series", "attempt"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"retry envelope: {name} must be a non-negative integer")

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> RetryEnvelope:
        """Validate an envelope; unknown keys are ignored so a newer worker's envelope still parses."""
        if data.get("kind") != RETRY_KIND:
            raise ValueError(f"retry envelope: kind must be {RETRY_KIND!r}")
        try:
            return cls(notice_id=data["notice_id"], series=data["series"], attempt=data["attempt"],
                       due=data.get("due"), recheck_owner=data.get("recheck_owner"))
        except KeyError as exc:
            raise ValueError(f"retry envelope: {exc.args[0]} is missing") from None

    def to_dict(self) -> dict[str, object]:
        out: dict[str, object] = {"kind": RETRY_KIND, "notice_id": self.notice_id, "series": self.series,
                                  "attempt": self.attempt}
        if self.due is not None:
            out["due"] = self.due
        if self.recheck_owner is not None:
            out["recheck_owner"] = self.recheck_owner
        return out

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), ensure_ascii=False, separators=(",", ":"))


@dataclass(frozen=True)
class DriftEnvelope:
    """A request to check one tenant's connectors for drift (see the module docstring)."""

    tenant_id: str
    requested_by: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.tenant_id, str) or not _GUID.fullmatch(self.tenant_id):
            raise ValueError("drift envelope: tenant_id must be a lower-case GUID")
        if self.requested_by is not None and (not isinstance(self.requested_by, str) or len(self.requested_by) > 256):
            raise ValueError("drift envelope: requested_by must be text of at most 256 characters")

    def to_json(self) -> str:
        out: dict[str, object] = {"kind": DRIFT_KIND, "tenant_id": self.tenant_id}
        if self.requested_by is not None:
            out["requested_by"] = self.requested_by
        return json.dumps(out, ensure_ascii=False, separators=(",", ":"))


def parse_drift_envelope(body: str | bytes) -> DriftEnvelope | None:
    """The drift-check envelope in a message body, or None when the body is not one.

    A body that says it is one but is malformed raises ValueError, like a retry envelope.
    """
    data = _envelope(body, DRIFT_KIND)
    if data is None:
        return None
    return DriftEnvelope(tenant_id=data.get("tenant_id"), requested_by=data.get("requested_by"))  # type: ignore[arg-type]


def parse_retry_envelope(body: str | bytes) -> RetryEnvelope | None:
    """The envelope in a message body, or None when the body is not one (it is a notice).

    A body that says it is an envelope but is malformed raises ValueError: that is our bug,
    and it should reach the poison queue rather than be parsed as a notice.
    """
    data = _envelope(body, RETRY_KIND)
    return None if data is None else RetryEnvelope.from_mapping(data)


def _envelope(body: str | bytes, kind: str) -> dict[str, Any] | None:
    """The JSON object of a message body if it is an envelope of `kind`, else None."""
    try:
        data = json.loads(body)
    except (ValueError, TypeError, RecursionError):
        return None
    return data if isinstance(data, dict) and data.get("kind") == kind else None


@dataclass(frozen=True)
class SentMessage:
    id: str
    pop_receipt: str | None
    inserted_on: datetime | None
    next_visible_on: datetime | None
    expires_on: datetime | None


@dataclass(frozen=True)
class ReceivedMessage:
    """A message taken from the queue; delete it with `ActivationQueue.delete` when done."""

    id: str
    pop_receipt: str
    content: str
    dequeue_count: int
    inserted_on: datetime | None
    next_visible_on: datetime | None


def message_text(body: str | bytes) -> str:
    """`body` as the exact text to enqueue; ValueError if the service could not carry it."""
    if isinstance(body, bytes):
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ValueError("a queue message must be UTF-8 text") from exc
    else:
        text = body
    if not text:
        raise ValueError("a queue message must not be empty")
    bad = _NOT_XML.search(text)
    if bad is not None:
        raise ValueError(f"a queue message cannot contain the character U+{ord(bad.group()):04X}")
    size = len(text.encode("utf-8"))
    if size > MAX_MESSAGE_BYTES:
        raise ValueError(f"a queue message is at most {MAX_MESSAGE_BYTES} bytes; this one is {size}")
    return text


def _delay(seconds: float) -> int:
    if math.isnan(seconds):
        raise ValueError("delay must be a number of seconds")
    # Round up: a retry must never become visible before the back-off it was given.
    return max(0, min(MAX_VISIBILITY_DELAY_SECONDS, math.ceil(seconds)))


class ActivationQueue:
    """The queue of activation notices and retry envelopes, and its poison queue."""

    def __init__(self, service: QueueServiceClient, *, queue_name: str) -> None:
        self._service = service
        self.name = queue_name
        # No message_encode_policy/decode_policy: the SDK's default sends and reads text as
        # is, which is what messageEncoding "none" in host.json expects.
        self._queue: QueueClient = service.get_queue_client(queue_name)

    @classmethod
    def from_connection_string(cls, connection_string: str, *, queue_name: str) -> ActivationQueue:
        conn = StorageConnection(connection_string=connection_string)
        return cls(QueueServiceClient.from_connection_string(conn.checked_connection_string()), queue_name=queue_name)

    @classmethod
    def from_account_url(cls, account_url: str, credential: TokenCredential, *, queue_name: str) -> ActivationQueue:
        return cls(QueueServiceClient(account_url=account_url, credential=credential), queue_name=queue_name)

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        credential: TokenCredential | None = None,
        *,
        connection: StorageConnection | None = None,
    ) -> ActivationQueue:
        """The queue the trigger listens on (ACTIVATION_QUEUE), on the host's storage account."""
        conn = connection if connection is not None else StorageConnection.from_settings(settings)
        if conn.connection_string:
            return cls.from_connection_string(conn.connection_string, queue_name=settings.activation_queue)
        return cls.from_account_url(
            conn.queue_endpoint(), conn.credential(credential), queue_name=settings.activation_queue
        )

    @property
    def poison_name(self) -> str:
        return self.name + POISON_SUFFIX

    @property
    def poison(self) -> ActivationQueue:
        """The host's poison queue for this queue, with the same operations."""
        return ActivationQueue(self._service, queue_name=self.poison_name)

    def close(self) -> None:
        self._queue.close()

    def ensure_queues(self) -> None:
        """Create the queue and its poison queue if missing (idempotent).

        The host creates the poison queue only when the first message fails; creating it up
        front lets the poison trigger and the status page start without errors.
        """
        for name in (self.name, self.poison_name):
            with contextlib.suppress(ResourceExistsError):  # same name, other metadata: still ours
                self._service.create_queue(name)

    def send_notice(self, body: str | bytes, *, delay_seconds: float = 0) -> SentMessage:
        """Enqueue a notice (any text: the worker validates and records what it gets)."""
        return self._send(message_text(body), delay_seconds)

    def schedule_retry(self, envelope: RetryEnvelope | Mapping[str, Any], *, delay_seconds: float) -> SentMessage:
        """Enqueue a retry envelope that becomes visible after `delay_seconds` (at most 7 days)."""
        if not isinstance(envelope, RetryEnvelope):
            envelope = RetryEnvelope.from_mapping(envelope)
        return self._send(envelope.to_json(), delay_seconds)

    def send_drift_check(self, envelope: DriftEnvelope) -> SentMessage:
        """Ask for one tenant's drift check (run by the queue trigger like any message)."""
        return self._send(envelope.to_json(), 0)

    def _send(self, text: str, delay_seconds: float) -> SentMessage:
        message = self._queue.send_message(
            text, visibility_timeout=_delay(delay_seconds) or None, time_to_live=NEVER_EXPIRE
        )
        return SentMessage(
            id=str(message.id),
            pop_receipt=message.pop_receipt,
            inserted_on=message.inserted_on,
            next_visible_on=message.next_visible_on,
            expires_on=message.expires_on,
        )

    def receive(self, *, max_messages: int = 1, visibility_timeout: float = 30) -> list[ReceivedMessage]:
        """Take up to `max_messages` visible messages, hidden from others for `visibility_timeout` s."""
        if not 1 <= max_messages <= MAX_RECEIVE:
            raise ValueError(f"max_messages must be between 1 and {MAX_RECEIVE}")
        pages = self._queue.receive_messages(
            messages_per_page=max_messages,
            max_messages=max_messages,
            visibility_timeout=max(1, _delay(visibility_timeout)),
        )
        return [_received(m) for m in islice(pages, max_messages)]

    def delete(self, message: ReceivedMessage) -> None:
        self._queue.delete_message(message.id, message.pop_receipt)

    def cancel(self, sent: SentMessage) -> None:
        """Delete a message this process sent, before anyone received it (its receipt is then stale)."""
        if sent.pop_receipt is not None:
            self._queue.delete_message(sent.id, sent.pop_receipt)

    def approximate_count(self) -> int:
        """Messages waiting, visible or not (the service's estimate)."""
        return int(self._queue.get_queue_properties().approximate_message_count or 0)


def _received(message: QueueMessage) -> ReceivedMessage:
    content = message.content
    return ReceivedMessage(
        id=str(message.id),
        pop_receipt=str(message.pop_receipt),
        content=content if isinstance(content, str) else str(content),
        dequeue_count=int(message.dequeue_count or 0),
        inserted_on=message.inserted_on,
        next_visible_on=message.next_visible_on,
    )
