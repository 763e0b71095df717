"""SPF preflight: does each accepted domain's SPF record authorise MailGates?

MailGates relays a customer's outbound mail from its own servers, so once the `*` connector is
in place every message a recipient receives comes from a MailGates address. Unless the
customer's SPF record reaches the vendor's `include:`, that mail fails SPF (and with it often
DMARC) at recipients — the connector "works" and mail still lands in spam. Checking before
provisioning turns that silent failure into an actionable finding.

The check reads real DNS, but the evaluation is kept apart from the I/O: everything below
`SpfResolver` is plain logic over the TXT strings a resolver returns, so it is tested with a
dict-backed fake, while `DnsPythonResolver` is the only code that talks to the network.

What is checked, per RFC 7208, for one domain:

- exactly one record starting with `v=spf1` (none: SPF_MISSING; several: SPF_MULTIPLE_RECORDS,
  a permerror at every recipient, so nothing else is evaluated);
- MailGates' mail reaches a `+` (or unqualified) include of the required domain, directly or
  through `+` includes and `redirect=`, evaluating terms in order as recipients do
  (SPF_INCLUDE_MISSING otherwise): nothing after `all` is ever evaluated (§5.1), a
  `-`/`~`/`?` include gives fail/softfail/neutral rather than pass (§4.6.2), and a redirect
  counts only in a record without `all` (§6.1). The customer's own `a`, `mx`, `ip4`, … terms
  are taken not to match MailGates' addresses;
- no include or redirect evaluated before that point names a domain that does not exist, has
  no SPF record or several: recipients return permerror there for every message, MailGates'
  included (§5.2; SPF_BROKEN_INCLUDE). A broken include after it only affects other senders'
  mail and is a note;
- at most 10 terms that cost a DNS query — include, a, mx, ptr, exists, redirect — counted
  across the whole tree (§4.6.4; more is a permerror at recipients: SPF_TOO_MANY_LOOKUPS);
  terms written after `all` are counted too, on the safe side (see `_Walk.walk`). An
  include loop never terminates at a recipient either, so it is reported under the same code;
- DNS timeouts and SERVFAIL are SPF_LOOKUP_FAILED: transient, re-checked on retry, and they
  suppress SPF_INCLUDE_MISSING when met before MailGates' include would be reached, because
  the unread part of the tree may hold the include.

Counting stops at the first look-up past the limit and no record is fetched after it, so a
hostile or broken record cannot make the check itself recurse or query without bound.
Problems that are not one of those codes (an include of a name without SPF after MailGates'
include, an include that uses macros, a term recipients cannot parse) are kept as `notes`, and the ones that explain a
finding are quoted in its detail.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

import dns.exception
import dns.name
import dns.rdatatype
import dns.rdtypes.ANY.TXT
import dns.resolver

from .errors import ErrorCode, error_dict
from .settings import Settings

MAX_DNS_LOOKUPS = 10
"""RFC 7208 §4.6.4: more DNS-querying terms than this is a permerror."""

LOOKUP_MECHANISMS = frozenset({"include", "a", "mx", "ptr", "exists"})
"""Mechanisms that cost a DNS query (the `redirect` modifier costs one too)."""

KNOWN_MECHANISMS = LOOKUP_MECHANISMS | {"all", "ip4", "ip6"}

DEFAULT_TIMEOUT_SECONDS = 2.0
"""Per query attempt; a healthy authoritative server answers in milliseconds."""

DEFAULT_LIFETIME_SECONDS = 5.0
"""Per name, across retries and TCP fallback, so a dead server cannot stall an activation."""

_MODIFIER = re.compile(r"[A-Za-z][A-Za-z0-9._-]*=")
_QUALIFIERS = "+-~?"


# -- DNS access ---------------------------------------------------------------------------


class SpfDnsError(Exception):
    """A TXT look-up did not return records; `reason` keeps the resolver's words."""

    def __init__(self, name: str, reason: str) -> None:
        super().__init__(f"{name}: {reason}")
        self.name = name
        self.reason = reason


class DnsNameNotFound(SpfDnsError):
    """NXDOMAIN: the name does not exist (a permanent answer)."""


class DnsNoAnswer(SpfDnsError):
    """The name exists but has no TXT records (a permanent answer)."""


class DnsLookupFailed(SpfDnsError):
    """Timeout, SERVFAIL, network error: no answer yet, so retrying later may help."""


class SpfResolver(Protocol):
    """Where TXT records come from: real DNS in production, a dict in unit tests."""

    def txt(self, name: str) -> list[str]:
        """Every TXT record of `name`, each with its character-strings joined.

        Raises `DnsNameNotFound`, `DnsNoAnswer` or `DnsLookupFailed`.
        """
        ...


class DnsPythonResolver:
    """TXT look-ups with dnspython: UDP with EDNS, TCP when the answer is truncated.

    With a `nameserver` (setting DNS_NAMESERVER/DNS_PORT) only that server is asked, which is
    how the local stack and tests point the check at their own DNS server; without one the
    system's resolver configuration is used, as in Azure.
    """

    def __init__(
        self,
        nameserver: str = "",
        port: int = 53,
        *,
        timeout: float = DEFAULT_TIMEOUT_SECONDS,
        lifetime: float = DEFAULT_LIFETIME_SECONDS,
    ) -> None:
        if nameserver:
            resolver = dns.resolver.Resolver(configure=False)
            resolver.nameservers = [_nameserver_address(nameserver)]
            resolver.port = port
        else:
            resolver = dns.resolver.Resolver()
        resolver.timeout = timeout
        resolver.lifetime = lifetime
        # EDNS with the DNS flag day 2020 buffer size: long SPF records fit in one UDP answer
        # where servers allow it, and anything larger is retried over TCP by dnspython.
        resolver.use_edns(0, 0, 1232)
        self._resolver = resolver

    @classmethod
    def from_settings(cls, settings: Settings) -> DnsPythonResolver:
        """The resolver the product uses: DNS_NAMESERVER/DNS_PORT if set, else the system's."""
        return cls(settings.dns_nameserver, settings.dns_port)

    def txt(self, name: str) -> list[str]:
        """TXT records of `name` (absolute; the resolver's search list is never applied)."""
        try:
            qname = dns.name.from_text(name)
        except dns.exception.DNSException as exc:
            raise DnsNameNotFound(name, f"not a valid domain name ({exc})") from exc
        try:
            answer = self._resolver.resolve(qname, dns.rdatatype.TXT, search=False)
        except dns.resolver.NXDOMAIN as exc:
            raise DnsNameNotFound(name, f"does not exist (NXDOMAIN): {exc}") from exc
        except dns.resolver.NoAnswer as exc:
            raise DnsNoAnswer(name, f"has no TXT records: {exc}") from exc
        except dns.exception.Timeout as exc:
            raise DnsLookupFailed(name, f"DNS timeout: {exc}") from exc
        except dns.resolver.NoNameservers as exc:
            raise DnsLookupFailed(name, f"DNS server failure: {exc}") from exc
        except (dns.exception.DNSException, OSError) as exc:
            raise DnsLookupFailed(name, f"DNS error: {exc}") from exc
        records: list[str] = []
        for rdata in answer:
            if isinstance(rdata, dns.rdtypes.ANY.TXT.TXT):
                # A record longer than 255 bytes arrives as several strings: one record.
                records.append(b"".join(rdata.strings).decode("utf-8", errors="replace"))
        return records


def _nameserver_address(nameserver: str) -> str:
    """dnspython wants an IP address; a host name is resolved once, by the system."""
    try:
        return str(ipaddress.ip_address(nameserver))
    except ValueError:
        infos = socket.getaddrinfo(nameserver, None, proto=socket.IPPROTO_UDP)
        return str(infos[0][4][0])


class _CachingResolver:
    """One answer per name per check run: shared includes are fetched once, not per domain."""

    def __init__(self, inner: SpfResolver) -> None:
        self._inner = inner
        self._answers: dict[str, list[str] | SpfDnsError] = {}

    def txt(self, name: str) -> list[str]:
        key = normalize_domain(name)
        if key not in self._answers:
            try:
                self._answers[key] = list(self._inner.txt(key))
            except SpfDnsError as exc:
                self._answers[key] = exc
        answer = self._answers[key]
        if isinstance(answer, SpfDnsError):
            raise answer
        return answer


# -- parsing (pure) -----------------------------------------------------------------------


def normalize_domain(name: str) -> str:
    """Domain names compare case-insensitively and without the root dot."""
    return name.strip().rstrip(".").lower()


def is_spf_record(text: str) -> bool:
    """RFC 7208 §4.5: the version is exactly `v=spf1`, ended by a space or the record's end.

    So `v=spf10 …` and `v=spf1x` are not SPF; ABNF literals are case-insensitive, so
    `V=SPF1` is.
    """
    return text[:6].lower() == "v=spf1" and (len(text) == 6 or text[6] == " ")


def spf_records(txt_records: Iterable[str]) -> list[str]:
    """The SPF records among a name's TXT records."""
    return [t for t in txt_records if is_spf_record(t)]


@dataclass(frozen=True)
class Term:
    """One term of an SPF record: a mechanism (with qualifier) or a `name=value` modifier."""

    text: str
    name: str
    value: str | None
    qualifier: str = "+"
    modifier: bool = False


def parse_terms(record: str) -> list[Term]:
    """The terms after `v=spf1`, with names lower-cased and values kept as written."""
    terms: list[Term] = []
    for text in record.split()[1:]:
        if _MODIFIER.match(text):
            name, _, mod_value = text.partition("=")
            terms.append(Term(text, name.lower(), mod_value, modifier=True))
            continue
        qualifier = "+"
        body = text
        if body[0] in _QUALIFIERS:
            qualifier, body = body[0], body[1:]
        name, sep, rest = body.partition(":")
        if not sep:
            name, _, _ = body.partition("/")
            value: str | None = None
        else:
            value = rest
            if name.lower() in ("a", "mx"):
                value = rest.partition("/")[0]
        terms.append(Term(text, name.lower(), value, qualifier))
    return terms


def _domain_spec_problem(value: str | None) -> str | None:
    """Why an include/redirect target cannot be followed statically, or None if it can."""
    if not value:
        return "has no domain"
    if "%" in value:
        return "uses macros, which are expanded per message and cannot be followed here"
    labels = value.rstrip(".").split(".")
    if len(value) > 253 or len(labels) < 2 or any(not 0 < len(label) <= 63 for label in labels):
        return "is not a valid domain name"
    return None


# -- evaluation ---------------------------------------------------------------------------


@dataclass
class SpfResult:
    """What the SPF check found for one domain.

    `findings` are the problems that decide the outcome (each an ErrorCode with English
    detail); `notes` are observations that explain them or may matter to a human.
    """

    domain: str
    record: str | None
    lookups: int = 0
    findings: list[tuple[ErrorCode, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """No finding: the record exists, is unique, within limits, and reaches MailGates."""
        return not self.findings

    @property
    def retryable(self) -> bool:
        """A DNS failure kept the check from finishing; checking again later may pass."""
        return any(code is ErrorCode.SPF_LOOKUP_FAILED for code, _ in self.findings)

    @property
    def codes(self) -> list[ErrorCode]:
        """The finding codes, in order."""
        return [code for code, _ in self.findings]

    def to_dict(self) -> dict[str, object]:
        """The stored shape; findings use the same error shape as every other stored error."""
        return {
            "domain": self.domain,
            "record": self.record,
            "lookups": self.lookups,
            "ok": self.ok,
            "findings": [
                error_dict(code, detail)
                for code, detail in self.findings
            ],
            "notes": list(self.notes),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> SpfResult:
        """Read back what `to_dict` stored; a malformed row raises ValueError naming the field."""
        raw_findings = data.get("findings") or []
        raw_notes = data.get("notes") or []
        record = data.get("record")
        lookups = data.get("lookups", 0)
        if not isinstance(raw_findings, list) or not isinstance(raw_notes, list):
            raise ValueError("stored SPF result: findings and notes must be lists")
        findings: list[tuple[ErrorCode, str]] = []
        for item in raw_findings:
            if not isinstance(item, Mapping) or "code" not in item or "message" not in item:
                raise ValueError(f"stored SPF result: finding {item!r} has no code and message")
            findings.append((ErrorCode(str(item["code"])), str(item["message"])))
        return cls(
            domain=str(data["domain"]),
            record=record if isinstance(record, str) else None,
            lookups=lookups if isinstance(lookups, int) else 0,
            findings=findings,
            notes=[str(n) for n in raw_notes],
        )


_QUALIFIER_RESULTS = {"+": "pass", "-": "fail", "~": "softfail", "?": "neutral"}
"""RFC 7208 §4.6.2: the result a matching mechanism gives, by its qualifier."""


@dataclass
class _Outcome:
    """What recipients do with MailGates' mail in one record (or one include of it).

    Terms are evaluated in order, as recipients do, up to the first that would match
    MailGates' addresses. Which of the customer's own terms (`a`, `mx`, `ip4`, …) match
    those addresses cannot be known here, so they are taken not to; what the check decides
    is whether the walk reaches a `+` include of the required domain first.

    A broken include or redirect (a permerror at recipients) ends evaluation there for
    every message; the walk records it in `blockers` and carries on as if it had not
    matched, so that it can tell "MailGates' include is there, but a broken include before
    it makes recipients return permerror" (SPF_BROKEN_INCLUDE) from "MailGates is not
    authorised at all" (SPF_INCLUDE_MISSING). `unknowns` are DNS failures met the same way:
    the unread record may have matched, so no conclusion is drawn from what follows them.
    """

    passed: bool = False
    blockers: list[str] = field(default_factory=list)
    unknowns: list[str] = field(default_factory=list)


class _Walk:
    """One depth-first walk of a domain's include/redirect tree, bounded by the look-up limit.

    Every DNS-costing term up to `all` is counted, whether or not MailGates' mail would
    reach it, because recipients evaluate them all for a sender that matches nothing; the
    evaluation for MailGates' mail (`_Outcome`) is worked out along the way.
    """

    def __init__(self, domain: str, required: str, resolver: SpfResolver) -> None:
        self.domain = domain
        self.required = required
        self.resolver = resolver
        self.lookups = 0
        self.limit_hit: str | None = None
        self.loops: list[str] = []
        self.failures: list[str] = []
        self.unfollowed: list[str] = []  # parts of the tree that were not read
        self.broken: list[str] = []  # includes/redirects that recipients treat as permerror
        self.explain: list[str] = []  # why a written include of the required domain does not pass
        self.notes: list[str] = []

    @property
    def over_limit(self) -> bool:
        return self.lookups > MAX_DNS_LOOKUPS

    def _count(self, term: str, where: str, *, after_all: bool = False) -> None:
        if self.over_limit:
            return  # stop counting: the record already fails at recipients
        self.lookups += 1
        if self.lookups > MAX_DNS_LOOKUPS:
            self.limit_hit = f"look-up {self.lookups} is '{term}' in the record of {where}"
            if after_all:
                self.limit_hit += " (after 'all': never evaluated, counted to stay on the safe side)"

    def _is_required(self, term: Term) -> bool:
        return bool(self.required) and term.value is not None and normalize_domain(term.value) == self.required

    def walk(self, where: str, record: str, path: tuple[str, ...]) -> _Outcome:
        terms = parse_terms(record)
        has_all = any(t.name == "all" and not t.modifier for t in terms)
        outcome = _Outcome()
        decided = False  # a term matched MailGates' mail: later terms do not change its result
        seen_all: Term | None = None
        after_all: list[str] = []
        redirect: Term | None = None
        for term in terms:
            if term.modifier:
                if term.name != "redirect":
                    continue  # exp= and unknown modifiers cost nothing at check time
                if has_all:
                    self.notes.append(f"{where}: '{term.text}' is ignored because the record has 'all' (RFC 7208 §6.1)")
                elif redirect is not None:
                    self.notes.append(f"{where}: more than one redirect= (recipients return permerror)")
                else:
                    redirect = term
                continue
            if term.name not in KNOWN_MECHANISMS:
                # The whole record is parsed before evaluation (§4.6), so this matters even after 'all'.
                self.notes.append(f"{where}: unknown mechanism '{term.text}' (recipients return permerror)")
                continue
            if seen_all is not None:
                # RFC 7208 §5.1: 'all' always matches, so nothing after it is ever evaluated —
                # it neither authorises MailGates nor costs a look-up at recipients. It is
                # still counted against the limit here (one look-up per term, its target not
                # fetched), to keep the count conservative: such a record is a mistake, and
                # the usual repair — moving 'all' to the end — makes these terms live, so a
                # record that only passes the limit because of the misplaced 'all' should
                # not be reported as fine. Whatever they include is not read: recipients
                # never read it either.
                if term.name in LOOKUP_MECHANISMS:
                    self._count(term.text, where, after_all=True)
                    after_all.append(term.text)
                    if term.name == "include" and self._is_required(term):
                        self.explain.append(
                            f"'{term.text}' in {where} comes after '{seen_all.text}', and terms after "
                            "'all' are never evaluated (RFC 7208 §5.1)"
                        )
                continue
            if term.name == "all":
                seen_all = term
                decided = True  # MailGates' mail ends here if nothing matched before
                continue
            if term.name not in LOOKUP_MECHANISMS:
                continue
            self._count(term.text, where)
            if term.name != "include":
                continue
            included = self._follow(where, term, path)
            if decided:
                continue  # evaluated only for other senders' mail: broken targets stay notes
            outcome.blockers.extend(included.blockers)
            outcome.unknowns.extend(included.unknowns)
            if included.passed:
                decided = True
                if term.qualifier == "+":
                    outcome.passed = True
                else:
                    result = _QUALIFIER_RESULTS.get(term.qualifier, "neutral")
                    text = (
                        f"'{term.text}' in {where} reaches {self.required} but its '{term.qualifier}' qualifier "
                        f"gives MailGates' mail {result}, not pass (RFC 7208 §4.6.2)"
                    )
                    self.explain.append(text)
                    self.notes.append(text)
        if after_all:
            self.notes.append(
                f"{where}: {', '.join(repr(t) for t in after_all)} after '{seen_all.text if seen_all else 'all'}' "
                "is never evaluated (RFC 7208 §5.1) but is counted as a look-up"
            )
        if redirect is not None:
            # Recipients follow redirect= only when no mechanism matched, which is the case for
            # a sender that matches nothing, so it is always counted.
            self._count(redirect.text, where)
            target = self._follow(where, redirect, path)
            if not decided:
                outcome.passed = target.passed
                outcome.blockers.extend(target.blockers)
                outcome.unknowns.extend(target.unknowns)
        return outcome

    def _follow(self, where: str, term: Term, path: tuple[str, ...]) -> _Outcome:
        """Read the record an include/redirect names; its outcome for MailGates' mail."""
        problem = _domain_spec_problem(term.value)
        if problem is not None or term.value is None:
            self.notes.append(f"{where}: '{term.text}' {problem or 'has no domain'}")
            self.unfollowed.append(term.text)
            return _Outcome()
        target = normalize_domain(term.value)
        # Reaching the required name is what matters; its own record is the vendor's business.
        reached = _Outcome(passed=bool(self.required) and target == self.required)
        if target in path:
            self.loops.append(" -> ".join((*path, target)))
            return reached
        if self.over_limit:
            self.unfollowed.append(f"{term.text} in {where}")
            return reached
        try:
            records = spf_records(self.resolver.txt(target))
        except DnsLookupFailed as exc:
            text = f"'{term.text}' in {where}: {exc.reason}"
            self.failures.append(text)
            self.unfollowed.append(f"{term.text} in {where}")
            return reached if reached.passed else _Outcome(unknowns=[text])
        except DnsNameNotFound:
            return self._broken(where, term, f"{target} does not exist (NXDOMAIN)", reached)
        except DnsNoAnswer:
            return self._broken(where, term, f"{target} has no TXT records", reached)
        if not records:
            return self._broken(where, term, f"{target} has no SPF record", reached)
        if len(records) > 1:
            return self._broken(where, term, f"{target} publishes {len(records)} SPF records", reached)
        inner = self.walk(target, records[0], (*path, target))
        return reached if reached.passed else inner

    def _broken(self, where: str, term: Term, why: str, reached: _Outcome) -> _Outcome:
        """A permerror at recipients (RFC 7208 §5.2, §6.1); noted always, a blocker when reached first."""
        text = f"'{term.text}' in {where}: {why}; recipients treat this as a permanent error"
        self.broken.append(text)
        self.notes.append(text)
        return reached if reached.passed else _Outcome(blockers=[text])


def check_domain(domain: str, *, required_include: str, resolver: SpfResolver) -> SpfResult:
    """Check one domain's SPF record; DNS answers come only from `resolver`.

    `required_include` is the domain of the vendor's include (a leading `include:` is
    tolerated); when it is empty the include check is skipped.
    """
    name = normalize_domain(domain)
    required = normalize_domain(required_include.strip().removeprefix("include:"))
    try:
        txts = resolver.txt(name)
    except DnsLookupFailed as exc:
        return SpfResult(name, None, findings=[(ErrorCode.SPF_LOOKUP_FAILED, f"TXT look-up of {name}: {exc.reason}")])
    except DnsNameNotFound:
        return SpfResult(name, None, findings=[(ErrorCode.SPF_MISSING, f"{name} does not exist in DNS (NXDOMAIN)")])
    except DnsNoAnswer:
        return SpfResult(name, None, findings=[(ErrorCode.SPF_MISSING, f"{name} has no TXT records")])

    records = spf_records(txts)
    if not records:
        detail = f"none of the {len(txts)} TXT records of {name} starts with v=spf1"
        return SpfResult(name, None, findings=[(ErrorCode.SPF_MISSING, detail)])
    if len(records) > 1:
        quoted = "; ".join(f'"{r}"' for r in records)
        detail = f"{name} publishes {len(records)} SPF records (RFC 7208 §4.5 permerror): {quoted}"
        return SpfResult(name, None, findings=[(ErrorCode.SPF_MULTIPLE_RECORDS, detail)])

    record = records[0]
    walk = _Walk(name, required, resolver)
    outcome = walk.walk(name, record, (name,))
    findings: list[tuple[ErrorCode, str]] = []

    if required and outcome.passed and outcome.blockers:
        detail = (
            f"recipients return permerror for MailGates' mail before reaching include:{required} in the SPF "
            f"record of {name}: " + "; ".join(outcome.blockers)
        )
        findings.append((ErrorCode.SPF_BROKEN_INCLUDE, detail))
    elif required and not outcome.passed and not outcome.unknowns:
        detail = f"the SPF record of {name} does not authorise MailGates through a pass of include:{required}"
        if walk.explain:
            detail += "; " + "; ".join(walk.explain)
        if walk.over_limit:
            detail += f"; the check stopped at the {MAX_DNS_LOOKUPS}-look-up limit before reading: " + ", ".join(
                walk.unfollowed
            )
        if walk.broken:
            detail += "; broken: " + "; ".join(walk.broken)
        findings.append((ErrorCode.SPF_INCLUDE_MISSING, detail))

    too_many: list[str] = []
    if walk.over_limit:
        too_many.append(f"more than {MAX_DNS_LOOKUPS} DNS look-ups ({walk.limit_hit}; counting stopped there)")
    too_many.extend(f"include loop {loop}: recipients exceed the look-up limit" for loop in walk.loops)
    if too_many:
        findings.append((ErrorCode.SPF_TOO_MANY_LOOKUPS, "; ".join(too_many)))

    if walk.failures:
        findings.append((ErrorCode.SPF_LOOKUP_FAILED, "; ".join(walk.failures)))

    return SpfResult(name, record, walk.lookups, findings, walk.notes)


def check_domains(domains: Iterable[str], *, required_include: str, resolver: SpfResolver) -> list[SpfResult]:
    """Check every domain, in order; a name shared by several trees is queried once."""
    cached = _CachingResolver(resolver)
    return [check_domain(d, required_include=required_include, resolver=cached) for d in domains]
