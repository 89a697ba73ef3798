"""Zones, servers and per-day query plans of the shifted evaluation corpus (tests/data/shift; make_shift_corpus.sh).

``shift_plan.py setup WORK OUT`` writes, under WORK, the fake Internet every day's namespace runs:
  zones/root.zone, zones/arpa.zone          nsd: the root and arpa (127.53.0.1)
  zones/tld/<tld>.zone, knot-tld.conf       knot: every TLD (127.53.0.2)
  zones/sld/<zone>.zone                     second-level zones, each served by one of four authoritative
                                            implementations (bind9, PowerDNS, knot, nsd: AUTH below), chosen
                                            by a hash of the zone name; named/pdns/knot/nsd-auth zone lists
  root.hints, trust-anchors.conf            for the recursive resolvers (the NSEC3 zones are signed by the
                                            shell script, which appends their DS records)
  plan/<day>/<scenario>.tsv                 the queries of one scenario instance: qtype, name, resolver, flags
and under OUT (committed, read by label_corpus.py and corpus_splits.py):
  names.tsv   day, scenario, category, name: every name a client was told to ask (the ground truth of a
              flow's category is the scenario that asked it; see label_corpus.py)
  zones.tsv   zone, kind, split, group, server, category: every zone a name can fall in. ``split`` is the one
              split whose names use the zone (``*`` for zones every split asks with names of its own, such as
              antivirus or CDN zones), ``group`` is ``seen`` or ``heldout`` for the zone-shift setting.

Everything derives from random.Random(SEED + day index), so a rerun asks the same names. Every planned name is
asked on one day by one scenario only: the generator keeps one set of used names across all days, so the
same name never falls in two splits.
"""

from __future__ import annotations

import hashlib
import random
import string
import sys
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import names as base

SEED = 1653
SPLITS = ("development", "validation", "acceptance")
DAYS_PER_SPLIT = 3
# The acceptance split is a second draw on days of its own (2026-12-10..12): the first (12-07..09) was scored once
# and is spent, so it left the corpus, and a day's index (its seed, its sweep, its tunnels' settings) is its
# number in December less one, so the new days are new traffic, not the old days again.
DAYS = [*(f"2026-12-{i:02d}" for i in range(1, 7)), *(f"2026-12-{i:02d}" for i in range(10, 13))]
SPLIT_OF_DAY = {d: SPLITS[i // DAYS_PER_SPLIT] for i, d in enumerate(DAYS)}
DAY_INDEX = {d: int(d[-2:]) - 1 for d in DAYS}

ROOT, TLD = "127.53.0.1", "127.53.0.2"
AUTH = {  # authoritative implementation -> (address, NS host name)
    "bind9": ("127.53.0.3", "ns-a.dnshost.net"),
    "pdns": ("127.53.0.4", "ns-b.dnshost.net"),
    "knot": ("127.53.0.5", "ns-c.dnshost.net"),
    "nsd": ("127.53.0.6", "ns-d.dnshost.net"),
}
# Recursive resolvers (and forwarders): name -> (index k, implementation). Resolver k listens on 127.53.53.k for
# clients that choose their source address, on 127.53.<54..62>.k for clients that cannot (the kernel then sends
# from the address it talks to, which tells the client apart), and sends its own queries from 127.53.53.(100+k).
RESOLVERS = {
    "unbound": 1,  # validating (trust anchors for the NSEC3 zones), defaults: qname minimisation on
    "bind9": 2,  # defaults: qname minimisation relaxed
    "unbound-0x20": 3,  # use-caps-for-id yes, qname minimisation on
    "kresd": 4,  # knot-resolver defaults
    "pdns-recursor": 5,  # PowerDNS Recursor defaults
    "dnsmasq": 6,  # a forwarder (to unbound), as home routers and small offices run
    "dnsmasq-k8s": 7,  # a cluster's DNS: cluster.local answered locally, the rest forwarded to bind9
}
IMPL = {  # resolver name -> implementation recorded as ``server``/``client``
    "unbound": "unbound",
    "bind9": "bind9",
    "unbound-0x20": "unbound",
    "kresd": "kresd",
    "pdns-recursor": "pdns-recursor",
    "dnsmasq": "dnsmasq",
    "dnsmasq-k8s": "dnsmasq",
}
NOBIND_NET = {  # clients that cannot choose a source address -> third octet of the resolver address they ask
    "host": 54,
    "nslookup": 55,
    "getent": 56,
    "nmap": 58,
    "spamassassin": 59,
    "pydnst": 60,
    "iodine": 61,
    "dns2tcp": 62,
}
BIND_NET = {"dig": 100, "kdig": 101, "drill": 102, "dnspython": 103, "delv": 106}  # 127.53.<n>.<1..>


def res_addr(res: str, client: str = "dig") -> str:
    return f"127.53.{NOBIND_NET.get(client, 53)}.{RESOLVERS[res]}"


def res_out(res: str) -> str:
    return f"127.53.53.{100 + RESOLVERS[res]}"


# Tunnel domains: family -> one delegated domain per split (never shared: a tunnel instance is its own).
TUNNEL_DOMAINS = {
    "iodine": ("i.fastmirror.net", "v.imgproxy.org", "z.cloudsyncer.com"),
    "dns2tcp": ("d.pkgupdates.net", "r.webstatics.org", "q.mailrelay-eu.com"),
    "dig-exfil": ("x.metricsink.io", "e.logcollect.net", "u.statspixel.com"),
    "low-and-slow": ("s.cdn-assets.org", "l.fontserve.net", "k.avatarcache.io"),
    "spread": ("p.jsdelivery.net", "w.wxforecast.org", "g.geoapi-cache.com"),
    "c2-beacon": ("b.telemetrysvc.net", "c.updcheck.org", "h.syncsvc.io"),
    "pydnst": ("pd.tzsync.net", "pn.clkapi.org", "pq.edgeping.io"),
}
TUNNEL_SERVER = {  # family -> address of its server (iodined, dns2tcpd, nsd for the scripted ones, pydnst)
    "iodine": "127.53.9.1",
    "dns2tcp": "127.53.9.2",
    "dig-exfil": "127.53.9.3",
    "low-and-slow": "127.53.9.3",
    "spread": "127.53.9.4",
    "c2-beacon": "127.53.9.6",
    "pydnst": "127.53.9.5",
}

# Zones that hard-benign categories use with names of their own in every split (their labels are random).
SHARED_ZONES = {
    "sophosxl.net": "av-sophos",
    "mcafee.com": "av-mcafee",
    "cymru.com": "av-cymru",
    "spamhaus.org": "dnsbl",
    "spamcop.net": "dnsbl",
    "sorbs.net": "dnsbl",
    "uribl.com": "uribl",
    "surbl.org": "uribl",
    "fmb.la": "uribl",
    "support-intelligence.net": "uribl",
    "mail-abuse.com": "dnsbl",
    "mailspike.net": "dnsbl",
    "senderscore.com": "dnsbl",
    "isipp.com": "dnsbl",
    "dnswl.org": "dnsbl",
    "surriel.com": "dnsbl",
    "habeas.com": "dnsbl",
    "bondedsender.org": "dnsbl",
    "dkimwl.org": "dnsbl",
    "cloudfront.net": "cdn-cloud",
    "amazonaws.com": "cdn-cloud",
    "akamaiedge.net": "cdn-cloud",
    "blob.core.windows.net": "cdn-cloud",
    "azureedge.net": "cdn-cloud",
    "fastly.net": "cdn-cloud",
    "microsoft.com": "telemetry",
    "apple.com": "telemetry",
    "windows.com": "telemetry",
    "azure.com": "telemetry",
    "sentry.io": "telemetry",
    "cluster.local": "k8s-search",
    "in-addr.arpa": "reverse-sweep",
    "ip6.arpa": "ip6-arpa",
}
NSEC3_ZONES = ("securebank.com", "payroll-secure.de", "signed-corp.net")  # signed, no wildcard (NXDOMAIN + NSEC3)
DNSBL_NOWILD = {z for z, c in SHARED_ZONES.items() if c in ("dnsbl", "uribl")} | {"cymru.com"}

# The hard-benign scenarios of every day: scenario -> (category, client). One host each, hundreds of names.
HARD = {
    "av-sophos": ("av-sophos", "dnspython"),
    "av-mcafee": ("av-mcafee", "dnspython"),
    "av-cymru": ("av-cymru", "dig"),
    "mail-dnsbl": ("dnsbl", "spamassassin"),  # SpamAssassin's own DNSBL and URIBL lookups (uribl by zone)
    "reverse-sweep": ("reverse-sweep", "nmap"),
    "ip6-arpa": ("ip6-arpa", "dig"),
    "cdn-cloud": ("cdn-cloud", "getent"),
    "telemetry": ("telemetry", "getent"),
    "k8s-search": ("k8s-search", "getent"),
    "nsec3": ("nsec3", "kdig"),
    "acme": ("acme", "dig"),
    "dkim": ("dkim", "dnspython"),
    "srv-dnssd": ("srv-dnssd", "kdig"),
    "idn": ("idn", "host"),
    "guid-label": ("guid-label", "host"),
    "hex-label": ("hex-label", "kdig"),
    "long-name": ("long-name", "drill"),
    "short-name": ("short-name", "kdig"),
}
HARD_PER_DAY = 220  # distinct names per hard scenario and day
SWEEP_PREFIX = 23  # nmap -sL of one /23 a day (512 PTR names)
SWEEP_FIRST_OCTET = (185, 193, 212, 91, 46, 62, 80, 94, 109, 37, 151, 203)  # one per day index
BACKGROUND_PER_DAY = 1100
STUB_RESOLVERS = ("unbound", "bind9", "unbound-0x20", "kresd", "pdns-recursor", "dnsmasq")
BG_CLIENTS = {  # background client -> share of the day's ordinary queries
    "dig": 0.30,
    "kdig": 0.10,
    "drill": 0.06,
    "dnspython": 0.20,
    "delv": 0.03,
    "host": 0.08,
    "nslookup": 0.08,
    "getent": 0.15,
}
# The pair the implementation-shift setting trains on gets a share of its own every day (dig -> bind9).
TRAIN_PAIR_SHARE = 0.15

IDN_WORDS = """münchen köln zürich straße bücher müller café crème garçon señor niño año größe
über schön grün fußball kühlschrank wäsche bäckerei mädchen häuser
москва россия привет пример почта новости погода магазин
北京 中国 例子 网络 公司 测试 东京 日本 大阪 서울 한국 예시
ελλάδα παράδειγμα αθήνα
مثال مصر القاهرة
ישראל דוגמה
ประเทศไทย ตัวอย่าง""".split()  # noqa: SIM905


def h(s: str) -> int:
    return int(hashlib.sha256(s.encode()).hexdigest()[:12], 16)


def pools() -> dict[str, list[str]]:
    """Split the original corpus's ordinary domains into three disjoint pools, one per split."""
    shared = set(SHARED_ZONES) | {"corp-example.com", base.NSEC3_ZONE}
    doms = [d for d in base.DOMAINS if d not in shared]
    doms += [p for p in base.PUNY if p.count(".") == 1]
    out: dict[str, list[str]] = {s: [] for s in SPLITS}
    for i, d in enumerate(sorted(doms, key=h)):
        out[SPLITS[i % 3]].append(d)
    return out


def auth_of(zone: str) -> str:
    if zone in NSEC3_ZONES or zone in ("in-addr.arpa", "ip6.arpa"):
        return "bind9"
    return list(AUTH)[h("auth:" + zone) % len(AUTH)]


def group_of(zone: str) -> str:
    """Zone-shift setting: a third of the zones are held out of training."""
    return "heldout" if h("group:" + zone) % 3 == 0 else "seen"


class Names:
    """Planned names, kept unique across every day and split."""

    def __init__(self) -> None:
        self.owner: dict[str, str] = {}  # name -> the split that asked it
        self.rows: list[tuple[str, str, str, str]] = []  # day, scenario, category, name
        self.seen: set[tuple[str, str]] = set()

    def take(self, day: str, scen: str, cat: str, name: str, reuse: bool = False) -> bool:
        """Claim a name for this day's scenario. reuse: an ordinary name may come back on another day of the
        same split (popular names do); otherwise a name is asked once in the whole corpus."""
        key = name.lower().rstrip(".") or "."
        split = SPLIT_OF_DAY[day]
        if key in self.owner and not (reuse and self.owner[key] == split):
            return False
        self.owner[key] = split
        if (day, key) not in self.seen:
            self.seen.add((day, key))
            self.rows.append((day, scen, cat, key))
        return True


def _b32(r: random.Random, n: int) -> str:
    return "".join(r.choice(string.ascii_lowercase + "234567") for _ in range(n))


def _alnum(r: random.Random, n: int) -> str:
    return "".join(r.choice(string.ascii_lowercase + string.digits) for _ in range(n))


def hard_name(r: random.Random, scen: str, pool: list[str]) -> tuple[str, str]:
    """(qtype, name) of one lookup of a hard-benign scenario, in its documented public shape."""
    hx = base._rng_hex
    d = r.choice(pool)
    if scen == "av-sophos":  # Sophos Live Protection: hashes and reversed-address lookups under sophosxl.net
        k = r.random()
        if k < 0.6:
            return "A", f"{hx(r, 32)}.{r.choice(['p', 'f', 'u'])}.0{r.randint(1, 4)}.sxl.sophosxl.net"
        if k < 0.85:
            ip = ".".join(str(r.randint(1, 254)) for _ in range(4))
            return "A", f"{ip}.ip.0{r.randint(1, 4)}.sxl.sophosxl.net"
        return "A", f"{hx(r, 40)}.{r.choice(['sxl', 'v3'])}.sophosxl.net"
    if scen == "av-mcafee":  # McAfee GTI file reputation: 26-character base32 under avqs.mcafee.com
        return "A", f"0.0.0.0.1.0.0.4e.{_b32(r, 26)}.avqs.mcafee.com"
    if scen == "av-cymru":  # Team Cymru Malware Hash Registry: <md5|sha1>.hash.cymru.com (TXT)
        return r.choice(["TXT", "TXT", "A"]), f"{hx(r, r.choice([32, 40]))}.hash.cymru.com"
    if scen == "mail-dnsbl":  # the fallback when SpamAssassin cannot run: its documented query shapes
        ip = ".".join(str(r.randint(1, 254)) for _ in range(4))
        rev = ".".join(reversed(ip.split(".")))
        zone = r.choice(
            ["zen.spamhaus.org", "bl.spamcop.net", "dnsbl.sorbs.net", "multi.uribl.com", "dbl.spamhaus.org"]
        )
        if "uribl" in zone or "dbl" in zone:
            return "A", f"{r.choice(base.WORDS)}{r.randint(1, 999)}.{r.choice(['com', 'net', 'info', 'biz'])}.{zone}"
        return "A", f"{rev}.{zone}"
    if scen == "ip6-arpa":
        return "PTR", base._ip6_ptr(r)
    if scen == "cdn-cloud":
        k = r.randint(0, 5)
        if k == 0:
            return "A", f"d{_alnum(r, 13)}.cloudfront.net"
        if k == 1:
            reg = r.choice(["us-east-1", "eu-west-1", "eu-central-1", "ap-southeast-2", "us-west-2"])
            pre = f"{r.choice(['internal-', ''])}{r.choice(base.WORDS)}-{r.choice(base.WORDS)}"
            return "A", f"{pre}-{r.randint(10**8, 10**10 - 1)}.{reg}.elb.amazonaws.com"
        if k == 2:
            return "A", f"e{r.randint(1000, 99999)}.{r.choice(['a', 'b', 'x', 'dscb', 'dsce', 'dscx'])}.akamaiedge.net"
        if k == 3:
            return "A", f"{hx(r, 40)}.s3.{r.choice(['us-east-1.', 'eu-west-1.', ''])}amazonaws.com"
        if k == 4:
            return "A", f"{r.choice(base.WORDS)}{hx(r, 12)}.blob.core.windows.net"
        return "A", f"{r.choice(base.WORDS)}-{hx(r, 8)}.{r.choice(['azureedge.net', 'global.ssl.fastly.net'])}"
    if scen == "telemetry":  # agents and push services with a tenant, device or organisation id in the name
        k = r.randint(0, 5)
        guid = str(uuid.UUID(int=r.getrandbits(128), version=4))
        if k == 0:
            return "A", f"{r.randint(1, 50)}-courier.push.apple.com"
        if k == 1:
            return "A", f"{guid}.{r.choice(['ods', 'oms', 'agentsvc'])}.opinsights.azure.com"
        if k == 2:
            return "A", f"o{r.randint(10**5, 10**7)}.ingest.{r.choice(['', 'us.', 'de.'])}sentry.io"
        if k == 3:
            return "A", f"{guid}.{r.choice(['global', 'eu', 'us'])}.telemetry.microsoft.com"
        if k == 4:
            return "A", f"{r.choice(['wns', 'client', 'db5p'])}-{hx(r, 10)}.notify.windows.com"
        return "AAAA", f"{_alnum(r, 10)}.{r.choice(['ess', 'gsp', 'xp'])}.apple.com"
    if scen == "nsec3":
        z = r.choice(NSEC3_ZONES)
        lab = r.choice(base.WORDS) + (str(r.randint(1, 999)) if r.random() < 0.7 else "-" + r.choice(base.WORDS))
        return r.choice(["A", "A", "AAAA", "MX", "TXT"]), f"{lab}.{z}"
    if scen == "acme":
        host = r.choice(
            ["", "www.", "mail.", "api.", f"{r.choice(base.WORDS)}.", f"{r.choice(base.SUBS)}{r.randint(1, 99)}."]
        )
        return "TXT", f"_acme-challenge.{host}{r.choice(base.WORDS)}-{r.randint(1, 9999)}.{d}"
    if scen == "dkim":
        sel = r.choice(
            ["google", "selector1", "selector2", "s1", "k1", "default", "mail", "dkim", "mandrill", "smtpapi"]
        )
        if r.random() < 0.5:
            sel = _b32(r, 32) if r.random() < 0.5 else f"{sel}-{hx(r, 8)}"
        return "TXT", f"{sel}._domainkey.{r.choice(base.WORDS)}{r.randint(1, 999)}.{d}"
    if scen == "srv-dnssd":
        svc = r.choice(
            [
                "_ldap._tcp.dc._msdcs",
                "_kerberos._udp",
                "_sip._tls",
                "_xmpp-client._tcp",
                "_imaps._tcp",
                "_submission._tcp",
                "_autodiscover._tcp",
                "_caldavs._tcp",
                "_matrix._tcp",
                "_http._tcp",
            ]
        )
        if r.random() < 0.35:
            return "PTR", f"{r.choice(['b', 'lb', 'db'])}._dns-sd._udp.{r.choice(base.WORDS)}{r.randint(1, 999)}.{d}"
        return "SRV", f"{svc}.{r.choice(base.WORDS)}{r.randint(1, 999)}.{d}"
    if scen == "idn":
        w = r.choice(IDN_WORDS) + r.choice(["", str(r.randint(1, 99)), r.choice(IDN_WORDS)])
        try:
            ace = w.encode("idna").decode()
        except UnicodeError:
            ace = r.choice(IDN_WORDS[:5]).encode("idna").decode() + str(r.randint(100, 999))
        return r.choice(["A", "AAAA"]), f"{ace}.{d}"
    if scen == "guid-label":
        g = str(uuid.UUID(int=r.getrandbits(128), version=4))
        return r.choice(["A", "AAAA"]), r.choice([f"{g}.{d}", f"{g}.devices.{d}", f"{g}._msdcs.{d}"])
    if scen == "hex-label":
        n = r.choice([16, 32, 32, 40, 48])
        return r.choice(["A", "AAAA", "HTTPS"]), r.choice(
            [f"{hx(r, n)}.cdn.{d}", f"cache-{hx(r, n)}.edge.{d}", f"{hx(r, n)}.api.{d}"]
        )
    if scen == "long-name":
        return r.choice(["A", "AAAA", "TXT"]), base._long_name(r, d, r.randint(150, 240))
    if scen == "short-name":
        tld = r.choice(base.TLDS[:-2])
        return r.choice(["A", "AAAA", "NS"]), f"{_alnum(r, r.choice([1, 2, 2, 3]))}.{tld}"
    raise ValueError(scen)


def ordinary(r: random.Random, pool: list[str]) -> tuple[str, str]:
    weights = [1.0 / (i + 1) ** 0.6 for i in range(len(pool))]
    d = r.choices(pool, weights)[0]
    x = r.random()
    if x < 0.05:
        ip = f"{r.randint(1, 223)}.{r.randint(0, 255)}.{r.randint(0, 255)}.{r.randint(1, 254)}"
        return "PTR", ".".join(reversed(ip.split("."))) + ".in-addr.arpa"
    if x < 0.09:
        return r.choice(["MX", "TXT", "NS", "SOA", "CAA"]), d
    if x < 0.12:
        bad = d.split(".")[0]
        return "A", f"www.{bad[:-1] + bad[-1] * 2}.{d.rsplit('.', 1)[1]}"
    sub = r.choice(base.SUBS)
    if r.random() < 0.15:
        sub = f"{r.choice(base.SUBS)}.{r.choice(['eu', 'us', 'prod', 'global', 'geo'])}"
    name = f"{sub}.{d}" if r.random() > 0.08 else d
    return r.choices(["A", "AAAA", "HTTPS", "MX", "TXT"], [58, 30, 8, 2, 2])[0], name


def day_plan(di: int, day: str, nm: Names) -> dict[str, list[str]]:
    """scenario -> plan lines (qtype, name, resolver, flags) of one day."""
    r = random.Random(SEED + di)
    split = SPLIT_OF_DAY[day]
    pool = pools()[split]
    plans: dict[str, list[str]] = {}
    # background: ordinary names, every client, every stub resolver. Popular names repeat (cache hits), but a
    # name that another split or another day's hard scenario asked is never used (Names keeps them apart).
    bg: list[str] = []
    clients, shares = list(BG_CLIENTS), list(BG_CLIENTS.values())
    while len(bg) < BACKGROUND_PER_DAY:
        qt, name = ordinary(r, pool)
        if not nm.take(day, "background", "ordinary", name, reuse=True):
            continue
        if r.random() < TRAIN_PAIR_SHARE:
            c, res = "dig", "bind9"
        else:
            c = r.choices(clients, shares)[0]
            res = r.choice(STUB_RESOLVERS)
        if c in ("getent", "nslookup") and qt not in ("A", "AAAA"):
            c = "dig"
        if c == "host" and qt not in ("A", "AAAA", "MX", "PTR", "TXT"):
            c = "kdig"
        flags = (
            "do" if r.random() < 0.05 else ("tcp" if c in ("dig", "kdig", "dnspython") and r.random() < 0.02 else "-")
        )
        bg.append(f"{c}\t{qt}\t{name}\t{res}\t{flags}")
    plans["background"] = bg
    # hard-benign scenarios: one client each, one resolver a day (rotating), every name once
    for i, (scen, (cat, client)) in enumerate(HARD.items()):
        res = STUB_RESOLVERS[(di + i) % 5]  # the five recursive implementations in turn (not the forwarder)
        if scen == "nsec3":
            res = "unbound"  # the validating resolver (trust anchors for the signed zones)
        if scen == "k8s-search":
            res = "dnsmasq-k8s"
        lines: list[str] = []
        if scen == "reverse-sweep":  # nmap -sL of one /23 through the resolver: the plan is the prefix
            # A site's own public range (RFC 1918 space would be answered by the resolvers' built-in empty zones,
            # kresd and PowerDNS Recursor among them, and never reach an authoritative server.)
            o1 = SWEEP_FIRST_OCTET[di]
            net = f"{o1}.{r.randint(0, 255)}.{r.randint(0, 63) * 4}.0"
            while not nm.take(day, scen, "sweep-prefix", f"sweep.{net}"):
                net = f"{o1}.{r.randint(0, 255)}.{r.randint(0, 63) * 4}.0"
            nm.rows.pop()  # (only a marker that keeps the /22 unique, not a name anyone asks)
            a, b, c3, _ = (int(x) for x in net.split("."))
            for k in range(1 << (32 - SWEEP_PREFIX)):
                ip = (a << 24) | (b << 16) | (c3 << 8) | k
                octs = [(ip >> s) & 255 for s in (24, 16, 8, 0)]
                nm.take(day, scen, cat, ".".join(str(o) for o in reversed(octs)) + ".in-addr.arpa")
            plans[scen] = [f"{client}\tPTR\t{net}/{SWEEP_PREFIX}\t{res}\t-"]
            continue
        if scen == "k8s-search":
            for _ in range(HARD_PER_DAY // 2):  # in-cluster services (short names, completed by the search list)
                word = r.choice(base.WORDS)
                role = r.choice(["api", "db", "cache", "worker", "web", "grpc"])
                svc = f"{word}-{role}{r.randint(1, 40)}"
                ns = r.choice(["default", "payments", "monitoring", "kube-system", "shop", "auth"])
                name = r.choice([svc, f"{svc}.{ns}", f"{svc}.{ns}.svc"])
                if nm.take(day, scen, cat, f"{svc}.{ns}.svc.cluster.local"):
                    lines.append(f"{client}\tA\t{name}\t{res}\tsvc:{ns}")
            while len(lines) < HARD_PER_DAY:  # external names, each first tried with every search suffix
                qt, name = ordinary(r, pool)
                ns = r.choice(["default", "payments", "monitoring", "shop"])
                if qt in ("A", "AAAA") and nm.take(day, scen, cat, name):
                    lines.append(f"{client}\tA\t{name}\t{res}\text:{ns}")
            plans[scen] = lines
            continue
        while len(lines) < HARD_PER_DAY:
            qt, name = hard_name(r, scen, pool)
            if client in ("getent",) and qt not in ("A", "AAAA"):
                qt = "A"
            if nm.take(day, scen, cat, name):
                flags = "do" if scen == "nsec3" else "-"
                lines.append(f"{client}\t{qt}\t{name}\t{res}\t{flags}")
        plans[scen] = lines
    return plans


def zone_file(origin: str, ns: str, body: list[str]) -> str:
    return base.zone(origin, [(ns, "")], body)


def sld_body(zone: str) -> list[str]:
    if zone.endswith(".arpa"):
        return ["* IN PTR host-" + zone.split(".")[0] + ".dnshost.net."]
    body = [
        "@ IN A 192.0.2.1",
        "@ IN AAAA 2001:db8::1",
        "@ IN MX 10 mx1",
        '@ IN TXT "v=spf1 mx -all"',
        "mx1 IN A 192.0.2.25",
    ]
    if zone in NSEC3_ZONES:
        return [
            *body,
            "www IN A 192.0.2.44",
            "mail IN A 192.0.2.45",
            "api IN A 192.0.2.46",
            "login IN AAAA 2001:db8::46",
        ]
    if zone in DNSBL_NOWILD:  # lists answer NXDOMAIN for what they do not list; a few test entries
        # (each list's own node exists, as it does in the real zones: a resolver that trusts "nothing below an
        # NXDOMAIN" would otherwise answer every lookup under it from its cache)
        lists = [
            "zen",
            "bl",
            "dnsbl",
            "multi",
            "dbl",
            "hash",
            "wl",
            "iadb",
            "list",
            "psbl",
            "sa-accredit",
            "sa-trusted",
            "fresh",
            "lookup",
            "dob.sibl",
            "bl.score",
            "activationcode.r",
            "nonconfirm",
        ]
        return (
            body + [f'{x} IN TXT "list"' for x in lists] + ["2.0.0.127.zen IN A 127.0.0.2", "test.multi IN A 127.0.0.2"]
        )
    if zone == "cluster.local":
        return body
    body += [
        "* IN A 192.0.2.80",
        "* IN AAAA 2001:db8::80",
        "* IN MX 10 mx1",
        '* IN TXT "v=spf1 -all"',
        "* IN SRV 0 100 443 www",
        "* IN PTR www",
    ]
    if zone not in ("sophosxl.net", "mcafee.com"):
        body.append("* IN HTTPS 1 . alpn=h2,h3")
    for fam, doms in TUNNEL_DOMAINS.items():
        for td in doms:
            if td.split(".", 1)[1] == zone:
                lab = td.split(".")[0]
                body += [f"{lab} IN NS ns.{lab}", f"ns.{lab} IN A {TUNNEL_SERVER[fam]}"]
    return body


def setup(work: Path, out: Path) -> None:
    z = work / "zones"
    for sub in ("tld", "sld"):
        (z / sub).mkdir(parents=True, exist_ok=True)
    pl = pools()
    zones: dict[str, tuple[str, str]] = {}  # zone -> (kind, split)
    for s, doms in pl.items():
        for d in doms:
            zones[d] = ("ordinary", s)
    for d in SHARED_ZONES:
        zones[d] = ("hard", "*")
    for d in NSEC3_ZONES:
        zones[d] = ("hard", "*")
    for doms in TUNNEL_DOMAINS.values():
        for s, td in zip(SPLITS, doms, strict=True):
            zones[td.split(".", 1)[1]] = ("tunnel-parent", s)
    tlds = {d.rsplit(".", 1)[-1] for d in zones if not d.endswith(("arpa", ".local"))} | set(base.TLDS)
    tlds = sorted(tlds | {"info", "biz", "shop", "xyz", "la"})  # (the mail scenario's sender and link domains)
    # root: every TLD on knot, arpa on nsd itself, "local" refused (the cluster's DNS answers it)
    body = [f"{t} IN NS a.gtld-servers.net." for t in tlds]
    body += ["arpa IN NS a.root-servers.net.", f"a.root-servers.net. IN A {ROOT}", f"a.gtld-servers.net. IN A {TLD}"]
    (z / "root.zone").write_text(base.zone(".", [("a.root-servers.net", ROOT)], body))
    arpa = [f"in-addr IN NS {AUTH['bind9'][1]}.", f"ip6 IN NS {AUTH['bind9'][1]}."]
    (z / "arpa.zone").write_text(base.zone("arpa", [("a.root-servers.net", ROOT)], arpa))
    (work / "root.hints").write_text(f". 3600000 NS a.root-servers.net.\na.root-servers.net. 3600000 A {ROOT}\n")
    knot = []
    for t in tlds:
        body = [f"{d}. IN NS {AUTH[auth_of(d)][1]}." for d in sorted(zones) if d.endswith("." + t)]
        if t == "net":
            body += [f"a.root-servers.net. IN A {ROOT}", f"a.gtld-servers.net. IN A {TLD}"]
            body += [f"{ns}. IN A {addr}" for addr, ns in AUTH.values()]
        (z / "tld" / f"{t}.zone").write_text(base.zone(t, [("a.gtld-servers.net", TLD)], body))
        knot.append(f"  - domain: {t}\n    file: {z}/tld/{t}.zone")
    (work / "knot-tld.conf").write_text("zone:\n" + "\n".join(knot) + "\n")
    lists: dict[str, list[str]] = {a: [] for a in AUTH}
    for d in sorted(set(zones) | {"in-addr.arpa", "ip6.arpa"}):
        if d == "cluster.local":
            continue
        a = auth_of(d)
        (z / "sld" / f"{d}.zone").write_text(base.zone(d, [(AUTH[a][1], "")], sld_body(d)))
        lists[a].append(d)
    for a, ds in lists.items():
        (work / f"zones-{a}.list").write_text("".join(d + "\n" for d in ds))
    (work / "knot-auth.conf").write_text(
        "zone:\n" + "".join(f"  - domain: {d}\n    file: {z}/sld/{d}.zone\n" for d in lists["knot"])
    )
    # the tunnels: one domain per family and split; nsd answers the scripted ones (wildcards: A, and TXT for
    # the beacons' polls)
    (work / "tunzones").mkdir(exist_ok=True)
    with open(work / "tunnels.tsv", "w") as fh:
        for fam, doms in TUNNEL_DOMAINS.items():
            for s, td in zip(SPLITS, doms, strict=True):
                fh.write(f"{fam}\t{td}\t{s}\n")
                if fam in ("dig-exfil", "low-and-slow", "spread", "c2-beacon"):
                    body = [
                        f"ns IN A {TUNNEL_SERVER[fam]}",
                        "* IN A 192.0.2.99",
                        '* IN TXT "c3RhdHVzPWlkbGU7c2xlZXA9MzYw"',
                    ]
                    (work / "tunzones" / f"{td}.zone").write_text(base.zone(td, [(f"ns.{td}", "")], body))
    # plans and names
    (work / "days.list").write_text("".join(d + "\n" for d in DAYS))
    (out / "days.tsv").write_text("day\tsplit\n" + "".join(f"{d}\t{SPLIT_OF_DAY[d]}\n" for d in DAYS))
    nm = Names()
    for day in DAYS:
        for scen, lines in day_plan(DAY_INDEX[day], day, nm).items():
            (work / "plan" / day).mkdir(parents=True, exist_ok=True)
            (work / "plan" / day / f"{scen}.tsv").write_text("".join(x + "\n" for x in lines))
    with open(out / "names.tsv", "w") as fh:
        fh.write("day\tscenario\tcategory\tname\n")
        for row in nm.rows:
            fh.write("\t".join(row) + "\n")
    with open(out / "zones.tsv", "w") as fh:
        fh.write("zone\tkind\tsplit\tgroup\tserver\tcategory\n")
        allz = dict(zones)
        allz.update({d: ("hard", "*") for d in ("in-addr.arpa", "ip6.arpa")})
        for doms in TUNNEL_DOMAINS.values():
            for s, td in zip(SPLITS, doms, strict=True):
                allz[td] = ("tunnel", s)
        for d in sorted(allz):
            kind, split = allz[d]
            grp = "heldout" if kind in ("tunnel", "tunnel-parent") else group_of(d)
            cat = SHARED_ZONES.get(d, "nsec3" if d in NSEC3_ZONES else "")
            if kind == "tunnel":
                cat = next(f for f, ds in TUNNEL_DOMAINS.items() if d in ds)
                srv = TUNNEL_SERVER[cat]
            else:
                srv = "dnsmasq" if d == "cluster.local" else auth_of(d)
            fh.write(f"{d}\t{kind}\t{split}\t{grp}\t{srv}\t{cat}\n")


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "setup":
        setup(Path(sys.argv[2]), Path(sys.argv[3]))
    else:
        sys.exit(__doc__)
