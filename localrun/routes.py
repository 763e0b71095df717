"""Route templates of HTTP triggers, matched the way the Functions host matches them.

Operators and scripts call the API by URL, so a route must resolve locally exactly as it
will in Azure: `{name}` segments become `route_params`, literal segments win over
parameters (`activations/stats` before `activations/{notice_id}`), matching ignores case
and a trailing slash, and a path no route takes with the request's method is not found (404),
even when another method would be served there.

The host maps each function's `methods` as a route constraint (`HttpMethodRouteConstraint`
in Azure/azure-functions-host `src/WebJobs.Script.WebHost/WebScriptHostHttpRoutesManager.cs`),
so a method that fails the constraint leaves the request unrouted: 404, not 405 (observed
and reported in Azure/azure-functions-host#10098, still open). Scripts written against this
runner therefore see what Azure answers.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

# {name}, {name?}, {*name}, {name:int}, {name:int?}, {name=default}
_PARAM = re.compile(
    r"\{(?P<star>\*{1,2})?(?P<name>[A-Za-z_][A-Za-z0-9_]*)"
    r"(?P<constraints>(?::[^}?=]+)*)(?P<optional>\?)?(?:=(?P<default>[^}]*))?\}"
)
_GUID = r"[0-9A-Fa-f]{8}-?[0-9A-Fa-f]{4}-?[0-9A-Fa-f]{4}-?[0-9A-Fa-f]{4}-?[0-9A-Fa-f]{12}"
# The ASP.NET route constraints that change what a segment may look like; other constraints
# (min, max, length, regex...) are accepted and not enforced.
_CONSTRAINT_PATTERNS = {
    "int": r"-?\d+",
    "long": r"-?\d+",
    "bool": r"(?:[Tt][Rr][Uu][Ee]|[Ff][Aa][Ll][Ss][Ee])",
    "guid": _GUID,
    "alpha": r"[A-Za-z]+",
}

# Route precedence, lower first: literal, constrained parameter, parameter, optional, catch-all.
_LITERAL, _CONSTRAINED, _PARAMETER, _OPTIONAL, _CATCH_ALL = range(5)


class RouteError(ValueError):
    """A route template the local runner cannot serve."""


@dataclass(frozen=True)
class HttpFunction:
    """One HTTP-triggered function as the runner serves it."""

    name: str
    route: str  # the full template, prefix included, without leading slash ("api/activations/{notice_id}")
    methods: frozenset[str] | None  # None: every method
    auth_level: str  # "anonymous" | "function" | "admin"
    arg_name: str
    user_function: Callable[..., Any]
    pattern: re.Pattern[str] = field(init=False, repr=False, compare=False)
    precedence: tuple[int, ...] = field(init=False, repr=False, compare=False)
    defaults: tuple[tuple[str, str], ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        pattern, precedence, defaults = compile_template(self.route)
        object.__setattr__(self, "pattern", pattern)
        object.__setattr__(self, "precedence", precedence)
        object.__setattr__(self, "defaults", defaults)

    def allows(self, method: str) -> bool:
        return self.methods is None or method.upper() in self.methods


def compile_template(template: str) -> tuple[re.Pattern[str], tuple[int, ...], tuple[tuple[str, str], ...]]:
    """A regex over the raw URL path (no leading slash), its precedence, and parameter defaults."""
    segments = template.strip("/").split("/") if template.strip("/") else []
    pieces: list[str] = []
    precedence: list[int] = []
    defaults: list[tuple[str, str]] = []
    names: set[str] = set()
    for index, segment in enumerate(segments):
        last = index == len(segments) - 1
        params = list(_PARAM.finditer(segment))
        if not params:
            if "{" in segment or "}" in segment:
                raise RouteError(f"route {template!r}: cannot read segment {segment!r}")
            pieces.append("/" + re.escape(segment))
            precedence.append(_LITERAL)
            continue
        whole = len(params) == 1 and params[0].span() == (0, len(segment))
        regex = ""
        cursor = 0
        kind = _CONSTRAINED
        for match in params:
            regex += re.escape(segment[cursor:match.start()])
            cursor = match.end()
            name = match["name"]
            if name.lower() in names:
                raise RouteError(f"route {template!r}: parameter {name!r} appears twice")
            names.add(name.lower())
            if match["star"]:
                if not (whole and last):
                    raise RouteError(f"route {template!r}: a catch-all parameter must be the whole last segment")
                regex += f"(?P<{name}>.*)"
                kind = _CATCH_ALL
                continue
            constraints = [c for c in match["constraints"].split(":") if c]
            value = r"[^/]+"
            for constraint in constraints:
                value = _CONSTRAINT_PATTERNS.get(constraint.split("(")[0].lower(), value)
            regex += f"(?P<{name}>{value})"
            if not constraints:
                kind = max(kind, _PARAMETER)
            if match["optional"] or match["default"] is not None:
                if not (whole and last):
                    raise RouteError(f"route {template!r}: only a whole last segment can be optional")
                kind = _OPTIONAL
                if match["default"] is not None:
                    defaults.append((name, match["default"]))
        regex += re.escape(segment[cursor:])
        if kind in (_OPTIONAL, _CATCH_ALL):
            pieces.append(f"(?:/{regex})?")
        else:
            pieces.append("/" + regex)
        precedence.append(kind)
    pattern = re.compile("".join(pieces) + "/?", re.IGNORECASE)
    return pattern, tuple(precedence), tuple(defaults)


@dataclass(frozen=True)
class RouteMatch:
    """The outcome of routing one request: a function and its route parameters, or none (404)."""

    function: HttpFunction | None
    route_params: dict[str, str]


class RouteTable:
    """Every HTTP function, tried in the host's precedence order."""

    def __init__(self, functions: Iterable[HttpFunction]) -> None:
        self.functions: Sequence[HttpFunction] = sorted(functions, key=lambda f: (f.precedence, f.route.lower()))

    def match(self, method: str, path: str) -> RouteMatch:
        """Route `path` (raw, percent-encoded, with leading slash, no query) for `method`."""
        normalized = "/" + path.strip("/") if path.strip("/") else ""
        for function in self.functions:
            # The method is part of the route, as in the host: a route that does not take it
            # is skipped, and a later (less specific) route may still serve the request.
            if not function.allows(method):
                continue
            found = function.pattern.fullmatch(normalized)
            if found is None:
                continue
            params = dict(function.defaults)
            params.update({k: unquote(v) for k, v in found.groupdict().items() if v is not None})
            return RouteMatch(function, params)
        return RouteMatch(None, {})
