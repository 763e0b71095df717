"""Telemetry: the activation context on every record, and no telemetry SDK unless it is configured."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import textwrap
from pathlib import Path

from shared import telemetry
from shared.outcome import Event

ROOT = Path(__file__).resolve().parents[2]
# Storage clients are built but never called: endpoints on a closed local port (Azurite's
# published development account name; the key is a placeholder, not Azurite's).
NOWHERE = ("DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=a2V5;"
           "TableEndpoint=http://127.0.0.1:9/devstoreaccount1;QueueEndpoint=http://127.0.0.1:9/devstoreaccount1")


class Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []
        telemetry.install_log_context(self)

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def collecting(name: str = telemetry.EXPORTED_LOGGER) -> tuple[logging.Logger, Collect]:
    """A handler on the exported logger, as the exporter's; records of `activation.*` reach it."""
    logger = logging.getLogger(name)
    handler = Collect()
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    return logger, handler


def test_inside_a_scope_any_record_carries_the_activation() -> None:
    exported, handler = collecting()
    logger = logging.getLogger("activation.worker")
    try:
        with telemetry.activation_scope("ACT-1", "t-1", attempt=3):
            logger.info("calling Exchange")
            telemetry.record_step(Event("exchange.call", "Get-OutboundConnector -> 200", duration_ms=12.5))
            logger.info("after the step")
        logger.info("outside")
    finally:
        exported.removeHandler(handler)
    inside, step, after, outside = handler.records[0], handler.records[1], handler.records[2], handler.records[3]
    assert (inside.notice_id, inside.tenant_id, inside.attempt) == ("ACT-1", "t-1", 3)  # type: ignore[attr-defined]
    assert (step.step, step.duration_ms, step.event) == ("exchange.call", 12.5, telemetry.STEP_EVENT)  # type: ignore[attr-defined]
    assert after.step == "exchange.call"  # type: ignore[attr-defined]  # the step the activation is at
    assert not hasattr(outside, "notice_id")


def test_a_scope_inside_a_scope_of_the_same_activation_keeps_what_it_does_not_set() -> None:
    exported, handler = collecting()
    logger = logging.getLogger("activation.worker")
    try:
        with telemetry.activation_scope("ACT-1", "t-1", attempt=2, step="run"):
            with telemetry.activation_scope("ACT-1", step="heartbeat"):
                logger.warning("could not renew")
            with telemetry.activation_scope("ACT-2"):  # another activation inherits nothing
                logger.info("other")
            logger.info("back in the run")
    finally:
        exported.removeHandler(handler)
    beat, other, run = handler.records
    assert (beat.notice_id, beat.tenant_id, beat.attempt, beat.step) == ("ACT-1", "t-1", 2, "heartbeat")  # type: ignore[attr-defined]
    assert other.notice_id == "ACT-2" and not hasattr(other, "tenant_id") and not hasattr(other, "attempt")  # type: ignore[attr-defined]
    assert run.step == "run"  # type: ignore[attr-defined]


def test_refine_adds_what_a_scope_learned_and_every_record_has_a_duration() -> None:
    exported, handler = collecting()
    logger = logging.getLogger("activation.worker")
    try:
        with telemetry.activation_scope("ACT-1"):
            logger.info("before the row was read")
            telemetry.refine(tenant_id="t-1", attempt=4, step="claim")
            logger.info("after")
        telemetry.refine(tenant_id="t-x")  # outside a scope: nothing to refine, no error
    finally:
        exported.removeHandler(handler)
    before, after = handler.records
    assert not hasattr(before, "tenant_id") and not hasattr(before, "step")  # unknown yet: left off
    assert (after.tenant_id, after.attempt, after.step) == ("t-1", 4, "claim")  # type: ignore[attr-defined]
    assert all(isinstance(r.duration_ms, float) and r.duration_ms >= 0 for r in handler.records)  # type: ignore[attr-defined]


def test_a_record_that_names_its_own_fields_keeps_them() -> None:
    # The context must never make `extra=` raise (a record factory setting these would).
    logger, handler = collecting()
    try:
        with telemetry.activation_scope("ACT-1", "t-1", attempt=1):
            logger.info("other", extra={"notice_id": "ACT-2", "step": "custom"})
    finally:
        logger.removeHandler(handler)
    assert (handler.records[0].notice_id, handler.records[0].step) == ("ACT-2", "custom")  # type: ignore[attr-defined]
    assert handler.records[0].tenant_id == "t-1"  # type: ignore[attr-defined]


def test_an_outcome_is_one_record_with_the_dimensions_the_alert_splits_by() -> None:
    logger, handler = collecting()
    try:
        telemetry.record_outcome(notice_id="ACT-9", tenant_id="t-9", status="failed", code="TENANT_NOT_FOUND",
                                 attempt=2, duration_ms=40.0)
    finally:
        logger.removeHandler(handler)
    [record] = handler.records
    assert record.levelno == logging.WARNING
    assert {k: getattr(record, k) for k in ("event", "status", "code", "notice_id", "tenant_id", "attempt",
                                            "step", "duration_ms")} == {
        "event": telemetry.OUTCOME_EVENT, "status": "failed", "code": "TENANT_NOT_FOUND", "notice_id": "ACT-9",
        "tenant_id": "t-9", "attempt": 2, "step": "outcome", "duration_ms": 40.0}


def run_python(code: str, **env: str) -> dict[str, object]:
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=ROOT, capture_output=True, text=True,
                            timeout=120, env={"PATH": "/usr/bin:/bin", **env}, check=False)
    assert result.returncode == 0, result.stderr
    return dict(json.loads(result.stdout.strip().splitlines()[-1]))


def test_without_a_connection_string_no_telemetry_sdk_is_imported() -> None:
    out = run_python("""
        import json, sys
        from shared import runtime
        import function_app
        runtime.api()  # what the first HTTP call builds
        sdk = sorted(m for m in sys.modules if m.startswith(("opentelemetry", "azure.monitor")))
        print(json.dumps({"configured": runtime.monitoring(), "loaded": sdk}))
    """, AzureWebJobsStorage=NOWHERE)
    assert out == {"configured": False, "loaded": []}


def test_with_a_connection_string_the_products_records_go_to_the_azure_monitor_exporter() -> None:
    # A credential that is never asked for a token here (nothing is flushed), and an ingestion
    # endpoint on a closed local port, so the test sends nothing anywhere.
    out = run_python("""
        import json, logging
        from shared import telemetry
        class NoToken:
            def get_token(self, *scopes, **kwargs):
                raise RuntimeError("not in this test")
        conn = ("InstrumentationKey=00000000-0000-0000-0000-000000000000;"
                "IngestionEndpoint=http://127.0.0.1:9/")
        assert telemetry.configure(conn, credential=NoToken())
        assert telemetry.configure(conn, credential=NoToken())  # once per process
        handlers = logging.getLogger(telemetry.EXPORTED_LOGGER).handlers
        print(json.dumps({"handlers": [type(h).__module__ + "." + type(h).__name__ for h in handlers],
                          "context": [any(isinstance(f, telemetry.ActivationContextFilter) for f in h.filters)
                                      for h in handlers],
                          "root": len(logging.getLogger().handlers)}))
        logging.shutdown()
    """)
    assert len(out["handlers"]) == 1  # type: ignore[arg-type]
    assert "opentelemetry" in out["handlers"][0]  # type: ignore[index]
    assert out["context"] == [True]
    assert out["root"] == 0  # only the product's logger is exported, not every library's


def test_importing_function_app_loads_no_more_than_a_status_request_needs() -> None:
    # The host imports function_app to index the functions; that import may not pull in what no
    # request uses (the telemetry distro above all), even with the connection string set.
    code = """
        import json, sys
        base = set(sys.modules)
        import function_app
        imported = set(sys.modules) - base
        import azure.functions as func
        try:  # a status look-up; storage is on a closed port, so it fails after building its request
            function_app.get_activation(func.HttpRequest("GET", "http://x/api/activations/A", body=b"",
                                                         route_params={"notice_id": "A"}))
        except Exception:
            pass
        requested = set(sys.modules) - base
        third = lambda mods: [m for m in mods if m.split(".")[0] not in sys.stdlib_module_names
                              and not m.startswith(("shared", "function_app", "_"))]
        print(json.dumps({"import": len(third(imported)), "request": len(third(requested)),
                          "otel_at_import": sorted(m for m in imported if m.startswith("opentelemetry"))}))
    """
    for extra in ({}, {"APPLICATIONINSIGHTS_CONNECTION_STRING": "InstrumentationKey=00000000-0000-0000-0000-"
                                                                 "000000000000;IngestionEndpoint=http://127.0.0.1:9/"}):
        out = run_python(code, AzureWebJobsStorage=NOWHERE, **extra)
        assert out["otel_at_import"] == []
        assert int(out["import"]) <= 1.3 * int(out["request"]), out  # type: ignore[call-overload]
