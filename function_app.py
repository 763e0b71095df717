"""Azure Functions entry point: triggers only, each a doorway into `shared/`.

Queue messages are plain UTF-8 JSON (host.json sets `"messageEncoding": "none"`), so the
contract system, `python -m shared submit` and the retry scheduler all send the same text.

HTTP access (OPERATOR_AUTH): with `key` (local runs, Core Tools) every route needs a function
key except `GET /api/health` and the status page's shell (`GET /api/status`, static HTML with
no data in it). With `entra` (Azure, set by the Bicep) App Service Authentication makes
operators sign in with Entra ID before a request reaches the host, so the operators' routes and
the status page are anonymous to the host and refuse a call without the platform's principal
headers; automation keeps its function key on `POST /api/automation/activations`, which sign-in
leaves alone. Easy Auth in front of anonymous functions is the pattern the Functions host itself
describes (Azure/azure-functions-host#11394).
"""

from __future__ import annotations

import azure.functions as func

from shared import misconfigured, requester, runtime, telemetry
from shared.api import ApiResponse
from shared.settings import Settings, SettingsError

app = func.FunctionApp(http_auth_level=func.AuthLevel.FUNCTION)


def _operator_auth(*, cached: bool = True) -> str:
    try:
        return (runtime.settings() if cached else Settings.from_env()).operator_auth
    except SettingsError:
        return "key"  # the stricter host level; the bad setting is reported by the first call


# Read while the host indexes the functions (the auth level is part of each function's
# metadata), without building the process-wide settings before the first invocation.
OPERATOR_LEVEL = func.AuthLevel.ANONYMOUS if _operator_auth(cached=False) == "entra" else func.AuthLevel.FUNCTION
SIGN_IN_REQUIRED = ApiResponse(401, {"error": {"code": "SIGN_IN_REQUIRED", "message": (
    "sign in with Microsoft Entra ID (App Service Authentication), or use a function key on "
    "/api/automation/activations")}})


@app.queue_trigger(arg_name="msg", queue_name="%ACTIVATION_QUEUE%", connection="AzureWebJobsStorage")
def provision_activation(msg: func.QueueMessage) -> None:
    """Provision one activation notice; transient failures re-enqueue themselves.

    With settings that do not load, the message waits on the queue and is recorded as
    CONFIG_INVALID instead of failing into the poison queue (see shared/misconfigured.py).
    """
    try:
        worker = runtime.worker()
    except SettingsError as exc:
        misconfigured.keep_activation_message(msg.get_body(), exc)
        return
    worker.handle(msg.get_body(), dequeue_count=msg.dequeue_count or 1)


@app.queue_trigger(arg_name="msg", queue_name="%ACTIVATION_QUEUE%-poison", connection="AzureWebJobsStorage")
def record_poisoned_activation(msg: func.QueueMessage) -> None:
    """Record a message the host gave up on, keeping it whole; never fails (see Worker.handle_poison).

    With settings that do not load, the copy waits on the poison queue and is recorded as
    CONFIG_INVALID (see shared/misconfigured.py for the one case that still raises).
    """
    try:
        worker = runtime.worker()
    except SettingsError as exc:
        misconfigured.keep_poisoned_message(msg.get_body(), exc)
        return
    worker.handle_poison(msg.get_body(), dequeue_count=msg.dequeue_count)


@app.timer_trigger(arg_name="timer", schedule="0 */5 * * * *", run_on_startup=False)
def measure_poison_queue(timer: func.TimerRequest) -> None:
    """Log the poison queue's depth every 5 minutes: it stays above 0 only when nobody records it."""
    runtime.monitoring()
    poison = runtime.queue().poison
    telemetry.record_poison_depth(queue=poison.name, depth=poison.approximate_count())


@app.timer_trigger(arg_name="timer", schedule="%DRIFT_SCHEDULE%", run_on_startup=False)
def check_drift(timer: func.TimerRequest) -> None:
    """Queue a drift check of every tenant with a succeeded activation on DRIFT_SCHEDULE (one message each).

    The host resolves `%DRIFT_SCHEDULE%` from the app setting of that name (Timer trigger docs,
    "schedule": an app setting name wrapped in % signs), so the Bicep always sets it.
    """
    runtime.monitoring()
    runtime.drift().fan_out(requested_by="drift schedule")  # one queue message per tenant


@app.route(route="drift", methods=["POST"], auth_level=OPERATOR_LEVEL)
def check_drift_now(req: func.HttpRequest) -> func.HttpResponse:
    """Run the drift check now (optional body {"tenant_id"} or {"notice_id"}); 202 with the findings."""
    who = _requester(req)
    if who is None:
        return _http(SIGN_IN_REQUIRED)
    return _http(runtime.api().drift(req.get_body(), requested_by=who.name))


@app.route(route="activations", methods=["POST"], auth_level=OPERATOR_LEVEL)
def submit_activation(req: func.HttpRequest) -> func.HttpResponse:
    """Validate a notice and queue it: 202 with Location, or 400 naming every bad field."""
    who = _requester(req)
    if who is None:
        return _http(SIGN_IN_REQUIRED)
    return _http(runtime.api().submit(req.get_body(), requested_by=who.name))


@app.route(route="automation/activations", methods=["POST"])
def submit_activation_with_key(req: func.HttpRequest) -> func.HttpResponse:
    """The same submit for automation, always behind a function key (no sign-in in front of it)."""
    return _http(runtime.api().submit(req.get_body(), base_path="/api/activations",
                                      requested_by=requester.FUNCTION_KEY))


@app.route(route="activations", methods=["GET"], auth_level=OPERATOR_LEVEL)
def list_activations(req: func.HttpRequest) -> func.HttpResponse:
    """List activations by status and tenant, paged with a continuation token."""
    if _requester(req) is None:
        return _http(SIGN_IN_REQUIRED)
    return _http(runtime.api().list(dict(req.params)))


@app.route(route="summary", methods=["GET"], auth_level=OPERATOR_LEVEL)
def summary(req: func.HttpRequest) -> func.HttpResponse:
    """Activations per status (`counts`, `total`, `exact`), read from counters, not the table."""
    if _requester(req) is None:
        return _http(SIGN_IN_REQUIRED)
    return _http(runtime.api().summary())


@app.route(route="activations/{notice_id}", methods=["GET"], auth_level=OPERATOR_LEVEL)
def get_activation(req: func.HttpRequest) -> func.HttpResponse:
    """The status of one activation, with its connectors, error and history."""
    if _requester(req) is None:
        return _http(SIGN_IN_REQUIRED)
    return _http(runtime.api().get(req.route_params["notice_id"]))


@app.route(route="activations/{notice_id}/retry", methods=["POST"], auth_level=OPERATOR_LEVEL)
def retry_activation(req: func.HttpRequest) -> func.HttpResponse:
    """Start a fresh series of attempts for an activation (409 while it runs)."""
    who = _requester(req)
    if who is None:
        return _http(SIGN_IN_REQUIRED)
    return _http(runtime.api().retry(req.route_params["notice_id"], requested_by=who.name))


@app.route(route="status", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
def status_page(req: func.HttpRequest) -> func.HttpResponse:
    """The operators' status page: static HTML whose script calls the routes above with the key.

    Anonymous, because the page is only a shell: the same bytes for everyone, no activation,
    tenant or setting in it. Every piece of data comes from the function-level routes above,
    which refuse a request without the key. A key-protected shell would give 401 on every
    reload and bookmark once the page has (rightly) dropped `?code=` from the address bar;
    anonymous, it loads, takes the key the operator gave this tab, or asks for one. With
    OPERATOR_AUTH=entra the shell, like the data, is served only to a signed-in operator. The
    CSP and the other security headers come with the page from `shared.page`.
    """
    from shared.page import load_status_page

    if _requester(req) is None:
        return _http(SIGN_IN_REQUIRED)
    page = load_status_page()
    return func.HttpResponse(page.body, status_code=200, headers=dict(page.headers), mimetype=page.mimetype,
                             charset=page.charset)


@app.route(route="health", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
def health(req: func.HttpRequest) -> func.HttpResponse:
    """Liveness for load balancers and `make run`; reveals nothing about tenants or settings."""
    return _http(ApiResponse(200, {"status": "ok"}))


def _requester(req: func.HttpRequest) -> requester.Requester | None:
    """Who asked, or None when an operators' route is called without signing in."""
    mode = _operator_auth()
    headers = dict(req.headers)
    if not requester.signed_in(headers, operator_auth=mode):
        return None
    return requester.identify(headers, operator_auth=mode)


def _http(response: ApiResponse) -> func.HttpResponse:
    return func.HttpResponse(response.json(), status_code=response.status, headers=response.headers,
                             mimetype="application/json", charset="utf-8")
