"""Sample archive, the rows: what each flow is (categories, shares, ports, addresses, timing), the mess of
real archives (empty and null prefixes, port 53 as the source, other ports, extra columns), and one day's
Arrow table. Used by jobs/sample/__init__.py."""

from __future__ import annotations

import datetime as _dt
import zlib
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import pyarrow as pa

from portprint.jobs.sample.dns import _SITE_V6, _client_v4, _client_v6, _dns_sets, _pub_v4, _pub_v6
from portprint.jobs.sample.protocols import (
    _http_sets,
    _ntp_set,
    _openvpn_sets,
    _quic_set,
    _random_sets,
    _ssh_set,
    _tls_set,
)
from portprint.jobs.sample.templates import (
    _MSS,
    _SENSOR_FIELD,
    _T,
    _TCP,
    _UDP,
    _W,
    FLOW_SCHEMA,
    LABEL_SCHEMA,
    LABELS,
    PREFIX_LEN,
    _Table,
)
from portprint.jobs.sample.tunnels import _tunnel_set

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
    # attacker's own server straight.
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

