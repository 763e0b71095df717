"""The process-wide objects the triggers use, built once and lazily.

An import of `function_app` must stay cheap (the host imports it to index functions), and a
status look-up must not load MSAL: each object is built on first use and then reused by every
invocation in the process, which also reuses HTTP connections to Storage and Exchange.
"""

from __future__ import annotations

import logging
import threading
from functools import cache
from typing import TYPE_CHECKING

from . import telemetry
from .api import ActivationApi
from .queueing import ActivationQueue
from .settings import Settings
from .store import ActivationStore
from .worker import Worker

if TYPE_CHECKING:
    from .drift import DriftChecker
    from .provisioning import ProvisioningEngine

_lock = threading.Lock()


@cache
def settings() -> Settings:
    return Settings.from_env()


@cache
def store() -> ActivationStore:
    return ActivationStore.from_settings(settings())


@cache
def queue() -> ActivationQueue:
    return ActivationQueue.from_settings(settings())


def engine() -> ProvisioningEngine:
    """The provisioning engine; loads MSAL, requests and DNS only when a notice is processed."""
    from .auth import token_provider_from_settings
    from .provisioning import ProvisioningEngine

    return ProvisioningEngine(settings(), token_provider=token_provider_from_settings(settings()))


@cache
def monitoring() -> bool:
    """Export the product's logs to Application Insights, once, if a connection string is set.

    Done here, on the first invocation, rather than at import: the host imports function_app
    to index the functions, and the OpenTelemetry distro is heavy. Unset (local runs, tests),
    only the log context is installed and no telemetry SDK is imported.
    """
    configured = settings()  # a SettingsError here is the caller's to handle, not telemetry's
    try:
        return telemetry.configure(configured.applicationinsights_connection_string,
                                   managed_identity_client_id=configured.managed_identity_client_id)
    except ValueError as exc:
        # The distro refuses a damaged connection string. Provisioning does not depend on the
        # export, so a typo there must not stop every trigger: the logs stay with the host.
        logging.getLogger("activation.config").error(
            "APPLICATIONINSIGHTS_CONNECTION_STRING cannot be used (%s): logs are not exported to Application "
            "Insights; copy the connection string from the Application Insights resource again and restart", exc)
        return False


@cache
def worker() -> Worker:
    monitoring()
    return Worker(settings(), store=store(), queue=queue(), engine_factory=engine, drift_factory=drift)


@cache
def drift() -> DriftChecker:
    """The drift check, with Exchange clients built as a run builds them (loads MSAL on first use)."""
    from .drift import DriftChecker, client_factory_from_settings

    return DriftChecker(settings(), store=store(), worker=worker(),
                        client_factory=client_factory_from_settings(settings()))


@cache
def api() -> ActivationApi:
    monitoring()
    return ActivationApi(store(), worker, drift)


def reset() -> None:
    """Forget every object (tests and the local runner change settings between runs)."""
    with _lock:
        # Close the clients that were built, so their connection pools are not leaked.
        if store.cache_info().currsize:
            store().close()
        if queue.cache_info().currsize:
            queue().close()
        # monitoring stays: the exporter is process-wide and configured at most once.
        for built in (settings, store, queue, worker, drift, api):
            built.cache_clear()
