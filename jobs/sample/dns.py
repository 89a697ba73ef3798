"""Sample archive, genuine DNS: names, addresses and dnspython-encoded exchanges (stub and iterative queries,
TCP, NOTIFY, UPDATE, transfers, mDNS). Used by jobs/sample/archive.py."""

from __future__ import annotations

import ipaddress

import dns.edns
import dns.flags
import dns.message
import dns.opcode
import dns.rcode
import dns.rrset
import dns.update
import numpy as np

from portprint.jobs.sample.templates import _T, _b32, _b64, _dns_tmpl, _hex, _pick, _Table

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
