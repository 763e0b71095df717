"""exosim: a local Exchange Online + Microsoft Entra ID for tests, `make run` and benchmarks.

It speaks the protocol of docs/exchange-protocol.md over HTTPS on loopback (client-credentials
tokens, the admin API's InvokeCommand with the connector cmdlets) with Exchange's own
semantics and quirks, and lets a test inject the failures the product must survive. The
product does not import it: the product's clients only see an HTTPS endpoint.

Start it with `python -m exosim --port 8443`, or in process with `Simulator`.

Names are imported lazily so that `exosim.dnsserver` (the local DNS server of the SPF tests)
does not load the HTTPS simulator and `cryptography` with it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from exosim.core import LogEntry
    from exosim.entra import DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET, EXCHANGE_SCOPE
    from exosim.faults import FAULT_KINDS, SHAPES
    from exosim.options import TenantOptions
    from exosim.simulator import Simulator

_EXPORTS = {
    "DEFAULT_CLIENT_ID": "exosim.entra",
    "DEFAULT_CLIENT_SECRET": "exosim.entra",
    "EXCHANGE_SCOPE": "exosim.entra",
    "FAULT_KINDS": "exosim.faults",
    "SHAPES": "exosim.faults",
    "LogEntry": "exosim.core",
    "Simulator": "exosim.simulator",
    "TenantOptions": "exosim.options",
}

__all__ = [
    "DEFAULT_CLIENT_ID",
    "DEFAULT_CLIENT_SECRET",
    "EXCHANGE_SCOPE",
    "FAULT_KINDS",
    "SHAPES",
    "LogEntry",
    "Simulator",
    "TenantOptions",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'exosim' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
