"""A small authoritative DNS server on loopback, for SPF checks with real DNS queries.

The SPF preflight sends real queries (UDP, falling back to TCP on truncation) through
dnspython. Faking the resolver in tests would leave exactly the parts that break in
production untested: wire format, multi-string TXT records, truncation, SERVFAIL, timeouts.
This server answers from an in-memory zone instead, so tests and the local stack exercise the
same code path as a customer's real DNS while staying offline and fast.

It is deliberately small: one flat zone, no delegation, no wildcards, no DNSSEC. What it does
model is what SPF checking meets in the wild:

- TXT values longer than 255 bytes are split into several character-strings, as every real
  zone must publish them; the client has to join them.
- UDP answers are capped at the client's EDNS payload size (512 bytes without EDNS) and sent
  truncated (TC) when too big, so a long record forces the client over to TCP.
- NXDOMAIN for unknown names; NOERROR with no answer for a known name (or an empty
  non-terminal, i.e. a parent of a known name) without records of the asked type.
- Per-name faults an operator cannot arrange on demand in real DNS: SERVFAIL, and "drop"
  (never answer, so the client times out).
- A log of queries, so a test can assert what was asked and over which transport.

Run it standalone for the local stack::

    python -m exosim.dnsserver --port 5353 --zone zone.json

where zone.json maps names to ``[type, value]`` pairs, e.g.
``{"contoso.com": [["TXT", "v=spf1 include:spf.mgf.cybermail.jp -all"]]}``.

This module imports nothing else from ``exosim`` so it can be used on its own.
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import json
import logging
import selectors
import socket
import struct
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Literal, Self

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rdtypes.ANY.TXT
import dns.rrset

Zone = Mapping[str, Sequence[tuple[str, str]]]
Transport = Literal["udp", "tcp"]

MAX_TXT_STRING = 255
"""A TXT character-string is length-prefixed by one byte (RFC 1035 §3.3)."""

DEFAULT_UDP_PAYLOAD_LIMIT = 1232
"""The UDP size the DNS flag day 2020 recommends; larger answers go over TCP."""

_NO_EDNS_UDP_LIMIT = 512
_TCP_READ_TIMEOUT = 5.0
_log = logging.getLogger(__name__)
_PORT_ATTEMPTS = 20


@dataclass(frozen=True)
class Query:
    """One question the server received, for tests to assert on."""

    name: str
    rdtype: str
    transport: Transport


def normalize_name(name: str) -> str:
    """Names compare case-insensitively and with or without the root dot, as in DNS."""
    return name.strip().rstrip(".").lower()


def split_txt(value: str) -> list[bytes]:
    """Split a TXT value into the <=255-byte character-strings a real zone publishes.

    An empty value is still one (empty) string: a TXT record always has at least one.
    """
    data = value.encode("utf-8")
    if not data:
        return [b""]
    return [data[i : i + MAX_TXT_STRING] for i in range(0, len(data), MAX_TXT_STRING)]


def _make_rdata(rdtype: dns.rdatatype.RdataType, value: str) -> dns.rdata.Rdata:
    if rdtype == dns.rdatatype.TXT:
        # Build TXT from raw strings: from_text would need quoting and would not split.
        return dns.rdtypes.ANY.TXT.TXT(dns.rdataclass.IN, dns.rdatatype.TXT, split_txt(value))
    # Relative names in values (an MX exchange, say) are taken as absolute, as zone files with
    # origin "." do; otherwise "10 mail.contoso.com" would render as a bare relative name.
    return dns.rdata.from_text(dns.rdataclass.IN, rdtype, value, origin=dns.name.root, relativize=False)


_Prepared = dict[str, dict[dns.rdatatype.RdataType, list[dns.rdata.Rdata]]]


def _prepare(zone: Zone) -> _Prepared:
    """Parse the whole zone up front, so a bad record fails at set-up, not mid-test."""
    prepared: _Prepared = {}
    for name, records in zone.items():
        by_type = prepared.setdefault(normalize_name(name), {})
        for rtype, value in records:
            rdtype = _parse_rdtype(rtype)
            by_type.setdefault(rdtype, []).append(_make_rdata(rdtype, value))
    return prepared


def _parse_rdtype(rtype: str) -> dns.rdatatype.RdataType:
    try:
        return dns.rdatatype.from_text(rtype.strip().upper())
    except dns.rdatatype.UnknownRdatatype as exc:
        raise ValueError(f"unknown DNS record type {rtype!r}") from exc


class DnsServer:
    """Authoritative answers from an in-memory zone over UDP and TCP on one port.

    Thread-safe: tests may change the zone or the faults while the serving thread answers.
    Use as a context manager, or call `start()` and `stop()`.
    """

    def __init__(
        self,
        zone: Zone | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        servfail: Iterable[str] = (),
        drop: Iterable[str] = (),
        ttl: int = 60,
        udp_payload_limit: int = DEFAULT_UDP_PAYLOAD_LIMIT,
    ) -> None:
        self._host = host
        self._requested_port = port
        self._port = port
        self._ttl = ttl
        self._udp_payload_limit = max(_NO_EDNS_UDP_LIMIT, udp_payload_limit)
        self._lock = threading.Lock()
        self._zone: _Prepared = _prepare(zone or {})
        self._servfail = {normalize_name(n) for n in servfail}
        self._drop = {normalize_name(n) for n in drop}
        self._queries: list[Query] = []
        self._udp: socket.socket | None = None
        self._tcp: socket.socket | None = None
        self._wake_r: socket.socket | None = None
        self._wake_w: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._conn_threads: set[threading.Thread] = set()

    # -- lifecycle -------------------------------------------------------------------------

    @property
    def host(self) -> str:
        """The address the server listens on."""
        return self._host

    @property
    def port(self) -> int:
        """The bound port (the ephemeral one chosen when constructed with port 0)."""
        return self._port

    @property
    def running(self) -> bool:
        """Whether the serving thread is up."""
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> Self:
        """Bind UDP and TCP on the same port and serve in a background thread."""
        if self._thread is not None:
            raise RuntimeError("DnsServer already started")
        self._udp, self._tcp = self._bind()
        self._port = self._udp.getsockname()[1]
        self._wake_r, self._wake_w = socket.socketpair()
        self._stopping.clear()
        self._thread = threading.Thread(target=self._serve, name=f"dns-{self._port}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the sockets; safe to call twice."""
        thread = self._thread
        if thread is None:
            return
        self._stopping.set()
        if self._wake_w is not None:
            with contextlib.suppress(OSError):
                self._wake_w.send(b"x")
        thread.join(timeout=5)
        for conn_thread in list(self._conn_threads):
            conn_thread.join(timeout=1)
        for sock in (self._udp, self._tcp, self._wake_r, self._wake_w):
            if sock is not None:
                sock.close()
        self._udp = self._tcp = self._wake_r = self._wake_w = None
        self._thread = None
        self._port = self._requested_port

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _bind(self) -> tuple[socket.socket, socket.socket]:
        """UDP and TCP must share one port; with port 0 retry if TCP's twin is taken."""
        family = socket.AF_INET6 if ipaddress.ip_address(self._host).version == 6 else socket.AF_INET
        attempts = _PORT_ATTEMPTS if self._requested_port == 0 else 1
        for attempt in range(attempts):
            udp = socket.socket(family, socket.SOCK_DGRAM)
            tcp = socket.socket(family, socket.SOCK_STREAM)
            try:
                udp.bind((self._host, self._requested_port))
                port = udp.getsockname()[1]
                tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                tcp.bind((self._host, port))
                tcp.listen(16)
            except OSError as exc:
                udp.close()
                tcp.close()
                if exc.errno != errno.EADDRINUSE or attempt == attempts - 1:
                    raise
                continue
            udp.setblocking(False)
            tcp.setblocking(False)
            return udp, tcp
        raise AssertionError("unreachable")  # pragma: no cover

    # -- zone and faults -------------------------------------------------------------------

    def set_zone(self, zone: Zone) -> None:
        """Replace every record (faults and the query log are kept)."""
        prepared = _prepare(zone)
        with self._lock:
            self._zone = prepared

    def add_record(self, name: str, rtype: str, value: str) -> None:
        """Add one record to a name, creating the name if needed."""
        rdtype = _parse_rdtype(rtype)
        rdata = _make_rdata(rdtype, value)
        with self._lock:
            by_type = self._zone.setdefault(normalize_name(name), {})
            by_type.setdefault(rdtype, []).append(rdata)

    def remove_name(self, name: str) -> None:
        """Forget a name and its records, so it answers NXDOMAIN."""
        with self._lock:
            self._zone.pop(normalize_name(name), None)

    def set_servfail(self, *names: str) -> None:
        """Answer SERVFAIL for these names, whatever the zone says (replaces the set)."""
        with self._lock:
            self._servfail = {normalize_name(n) for n in names}

    def set_drop(self, *names: str) -> None:
        """Never answer queries for these names, so clients time out (replaces the set)."""
        with self._lock:
            self._drop = {normalize_name(n) for n in names}

    def reset(self, zone: Zone | None = None) -> None:
        """A clean slate for the next test: the zone, no faults, an empty query log."""
        prepared = _prepare(zone or {})
        with self._lock:
            self._zone = prepared
            self._servfail = set()
            self._drop = set()
            self._queries = []

    # -- query log -------------------------------------------------------------------------

    @property
    def queries(self) -> list[Query]:
        """Every question received so far (a copy), oldest first."""
        with self._lock:
            return list(self._queries)

    @property
    def query_count(self) -> int:
        """How many questions were received over both transports."""
        with self._lock:
            return len(self._queries)

    def count(self, name: str, rtype: str | None = None, transport: Transport | None = None) -> int:
        """How many questions were received for a name (optionally one type or transport)."""
        key = normalize_name(name)
        wanted = rtype.upper() if rtype else None
        with self._lock:
            return sum(
                1
                for q in self._queries
                if q.name == key
                and (wanted is None or q.rdtype == wanted)
                and (transport is None or q.transport == transport)
            )

    def clear_queries(self) -> None:
        """Empty the query log."""
        with self._lock:
            self._queries = []

    # -- answering -------------------------------------------------------------------------

    def answer(self, wire: bytes, transport: Transport) -> bytes | None:
        """The wire response to one wire query, or None to stay silent.

        Public so the answering logic can be exercised without sockets. A bug in answering
        must not kill the serving thread (every later test would then time out instead of
        failing where the bug is), so it is logged and answered with SERVFAIL.
        """
        try:
            return self._answer(wire, transport)
        except Exception:
            _log.exception("DnsServer failed to answer a query")
            try:
                response = dns.message.make_response(dns.message.from_wire(wire))
            except Exception:
                return None
            response.set_rcode(dns.rcode.SERVFAIL)
            return response.to_wire()

    def _answer(self, wire: bytes, transport: Transport) -> bytes | None:
        try:
            query = dns.message.from_wire(wire)
        except dns.exception.DNSException:
            return None  # Not even a header we could echo: real servers drop these too.
        response = dns.message.make_response(query, our_payload=self._udp_payload_limit)
        response.flags |= dns.flags.AA
        response.flags &= ~dns.flags.RA
        if query.opcode() != dns.opcode.QUERY:
            response.set_rcode(dns.rcode.NOTIMP)
            return response.to_wire()
        if len(query.question) != 1:
            response.set_rcode(dns.rcode.FORMERR)
            return response.to_wire()
        question = query.question[0]
        key = normalize_name(question.name.to_text(omit_final_dot=True))
        rdtype = dns.rdatatype.RdataType(question.rdtype)
        with self._lock:
            self._queries.append(Query(key, dns.rdatatype.to_text(rdtype), transport))
            if key in self._drop:
                return None
            servfail = key in self._servfail
            records = self._zone.get(key)
            exists = records is not None or any(n.endswith("." + key) for n in self._zone)
            matching = list(records.get(rdtype, [])) if records is not None else []
        if servfail:
            response.set_rcode(dns.rcode.SERVFAIL)
        elif not exists:
            response.set_rcode(dns.rcode.NXDOMAIN)
        elif matching:
            rrset = dns.rrset.RRset(question.name, dns.rdataclass.IN, rdtype)
            for rdata in matching:
                rrset.add(rdata, self._ttl)
            response.answer.append(rrset)
        if transport == "tcp":
            return response.to_wire(max_size=65535)
        limit = query.payload if query.edns >= 0 else _NO_EDNS_UDP_LIMIT
        limit = max(_NO_EDNS_UDP_LIMIT, min(limit, self._udp_payload_limit))
        try:
            return response.to_wire(max_size=limit)
        except dns.exception.TooBig:
            # RFC 2181 §9: send what fits with TC set; the client retries over TCP.
            response.answer.clear()
            response.flags |= dns.flags.TC
            return response.to_wire(max_size=limit)

    # -- serving ---------------------------------------------------------------------------

    def _serve(self) -> None:
        assert self._udp is not None and self._tcp is not None and self._wake_r is not None
        with selectors.DefaultSelector() as selector:
            selector.register(self._udp, selectors.EVENT_READ)
            selector.register(self._tcp, selectors.EVENT_READ)
            selector.register(self._wake_r, selectors.EVENT_READ)
            while not self._stopping.is_set():
                for key, _ in selector.select(timeout=1.0):
                    if key.fileobj is self._udp:
                        self._serve_udp()
                    elif key.fileobj is self._tcp:
                        self._accept_tcp()

    def _serve_udp(self) -> None:
        assert self._udp is not None
        try:
            wire, peer = self._udp.recvfrom(65535)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            return  # e.g. ICMP port unreachable from an earlier reply's client
        reply = self.answer(wire, "udp")
        if reply is not None:
            with contextlib.suppress(OSError):
                self._udp.sendto(reply, peer)

    def _accept_tcp(self) -> None:
        assert self._tcp is not None
        try:
            conn, _ = self._tcp.accept()
        except (BlockingIOError, InterruptedError):
            return
        thread = threading.Thread(target=self._serve_tcp, args=(conn,), daemon=True)
        self._conn_threads.add(thread)
        thread.start()

    def _serve_tcp(self, conn: socket.socket) -> None:
        """RFC 7766: length-prefixed messages, possibly several on one connection."""
        try:
            conn.setblocking(True)
            conn.settimeout(_TCP_READ_TIMEOUT)
            while not self._stopping.is_set():
                header = _recv_exact(conn, 2)
                if header is None:
                    return
                (length,) = struct.unpack("!H", header)
                wire = _recv_exact(conn, length)
                if wire is None:
                    return
                reply = self.answer(wire, "tcp")
                if reply is not None:
                    conn.sendall(struct.pack("!H", len(reply)) + reply)
        except OSError:
            return
        finally:
            conn.close()
            self._conn_threads.discard(threading.current_thread())


def _recv_exact(conn: socket.socket, size: int) -> bytes | None:
    data = b""
    while len(data) < size:
        chunk = conn.recv(size - len(data))
        if not chunk:
            return None
        data += chunk
    return data


def load_zone_file(path: str) -> dict[str, list[tuple[str, str]]]:
    """Read a zone from JSON: ``{"name": [["TXT", "value"], ...], ...}``."""
    with open(path, encoding="utf-8") as handle:
        raw = json.load(handle)
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: the zone must be a JSON object of name -> [[type, value], ...]")
    zone: dict[str, list[tuple[str, str]]] = {}
    for name, records in raw.items():
        if not isinstance(records, list):
            raise ValueError(f"{path}: {name!r} must map to a list of [type, value] pairs")
        pairs: list[tuple[str, str]] = []
        for record in records:
            if not (isinstance(record, list) and len(record) == 2 and all(isinstance(p, str) for p in record)):
                raise ValueError(f"{path}: {name!r} has {record!r}, expected [type, value]")
            pairs.append((record[0], record[1]))
        zone[str(name)] = pairs
    return zone


if __name__ == "__main__":
    import argparse
    import signal

    parser = argparse.ArgumentParser(
        prog="python -m exosim.dnsserver",
        description="Serve a JSON zone over UDP and TCP (authoritative, loopback by default).",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=5353, help="UDP and TCP port (default 5353, 0 = any)")
    parser.add_argument("--zone", help='JSON file: {"name": [["TXT", "v=spf1 ..."], ...]}')
    parser.add_argument("--servfail", action="append", default=[], metavar="NAME", help="answer SERVFAIL for NAME")
    parser.add_argument("--drop", action="append", default=[], metavar="NAME", help="never answer NAME")
    args = parser.parse_args()

    stopped = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopped.set())
    server = DnsServer(
        load_zone_file(args.zone) if args.zone else {},
        host=args.host,
        port=args.port,
        servfail=args.servfail,
        drop=args.drop,
    )
    with server:
        print(f"DNS server listening on {server.host}:{server.port} (udp+tcp)", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            stopped.wait()
