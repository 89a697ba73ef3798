"""The header rule: real DNS built by dnspython passes, other protocols' first bytes fail, per rule."""

from __future__ import annotations

import ssl
import struct

import dns.edns
import dns.flags
import dns.message
import dns.opcode
import dns.rcode
import dns.update
import numpy as np
import pyarrow as pa
import pytest

from portprint.udfs.header_rule import REASONS, reasons_from_arrow


def verdicts(items: list[tuple[bytes | None, int]], orig_bytes: list[int] | None = None) -> list[str]:
    prefixes = [None if p is None else p[:64] for p, _ in items]
    stored = [0 if p is None else len(p) for p, _ in items]
    sent = orig_bytes or [len(p or b"") for p, _ in items]
    codes = reasons_from_arrow(pa.array(prefixes, pa.binary()), np.array([t for _, t in items], np.int8),
                               np.array(sent, np.int64), np.array(stored, np.int32))
    return [REASONS[c] for c in codes]


def tcp(wire: bytes) -> bytes:
    return struct.pack("!H", len(wire)) + wire


def genuine_dns() -> list[bytes]:
    q = dns.message.make_query("www.example.com", "A")
    edns = dns.message.make_query("example.net", "DNSKEY", want_dnssec=True)
    iterative = dns.message.make_query("example.org", "NS")
    iterative.flags &= ~dns.flags.RD
    notify = dns.message.make_query("example.com", "SOA")
    notify.set_opcode(dns.opcode.NOTIFY)
    notify.flags = dns.flags.AA | (dns.opcode.NOTIFY << 11)
    update = dns.update.UpdateMessage("example.com")
    update.add("host", 300, "A", "192.0.2.7")
    nx = dns.message.make_response(q)
    nx.set_rcode(dns.rcode.NXDOMAIN)
    zflag = dns.message.make_query("example.com", "A")
    zflag.flags |= 0x0040  # dig +zflag
    # RFC 7873 cookie refresh: no question, one OPT record carrying a client cookie.
    cookie = dns.message.Message()
    cookie.flags = dns.flags.RD
    cookie.use_edns(0, options=[dns.edns.GenericOption(dns.edns.COOKIE, b"\x01" * 8)])
    return [m.to_wire() for m in (q, edns, iterative, notify, update, nx, zflag, cookie)]


def client_hello() -> bytes:
    ctx = ssl.create_default_context()
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(incoming, outgoing, server_hostname="portprint.example")
    with pytest.raises(ssl.SSLWantReadError):
        obj.do_handshake()
    return outgoing.read()


def test_genuine_dns_passes_over_udp_and_tcp():
    wires = genuine_dns()
    items = [(w, 17) for w in wires] + [(tcp(w), 6) for w in wires]
    assert verdicts(items) == ["ok"] * len(items)


def test_each_rule_fires_on_its_own_case():
    q = dns.message.make_query("example.com", "A").to_wire()
    bad_opcode = q[:2] + bytes([q[2] | (3 << 3)]) + q[3:]  # opcode 3 is unassigned
    rcode_in_query = q[:3] + bytes([q[3] | 0x05]) + q[4:]
    no_question = q[:4] + b"\x00\x00" + q[6:]
    many_questions = q[:4] + b"\x00\x40" + q[6:]
    many_answers = q[:6] + b"\x00\x20" + q[8:]  # 32 answers cannot fit in a 29-byte message
    cases = {
        "empty": (b"", 6), "short": (b"\x12\x34\x01\x00", 17), "tcp_length": (b"\x00\x05" + q, 6),
        "opcode": (bad_opcode, 17), "rcode": (rcode_in_query, 17), "no_question": (no_question, 17),
        "qdcount": (many_questions, 17), "counts": (many_answers, 17),
    }
    got = verdicts(list(cases.values()))
    assert dict(zip(cases, got, strict=True)) == {k: k for k in cases}
    assert set(cases) == set(REASONS) - {"ok"}


def test_null_prefix_is_empty_not_an_error():
    assert verdicts([(None, 17)]) == ["empty"]


def test_other_protocols_fail():
    hello = client_hello()
    items = [(b"SSH-2.0-OpenSSH_9.6p1 Ubuntu-3ubuntu13\r\n", 6), (b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", 6),
             (hello, 6)]
    sent = [3000, 80, len(hello)]
    assert all(v != "ok" for v in verdicts(items, sent)), verdicts(items, sent)
