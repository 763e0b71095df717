"""host.json, read the way the Functions host reads it, for the local runner.

The queue behaviour an operator tunes in host.json (how many notices run at once, how soon a
failed one is tried again, when it is given up to the poison queue) decides how the product
behaves under load and failure. The local runner must therefore take those numbers from the
very file that is deployed, with the host's defaults for anything left out, or a local run
would show retry and poison behaviour that Azure never has.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

MessageEncoding = Literal["base64", "none"]

# The Functions host's defaults (Microsoft.Azure.WebJobs.Extensions.Storage.Queues, QueuesOptions).
DEFAULT_BATCH_SIZE = 16
DEFAULT_MAX_DEQUEUE_COUNT = 5
DEFAULT_MAX_POLLING_INTERVAL = 60.0
DEFAULT_VISIBILITY_TIMEOUT = 0.0
DEFAULT_MESSAGE_ENCODING: MessageEncoding = "base64"
DEFAULT_ROUTE_PREFIX = "api"
MAX_BATCH_SIZE = 32  # the queue service hands out at most 32 messages per request
MIN_POLLING_INTERVAL = 0.1  # the host never polls an idle queue more often than this

# "d.hh:mm:ss.fffffff", "hh:mm:ss" or "hh:mm:ss.fff", as .NET writes a TimeSpan.
_TIMESPAN = re.compile(r"(?:(?P<days>\d+)\.)?(?P<h>\d{1,2}):(?P<m>\d{1,2}):(?P<s>\d{1,2}(?:\.\d{1,7})?)")


class HostConfigError(ValueError):
    """host.json, or a setting a binding names, cannot be used; the message says where."""


def parse_timespan(value: object, *, where: str) -> float:
    """Seconds of a host.json TimeSpan ("00:00:30"); a bare number is milliseconds, as in host.json v1."""
    if isinstance(value, bool):
        raise HostConfigError(f"{where}: expected a TimeSpan such as \"00:00:30\", got {value!r}")
    if isinstance(value, int | float):
        if value < 0:
            raise HostConfigError(f"{where}: must not be negative")
        return float(value) / 1000.0
    if isinstance(value, str):
        match = _TIMESPAN.fullmatch(value.strip())
        if match is not None:
            days = int(match["days"] or 0)
            return days * 86400 + int(match["h"]) * 3600 + int(match["m"]) * 60 + float(match["s"])
    raise HostConfigError(f"{where}: expected a TimeSpan such as \"00:00:30\", got {value!r}")


@dataclass(frozen=True)
class QueueOptions:
    """`extensions.queues` of host.json, with the host's defaults filled in."""

    batch_size: int = DEFAULT_BATCH_SIZE
    new_batch_threshold: int = DEFAULT_BATCH_SIZE // 2
    max_polling_interval: float = DEFAULT_MAX_POLLING_INTERVAL
    visibility_timeout: float = DEFAULT_VISIBILITY_TIMEOUT
    max_dequeue_count: int = DEFAULT_MAX_DEQUEUE_COUNT
    message_encoding: MessageEncoding = DEFAULT_MESSAGE_ENCODING

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> QueueOptions:
        where = "host.json extensions.queues"
        batch_size = _int(raw, "batchSize", DEFAULT_BATCH_SIZE, where, minimum=1, maximum=MAX_BATCH_SIZE)
        threshold = _int(raw, "newBatchThreshold", batch_size // 2, where, minimum=0)
        max_dequeue = _int(raw, "maxDequeueCount", DEFAULT_MAX_DEQUEUE_COUNT, where, minimum=1)
        polling = max(MIN_POLLING_INTERVAL, parse_timespan(
            raw.get("maxPollingInterval", "00:01:00"), where=f"{where}.maxPollingInterval"))
        visibility = parse_timespan(raw.get("visibilityTimeout", "00:00:00"), where=f"{where}.visibilityTimeout")
        encoding = str(raw.get("messageEncoding", DEFAULT_MESSAGE_ENCODING)).lower()
        if encoding not in ("base64", "none"):
            raise HostConfigError(f"{where}.messageEncoding: use \"base64\" or \"none\", got {encoding!r}")
        return cls(
            batch_size=batch_size,
            new_batch_threshold=threshold,
            max_polling_interval=polling,
            visibility_timeout=visibility,
            max_dequeue_count=max_dequeue,
            message_encoding="none" if encoding == "none" else "base64",
        )


@dataclass(frozen=True)
class HostConfig:
    """What the local runner honours of host.json."""

    queues: QueueOptions = QueueOptions()
    route_prefix: str = DEFAULT_ROUTE_PREFIX
    # Read and checked, not enforced: a Python thread cannot be stopped from outside, and a local
    # run that outlives Azure's limit shows up in the duration the host logs for every invocation.
    function_timeout: float | None = None

    @classmethod
    def from_file(cls, path: Path) -> HostConfig:
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise HostConfigError(f"cannot read {path}: {exc}") from exc
        if not isinstance(raw, dict):
            raise HostConfigError(f"{path}: the top level must be a JSON object")
        return cls.from_dict(raw)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> HostConfig:
        extensions = _object(raw, "extensions", "host.json")
        queues = QueueOptions.from_dict(_object(extensions, "queues", "host.json extensions"))
        http = _object(extensions, "http", "host.json extensions")
        prefix = http.get("routePrefix", DEFAULT_ROUTE_PREFIX)
        if not isinstance(prefix, str):
            raise HostConfigError("host.json extensions.http.routePrefix must be a string")
        timeout = raw.get("functionTimeout")
        return cls(
            queues=queues,
            route_prefix=prefix.strip("/"),
            function_timeout=None if timeout is None else parse_timespan(timeout, where="host.json functionTimeout"),
        )


def _object(raw: dict[str, Any], key: str, where: str) -> dict[str, Any]:
    value = raw.get(key, {})
    if not isinstance(value, dict):
        raise HostConfigError(f"{where}.{key} must be a JSON object")
    return value


def _int(raw: dict[str, Any], key: str, default: int, where: str, *, minimum: int, maximum: int | None = None) -> int:
    value = raw.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum or (
            maximum is not None and value > maximum):
        bound = f"{minimum}-{maximum}" if maximum is not None else f">= {minimum}"
        raise HostConfigError(f"{where}.{key} must be an integer {bound}, got {value!r}")
    return int(value)
