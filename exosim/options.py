"""Per-tenant behaviour switches of the simulator.

A real customer tenant differs from the next in ways that decide the product's outcome: the app
is not consented, its service principal lacks the Exchange role, Exchange is throttling, a
connector just created is not yet replicated, a smart host cannot be reached. Each such
difference is one option here, settable from Python (`Simulator.configure_tenant`) and over
the control API (`POST /_sim/tenants/{tenant}`) with the same names and the same checks, so
an out-of-process simulator is driven exactly like an in-process one.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from exosim.faults import DEFAULT_RANDOM_KINDS, FAULT_KINDS, SHAPES, Shape


@dataclass(frozen=True)
class TenantOptions:
    """How one tenant behaves. Defaults are a healthy, consented, fully permissioned tenant."""

    # Entra ID: the tenant exists (else AADSTS90002) and has consented to the app (else
    # `consent_error`, AADSTS700016 by default, or 65001 for a missing permission grant).
    exists: bool = True
    consent: bool = True
    consent_error: int = 700016
    # The app's `Exchange.ManageAsApp` application permission is granted in the tenant (admin
    # consent created the service principal AND the app role assignment). Without it Entra still
    # issues a token (the app is in the directory), but the token carries no such role and the
    # admin API answers 401.
    permission_granted: bool = True
    # Exchange Administrator role of the app's service principal: None (assigned) or 403
    # (missing: the admin API answers 403 with a NUL body). 401 is accepted as the older
    # spelling of `permission_granted: false`, which is what a 401 really means.
    role_missing: int | None = None
    role_missing_gzip: bool = True
    # Both of the above are read when a token is ISSUED and travel in it, as the directory role
    # does in a real app-only token: changing them later does not change a token already issued.
    # Every InvokeCommand call waits this long before it is answered; `cmdlet_latency_ms`
    # overrides it per cmdlet (e.g. {"Validate-OutboundConnector": 40000}: validation is slow).
    latency_ms: int = 0
    cmdlet_latency_ms: Mapping[str, int] = field(default_factory=dict)
    # Probability (0..1) that an InvokeCommand call fails with one of `transient_kinds`,
    # drawn from an RNG seeded with `seed`, so a failing run can be replayed exactly.
    transient_rate: float = 0.0
    transient_kinds: tuple[str, ...] = DEFAULT_RANDOM_KINDS
    transient_retry_after: int | None = None
    seed: int = 0
    # More InvokeCommand calls in flight than this get the "maximum number of concurrent
    # requests" failure, as Exchange does per tenant.
    max_concurrent: int | None = None
    # Body shape of cmdlet errors (not found, already exists, validation).
    error_shape: Shape = "inner"
    # Rows per response page; None means the simulator-wide default. A request's
    # `Prefer: odata.maxpagesize` can lower it.
    page_size: int | None = None
    # This many `@odata.nextLink` follow-ups are refused with 400 "Expired or Invalid
    # pagination request", as a live capture saw every one refused (rknightion/graph2otel).
    refuse_next_links: int = 0
    # Seconds a connector made by New- stays invisible to Get and not found for Set,
    # Validate and Remove.
    replication_lag: float = 0.0
    # Get-OutboundConnector -Identity <no match> returns every connector (a real quirk).
    unknown_identity_returns_all: bool = True
    # Validate-OutboundConnector outcomes.
    unreachable_hosts: frozenset[str] = field(default_factory=frozenset)
    unreachable_recipients: frozenset[str] = field(default_factory=frozenset)
    # A test email that normal routing would send through another connector (two `*`
    # connectors, or a more specific one) fails, as the vendor's procedure warns.
    routing_conflicts_fail_validation: bool = True


def _bool(name: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"option {name!r} must be true or false")
    return value


def _int(name: str, value: object, *, minimum: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"option {name!r} must be an integer >= {minimum}")
    return value


def _opt_int(name: str, value: object, *, minimum: int = 0) -> int | None:
    return None if value is None else _int(name, value, minimum=minimum)


def _float(name: str, value: object, *, maximum: float | None = None) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise ValueError(f"option {name!r} must be a number >= 0")
    if maximum is not None and value > maximum:
        raise ValueError(f"option {name!r} must be at most {maximum}")
    return float(value)


def _lower_set(name: str, value: object) -> frozenset[str]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list | tuple | set | frozenset) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"option {name!r} must be a list of strings")
    return frozenset(str(v).lower() for v in value)


def _role(name: str, value: object) -> int | None:
    if value is None or value is False:
        return None
    if value is True:
        return 403
    if value not in (401, 403):
        raise ValueError(f"option {name!r} must be null, 401 or 403")
    return 401 if value == 401 else 403


def _cmdlet_latencies(name: str, value: object) -> dict[str, int]:
    from exosim.state import CmdletError, canonical_cmdlet

    if not isinstance(value, Mapping):
        raise ValueError(f"option {name!r} must be an object of cmdlet name: milliseconds")
    result: dict[str, int] = {}
    for cmdlet, millis in value.items():
        try:
            canonical = canonical_cmdlet(str(cmdlet))
        except CmdletError:
            raise ValueError(f"option {name!r}: unknown cmdlet {cmdlet!r}") from None
        result[canonical] = _int(f"{name}.{canonical}", millis)
    return result


def _consent_error(name: str, value: object) -> int:
    if value not in (700016, 65001):
        raise ValueError(f"option {name!r} must be 700016 or 65001")
    return 65001 if value == 65001 else 700016


def _shape(name: str, value: object) -> Shape:
    for shape in SHAPES:
        if value == shape:
            return shape
    raise ValueError(f"option {name!r} must be one of {', '.join(SHAPES)}")


def _kinds(name: str, value: object) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list | tuple) or not value:
        raise ValueError(f"option {name!r} must be a non-empty list of fault kinds")
    for kind in value:
        if kind not in FAULT_KINDS:
            raise ValueError(f"option {name!r}: unknown fault kind {kind!r}")
    return tuple(str(kind) for kind in value)


_CONVERTERS: dict[str, Callable[[str, object], object]] = {
    "exists": _bool,
    "consent": _bool,
    "consent_error": _consent_error,
    "role_missing": _role,
    "role_missing_gzip": _bool,
    "permission_granted": _bool,
    "latency_ms": _int,
    "cmdlet_latency_ms": _cmdlet_latencies,
    "transient_rate": lambda n, v: _float(n, v, maximum=1.0),
    "transient_kinds": _kinds,
    "transient_retry_after": _opt_int,
    "seed": lambda n, v: _int(n, v, minimum=-(2**63)),
    "max_concurrent": lambda n, v: _opt_int(n, v, minimum=1),
    "error_shape": _shape,
    "page_size": lambda n, v: _opt_int(n, v, minimum=1),
    "refuse_next_links": _int,
    "replication_lag": _float,
    "unknown_identity_returns_all": _bool,
    "unreachable_hosts": _lower_set,
    "unreachable_recipients": _lower_set,
    "routing_conflicts_fail_validation": _bool,
}

OPTION_NAMES = frozenset(_CONVERTERS)


def apply_options(current: TenantOptions, changes: Mapping[str, object]) -> TenantOptions:
    """`current` with `changes` applied; unknown names and wrong types raise ValueError.

    Unknown names are refused rather than ignored: a typo in a test's set-up would otherwise
    leave the tenant healthy and the test passing for the wrong reason.
    """
    unknown = set(changes) - OPTION_NAMES
    if unknown:
        raise ValueError(f"unknown tenant option(s): {', '.join(sorted(unknown))}")
    converted = {name: _CONVERTERS[name](name, value) for name, value in changes.items()}
    if converted.get("role_missing") == 401:
        # A 401 from the admin API means the permission is missing, not the role.
        converted["role_missing"] = None
        converted["permission_granted"] = False
    return dataclasses.replace(current, **converted)  # type: ignore[arg-type]


def options_dict(options: TenantOptions) -> dict[str, Any]:
    """JSON-friendly view of the options (sets become sorted lists)."""
    result: dict[str, Any] = {}
    for item in dataclasses.fields(options):
        value = getattr(options, item.name)
        if isinstance(value, frozenset):
            value = sorted(value)
        elif isinstance(value, tuple):
            value = list(value)
        elif isinstance(value, Mapping):
            value = dict(value)
        result[item.name] = value
    return result
