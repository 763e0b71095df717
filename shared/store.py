"""Table storage: one row per activation (status, lease, ETag) and its append-only history.

Why Table storage: the Function App already needs a storage account for its queues, point
reads and ETag-conditional writes are all a claim needs, and an operator can read both tables
with Storage Explorer when everything else is down.

Schema (property names are the `ActivationRecord` / `EventRecord` field names):

* activations table: PartitionKey = notice_id, RowKey = "activation". Lists and dicts
  (services excepted) are JSON text; datetimes are Edm.DateTime in UTC; None is left out.
  One partition per notice keeps every claim a single-entity ETag write, and leaves room for
  more rows per notice later without a migration.
* events table: PartitionKey = notice_id, RowKey = "r<10^15-1 - epoch ms, 15 digits>-<10^10-1 -
  process sequence, 10 digits>-<8 random hex>", so a partition scan returns a notice's history
  newest first: the newest N events are one query of N rows however long the history grows,
  two events in the same millisecond keep their append order, and two processes never
  collide. Rows written before this scheme have RowKey "<epoch ms>-<sequence>-<hex>" (oldest
  first); they start with a digit, so they sort before every "r" key and are read as a
  second, ascending range (`history`).
* index rows, in the activations table's partition `index.INDEX_PARTITION` (see shared/index.py
  for their keys): what lists by status or tenant, search and the summary read, so that none
  of them scans the table. They are written after the activation row, in one entity-group
  transaction per change (rows, pointer and counter together, so the counts always equal the
  rows); a crash in between leaves the index one change behind until the activation's next
  write, its watchdog message, or `python -m shared reindex`.

Every string property stays within the service's 64 KiB (32 Ki UTF-16 units) limit: free text
is cut with a visible marker, JSON is shrunk string by string so it stays valid JSON.
Filters are always built with the SDK's `parameters`, never by pasting values into the text.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import itertools
import json
import logging
import math
import re
import time
import uuid
from collections import deque
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Generic, TypeVar, cast

from azure.core import MatchConditions
from azure.core.exceptions import (
    HttpResponseError,
    ResourceExistsError,
    ResourceModifiedError,
    ResourceNotFoundError,
)
from azure.data.tables import (
    TableClient,
    TableErrorCode,
    TableServiceClient,
    TableTransactionError,
    UpdateMode,
)

from . import index as ix
from .outcome import Status
from .retry import RetryPolicy
from .settings import SettingsError
from .text import clean, clean_value, is_storable, keep_raw, restore_raw

if TYPE_CHECKING:
    from azure.core.credentials import TokenCredential

    from .settings import Settings

ACTIVATION_ROW_KEY = "activation"

# The status API's vocabulary, as stored (the values of `Status`, defined once in outcome.py).
STATUSES = tuple(s.value for s in Status)

# Holds base64 of the exact bytes of a raw message that was not storable as text (see
# shared/text.py keep_raw); `raw_message` then holds its cleaned preview.
RAW_ORIGINAL_PROPERTY = "raw_message_original_b64"

# Table storage limits: a string property holds at most 64 KiB of UTF-16 (32 Ki code units);
# an entity at most 1 MiB; a transaction at most 100 operations and 4 MiB.
MAX_STRING_UNITS = 32 * 1024
RAW_MESSAGE_MAX_UNITS = 16 * 1024  # a valid notice is <= 16 KiB; the rest is only evidence
EVENT_MESSAGE_MAX_UNITS = 4 * 1024
EVENT_DATA_MAX_UNITS = 16 * 1024
MAX_BATCH_OPERATIONS = 100
_MAX_BATCH_BYTES = 3 * 1024 * 1024  # below the 4 MiB limit, leaving room for the multipart framing
TRUNCATION_MARKER = "…[truncated: {dropped} of {total} characters not stored]"

MAX_PAGE_SIZE = 1000  # the service never returns more in one response
_MAX_PAGE_ROUND_TRIPS = 10
_MAX_TOKEN_CHARS = 4096
_TOKEN_VERSION = 1

_FORBIDDEN_KEY_CHARS = re.compile(r"[/\\#?\x00-\x1f\x7f-\x9f]")
_MAX_KEY_UNITS = 512  # 1 KiB of UTF-16
_URLSAFE_B64 = re.compile(r"[A-Za-z0-9_-]+")

EVENT_KEY_PREFIX = "r"  # sorts after the digits that begin the older, ascending event keys
_MAX_MILLIS = 10**15 - 1
_MAX_SEQUENCE = 10**10 - 1
_MAX_LEGACY_KEYS_SCANNED = 100_000  # a history in the old key scheme is read by key up to this many

# Orders events appended by this process within one millisecond; itertools.count's next()
# is atomic under the GIL, so threads sharing a store need no lock.
_SEQUENCE = itertools.count()

T = TypeVar("T")

MAX_QUERY_CHARS = 200
_INDEX_ROUNDS = 10  # transaction attempts when a pointer or counter row changed under us
# A writer that lost the race for a counter row waits a little, each a different while, before
# it reads again: retried at once, a burst of status changes on one counter row (a batch of
# claims) kept colliding until some gave up and left their index a change behind.
_INDEX_RETRY = RetryPolicy(base_seconds=0.02, max_seconds=0.5, max_attempts=_INDEX_ROUNDS)
_NOTICE_ID_CHARS = re.compile(r"[A-Za-z0-9._-]+")  # what a notice id may hold (notice.NOTICE_ID_PATTERN)

log = logging.getLogger(__name__)


class StoreError(Exception):
    """Table storage refused an operation in a way the caller should know about."""


class RecordExists(StoreError):
    """`create` found a row for this notice already: someone else created it first."""


class RecordNotFound(StoreError):
    """The row to update or claim does not exist (never created, or deleted)."""


class ConcurrentUpdate(StoreError):
    """The row changed since it was read (ETag mismatch, HTTP 412): read again and decide again."""


class InvalidContinuation(ValueError):
    """A continuation token that this store did not issue, or issued for another query."""


# --------------------------------------------------------------------------- records


@dataclass(frozen=True)
class ActivationRecord:
    """One activation as stored: what was asked, where it stands, and who is working on it.

    `attempts` counts attempts in the current `series`; an operator's retry starts a new
    series, so the attempt limit applies afresh without losing the history of earlier ones.
    `etag` is the row version this record was read at; `replace` succeeds only if the row
    still has it. Datetimes are timezone-aware UTC (naive ones are refused: a local time
    mistaken for UTC would expire leases hours early or late). `events_count` is whatever the
    writer sets: the store does not bump it on append, so events never contend with claims.
    `propagation_waits` counts the attempts in a row that ended waiting for a consent or role
    grant to reach Exchange (bounded by GRANT_PROPAGATION_ATTEMPTS).
    """

    notice_id: str
    tenant_id: str = ""
    status: Status = Status.QUEUED
    attempts: int = 0
    propagation_waits: int = 0
    series: int = 1
    content_hash: str = ""
    notice_json: str = ""
    raw_message: str | None = None
    services: tuple[str, ...] = ()
    customer_name: str | None = None
    contract_id: str | None = None
    connectors: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[dict[str, Any]] = field(default_factory=list)
    error: dict[str, Any] | None = None
    events_count: int = 0
    created_at: datetime | None = None
    updated_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    next_attempt_at: datetime | None = None
    lease_owner: str | None = None
    lease_expires_at: datetime | None = None
    etag: str | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        try:
            status = Status(self.status)  # a row read back (or a caller) may give the plain text
        except ValueError:
            raise ValueError(f"status {self.status!r} is not one of {', '.join(STATUSES)}") from None
        object.__setattr__(self, "status", status)
        object.__setattr__(self, "services", tuple(self.services))
        for name in _DATETIME_FIELDS:
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, utc(value, name))
        if self.raw_message is not None:
            object.__setattr__(self, "raw_message", cap_text(self.raw_message, RAW_MESSAGE_MAX_UNITS))

    @property
    def notice(self) -> dict[str, Any]:
        """The stored normalised notice as data ({} for a rejected notice that has none)."""
        if not self.notice_json:
            return {}
        value = json.loads(self.notice_json)
        return value if isinstance(value, dict) else {}

    def lease_live(self, now: datetime) -> bool:
        """Whether a worker is running this activation at `now` (its lease has not run out)."""
        return (self.status is Status.RUNNING and bool(self.lease_owner)
                and self.lease_expires_at is not None and self.lease_expires_at > utc(now, "now"))


_DATETIME_FIELDS = (
    "created_at", "updated_at", "started_at", "finished_at", "next_attempt_at", "lease_expires_at",
)  # fmt: skip


@dataclass(frozen=True)
class EventRecord:
    """One step in an activation's history. `event_id` (the RowKey) is assigned on append."""

    notice_id: str
    kind: str
    message: str
    at: datetime
    attempt: int = 0
    series: int = 0
    data: dict[str, Any] | None = None
    duration_ms: float | None = None
    event_id: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "at", utc(self.at, "at"))


@dataclass(frozen=True)
class History:
    """The newest events of one activation, oldest first, and how many it has.

    `total` is exact when `total_exact`; otherwise counting stopped and `total` is a lower bound.
    """

    events: list[EventRecord]
    total: int
    total_exact: bool

    @property
    def truncated(self) -> bool:
        return len(self.events) < self.total or not self.total_exact


@dataclass(frozen=True)
class Page(Generic[T]):
    """One page of a listing; pass `continuation` back to get the next (None: no more)."""

    items: list[T]
    continuation: str | None


@dataclass(frozen=True)
class Summary:
    """Activations per status, from the counters. They move in the same transaction as the
    status rows, so they always equal what a list by status shows; `exact` is true when every
    activation row is known to be indexed (a table this version created, or after `reindex`)."""

    counts: dict[str, int]
    total: int
    exact: bool


# --------------------------------------------------------------------------- helpers


def utc(value: datetime, name: str = "datetime") -> datetime:
    """`value` as a plain UTC datetime; a naive value is a bug, so it raises ValueError."""
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{name} must be timezone-aware (got naive {value.isoformat()})")
    v = value.astimezone(UTC)
    # Rebuild as a plain datetime: the SDK returns a subclass that would leak into records.
    return datetime(v.year, v.month, v.day, v.hour, v.minute, v.second, v.microsecond, tzinfo=UTC)


def _units(text: str) -> int:
    return len(text.encode("utf-16-le", "surrogatepass")) // 2


def cap_text(text: str, max_units: int = MAX_STRING_UNITS) -> str:
    """`text` cut to `max_units` UTF-16 units, ending with a marker that says so."""
    encoded = text.encode("utf-16-le", "surrogatepass")
    if len(encoded) <= 2 * max_units:
        return text
    budget = max_units - _units(TRUNCATION_MARKER.format(dropped=len(text), total=len(text)))
    # "ignore" drops half of a surrogate pair cut at the boundary rather than storing garbage.
    kept = encoded[: 2 * max(budget, 0)].decode("utf-16-le", "ignore")
    return kept + TRUNCATION_MARKER.format(dropped=len(text) - len(kept), total=len(text))


def raw_text(body: str | bytes) -> str:
    """A queue or HTTP body as text to keep as evidence, whatever its encoding was."""
    return body if isinstance(body, str) else body.decode("utf-8", "replace")


def _dumps(value: object) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str)


def json_column(value: object, max_units: int = MAX_STRING_UNITS) -> str:
    """JSON text of `value` that fits a string property and is still valid JSON.

    Long strings inside are cut (with the marker) ever shorter until it fits; a value that is
    big only because it has very many items is replaced by a preview object, so an oversized
    Exchange error never makes the outcome unrecordable.
    """
    text = _dumps(value)
    if _units(text) <= max_units:
        return text
    limit = 4096
    while limit >= 64:
        shrunk = _dumps(_cap_strings(value, limit))
        if _units(shrunk) <= max_units:
            return shrunk
        limit //= 4
    budget = max_units - 64
    while True:  # JSON escaping can grow the preview (\" is two units): shrink until it fits
        preview = _dumps({"truncated": True, "preview": cap_text(text, budget)})
        excess = _units(preview) - max_units
        if excess <= 0:
            return preview
        budget -= excess + 64


def _cap_strings(value: object, limit: int) -> object:
    if isinstance(value, str):
        return cap_text(value, limit)
    if isinstance(value, Mapping):
        return {str(k): _cap_strings(v, limit) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_cap_strings(v, limit) for v in value]
    return value


def _load_json(text: object) -> object:
    if not isinstance(text, str) or not text:
        return None
    try:
        # An escape such as \ud800 in stored JSON text decodes to a lone surrogate: clean again.
        return clean_value(json.loads(text))
    except (json.JSONDecodeError, RecursionError):
        # A row edited by hand in Storage Explorer must still be readable by the status API.
        return {"unparsed": text}


def _storable(entity: Mapping[str, Any]) -> dict[str, Any]:
    """The entity with every string property cleaned (shared/text.py), at the table boundary.

    Applied to every row written and every row read, so no value that cannot be encoded as
    UTF-8 text (or carried in XML) reaches Table storage, and none stored by an older version
    reaches a response. Cleaning never lengthens a string, so the caps above still hold.
    """
    out = {k: clean(v) if isinstance(v, str) else v for k, v in entity.items()}
    metadata = getattr(entity, "metadata", None)
    return _WithMetadata(out, metadata) if metadata is not None else out


class _WithMetadata(dict[str, Any]):
    """A cleaned copy of an SDK entity that keeps its metadata (the ETag)."""

    def __init__(self, values: Mapping[str, Any], metadata: object) -> None:
        super().__init__(values)
        self.metadata = metadata


def _as_list(value: object) -> list[dict[str, Any]]:
    if value is None:
        return []
    items = value if isinstance(value, list) else [value]
    return [item if isinstance(item, dict) else {"value": item} for item in items]


def check_key(value: str, what: str = "notice_id") -> str:
    """`value` if Table storage accepts it as a PartitionKey/RowKey, else ValueError."""
    if not isinstance(value, str) or not value:
        raise ValueError(f"{what} must be a non-empty string")
    if _units(value) > _MAX_KEY_UNITS:
        raise ValueError(f"{what} is longer than Table storage allows for a key")
    if _FORBIDDEN_KEY_CHARS.search(value):
        raise ValueError(f"{what} contains a character Table storage forbids in keys (/ \\ # ? or control)")
    if not is_storable(value):
        raise ValueError(f"{what} contains a character that is not text (a lone surrogate or a noncharacter)")
    return value


def new_event_id(at: datetime) -> str:
    """A RowKey that sorts newest first: by `at` descending, then by append order descending."""
    millis = int(utc(at, "at").timestamp() * 1000)
    if millis < 0:
        raise ValueError("events before 1970 cannot be stored")
    sequence = next(_SEQUENCE) % 10**10
    return f"{EVENT_KEY_PREFIX}{_MAX_MILLIS - millis:015d}-{_MAX_SEQUENCE - sequence:010d}-{uuid.uuid4().hex[:8]}"


def event_key_time(event_id: str) -> datetime:
    """The time a RowKey of either scheme encodes (epoch for a key of neither)."""
    try:
        if event_id.startswith(EVENT_KEY_PREFIX):
            millis = _MAX_MILLIS - int(event_id[1:].split("-", 1)[0])
        else:
            millis = int(event_id.split("-", 1)[0])
        return datetime.fromtimestamp(millis / 1000, UTC)
    except (ValueError, OverflowError, OSError):
        return datetime.fromtimestamp(0, UTC)


# --------------------------------------------------------------------------- row <-> record


def record_to_entity(record: ActivationRecord) -> dict[str, Any]:
    """The activations-table entity for `record` (None values are left out)."""
    check_key(record.notice_id)
    if _units(record.notice_json) > MAX_STRING_UNITS:
        # The worker re-reads the notice from here; a cut notice would provision something else.
        raise ValueError("notice_json is larger than a Table storage property can hold")
    entity: dict[str, Any] = {
        "PartitionKey": record.notice_id,
        "RowKey": ACTIVATION_ROW_KEY,
        "tenant_id": cap_text(record.tenant_id, 256),
        "status": record.status.value,
        "attempts": record.attempts,
        "propagation_waits": record.propagation_waits or None,
        "series": record.series,
        "content_hash": record.content_hash,
        "notice_json": record.notice_json,
        "raw_message": record.raw_message,
        "services": ",".join(record.services),
        "customer_name": record.customer_name,
        "contract_id": record.contract_id,
        "connectors": json_column(record.connectors) if record.connectors else None,
        "warnings": json_column(record.warnings) if record.warnings else None,
        "error": json_column(record.error) if record.error is not None else None,
        "events_count": record.events_count,
        "lease_owner": record.lease_owner,
    }
    for name in _DATETIME_FIELDS:
        entity[name] = getattr(record, name)
    entity = _storable({k: v for k, v in entity.items() if v is not None})
    if record.raw_message is not None:
        entity["raw_message"], original = keep_raw(record.raw_message)
        if original is not None:
            entity[RAW_ORIGINAL_PROPERTY] = original
    return entity


def entity_to_record(entity: Mapping[str, Any], etag: str | None = None) -> ActivationRecord:
    """The record for an activations-table entity; missing properties take their defaults."""

    etag = etag if etag is not None else _etag_of(entity)
    entity = _storable(entity)  # a row written before the write boundary existed reads as text too

    def text(name: str) -> str | None:
        value = entity.get(name)
        return None if value is None else str(value)

    def when(name: str) -> datetime | None:
        value = entity.get(name)
        return utc(value, name) if isinstance(value, datetime) else None

    services = text("services") or ""
    error = _load_json(entity.get("error"))
    return ActivationRecord(
        notice_id=str(entity["PartitionKey"]),
        tenant_id=text("tenant_id") or "",
        status=Status(text("status") or Status.QUEUED.value),
        attempts=_count(entity.get("attempts")),
        propagation_waits=_count(entity.get("propagation_waits")),
        series=_count(entity.get("series")) or 1,
        content_hash=text("content_hash") or "",
        notice_json=text("notice_json") or "",
        raw_message=text("raw_message"),
        services=tuple(s for s in services.split(",") if s),
        customer_name=text("customer_name"),
        contract_id=text("contract_id"),
        connectors=_as_list(_load_json(entity.get("connectors"))),
        warnings=_as_list(_load_json(entity.get("warnings"))),
        error=error if isinstance(error, dict) or error is None else {"value": error},
        events_count=_count(entity.get("events_count")),
        created_at=when("created_at"),
        updated_at=when("updated_at"),
        started_at=when("started_at"),
        finished_at=when("finished_at"),
        next_attempt_at=when("next_attempt_at"),
        lease_owner=text("lease_owner"),
        lease_expires_at=when("lease_expires_at"),
        etag=etag,
    )


def event_to_entity(event: EventRecord) -> dict[str, Any]:
    check_key(event.notice_id)
    check_key(event.event_id, "event_id")
    entity: dict[str, Any] = {
        "PartitionKey": event.notice_id,
        "RowKey": event.event_id,
        "kind": cap_text(event.kind, 256),
        "message": cap_text(event.message, EVENT_MESSAGE_MAX_UNITS),
        "attempt": event.attempt,
        "series": event.series,
        "at": event.at,
    }
    if event.data is not None:
        entity["data"] = json_column(event.data, EVENT_DATA_MAX_UNITS)
    if event.duration_ms is not None:
        entity["duration_ms"] = float(event.duration_ms)
    return _storable(entity)


def entity_to_event(entity: Mapping[str, Any]) -> EventRecord:
    """The event of a row; any row, even one edited by hand, reads as an event (never raises)."""
    entity = _storable(entity)
    data = _load_json(entity.get("data"))
    event_id = str(entity.get("RowKey") or "")
    at = entity.get("at")
    if not isinstance(at, datetime) or at.tzinfo is None:
        # Fall back to the RowKey's milliseconds so a hand-written row still lists in place.
        at = event_key_time(event_id)
    return EventRecord(
        notice_id=str(entity.get("PartitionKey") or ""),
        kind=str(entity.get("kind") or ""),
        message=str(entity.get("message") or ""),
        at=at,
        attempt=int(_number(entity.get("attempt")) or 0),
        series=int(_number(entity.get("series")) or 0),
        data=data if isinstance(data, dict) or data is None else {"value": data},
        duration_ms=_number(entity.get("duration_ms")),
        event_id=event_id,
    )


def _number(value: object) -> float | None:
    """A stored number as a float; None for anything else (a hand-edited "n/a", NaN, inf)."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    try:
        number = float(value)
    except (ValueError, OverflowError):
        return None
    return number if math.isfinite(number) else None


def _count(value: object) -> int:
    """A stored count as an int; 0 for what is not a number (a row an older version, or a person
    in Storage Explorer, wrote as "many" or "n/a"): such a row must still read, list and count."""
    number = _number(value)
    return max(int(number), 0) if number is not None and abs(number) < 2**63 else 0


def _etag_of(entity: Mapping[str, Any]) -> str | None:
    metadata = getattr(entity, "metadata", None)
    if isinstance(metadata, Mapping):
        etag = metadata.get("etag")
        return etag if isinstance(etag, str) else None
    return None


# --------------------------------------------------------------------------- continuation tokens


def _query_fingerprint(*parts: str | None) -> str:
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:12]


def encode_continuation(token: Mapping[str, Any], *, query: str = "") -> str:
    """An opaque, URL-safe string for the SDK's continuation dict, bound to one query."""
    payload = {"v": _TOKEN_VERSION, "q": query, "pk": token.get("PartitionKey"), "rk": token.get("RowKey")}
    return base64.urlsafe_b64encode(_dumps(payload).encode()).decode().rstrip("=")


def decode_continuation(text: str, *, query: str = "") -> dict[str, str | None]:
    """The SDK continuation dict for a token from `encode_continuation`; InvalidContinuation if not.

    Tokens come back from URLs typed or pasted by people, so every way one can be wrong is a
    clear error the API can answer with 400, never a stack trace or a query from the start.
    """
    if not isinstance(text, str) or not text:
        raise InvalidContinuation("continuation token is empty")
    if len(text) > _MAX_TOKEN_CHARS or not _URLSAFE_B64.fullmatch(text):
        raise InvalidContinuation("continuation token is not one this service issued")
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        payload = json.loads(raw.decode("utf-8"))
    except (binascii.Error, ValueError) as exc:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise InvalidContinuation("continuation token is not one this service issued") from exc
    if not isinstance(payload, dict) or payload.get("v") != _TOKEN_VERSION:
        raise InvalidContinuation("continuation token is not one this service issued")
    if payload.get("q") != query:
        raise InvalidContinuation("continuation token belongs to a different query; start again without it")
    pk, rk = payload.get("pk"), payload.get("rk")
    if not all(v is None or isinstance(v, str) for v in (pk, rk)) or (pk is None and rk is None):
        raise InvalidContinuation("continuation token is not one this service issued")
    return {"PartitionKey": pk, "RowKey": rk}


# --------------------------------------------------------------------------- connection


@dataclass(frozen=True)
class StorageConnection:
    """Where the storage account is and how to reach it, read the way the Functions host does.

    The host's own triggers use `AzureWebJobsStorage`; our code must reach the same account
    by the same rules, or retries would be enqueued where no trigger listens. Locally that is
    a connection string (Azurite); in Azure it is identity-based (`AzureWebJobsStorage__
    accountName` or the `__tableServiceUri`/`__queueServiceUri` pair, plus `__clientId` for a
    user-assigned identity), so no account key exists to leak.
    """

    connection_string: str = field(default="", repr=False)  # may hold an account key
    account_name: str = ""
    table_service_uri: str = ""
    queue_service_uri: str = ""
    client_id: str = ""

    @classmethod
    def from_environ(cls, environ: Mapping[str, str], *, name: str = "AzureWebJobsStorage") -> StorageConnection:
        """Read the host's convention for connection `name` from a mapping the caller passes."""

        def get(suffix: str) -> str:
            return (environ.get(name + suffix) or "").strip()

        return cls(
            connection_string=get(""),
            account_name=get("__accountName"),
            table_service_uri=get("__tableServiceUri"),
            queue_service_uri=get("__queueServiceUri"),
            client_id=get("__clientId"),
        )

    @classmethod
    def from_settings(cls, settings: Settings) -> StorageConnection:
        """From Settings fields `storage_connection_string`, `storage_account_name`,
        `storage_table_service_uri`, `storage_queue_service_uri` and `storage_client_id` (or
        `managed_identity_client_id`), where Settings has them; missing fields read as unset."""

        def get(attr: str) -> str:
            value = getattr(settings, attr, "")
            return value.strip() if isinstance(value, str) else ""

        return cls(
            connection_string=get("storage_connection_string"),
            account_name=get("storage_account_name"),
            table_service_uri=get("storage_table_service_uri"),
            queue_service_uri=get("storage_queue_service_uri"),
            client_id=get("storage_client_id") or get("managed_identity_client_id"),
        )

    def checked_connection_string(self) -> str:
        if self.connection_string.replace(" ", "").lower().startswith("usedevelopmentstorage=true"):
            raise SettingsError(
                "AzureWebJobsStorage=UseDevelopmentStorage=true is understood by the Functions host but not by "
                "the Python SDK: use the full connection string (`python -m localrun.azurite env`)"
            )
        return self.connection_string

    def table_endpoint(self) -> str:
        if self.table_service_uri:
            return self.table_service_uri.rstrip("/")
        if self.account_name:
            return f"https://{self.account_name}.table.core.windows.net"
        raise SettingsError(
            "no storage account configured: set AzureWebJobsStorage (connection string) or "
            "AzureWebJobsStorage__accountName / AzureWebJobsStorage__tableServiceUri"
        )

    def queue_endpoint(self) -> str:
        if self.queue_service_uri:
            return self.queue_service_uri.rstrip("/")
        if self.account_name:
            return f"https://{self.account_name}.queue.core.windows.net"
        raise SettingsError(
            "no storage account configured: set AzureWebJobsStorage (connection string) or "
            "AzureWebJobsStorage__accountName / AzureWebJobsStorage__queueServiceUri"
        )

    def credential(self, credential: TokenCredential | None = None) -> TokenCredential:
        """`credential`, else the Function App's managed identity (Entra ID, no keys)."""
        if credential is not None:
            return credential
        # Imported here: azure-identity is only needed in Azure, and is slow to import.
        from azure.identity import DefaultAzureCredential, ManagedIdentityCredential

        if self.client_id:
            return ManagedIdentityCredential(client_id=self.client_id)
        return DefaultAzureCredential()

    def table_service(self, credential: TokenCredential | None = None) -> TableServiceClient:
        if self.connection_string:
            return TableServiceClient.from_connection_string(self.checked_connection_string())
        return TableServiceClient(endpoint=self.table_endpoint(), credential=self.credential(credential))


# --------------------------------------------------------------------------- the store


class ActivationStore:
    """Activations and their events in two tables of one storage account."""

    def __init__(self, service: TableServiceClient, *, activations_table: str, events_table: str) -> None:
        self._service = service
        self._activations_table = activations_table
        self._events_table = events_table
        self._activations: TableClient = service.get_table_client(activations_table)
        self._events: TableClient = service.get_table_client(events_table)
        self._index_marker_checked = False  # see _mark_complete_if_empty

    @classmethod
    def from_connection_string(
        cls, connection_string: str, *, activations_table: str, events_table: str
    ) -> ActivationStore:
        service = StorageConnection(connection_string=connection_string).table_service()
        return cls(service, activations_table=activations_table, events_table=events_table)

    @classmethod
    def from_account_url(
        cls, account_url: str, credential: TokenCredential, *, activations_table: str, events_table: str
    ) -> ActivationStore:
        service = TableServiceClient(endpoint=account_url, credential=credential)
        return cls(service, activations_table=activations_table, events_table=events_table)

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        credential: TokenCredential | None = None,
        *,
        connection: StorageConnection | None = None,
    ) -> ActivationStore:
        """The store the product uses: tables named in settings, on the host's storage account."""
        conn = connection if connection is not None else StorageConnection.from_settings(settings)
        return cls(
            conn.table_service(credential),
            activations_table=settings.activations_table,
            events_table=settings.events_table,
        )

    def close(self) -> None:
        self._activations.close()
        self._events.close()
        self._service.close()

    def ensure_tables(self) -> None:
        """Create both tables if missing (idempotent: every worker may call it at start).

        An activations table with no activation row yet (new, or made by the Bicep) is marked
        completely indexed: every row it will hold is indexed as it is written.
        """
        for name in (self._activations_table, self._events_table):
            self._service.create_table_if_not_exists(name)
        self._mark_complete_if_empty()

    def _mark_complete_if_empty(self) -> None:
        """Mark the index complete when the table holds no activation row yet.

        Done once per store (process), before its first create: in Azure the Bicep makes the
        tables and nothing calls ensure_tables, so a new deployment learns here that every row
        it will hold is indexed as it is written. A table with rows and no marker (rows from
        before the index) stays not exact until `reindex`. Best effort: it never fails a write.
        """
        if self._index_marker_checked:
            return
        try:
            if self._index_row(ix.COMPLETE_ROW) is None and not any(self._activation_rows(top=1)):
                self._mark_index_complete()
            self._index_marker_checked = True
        except Exception:
            log.exception("could not check whether the activations table is completely indexed")

    # ------------------------------------------------------------------ activations

    def get(self, notice_id: str) -> ActivationRecord | None:
        """The activation, or None if there is none (a missing table is an error, not None)."""
        try:
            check_key(notice_id)
        except ValueError:
            return None  # a key the service cannot store cannot have been stored
        entity = self._activation_row(notice_id)
        return None if entity is None else entity_to_record(entity)

    def _get_readable(self, notice_id: str) -> ActivationRecord | None:
        """`get`, with a row that cannot be read as an activation logged and read as None (for
        lists: one such row must not break a page)."""
        entity = self._activation_row(notice_id)
        return None if entity is None else _readable(entity)

    def _activation_row(self, notice_id: str) -> Mapping[str, Any] | None:
        try:
            return cast("Mapping[str, Any]", self._activations.get_entity(notice_id, ACTIVATION_ROW_KEY))
        except ResourceNotFoundError as exc:
            if _is_table_missing(exc):
                raise
            return None

    def raw_message_bytes(self, notice_id: str) -> bytes | None:
        """The raw message exactly as it arrived (up to its cap), or None if none is kept.

        `ActivationRecord.raw_message` is always storable text (a cleaned preview when the
        message was not); this is the evidence itself, for an operator who needs the bytes.
        """
        try:
            check_key(notice_id)
            entity = self._activations.get_entity(notice_id, ACTIVATION_ROW_KEY,
                                                  select=["raw_message", RAW_ORIGINAL_PROPERTY])
        except ValueError:
            return None
        except ResourceNotFoundError as exc:
            if _is_table_missing(exc):
                raise
            return None
        preview = entity.get("raw_message")
        if not isinstance(preview, str):
            return None
        original = entity.get(RAW_ORIGINAL_PROPERTY)
        return restore_raw(preview, original if isinstance(original, str) else None)

    def create(self, record: ActivationRecord) -> ActivationRecord:
        """Insert `record`, then its index rows; RecordExists if the notice already has a row."""
        entity = record_to_entity(record)
        self._mark_complete_if_empty()
        try:
            metadata = self._activations.create_entity(entity)
        except ResourceExistsError as exc:
            raise RecordExists(f"activation {record.notice_id!r} already exists") from exc
        written = entity_to_record(entity, etag=_metadata_etag(metadata))
        self._index_quietly(entity, fresh=True)
        return written

    def replace(self, record: ActivationRecord, *, previous: ActivationRecord | None = None) -> ActivationRecord:
        """Overwrite the row if it is still at `record.etag`; ConcurrentUpdate if not.

        Replace (not merge) so that a field set to None is removed from the row rather than
        keeping its old value. The returned record carries the new ETag. `previous`, the row
        as read before this write, lets a write that changes nothing a list shows (a lease
        renewal) skip the index entirely; without it the index is checked (one point read).
        """
        if not record.etag:
            raise ValueError("replace needs the etag of the row it was read from (use get or create first)")
        entity = record_to_entity(record)
        try:
            metadata = self._activations.update_entity(
                entity, mode=UpdateMode.REPLACE, etag=record.etag, match_condition=MatchConditions.IfNotModified
            )
        except ResourceModifiedError as exc:
            raise ConcurrentUpdate(f"activation {record.notice_id!r} changed since it was read") from exc
        except ResourceNotFoundError as exc:
            if _is_table_missing(exc):
                raise
            raise RecordNotFound(f"activation {record.notice_id!r} does not exist") from exc
        written = entity_to_record(entity, etag=_metadata_etag(metadata))
        if previous is not None and _unchanged_in_lists(record_to_entity(previous), entity):
            return written
        self._index_quietly(entity)
        return written

    def list_activations(
        self,
        *,
        status: str | None = None,
        tenant_id: str | None = None,
        q: str | None = None,
        top: int = 50,
        continuation: str | None = None,
    ) -> Page[ActivationRecord]:
        """Up to `top` activations in triage order (index.TRIAGE_ORDER), newest created first
        within a status; optionally one status's, one tenant's, or a search's (`search`).

        Reads index rows only, one RowKey range of one partition, so a page of `top` reads
        about `top` rows however large the table. The items carry the listed fields (no
        notice, no raw message): `get` reads the rest. The service may return short or even
        empty pages with a continuation (it stops at partition-server boundaries and after
        5 s of scanning), so pages are topped up here, within a bounded number of round trips;
        a short page therefore does not mean the end, only `continuation is None` does.
        """
        if not 1 <= top <= MAX_PAGE_SIZE:
            raise ValueError(f"top must be between 1 and {MAX_PAGE_SIZE}")
        if status is not None and status not in STATUSES:
            raise ValueError(f"status {status!r} is not one of {', '.join(STATUSES)}")
        if q is not None:
            if continuation is not None:
                raise InvalidContinuation("a search has one page only; refine the query instead")
            return Page(self.search(q, status=status, tenant_id=tenant_id, top=top), None)
        lo, hi = ix.tenant_range(tenant_id, status) if tenant_id is not None else ix.status_range(status)
        # Each @name must stand alone between spaces: the SDK substitutes word by word.
        clauses = ["PartitionKey eq @pk", "RowKey ge @lo", "RowKey lt @hi"]
        parameters: dict[str, Any] = {"pk": ix.INDEX_PARTITION, "lo": lo, "hi": hi}
        query = _query_fingerprint("index", status, tenant_id)
        token: dict[str, str | None] | None = (
            decode_continuation(continuation, query=query) if continuation is not None else None
        )
        items: list[ActivationRecord] = []
        for _ in range(_MAX_PAGE_ROUND_TRIPS):
            pages = self._activations.query_entities(
                " and ".join(clauses), parameters=parameters, results_per_page=top - len(items)
            ).by_page(continuation_token=cast(Any, token))  # the SDK's hint says str; it takes its dict
            page = next(pages, None)
            if page is not None:
                items.extend(r for r in map(index_to_record, page) if r is not None)
            token = pages.continuation_token  # type: ignore[attr-defined]
            if not token or len(items) >= top:
                break
        if tenant_id is not None:
            items = self._whole(items)  # tenant rows are thin: read the handful shown
        return Page(items, encode_continuation(token, query=query) if token else None)

    def search(self, q: str, *, status: str | None = None, tenant_id: str | None = None,
               top: int = 50) -> list[ActivationRecord]:
        """Activations whose notice id starts with `q` (as typed: ids are case-sensitive), whose
        customer name starts with it (case-insensitive, spaces collapsed) or whose contract id
        starts with it; in list order, at most `top`.

        Three range queries of at most `top` rows each, every one naming its partitions: the
        activation rows' PartitionKey range (the notice-id prefix), and the customer and
        contract RowKey ranges of the index. Prefixes, because a substring would need a scan.
        `status` and `tenant_id` narrow each of the three queries (search rows carry both).
        """
        text = " ".join(q.split())[:MAX_QUERY_CHARS]
        if not text:
            return []
        # The narrowing is part of each query, not applied to its first `top` rows: a prefix that
        # matches more than `top` would otherwise hide a failed match behind queued ones.
        narrow = {k: v for k, v in (("status", status), ("tenant_id", tenant_id)) if v is not None}
        found: dict[str, ActivationRecord] = {}
        whole: set[str] = set()  # read from their activation rows, not from search rows
        if _NOTICE_ID_CHARS.fullmatch(text):
            for entity in self._activation_rows(lo=text, hi=ix.after_prefix(text), top=top, where=narrow):
                if (record := _readable(entity)) is not None:
                    found.setdefault(record.notice_id, record)
                    whole.add(record.notice_id)
        for lo, hi in ix.search_ranges(text):
            clauses, parameters = _where(narrow, {"pk": ix.INDEX_PARTITION, "lo": lo, "hi": hi})
            rows = self._activations.query_entities(
                " and ".join(["PartitionKey eq @pk", "RowKey ge @lo", "RowKey lt @hi", *clauses]),
                parameters=parameters, results_per_page=top)
            matching = (e for e in rows if str(e.get("RowKey") or "").startswith(lo))  # see after_prefix
            for entity in itertools.islice(matching, top):
                if (record := index_to_record(entity)) is not None:
                    found.setdefault(record.notice_id, record)
        matches = [r for r in found.values()
                   if (status is None or r.status.value == status) and (tenant_id is None or r.tenant_id == tenant_id)]
        matches.sort(key=lambda r: (ix.rank(r.status), ix.order_key(r.notice_id, r.created_at)))
        # Search rows are thin: the few matches shown are read whole.
        return self._whole(matches[:top], read_already=whole)

    def iter_activations(
        self, *, status: str | None = None, tenant_id: str | None = None
    ) -> Iterator[ActivationRecord]:
        """Every matching activation, page after page (for the CLI and reports)."""
        continuation: str | None = None
        while True:
            page = self.list_activations(
                status=status, tenant_id=tenant_id, top=MAX_PAGE_SIZE, continuation=continuation
            )
            yield from page.items
            if page.continuation is None:
                return
            continuation = page.continuation

    def _whole(self, records: list[ActivationRecord], *,
               read_already: set[str] | frozenset[str] = frozenset()) -> list[ActivationRecord]:
        """The records of thin index rows, read from their activation rows (one point read each,
        except those in `read_already`), as a list shows them: no notice, no raw message. A row
        gone since it was indexed is left out."""
        shown: list[ActivationRecord] = []
        for record in records:
            whole = record if record.notice_id in read_already else self._get_readable(record.notice_id)
            if whole is not None:
                shown.append(replace(whole, notice_json="", raw_message=None))
        return shown

    # ------------------------------------------------------------------ index and summary

    def summary(self) -> Summary:
        """Activations per status: one query of the counter rows (COUNTER_SHARDS of them and a
        marker), whatever the table's size."""
        counts = dict.fromkeys(STATUSES, 0)
        complete = False
        rows = self._activations.query_entities(
            "PartitionKey eq @pk and RowKey ge @lo", parameters={"pk": ix.INDEX_PARTITION, "lo": "~"})
        for row in rows:
            key = str(row.get("RowKey"))
            if key == ix.COMPLETE_ROW:
                complete = True
            elif key.startswith(ix.COUNTER_PREFIX):
                for status in counts:
                    counts[status] += ix.counted(row, status)
        return Summary(counts, sum(counts.values()), complete)

    def reindex(self) -> int:
        """Bring the index of every activation row up to date; returns how many rows are indexed.

        The one full scan, by design: once after upgrading to the indexed store, or to repair.
        Safe while workers write: each row is indexed like a write would (the pointer, then the
        row read again when the index shows something else). A row that cannot be read as an
        activation (an unknown status, say) is logged and its index rows removed, so what is
        counted is what is listed. Then every pointer whose activation row the scan did not see
        is checked against its row: the index rows of a row deleted by hand go, one created
        meanwhile is indexed. The table is marked completely indexed only when every row was.
        """
        count, missed = 0, 0
        seen: set[str] = set()
        for raw in self._activation_rows():
            notice_id = str(raw.get("PartitionKey"))
            seen.add(notice_id)
            try:
                entity = _as_written(raw)
            except (ValueError, TypeError, KeyError):
                log.warning("reindex: activation row %r cannot be read; it is left out of lists and counts", notice_id)
                try:
                    self._unindex(notice_id)
                except StoreError:
                    missed += 1
                continue
            try:
                self.sync_index(entity)
            except StoreError:
                log.warning("reindex: the index rows of %r kept changing; run reindex again", notice_id)
                missed += 1
                continue
            count += 1
        pointers = self._activations.query_entities(
            "PartitionKey eq @pk and RowKey ge @lo and RowKey lt @hi", select=["RowKey"],
            parameters={"pk": ix.INDEX_PARTITION, "lo": ix.POINTER_PREFIX, "hi": ix.after_prefix(ix.POINTER_PREFIX)})
        for pointer in pointers:
            notice_id = str(pointer.get("RowKey"))[len(ix.POINTER_PREFIX):]
            if notice_id not in seen:
                try:
                    self._unindex(notice_id)  # reads the row after the pointer: gone, or new
                except StoreError:
                    missed += 1
        if not missed:
            self._mark_index_complete()
        return count

    def repair_index(self, record: ActivationRecord) -> None:
        """Make sure `record`'s index rows show it (one point read when they do); never raises.

        For the watchdog message and the like: they arrive after a run whose last index write
        may have been lost to a crash, and write nothing themselves.
        """
        try:
            self.sync_index(record_to_entity(record))
        except Exception:
            log.exception("could not check the index rows of activation %s", record.notice_id)

    def sync_index(self, entity: Mapping[str, Any], *, fresh: bool = False) -> bool:
        """Make the index rows show the activation row `entity`; True if anything was written.

        One entity-group transaction: the rows the pointer names and the new state no longer
        needs are deleted, the new rows written, the pointer moved (If-Match), and on a status
        change the notice's counter row moved (If-Match). A lost race is read again and done
        again. `fresh` (a row just created) skips the pointer read: there can be none yet.

        Which of two writes is the later one is the activation row's to say, not the clocks'
        (another instance's clock, one set back, two writes in one millisecond): when a pointer
        exists and does not show `entity` already, the row is read again, after the pointer,
        and that is what is indexed. Every write indexes after it writes, and the pointer's
        If-Match makes the last transaction to commit one that read the pointer, hence the row,
        after every earlier commit: it shows the last write. A scan's stale copy (`reindex`
        while workers write) is corrected the same way. A row that is gone or cannot be read
        loses its index rows. The cost is one point read per change of what a list shows.
        """
        state = ix.IndexState.of(entity)
        return self._sync(state.notice_id, state, fresh=fresh)

    def _sync(self, notice_id: str, state: ix.IndexState | None, *, fresh: bool = False) -> bool:
        """`sync_index` for `state`; None reads the row to learn what to show (or to remove)."""
        pointer_key = ix.pointer_key(notice_id)
        check_held = False  # a delete found its row gone (deleted by hand): delete only what exists
        for round_ in range(_INDEX_ROUNDS):
            pointer = None if fresh and round_ == 0 else self._index_row(pointer_key)
            if state is not None and state.shown_by(pointer):
                return False
            if pointer is not None or state is None:
                state = self._row_state(notice_id)
                if state is not None and state.shown_by(pointer):
                    return False
            if state is None and pointer is None:
                return False
            held = ix.pointer_keys(pointer)
            if check_held:
                held = [k for k in held if self._index_row(k) is not None]
            try:
                self._activations.submit_transaction(self._index_ops(notice_id, state, pointer, held))
            except TableTransactionError as exc:
                # The pointer or the counter changed since it was read, or a row it names is gone.
                check_held = check_held or getattr(exc, "error_code", None) == TableErrorCode.RESOURCE_NOT_FOUND
                if not _INDEX_RETRY.exhausted(round_ + 1):
                    time.sleep(_INDEX_RETRY.delay(round_ + 1))
                continue
            return True
        raise StoreError(f"the index rows of {notice_id!r} kept changing; left for the next write or reindex")

    def _index_ops(self, notice_id: str, state: ix.IndexState | None, pointer: Any,
                   held: list[str]) -> list[Any]:
        """The transaction that moves the index from `pointer` (holding `held`) to `state`, or
        removes it when `state` is None; the counter row moves on a change of status."""
        pk = ix.INDEX_PARTITION
        keys = state.keys if state is not None else []
        ops: list[Any] = [("delete", {"PartitionKey": pk, "RowKey": k}) for k in held if k not in keys]
        if state is not None:
            ops += [("upsert", row, {"mode": UpdateMode.REPLACE}) for row in state.rows()]
            ops.append(("create", state.pointer()) if pointer is None else
                       ("update", state.pointer(), _if_match(pointer)))
        else:
            ops.append(("delete", {"PartitionKey": pk, "RowKey": ix.pointer_key(notice_id)},
                        {"etag": _etag_of(pointer), "match_condition": MatchConditions.IfNotModified}))
        old_status = str(pointer.get("status") or "") if pointer is not None else None
        status = state.status if state is not None else None
        if old_status != status:
            counter_key = ix.counter_key(notice_id)
            counter = self._index_row(counter_key)
            counts = {s: ix.counted(counter, s) for s in STATUSES}
            if old_status in counts:
                counts[old_status] = max(counts[old_status] - 1, 0)
            if status is not None:
                counts[status] = counts.get(status, 0) + 1
            counter_row = {"PartitionKey": pk, "RowKey": counter_key, **counts}
            ops.append(("create", counter_row) if counter is None else ("update", counter_row, _if_match(counter)))
        return ops

    def _row_state(self, notice_id: str) -> ix.IndexState | None:
        """What the index should show for the activation row as it is now (None: nothing)."""
        try:
            raw = self._activations.get_entity(notice_id, ACTIVATION_ROW_KEY)
        except ResourceNotFoundError as exc:
            if _is_table_missing(exc):
                raise
            return None
        try:
            return ix.IndexState.of(_as_written(raw))
        except (ValueError, TypeError, KeyError):
            return None

    def _unindex(self, notice_id: str) -> None:
        """Remove the index rows of an activation row that is gone or cannot be read (see
        reindex); a row that can be read after all is indexed instead."""
        self._sync(notice_id, None)

    def _index_quietly(self, entity: Mapping[str, Any], *, fresh: bool = False) -> None:
        """Index after the activation row is written: a failure must not undo the write (the
        row is the truth); the next write, the watchdog or `reindex` repairs the index."""
        try:
            self.sync_index(entity, fresh=fresh)
        except Exception:
            log.exception("could not update the index rows of activation %s", entity.get("PartitionKey"))

    def _index_row(self, row_key: str) -> Any:
        try:
            return self._activations.get_entity(ix.INDEX_PARTITION, row_key)
        except ResourceNotFoundError as exc:
            if _is_table_missing(exc):
                raise
            return None

    def _mark_index_complete(self) -> None:
        self._activations.upsert_entity({"PartitionKey": ix.INDEX_PARTITION, "RowKey": ix.COMPLETE_ROW})

    def _activation_rows(self, *, lo: str | None = None, hi: str | None = None, top: int | None = None,
                         where: Mapping[str, str] | None = None) -> Iterator[Mapping[str, Any]]:
        """Activation rows (never index rows), optionally of a PartitionKey range, at most `top`,
        with the properties in `where` equal to the values given.

        A range that spans the index partition is cut around it, so the service never scans the
        index for activation rows it cannot hold.
        """
        ranges: list[tuple[str | None, str | None]] = [(lo, hi)]
        # No notice id holds ":", so no activation's partition starts with "index:".
        index_lo, index_hi = ix.INDEX_NAMESPACE, ix.after_prefix(ix.INDEX_NAMESPACE)
        if (lo is None or lo < index_hi) and (hi is None or index_lo < hi):
            ranges = [(lo, index_lo), (index_hi, hi)]
        left = top
        for start, stop in ranges:
            if left is not None and left <= 0:
                return
            clauses, parameters = _where(where or {}, {"row_key": ACTIVATION_ROW_KEY})
            clauses.insert(0, "RowKey eq @row_key")
            if start is not None:
                clauses.append("PartitionKey ge @lo")
                parameters["lo"] = start
            if stop is not None:
                clauses.append("PartitionKey lt @hi")
                parameters["hi"] = stop
            rows = self._activations.query_entities(" and ".join(clauses), parameters=parameters,
                                                    results_per_page=min(left or MAX_PAGE_SIZE, MAX_PAGE_SIZE))
            for entity in rows:
                if left is not None:
                    if left <= 0:
                        return
                    left -= 1
                yield entity

    # ------------------------------------------------------------------ events

    def append_event(
        self,
        notice_id: str,
        *,
        kind: str,
        message: str,
        data: Mapping[str, Any] | None = None,
        attempt: int,
        series: int,
        at: datetime,
        duration_ms: float | None = None,
    ) -> EventRecord:
        """Add one event to the notice's history and return it with its event_id."""
        event = EventRecord(
            notice_id=notice_id,
            kind=kind,
            message=message,
            at=at,
            attempt=attempt,
            series=series,
            data=dict(data) if data is not None else None,
            duration_ms=duration_ms,
            event_id=new_event_id(at),
        )
        self._events.create_entity(event_to_entity(event))
        return event

    def append_events(self, events: Iterable[EventRecord]) -> list[EventRecord]:
        """Append many events with one transaction per notice and chunk (100 rows, < 4 MiB).

        Event ids are assigned here in the given order, so the history lists them in the
        list's order even when every event has the same timestamp. Each chunk is all-or-nothing.
        """
        stamped = [replace(e, event_id=e.event_id or new_event_id(e.at)) for e in events]
        by_partition: dict[str, list[dict[str, Any]]] = {}
        for event in stamped:
            by_partition.setdefault(event.notice_id, []).append(event_to_entity(event))
        for entities in by_partition.values():
            for chunk in _chunks(entities):
                try:
                    self._events.submit_transaction([("create", entity) for entity in chunk])
                except TableTransactionError as exc:
                    raise StoreError(f"appending {len(chunk)} events failed: {exc.message}") from exc
        return stamped

    def list_events(self, notice_id: str, *, limit: int | None = None) -> list[EventRecord]:
        """The notice's events, oldest first; with `limit`, only the newest `limit` of them."""
        if limit is not None and limit < 1:
            raise ValueError("limit must be at least 1")
        if limit is not None:
            return self.history(notice_id, newest=limit, count_limit=limit).events
        try:
            check_key(notice_id)
        except ValueError:
            return []
        newest_first = [entity_to_event(e) for e in self._event_rows(notice_id, legacy=False)]
        legacy = [entity_to_event(e) for e in self._event_rows(notice_id, legacy=True)]
        return sorted(legacy + newest_first[::-1], key=lambda e: e.at)  # stable: same-ms order kept

    def history(self, notice_id: str, *, newest: int = 200, count_limit: int = 5000) -> History:
        """The newest `newest` events, oldest first, and the total counted up to `count_limit`.

        One query of `newest` rows reads them (new keys sort newest first); the rest are only
        counted, by key, a page of 1000 per round trip, until `count_limit`. Only a history
        still in the old key scheme is read in full by key (to find its newest rows), up to
        100,000 keys.
        """
        if newest < 1 or count_limit < newest:
            raise ValueError("need 1 <= newest <= count_limit")
        try:
            check_key(notice_id)
        except ValueError:
            return History([], 0, True)
        shown: list[EventRecord] = []
        last_key: str | None = None
        for entity in self._event_rows(notice_id, legacy=False, per_page=min(newest, MAX_PAGE_SIZE)):
            shown.append(entity_to_event(entity))
            last_key = str(entity.get("RowKey"))
            if len(shown) >= newest:
                break
        counted = len(shown)
        exact = True
        if last_key is not None and len(shown) >= newest:
            # The rest of the new-scheme rows are only counted, by key.
            for _ in self._event_rows(notice_id, legacy=False, after=last_key, keys_only=True):
                if counted >= count_limit:
                    exact = False
                    break
                counted += 1
        # Old-scheme rows sort oldest first: their newest are found by reading their keys.
        wanted = newest - len(shown)
        scan_limit = _MAX_LEGACY_KEYS_SCANNED if wanted else max(count_limit - counted, 0)
        tail: deque[str] = deque(maxlen=wanted)
        legacy = 0
        for entity in self._event_rows(notice_id, legacy=True, keys_only=True):
            if legacy >= scan_limit:
                exact = False
                break
            legacy += 1
            tail.append(str(entity.get("RowKey")))
        older: list[EventRecord] = []
        if tail:
            rows = self._event_rows(notice_id, legacy=True, start=tail[0])
            older = [entity_to_event(e) for e in rows][-wanted:]
        total = counted + legacy
        if total > count_limit:
            total, exact = count_limit, False
        return History(older + shown[::-1], total, exact)

    def _event_rows(
        self, notice_id: str, *, legacy: bool, per_page: int = MAX_PAGE_SIZE, after: str | None = None,
        start: str | None = None, keys_only: bool = False,
    ) -> Iterator[Mapping[str, Any]]:
        """One notice's event rows of one key scheme, in RowKey order, from `after` or `start`."""
        clauses = ["PartitionKey eq @notice_id", "RowKey lt @prefix" if legacy else "RowKey ge @prefix"]
        parameters: dict[str, Any] = {"notice_id": notice_id, "prefix": EVENT_KEY_PREFIX}
        if after is not None:
            clauses.append("RowKey gt @after")
            parameters["after"] = after
        if start is not None:
            clauses.append("RowKey ge @start")
            parameters["start"] = start
        return iter(self._events.query_entities(
            " and ".join(clauses), parameters=parameters, results_per_page=per_page,
            select=["RowKey"] if keys_only else None,
        ))


def _chunks(entities: Sequence[dict[str, Any]]) -> Iterator[list[dict[str, Any]]]:
    chunk: list[dict[str, Any]] = []
    size = 0
    for entity in entities:
        entity_size = len(_dumps(entity).encode("utf-8")) + 512  # plus the per-operation headers
        if chunk and (len(chunk) >= MAX_BATCH_OPERATIONS or size + entity_size > _MAX_BATCH_BYTES):
            yield chunk
            chunk, size = [], 0
        chunk.append(entity)
        size += entity_size
    if chunk:
        yield chunk


def index_to_record(entity: Mapping[str, Any]) -> ActivationRecord | None:
    """The listed record an index row holds; None for a row that is not one (never raises)."""
    notice_id = entity.get("notice_id")
    if not isinstance(notice_id, str) or not notice_id:
        return None
    if any(not isinstance(entity.get(k, 0), int) or isinstance(entity.get(k), bool) for k in _COUNT_FIELDS):
        # This version writes index rows from rows read as records (counts are ints): this one
        # it did not write, and it is no evidence of anything, so it is not listed.
        log.warning("skipping an index row this version did not write %r", entity.get("RowKey"))
        return None
    return _readable({**entity, "PartitionKey": notice_id})


def _as_written(entity: Mapping[str, Any]) -> dict[str, Any]:
    """An activation row as this version writes it: read as a record and written back, so a
    row an older version (or a person) wrote indexes with the types and text a write would give,
    and shows in a list exactly as `get` reads it. ValueError (or TypeError, KeyError) if the
    row is not an activation at all."""
    return record_to_entity(entity_to_record(entity))


_COUNT_FIELDS = ("attempts", "propagation_waits", "series", "events_count")


def _readable(entity: Mapping[str, Any]) -> ActivationRecord | None:
    try:
        return entity_to_record(entity)
    except (ValueError, TypeError, KeyError):
        log.warning("skipping an unreadable row %r/%r", entity.get("PartitionKey"), entity.get("RowKey"))
        return None


def _unchanged_in_lists(before: Mapping[str, Any], after: Mapping[str, Any]) -> bool:
    """Whether two versions of an activation row show the same in every list: the same index
    keys and the same digest (every listed field but updated_at), as a pointer compares them."""
    old, new = ix.IndexState.of(before), ix.IndexState.of(after)
    return (old.keys, old.status, old.digest) == (new.keys, new.status, new.digest)


def _where(equal: Mapping[str, str], parameters: Mapping[str, Any]) -> tuple[list[str], dict[str, Any]]:
    """Filter clauses "<property> eq @w_<property>" for `equal`, and `parameters` with their values
    (the property names are ours; the values go through the SDK's parameters, never the text)."""
    clauses = [f"{name} eq @w_{name}" for name in equal]
    return clauses, {**parameters, **{f"w_{name}": value for name, value in equal.items()}}


def _if_match(entity: Any) -> dict[str, Any]:
    return {"mode": UpdateMode.REPLACE, "etag": _etag_of(entity), "match_condition": MatchConditions.IfNotModified}


def _metadata_etag(metadata: Mapping[str, Any]) -> str | None:
    etag = metadata.get("etag")
    return etag if isinstance(etag, str) else None


def _is_table_missing(exc: HttpResponseError) -> bool:
    return getattr(exc, "error_code", None) == TableErrorCode.TABLE_NOT_FOUND
