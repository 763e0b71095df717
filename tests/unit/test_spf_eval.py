"""SPF evaluation without a network: a dict-backed resolver stands in for DNS.

These pin down the RFC 7208 rules the preflight relies on (what is an SPF record, which terms
cost a look-up, how includes and redirects are followed) and that a broken or hostile record
can neither crash the check nor make it query without bound.
"""

from __future__ import annotations

import pytest

from shared.errors import ErrorCode
from shared.spf import (
    MAX_DNS_LOOKUPS,
    DnsLookupFailed,
    DnsNameNotFound,
    DnsNoAnswer,
    SpfResult,
    Term,
    check_domain,
    check_domains,
    is_spf_record,
    parse_terms,
)

MG = "spf.mgf.cybermail.jp"
MG_RECORD = "v=spf1 ip4:203.0.113.0/24 -all"


class FakeDns:
    """TXT records from a dict: a missing name is NXDOMAIN, an empty list is "no TXT"."""

    def __init__(self, zone: dict[str, list[str]], *, failing: set[str] | None = None) -> None:
        self.zone = zone
        self.failing = failing or set()
        self.asked: list[str] = []

    def txt(self, name: str) -> list[str]:
        self.asked.append(name)
        if name in self.failing:
            raise DnsLookupFailed(name, "DNS timeout: the DNS operation timed out")
        if name not in self.zone:
            raise DnsNameNotFound(name, "does not exist (NXDOMAIN)")
        if not self.zone[name]:
            raise DnsNoAnswer(name, "has no TXT records")
        return list(self.zone[name])


def check(zone: dict[str, list[str]], domain: str = "contoso.com", required: str = MG, **kw: set[str]) -> SpfResult:
    return check_domain(domain, required_include=required, resolver=FakeDns(zone, **kw))


def chain(prefix: str, length: int, last: str) -> dict[str, list[str]]:
    """prefix0 -> prefix1 -> ... -> prefix{length-1} -> include:last, one include each."""
    zone = {f"{prefix}{i}.example": [f"v=spf1 include:{prefix}{i + 1}.example -all"] for i in range(length - 1)}
    zone[f"{prefix}{length - 1}.example"] = [f"v=spf1 include:{last} -all"]
    return zone


# -- what is an SPF record ------------------------------------------------------------------


@pytest.mark.parametrize("text", ["v=spf1 -all", "v=spf1", "V=SPF1 include:x.example ~all", "v=Spf1 mx"])
def test_version_tag_is_case_insensitive_and_may_end_the_record(text: str) -> None:
    assert is_spf_record(text)


@pytest.mark.parametrize(
    "text",
    ["v=spf10 -all", "v=spf1x -all", " v=spf1 -all", "spf1 -all", "v=spf2.0/pra -all", "v=DMARC1; p=none", ""],
)
def test_text_that_only_resembles_the_version_tag_is_not_spf(text: str) -> None:
    assert not is_spf_record(text)


def test_terms_keep_qualifiers_modifiers_and_drop_cidr_from_a_and_mx_domains() -> None:
    terms = parse_terms("v=spf1 -Include:Spf.Example ~a:web.example/24 mx ip4:192.0.2.0/24 redirect=r.example ?all")

    assert terms == [
        Term("-Include:Spf.Example", "include", "Spf.Example", "-"),
        Term("~a:web.example/24", "a", "web.example", "~"),
        Term("mx", "mx", None),
        Term("ip4:192.0.2.0/24", "ip4", "192.0.2.0/24"),
        Term("redirect=r.example", "redirect", "r.example", modifier=True),
        Term("?all", "all", None, "?"),
    ]


# -- missing and multiple records -------------------------------------------------------------


def test_domain_without_txt_records_is_spf_missing() -> None:
    result = check({"contoso.com": []})

    assert result.codes == [ErrorCode.SPF_MISSING]
    assert result.record is None
    assert not result.ok


def test_domain_that_does_not_exist_is_spf_missing_naming_nxdomain() -> None:
    result = check({})

    assert result.codes == [ErrorCode.SPF_MISSING]
    assert "NXDOMAIN" in result.findings[0][1]


def test_txt_records_that_are_not_spf_leave_spf_missing() -> None:
    result = check({"contoso.com": ["google-site-verification=abc", "v=spf10 include:spf.mgf.cybermail.jp -all"]})

    assert result.codes == [ErrorCode.SPF_MISSING]
    assert "none of the 2 TXT records" in result.findings[0][1]


def test_two_spf_records_are_a_permerror_and_nothing_else_is_evaluated() -> None:
    dns = FakeDns({"contoso.com": [f"v=spf1 include:{MG} -all", "v=spf1 include:spf.protection.outlook.com -all"]})

    result = check_domain("contoso.com", required_include=MG, resolver=dns)

    assert result.codes == [ErrorCode.SPF_MULTIPLE_RECORDS]
    assert result.record is None
    assert "spf.protection.outlook.com" in result.findings[0][1]
    assert dns.asked == ["contoso.com"]


def test_spf_record_among_other_txt_records_is_found() -> None:
    result = check({"contoso.com": ["MS=ms12345", f"v=spf1 include:{MG} -all"], MG: [MG_RECORD]})

    assert result.ok
    assert result.record == f"v=spf1 include:{MG} -all"


# -- the required include ---------------------------------------------------------------------


def test_direct_include_of_mailgates_passes_with_one_lookup() -> None:
    result = check({"contoso.com": [f"v=spf1 include:{MG} -all"], MG: [MG_RECORD]})

    assert result.ok
    assert result.findings == []
    assert result.lookups == 1


def test_include_reached_through_a_nested_chain_passes() -> None:
    zone = {"contoso.com": ["v=spf1 include:c0.example -all"], **chain("c", 3, MG), MG: [MG_RECORD]}

    result = check(zone)

    assert result.ok
    assert result.lookups == 4


def test_include_reached_through_redirect_passes() -> None:
    zone = {"contoso.com": ["v=spf1 redirect=_spf.contoso.com"], "_spf.contoso.com": [f"v=spf1 include:{MG} -all"]}
    zone[MG] = [MG_RECORD]

    result = check(zone)

    assert result.ok
    assert result.lookups == 2


def test_redirect_to_the_required_domain_itself_passes() -> None:
    result = check({"contoso.com": [f"v=spf1 redirect={MG}"], MG: [MG_RECORD]})

    assert result.ok


def test_record_without_mailgates_is_include_missing_naming_the_include() -> None:
    zone = {"contoso.com": ["v=spf1 include:spf.protection.outlook.com -all"]}
    zone["spf.protection.outlook.com"] = ["v=spf1 ip4:40.92.0.0/15 -all"]

    result = check(zone)

    assert result.codes == [ErrorCode.SPF_INCLUDE_MISSING]
    assert f"include:{MG}" in result.findings[0][1]


def test_mailgates_named_in_another_mechanism_is_not_an_include() -> None:
    result = check({"contoso.com": [f"v=spf1 a:{MG} exists:{MG} -all"]})

    assert result.codes == [ErrorCode.SPF_INCLUDE_MISSING]


def test_include_match_ignores_case_trailing_dot_and_an_include_prefix_in_the_setting() -> None:
    zone = {"contoso.com": ["v=spf1 include:SPF.MGF.CyberMail.jp. -all"], MG: [MG_RECORD]}

    assert check(zone, required=f"include:{MG}").ok
    assert check(zone, required="Spf.Mgf.Cybermail.JP.").ok


def test_empty_required_include_skips_the_include_check() -> None:
    result = check({"contoso.com": ["v=spf1 mx -all"]}, required="")

    assert result.ok
    assert result.lookups == 1


def test_include_of_a_domain_without_spf_is_noted_and_explains_the_missing_include() -> None:
    zone = {"contoso.com": ["v=spf1 include:spf.mgf.cybermail.co include:nospf.example -all"], "nospf.example": []}

    result = check(zone)

    assert result.codes == [ErrorCode.SPF_INCLUDE_MISSING]
    detail = result.findings[0][1]
    assert "spf.mgf.cybermail.co does not exist (NXDOMAIN)" in detail
    assert "nospf.example has no TXT records" in detail
    assert len(result.notes) == 2


def test_include_of_a_domain_with_only_non_spf_txt_before_mailgates_is_broken_include() -> None:
    # Recipients evaluate include:other.example first and return permerror (RFC 7208 §5.2),
    # so MailGates' mail never reaches the include after it.
    zone = {"contoso.com": [f"v=spf1 include:other.example include:{MG} -all"], "other.example": ["hello"]}
    zone[MG] = [MG_RECORD]

    result = check(zone)

    assert result.codes == [ErrorCode.SPF_BROKEN_INCLUDE]
    assert "'include:other.example' in contoso.com: other.example has no SPF record" in result.findings[0][1]
    assert result.notes == [
        "'include:other.example' in contoso.com: other.example has no SPF record; "
        "recipients treat this as a permanent error"
    ]


def test_include_of_a_domain_with_only_non_spf_txt_after_mailgates_is_only_noted() -> None:
    zone = {"contoso.com": [f"v=spf1 include:{MG} include:other.example -all"], "other.example": ["hello"]}
    zone[MG] = [MG_RECORD]

    result = check(zone)

    assert result.ok
    assert result.lookups == 2
    assert result.notes == [
        "'include:other.example' in contoso.com: other.example has no SPF record; "
        "recipients treat this as a permanent error"
    ]


@pytest.mark.parametrize(
    ("zone", "why"),
    [
        ({}, "gone.example does not exist (NXDOMAIN)"),
        ({"gone.example": []}, "gone.example has no TXT records"),
        ({"gone.example": ["v=spf1 -all", "v=spf1 a -all"]}, "gone.example publishes 2 SPF records"),
    ],
)
def test_every_kind_of_broken_include_before_mailgates_is_broken_include(zone: dict[str, list[str]], why: str) -> None:
    result = check({"contoso.com": [f"v=spf1 include:gone.example include:{MG} -all"], MG: [MG_RECORD], **zone})

    assert result.codes == [ErrorCode.SPF_BROKEN_INCLUDE]
    assert why in result.findings[0][1]


def test_broken_include_nested_before_mailgates_is_broken_include() -> None:
    zone = {
        "contoso.com": [f"v=spf1 include:_spf.contoso.com include:{MG} -all"],
        "_spf.contoso.com": ["v=spf1 include:gone.example -all"],
        MG: [MG_RECORD],
    }

    result = check(zone)

    assert result.codes == [ErrorCode.SPF_BROKEN_INCLUDE]
    assert "'include:gone.example' in _spf.contoso.com" in result.findings[0][1]


def test_broken_redirect_before_mailgates_is_broken_include_and_after_it_a_note() -> None:
    before = check({
        "contoso.com": [f"v=spf1 include:_spf.contoso.com include:{MG} -all"],
        "_spf.contoso.com": ["v=spf1 mx redirect=gone.example"],
        MG: [MG_RECORD],
    })
    after = check({
        "contoso.com": ["v=spf1 include:_spf.contoso.com redirect=gone.example"],
        "_spf.contoso.com": [f"v=spf1 include:{MG} ~all"],
        MG: [MG_RECORD],
    })

    assert before.codes == [ErrorCode.SPF_BROKEN_INCLUDE]
    assert "'redirect=gone.example' in _spf.contoso.com" in before.findings[0][1]
    # MailGates' mail matches include:_spf.contoso.com, so it never reaches the redirect.
    assert after.ok, after.findings
    assert any("redirect=gone.example" in note for note in after.notes)


def test_broken_include_and_no_mailgates_is_include_missing_naming_the_broken_include() -> None:
    result = check({"contoso.com": ["v=spf1 include:gone.example mx -all"]})

    assert result.codes == [ErrorCode.SPF_INCLUDE_MISSING]
    assert "gone.example does not exist (NXDOMAIN)" in result.findings[0][1]


def test_dns_failure_before_a_broken_include_still_reports_the_broken_include() -> None:
    zone = {"contoso.com": [f"v=spf1 include:slow.example include:gone.example include:{MG} -all"], MG: [MG_RECORD]}

    result = check(zone, failing={"slow.example"})

    assert result.codes == [ErrorCode.SPF_BROKEN_INCLUDE, ErrorCode.SPF_LOOKUP_FAILED]


# -- evaluation order and qualifiers (RFC 7208 §4.6.2, §5.1) ------------------------------------


@pytest.mark.parametrize("all_term", ["-all", "~all", "?all", "+all", "all"])
def test_include_after_all_is_never_evaluated_but_is_counted(all_term: str) -> None:
    dns = FakeDns({"contoso.com": [f"v=spf1 ip4:192.0.2.1 {all_term} include:{MG} a:x.example"], MG: [MG_RECORD]})

    result = check_domain("contoso.com", required_include=MG, resolver=dns)

    assert result.codes == [ErrorCode.SPF_INCLUDE_MISSING]
    assert f"comes after '{all_term}'" in result.findings[0][1]
    # Not evaluated by recipients, but counted so the limit check errs on the safe side;
    # what the include names is never read.
    assert result.lookups == 2
    assert dns.asked == ["contoso.com"]
    assert any("never evaluated" in note for note in result.notes)


def test_terms_after_all_can_push_the_count_over_the_limit() -> None:
    record = f"v=spf1 include:{MG} a mx a mx a mx a mx a -all mx"

    result = check({"contoso.com": [record], MG: [MG_RECORD]})

    assert result.codes == [ErrorCode.SPF_TOO_MANY_LOOKUPS]
    assert "after 'all'" in result.findings[0][1]


def test_include_after_all_in_a_nested_record_does_not_authorise() -> None:
    zone = {
        "contoso.com": ["v=spf1 include:_spf.contoso.com -all"],
        "_spf.contoso.com": [f"v=spf1 ~all include:{MG}"],
        MG: [MG_RECORD],
    }

    assert check(zone).codes == [ErrorCode.SPF_INCLUDE_MISSING]


@pytest.mark.parametrize(("qualifier", "result"), [("-", "fail"), ("~", "softfail"), ("?", "neutral")])
def test_include_of_mailgates_with_a_non_pass_qualifier_does_not_authorise(qualifier: str, result: str) -> None:
    checked = check({"contoso.com": [f"v=spf1 {qualifier}include:{MG} -all"], MG: [MG_RECORD]})

    assert checked.codes == [ErrorCode.SPF_INCLUDE_MISSING]
    assert f"gives MailGates' mail {result}, not pass" in checked.findings[0][1]


def test_explicit_pass_qualifier_authorises() -> None:
    assert check({"contoso.com": [f"v=spf1 +include:{MG} -all"], MG: [MG_RECORD]}).ok


def test_non_pass_include_of_a_record_that_reaches_mailgates_does_not_authorise() -> None:
    zone = {
        "contoso.com": ["v=spf1 ~include:_spf.contoso.com -all"],
        "_spf.contoso.com": [f"v=spf1 include:{MG} -all"],
        MG: [MG_RECORD],
    }

    assert check(zone).codes == [ErrorCode.SPF_INCLUDE_MISSING]


def test_fail_qualified_mailgates_inside_an_include_is_a_non_match_and_evaluation_goes_on() -> None:
    # The nested record gives MailGates' mail fail, so include:_spf.contoso.com does not
    # match (RFC 7208 §5.2) and the outer record goes on to its own include of MailGates.
    zone = {
        "contoso.com": [f"v=spf1 include:_spf.contoso.com include:{MG} -all"],
        "_spf.contoso.com": [f"v=spf1 -include:{MG} -all"],
        MG: [MG_RECORD],
    }

    assert check(zone).ok


def test_first_matching_include_of_mailgates_decides() -> None:
    fail_first = check({"contoso.com": [f"v=spf1 -include:{MG} include:{MG} -all"], MG: [MG_RECORD]})
    pass_first = check({"contoso.com": [f"v=spf1 include:{MG} -include:{MG} -all"], MG: [MG_RECORD]})

    assert fail_first.codes == [ErrorCode.SPF_INCLUDE_MISSING]
    assert pass_first.ok


def test_include_with_macros_is_counted_but_not_followed() -> None:
    dns = FakeDns({"contoso.com": [f"v=spf1 include:%{{i}}._ip.example include:{MG} -all"], MG: [MG_RECORD]})

    result = check_domain("contoso.com", required_include=MG, resolver=dns)

    assert result.ok
    assert result.lookups == 2
    assert "macros" in result.notes[0]
    assert all("%" not in name for name in dns.asked)


# -- the 10-look-up limit ---------------------------------------------------------------------


def test_exactly_ten_lookups_is_within_the_limit() -> None:
    record = f"v=spf1 a mx ptr exists:x.example a:b.example mx:c.example a a mx include:{MG} -all"

    result = check({"contoso.com": [record], MG: [MG_RECORD]})

    assert result.ok
    assert result.lookups == MAX_DNS_LOOKUPS


def test_ip4_ip6_all_and_exp_cost_no_lookup() -> None:
    record = f"v=spf1 ip4:192.0.2.1 ip6:2001:db8::/32 include:{MG} exp=explain.example -all"

    assert check({"contoso.com": [record], MG: [MG_RECORD]}).lookups == 1


def test_eleven_lookups_is_too_many() -> None:
    record = f"v=spf1 a mx ptr exists:x.example a:b.example mx:c.example a a mx a include:{MG} -all"

    result = check({"contoso.com": [record], MG: [MG_RECORD]})

    assert result.codes == [ErrorCode.SPF_TOO_MANY_LOOKUPS]
    assert result.lookups == MAX_DNS_LOOKUPS + 1
    assert f"include:{MG}" in result.findings[0][1]


def test_lookups_are_counted_recursively_across_includes() -> None:
    zone = {
        "contoso.com": [f"v=spf1 include:one.example include:two.example include:{MG} -all"],
        "one.example": ["v=spf1 a mx ptr include:deep.example -all"],
        "two.example": ["v=spf1 a mx -all"],
        "deep.example": ["v=spf1 a mx exists:e.example -all"],
        MG: [MG_RECORD],
    }

    result = check(zone)

    assert result.codes == [ErrorCode.SPF_TOO_MANY_LOOKUPS]
    assert result.lookups == MAX_DNS_LOOKUPS + 1


def test_redirect_counts_as_a_lookup_and_is_ignored_when_all_is_present() -> None:
    counted = check({"contoso.com": ["v=spf1 mx redirect=r.example"], "r.example": [f"v=spf1 include:{MG} -all"]})
    ignored = check({"contoso.com": ["v=spf1 mx -all redirect=r.example"], "r.example": [f"v=spf1 include:{MG} -all"]})

    assert counted.ok
    assert counted.lookups == 3
    assert ignored.codes == [ErrorCode.SPF_INCLUDE_MISSING]
    assert ignored.lookups == 1
    assert "ignored" in ignored.notes[0]


def test_counting_stops_past_the_limit_and_no_record_is_fetched_after_it() -> None:
    includes = " ".join(f"include:i{n}.example" for n in range(50))
    zone = {"contoso.com": [f"v=spf1 {includes} include:{MG} -all"]}
    zone.update({f"i{n}.example": ["v=spf1 -all"] for n in range(50)})
    dns = FakeDns(zone)

    result = check_domain("contoso.com", required_include=MG, resolver=dns)

    assert result.lookups == MAX_DNS_LOOKUPS + 1
    assert len(dns.asked) == 1 + MAX_DNS_LOOKUPS
    # The required include is written in the record itself, so it is not reported missing.
    assert result.codes == [ErrorCode.SPF_TOO_MANY_LOOKUPS]


def test_very_deep_include_chain_ends_at_the_limit_without_recursing_further() -> None:
    zone = {"contoso.com": ["v=spf1 include:d0.example -all"], **chain("d", 500, MG)}
    dns = FakeDns(zone)

    result = check_domain("contoso.com", required_include=MG, resolver=dns)

    assert len(dns.asked) == 1 + MAX_DNS_LOOKUPS
    assert result.codes == [ErrorCode.SPF_INCLUDE_MISSING, ErrorCode.SPF_TOO_MANY_LOOKUPS]
    assert "stopped at the 10-look-up limit" in result.findings[0][1]


def test_include_loop_is_reported_and_terminates() -> None:
    zone = {
        "contoso.com": [f"v=spf1 include:{MG} include:a.example -all"],
        "a.example": ["v=spf1 include:b.example -all"],
        "b.example": ["v=spf1 include:a.example -all"],
        MG: [MG_RECORD],
    }

    result = check(zone)

    assert result.codes == [ErrorCode.SPF_TOO_MANY_LOOKUPS]
    assert "include loop contoso.com -> a.example -> b.example -> a.example" in result.findings[0][1]


def test_record_including_its_own_domain_is_a_loop() -> None:
    result = check({"contoso.com": [f"v=spf1 include:contoso.com include:{MG} -all"], MG: [MG_RECORD]})

    assert result.codes == [ErrorCode.SPF_TOO_MANY_LOOKUPS]
    assert "contoso.com -> contoso.com" in result.findings[0][1]


def test_same_include_reached_twice_is_counted_twice_but_is_not_a_loop() -> None:
    zone = {
        "contoso.com": [f"v=spf1 include:a.example include:b.example include:{MG} -all"],
        "a.example": ["v=spf1 include:shared.example -all"],
        "b.example": ["v=spf1 include:shared.example -all"],
        "shared.example": ["v=spf1 mx -all"],
        MG: [MG_RECORD],
    }

    result = check(zone)

    assert result.ok
    assert result.lookups == 7


# -- DNS failures -----------------------------------------------------------------------------


def test_failure_of_the_domains_own_lookup_is_lookup_failed_and_retryable() -> None:
    result = check({"contoso.com": [f"v=spf1 include:{MG} -all"]}, failing={"contoso.com"})

    assert result.codes == [ErrorCode.SPF_LOOKUP_FAILED]
    assert result.retryable
    assert "timed out" in result.findings[0][1]


def test_failure_inside_the_tree_is_lookup_failed_not_include_missing() -> None:
    zone = {"contoso.com": ["v=spf1 include:_spf.contoso.com -all"], "_spf.contoso.com": [f"v=spf1 include:{MG}"]}

    result = check(zone, failing={"_spf.contoso.com"})

    assert result.codes == [ErrorCode.SPF_LOOKUP_FAILED]
    assert "include:_spf.contoso.com" in result.findings[0][1]


# -- several domains and the stored shape -----------------------------------------------------


def test_check_domains_keeps_order_and_queries_a_shared_include_once() -> None:
    zone = {
        "contoso.com": [f"v=spf1 include:{MG} -all"],
        "fabrikam.com": [f"v=spf1 include:{MG} ~all"],
        "nospf.com": [],
        MG: [MG_RECORD],
    }
    dns = FakeDns(zone)

    results = check_domains(["Contoso.com.", "fabrikam.com", "nospf.com"], required_include=MG, resolver=dns)

    assert [r.domain for r in results] == ["contoso.com", "fabrikam.com", "nospf.com"]
    assert [r.ok for r in results] == [True, True, False]
    assert dns.asked.count(MG) == 1


def test_to_dict_stores_findings_in_the_error_shape_and_round_trips() -> None:
    result = check({"contoso.com": ["v=spf1 include:_spf.contoso.com -all"]}, failing={"_spf.contoso.com"})

    stored = result.to_dict()

    assert stored["ok"] is False
    assert stored["domain"] == "contoso.com"
    assert stored["lookups"] == 1
    finding = stored["findings"][0]  # type: ignore[index]
    assert finding["code"] == "SPF_LOOKUP_FAILED"
    assert finding["retryable"] is True
    assert finding["hint_ja"]
    assert SpfResult.from_dict(stored) == result


def test_ok_result_stores_no_findings() -> None:
    stored = check({"contoso.com": [f"v=spf1 include:{MG} -all"], MG: [MG_RECORD]}).to_dict()

    assert stored["ok"] is True
    assert stored["findings"] == []
    assert stored["record"] == f"v=spf1 include:{MG} -all"


# -- include placement and qualifiers found in review -------------------------------------------


def spf(record: str, **extra: list[str]) -> SpfResult:
    return check({"contoso.com": [record], MG: [MG_RECORD], **extra})


def test_an_include_after_all_does_not_authorise_mailgates() -> None:
    result = spf(f"v=spf1 -all include:{MG}")
    assert result.codes == [ErrorCode.SPF_INCLUDE_MISSING]


def test_a_fail_qualified_include_does_not_authorise_mailgates() -> None:
    result = spf(f"v=spf1 -include:{MG} ~all")
    assert result.codes == [ErrorCode.SPF_INCLUDE_MISSING]


def test_a_broken_include_before_mailgates_is_a_finding() -> None:
    result = spf(f"v=spf1 include:gone.example include:{MG} -all")
    assert not result.ok
    assert result.codes == [ErrorCode.SPF_BROKEN_INCLUDE]
