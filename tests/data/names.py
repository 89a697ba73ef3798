"""Seeded query names and zones for corpus_names.sh (a fake Internet inside the ppcorpus namespace).

``names.py setup WORK OUT`` writes, under WORK:
  zones/root.zone, zones/arpa.zone         nsd: the root and arpa (127.53.0.1)
  zones/tld/<tld>.zone, knot-zones.conf    knot: every TLD (127.53.0.2)
  zones/sld/<domain>.zone, named-zones.conf  bind9: every second-level zone, in-addr.arpa, ip6.arpa
                                           and the tunnel parents (127.53.0.3)
  root.hints                               for the recursive resolvers
  plan/<client>.tsv                        the queries each client sends: qtype, name, resolver, flags
and OUT/names.tsv: every name queried with its category (``ordinary`` or a hard-benign kind). That
file is the ground truth label_corpus.py uses for ``@names`` rules: the category of a flow is the
category of the name the scenario asked for, found by exact (case-insensitive) match on the flow's
QNAME; queries a resolver makes on its own (NS addresses, root priming) are ``ordinary``.

``names.py query SOURCE FILE`` is the dnspython client: it sends each line of a plan file (one UDP
socket per query, TCP when the flags say so).

Everything is derived from random.Random(SEED), so a rerun asks the same names in the same order.
"""

from __future__ import annotations

import random
import string
import sys
import uuid
from pathlib import Path

SEED = 53
ROOT, TLD, AUTH = "127.53.0.1", "127.53.0.2", "127.53.0.3"
UNBOUND, BIND = "127.53.53.1", "127.53.53.2"  # the two recursive resolvers (stubs ask these)
TUNNELS = {  # tunnel domain -> (parent zone on bind9, server address)
    "t.mediacache.net": ("mediacache.net", "127.53.9.1"),  # iodined
    "d.updatesvc.org": ("updatesvc.org", "127.53.9.2"),  # dns2tcpd
    "x.metrics-cdn.io": ("metrics-cdn.io", "127.53.9.3"),  # dig-exfil sink (dnsmasq)
}
NSEC3_ZONE = "securebank.com"  # signed with NSEC3 by corpus_names.sh, no wildcard
NOWILD = {"corp-example.com", NSEC3_ZONE}  # zones without a wildcard: unknown names are NXDOMAIN

DOMAINS = """google.com youtube.com facebook.com instagram.com twitter.com x.com linkedin.com
microsoft.com apple.com amazon.com amazonaws.com cloudfront.net akamaiedge.net akamai.net fastly.net
cloudflare.com github.com githubusercontent.com wikipedia.org wikimedia.org netflix.com nflxvideo.net
spotify.com zoom.us slack.com office.com office365.com live.com outlook.com windows.com
windowsupdate.com azure.com azureedge.net msftncsi.com gstatic.com googleapis.com googlevideo.com
doubleclick.net yahoo.com bing.com reddit.com whatsapp.net icloud.com mzstatic.com apple-dns.net
adobe.com dropbox.com salesforce.com okta.com atlassian.net stackoverflow.com mozilla.org
firefox.com debian.org ubuntu.com python.org pypi.org npmjs.org docker.io docker.com bbc.co.uk
theguardian.com nytimes.com cnn.com spiegel.de heise.de amazon.de lemonde.fr yandex.ru
rakuten.co.jp sentry.io datadoghq.com newrelic.com segment.io hotjar.com digicert.com lencr.org
letsencrypt.org sectigo.com ntp.org gravatar.com wordpress.com shopify.com paypal.com ebay.com
booking.com airbnb.com twitch.tv tiktok.com bytedance.com discord.com telegram.org signal.org
steampowered.com epicgames.com playstation.net xboxlive.com nvidia.com intel.com dell.com hp.com
cisco.com oracle.com ibm.com sap.com vmware.com redhat.com gitlab.com bitbucket.org jetbrains.com
visualstudio.com trafficmanager.net cloudapp.net blob.core.windows.net gvt1.com ggpht.com
ytimg.com fbcdn.net cdninstagram.com licdn.com twimg.com pinimg.com pinterest.com tumblr.com
medium.com quora.com imdb.com weather.com accuweather.com bankofamerica.com chase.com
wellsfargo.com hsbc.co.uk barclays.co.uk ing.nl rabobank.nl bund.de gov.uk nhs.uk
example-shop.de stadtwerke-muenchen.de uni-heidelberg.de corp-example.com""".split()  # noqa: SIM905
SUBS = """www mail api cdn static login time update m smtp imap pop autodiscover vpn portal docs blog
shop img images assets accounts auth ws edge ns1 mx1 mx2 app apps support help status news media
video dl download files upload search maps calendar drive cloud dev staging test beta admin webmail
owa remote sso id secure pay checkout cart store ads analytics metrics telemetry events push
notifications chat meet voice sip www2 origin lb gateway proxy ocsp crl""".split()  # noqa: SIM905
WORDS = """north south east west river valley mountain garden summer winter spring autumn market
station library museum theatre gallery harbour bridge castle forest meadow island village school
college hospital clinic pharmacy bakery kitchen coffee service office account customer partner
portal network cloud storage backup archive report finance payroll benefits travel expense
marketing campaign newsletter product catalog inventory warehouse shipping delivery tracking
support community forum wiki learning training academy events tickets booking reservation""".split()  # noqa: SIM905
CORP_HOSTS = ["fileserver", "printer", "wsus", "intranet", "hr", "jira", "wiki", "git", "dc01", "dc02", "sccm"]
TLDS = sorted({d.rsplit(".", 1)[-1] for d in DOMAINS} | {"xn--p1ai", "xn--fiqs8s", "arpa-unused"} - {"arpa-unused"})
PUNY = [  # real IDNs (registered or plausible), in their ACE form
    "xn--mnchen-3ya.de",
    "xn--bcher-kva.de",
    "xn--mller-kva.de",
    "xn--strae-oqa.de",
    "xn--80ak6aa92e.com",
    "xn--e1afmkfd.xn--p1ai",
    "xn--d1acufc.xn--p1ai",
    "xn--fiqs8s",
    "xn--55qx5d.xn--fiqs8s",
    "xn--caf-dma.fr",
    "xn--fiq228c.com",
    "xn--wgbh1c.com",
    "xn--hxajbheg2az3al.com",
    "xn--bren-gra.de",
    "xn--zrich-kva.com",
    "xn--lgbbat1ad8j.com",
    "xn--kche-0ra.de",
    "xn--ls8h.la-unused",
]
PUNY = [p for p in PUNY if not p.endswith("-unused")]


def _rng_hex(r: random.Random, n: int) -> str:
    return "".join(r.choice("0123456789abcdef") for _ in range(n))


def _b32sel(r: random.Random) -> str:  # a 32-character DKIM selector as Amazon SES publishes them
    return "".join(r.choice(string.ascii_lowercase + "234567") for _ in range(32))


def _ip6_ptr(r: random.Random) -> str:
    prefix = r.choice(["20010db8", "2a001450", "26064700", "2a0398c0", "24068600", "2a02c7f8", "fd00ab12"])
    nib = prefix + _rng_hex(r, 32 - len(prefix))
    if r.random() < 0.3:  # SLAAC-style interface id with ff:fe, or a ::1 host
        nib = nib[:22] + "ff" + "fe" + nib[26:] if r.random() < 0.5 else nib[:16] + "0" * 15 + "1"
    return ".".join(reversed(nib)) + ".ip6.arpa"


def _long_name(r: random.Random, domain: str, target: int) -> str:
    labels: list[str] = []
    while len(".".join(labels)) + len(domain) < target:
        n = r.randint(2, 5)
        lab = "-".join(r.choice(WORDS) for _ in range(n))[:63].strip("-")
        labels.append(lab)
    name = ".".join(labels) + "." + domain
    while len(name) > 250:
        labels.pop(0)
        name = ".".join(labels) + "." + domain
    return name


def hard_names(r: random.Random) -> list[tuple[str, str, str]]:
    """(category, qtype, name) of hard benign lookups."""
    out: list[tuple[str, str, str]] = []
    doms = [d for d in DOMAINS if d not in NOWILD]
    for _ in range(70):
        out.append(("ip6-arpa", "PTR", _ip6_ptr(r)))
    for _ in range(35):  # 32/40-hex labels as CDNs, telemetry and object stores use them
        h = _rng_hex(r, r.choice([32, 32, 40, 40, 16, 48]))
        tmpl = r.choice(
            [
                "{h}.cdn.{d}",
                "{h}.ingest.sentry.io",
                "{h}.s3.amazonaws.com",
                "{h}.t.{d}",
                "cache-{h}.edge.{d}",
                "{h}.blob.core.windows.net",
                "{h}.gvt1.com",
                "{h}.api.{d}",
            ]
        )
        out.append(("hex-label", r.choice(["A", "A", "AAAA", "HTTPS"]), tmpl.format(h=h, d=r.choice(doms))))
    for _ in range(35):
        g = str(uuid.UUID(int=r.getrandbits(128), version=4))
        tmpl = r.choice(
            [
                "{g}.trafficmanager.net",
                "{g}.dl.delivery.mp.microsoft.com",
                "{g}.cloudapp.net",
                "{g}.azureedge.net",
                "{g}.{d}",
                "{g}.devices.{d}",
                "{g}._msdcs.corp-example.com",
            ]
        )
        out.append(("guid-label", r.choice(["A", "A", "AAAA", "CNAME"]), tmpl.format(g=g, d=r.choice(doms))))
    for _ in range(30):
        d = r.choice(doms)
        host = r.choice(["", "www.", "mail.", "api.", "shop.", "*."[:0]])
        out.append(("acme", "TXT", f"_acme-challenge.{host}{d}"))
    for _ in range(40):
        d = r.choice(doms)
        sel = r.choice(
            [
                "google",
                "selector1",
                "selector2",
                "s1",
                "s2",
                "k1",
                "k2",
                "default",
                "mail",
                "dkim",
                "mandrill",
                "mxvault",
                "smtpapi",
                "zendesk1",
                "fm1",
                "protonmail",
            ]
        )
        if r.random() < 0.4:
            sel = _b32sel(r)  # Amazon SES: three 32-character selectors per domain
        out.append(("dkim", "TXT", f"{sel}._domainkey.{d}"))
    for _ in range(35):
        d = r.choice(doms)
        n = r.choice(
            [
                f"_services._dns-sd._udp.{d}",
                f"b._dns-sd._udp.{d}",
                f"lb._dns-sd._udp.{d}",
                f"db._dns-sd._udp.{d}",
                f"_ipp._tcp.{d}",
                f"_airplay._tcp.{d}",
                f"_printer._tcp.{d}",
                f"b._dns-sd._udp.{r.randint(0, 3)}.{r.randint(0, 255)}.168.192.in-addr.arpa",
                f"lb._dns-sd._udp.0.{r.randint(1, 254)}.16.172.in-addr.arpa",
            ]
        )
        out.append(("dns-sd", "PTR", n))
    for _ in range(45):
        d = r.choice(doms)
        n = r.choice(
            [
                f"_ldap._tcp.dc._msdcs.{d}",
                f"_kerberos._udp.{d}",
                f"_kerberos._tcp.dc._msdcs.{d}",
                f"_ldap._tcp.Default-First-Site-Name._sites.dc._msdcs.{d}",
                f"_kpasswd._udp.{d}",
                f"_sip._tls.{d}",
                f"_sipfederationtls._tcp.{d}",
                f"_xmpp-client._tcp.{d}",
                f"_xmpp-server._tcp.{d}",
                f"_imaps._tcp.{d}",
                f"_submission._tcp.{d}",
                f"_autodiscover._tcp.{d}",
                f"_caldavs._tcp.{d}",
                f"_carddavs._tcp.{d}",
                f"_http._tcp.{d}",
                f"_minecraft._tcp.{d}",
                f"_matrix._tcp.{d}",
                f"_gc._tcp.{d}",
                f"_vlmcs._tcp.{d}",
                f"_ntp._udp.{d}",
                f"_mta-sts.{d}",
                f"_dmarc.{d}",
                f"_smtp._tls.{d}",
            ]
        )
        qt = "TXT" if n.startswith(("_mta-sts", "_dmarc", "_smtp._tls")) else "SRV"
        out.append(("srv", qt, n))
    for p in PUNY:
        for host in ("", "www."):
            out.append(("punycode", r.choice(["A", "AAAA", "MX"]), host + p))
    for _ in range(30):
        out.append(("long-name", r.choice(["A", "AAAA", "TXT"]), _long_name(r, r.choice(doms), r.randint(150, 240))))
    shorts = [
        (".", "NS"),
        (".", "SOA"),
        (".", "DNSKEY"),
        ("com", "NS"),
        ("net", "NS"),
        ("io", "SOA"),
        ("de", "NS"),
        ("uk", "DS"),
        ("x.com", "A"),
        ("t.co", "A"),
        ("a.co", "A"),
        ("m.me", "A"),
        ("x.org", "A"),
        ("a.b.c.d.com", "A"),
        ("g.co", "A"),
        ("w.io", "AAAA"),
        ("t.me", "A"),
        ("e.x.com", "A"),
        ("a.x.com", "AAAA"),
        ("i.i.io", "A"),
        ("z.tv", "A"),
        ("j.co.uk", "A"),
        ("q.de", "MX"),
        ("b.com", "A"),
        ("go.jp", "NS"),
        ("arpa", "NS"),
    ]
    for n, t in shorts:
        out.append(("short-name", t, n))
    return out


def ordinary_names(r: random.Random, n: int) -> list[tuple[str, str]]:
    """(qtype, name) of everyday lookups; popular names repeat (and then come from a resolver's cache)."""
    out: list[tuple[str, str]] = []
    doms = list(DOMAINS)
    weights = [1.0 / (i + 1) ** 0.6 for i in range(len(doms))]  # Zipf-like popularity
    while len(out) < n:
        d = r.choices(doms, weights)[0]
        x = r.random()
        if x < 0.06:
            ip = f"{r.randint(1, 223)}.{r.randint(0, 255)}.{r.randint(0, 255)}.{r.randint(1, 254)}"
            out.append(("PTR", ".".join(reversed(ip.split("."))) + ".in-addr.arpa"))
            continue
        if x < 0.10:
            out.append((r.choice(["MX", "TXT", "NS", "SOA", "CAA"]), d))
            continue
        if x < 0.14:  # typos and names that do not exist
            bad = d.split(".")[0]
            bad = bad[:-1] + bad[-1] * 2 if r.random() < 0.5 else bad + "s"
            out.append(("A", f"www.{bad}.{d.rsplit('.', 1)[1]}"))
            continue
        if x < 0.17:
            qt = r.choice(["A", "AAAA"])
            host = r.choice(CORP_HOSTS)
            out.append((qt, f"{host}.corp-example.com"))
            continue
        sub = r.choice(SUBS)
        if r.random() < 0.15:
            sub = f"{r.choice(SUBS)}.{r.choice(['eu', 'us', 'us-east-1', 'eu-west-1', 'de', 'prod', 'global', 'geo'])}"
        if r.random() < 0.08:
            sub = f"{sub}{r.randint(1, 24)}"
        name = f"{sub}.{d}" if r.random() > 0.08 else d
        qt = r.choices(["A", "AAAA", "HTTPS", "CNAME", "MX", "TXT"], [55, 30, 9, 2, 2, 2])[0]
        out.append((qt, name))
    return out


CLIENTS = {  # client -> (share of ordinary queries, source addresses)
    "dig": (0.40, [f"127.53.100.{i}" for i in range(1, 11)]),
    "kdig": (0.15, [f"127.53.101.{i}" for i in range(1, 6)]),
    "drill": (0.07, [f"127.53.102.{i}" for i in range(1, 4)]),
    "dnspython": (0.25, [f"127.53.103.{i}" for i in range(1, 11)]),
    "getent": (0.09, ["127.53.53.1", "127.53.53.2"]),  # glibc: the kernel picks the resolver's address
    "unbound-host": (0.02, ["127.53.105.1"]),
    "delv": (0.02, ["127.53.106.1"]),
}
GETENT_OK = {"A", "AAAA"}  # getent ahosts asks A+AAAA; other types go to another client


def plan(r: random.Random, n_ordinary: int) -> tuple[dict[str, list[str]], list[tuple[str, str]]]:
    ordinary = ordinary_names(r, n_ordinary)
    hard = hard_names(r)
    names: dict[str, str] = {}
    for cat, _t, name in hard:
        names.setdefault(name.lower().rstrip(".") or ".", cat)
    for _t, name in ordinary:
        names.setdefault(name.lower(), "ordinary")
    queries: list[tuple[str, str, str]] = [("ordinary", t, n) for t, n in ordinary] + hard
    r.shuffle(queries)
    plans: dict[str, list[str]] = {c: [] for c in CLIENTS}
    clients, shares = list(CLIENTS), [CLIENTS[c][0] for c in CLIENTS]
    for cat, qt, name in queries:
        c = r.choices(clients, shares)[0]
        if c == "getent" and (qt not in GETENT_OK or (cat != "ordinary" and cat not in ("punycode", "long-name"))):
            c = "dig"
        if c in ("unbound-host", "delv", "drill") and cat == "short-name":
            c = "kdig"
        res = UNBOUND if r.random() < 0.6 else BIND
        flags = []
        if cat == "nsec3" or r.random() < 0.05:
            flags.append("do")
        if c in ("dig", "kdig", "dnspython") and r.random() < 0.02:
            flags.append("tcp")
        plans[c].append(f"{qt}\t{name}\t{res}\t{','.join(flags) or '-'}")
    # NSEC3: existing and nonexistent names, with DO, through a resolver and straight at the signer
    for i in range(60):
        name = (
            r.choice(["www", "mail", "online", "api", "login", "secure"]) + f".{NSEC3_ZONE}"
            if i % 2
            else r.choice(["nope", "www2", "old", "test", "branch-" + str(r.randint(1, 99)), "x"]) + f".{NSEC3_ZONE}"
        )
        if i % 7 == 0:
            name = NSEC3_ZONE
        names.setdefault(name, "nsec3")
        qt = r.choice(["A", "AAAA", "MX", "TXT", "DNSKEY" if name == NSEC3_ZONE else "A"])
        res = AUTH if i % 3 == 0 else (UNBOUND if i % 3 == 1 else BIND)
        plans["dig" if i % 2 else "kdig"].append(f"{qt}\t{name}\t{res}\tdo")
    return plans, sorted(names.items())


def zone(origin: str, ns: list[tuple[str, str]], body: list[str]) -> str:
    head = [
        f"$ORIGIN {origin}.",
        "$TTL 3600",
        f"@ IN SOA {ns[0][0]}. hostmaster.{origin if origin != '.' else 'root'}. 2024060101 7200 900 1209600 300",
    ]
    head += [f"@ IN NS {n}." for n, _a in ns]
    return "\n".join(head + body).replace("$ORIGIN ..", "$ORIGIN .") + "\n"


def setup(work: Path, out: Path) -> None:
    r = random.Random(SEED)
    z = work / "zones"
    for sub in ("tld", "sld", "plan"):
        (z / sub if sub != "plan" else work / sub).mkdir(parents=True, exist_ok=True)
    # root: every TLD on knot, arpa on nsd itself; glue for the server names
    body = [f"{t} IN NS a.gtld-servers.net." for t in TLDS]
    body += ["arpa IN NS a.root-servers.net.", f"a.root-servers.net. IN A {ROOT}", f"a.gtld-servers.net. IN A {TLD}"]
    (z / "root.zone").write_text(zone(".", [("a.root-servers.net", ROOT)], body))
    (z / "arpa.zone").write_text(
        zone("arpa", [("a.root-servers.net", ROOT)], ["in-addr IN NS ns1.dnshost.net.", "ip6 IN NS ns1.dnshost.net."])
    )
    (work / "root.hints").write_text(f". 3600000 NS a.root-servers.net.\na.root-servers.net. 3600000 A {ROOT}\n")
    # TLDs: delegations of every second-level zone to bind9
    slds = sorted(set(DOMAINS) | {p for p in PUNY if p.count(".") == 1} | {p for p, _a in TUNNELS.values()})
    slds = [d for d in slds if "." in d]
    knot = []
    for t in TLDS:
        body = []
        for d in slds:
            if d.endswith("." + t):
                body.append(f"{d}. IN NS ns1.dnshost.net.")
        if t == "net":
            body += [
                f"a.root-servers.net. IN A {ROOT}",
                f"a.gtld-servers.net. IN A {TLD}",
                f"ns1.dnshost.net. IN A {AUTH}",
            ]
        if t == "xn--fiqs8s":
            body.append("@ IN A 192.0.2.86")
        (z / "tld" / f"{t}.zone").write_text(zone(t, [("a.gtld-servers.net", TLD)], body))
        knot.append(f"  - domain: {t}\n    file: {z}/tld/{t}.zone")
    (work / "knot-zones.conf").write_text("zone:\n" + "\n".join(knot) + "\n")
    # bind9: the second-level zones, with a wildcard for everything (the site's names all resolve)
    named = []
    for d in [*slds, "in-addr.arpa", "ip6.arpa"]:
        if d == NSEC3_ZONE:
            continue
        body = []
        if d.endswith(".arpa"):
            body.append("* IN PTR host-" + d.split(".")[0] + ".dnshost.net.")
        else:
            body += [
                "@ IN A 192.0.2.1",
                "@ IN AAAA 2001:db8::1",
                "@ IN MX 10 mx1",
                '@ IN TXT "v=spf1 mx -all"',
                '@ IN CAA 0 issue "letsencrypt.org"',
                "mx1 IN A 192.0.2.25",
            ]
            if d not in NOWILD:
                body += [
                    "* IN A 192.0.2.80",
                    "* IN AAAA 2001:db8::80",
                    "* IN MX 10 mx1",
                    '* IN TXT "v=spf1 -all"',
                    "* IN SRV 0 100 443 www",
                    "* IN HTTPS 1 . alpn=h2,h3",
                    "* IN PTR www",
                ]
            else:
                body += [
                    f"{h} IN A 10.1.0.{i + 10}"
                    for i, h in enumerate(
                        ["fileserver", "printer", "wsus", "intranet", "jira", "wiki", "git", "dc01", "dc02"]
                    )
                ]
                body += ["_ldap._tcp.dc._msdcs IN SRV 0 100 389 dc01", "_kerberos._udp IN SRV 0 100 88 dc01"]
            for tdom, (parent, addr) in TUNNELS.items():
                if parent == d:
                    lab = tdom[: -len(parent) - 1]
                    body += [f"{lab} IN NS ns.{lab}", f"ns.{lab} IN A {addr}"]
        (z / "sld" / f"{d}.zone").write_text(zone(d, [("ns1.dnshost.net", AUTH)], body))
        named.append(f'zone "{d}" {{ type primary; file "{z}/sld/{d}.zone"; }};')
    body = [
        "@ IN A 192.0.2.44",
        "@ IN MX 10 mail",
        "www IN A 192.0.2.44",
        "mail IN A 192.0.2.45",
        "online IN A 192.0.2.46",
        "api IN CNAME online",
        "login IN AAAA 2001:db8::46",
        "secure IN A 192.0.2.47",
        '@ IN TXT "v=spf1 mx -all"',
    ]
    (z / "sld" / f"{NSEC3_ZONE}.zone").write_text(zone(NSEC3_ZONE, [("ns1.dnshost.net", AUTH)], body))
    named.append(f'zone "{NSEC3_ZONE}" {{ type primary; file "{z}/sld/{NSEC3_ZONE}.zone.signed"; }};')
    (work / "named-zones.conf").write_text("\n".join(named) + "\n")
    plans, names = plan(r, 2200)
    for c, lines in plans.items():
        (work / "plan" / f"{c}.tsv").write_text("".join(line + "\n" for line in lines))
    with open(out / "names.tsv", "w") as fh:
        fh.write("name\tcategory\n")
        for name, cat in names:
            fh.write(f"{name}\t{cat}\n")


def query(source: str, path: str) -> None:
    import dns.exception
    import dns.message
    import dns.query

    for line in Path(path).read_text().splitlines():
        qt, name, res, flags = line.split("\t")
        msg = dns.message.make_query(name, qt, want_dnssec="do" in flags, use_edns=0, payload=1232)
        try:
            if "tcp" in flags:
                dns.query.tcp(msg, res, timeout=3, source=source)
            else:
                dns.query.udp(msg, res, timeout=3, source=source)
        except (dns.exception.DNSException, OSError) as e:
            print("error:", name, e, file=sys.stderr)


if __name__ == "__main__":
    if sys.argv[1] == "setup":
        setup(Path(sys.argv[2]), Path(sys.argv[3]))
    elif sys.argv[1] == "query":
        query(sys.argv[2], sys.argv[3])
    else:
        sys.exit(__doc__)
