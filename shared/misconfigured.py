"""What the queue triggers do with a message when the product's settings do not load.

A broken setting (`LEASE_SECONDS=abc`, `SPF_POLICY=strict`, `HEARTBEAT_SECONDS` above a third
of the lease...) stops `runtime.worker()` with a SettingsError naming the variable and the fix.
Raising that from a trigger would make the Functions host redeliver the message five times and
then poison it, and the poison trigger, failing the same way, would push it on to
`<queue>-poison-poison`, which nothing reads: a configuration mistake would turn every
activation that arrives into poison. So a trigger that cannot load its settings does this
instead, with the storage settings alone (`Settings.from_env(only=...)`), which are all it
needs and which the host itself has just used to deliver the message:

* the message goes back on the queue it came from, unchanged, visible again after
  CONFIG_WAIT_SECONDS (a new message, so its dequeue count starts again and it is never
  poisoned for this). Once the setting is fixed and the app restarted, it is handled as if it
  had just arrived: nothing is lost and no operator has to resubmit it;
* it is recorded through the lifecycle (`Misconfigured`): a notice never seen before gets a
  `needs_attention` / `CONFIG_INVALID` placeholder row naming the setting and the fix (the
  notice's own record replaces it once it can be read); an activation that exists gets a
  `config.invalid` event and keeps its record, since a broken setting says nothing about its
  run. One ERROR log line with the activation's context names the setting too.

The message is put back before anything is recorded, so a failure to record (tables
misnamed, storage refusing) loses nothing; it is logged and the message still waits. If it
cannot be put back (storage unreachable at that moment), the trigger fails as it would for any
storage outage, and the host still holds the message it delivered.

If the queue itself cannot be configured (a storage variable is the broken one, or
`UseDevelopmentStorage=true`, which the host understands and the Python SDK does not), the
product has no way to keep the message: it logs one line naming the setting and raises
StorageNotConfigured, so that the host keeps it (visible again after host.json's
visibilityTimeout, and in the end on the next poison queue, still in the storage account).
Returning normally would delete the host's only copy. This is the one case where the poison
trigger raises: it is the only way left to lose nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import NoReturn

from . import telemetry
from .lifecycle import Result
from .queueing import ActivationQueue
from .settings import QUEUE_SETTINGS, STORAGE_SETTINGS, Settings, SettingsError
from .store import ActivationStore
from .text import clean, decode_body
from .worker import Worker, message_activation

log = logging.getLogger("activation.config")

# How long a message waits on its queue for a fixed setting before it is looked at again. Long
# enough that a broken app does not spin on its messages, short enough that a fix takes effect
# within minutes of the restart.
CONFIG_WAIT_SECONDS = 300.0


class StorageNotConfigured(Exception):
    """The product cannot reach the queue the message came from: the host must keep it."""


def keep_activation_message(body: bytes | str, problem: SettingsError, *,
                            environ: Mapping[str, str] | None = None) -> Result:
    """The activation queue trigger's fallback: back on the queue for later, and recorded."""
    return _keep(body, problem, poison=False, environ=environ)


def keep_poisoned_message(body: bytes | str, problem: SettingsError, *,
                          environ: Mapping[str, str] | None = None) -> Result:
    """The poison trigger's fallback: back on the poison queue for later, and recorded."""
    return _keep(body, problem, poison=True, environ=environ)


def _keep(body: bytes | str, problem: SettingsError, *, poison: bool,
          environ: Mapping[str, str] | None) -> Result:
    notice_id, tenant, attempt = message_activation(decode_body(body), poison=poison)
    with telemetry.activation_scope(notice_id, tenant, attempt=attempt, step="config"):
        return _keep_in_scope(body, problem, poison=poison, environ=environ)


def _keep_in_scope(body: bytes | str, problem: SettingsError, *, poison: bool,
                   environ: Mapping[str, str] | None) -> Result:
    try:
        queue_settings = Settings.from_env(environ, only=QUEUE_SETTINGS)
        queue = ActivationQueue.from_settings(queue_settings)
    except SettingsError as exc:
        log.error("the settings are invalid (%s) and the activation queue cannot be reached either (%s): "
                  "the message is left to the Functions host; fix both settings and restart the Function App",
                  problem, exc)
        raise StorageNotConfigured(str(exc)) from exc
    try:
        target = queue.poison if poison else queue
        _requeue(target, body)
        _record(body, problem, poison=poison, queue=queue, environ=environ)
    finally:
        queue.close()
    return Result.MISCONFIGURED


def _requeue(queue: ActivationQueue, body: bytes | str) -> None:
    """The message as it came, or as cleaned text if the queue cannot carry its exact bytes."""
    try:
        queue.send_notice(body, delay_seconds=CONFIG_WAIT_SECONDS)
    except ValueError:  # not text the queue service carries (the host delivered it as bytes)
        queue.send_notice(clean(decode_body(body)) or "(empty message)", delay_seconds=CONFIG_WAIT_SECONDS)


def _record(body: bytes | str, problem: SettingsError, *, poison: bool, queue: ActivationQueue,
            environ: Mapping[str, str] | None) -> None:
    """The Misconfigured record or event; best effort, since the message is already kept."""
    try:
        storage = Settings.from_env(environ, only=STORAGE_SETTINGS)
        store = ActivationStore.from_settings(storage)
    except SettingsError as exc:
        log.error("the settings are invalid (%s); the message waits on its queue, but cannot be recorded: %s",
                  problem, exc)
        return
    try:
        worker = Worker(storage, store=store, queue=queue, engine_factory=_no_engine)
        worker.record_misconfigured(body, str(problem), poison=poison)
    except Exception:
        log.exception("the settings are invalid (%s); the message waits on its queue, but recording it failed",
                      problem)
    finally:
        store.close()


def _no_engine() -> NoReturn:
    raise AssertionError("no activation runs while the settings are invalid")
