"""Legal DNS header variants a site may not have sent yet, so the model learns DNS, not one week of clients.

A week of traffic holds a handful of flag combinations. A new client (``dig`` with AD set and RD clear
for an AXFR), a resolver's own iterative queries, NOTIFY, UPDATE or a cookie refresh are still DNS.
These headers are written from RFC 1035/2136/1996/6891/7873/8490 and encoded by the same kernel
as real traffic, in UDP and TCP framing.
"""

from __future__ import annotations

import itertools
import struct

import numpy as np
import pyarrow as pa

from portprint.udfs.features import TCP, UDP, features_from_arrow

# Flag bits (RFC 1035 4.1.1, RFC 4035 for AD/CD): QR(15) OPCODE(11-14) AA(10) TC(9) RD(8) RA(7) Z(6) AD(5) CD(4)
QR, AA, TC, RD, RA, Z, AD, CD = 1 << 15, 1 << 10, 1 << 9, 1 << 8, 1 << 7, 1 << 6, 1 << 5, 1 << 4
QUERY, NOTIFY, UPDATE = 0, 4, 5


def _flag_sets(bits: list[int]) -> list[int]:
    return [sum(c) for n in range(len(bits) + 1) for c in itertools.combinations(bits, n)]


def legal_headers() -> list[tuple[int, int, int, int, int]]:
    """(flags, qdcount, ancount, nscount, arcount) of legal client-side messages and responses."""
    out = []
    # Queries: any mix of RD, AD, CD, and the Z bit some clients set; with or without an OPT record.
    for f in _flag_sets([RD, AD, CD, Z]):
        for ar in (0, 1):
            out.append((f | (QUERY << 11), 1, 0, 0, ar))
    out.append((RD | (QUERY << 11), 0, 0, 0, 1))  # RFC 7873 cookie refresh: no question, one OPT
    out.append((QUERY << 11, 0, 0, 0, 1))
    # NOTIFY (RFC 1996): AA set, the SOA question, optionally the new SOA as an answer.
    for f, an in itertools.product((AA, 0), (0, 1)):
        out.append((f | (NOTIFY << 11), 1, an, 0, 0))
    # UPDATE (RFC 2136): zone count 1, prerequisites (ancount), updates (nscount), additional (TSIG/OPT).
    for pr, up, ar in itertools.product(range(3), range(1, 5), (0, 1)):
        out.append((UPDATE << 11, 1, pr, up, ar))
    # Responses, seen when port 53 is the initiator's source port or in resolver-to-resolver flows.
    for f in _flag_sets([AA, TC, RD, RA, AD, CD]):
        for rcode in (0, 1, 2, 3, 4, 5, 9):
            for an in (0, 1, 2, 4):
                out.append((QR | f | rcode, 1, an, 0, 1))
    return out


def augmented_features(width: int, mask_id: bool) -> np.ndarray:
    """Feature rows of every legal header in UDP and TCP framing (ID 0: it is random anyway)."""
    wires, protos, sizes = [], [], []
    question = b"\x07example\x03com\x00\x00\x01\x00\x01"
    for flags, qd, an, ns, ar in legal_headers():
        msg = struct.pack("!6H", 0, flags, qd, an, ns, ar) + question * min(qd, 1)
        msg += b"\x00" * (11 * (an + ns + ar))  # room for the records the counts announce
        for proto in (UDP, TCP):
            wire = struct.pack("!H", len(msg)) + msg if proto == TCP else msg
            wires.append(wire[:64])
            protos.append(proto)
            sizes.append(len(wire))
    return features_from_arrow(pa.array(wires, pa.binary()), np.array(protos, np.int8), np.array(sizes, np.int64),
                               width, mask_id)


# ---- benign question names a site may not have asked yet ----------------------------------------
# Name shapes that standards and everyday services put in query names, some of which look random:
# reverse lookups (RFC 1035 3.5, RFC 3596), DNS-SD (RFC 6763), SRV (RFC 2782), DKIM (RFC 6376), DMARC
# (RFC 7489), ACME (RFC 8555), MTA-STS (RFC 8461), IDNA punycode (RFC 3492), and the hex/GUID labels of
# CDNs and telemetry. A model trained on one site's week should still call these DNS.
_WORDS = tuple(" ".join((
    "mail www api cdn static login time update auth app edge assets img video search news shop store",
    "cloud portal files docs support status events metrics data media play music maps drive calendar",
    "office teams chat meet sync backup admin intranet wiki git build ci test stage prod dev vpn proxy",
    "printer scanner camera router gateway phone voip sip ldap kerberos dc fs nas db sql cache queue",
    "north south east west europe america asia london paris berlin tokyo sydney amsterdam frankfurt",
    "example acme globex initech contoso fabrikam northwind tailspin wingtip adventure works blue green",
)).split())
_TLDS = ("com", "net", "org", "io", "de", "co.uk", "fr", "nl", "jp", "com.au", "edu", "gov", "cloud", "dev")
_IDN_WORDS = ("münchen", "bücher", "café", "straße", "ελληνικά", "россия", "中文", "日本語", "한국어", "españa",
              "zürich", "göteborg", "kraków", "čeština", "türkiye", "ísland")
_SERVICES = ("_http._tcp", "_https._tcp", "_ipp._tcp", "_ipps._tcp", "_printer._tcp", "_airplay._tcp",
             "_raop._tcp", "_googlecast._tcp", "_spotify-connect._tcp", "_smb._tcp", "_afpovertcp._tcp",
             "_ssh._tcp", "_sftp-ssh._tcp", "_companion-link._tcp", "_homekit._tcp", "_hap._tcp")
_SRV = ("_ldap._tcp.dc._msdcs", "_kerberos._udp", "_kerberos._tcp", "_kpasswd._udp", "_gc._tcp",
        "_ldap._tcp.Default-First-Site-Name._sites.dc._msdcs", "_vlmcs._tcp", "_sip._tls", "_sip._udp",
        "_sipfederationtls._tcp", "_xmpp-client._tcp", "_xmpp-server._tcp", "_autodiscover._tcp",
        "_imaps._tcp", "_submission._tcp", "_caldavs._tcp", "_carddavs._tcp", "_matrix._tcp", "_minecraft._tcp")


def _domain(rng: np.random.Generator) -> str:
    return f"{rng.choice(_WORDS)}{rng.choice(['', '-', ''])}{rng.choice(_WORDS)}.{rng.choice(_TLDS)}"


def _hexs(rng: np.random.Generator, n: int) -> str:
    return rng.bytes((n + 1) // 2).hex()[:n]


def benign_names(n: int = 4000, seed: int = 53) -> list[tuple[str, str]]:
    """(qname, qtype) pairs of benign name shapes, drawn reproducibly."""
    import ipaddress

    rng = np.random.default_rng(seed)
    b32 = "abcdefghijklmnopqrstuvwxyz234567"
    b32hex = "0123456789abcdefghijklmnopqrstuv"
    makers = [
        lambda: (ipaddress.IPv6Address(rng.bytes(16)).reverse_pointer, "PTR"),
        lambda: (ipaddress.IPv4Address(rng.bytes(4)).reverse_pointer, "PTR"),
        lambda: (f"{_hexs(rng, int(rng.choice([16, 32, 40])))}.{rng.choice(_WORDS)}.{_domain(rng)}",
                 str(rng.choice(["A", "AAAA", "HTTPS"]))),
        lambda: (f"{_hexs(rng, 8)}-{_hexs(rng, 4)}-{_hexs(rng, 4)}-{_hexs(rng, 4)}-{_hexs(rng, 12)}"
                 f".{rng.choice(_WORDS)}.{_domain(rng)}", str(rng.choice(["A", "AAAA", "TXT"]))),
        lambda: (f"{''.join(rng.choice(list(b32), 32))}._domainkey.{_domain(rng)}", "TXT"),
        lambda: (f"{rng.choice(['selector1', 'selector2', 'google', 's1', 'k1', 'default', 'mail'])}"
                 f"{rng.choice(['', '-2024', '-20230601'])}._domainkey.{_domain(rng)}", "TXT"),
        lambda: (f"_acme-challenge.{rng.choice(_WORDS)}.{_domain(rng)}", "TXT"),
        lambda: (f"{rng.choice(['_dmarc', '_mta-sts', '_smtp._tls', '_dnsauth'])}.{_domain(rng)}", "TXT"),
        lambda: (f"{rng.choice(['_services._dns-sd._udp', 'b._dns-sd._udp', 'lb._dns-sd._udp'])}."
                 f"{rng.choice(['local', _domain(rng), '0.168.192.in-addr.arpa'])}", "PTR"),
        lambda: (f"{rng.choice(_SERVICES)}.{rng.choice(['local', _domain(rng)])}", "PTR"),
        lambda: (f"{rng.choice(_WORDS).title()} {rng.choice(_WORDS).title()} {rng.integers(1, 99)}"
                 f".{rng.choice(_SERVICES)}.local", str(rng.choice(["SRV", "TXT"]))),
        lambda: (f"{rng.choice(_SRV)}.{_domain(rng)}", "SRV"),
        lambda: (f"{rng.choice(_WORDS)}.{rng.choice(_IDN_WORDS)}.{rng.choice(_TLDS)}", str(rng.choice(["A", "AAAA"]))),
        lambda: (f"{''.join(rng.choice(list(b32hex), 32))}.{_domain(rng)}", "NSEC3"),
        lambda: (".".join(str(rng.choice(_WORDS)) for _ in range(int(rng.integers(6, 30)))) + "." + _domain(rng),
                 str(rng.choice(["A", "AAAA", "CNAME"]))),
        # Hyphenated compounds, as cloud load balancers, CDNs and internal naming schemes build them
        # (my-app-prod-eu-west-1-1234567890.elb.amazonaws.com): long labels made of words.
        lambda: (".".join("-".join(str(rng.choice(_WORDS)) for _ in range(int(rng.integers(2, 7))))
                          + (f"-{rng.integers(1, 10**int(rng.integers(1, 11)))}" if rng.random() < 0.3 else "")
                          for _ in range(int(rng.integers(1, 4)))) + "." + _domain(rng),
                 str(rng.choice(["A", "AAAA", "CNAME", "HTTPS"]))),
        lambda: (f"ec2-{'-'.join(str(x) for x in rng.integers(1, 255, 4))}.{rng.choice(_WORDS)}-"
                 f"{rng.integers(1, 4)}.compute.amazonaws.com", "A"),
        lambda: (str(rng.choice([".", "com", "net", "org", "a.b", "x.io", "t.co", _domain(rng)])),
                 str(rng.choice(["NS", "SOA", "DS", "DNSKEY", "A"]))),
        lambda: (f"{rng.choice(_WORDS)}.{_domain(rng)}", str(rng.choice(
            ["A", "AAAA", "HTTPS", "MX", "TXT", "CNAME", "NS", "SOA", "CAA", "TLSA", "SVCB"]))),
    ]
    out = []
    for k in range(n):
        name, qtype = makers[k % len(makers)]()
        out.append((name, qtype))
    return out


def benign_name_prefixes(n: int = 4000, seed: int = 53) -> tuple[pa.Array, np.ndarray]:
    """The stored 64-byte prefixes of ``benign_names`` as stub queries, in UDP and TCP framing."""
    import dns.message
    import dns.name

    wires, protos = [], []
    for k, (name, qtype) in enumerate(benign_names(n, seed)):
        try:
            qname = dns.name.from_unicode(name) if not name.isascii() else dns.name.from_text(name)
            msg = dns.message.make_query(qname, qtype, use_edns=0 if k % 3 else None).to_wire()
        except (dns.exception.DNSException, UnicodeError):
            continue  # a drawn name over 255 bytes: not a name anyone can ask
        proto = TCP if k % 7 == 0 else UDP
        wire = struct.pack("!H", len(msg)) + msg if proto == TCP else msg
        wires.append(wire[:64])
        protos.append(proto)
    return pa.array(wires, pa.binary()), np.array(protos, np.int8)
