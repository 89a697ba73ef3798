"""Sample archive, DNS tunnels: iodine-, dnscat2- and exfiltration-shaped queries whose names carry new data in
every query. Used by jobs/sample/archive.py."""

from __future__ import annotations

import dns.edns
import dns.flags
import dns.message
import dns.opcode
import dns.rcode
import dns.rrset
import dns.update
import numpy as np

from portprint.jobs.sample.dns import _wire
from portprint.jobs.sample.templates import _T, PREFIX_LEN, _dns_tmpl, _hex, _pick


def _tunnel_set(rng: np.random.Generator) -> list[_T]:
    """Queries of DNS tunnels, shaped after the tools: iodine (a user nibble, then base32 / base64 /
    base128 data in labels of up to 63, NULL or PRIVATE types), dnscat2 (hex, TXT/CNAME/MX) and
    base64url exfiltration loops. Each is a valid DNS query: the header gives nothing away."""
    b32, b64 = "abcdefghijklmnopqrstuvwxyz012345", "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_"
    domains = ("t.example-cdn.net", "ns.updates-check.com", "d.cloud-sync.io", "x.tunnel.example.org")
    out = []
    for k in range(240):
        kind = k % 4
        dom = _pick(rng, domains)
        alphabet = (b32, b64, "0123456789abcdef", b64)[kind]
        if kind == 0:  # iodine, base32 upstream
            data = "".join(b32[i] for i in rng.integers(0, 32, int(rng.integers(90, 180))))
            labels = [_hex(rng, 1) + data[:62], *[data[62 + j : 62 + j + 63] for j in range(0, len(data) - 62, 63)]]
            qtype = _pick(rng, ("NULL", "PRIVATE", "TXT", "CNAME"))
        elif kind == 1:  # iodine with base64/base128 when the resolver keeps case and 8-bit bytes
            data = "".join(b64[i] for i in rng.integers(0, 64, int(rng.integers(90, 180))))
            labels = [_hex(rng, 1) + data[:62], *[data[62 + j : 62 + j + 63] for j in range(0, len(data) - 62, 63)]]
            qtype = _pick(rng, ("NULL", "PRIVATE"))
        elif kind == 2:  # dnscat2: hex
            data = _hex(rng, int(rng.integers(60, 200)))
            labels = [data[j : j + 63] for j in range(0, len(data), 63)]
            qtype = _pick(rng, ("TXT", "CNAME", "MX"))
        else:  # an exfiltration loop: base64url chunks with a sequence number
            data = "".join(b64[i] for i in rng.integers(0, 64, int(rng.integers(40, 60))))
            labels = [f"{k:04d}", data]
            qtype = _pick(rng, ("A", "TXT"))
        qname = ".".join(lab for lab in labels if lab) + "." + dom
        q = dns.message.make_query(qname[:250].rstrip("."), "TYPE65399" if qtype == "PRIVATE" else qtype,
                                   use_edns=0 if kind < 2 else None)
        r = dns.message.make_response(q)
        t = _dns_tmpl([_wire(q)], [_wire(r)], tcp=False)
        # Every row carries new data, as a tunnel's queries do (a repeated name would be answered from
        # the resolver's cache): the data labels' characters are drawn per row from the encoding's
        # alphabet, and the response echoes the question.
        wire, pos = _wire(q), 12
        for j, lab in enumerate(labels):
            if pos >= PREFIX_LEN:
                break
            if lab and not (kind == 3 and j == 0):  # the exfiltration loop's sequence number stays
                t.orig_rand.append((pos + 1, pos + 1 + wire[pos]))
            pos += 1 + wire[pos] if lab else 0
        t.orig_alphabet = alphabet.encode()
        t.echo = [(12, 12, PREFIX_LEN - 12)]
        out.append(t)
    return out


