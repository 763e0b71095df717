"""Error bodies of the Exchange admin API, and the failures a test can inject.

Exchange Online reports the same kind of failure in several body shapes (see
docs/exchange-protocol.md, "Errors"), and the product has to find the useful text in each:

* ``inner``: ``error.innererror.internalexception.message`` plus a ``details`` entry
  (what a cmdlet failure such as "not found" usually looks like),
* ``details``: only ``error.details[0].message`` as ``|Exception.Type|text``,
* ``details-json``: only ``error.details[0].message`` as a JSON string
  ``{"Message": ..., "TypeName": ...}``,
* ``message``: only ``error.message`` (gateways, throttling).

Every fault can be rendered in any shape so that a client's parser is exercised on all of them;
``throttle_text`` is the exception, plain text as the front door sends it.
The catalogue of faults mirrors the transient and permission failures the product must classify
(DESIGN.md, "Exchange Online facts"): throttling with and without ``Retry-After``, 503, the
``TransientException`` 400, the "maximum number of concurrent requests" text, a missing
Exchange role as 401, and as a 403 whose body is NUL bytes under a false gzip header.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Literal, cast

Shape = Literal["inner", "details", "details-json", "message"]
SHAPES: tuple[Shape, ...] = ("inner", "details", "details-json", "message")

Target = Literal["invoke", "token"]

# Outer `error.message` of a cmdlet failure: Exchange always says this, whatever went wrong,
# which is exactly why the product must dig for the inner text.
CMDLET_ERROR_MESSAGE = "Error executing cmdlet"

_STATUS_CODES = {
    400: "BadRequest",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    408: "RequestTimeout",
    429: "TooManyRequests",
    500: "InternalServerError",
    502: "BadGateway",
    503: "ServiceUnavailable",
    504: "GatewayTimeout",
}


def status_code_name(status: int) -> str:
    return _STATUS_CODES.get(status, "Error")


@dataclass(frozen=True)
class HttpReply:
    """A finished HTTP response, independent of the server that sends it."""

    status: int
    body: bytes = b""
    headers: tuple[tuple[str, str], ...] = ()
    # Close the connection without sending anything: what a dropped connection looks like.
    disconnect: bool = False

    @staticmethod
    def json(status: int, payload: object, headers: tuple[tuple[str, str], ...] = ()) -> HttpReply:
        body = json.dumps(payload, ensure_ascii=False).encode("utf-8")
        return HttpReply(status, body, (("Content-Type", "application/json; charset=utf-8"), *headers))


def error_payload(shape: Shape, status: int, type_name: str, message: str) -> dict[str, Any]:
    """The JSON error body of the admin API in one of its shapes."""
    code = status_code_name(status)
    if shape == "inner":
        return {
            "error": {
                "code": code,
                "message": CMDLET_ERROR_MESSAGE,
                "details": [{"code": "Context", "target": "", "message": f"|{type_name}|{message}"}],
                "innererror": {
                    "message": CMDLET_ERROR_MESSAGE,
                    "type": "Microsoft.Exchange.Admin.OData.Core.ODataServiceException",
                    "stacktrace": "",
                    "internalexception": {"message": message, "type": type_name, "stacktrace": ""},
                },
                "adminapi.warnings@odata.type": "#Collection(String)",
                "@adminapi.warnings": [],
            }
        }
    if shape == "details":
        return {
            "error": {
                "code": code,
                "message": CMDLET_ERROR_MESSAGE,
                "details": [{"code": "Context", "target": "", "message": f"|{type_name}|{message}"}],
            }
        }
    if shape == "details-json":
        detail = json.dumps({"Message": message, "TypeName": type_name}, ensure_ascii=False)
        return {
            "error": {
                "code": code,
                "message": CMDLET_ERROR_MESSAGE,
                "details": [{"code": "Context", "target": "", "message": detail}],
            }
        }
    return {"error": {"code": code, "message": message}}


def error_reply(
    shape: Shape,
    status: int,
    type_name: str,
    message: str,
    headers: tuple[tuple[str, str], ...] = (),
) -> HttpReply:
    return HttpReply.json(status, error_payload(shape, status, type_name, message), headers)


@dataclass(frozen=True)
class FaultKind:
    """Defaults of one kind of injected failure."""

    status: int
    shape: Shape
    type_name: str
    message: str


# The catalogue. Names are what tests and the control API use.
FAULT_KINDS: dict[str, FaultKind] = {
    "throttle": FaultKind(
        429,
        "message",
        "Microsoft.Exchange.Management.Tasks.ThrottlingException",
        "Too many requests. The request was throttled; please retry after some time.",
    ),
    "unavailable": FaultKind(
        503,
        "message",
        "System.Web.HttpException",
        "The service is temporarily unavailable. Please try again later.",
    ),
    "transient": FaultKind(
        400,
        "details",
        "Microsoft.Exchange.Data.Storage.TransientException",
        "The operation couldn't be completed because of a transient failure in the mailbox store. Try again later.",
    ),
    "concurrency": FaultKind(
        400,
        "details-json",
        "System.Management.Automation.Remoting.PSRemotingTransportException",
        "Fail to create a runspace because you have exceeded the maximum number of concurrent requests "
        "allowed for this tenant. Please try again later.",
    ),
    # The same limit as the front door words it: a plain-text body, no JSON at all
    # (GreyCorbel/ExoHelper matches this text), with the Rate-Limit-* headers and
    # X-ExceptionType that ExoHelper reads; `retry_after` becomes Rate-Limit-Reset here.
    "throttle_text": FaultKind(
        429,
        "message",
        "System.Management.Automation.Remoting.PSRemotingTransportException",
        "You have reached the maximum number of concurrent requests per tenant. Please wait and try again.",
    ),
    "server_busy": FaultKind(
        500,
        "inner",
        "Microsoft.Exchange.Data.Directory.ServerBusyException",
        "The server is too busy to process the request. Try again later.",
    ),
    "backend": FaultKind(
        500,
        "inner",
        "Microsoft.Exchange.Data.Storage.BackendCommunicationException",
        "BackendCommunicationException: the front end couldn't reach the mailbox server that serves this "
        "tenant. Try again later.",
    ),
    "gateway_timeout": FaultKind(504, "message", "System.TimeoutException", "The gateway timed out."),
    "internal": FaultKind(500, "message", "System.Exception", "An internal server error occurred."),
    # A missing Exchange Administrator role, as the 401 variant: JSON naming the app.
    "role_missing_401": FaultKind(
        401,
        "message",
        "Microsoft.Exchange.Security.Authorization.AuthorizationException",
        "The role assigned to application {client_id} isn't supported in this scenario. Please check "
        "online documentation for assigning correct Directory Roles to Azure AD Application for EXO "
        "App-Only Authentication.",
    ),
    # The app's Exchange.ManageAsApp permission is not granted (never consented, or revoked):
    # the token has no such role and the admin API answers 401 (live-measured by graph2otel:
    # "401 with neither grant"). The body text is the simulator's own; Exchange's is not public.
    "permission_missing": FaultKind(
        401,
        "message",
        "Microsoft.Exchange.Security.Authorization.AuthorizationException",
        "The access token of application {client_id} carries no Exchange.ManageAsApp permission for this "
        "organization.",
    ),
    # The 403 variant: a body of NUL bytes, not JSON (see `role_missing_403_reply`).
    "role_missing_403": FaultKind(403, "message", "", ""),
    # The connection is dropped without a response.
    "disconnect": FaultKind(0, "message", "", ""),
}

# What the random transient failures draw from by default: the transient failures the
# product must retry, in shapes that need parsing.
DEFAULT_RANDOM_KINDS: tuple[str, ...] = ("throttle", "unavailable", "transient", "concurrency")


@dataclass(frozen=True)
class FaultSpec:
    """One injected failure, as queued by `fail_next` or drawn at random.

    `cmdlet` restricts it to calls of one cmdlet (a test can fail exactly the New- call);
    `target` says whether it hits InvokeCommand calls or token requests.
    """

    kind: str
    status: int | None = None
    shape: Shape | None = None
    retry_after: int | None = None
    message: str | None = None
    cmdlet: str | None = None
    target: Target = "invoke"
    gzip: bool = True

    def __post_init__(self) -> None:
        if self.kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {self.kind!r}; known: {', '.join(sorted(FAULT_KINDS))}")
        if self.shape is not None and self.shape not in SHAPES:
            raise ValueError(f"unknown error shape {self.shape!r}; known: {', '.join(SHAPES)}")
        if self.target not in ("invoke", "token"):
            raise ValueError("fault target must be 'invoke' or 'token'")

    def applies_to(self, target: Target, cmdlet: str | None) -> bool:
        if self.target != target:
            return False
        return self.cmdlet is None or (cmdlet is not None and cmdlet.lower() == self.cmdlet.lower())

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "status": self.status,
            "shape": self.shape,
            "retry_after": self.retry_after,
            "message": self.message,
            "cmdlet": self.cmdlet,
            "target": self.target,
            "gzip": self.gzip,
        }

    @staticmethod
    def from_dict(data: dict[str, Any]) -> FaultSpec:
        allowed = {"kind", "status", "shape", "retry_after", "message", "cmdlet", "target", "gzip"}
        unknown = set(data) - allowed
        if unknown:
            raise ValueError(f"unknown fault field(s): {', '.join(sorted(unknown))}")
        if "kind" not in data:
            raise ValueError("a fault needs a 'kind'")
        return FaultSpec(
            kind=str(data["kind"]),
            status=_opt_int(data.get("status"), "status"),
            shape=cast(Shape | None, data.get("shape")),
            retry_after=_opt_int(data.get("retry_after"), "retry_after"),
            message=None if data.get("message") is None else str(data["message"]),
            cmdlet=None if data.get("cmdlet") is None else str(data["cmdlet"]),
            target=cast(Target, data.get("target", "invoke")),
            gzip=bool(data.get("gzip", True)),
        )


def _opt_int(value: object, name: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"fault field {name!r} must be an integer")
    return value


def role_missing_403_reply(gzip: bool = True) -> HttpReply:
    """What Exchange sends when the app's service principal has no Exchange role.

    The body is NUL bytes, and the header may claim gzip although the bytes are not gzip:
    a client that trusts Content-Encoding fails to decode, one that parses JSON fails too.
    Both must still classify it as a missing role from the status alone.
    """
    headers: tuple[tuple[str, str], ...] = (("Content-Type", "application/json"),)
    if gzip:
        headers = (*headers, ("Content-Encoding", "gzip"))
    return HttpReply(403, b"\x00" * 64, headers)


def render_invoke_fault(spec: FaultSpec, *, client_id: str = "") -> HttpReply:
    """The admin API's response for an injected fault."""
    kind = FAULT_KINDS[spec.kind]
    if spec.kind == "disconnect":
        return HttpReply(0, disconnect=True)
    if spec.kind == "role_missing_403":
        reply = role_missing_403_reply(spec.gzip)
        return reply if spec.status is None else HttpReply(spec.status, reply.body, reply.headers)
    status = spec.status if spec.status is not None else kind.status
    shape = spec.shape or kind.shape
    message = (spec.message or kind.message).replace("{client_id}", client_id)
    if spec.kind == "throttle_text":
        text_headers: tuple[tuple[str, str], ...] = (
            ("Content-Type", "text/plain; charset=utf-8"),
            ("X-ExceptionType", kind.type_name),
            ("Rate-Limit-Remaining", "0"),
        )
        if spec.retry_after is not None:
            text_headers = (*text_headers, ("Rate-Limit-Reset", str(spec.retry_after)))
        return HttpReply(status, message.encode("utf-8"), text_headers)
    headers: tuple[tuple[str, str], ...] = ()
    if spec.retry_after is not None:
        headers = (("Retry-After", str(spec.retry_after)),)
    if status == 401:
        headers = (*headers, ("WWW-Authenticate", 'Bearer error="insufficient_privileges"'))
    return error_reply(shape, status, kind.type_name, message, headers)


@dataclass
class FaultQueue:
    """Faults waiting to hit the next matching calls, first in first out."""

    items: list[FaultSpec] = field(default_factory=list)

    def add(self, spec: FaultSpec, count: int) -> None:
        if count < 0:
            raise ValueError("a fault count cannot be negative")
        self.items.extend([spec] * count)

    def take(self, target: Target, cmdlet: str | None) -> FaultSpec | None:
        for index, spec in enumerate(self.items):
            if spec.applies_to(target, cmdlet):
                return self.items.pop(index)
        return None

    def clear(self) -> None:
        self.items.clear()
