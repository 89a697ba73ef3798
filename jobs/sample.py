"""Synthetic flow archive: realistic port-53 traffic with labelled non-DNS flows.

Used by ``portprint sample``, the demo and the tests. The archive follows the flow contract
(Hive-partitioned Parquet, one row per flow, payload prefixes of up to 64 bytes) and a side file
``_labels.parquet`` says what every flow really is.

Speed comes from encoding a pool of a few thousand distinct messages once (dnspython for DNS,
Python's ``ssl`` for TLS, hand-built SSH/HTTP/OpenVPN/NTP/QUIC) and then building each row with
numpy: pick a template, patch the per-flow random fields (DNS IDs, TLS randoms, session ids,
timestamps) and slice the first 64 bytes. Everything derives from the seed; nothing reads the
clock, so a rerun writes identical files.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import ipaddress
import os
import shutil
import ssl
import struct
import zlib
from dataclasses import dataclass, field
from functools import lru_cache

import dns.edns
import dns.flags
import dns.message
import dns.opcode
import dns.rcode
import dns.rrset
import dns.update
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from portprint.jobs.tables import FLOWS

__all__ = [
    "FLOW_SCHEMA",
    "LABELS",
    "LABEL_SCHEMA",
    "NON_DNS_LABELS",
    "PREFIX_LEN",
    "TUNNEL_LABELS",
    "SampleSummary",
    "sample_table",
    "write_sample",
]

PREFIX_LEN = 64
# Working width of the byte matrices: two spare columns let a 2-byte field that starts at byte 63
# be written without bounds checks; the spare bytes are cut off before output.
_W = PREFIX_LEN + 2

FLOW_SCHEMA = FLOWS
# chaos=True appends this column: real archives carry extras the scorer must ignore.
_SENSOR_FIELD = pa.field("sensor", pa.string())
LABEL_SCHEMA = pa.schema([("flow_id", pa.string()), ("label", pa.string()), ("date", pa.string())])

LABELS = ("dns", "ssh", "http", "tls", "openvpn", "random", "empty", "other-port", "dns-tunnel")
NON_DNS_LABELS = ("ssh", "http", "tls", "openvpn", "random")
TUNNEL_LABELS = ("dns-tunnel",)  # well-formed DNS that carries data in its names (chaos only)

_CHUNK_ROWS = 262_144  # rows per generated batch / Parquet row group: bounds memory for big days
_TCP, _UDP = 6, 17
_MSS = 1448


@dataclass(frozen=True)
class SampleSummary:
    """What ``write_sample`` wrote."""

    out: str  # archive root
    dates: list[str]  # YYYY-MM-DD written
    flows: int  # total rows written
    labels_path: str  # where the labels file went
    label_counts: dict[str, int]


# --------------------------------------------------------------------------------------------
# Templates: one encoded first flight per direction, plus where the per-flow fields go.
# --------------------------------------------------------------------------------------------


@dataclass
class _T:
    orig: bytes | None  # initiator stream / first datagram; None = prefix not captured (null)
    orig_total: int  # payload bytes of one exchange (all messages, TCP length prefixes included)
    orig_msgs: int = 1
    resp: bytes | None = None  # None = responder sent nothing
    resp_total: int = 0
    resp_msgs: int = 0
    orig_ids: tuple[int, int] = (-1, -1)  # byte offsets of DNS IDs of message 1 and 2 (-1: none)
    resp_ids: tuple[int, int] = (-1, -1)
    orig_rand: list[tuple[int, int]] = field(default_factory=list)  # [a, b) ranges made random
    orig_alphabet: bytes = b""  # what orig_rand's bytes are drawn from (empty: any byte)
    resp_rand: list[tuple[int, int]] = field(default_factory=list)
    echo: list[tuple[int, int, int]] = field(default_factory=list)  # (resp_at, orig_at, length)
    orig_ts: int = -1  # offset of a 4-byte big-endian Unix time (OpenVPN tls-auth)
    resp_ts: int = -1


def _id_pos(offsets: list[int]) -> tuple[int, int]:
    pos = [*(p if p < PREFIX_LEN else -1 for p in offsets[:2]), -1, -1]
    return pos[0], pos[1]


def _dns_tmpl(queries: list[bytes], responses: list[bytes], tcp: bool, *, extra_resp: int = 0,
              extra_resp_msgs: int = 0) -> _T:
    """Template for a DNS exchange; IDs are left at 0 and patched per row."""

    def stream(msgs: list[bytes]) -> tuple[bytes | None, int, tuple[int, int]]:
        if not msgs:
            return None, 0, (-1, -1)
        if not tcp:  # the prefix is the first datagram; later datagrams only count in bytes
            return msgs[0], sum(len(m) for m in msgs), (0, -1)
        out, offs = b"", []
        for m in msgs:
            offs.append(len(out) + 2)
            out += struct.pack("!H", len(m)) + m
        return out, len(out), _id_pos(offs)

    o, o_total, o_ids = stream(queries)
    r, r_total, r_ids = stream(responses)
    return _T(o, o_total, len(queries), r, r_total + extra_resp, len(responses) + extra_resp_msgs,
              o_ids, r_ids)


class _Table:
    """Templates frozen into numpy arrays, plus named [start, stop) sets for the categories."""

    def __init__(self) -> None:
        self._items: list[_T] = []
        self.sets: dict[str, tuple[int, int]] = {}

    def add(self, name: str, items: list[_T]) -> None:
        if not items:
            raise ValueError(f"empty template set {name}")
        self.sets[name] = (len(self._items), len(self._items) + len(items))
        self._items.extend(items)

    def freeze(self) -> None:
        t = len(self._items)
        self.o_head = np.zeros((t, _W), np.uint8)
        self.r_head = np.zeros((t, _W), np.uint8)
        self.o_len = np.zeros(t, np.int64)
        self.r_len = np.zeros(t, np.int64)
        self.o_null = np.zeros(t, bool)
        self.r_has = np.zeros(t, bool)
        self.o_total = np.zeros(t, np.int64)
        self.r_total = np.zeros(t, np.int64)
        self.o_msgs = np.zeros(t, np.int64)
        self.r_msgs = np.zeros(t, np.int64)
        self.o_ids = np.full((t, 2), -1, np.int64)
        self.r_ids = np.full((t, 2), -1, np.int64)
        self.o_mask = np.zeros((t, _W), bool)
        # Per template, a random byte -> the byte written (the identity, or onto the template's alphabet).
        self.o_lut = np.tile(np.arange(256, dtype=np.uint8), (t, 1))
        self.r_mask = np.zeros((t, _W), bool)
        self.echo = np.full((t, _W), -1, np.int64)
        self.o_ts = np.full(t, -1, np.int64)
        self.r_ts = np.full(t, -1, np.int64)
        for i, it in enumerate(self._items):
            if it.orig is None:
                self.o_null[i] = True
            else:
                head = it.orig[:PREFIX_LEN]
                self.o_head[i, : len(head)] = np.frombuffer(head, np.uint8)
                self.o_len[i] = len(head)
            if it.resp is not None:
                self.r_has[i] = True
                head = it.resp[:PREFIX_LEN]
                self.r_head[i, : len(head)] = np.frombuffer(head, np.uint8)
                self.r_len[i] = len(head)
            self.o_total[i], self.r_total[i] = it.orig_total, it.resp_total
            self.o_msgs[i], self.r_msgs[i] = it.orig_msgs, it.resp_msgs
            self.o_ids[i], self.r_ids[i] = it.orig_ids, it.resp_ids
            for a, b in it.orig_rand:
                self.o_mask[i, a : min(b, PREFIX_LEN)] = True
            if it.orig_alphabet:
                alphabet = np.frombuffer(it.orig_alphabet, np.uint8)
                self.o_lut[i] = alphabet[np.arange(256) % len(alphabet)]
            for a, b in it.resp_rand:
                self.r_mask[i, a : min(b, PREFIX_LEN)] = True
            for at, src, n in it.echo:
                for k in range(n):
                    if at + k < PREFIX_LEN and src + k < PREFIX_LEN:
                        self.echo[i, at + k] = src + k
            self.o_ts[i] = it.orig_ts if 0 <= it.orig_ts <= PREFIX_LEN - 4 else -1
            self.r_ts[i] = it.resp_ts if 0 <= it.resp_ts <= PREFIX_LEN - 4 else -1
        self.o_rand_any = self.o_mask.any(axis=1)
        self.r_rand_any = self.r_mask.any(axis=1)
        self.echo_any = (self.echo >= 0).any(axis=1)
        del self._items
        for v in vars(self).values():  # shared between calls through the pool cache
            if isinstance(v, np.ndarray):
                v.setflags(write=False)


# --------------------------------------------------------------------------------------------
# Names and addresses
# --------------------------------------------------------------------------------------------

def _words(text: str) -> tuple[str, ...]:
    return tuple(text.split())


_POPULAR = _words(
    "google.com youtube.com facebook.com instagram.com whatsapp.net apple.com icloud.com "
    "microsoft.com windowsupdate.com office.com office365.com microsoftonline.com live.com bing.com "
    "amazon.com amazonaws.com netflix.com nflxvideo.net github.com githubusercontent.com "
    "cloudflare.com wikipedia.org x.com twitter.com linkedin.com zoom.us slack.com spotify.com "
    "akamaihd.net doubleclick.net googleapis.com gstatic.com googlevideo.com ytimg.com fbcdn.net "
    "tiktokcdn.com ubuntu.com debian.org pypi.org npmjs.org docker.io salesforce.com okta.com "
    "dropbox.com adobe.com mozilla.org digicert.com letsencrypt.org sentry.io datadoghq.com "
    "atlassian.net zendesk.com hubspot.com reddit.com yahoo.com msn.com skype.com teams.microsoft.com"
)
_POP_W = 1.0 / np.arange(1, len(_POPULAR) + 1) ** 0.9
_POP_W /= _POP_W.sum()
_SUBS = _words(
    "www api cdn static img login mail m app assets update auth accounts clients4 play edge s3 "
    "analytics ocsp crl time telemetry settings-win v10.events graph outlook substrate id push"
)
_MAIL_DOMAINS = _words("example.com example.org example.net acme-corp.com globex.io initech.co.uk")
_INTERNAL = "corp.example.com"
_HOSTS = _words("ws lt srv printer nas git jira wiki vpn dc build db mon proxy fs sql app cam voip")
_CITIES = _words("fra ams lhr cdg mad mil waw arn dub iad ord sjc nrt sin syd")
_NXNAMES = ("wpad", "isatap", "localhost", "_ldap._tcp.pdc._msdcs", "printer", "nas", "intranet")
_SSH_BANNERS = (
    "SSH-2.0-OpenSSH_9.6p1 Ubuntu-3ubuntu13",
    "SSH-2.0-OpenSSH_8.9p1 Ubuntu-3ubuntu0.10",
    "SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3",
    "SSH-2.0-OpenSSH_for_Windows_9.5",
    "SSH-2.0-OpenSSH_7.4",
    "SSH-2.0-OpenSSH_9.8",
    "SSH-2.0-PuTTY_Release_0.81",
    "SSH-2.0-libssh2_1.11.0",
    "SSH-2.0-libssh_0.10.6",
    "SSH-2.0-Go",
    "SSH-2.0-paramiko_3.4.0",
    "SSH-2.0-dropbear_2022.83",
    "SSH-2.0-AsyncSSH_2.14.2",
    "SSH-2.0-JSCH_0.2.17",
)
_PUBLIC_V4_FIRST = (
    13, 20, 23, 31, 34, 35, 40, 44, 45, 46, 51, 52, 54, 62, 66, 69, 77, 80, 81, 82, 85, 88, 91, 93,
    95, 104, 108, 109, 128, 130, 140, 142, 146, 151, 152, 157, 162, 176, 178, 185, 188, 193, 194,
    195, 199, 204, 205, 208, 209, 212, 213, 216, 217,
)
_PUBLIC_V6_PREFIX = (
    "2a00:1450", "2606:4700", "2a03:2880", "2620:1ec", "2600:1406", "2a02:26f0", "2001:4860",
    "2a01:111", "2a05:d014", "2600:1f18", "2a04:4e42", "2001:67c",
)
_SITE_V6 = "2001:db8:4a1f"  # the site's own /48 (documentation prefix)


def _pick(rng: np.random.Generator, seq, p=None):
    if p is None:
        return seq[int(rng.integers(len(seq)))]
    # rng.choice(p=...) validates p on every call, which dominated pool building
    return seq[min(int(np.searchsorted(np.cumsum(p), rng.random() * sum(p), side="right")), len(seq) - 1)]


def _hex(rng: np.random.Generator, n: int) -> str:
    return rng.bytes((n + 1) // 2).hex()[:n]


def _b32(rng: np.random.Generator, n: int) -> str:
    alphabet = "abcdefghijklmnopqrstuvwxyz234567"
    return "".join(alphabet[i] for i in rng.integers(0, 32, n))


def _pub_v4(rng: np.random.Generator) -> str:
    a = _pick(rng, _PUBLIC_V4_FIRST)
    b, c, d = rng.integers(0, 256), rng.integers(0, 256), rng.integers(1, 255)
    return f"{a}.{b}.{c}.{d}"


def _pub_v6(rng: np.random.Generator) -> str:
    groups = ":".join(f"{int(x):x}" for x in rng.integers(0, 65536, 3))
    host = int(rng.integers(1, 4096))
    return str(ipaddress.IPv6Address(f"{_pick(rng, _PUBLIC_V6_PREFIX)}:{groups}::{host:x}"))


def _client_v4(rng: np.random.Generator) -> str:
    r = rng.random()
    if r < 0.75:
        return f"10.{rng.integers(1, 41)}.{rng.integers(0, 256)}.{rng.integers(2, 255)}"
    if r < 0.9:
        return f"192.168.{rng.integers(0, 12)}.{rng.integers(2, 255)}"
    return f"172.{rng.integers(16, 32)}.{rng.integers(0, 256)}.{rng.integers(2, 255)}"


def _client_v6(rng: np.random.Generator) -> str:
    iid = ":".join(f"{int(x):x}" for x in rng.integers(0, 65536, 4))  # SLAAC privacy address
    return str(ipaddress.IPv6Address(f"{_SITE_V6}:{int(rng.integers(1, 64)):x}:{iid}"))


def _rev4(ip: str) -> str:
    return ".".join(reversed(ip.split("."))) + ".in-addr.arpa"


def _popular(rng: np.random.Generator) -> str:
    return _pick(rng, _POPULAR, _POP_W)


def _cdn_name(rng: np.random.Generator) -> str:
    k = rng.integers(0, 6)
    if k == 0:
        return f"e{rng.integers(1000, 99999)}.dscx.akamaiedge.net"
    if k == 1:
        return f"d{_b32(rng, 13)}.cloudfront.net"
    if k == 2:
        return f"rr{rng.integers(1, 9)}---sn-{_b32(rng, 8)}.googlevideo.com"
    if k == 3:
        return f"scontent-{_pick(rng, _CITIES)}{rng.integers(1, 9)}-1.xx.fbcdn.net"
    if k == 4:  # 32-hex labels are legitimate and common (Azure, Office CDN)
        return f"{_hex(rng, 32)}.cdn.office.net"
    return f"{_pick(rng, _SUBS)}-{_pick(rng, _CITIES)}.{_popular(rng)}"


def _internal_host(rng: np.random.Generator) -> str:
    return f"{_pick(rng, _HOSTS)}-{rng.integers(1, 2000):04d}.{_INTERNAL}"


def _question(rng: np.random.Generator) -> tuple[str, str, str]:
    """A (qname, qtype, kind) as a site's stub resolvers would ask them."""
    k = rng.random()
    if k < 0.34:
        name = _popular(rng) if rng.random() < 0.3 else f"{_pick(rng, _SUBS)}.{_popular(rng)}"
        return name, _pick(rng, ("A", "AAAA", "HTTPS"), (0.5, 0.33, 0.17)), "web"
    if k < 0.46:
        return _cdn_name(rng), _pick(rng, ("A", "AAAA"), (0.6, 0.4)), "web"
    if k < 0.62:
        return _internal_host(rng), _pick(rng, ("A", "AAAA"), (0.8, 0.2)), "internal"
    if k < 0.69:
        ip = _client_v4(rng) if rng.random() < 0.7 else _pub_v4(rng)
        return _rev4(ip), "PTR", "ptr"
    if k < 0.71:
        ip = ipaddress.IPv6Address(_client_v6(rng) if rng.random() < 0.6 else _pub_v6(rng))
        return ip.reverse_pointer, "PTR", "ptr"
    if k < 0.75:
        srv = _pick(rng, ("_ldap._tcp.dc._msdcs", "_kerberos._udp", "_kerberos._tcp",
                          "_ldap._tcp.Default-First-Site-Name._sites.dc._msdcs", "_vlmcs._tcp",
                          "_gc._tcp"))
        if rng.random() < 0.8:
            return f"{srv}.{_INTERNAL}", "SRV", "srv"
        d = _pick(rng, _MAIL_DOMAINS)
        return f"{_pick(rng, ('_sip._tls', '_autodiscover._tcp', '_xmpp-client._tcp'))}.{d}", "SRV", "srv"
    if k < 0.80:
        d = _pick(rng, (*_MAIL_DOMAINS, "google.com", "microsoft.com", "outlook.com"))
        j = rng.integers(0, 5)
        if j == 0:
            return d, "MX", "mail"
        if j == 1:
            return d, "TXT", "spf"
        if j == 2:
            return f"_dmarc.{d}", "TXT", "dmarc"
        if j == 3:
            sel = _pick(rng, ("selector1", "selector2", "google", "s1", "k1", "s1024-2023"))
            return f"{sel}._domainkey.{d}", "TXT", "dkim"
        return f"_acme-challenge.{_pick(rng, _SUBS)}.{d}", "TXT", "acme"
    if k < 0.82:
        return _pick(rng, ("pool.ntp.org", "0.ubuntu.pool.ntp.org", "time.windows.com", "time.apple.com",
                           "connectivitycheck.gstatic.com", "www.msftconnecttest.com",
                           "captive.apple.com", "detectportal.firefox.com")), "A", "web"
    if k < 0.88:  # search-list expansion and single labels: the bulk of real NXDOMAINs
        base = _pick(rng, _NXNAMES) if rng.random() < 0.5 else f"{_pick(rng, _SUBS)}.{_popular(rng)}"
        return f"{base}.{_INTERNAL}", _pick(rng, ("A", "AAAA")), "nx"
    if k < 0.92:
        return _pick(rng, (_INTERNAL, *_MAIL_DOMAINS, _popular(rng))), _pick(rng, ("NS", "SOA")), "zone"
    if k < 0.95:
        return f"{_pick(rng, _SUBS)}.{_popular(rng)}", "CNAME", "web"
    if k < 0.975:
        return _pick(rng, ("com", "org", "net", _popular(rng), _pick(rng, _MAIL_DOMAINS))), "DS", "dnssec"
    return _pick(rng, (".", "com", "org", _popular(rng))), "DNSKEY", "dnssec"


def _fqdn(name: str) -> str:
    return name.rstrip(".") + "."


def _zone_of(name: str) -> str:
    labels = name.rstrip(".").split(".")
    return ".".join(labels[-2:]) if len(labels) >= 2 else (labels[0] or ".")


def _soa(zone: str, rng: np.random.Generator) -> dns.rrset.RRset:
    z = zone.rstrip(".") + "." if zone not in (".", "") else "."
    mname = f"ns1.{z}" if z != "." else "a.root-servers.net."
    serial = 2026100000 + int(rng.integers(0, 99999))
    return dns.rrset.from_text(z, 900, "IN", "SOA",
                               f"{mname} hostmaster.{z if z != '.' else 'nstld.verisign-grs.com.'} "
                               f"{serial} 7200 3600 1209600 300")


def _answers(qname: str, qtype: str, kind: str, rng: np.random.Generator) -> list[dns.rrset.RRset]:
    n = qname.rstrip(".") + "."
    ttl = int(_pick(rng, (30, 60, 120, 300, 600, 3600, 86400)))
    internal = kind == "internal" or n.endswith(_INTERNAL + ".")
    out: list[dns.rrset.RRset] = []
    if qtype in ("A", "AAAA") and kind == "web" and rng.random() < 0.35:  # CDN CNAME chains
        target = f"{_cdn_name(rng)}."
        out.append(dns.rrset.from_text(n, ttl, "IN", "CNAME", target))
        n = target
    if qtype == "A":
        k = 1 if internal else int(rng.integers(1, 5))
        ips = [_client_v4(rng) if internal else _pub_v4(rng) for _ in range(k)]
        out.append(dns.rrset.from_text_list(n, ttl, "IN", "A", ips))
    elif qtype == "AAAA":
        k = 1 if internal else int(rng.integers(1, 3))
        ips = [_client_v6(rng) if internal else _pub_v6(rng) for _ in range(k)]
        out.append(dns.rrset.from_text_list(n, ttl, "IN", "AAAA", ips))
    elif qtype == "HTTPS":
        out.append(dns.rrset.from_text(n, ttl, "IN", "HTTPS", "1 . alpn=h2,h3"))
    elif qtype == "PTR":
        host = f"host-{_hex(rng, 6)}.{_INTERNAL}." if rng.random() < 0.6 else f"{_cdn_name(rng)}."
        out.append(dns.rrset.from_text(n, ttl, "IN", "PTR", host))
    elif qtype == "SRV":
        recs = [f"0 100 {_pick(rng, (389, 88, 1688, 3268, 5061, 443))} dc{i:02d}.{_INTERNAL}."
                for i in range(1, int(rng.integers(2, 4)))]
        out.append(dns.rrset.from_text_list(n, ttl, "IN", "SRV", recs))
    elif qtype == "MX":
        z = n.rstrip(".")
        out.append(dns.rrset.from_text_list(n, ttl, "IN", "MX", [f"10 mx1.{z}.", f"20 mx2.{z}."]))
    elif qtype == "TXT":
        if kind == "dkim":
            key = _b64(rng, 294)
            txt = f'"v=DKIM1; k=rsa; p={key[:200]}" "{key[200:]}"'
        elif kind == "dmarc":
            txt = '"v=DMARC1; p=quarantine; rua=mailto:dmarc@' + n.split(".", 1)[1].rstrip(".") + '"'
        elif kind == "acme":
            txt = f'"{_b64(rng, 32).rstrip("=")}"'  # 43-character ACME token
        else:
            txt = '"v=spf1 include:_spf.google.com include:spf.protection.outlook.com ~all"'
        out.append(dns.rrset.from_text(n, ttl, "IN", "TXT", txt))
    elif qtype == "NS":
        z = n.rstrip(".")
        out.append(dns.rrset.from_text_list(n, ttl, "IN", "NS", [f"ns{i}.{z}." for i in range(1, 4)]))
    elif qtype == "SOA":
        out.append(_soa(n, rng))
    elif qtype == "CNAME":
        out.append(dns.rrset.from_text(n, ttl, "IN", "CNAME", f"{_cdn_name(rng)}."))
    elif qtype == "DS":
        out.append(dns.rrset.from_text(n, ttl, "IN", "DS", f"{rng.integers(1, 65535)} 13 2 {_hex(rng, 64)}"))
    elif qtype == "DNSKEY":
        out.append(dns.rrset.from_text_list(n, ttl, "IN", "DNSKEY",
                                            [f"257 3 13 {_b64(rng, 64)}", f"256 3 13 {_b64(rng, 64)}"]))
    return out


def _b64(rng: np.random.Generator, nbytes: int) -> str:
    import base64

    return base64.b64encode(rng.bytes(nbytes)).decode()


# --------------------------------------------------------------------------------------------
# DNS template sets
# --------------------------------------------------------------------------------------------


def _stub_query(qname: str, qtype: str, rng: np.random.Generator) -> dns.message.Message:
    # Stub resolvers set RD (0x0100); dig and some libraries also set AD (0x0120).
    flags = dns.flags.RD | (dns.flags.AD if rng.random() < 0.2 else 0)
    if rng.random() < 0.6:
        payload = int(_pick(rng, (1232, 4096, 1400, 512), (0.5, 0.35, 0.1, 0.05)))
        return dns.message.make_query(qname, qtype, use_edns=0, payload=payload,
                                      want_dnssec=rng.random() < 0.12, flags=flags, id=0)
    return dns.message.make_query(qname, qtype, use_edns=False, flags=flags, id=0)


def _respond(q: dns.message.Message, qname: str, qtype: str, kind: str, rng: np.random.Generator, *,
             recursive: bool = True) -> dns.message.Message:
    r = dns.message.make_response(q, recursion_available=recursive, our_payload=1232)
    if not recursive:
        r.flags |= dns.flags.AA
    u = rng.random()
    if kind == "nx" or (u < 0.07 and kind != "dnssec"):
        r.set_rcode(dns.rcode.NXDOMAIN)  # 0x8183 for a stub
        r.authority.append(_soa(_INTERNAL if kind == "nx" else _zone_of(qname), rng))
    elif u < 0.095:
        r.set_rcode(dns.rcode.SERVFAIL)
    elif u < 0.11:
        r.set_rcode(dns.rcode.REFUSED)
    elif (qtype in ("AAAA", "HTTPS") and kind == "internal") or (qtype == "HTTPS" and u < 0.4):
        r.authority.append(_soa(_zone_of(qname), rng))  # NOERROR/NODATA
    else:
        r.answer.extend(_answers(qname, qtype, kind, rng))
    return r


def _wire(msg: dns.message.Message) -> bytes:
    """Encode deterministically and in full.

    dnspython shuffles the records of an RRset with the global ``random`` module (unseeded), and caps
    responses at the requester's EDNS size by raising; both are switched off here, the UDP size limit
    is applied by ``_udp_wire``.
    """
    return msg.to_wire(max_size=65535, want_shuffle=False)


def _udp_wire(q: dns.message.Message, r: dns.message.Message, wire: bytes) -> bytes:
    """Response as sent over UDP: over the requester's limit it becomes an empty TC=1 reply."""
    limit = q.payload if q.edns >= 0 else 512
    if len(wire) <= limit:
        return wire
    tr = dns.message.make_response(q, recursion_available=bool(r.flags & dns.flags.RA), our_payload=1232)
    tr.flags |= dns.flags.TC
    return _wire(tr)


# Pool sizes: dnspython costs ~0.3 ms per exchange, so these bound the fixed cost per call.
_N_STUB, _N_PIPE, _N_ITER = 1000, 100, 300


def _dns_sets(table: _Table, rng: np.random.Generator) -> None:
    stub_udp, stub_tcp, reverse = [], [], []
    for _ in range(_N_STUB):
        qname, qtype, kind = _question(rng)
        q = _stub_query(qname, qtype, rng)
        r = _respond(q, qname, qtype, kind, rng)
        qw, rw = _wire(q), _wire(r)
        udp_rw = _udp_wire(q, r, rw)
        stub_udp.append(_dns_tmpl([qw], [udp_rw], tcp=False))
        reverse.append(_dns_tmpl([udp_rw], [], tcp=False))
        # Stubs use TCP mostly after a truncated UDP reply, so big answers are over-represented.
        if udp_rw != rw or len(rw) > 400 or rng.random() < 0.25:
            stub_tcp.append(_dns_tmpl([qw], [rw], tcp=True))
    table.add("stub_udp", stub_udp)
    table.add("stub_tcp", stub_tcp)
    table.add("reverse", reverse)

    # Pipelined A + AAAA on one TCP connection (RFC 7766 §6.2.1.1), two different IDs.
    pipe = []
    for _ in range(_N_PIPE):
        qname, _, kind = _question(rng)
        if kind not in ("web", "internal"):
            qname = f"{_pick(rng, _SUBS)}.{_popular(rng)}"
            kind = "web"
        qs = [_stub_query(qname, t, rng) for t in ("A", "AAAA")]
        rs = [_wire(_respond(q, qname, t, kind, rng)) for q, t in zip(qs, ("A", "AAAA"), strict=True)]
        pipe.append(_dns_tmpl([_wire(q) for q in qs], rs, tcp=True))
    table.add("stub_tcp_pipe", pipe)

    # Iterative queries from the site's resolvers to authoritative servers: RD=0, EDNS, DO,
    # often a COOKIE, and 0x20 case randomisation of the name.
    it_udp, it_tcp, both53 = [], [], []
    for _ in range(_N_ITER):
        qname, qtype, kind = _question(rng)
        mixed = "".join(c.upper() if c.isalpha() and rng.random() < 0.5 else c for c in qname)
        opts = [dns.edns.CookieOption(rng.bytes(8), b"")] if rng.random() < 0.5 else []
        q = dns.message.make_query(mixed, qtype, use_edns=0, payload=1232, want_dnssec=rng.random() < 0.7,
                                   flags=0, id=0, options=opts)
        r = _respond(q, qname, qtype, kind, rng, recursive=False)
        if r.rcode() == dns.rcode.NOERROR and not r.answer and rng.random() < 0.5:
            z = _zone_of(qname)  # referral: NS in authority, glue in additional
            r.authority.clear()
            ns = [f"ns1.{z}.", f"ns2.{z}."]
            r.authority.append(dns.rrset.from_text_list(f"{z}.", 172800, "IN", "NS", ns))
            r.additional.append(dns.rrset.from_text(f"ns1.{z}.", 172800, "IN", "A", _pub_v4(rng)))
            r.flags &= ~int(dns.flags.AA)
        if q.ednsflags & dns.flags.DO and r.answer:
            r.answer.append(dns.rrset.from_text(
                r.answer[-1].name, 300, "IN", "RRSIG",
                f"{qtype} 13 2 300 20261201000000 20261101000000 {rng.integers(1, 65535)} "
                f"{_fqdn(_zone_of(qname))} {_b64(rng, 64)}"))
        qw, rw = _wire(q), _wire(r)
        udp_rw = _udp_wire(q, r, rw)
        it_udp.append(_dns_tmpl([qw], [udp_rw], tcp=False))
        both53.append(_dns_tmpl([udp_rw], [], tcp=False))
        if udp_rw != rw or rng.random() < 0.3:
            it_tcp.append(_dns_tmpl([qw], [rw], tcp=True))
    table.add("iter_udp", it_udp)
    table.add("iter_tcp", it_tcp)
    table.add("both53", both53)

    # Zone transfers (secondary -> primary over TCP): SOA check, AXFR, IXFR.
    xfr = []
    zones = [_INTERNAL, "10.in-addr.arpa", f"lab.{_INTERNAL}", *(_MAIL_DOMAINS[:3])]
    for _ in range(30):
        zone = _pick(rng, zones)
        kind = _pick(rng, ("SOA", "AXFR", "IXFR"), (0.5, 0.3, 0.2))
        q = dns.message.make_query(zone, kind, flags=0, id=0)
        if kind == "IXFR":
            q.authority.append(_soa(zone, rng))
        r = dns.message.make_response(q)
        r.flags |= dns.flags.AA
        soa = _soa(zone, rng)
        r.answer.append(soa)
        extra, extra_msgs = 0, 0
        if kind != "SOA":
            for i in range(int(rng.integers(5, 40))):
                r.answer.append(dns.rrset.from_text(f"{_pick(rng, _HOSTS)}-{i:04d}.{zone}.", 3600, "IN", "A",
                                                    _client_v4(rng)))
            extra_msgs = int(rng.integers(0, 30))
            extra = extra_msgs * int(rng.integers(8000, 16000))
        xfr.append(_dns_tmpl([_wire(q)], [_wire(r)], tcp=True, extra_resp=extra,
                             extra_resp_msgs=extra_msgs))
    table.add("xfr_tcp", xfr)

    # NOTIFY (opcode 4, AA) from primaries, answered with QR|AA.
    notify = []
    for _ in range(30):
        zone = _pick(rng, zones)
        q = dns.message.make_query(zone, "SOA", flags=dns.flags.AA, id=0)
        q.set_opcode(dns.opcode.NOTIFY)
        if rng.random() < 0.5:
            q.answer.append(_soa(zone, rng))
        r = dns.message.make_response(q)
        r.flags |= dns.flags.AA
        notify.append(_dns_tmpl([_wire(q)], [_wire(r)], tcp=False))
    table.add("notify_udp", notify)

    # Dynamic UPDATE (opcode 5) from DHCP servers and Windows clients.
    upd_udp, upd_tcp = [], []
    for _ in range(80):
        host = f"{_pick(rng, _HOSTS)}-{rng.integers(1, 2000):04d}"
        if rng.random() < 0.75:
            u = dns.update.UpdateMessage(f"{_INTERNAL}.", id=0)
            if rng.random() < 0.5:
                u.absent(host)
            u.replace(host, 1200, "A", _client_v4(rng))
        else:
            ip = _client_v4(rng)
            u = dns.update.UpdateMessage("10.in-addr.arpa.", id=0)
            u.replace(_rev4(ip) + ".", 1200, "PTR", f"{host}.{_INTERNAL}.")
        r = dns.message.make_response(u)
        r.set_rcode(_pick(rng, (dns.rcode.NOERROR, dns.rcode.REFUSED, dns.rcode.YXDOMAIN), (0.8, 0.12, 0.08)))
        upd_udp.append(_dns_tmpl([_wire(u)], [_wire(r)], tcp=False))
        upd_tcp.append(_dns_tmpl([_wire(u)], [_wire(r)], tcp=True))
    table.add("update_udp", upd_udp)
    table.add("update_tcp", upd_tcp[:30])

    mdns = []
    for svc in ("_googlecast._tcp.local", "_spotify-connect._tcp.local", "_airplay._tcp.local",
                "_companion-link._tcp.local", "_services._dns-sd._udp.local", "_ipp._tcp.local",
                "_raop._tcp.local", "_hap._tcp.local"):
        q = dns.message.make_query(svc, "PTR", flags=0, id=0, use_edns=False)
        w = _wire(q)
        mdns.append(_T(w, len(w)))  # mDNS IDs are 0: nothing to patch
    table.add("mdns", mdns)


# --------------------------------------------------------------------------------------------
# Other protocols, shaped like the real thing
# --------------------------------------------------------------------------------------------


def _ssh_kexinit(rng: np.random.Generator, modern: bool) -> tuple[bytes, int]:
    """SSH_MSG_KEXINIT packet (RFC 4253 §7.1); returns (packet, offset of the 16-byte cookie)."""
    kex = ("sntrup761x25519-sha512@openssh.com," if modern else "") + (
        "curve25519-sha256,curve25519-sha256@libssh.org,ecdh-sha2-nistp256,ecdh-sha2-nistp384,"
        "ecdh-sha2-nistp521,diffie-hellman-group-exchange-sha256,diffie-hellman-group16-sha512,"
        "diffie-hellman-group18-sha512,diffie-hellman-group14-sha256,ext-info-c"
        + (",kex-strict-c-v00@openssh.com" if modern else ""))
    hostkey = "ssh-ed25519-cert-v01@openssh.com,ecdsa-sha2-nistp256,ssh-ed25519,rsa-sha2-512,rsa-sha2-256"
    enc = "chacha20-poly1305@openssh.com,aes128-ctr,aes192-ctr,aes256-ctr,aes128-gcm@openssh.com"
    mac = "umac-64-etm@openssh.com,hmac-sha2-256-etm@openssh.com,hmac-sha2-512-etm@openssh.com"
    lists = [kex, hostkey, enc, enc, mac, mac, "none,zlib@openssh.com", "none,zlib@openssh.com", "", ""]
    payload = b"\x14" + bytes(16) + b"".join(struct.pack("!I", len(s)) + s.encode() for s in lists)
    payload += b"\x00" + bytes(4)
    pad = 8 - (5 + len(payload)) % 8
    pad += 8 if pad < 4 else 0
    pkt = struct.pack("!IB", 1 + len(payload) + pad, pad) + payload + rng.bytes(pad)
    return pkt, 6


def _ssh_set(rng: np.random.Generator) -> list[_T]:
    out = []
    for banner in _SSH_BANNERS:
        b = (banner + "\r\n").encode()
        modern = "OpenSSH_9" in banner
        for answered in (False, True):
            if not answered:  # clients wait for the server's banner before KEXINIT
                out.append(_T(b, len(b)))
                continue
            kx, ck = _ssh_kexinit(rng, modern)
            server = _pick(rng, (*_SSH_BANNERS[:4], "SSH-2.0-dropbear_2022.83"))
            sb = (server + "\r\n").encode()
            skx, sck = _ssh_kexinit(rng, True)
            out.append(_T(b + kx, len(b + kx), 2, sb + skx, len(sb + skx), 2,
                          orig_rand=[(len(b) + ck, len(b) + ck + 16)],
                          resp_rand=[(len(sb) + sck, len(sb) + sck + 16)]))
    return out


_UAS = (
    "curl/8.5.0", "Wget/1.21.4", "python-requests/2.32.3", "Go-http-client/1.1",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/130.0 Safari/537.36",
    "Mozilla/5.0 zgrab/0.x", "Microsoft-CryptoAPI/10.0",
)
_HTTP_RESP = (
    b"HTTP/1.1 200 OK\r\nServer: nginx/1.24.0 (Ubuntu)\r\nContent-Type: text/html\r\n"
    b"Content-Length: 612\r\n\r\n",
    b"HTTP/1.1 400 Bad Request\r\nServer: nginx\r\nContent-Type: text/html\r\nContent-Length: 150\r\n"
    b"Connection: close\r\n\r\n",
    b"HTTP/1.1 404 Not Found\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 19\r\n\r\n",
    b"HTTP/1.0 302 Found\r\nLocation: https://portal.example.net/login\r\nContent-Length: 0\r\n\r\n",
)
_PROXY_RESP = (
    b"HTTP/1.1 200 Connection established\r\n\r\n",
    b"HTTP/1.1 407 Proxy Authentication Required\r\nServer: squid/6.6\r\n"
    b'Proxy-Authenticate: Basic realm="proxy"\r\nContent-Length: 3524\r\n\r\n',
    b"HTTP/1.1 403 Forbidden\r\nServer: squid/6.6\r\nContent-Type: text/html\r\n\r\n",
)


def _http_sets(rng: np.random.Generator) -> tuple[list[_T], list[_T]]:
    get, connect = [], []
    for _ in range(60):
        ua = _pick(rng, _UAS)
        host = _pick(rng, (f"{_pick(rng, _SUBS)}.{_popular(rng)}", _pub_v4(rng), f"{_pub_v4(rng)}:53"))
        method = _pick(rng, ("GET", "GET", "GET", "POST", "HEAD"))
        path = _pick(rng, ("/", "/", "/index.html", "/api/v1/status", f"/{_hex(rng, 12)}", "/favicon.ico",
                           "/.env", "/wp-login.php", "/update/check?v=3.2.1"))
        if ua.startswith("Mozilla/5.0 zgrab") or rng.random() < 0.1:
            req = f"{method} {path} HTTP/1.0\r\n\r\n" if rng.random() < 0.5 else (
                f"{method} / HTTP/1.1\r\nHost: {host}\r\nUser-Agent: {ua}\r\nAccept: */*\r\n"
                "Accept-Encoding: gzip\r\n\r\n")
        elif ua.startswith("python"):
            req = (f"{method} {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: {ua}\r\n"
                   "Accept-Encoding: gzip, deflate\r\nAccept: */*\r\nConnection: keep-alive\r\n\r\n")
        else:
            req = f"{method} {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: {ua}\r\nAccept: */*\r\n\r\n"
        if method == "POST":
            body = '{"id":"' + _hex(rng, 16) + '","status":"ok"}'
            req = req[:-2] + f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n{body}"
        b = req.encode()
        resp = _pick(rng, _HTTP_RESP) if rng.random() < 0.6 else None
        extra = int(rng.integers(150, 60000)) if resp else 0
        get.append(_T(b, len(b), 1, resp, len(resp) + extra if resp else 0, 1 if resp else 0))
    for _ in range(30):
        target = f"{_pick(rng, _SUBS)}.{_popular(rng)}:{_pick(rng, (443, 443, 22, 8443))}"
        ua = _pick(rng, _UAS)
        req = (f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\nUser-Agent: {ua}\r\n"
               "Proxy-Connection: Keep-Alive\r\n\r\n").encode()
        resp = _pick(rng, _PROXY_RESP) if rng.random() < 0.6 else None
        # only an established tunnel carries traffic after the proxy's answer
        tunnel = resp is not None and b" 200 " in resp
        up, down = (int(rng.integers(2000, 400000)), int(rng.integers(5000, 4000000))) if tunnel else (0, 0)
        connect.append(_T(req, len(req) + up, 1 + up // 1000, resp, len(resp) + down if resp else 0,
                          1 + down // 1400 if resp else 0))
    return get, connect


_SNIS = ("dns.google", "cloudflare-dns.com", "vpn.example.org", "www.microsoft.com", "update.example.net",
         "login.microsoftonline.com", "cdn.jsdelivr.net", "api.telegram.org", "a1.example.io",
         "one.one.one.one")


@lru_cache(maxsize=64)
def _client_hello(sni: str, variant: int) -> bytes:
    """A real ClientHello from this Python's OpenSSL (its random fields are re-randomised per row)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if variant == 1:
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    elif variant == 2:
        ctx.set_alpn_protocols(["h2", "http/1.1"])
    elif variant == 3:
        ctx.set_alpn_protocols(["dot"])
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    sock = ctx.wrap_bio(incoming, outgoing, server_hostname=sni)
    with contextlib.suppress(ssl.SSLWantReadError):  # no server: the hello is all there is
        sock.do_handshake()
    return outgoing.read()


def _server_hello(rng: np.random.Generator, sid_len: int) -> tuple[bytes, int]:
    """First bytes of a TLS 1.2/1.3 ServerHello flight; returns (bytes, total flight size)."""
    body = b"\x03\x03" + bytes(32) + bytes([sid_len]) + bytes(sid_len) + b"\x13\x01\x00"
    # extensions: supported_versions = TLS 1.3, key_share x25519
    body += struct.pack("!H", 46) + bytes.fromhex("002b00020304" "00330024001d0020") + bytes(32)
    hs = b"\x02" + len(body).to_bytes(3, "big") + body
    rec = b"\x16\x03\x03" + struct.pack("!H", len(hs)) + hs + bytes.fromhex("140303000101")
    return rec, len(rec) + int(rng.integers(1200, 5200))  # + encrypted certificate flight


def _tls_set(rng: np.random.Generator) -> list[_T]:
    out = []
    for sni in _SNIS:
        for variant in range(4):
            hello = _client_hello(sni, variant)
            if len(hello) < 44 or hello[0] != 0x16:
                continue
            sid = hello[43]
            rnd = [(11, 43), (44, 44 + sid)]
            for answered in (False, True):
                if not answered:
                    out.append(_T(hello, len(hello), 1, orig_rand=rnd))
                    continue
                srv_sid = sid if sid else 32
                sh, total = _server_hello(rng, srv_sid)
                echo = [(44, 44, sid)] if sid else []  # TLS 1.3 servers echo the legacy session id
                out.append(_T(hello, len(hello), 1, sh, total, 3, orig_rand=rnd,
                              resp_rand=[(11, 43), (44, 44 + srv_sid)] if not sid else [(11, 43)],
                              echo=echo))
    return out


def _shift(ranges: list[tuple[int, int]], k: int) -> list[tuple[int, int]]:
    return [(a + k, b + k) for a, b in ranges]


def _openvpn_sets(rng: np.random.Generator) -> tuple[list[_T], list[_T]]:
    """P_CONTROL_HARD_RESET_CLIENT_V2 (opcode 7, key id 0: 0x38) and the server's V2 reply (0x40)."""
    udp, tcp = [], []
    for auth in ("none", "sha1", "sha256", "crypt"):
        hmac = {"none": 0, "sha1": 20, "sha256": 32, "crypt": 0}[auth]
        c = b"\x38" + bytes(8)  # opcode/key byte, session id
        c_rand = [(1, 9)]
        c_ts = -1
        if auth in ("sha1", "sha256"):
            c_rand.append((9, 9 + hmac))
            c += bytes(hmac) + b"\x00\x00\x00\x01"  # HMAC, replay packet id
            c_ts = len(c)
            c += bytes(4)  # net time
        elif auth == "crypt":
            c += b"\x00\x00\x00\x01"
            c_ts = len(c)
            c += bytes(4) + bytes(32 + 5)  # tag + encrypted ack array/packet id
            c_rand.append((17, 17 + 37))
        if auth != "crypt":
            c += b"\x00" + b"\x00\x00\x00\x00"  # ack array length 0, message packet id 0
        s = b"\x40" + bytes(8)
        s_rand = [(1, 9)]
        s_ts = -1
        if hmac:
            s_rand.append((9, 9 + hmac))
            s += bytes(hmac) + b"\x00\x00\x00\x01"
            s_ts = len(s)
            s += bytes(4)
        elif auth == "crypt":
            s += b"\x00\x00\x00\x01"
            s_ts = len(s)
            s += bytes(4) + bytes(32 + 17)
            s_rand.append((17, 17 + 49))
        echo_at = -1
        if auth != "crypt":
            s += b"\x01" + b"\x00\x00\x00\x00"  # acks the client's packet 0 ...
            echo_at = len(s)
            s += bytes(8) + b"\x00\x00\x00\x00"  # ... of the client's session id
        for framed in (False, True):
            pre_o = struct.pack("!H", len(c)) if framed else b""
            pre_r = struct.pack("!H", len(s)) if framed else b""
            k = len(pre_o)
            for answered in (False, True):
                t = _T(pre_o + c, len(c) + k, 1, orig_rand=_shift(c_rand, k),
                       orig_ts=c_ts + k if c_ts >= 0 else -1)
                if answered:
                    t.resp, t.resp_total, t.resp_msgs = pre_r + s, len(s) + k, 1
                    t.resp_rand = _shift(s_rand, k)
                    t.resp_ts = s_ts + k if s_ts >= 0 else -1
                    if echo_at >= 0:
                        t.echo = [(echo_at + k, 1 + k, 8)]
                (tcp if framed else udp).append(t)
    return udp, tcp


def _random_sets(rng: np.random.Generator) -> tuple[list[_T], list[_T]]:
    udp, tcp = [], []
    for n in (16, 24, 32, 40, 48, 56, 64, 72, 96, 128, 160, 256, 512, 1024, 1200, 1350):
        for answered in (False, True):
            r = int(rng.integers(16, 1400)) if answered else 0
            t = _T(bytes(n), n, 1, bytes(r) if answered else None, r, 1 if answered else 0,
                   orig_rand=[(0, n)], resp_rand=[(0, r)] if answered else [])
            udp.append(t)
            tcp.append(_T(bytes(n), n, 1, bytes(r) if answered else None, r, 1 if answered else 0,
                          orig_rand=[(0, n)], resp_rand=[(0, r)] if answered else []))
    return udp, tcp


def _ntp_set(rng: np.random.Generator) -> list[_T]:
    out = []
    for vn in (4, 3):
        c = bytes([(vn << 3) | 3, 0, 6, 0x20]) + bytes(36) + bytes(8)  # client mode, random transmit ts
        s = bytes([(vn << 3) | 4, 2, 6, 0xE9]) + bytes(8) + bytes([10, 0, 0, 1]) + bytes(32)
        out.append(_T(c, 48, 1, s, 48, 1, orig_rand=[(40, 48)], resp_rand=[(16, 24), (32, 48)],
                      echo=[(24, 40, 8)]))  # server echoes the client's transmit time as origin
    return out


def _quic_set(rng: np.random.Generator) -> list[_T]:
    out = []
    for first in (0xC0, 0xC1, 0xC3, 0xC8, 0xCB):
        for size in (1200, 1250, 1252, 1357):
            h = bytes([first]) + b"\x00\x00\x00\x01\x08" + bytes(8) + b"\x00\x00"
            h += struct.pack("!H", 0x4000 | (size - len(h) - 2))
            s = bytes([first & 0xF0]) + b"\x00\x00\x00\x01\x00\x08" + bytes(8) + b"\x00" + b"\x44\xe2"
            out.append(_T(h + bytes(size - len(h)), size, 1, s + bytes(1200 - len(s)), 4800, 4,
                          orig_rand=[(6, 14), (len(h), size)], resp_rand=[(7, 15), (len(s), 1200)]))
    return out


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


# --------------------------------------------------------------------------------------------
# Categories: what a row is, where it goes, and how big it is
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Cat:
    name: str
    label: str
    group: str  # dns | nondns | tunnel | empty | reverse | background
    weight: float  # share within its group
    proto: int
    src: str  # address kind of the initiator
    dst: str  # address kind of the responder
    sport: int | str  # "eph" (OS ephemeral range), "rand" (full range) or a fixed port
    dport: int | str
    tmpl: str
    v6: float = 0.12
    loss: float = 0.0  # chance an answer that exists in the template is missing
    rtt: float = 0.015  # median seconds
    retries: int = 3  # UDP: most re-sends when nothing comes back
    session: float = 0.0  # median extra payload per direction after the first flight
    session_s: float = 0.0  # median session duration, seconds
    null_orig: bool = False


_CATS = (
    # Genuine DNS on port 53 (share of "dns" group)
    _Cat("stub_udp", "dns", "dns", 0.765, _UDP, "client", "resolver", "eph", 53, "stub_udp", loss=0.015),
    _Cat("stub_tcp", "dns", "dns", 0.100, _TCP, "client", "resolver", "eph", 53, "stub_tcp", loss=0.003),
    _Cat("stub_tcp_pipe", "dns", "dns", 0.030, _TCP, "client", "resolver", "eph", 53, "stub_tcp_pipe"),
    _Cat("iter_udp", "dns", "dns", 0.060, _UDP, "dns_server", "auth", "rand", 53, "iter_udp", v6=0.25,
         loss=0.02, rtt=0.04),
    _Cat("iter_tcp", "dns", "dns", 0.015, _TCP, "dns_server", "auth", "rand", 53, "iter_tcp", v6=0.25,
         rtt=0.04),
    _Cat("xfr_tcp", "dns", "dns", 0.004, _TCP, "dns_server", "dns_server", "eph", 53, "xfr_tcp", rtt=0.002),
    _Cat("notify_udp", "dns", "dns", 0.006, _UDP, "dns_server", "dns_server", "rand", 53, "notify_udp",
         rtt=0.002),
    _Cat("update_udp", "dns", "dns", 0.010, _UDP, "client", "dns_server", "eph", 53, "update_udp", rtt=0.004),
    _Cat("update_tcp", "dns", "dns", 0.002, _TCP, "client", "dns_server", "eph", 53, "update_tcp", rtt=0.004),
    # A resolver that queries from port 53: the answer can be the first packet a sensor sees.
    _Cat("both53", "dns", "dns", 0.004, _UDP, "auth", "dns_server", 53, 53, "both53", v6=0.2, retries=1),
    # Other protocols sent to port 53 (share of the "nondns" group)
    _Cat("ssh", "ssh", "nondns", 0.20, _TCP, "client", "external", "eph", 53, "ssh", v6=0.05, rtt=0.05,
         session=40000, session_s=120),
    _Cat("http_get", "http", "nondns", 0.14, _TCP, "client", "external", "eph", 53, "http_get", v6=0.05,
         rtt=0.05, session_s=1),
    _Cat("http_connect", "http", "nondns", 0.06, _TCP, "client", "external", "eph", 53, "http_connect",
         v6=0.05, rtt=0.05, session_s=30),
    _Cat("tls", "tls", "nondns", 0.22, _TCP, "client", "external", "eph", 53, "tls", v6=0.05, rtt=0.05,
         session=20000, session_s=20),
    _Cat("openvpn_udp", "openvpn", "nondns", 0.13, _UDP, "client", "external", "eph", 53, "openvpn_udp",
         v6=0.05, rtt=0.05, retries=30, session=200000, session_s=600),
    _Cat("openvpn_tcp", "openvpn", "nondns", 0.07, _TCP, "client", "external", "eph", 53, "openvpn_tcp",
         v6=0.05, rtt=0.05, session=200000, session_s=600),
    _Cat("random_udp", "random", "nondns", 0.14, _UDP, "client", "external", "eph", 53, "random_udp",
         v6=0.05, rtt=0.08, retries=6, session=5000, session_s=60),
    _Cat("random_tcp", "random", "nondns", 0.04, _TCP, "client", "external", "eph", 53, "random_tcp",
         v6=0.05, rtt=0.08, session=5000, session_s=60),
    # chaos: DNS tunnels, through the site's resolver or straight to the attacker's name server
    _Cat("tunnel_stub", "dns-tunnel", "tunnel", 0.6, _UDP, "client", "resolver", "eph", 53, "tunnel",
         session=30000, session_s=300),
    _Cat("tunnel_direct", "dns-tunnel", "tunnel", 0.4, _UDP, "client", "external", "eph", 53, "tunnel",
         v6=0.05, rtt=0.05, session=30000, session_s=300),
    # chaos: handshake-only TCP to 53 and flows whose payload was not captured
    _Cat("empty_tcp", "empty", "empty", 0.7, _TCP, "client", "resolver", "eph", 53, "empty"),
    _Cat("null_tcp", "empty", "empty", 0.3, _TCP, "client", "resolver", "eph", 53, "empty", null_orig=True),
    # chaos: port 53 as the source (the query was not seen; the answer starts the flow)
    _Cat("reverse", "dns", "reverse", 1.0, _UDP, "resolver_int", "client", 53, "eph", "reverse", retries=1),
    # chaos: background traffic on other ports that the scorer must filter out
    _Cat("https", "other-port", "background", 0.45, _TCP, "client", "external", "eph", 443, "tls", v6=0.2,
         rtt=0.03, session=50000, session_s=15),
    _Cat("quic", "other-port", "background", 0.18, _UDP, "client", "external", "eph", 443, "quic", v6=0.3,
         rtt=0.03, session=200000, session_s=20),
    _Cat("http", "other-port", "background", 0.07, _TCP, "client", "external", "eph", 80, "http_get",
         v6=0.1, rtt=0.03, session_s=1),
    _Cat("ntp", "other-port", "background", 0.08, _UDP, "client", "external", 123, 123, "ntp", v6=0.1,
         rtt=0.02, retries=1),
    _Cat("dot", "other-port", "background", 0.03, _TCP, "client", "resolver_pub", "eph", 853, "tls",
         v6=0.2, rtt=0.02, session=4000, session_s=30),
    _Cat("mdns", "other-port", "background", 0.12, _UDP, "client", "mcast", 5353, 5353, "mdns", v6=0.4,
         retries=1),
    _Cat("ssh22", "other-port", "background", 0.07, _TCP, "client", "external", "eph", 22, "ssh", v6=0.1,
         rtt=0.03, session=40000, session_s=300),
)
_CAT_INDEX = {c.name: i for i, c in enumerate(_CATS)}

# Group shares (chaos only): background of all rows; empty and reverse of port-53 rows.
_BACKGROUND_SHARE = 0.05
_EMPTY_SHARE = 0.01
_REVERSE_SHARE = 0.005
_TUNNEL_SHARE = 0.004  # from one infected host a day: fewer queries than a real tunnel sends, enough to be a pair

_SENSORS = ("zeek-hq-01", "zeek-hq-02", "zeek-dc-01", "corelight-branch-07")

# Hourly traffic shape (UTC): a working-day curve so timestamps are not uniform.
_DIURNAL = np.array([3, 2, 2, 2, 2, 3, 5, 8, 12, 14, 14, 13, 12, 13, 14, 14, 13, 11, 9, 7, 6, 5, 4, 3], float)
_DIURNAL_CDF = np.concatenate([[0.0], np.cumsum(_DIURNAL) / _DIURNAL.sum()])


class _Pool:
    """Everything built once per call: templates, address pools, category arrays."""

    def __init__(self, rng: np.random.Generator) -> None:
        t = _Table()
        _dns_sets(t, rng)
        t.add("ssh", _ssh_set(rng))
        get, connect = _http_sets(rng)
        t.add("http_get", get)
        t.add("http_connect", connect)
        t.add("tls", _tls_set(rng))
        ovpn_udp, ovpn_tcp = _openvpn_sets(rng)
        t.add("openvpn_udp", ovpn_udp)
        t.add("openvpn_tcp", ovpn_tcp)
        rnd_udp, rnd_tcp = _random_sets(rng)
        t.add("random_udp", rnd_udp)
        t.add("random_tcp", rnd_tcp)
        t.add("ntp", _ntp_set(rng))
        t.add("quic", _quic_set(rng))
        t.add("tunnel", _tunnel_set(rng))
        t.add("empty", [_T(b"", 0, 0)])
        t.freeze()
        self.t = t

        # Address pools, per kind and family; one big string array that rows index into.
        pools: dict[tuple[str, int], list[str]] = {
            ("client", 4): sorted({_client_v4(rng) for _ in range(5000)}),
            ("client", 6): sorted({_client_v6(rng) for _ in range(800)}),
            ("resolver_int", 4): ["10.0.0.53", "10.0.0.54", "10.20.0.53", "10.20.0.54", "192.168.1.1"],
            ("resolver_int", 6): [f"{_SITE_V6}::53", f"{_SITE_V6}::54", f"{_SITE_V6}:14::53"],
            ("resolver_pub", 4): ["8.8.8.8", "8.8.4.4", "1.1.1.1", "1.0.0.1", "9.9.9.9", "208.67.222.222"],
            ("resolver_pub", 6): ["2001:4860:4860::8888", "2606:4700:4700::1111", "2620:fe::fe"],
            ("dns_server", 4): ["10.0.0.10", "10.0.0.11", "10.20.0.10", "10.0.0.53", "10.20.0.53"],
            ("dns_server", 6): [f"{_SITE_V6}::10", f"{_SITE_V6}::11", f"{_SITE_V6}::53"],
            ("auth", 4): ["198.41.0.4", "199.9.14.201", "192.33.4.12", "199.7.91.13", "192.203.230.10",
                          "192.5.5.241", "192.112.36.4", "198.97.190.53", "192.36.148.17", "192.58.128.30",
                          "193.0.14.129", "199.7.83.42", "202.12.27.33", "192.5.6.30", "192.33.14.30",
                          "192.26.92.30", *sorted({_pub_v4(rng) for _ in range(400)})],
            ("auth", 6): ["2001:503:ba3e::2:30", "2001:7fd::1", "2001:500:2f::f", "2001:503:a83e::2:30",
                          *sorted({_pub_v6(rng) for _ in range(100)})],
            ("external", 4): sorted({_pub_v4(rng) for _ in range(3000)}),
            ("external", 6): sorted({_pub_v6(rng) for _ in range(400)}),
            ("mcast", 4): ["224.0.0.251"],
            ("mcast", 6): ["ff02::fb"],
        }
        self.kinds = sorted({k for k, _ in pools} | {"resolver"})
        kid = {k: i for i, k in enumerate(self.kinds)}
        strings: list[str] = []
        self.ip_off = np.zeros((len(self.kinds), 2), np.int64)
        self.ip_size = np.ones((len(self.kinds), 2), np.int64)
        for (k, fam), ips in pools.items():
            self.ip_off[kid[k], int(fam == 6)] = len(strings)
            self.ip_size[kid[k], int(fam == 6)] = len(ips)
            strings.extend(ips)
        self.ips = pa.array(strings, pa.string())
        self.kid = kid

        cats = _CATS
        self.c_label = np.array([LABELS.index(c.label) for c in cats])
        self.c_proto = np.array([c.proto for c in cats], np.int8)
        self.c_src = np.array([kid[c.src] for c in cats])
        self.c_dst = np.array([kid[c.dst] for c in cats])
        self.c_sport = np.array([c.sport if isinstance(c.sport, int) else -1 if c.sport == "eph" else -2
                                 for c in cats])
        self.c_dport = np.array([c.dport if isinstance(c.dport, int) else -1 for c in cats])
        self.c_v6 = np.array([c.v6 for c in cats])
        self.c_loss = np.array([c.loss for c in cats])
        self.c_rtt = np.array([c.rtt for c in cats])
        self.c_retries = np.array([c.retries for c in cats])
        self.c_session = np.array([c.session for c in cats])
        self.c_session_s = np.array([c.session_s for c in cats])
        self.c_null = np.array([c.null_orig for c in cats])
        self.c_start = np.array([t.sets[c.tmpl][0] for c in cats])
        self.c_size = np.array([t.sets[c.tmpl][1] - t.sets[c.tmpl][0] for c in cats])


@lru_cache(maxsize=4)
def _pool_for(key: tuple[int, ...]) -> _Pool:
    """Pools are pure functions of their seed, so repeated calls (tests, several days) share one."""
    return _Pool(np.random.default_rng(list(key)))


def _largest_remainder(total: int, weights: np.ndarray) -> np.ndarray:
    """Integer counts summing to total, proportional to weights (exact shares, no sampling noise)."""
    if total <= 0 or weights.sum() <= 0:
        return np.zeros(len(weights), np.int64)
    raw = weights / weights.sum() * total
    base = np.floor(raw).astype(np.int64)
    rest = total - int(base.sum())
    if rest:
        base[np.argsort(-(raw - base), kind="stable")[:rest]] += 1
    return base


def _category_counts(n: int, non_dns_fraction: float, chaos: bool) -> np.ndarray:
    group_of = np.array([c.group for c in _CATS])
    w = np.array([c.weight for c in _CATS])
    n_bg = round(n * _BACKGROUND_SHARE) if chaos else 0
    n53 = n - n_bg
    n_non = round(n53 * non_dns_fraction)
    n_empty = round(n53 * _EMPTY_SHARE) if chaos else 0
    n_rev = round(n53 * _REVERSE_SHARE) if chaos else 0
    n_tun = round(n53 * _TUNNEL_SHARE) if chaos else 0
    n_dns = n53 - n_non - n_empty - n_rev - n_tun
    if n_dns < 0:  # tiny n or fraction near 1: the messy extras give way first
        n_empty, n_rev, n_tun = 0, 0, 0
        n_dns = n53 - n_non
    counts = np.zeros(len(_CATS), np.int64)
    for group, k in (("dns", n_dns), ("nondns", n_non), ("empty", n_empty), ("reverse", n_rev),
                     ("tunnel", n_tun), ("background", n_bg)):
        m = group_of == group
        counts[m] = _largest_remainder(k, w[m])
    return counts


def _binary(mat: np.ndarray, lengths: np.ndarray, valid: np.ndarray) -> pa.Array:
    """BinaryArray from a (n, W) byte matrix, per-row lengths and a validity mask, without copies per row."""
    n = len(lengths)
    lengths = np.where(valid, lengths, 0)
    offsets = np.zeros(n + 1, np.int64)
    np.cumsum(lengths, out=offsets[1:])
    if offsets[-1] > np.iinfo(np.int32).max:  # pa.binary() has 32-bit offsets
        raise ValueError("too many rows for one table; write_sample generates in chunks")
    offsets = offsets.astype(np.int32)
    data = mat[:, :PREFIX_LEN][np.arange(PREFIX_LEN) < lengths[:, None]]
    nulls = int(n - valid.sum())
    bitmap = pa.py_buffer(np.packbits(valid, bitorder="little")) if nulls else None
    return pa.Array.from_buffers(pa.binary(), n, [bitmap, pa.py_buffer(offsets), pa.py_buffer(data)],
                                 null_count=nulls)


def _flow_ids(day: str, start: int, n: int) -> pa.Array:
    """'F' + YYYYMMDD + '-' + 8 hex digits of a per-day counter, built as one fixed-width buffer."""
    head = np.frombuffer(f"F{day.replace('-', '')}-".encode(), np.uint8)
    width = len(head) + 8
    counter = np.arange(start, start + n, dtype=np.uint64)
    digits = (counter[:, None] >> (np.arange(7, -1, -1, dtype=np.uint64) * 4)) & 0xF
    lut = np.frombuffer(b"0123456789abcdef", np.uint8)
    mat = np.empty((n, width), np.uint8)
    mat[:, : len(head)] = head
    mat[:, len(head) :] = lut[digits]
    offsets = (np.arange(n + 1, dtype=np.int64) * width).astype(np.int32)
    return pa.Array.from_buffers(pa.string(), n, [None, pa.py_buffer(offsets), pa.py_buffer(mat.ravel())])


def _day_start_us(day: str) -> int:
    d = _dt.date.fromisoformat(day)
    return (d.toordinal() - _dt.date(1970, 1, 1).toordinal()) * 86_400_000_000


def _generate(pool: _Pool, n: int, day: str, rng: np.random.Generator, *, first: int, u_lo: float,
              u_hi: float, non_dns_fraction: float, chaos: bool) -> tuple[pa.Table, pa.Table]:
    """Rows [first, first + n) of a day; their timestamps fall in the day-quantile range [u_lo, u_hi)."""
    t = pool.t
    counts = _category_counts(n, non_dns_fraction, chaos)
    cat = rng.permutation(np.repeat(np.arange(len(_CATS)), counts))
    tm = pool.c_start[cat] + (rng.random(n) * pool.c_size[cat]).astype(np.int64)

    # Timestamps: sorted quantiles of the diurnal curve, so chunks are in time order.
    u = u_lo + (u_hi - u_lo) * np.sort(rng.random(n))
    hour = np.clip(np.searchsorted(_DIURNAL_CDF, u, side="right") - 1, 0, 23)
    frac = (u - _DIURNAL_CDF[hour]) / (_DIURNAL_CDF[hour + 1] - _DIURNAL_CDF[hour])
    ts = _day_start_us(day) + np.minimum(((hour + frac) * 3.6e9).astype(np.int64), 86_400_000_000 - 1)
    ts_s = (ts // 1_000_000).astype(np.uint32)

    # Payload prefixes: copy the template heads, then patch per-flow fields.
    orig = t.o_head[tm]
    resp = t.r_head[tm]
    ids = rng.integers(0, 65536, (n, 2), dtype=np.uint32)
    for head, pos_all in ((orig, t.o_ids), (resp, t.r_ids)):
        for s in range(2):
            pos = pos_all[tm, s]
            rows = np.nonzero(pos >= 0)[0]
            head[rows, pos[rows]] = ids[rows, s] >> 8
            head[rows, pos[rows] + 1] = ids[rows, s] & 0xFF
    for head, mask_all, any_all in ((orig, t.o_mask, t.o_rand_any), (resp, t.r_mask, t.r_rand_any)):
        rows = np.nonzero(any_all[tm])[0]
        if len(rows):
            noise = rng.integers(0, 256, (len(rows), _W), dtype=np.uint8)
            if head is orig:  # onto each template's alphabet (a tunnel's base32 stays base32)
                noise = np.take_along_axis(t.o_lut[tm[rows]], noise.astype(np.intp), axis=1)
            head[rows] = np.where(mask_all[tm[rows]], noise, head[rows])
    for head, ts_all in ((orig, t.o_ts), (resp, t.r_ts)):
        pos = ts_all[tm]
        rows = np.nonzero(pos >= 0)[0]
        for k in range(4):
            head[rows, pos[rows] + k] = (ts_s[rows] >> (8 * (3 - k))) & 0xFF
    rows = np.nonzero(t.echo_any[tm])[0]
    if len(rows):
        echo = t.echo[tm[rows]]
        copied = np.take_along_axis(orig[rows], np.maximum(echo, 0), axis=1)
        resp[rows] = np.where(echo >= 0, copied, resp[rows])

    proto = pool.c_proto[cat]
    udp = proto == _UDP
    answered = t.r_has[tm] & (rng.random(n) >= pool.c_loss[cat])
    orig_valid = ~(t.o_null[tm] | pool.c_null[cat])

    # Sizes, packets, durations: consistent with the messages (bytes = full message sizes).
    rtt = pool.c_rtt[cat] * np.exp(rng.normal(0.0, 0.8, n))
    sess = np.where(answered & (pool.c_session[cat] > 0),
                    pool.c_session[cat] * np.exp(rng.normal(0.0, 1.2, n)), 0.0).astype(np.int64)
    sess_r = (sess * rng.uniform(0.5, 8.0, n)).astype(np.int64)
    sess_s = np.where(answered, pool.c_session_s[cat] * np.exp(rng.normal(0.0, 1.0, n)), 0.0)
    # UDP re-sends: a few answered flows needed a retry; unanswered ones retry up to the category limit.
    sends = np.where(answered, 1 + (rng.random(n) < 0.03),
                     1 + (rng.random(n) * pool.c_retries[cat]).astype(np.int64))
    sends = np.where(udp, sends, 1)
    orig_bytes = t.o_total[tm] * sends + sess
    resp_bytes = np.where(answered, t.r_total[tm] + sess_r, 0)
    udp_opk = t.o_msgs[tm] * sends + sess // 1000
    udp_rpk = np.where(answered, t.r_msgs[tm] + sess_r // 1200, 0)
    seg_o = -(-orig_bytes // _MSS)
    seg_r = -(-resp_bytes // _MSS)
    tcp_opk = 3 + seg_o + (seg_r + 1) // 2  # SYN, ACK, FIN + data + delayed ACKs of the reply
    tcp_rpk = 2 + seg_r + (seg_o + 1) // 2  # SYN-ACK, FIN + data + ACKs
    orig_pkts = np.where(udp, udp_opk, tcp_opk)
    resp_pkts = np.where(udp, udp_rpk, tcp_rpk)
    retry_gap = rng.uniform(1.0, 2.5, n)
    duration = np.where(udp, np.where(answered, rtt, 0.0) + (sends - 1) * retry_gap,
                        rtt * (2 + np.clip(t.o_msgs[tm], 1, 3)))
    duration = duration + sess_s

    # Handshake-only and uncaptured TCP flows.
    empty = pool.c_label[cat] == LABELS.index("empty")
    if empty.any():
        null = empty & ~orig_valid
        orig_bytes = np.where(empty, np.where(null, rng.integers(30, 90, n), 0), orig_bytes)
        resp_bytes = np.where(empty, np.where(null, rng.integers(60, 600, n), 0), resp_bytes)
        orig_pkts = np.where(empty, np.where(null, 5, 2 + (rng.random(n) < 0.6)), orig_pkts)
        resp_pkts = np.where(empty, np.where(null, 4, 1 + (rng.random(n) < 0.6)), resp_pkts)
        duration = np.where(empty, rtt * 2, duration)
        answered = answered & ~empty

    # Addresses and ports.
    fam6 = rng.random(n) < pool.c_v6[cat]
    src_k, dst_k = pool.c_src[cat], pool.c_dst[cat]
    size_s = pool.ip_size[src_k, fam6.astype(int)]
    skew = np.where(src_k == pool.kid["client"], 2.0, 1.0)  # a few clients make most queries
    src_local = (rng.random(n) ** skew * size_s).astype(np.int64)
    # A tunnel runs on one infected host a day and talks to one name server: the site's resolver, or the
    # attacker's own server straight (pair escalation, udfs/pairs.py, looks for exactly that).
    tunnel = pool.c_label[cat] == LABELS.index("dns-tunnel")
    infected = zlib.crc32(day.encode())
    src_local = np.where(tunnel, infected % size_s, src_local)
    src_idx = pool.ip_off[src_k, fam6.astype(int)] + src_local
    is_res = dst_k == pool.kid["resolver"]
    use_pub = is_res & (rng.random(n) < 0.12) & ~tunnel  # malware asks the host's configured resolver
    dst_k = np.where(is_res, np.where(use_pub, pool.kid["resolver_pub"], pool.kid["resolver_int"]), dst_k)
    size_d = pool.ip_size[dst_k, fam6.astype(int)]
    r_d = rng.random(n)
    dst_local = np.where(is_res & ~use_pub, src_local % size_d, (r_d * size_d).astype(np.int64))
    dst_local = np.where(tunnel & ~is_res, (infected >> 12) % size_d, dst_local)
    same = (dst_k == src_k) & (size_d > 1)  # e.g. primary -> secondary: never the same server
    dst_local = np.where(same, (src_local + 1 + (r_d * (size_d - 1)).astype(np.int64)) % size_d, dst_local)
    dst_idx = pool.ip_off[dst_k, fam6.astype(int)] + dst_local

    eph = np.where(rng.random(n) < 0.6, rng.integers(32768, 61000, n), rng.integers(49152, 65536, n))
    full = rng.integers(1024, 65536, n)
    sport = np.select([pool.c_sport[cat] == -1, pool.c_sport[cat] == -2], [eph, full], pool.c_sport[cat])
    dport = np.where(pool.c_dport[cat] == -1, eph, pool.c_dport[cat])

    cols = {
        "flow_id": _flow_ids(day, first, n),
        "ts": pa.array(ts, pa.timestamp("us", tz="UTC")),
        "src_ip": pool.ips.take(pa.array(src_idx)),
        "dst_ip": pool.ips.take(pa.array(dst_idx)),
        "src_port": pa.array(sport.astype(np.int32)),
        "dst_port": pa.array(dport.astype(np.int32)),
        "proto": pa.array(proto),
        "orig_payload_prefix": _binary(orig, t.o_len[tm], orig_valid),
        "resp_payload_prefix": _binary(resp, t.r_len[tm], answered),
        "orig_bytes": pa.array(orig_bytes.astype(np.int64)),
        "resp_bytes": pa.array(resp_bytes.astype(np.int64)),
        "orig_pkts": pa.array(orig_pkts.astype(np.int64)),
        "resp_pkts": pa.array(resp_pkts.astype(np.int64)),
        "duration": pa.array(np.round(duration, 6).astype(np.float64)),
    }
    schema = FLOW_SCHEMA
    if chaos:
        sensor = (src_local + (dst_local * 7)) % len(_SENSORS)
        cols["sensor"] = pa.array(_SENSORS, pa.string()).take(pa.array(sensor))
        schema = schema.append(_SENSOR_FIELD)
    flows = pa.Table.from_pydict(cols, schema=schema)
    labels = pa.Table.from_pydict(
        {
            "flow_id": cols["flow_id"],
            "label": pa.array(LABELS, pa.string()).take(pa.array(pool.c_label[cat])),
            "date": pa.repeat(pa.scalar(day, pa.string()), n),
        },
        schema=LABEL_SCHEMA,
    )
    return flows, labels


def _check(n: int, non_dns_fraction: float) -> None:
    if n < 0:
        raise ValueError("number of flows must be >= 0")
    if not 0.0 <= non_dns_fraction <= 1.0:
        raise ValueError("non_dns_fraction must be in [0, 1]")


def sample_table(n: int, day: str, rng: np.random.Generator, *, non_dns_fraction: float = 0.005,
                 chaos: bool = True) -> tuple[pa.Table, pa.Table]:
    """Return (flows, labels) for one day, without writing.

    ``flows`` has the contract columns (plus ``sensor`` when ``chaos``), without ``date``;
    ``labels`` has ``flow_id``, ``label`` and ``date``. Rows are in time order.
    """
    _check(n, non_dns_fraction)
    _day_start_us(day)  # validate early
    pool = _pool_for((int(rng.integers(2**63)),))
    return _generate(pool, n, day, rng, first=0, u_lo=0.0, u_hi=1.0, non_dns_fraction=non_dns_fraction,
                     chaos=chaos)


def write_sample(out: str, *, days: int = 3, flows_per_day: int = 20000, seed: int = 7,
                 start: str = "2026-11-01", non_dns_fraction: float = 0.005,
                 chaos: bool = True) -> SampleSummary:
    """Write ``days`` partitions ``out/date=YYYY-MM-DD/part-00000.parquet`` and ``out/_labels.parquet``.

    Existing partitions for the same dates are replaced, other dates are kept (also in the labels
    file). The output depends only on the arguments.
    """
    _check(flows_per_day, non_dns_fraction)
    if days < 1:
        raise ValueError("days must be >= 1")
    first_day = _dt.date.fromisoformat(start)
    dates = [(first_day + _dt.timedelta(days=i)).isoformat() for i in range(days)]
    os.makedirs(out, exist_ok=True)
    # One pool per call; each day has its own stream keyed by (seed, date) so a day's content
    # does not depend on which other days were asked for.
    pool = _pool_for((seed, 0))
    counts = dict.fromkeys(LABELS, 0)
    labels_path = os.path.join(out, "_labels.parquet")
    labels_tmp = os.path.join(out, "_labels.parquet.tmp")
    with pq.ParquetWriter(labels_tmp, LABEL_SCHEMA) as lab_writer:
        _copy_other_labels(labels_path, set(dates), lab_writer)
        for day in dates:
            rng = np.random.default_rng([seed, _dt.date.fromisoformat(day).toordinal()])
            tmp_dir = os.path.join(out, f".date={day}.tmp")  # hidden from Spark and pyarrow
            shutil.rmtree(tmp_dir, ignore_errors=True)
            os.makedirs(tmp_dir)
            writer = None
            n_chunks = max(1, -(-flows_per_day // _CHUNK_ROWS))
            done = 0
            for k in range(n_chunks):
                n = flows_per_day // n_chunks + (k < flows_per_day % n_chunks)
                flows, labels = _generate(pool, n, day, rng, first=done, u_lo=done / max(flows_per_day, 1),
                                          u_hi=(done + n) / max(flows_per_day, 1),
                                          non_dns_fraction=non_dns_fraction, chaos=chaos)
                if writer is None:
                    writer = pq.ParquetWriter(os.path.join(tmp_dir, "part-00000.parquet"), flows.schema)
                writer.write_table(flows, row_group_size=_CHUNK_ROWS)
                lab_writer.write_table(labels)
                for vc in pc.value_counts(labels.column("label")).to_pylist():
                    counts[vc["values"]] += vc["counts"]
                done += n
            writer.close()
            final = os.path.join(out, f"date={day}")
            shutil.rmtree(final, ignore_errors=True)
            os.replace(tmp_dir, final)
    os.replace(labels_tmp, labels_path)
    return SampleSummary(out=out, dates=dates, flows=flows_per_day * days, labels_path=labels_path,
                         label_counts={k: v for k, v in counts.items() if v})


def _copy_other_labels(path: str, dates: set[str], writer: pq.ParquetWriter) -> None:
    """Keep labels of dates this run does not rewrite; an unreadable old file is dropped."""
    if not os.path.exists(path):
        return
    try:
        old = pq.ParquetFile(path)
        if not old.schema_arrow.equals(LABEL_SCHEMA):
            return
        for batch in old.iter_batches(batch_size=_CHUNK_ROWS):
            keep = ~np.isin(batch.column("date").to_numpy(zero_copy_only=False), list(dates))
            if keep.any():
                writer.write_table(pa.Table.from_batches([batch]).filter(pa.array(keep)))
    except (OSError, pa.ArrowInvalid):
        return
