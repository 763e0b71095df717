"""The sample activation notices of `make run`, and the simulated tenants they provision.

A newcomer's first run should show the product doing its real job end to end: notices
arriving the two ways they arrive in production (on the queue from the contract system, and
POSTed by an operator), connectors created and validated in Exchange, SPF checked against
real DNS answers, and one tenant throttled so the retry path is visible. The simulated
tenants are therefore set up like real customers: each has its own custom domain whose SPF
record includes the vendor's include, next to its `.onmicrosoft.com` domain.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from exosim import Simulator
from exosim.dnsserver import DnsServer

# The records a customer publishes after following the vendor's SPF page, and those of the
# names they include, so the product's SPF walk resolves every include it meets.
MICROSOFT_SPF_INCLUDE = "spf.protection.outlook.com"
_INCLUDED_RECORDS = {
    MICROSOFT_SPF_INCLUDE: "v=spf1 ip4:40.92.0.0/15 ip4:40.107.0.0/16 ip4:52.100.0.0/14 -all",
}
_VENDOR_INCLUDE_RECORD = "v=spf1 ip4:203.0.113.0/24 ip4:198.51.100.0/24 -all"


@dataclass(frozen=True)
class Sample:
    """One sample notice file: its exact text (sent as is) and the fields the demo needs."""

    path: Path
    text: str
    notice_id: str
    tenant_id: str
    customer_name: str
    custom_domain: str
    initial_domain: str

    @classmethod
    def load(cls, path: Path) -> Sample:
        text = path.read_text(encoding="utf-8")
        data: dict[str, Any] = json.loads(text)
        label = _tenant_label(data)
        tenant_domain = str(data.get("tenant_domain") or f"{label}.onmicrosoft.com").lower()
        return cls(
            path=path,
            text=text,
            notice_id=str(data["notice_id"]),
            tenant_id=str(data["tenant_id"]).lower(),
            customer_name=str(data.get("customer_name") or ""),
            custom_domain=f"{label}.co.jp",
            initial_domain=tenant_domain,
        )


def _tenant_label(data: dict[str, Any]) -> str:
    """A readable name for the simulated tenant: from its .onmicrosoft.com domain, else its recipient."""
    tenant_domain = data.get("tenant_domain")
    if isinstance(tenant_domain, str) and tenant_domain:
        return tenant_domain.split(".", 1)[0].lower()
    recipient = data.get("validation_recipient")
    if isinstance(recipient, str) and "@" in recipient:
        return recipient.rsplit("@", 1)[1].split(".", 1)[0].lower()
    return f"tenant-{str(data.get('tenant_id', 'x'))[:8].lower()}"


def load_samples(directory: Path) -> list[Sample]:
    """Every `*.json` directly in `directory` (the invalid examples live in a subfolder), by file name."""
    samples = [Sample.load(path) for path in sorted(directory.glob("*.json"))]
    if not samples:
        raise FileNotFoundError(f"no sample notices (*.json) in {directory}")
    return samples


def prepare_tenants(
    simulator: Simulator,
    dns: DnsServer,
    samples: list[Sample],
    *,
    required_include: str,
    throttled: Sample | None,
    throttle_count: int,
) -> None:
    """Give each sample tenant a custom domain with a passing SPF record; throttle one of them."""
    zone: dict[str, list[tuple[str, str]]] = {name: [("TXT", record)] for name, record in _INCLUDED_RECORDS.items()}
    includes = [f"include:{MICROSOFT_SPF_INCLUDE}"]
    if required_include:
        zone[required_include] = [("TXT", _VENDOR_INCLUDE_RECORD)]
        includes.append(f"include:{required_include}")
    for sample in samples:
        simulator.configure_tenant(sample.tenant_id, accepted_domains=[sample.custom_domain, sample.initial_domain])
        zone[sample.custom_domain] = [("TXT", f"v=spf1 {' '.join(includes)} -all"),
                                      ("TXT", "google-site-verification=local-sample")]
    dns.reset(zone)
    if throttled is not None and throttle_count > 0:
        simulator.fail_next(throttled.tenant_id, throttle_count, "throttle")
