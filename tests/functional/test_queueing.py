"""ActivationQueue against a real Azurite, and the retry envelope it carries."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta

import pytest
from azure.storage.queue import QueueClient, QueueServiceClient

from shared.queueing import (
    MAX_VISIBILITY_DELAY_SECONDS,
    MESSAGE_ENCODING,
    ActivationQueue,
    ReceivedMessage,
    RetryEnvelope,
    message_text,
    parse_retry_envelope,
)
from tests.fixtures.azurite import StorageNames

JAPANESE_NOTICE = json.dumps(
    {
        "notice_id": "N-日本-1",
        "tenant_id": "11111111-2222-3333-4444-555555555555",
        "services": ["mailgates"],
        "customer_name": "株式会社サンプル 情報システム部",
        "mx_host": "mgf.cybermail.jp",
        "validation_recipient": "adm@example.co.jp",
    },
    ensure_ascii=False,
)


def _raw_client(storage: StorageNames, queue: str) -> QueueClient:
    """A queue client built the way any other tool would, with the SDK's defaults."""
    return QueueClient.from_connection_string(storage.connection_string, queue)


# ----------------------------------------------------------------- with Azurite


@pytest.mark.functional
def test_a_japanese_notice_round_trips_as_plain_text_without_base64(
    activation_queue: ActivationQueue, storage: StorageNames
) -> None:
    assert MESSAGE_ENCODING == "none"
    activation_queue.send_notice(JAPANESE_NOTICE)
    # what is on the wire (as the trigger with messageEncoding "none" sees it) is the JSON itself
    with _raw_client(storage, storage.queue) as raw:
        (peeked,) = raw.peek_messages()
    assert peeked.content == JAPANESE_NOTICE
    (received,) = activation_queue.receive()
    assert received.content == JAPANESE_NOTICE
    assert json.loads(received.content)["customer_name"] == "株式会社サンプル 情報システム部"
    assert received.dequeue_count == 1


@pytest.mark.functional
def test_a_notice_sent_as_bytes_arrives_as_its_utf8_text(activation_queue: ActivationQueue) -> None:
    activation_queue.send_notice(JAPANESE_NOTICE.encode("utf-8"))
    (received,) = activation_queue.receive()
    assert received.content == JAPANESE_NOTICE


@pytest.mark.functional
def test_a_message_written_by_another_tool_is_read_unchanged(
    activation_queue: ActivationQueue, storage: StorageNames
) -> None:
    with _raw_client(storage, storage.queue) as raw:
        raw.send_message('{"notice_id": "from-explorer", "note": "<&>"}')
    (received,) = activation_queue.receive()
    assert received.content == '{"notice_id": "from-explorer", "note": "<&>"}'


@pytest.mark.functional
def test_a_received_message_is_gone_once_deleted(activation_queue: ActivationQueue) -> None:
    activation_queue.send_notice("{}")
    (received,) = activation_queue.receive(visibility_timeout=60)
    activation_queue.delete(received)
    assert activation_queue.approximate_count() == 0  # the count includes invisible messages


@pytest.mark.functional
def test_a_retry_stays_invisible_until_its_delay_has_passed(activation_queue: ActivationQueue) -> None:
    before = datetime.now(UTC)
    sent = activation_queue.schedule_retry(
        {"kind": "activation-retry", "notice_id": "N-1", "series": 1, "attempt": 2}, delay_seconds=1.5
    )
    assert sent.next_visible_on is not None
    assert sent.next_visible_on >= before + timedelta(seconds=1)  # 1.5 s rounds up to 2 s
    assert activation_queue.receive() == []
    assert activation_queue.approximate_count() == 1
    deadline = time.monotonic() + 10
    received: list[ReceivedMessage] = []
    while not received and time.monotonic() < deadline:
        time.sleep(0.25)
        received = activation_queue.receive()
    assert received, "the retry never became visible"
    assert parse_retry_envelope(received[0].content) == RetryEnvelope("N-1", series=1, attempt=2)
    assert json.loads(received[0].content) == {
        "kind": "activation-retry", "notice_id": "N-1", "series": 1, "attempt": 2,
    }  # fmt: skip


@pytest.mark.functional
def test_a_retry_delay_beyond_seven_days_is_capped(activation_queue: ActivationQueue) -> None:
    before = datetime.now(UTC)
    sent = activation_queue.schedule_retry(RetryEnvelope("N-1", series=1, attempt=9), delay_seconds=30 * 86400)
    assert sent.next_visible_on is not None
    cap = before + timedelta(seconds=MAX_VISIBILITY_DELAY_SECONDS)
    assert cap - timedelta(seconds=5) <= sent.next_visible_on <= cap + timedelta(seconds=5)


@pytest.mark.functional
def test_enqueued_messages_never_expire(activation_queue: ActivationQueue) -> None:
    sent = activation_queue.send_notice("{}")
    assert sent.expires_on is not None
    assert sent.expires_on > datetime.now(UTC) + timedelta(days=365)


@pytest.mark.functional
def test_ensure_queues_creates_the_queue_and_its_poison_queue(storage: StorageNames) -> None:
    queue = ActivationQueue.from_connection_string(storage.connection_string, queue_name=storage.queue)
    queue.ensure_queues()
    queue.ensure_queues()  # idempotent
    with QueueServiceClient.from_connection_string(storage.connection_string) as service:
        names = {q.name for q in service.list_queues(name_starts_with=storage.queue)}
    assert names == {storage.queue, f"{storage.queue}-poison"}
    queue.poison.send_notice("not json at all")
    (poisoned,) = queue.poison.receive()
    assert poisoned.content == "not json at all"
    assert queue.approximate_count() == 0


# ----------------------------------------------------------------- pure: the envelope and the text


def test_a_notice_is_not_mistaken_for_a_retry_envelope() -> None:
    assert parse_retry_envelope(JAPANESE_NOTICE) is None
    assert parse_retry_envelope("not json") is None
    assert parse_retry_envelope(b"[1, 2]") is None
    assert parse_retry_envelope(b"\xff\xfe not utf-8") is None
    assert parse_retry_envelope('{"kind": ' + "[" * 20000 + "]" * 20000 + "}") is None  # too deep for json


def test_the_worker_reads_envelopes_with_the_same_parser() -> None:
    # One parser for production and tests: the worker module has no envelope parsing of its own.
    import shared.worker

    assert vars(shared.worker)["parse_retry_envelope"] is parse_retry_envelope
    assert not [name for name in vars(shared.worker) if "envelope" in name.lower() and name.startswith("_")]


def test_a_watchdog_envelope_round_trips_with_its_owner() -> None:
    envelope = RetryEnvelope("N-1", series=1, attempt=1, recheck_owner="host:1:ab12cd34")
    assert parse_retry_envelope(envelope.to_json()) == envelope


def test_a_malformed_retry_envelope_is_an_error_not_a_notice() -> None:
    with pytest.raises(ValueError, match="series"):
        parse_retry_envelope('{"kind": "activation-retry", "notice_id": "N-1", "attempt": 1}')
    with pytest.raises(ValueError, match="attempt"):
        parse_retry_envelope('{"kind": "activation-retry", "notice_id": "N-1", "series": 1, "attempt": true}')
    with pytest.raises(ValueError, match="notice_id"):
        parse_retry_envelope('{"kind": "activation-retry", "notice_id": "a/b", "series": 1, "attempt": 1}')


def test_an_envelope_from_a_newer_worker_with_extra_keys_still_parses() -> None:
    body = '{"kind": "activation-retry", "notice_id": "N-1", "series": 2, "attempt": 3, "reason": "THROTTLED"}'
    assert parse_retry_envelope(body) == RetryEnvelope("N-1", series=2, attempt=3)


def test_text_the_queue_cannot_carry_is_refused_before_sending() -> None:
    with pytest.raises(ValueError, match="UTF-8"):
        message_text(b"\xff\xfe")
    with pytest.raises(ValueError, match="U\\+0000"):
        message_text("a\x00b")
    with pytest.raises(ValueError, match="at most"):
        message_text("あ" * 30_000)
    with pytest.raises(ValueError, match="empty"):
        message_text("")
    assert message_text("改行\nタブ\t") == "改行\nタブ\t"
