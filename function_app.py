"""Azure Functions entry point: triggers only, each a doorway into `shared/`."""

from __future__ import annotations

import json

import azure.functions as func

app = func.FunctionApp(http_auth_level=func.AuthLevel.FUNCTION)


@app.route(route="health", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
def health(req: func.HttpRequest) -> func.HttpResponse:
    """Liveness for load balancers and `make run`; reveals nothing about tenants or settings."""
    return func.HttpResponse(json.dumps({"status": "ok"}), mimetype="application/json")
