"""The SPF check over real DNS: dnspython's resolver querying the local DnsServer.

The unit tests cover the rules; these cover what only real queries can break: wire format,
long records split into several strings, truncation and the fall-back to TCP, SERVFAIL,
timeouts and NXDOMAIN as a resolver sees them — and the server itself, which the local stack
runs standalone.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path

import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import dns.rdtypes.ANY.TXT
import pytest

from exosim.dnsserver import DnsServer
from shared.errors import ErrorCode
from shared.settings import Settings
from shared.spf import (
    MAX_DNS_LOOKUPS,
    DnsLookupFailed,
    DnsNameNotFound,
    DnsNoAnswer,
    DnsPythonResolver,
    check_domain,
    check_domains,
)

pytestmark = pytest.mark.functional

MG = "spf.mgf.cybermail.jp"
MG_RECORD = ("TXT", "v=spf1 ip4:203.0.113.0/24 -all")
ROOT = Path(__file__).resolve().parents[2]


def spf(value: str) -> tuple[str, str]:
    return ("TXT", value)


def ask(server: DnsServer, name: str, rdtype: str = "TXT", *, tcp: bool = False) -> dns.message.Message:
    query = dns.message.make_query(name, rdtype)
    if tcp:
        return dns.query.tcp(query, "127.0.0.1", port=server.port, timeout=2)
    return dns.query.udp(query, "127.0.0.1", port=server.port, timeout=2)


# -- the SPF check over DNS -------------------------------------------------------------------


def test_nested_include_chain_to_mailgates_passes_over_udp(
    dns_zone: DnsServer, dns_resolver: DnsPythonResolver
) -> None:
    dns_zone.set_zone(
        {
            "contoso.com": [
                spf("v=spf1 include:_spf.contoso.com -all"),
                ("TXT", "MS=ms123"),
                ("MX", "10 mx.contoso.com"),
            ],
            "_spf.contoso.com": [spf("v=spf1 include:relay.contoso.com ~all")],
            "relay.contoso.com": [spf(f"v=spf1 ip4:192.0.2.10 include:{MG} -all")],
            MG: [MG_RECORD],
        }
    )

    result = check_domain("contoso.com", required_include=MG, resolver=dns_resolver)

    assert result.ok, result.findings
    assert result.lookups == 3
    assert dns_zone.count("contoso.com", "TXT", "udp") == 1
    assert dns_zone.count("contoso.com", transport="tcp") == 0


def test_domain_with_no_txt_record_is_spf_missing(dns_zone: DnsServer, dns_resolver: DnsPythonResolver) -> None:
    dns_zone.set_zone({"contoso.com": [("MX", "10 mx.contoso.com"), ("A", "192.0.2.1")]})

    result = check_domain("contoso.com", required_include=MG, resolver=dns_resolver)

    assert result.codes == [ErrorCode.SPF_MISSING]
    assert "no TXT records" in result.findings[0][1]


def test_domain_that_does_not_exist_is_spf_missing_by_nxdomain(
    dns_zone: DnsServer, dns_resolver: DnsPythonResolver
) -> None:
    result = check_domain("nonexistent.example", required_include=MG, resolver=dns_resolver)

    assert result.codes == [ErrorCode.SPF_MISSING]
    assert "NXDOMAIN" in result.findings[0][1]


def test_record_without_mailgates_is_include_missing(dns_zone: DnsServer, dns_resolver: DnsPythonResolver) -> None:
    dns_zone.set_zone(
        {
            "contoso.com": [spf("v=spf1 include:spf.protection.outlook.com -all")],
            "spf.protection.outlook.com": [spf("v=spf1 ip4:40.92.0.0/15 ip6:2a01:111:f400::/48 -all")],
        }
    )

    result = check_domain("contoso.com", required_include=MG, resolver=dns_resolver)

    assert result.codes == [ErrorCode.SPF_INCLUDE_MISSING]


def test_more_than_ten_lookups_across_includes_is_too_many(
    dns_zone: DnsServer, dns_resolver: DnsPythonResolver
) -> None:
    dns_zone.set_zone(
        {
            "contoso.com": [spf(f"v=spf1 include:{MG} include:big.example -all")],
            "big.example": [spf("v=spf1 " + " ".join(f"include:s{n}.example" for n in range(12)) + " -all")],
            **{f"s{n}.example": [spf("v=spf1 a -all")] for n in range(12)},
            MG: [MG_RECORD],
        }
    )

    result = check_domain("contoso.com", required_include=MG, resolver=dns_resolver)

    assert result.codes == [ErrorCode.SPF_TOO_MANY_LOOKUPS]
    assert result.lookups == MAX_DNS_LOOKUPS + 1
    # Nothing is fetched past the limit.
    assert dns_zone.count("s5.example") == 0


def test_two_spf_records_are_multiple_records(dns_zone: DnsServer, dns_resolver: DnsPythonResolver) -> None:
    dns_zone.set_zone({"contoso.com": [spf(f"v=spf1 include:{MG} -all"), spf("v=spf1 mx -all")]})

    result = check_domain("contoso.com", required_include=MG, resolver=dns_resolver)

    assert result.codes == [ErrorCode.SPF_MULTIPLE_RECORDS]


def test_redirect_to_a_record_with_mailgates_passes(dns_zone: DnsServer, dns_resolver: DnsPythonResolver) -> None:
    dns_zone.set_zone(
        {
            "contoso.com": [spf("v=spf1 redirect=_spf.contoso.net")],
            "_spf.contoso.net": [spf(f"v=spf1 include:{MG} -all")],
            MG: [MG_RECORD],
        }
    )

    result = check_domain("contoso.com", required_include=MG, resolver=dns_resolver)

    assert result.ok, result.findings
    assert result.lookups == 2


def test_include_loop_is_too_many_lookups_and_terminates(dns_zone: DnsServer, dns_resolver: DnsPythonResolver) -> None:
    dns_zone.set_zone(
        {
            "contoso.com": [spf(f"v=spf1 include:a.example include:{MG} -all")],
            "a.example": [spf("v=spf1 include:b.example -all")],
            "b.example": [spf("v=spf1 include:a.example -all")],
            MG: [MG_RECORD],
        }
    )

    result = check_domain("contoso.com", required_include=MG, resolver=dns_resolver)

    assert result.codes == [ErrorCode.SPF_TOO_MANY_LOOKUPS]
    assert "loop" in result.findings[0][1]
    assert dns_zone.count("a.example") == 1


def test_servfail_of_the_domain_is_lookup_failed(dns_zone: DnsServer, dns_resolver: DnsPythonResolver) -> None:
    dns_zone.set_zone({"contoso.com": [spf(f"v=spf1 include:{MG} -all")]})
    dns_zone.set_servfail("contoso.com")

    result = check_domain("contoso.com", required_include=MG, resolver=dns_resolver)

    assert result.codes == [ErrorCode.SPF_LOOKUP_FAILED]
    assert result.retryable
    assert "SERVFAIL" in result.findings[0][1]


def test_servfail_inside_the_include_tree_is_lookup_failed_not_include_missing(
    dns_zone: DnsServer, dns_resolver: DnsPythonResolver
) -> None:
    dns_zone.set_zone(
        {
            "contoso.com": [spf("v=spf1 include:_spf.contoso.com -all")],
            "_spf.contoso.com": [spf(f"v=spf1 include:{MG}")],
        }
    )
    dns_zone.set_servfail("_spf.contoso.com")

    result = check_domain("contoso.com", required_include=MG, resolver=dns_resolver)

    assert result.codes == [ErrorCode.SPF_LOOKUP_FAILED]


def test_server_that_never_answers_is_lookup_failed_within_the_lifetime(
    dns_zone: DnsServer, dns_resolver: DnsPythonResolver
) -> None:
    dns_zone.set_zone({"contoso.com": [spf(f"v=spf1 include:{MG} -all")]})
    dns_zone.set_drop("contoso.com")

    result = check_domain("contoso.com", required_include=MG, resolver=dns_resolver)

    assert result.codes == [ErrorCode.SPF_LOOKUP_FAILED]
    assert "timeout" in result.findings[0][1]


def test_record_longer_than_255_bytes_arrives_as_several_strings_and_is_joined(
    dns_zone: DnsServer, dns_resolver: DnsPythonResolver
) -> None:
    record = "v=spf1 " + " ".join(f"ip4:198.51.100.{n}" for n in range(20)) + f" include:{MG} -all"
    assert 255 < len(record) < 500
    dns_zone.set_zone({"contoso.com": [spf(record)], MG: [MG_RECORD]})

    wire = ask(dns_zone, "contoso.com")
    result = check_domain("contoso.com", required_include=MG, resolver=dns_resolver)

    (rdata,) = wire.answer[0]
    assert isinstance(rdata, dns.rdtypes.ANY.TXT.TXT)
    assert [len(s) for s in rdata.strings] == [255, len(record) - 255]
    assert result.ok, result.findings
    assert result.record == record


def test_record_too_big_for_udp_is_fetched_over_tcp(dns_zone: DnsServer, dns_resolver: DnsPythonResolver) -> None:
    record = "v=spf1 " + " ".join(f"ip6:2001:db8:{n:x}::/48" for n in range(80)) + f" include:{MG} -all"
    assert len(record) > 1232
    dns_zone.set_zone({"contoso.com": [spf(record)], MG: [MG_RECORD]})

    result = check_domain("contoso.com", required_include=MG, resolver=dns_resolver)

    assert result.ok, result.findings
    assert result.record == record
    assert dns_zone.count("contoso.com", "TXT", "udp") == 1
    assert dns_zone.count("contoso.com", "TXT", "tcp") == 1


def test_check_domains_with_the_resolver_from_settings(dns_zone: DnsServer) -> None:
    dns_zone.set_zone(
        {
            "contoso.com": [spf(f"v=spf1 include:{MG} -all")],
            "fabrikam.com": [spf("v=spf1 mx -all")],
            MG: [MG_RECORD],
        }
    )
    resolver = DnsPythonResolver.from_settings(Settings(dns_nameserver="127.0.0.1", dns_port=dns_zone.port))

    results = check_domains(["contoso.com", "fabrikam.com"], required_include=MG, resolver=resolver)

    assert [r.codes for r in results] == [[], [ErrorCode.SPF_INCLUDE_MISSING]]


# -- the resolver's exceptions ------------------------------------------------------------------


def test_resolver_raises_a_distinct_exception_per_dns_outcome(
    dns_zone: DnsServer, dns_resolver: DnsPythonResolver
) -> None:
    dns_zone.set_zone({"mx-only.example": [("MX", "10 mx.example")], "broken.example": [spf("v=spf1 -all")]})
    dns_zone.set_servfail("broken.example")

    with pytest.raises(DnsNameNotFound):
        dns_resolver.txt("missing.example")
    with pytest.raises(DnsNoAnswer):
        dns_resolver.txt("mx-only.example")
    with pytest.raises(DnsLookupFailed):
        dns_resolver.txt("broken.example")
    with pytest.raises(DnsNameNotFound):
        dns_resolver.txt("bad..name.example")


# -- the server ---------------------------------------------------------------------------------


def test_server_answers_a_aaaa_mx_and_matches_names_case_insensitively(dns_zone: DnsServer) -> None:
    dns_zone.set_zone({"Contoso.com.": [("A", "192.0.2.1"), ("AAAA", "2001:db8::1"), ("MX", "10 mx.contoso.com")]})

    # Lower-cased: name compression may reuse the question's spelling for mx.contoso.com.
    answers = {t: ask(dns_zone, "CONTOSO.COM", t).answer[0][0].to_text().lower() for t in ("A", "AAAA", "MX")}

    assert answers == {"A": "192.0.2.1", "AAAA": "2001:db8::1", "MX": "10 mx.contoso.com."}


def test_server_distinguishes_nxdomain_from_a_name_without_that_type(dns_zone: DnsServer) -> None:
    dns_zone.set_zone({"contoso.com": [("A", "192.0.2.1")], "_spf.mail.fabrikam.com": [spf("v=spf1 -all")]})

    unknown = ask(dns_zone, "unknown.example")
    no_type = ask(dns_zone, "contoso.com", "TXT")
    empty_non_terminal = ask(dns_zone, "mail.fabrikam.com", "TXT")

    assert unknown.rcode() == dns.rcode.NXDOMAIN
    assert (no_type.rcode(), no_type.answer) == (dns.rcode.NOERROR, [])
    assert (empty_non_terminal.rcode(), empty_non_terminal.answer) == (dns.rcode.NOERROR, [])


def test_server_truncates_udp_answers_beyond_512_bytes_without_edns(dns_zone: DnsServer) -> None:
    dns_zone.set_zone({"contoso.com": [spf("v=spf1 " + "ip4:192.0.2.1 " * 50 + "-all")]})

    udp = ask(dns_zone, "contoso.com")
    tcp = ask(dns_zone, "contoso.com", tcp=True)

    assert udp.flags & dns.flags.TC
    assert udp.answer == []
    assert len(tcp.answer[0]) == 1


def test_records_added_while_running_are_served_and_queries_are_counted(dns_zone: DnsServer) -> None:
    dns_zone.add_record("contoso.com", "TXT", "first")
    dns_zone.add_record("contoso.com", "TXT", "second")

    answer = ask(dns_zone, "contoso.com")

    assert sorted(r.to_text() for r in answer.answer[0]) == ['"first"', '"second"']
    assert dns_zone.query_count == 1
    assert dns_zone.queries[0].name == "contoso.com"


def test_zone_can_be_replaced_while_clients_are_querying(dns_zone: DnsServer) -> None:
    zones = [{"contoso.com": [spf("v=spf1 a -all")]}, {"contoso.com": [spf("v=spf1 mx -all")]}]
    dns_zone.set_zone(zones[0])
    seen: list[str] = []
    errors: list[BaseException] = []

    def client() -> None:
        resolver = DnsPythonResolver("127.0.0.1", dns_zone.port, timeout=1, lifetime=2)
        try:
            for _ in range(25):
                seen.extend(resolver.txt("contoso.com"))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=client) for _ in range(4)]
    for thread in threads:
        thread.start()
    for n in range(50):
        dns_zone.set_zone(zones[n % 2])
    for thread in threads:
        thread.join()

    assert errors == []
    assert len(seen) == 100
    assert set(seen) <= {"v=spf1 a -all", "v=spf1 mx -all"}


def test_unknown_record_type_in_a_zone_is_rejected_at_set_up(dns_zone: DnsServer) -> None:
    with pytest.raises(ValueError, match="BOGUS"):
        dns_zone.set_zone({"contoso.com": [("BOGUS", "x")]})


def test_server_runs_standalone_from_a_json_zone(tmp_path: Path) -> None:
    zone_file = tmp_path / "zone.json"
    zone_file.write_text(json.dumps({"contoso.com": [["TXT", f"v=spf1 include:{MG} -all"]], MG: [list(MG_RECORD)]}))
    process = subprocess.Popen(
        [sys.executable, "-m", "exosim.dnsserver", "--port", "0", "--zone", str(zone_file)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        port = int(line.rsplit(":", 1)[1].split()[0])
        resolver = DnsPythonResolver("127.0.0.1", port, timeout=1, lifetime=2)

        result = check_domain("contoso.com", required_include=MG, resolver=resolver)

        assert result.ok, result.findings
    finally:
        process.terminate()
        process.wait(timeout=5)
    assert process.returncode == 0
