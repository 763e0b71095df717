"""The index rows that lists, search and the summary read: what they hold, under which keys.

Why an index: the activations table is keyed by notice_id, so "the failed ones, newest first"
or "this tenant's" would be a scan of every row ever written, and the table grows with every
contract for years. Instead each activation has a few small rows in one partition of the same
table, under keys that put each question's answer in one RowKey range:

* `s|<rank><status>|<order>`: by status. `rank` is the status's place in `TRIAGE_ORDER`, so the
  whole `s|` range, read in key order, is the triage view: what needs a person first, newest
  first within each status. One range answers "all", one prefix answers "by status".
* `t|<tenant_id>|<rank><status>|<order>`: one tenant's activations, the same order.
* `c|<customer name, casefolded, spaces collapsed>|<notice_id>`: customer-name prefix search.
* `k|<contract_id>|<notice_id>`: contract-id prefix search. Tenant and search rows are thin:
  they carry only what orders and narrows the matches (`THIN_FIELDS`), and a tenant's page or a
  search then reads its few matches' activation rows.
* `@<notice_id>`: the pointer, which says which of the keys above the activation holds now,
  so the next write knows what to delete even after a crash.
* `~count|<shard>`: counters, one property per status; a notice always counts in the same
  shard, so one status change moves one counter row, and the summary reads `COUNTER_SHARDS`.
* `~complete`: present when every activation row is known to be indexed.

`order` is "<10^15-1 - created_at in epoch ms, 15 digits>|<notice_id>": newest created first,
stable for the notice's life. A notice id cannot hold ":", so `INDEX_PARTITION` never meets an
activation's partition. A status row carries the listed fields (everything an item of
`GET /api/activations` shows; not the notice, the raw message or the lease), so a triage page
of 50 is 50 entities read, however large the table.

All of it is pure: the store (`shared/store.py`) reads and writes what these functions build.
"""

from __future__ import annotations

import hashlib
import json
import re
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from .outcome import Status, now_iso
from .text import clean, is_storable

INDEX_NAMESPACE = "index:"  # ":" never occurs in a notice id (see notice.NOTICE_ID_PATTERN)
INDEX_PARTITION = INDEX_NAMESPACE + "activations"

# The order an operator triages in: what needs a person, then what drifted, then what is moving on
# its own, then what is done. A status added to `Status` must be placed here (a test checks it).
TRIAGE_ORDER: tuple[Status, ...] = (
    Status.NEEDS_ATTENTION, Status.FAILED, Status.DRIFTED, Status.RETRY_SCHEDULED, Status.RUNNING,
    Status.QUEUED, Status.SUCCEEDED, Status.REJECTED,
)  # fmt: skip

STATUS_PREFIX = "s|"
TENANT_PREFIX = "t|"
CUSTOMER_PREFIX = "c|"
CONTRACT_PREFIX = "k|"
POINTER_PREFIX = "@"
COUNTER_PREFIX = "~count|"
COMPLETE_ROW = "~complete"
COUNTER_SHARDS = 8  # concurrent status changes of different notices rarely meet on one counter row
# Properties an index row never carries: the notice and the evidence stay on the activation row.
NOT_LISTED = frozenset({"PartitionKey", "RowKey", "notice_json", "raw_message", "raw_message_original_b64",
                        "lease_owner", "lease_expires_at", "events_count"})
THIN_FIELDS = ("notice_id", "status", "tenant_id", "created_at", "content_hash")  # a tenant or search row's
_KEY_FORBIDDEN = re.compile(r"[/\\#?|\x00-\x1f\x7f-\x9f]")  # the service's, plus our separator
_MAX_MILLIS = 10**15 - 1
_MAX_KEY_PART = 200


def rank(status: Status | str) -> str:
    """Two digits that sort statuses in triage order (an unknown one after every known one)."""
    try:
        return f"{TRIAGE_ORDER.index(Status(status)):02d}"
    except ValueError:
        return "99"


def status_part(status: Status | str) -> str:
    value = Status(status).value
    return f"{rank(value)}{value}|"


def order_key(notice_id: str, created_at: datetime | None) -> str:
    """Newest created first, then notice_id; stable for the notice's life."""
    millis = int(created_at.timestamp() * 1000) if created_at is not None else 0
    return f"{_MAX_MILLIS - min(max(millis, 0), _MAX_MILLIS):015d}|{notice_id}"


def key_part(value: str | None) -> str:
    """`value` usable inside a RowKey: forbidden characters and "|" become "_", cut to a bound."""
    if not value:
        return ""
    text = _KEY_FORBIDDEN.sub("_", clean(value))[:_MAX_KEY_PART]
    return text if is_storable(text) else ""


def customer_part(name: str | None) -> str:
    """The searchable form of a customer name: spaces collapsed, casefolded."""
    return key_part(" ".join((name or "").split()).casefold())


def status_range(status: Status | str | None) -> tuple[str, str]:
    """The RowKey range [lo, hi) of every status row, or of one status's rows."""
    prefix = STATUS_PREFIX + (status_part(status) if status is not None else "")
    return prefix, after_prefix(prefix)


def tenant_range(tenant_id: str, status: Status | str | None) -> tuple[str, str]:
    prefix = f"{TENANT_PREFIX}{key_part(tenant_id)}|" + (status_part(status) if status is not None else "")
    return prefix, after_prefix(prefix)


def search_ranges(text: str) -> list[tuple[str, str]]:
    """The RowKey ranges that hold customer names and contract ids starting with `text`."""
    ranges: list[tuple[str, str]] = []
    for prefix, part in ((CUSTOMER_PREFIX, customer_part(text)), (CONTRACT_PREFIX, key_part(text))):
        if part:
            ranges.append((prefix + part, after_prefix(prefix + part)))
    return ranges


def after_prefix(prefix: str) -> str:
    """A string above every string that starts with `prefix` (a range's end), and one that can
    be sent: the character after U+D7FF is U+E000, not a lone surrogate, which is no text.

    Above every such string in code-point order and in UTF-16 order alike; the range it ends
    may also hold strings that do not start with `prefix` (in UTF-16 order, U+10000 and up sort
    below U+E000), so a reader of the range keeps only the keys that do (`search_ranges`).
    """
    code = ord(prefix[-1]) + 1
    if 0xD800 <= code <= 0xDFFF:
        code = 0xE000
    if code > 0x10FFFF:  # every prefix here starts with a key's ASCII prefix, so one is left
        return after_prefix(prefix[:-1])
    return prefix[:-1] + chr(code)


def listed(entity: Mapping[str, Any]) -> dict[str, Any]:
    """The listed properties of an activation row (as `store.record_to_entity` builds it)."""
    values = {k: v for k, v in entity.items() if k not in NOT_LISTED}
    values["notice_id"] = entity["PartitionKey"]
    return values


def digest(payload: Mapping[str, Any]) -> str:
    """What a list would show, hashed; `updated_at` left out, so a lease renewal changes nothing."""
    shown = {k: (now_iso(v) if isinstance(v, datetime) else v) for k, v in payload.items() if k != "updated_at"}
    return hashlib.sha256(json.dumps(shown, sort_keys=True, default=str).encode()).hexdigest()[:24]


def row_keys(notice_id: str, *, status: Status | str, tenant_id: str | None, customer_name: str | None,
             contract_id: str | None, created_at: datetime | None) -> list[str]:
    """Every RowKey (pointer and counters aside) the activation holds in its current state."""
    order = order_key(notice_id, created_at)
    keys = [f"{STATUS_PREFIX}{status_part(status)}{order}"]
    if tenant := key_part(tenant_id):
        keys.append(f"{TENANT_PREFIX}{tenant}|{status_part(status)}{order}")
    if customer := customer_part(customer_name):
        keys.append(f"{CUSTOMER_PREFIX}{customer}|{notice_id}")
    if contract := key_part(contract_id):
        keys.append(f"{CONTRACT_PREFIX}{contract}|{notice_id}")
    return keys


@dataclass(frozen=True)
class IndexState:
    """What the index holds for one activation row: its keys, the listed fields they carry, and
    the pointer's `digest` (what a list shows). Which of two writes is the later is the row's to
    say, not a time stamp (see `store.sync_index`), so the pointer carries none."""

    notice_id: str
    status: str
    keys: list[str]
    payload: dict[str, Any]
    digest: str

    @classmethod
    def of(cls, entity: Mapping[str, Any]) -> IndexState:
        """The state for an activations-table entity (as `store.record_to_entity` builds it)."""
        notice_id = str(entity["PartitionKey"])
        payload = listed(entity)
        status = str(payload.get("status") or Status.QUEUED.value)
        created = payload.get("created_at")
        keys = row_keys(notice_id, status=status, tenant_id=payload.get("tenant_id"),
                        customer_name=payload.get("customer_name"), contract_id=payload.get("contract_id"),
                        created_at=created if isinstance(created, datetime) else None)
        return cls(notice_id, status, keys, payload, digest(payload))

    def rows(self) -> list[dict[str, Any]]:
        """Status rows carry the listed fields (a triage page is read from them alone); tenant
        and search rows only what orders and narrows their matches (`THIN_FIELDS`): a tenant has
        a handful of activations and a search a few matches, whose rows are then read whole."""
        thin = {k: self.payload[k] for k in THIN_FIELDS if k in self.payload}
        return [{"PartitionKey": INDEX_PARTITION, "RowKey": key, **(thin if is_thin(key) else self.payload)}
                for key in self.keys]

    def pointer(self) -> dict[str, Any]:
        return {"PartitionKey": INDEX_PARTITION, "RowKey": pointer_key(self.notice_id), "keys": json.dumps(self.keys),
                "status": self.status, "digest": self.digest}

    def shown_by(self, pointer: Mapping[str, Any] | None) -> bool:
        """Whether `pointer` says the index shows exactly this state already."""
        return pointer is not None and (pointer_keys(pointer), pointer.get("status"), pointer.get("digest")) == (
            self.keys, self.status, self.digest)


def is_thin(row_key: str) -> bool:
    """Whether an index row carries only `THIN_FIELDS` (tenant and search rows)."""
    return row_key.startswith((TENANT_PREFIX, CUSTOMER_PREFIX, CONTRACT_PREFIX))


def counter_key(notice_id: str) -> str:
    return f"{COUNTER_PREFIX}{zlib.crc32(notice_id.encode()) % COUNTER_SHARDS}"


def pointer_key(notice_id: str) -> str:
    return POINTER_PREFIX + notice_id


def pointer_keys(pointer: Mapping[str, Any] | None) -> list[str]:
    """The keys a pointer row says are held ([] for none, or for one that is not readable)."""
    if pointer is None:
        return []
    try:
        keys = json.loads(str(pointer.get("keys") or "[]"))
    except ValueError:
        return []
    return [k for k in keys if isinstance(k, str)] if isinstance(keys, list) else []


def counted(counter: Mapping[str, Any] | None, status: str) -> int:
    value = counter.get(status) if counter is not None else None
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


__all__ = ["COMPLETE_ROW", "CONTRACT_PREFIX", "COUNTER_PREFIX", "COUNTER_SHARDS", "CUSTOMER_PREFIX",
           "INDEX_NAMESPACE", "INDEX_PARTITION", "NOT_LISTED", "POINTER_PREFIX", "STATUS_PREFIX", "TENANT_PREFIX",
           "THIN_FIELDS", "TRIAGE_ORDER", "IndexState", "after_prefix", "counted", "counter_key", "customer_part",
           "digest", "is_thin", "key_part", "listed", "order_key", "pointer_key", "pointer_keys", "rank", "row_keys",
           "search_ranges", "status_part", "status_range", "tenant_range"]
