"""Azure Functions entry point: triggers only, each a doorway into `shared/`.

Queue messages are plain UTF-8 JSON (host.json sets `"messageEncoding": "none"`), so the
contract system, `python -m shared submit` and the retry scheduler all send the same text.
Every HTTP route needs a function key except `GET /api/health`.
"""

from __future__ import annotations

import azure.functions as func

from shared import runtime
from shared.api import ApiResponse

app = func.FunctionApp(http_auth_level=func.AuthLevel.FUNCTION)


@app.queue_trigger(arg_name="msg", queue_name="%ACTIVATION_QUEUE%", connection="AzureWebJobsStorage")
def provision_activation(msg: func.QueueMessage) -> None:
    """Provision one activation notice; transient failures re-enqueue themselves."""
    runtime.worker().handle(msg.get_body(), dequeue_count=msg.dequeue_count or 1)


@app.queue_trigger(arg_name="msg", queue_name="%ACTIVATION_QUEUE%-poison", connection="AzureWebJobsStorage")
def record_poisoned_activation(msg: func.QueueMessage) -> None:
    """Record a message the host gave up on, keeping it whole; never fails (see Worker.handle_poison)."""
    runtime.worker().handle_poison(msg.get_body(), dequeue_count=msg.dequeue_count)


@app.route(route="activations", methods=["POST"])
def submit_activation(req: func.HttpRequest) -> func.HttpResponse:
    """Validate a notice and queue it: 202 with Location, or 400 naming every bad field."""
    return _http(runtime.api().submit(req.get_body()))


@app.route(route="activations", methods=["GET"])
def list_activations(req: func.HttpRequest) -> func.HttpResponse:
    """List activations by status and tenant, paged with a continuation token."""
    return _http(runtime.api().list(dict(req.params)))


@app.route(route="activations/{notice_id}", methods=["GET"])
def get_activation(req: func.HttpRequest) -> func.HttpResponse:
    """The status of one activation, with its connectors, error and history."""
    return _http(runtime.api().get(req.route_params["notice_id"]))


@app.route(route="activations/{notice_id}/retry", methods=["POST"])
def retry_activation(req: func.HttpRequest) -> func.HttpResponse:
    """Start a fresh series of attempts for an activation (409 while it runs)."""
    return _http(runtime.api().retry(req.route_params["notice_id"]))


@app.route(route="status", methods=["GET"])
def status_page(req: func.HttpRequest) -> func.HttpResponse:
    """The operators' status page: static HTML whose script calls the routes above with the same key.

    Function-level like the API, so the page is as private as the data it shows; the CSP and
    the other security headers come with the page from `shared.page`.
    """
    from shared.page import load_status_page

    page = load_status_page()
    return func.HttpResponse(page.body, status_code=200, headers=dict(page.headers), mimetype=page.mimetype,
                             charset=page.charset)


@app.route(route="health", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
def health(req: func.HttpRequest) -> func.HttpResponse:
    """Liveness for load balancers and `make run`; reveals nothing about tenants or settings."""
    return _http(ApiResponse(200, {"status": "ok"}))


def _http(response: ApiResponse) -> func.HttpResponse:
    return func.HttpResponse(response.json(), status_code=response.status, headers=response.headers,
                             mimetype="application/json", charset="utf-8")
