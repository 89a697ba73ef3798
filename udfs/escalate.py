"""Escalate, the pure side: which groups of a day's names are a DNS tunnel (detector ``tunnel``), and which flows
of theirs to flag.

Called by jobs/engine/pipeline.py (``decide`` on the driver over every task's merged evidence, then ``judge``
per Spark task over the escalated groups' flows), by jobs/evaluate.py through it, and by the benchmark's plain
pass. numpy/pyarrow only; the evidence is udfs/evidence.py's.

A group is a client's names under one registered domain or, for names cut off by the prefix, of one shape to one
server (udfs/evidence.py). Three rules (``EscalateConf`` in conf/config.py holds their settings), each naming its
numbers in an ``escalation_reason`` an analyst can check:

- **shape**: at least ``shape_min_names`` distinct names, and ``shape_min_share`` of the group's, that no ordinary
  host name has: a label of ``shape_label`` bytes or more in an encoding alphabet (tools fill labels towards the
  63-byte maximum; genuine hash, GUID and CDN labels stop short of it), a data token next to a counter label
  (a fragment numbered for reassembly: ``<hex>.17.``, ``17.<base32>.``), characters host names never use
  (``=+/``, binary), or the NULL/PRIVATE record types. With ``zone_level`` also over all clients of the group,
  so an exfiltration spread over many sources adds up. Site-independent: it needs no training window.
- **socket**: a UDP flow that carried ``socket_pkts`` datagrams or more from the client (one socket kept open, as
  iodine and dns2tcp do; ordinary DNS sends one or two) whose first, visible name is data-like: the shape above,
  or a carrier record type (TXT, MX, CNAME, KEY, SRV, NULL) with a label of ``socket_label`` bytes or more in an
  encoding alphabet, not under ``.arpa``. A client with such long flows of ordinary names in
  ``socket_quiet_groups`` groups or more reuses one port for everything (a resolver's fixed query port): the rule
  is quiet for it.
- **odd**: the question model's view, with the base rate from the day's own population. A name is odd above the
  training window's held-out odd quantile (``odd_threshold``); it counts as *odd-new* when the client asked it at
  most ``max_asks`` times that day and its label data holds ``odd_min_bytes`` or more that are not words. A
  client's group escalates when its odd-new share is at least ``odd_min_share`` and that many would be unlikely at
  the day's base rate (Chernoff bound, Bonferroni over the day's groups). The base rate is the larger of the
  training rate and the median odd-new share of the day's groups of ``baseline_min_names`` names or more; above
  ``odd_quiet_above`` the model does not describe the day (new software, legs or zones) and the rule goes quiet
  instead of flagging everything.

In an escalated group the rule's names are flagged: shape, its tunnel-shaped names; socket, its long-socket
flows with a data-like name; odd, its odd-new names.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from portprint.conf.config import Config, EscalateConf
from portprint.models.artifact import ModelArtifact
from portprint.udfs import suppress
from portprint.udfs.evidence import (
    CARRIER,
    COUNTED,
    EVIDENCE,
    JUDGED,
    ODD,
    RARE,
    SOCKET,
    STRANGE,
    WORDY,
    flow_bits,
    flow_groups,
    merge,
    unpack,
)
from portprint.udfs.names import ALNUM, BASE64, BINARY, DIGITS, HEX, Names, describe
from portprint.udfs.schemas import (
    ANOMALY,
    CANDIDATE,
    ESCALATION,
    FLOW_COLUMNS,
    GROUP,
    HISTORY,
    KEPT,
    KIND,
    ORIG_BYTES,
    ORIG_PKTS,
    OUT,
    PREFIX,
    RECORDS,
    RULE,
    SUPPRESSED,
    SUPPRESSED_N,
    as_out,
)
from portprint.udfs.schemas import EVIDENCE as EVIDENCE_KIND
from portprint.udfs.scoring import TUNNEL, Verdicts, anomaly_table, cached_scorer
from portprint.udfs.suppress import Rule

RULES = ("shape", "socket", "session", "odd")  # in this order of precedence when several fire on one flow's group
HEXISH = (DIGITS, HEX)  # names.ALPHABETS of a token
TEXT = (ALNUM, BASE64, BINARY)  # a token has no '-' or '_', so never HOST

# One escalated group and rule: what `anomalies` shows on its flows (the escalation_* columns), and what
# `runs` counts per date (groups_escalated).
ESCALATED = pa.schema([
    ("date", pa.string()),
    ("src_ip", pa.string()),       # null at zone level (all clients)
    ("group", pa.string()),
    ("level", pa.string()),        # client | zone
    ("rule", pa.string()),         # shape | socket | odd
    ("names", pa.int64()),         # distinct names in the group
    ("hits", pa.int64()),          # distinct names the rule counts (tunnel-shaped, long-socket, odd-new)
    ("clients", pa.int64()),
    ("data_bytes", pa.int64()),    # declared label bytes of the group's distinct names (information sent)
    ("log10_p", pa.float64()),     # odd rule: Chernoff bound on the chance of that many at the baseline
    ("baseline", pa.float64()),    # odd rule: the day's base rate
    ("reason", pa.string()),
    ("tag", pa.uint32()),          # session rule: the tag its names share
])
# The names an escalated group's flows are flagged for (src_ip null: a zone-level group, any client).
FLAGGED = pa.schema([("date", pa.string()), ("src_ip", pa.string()), ("group", pa.string()), ("key", pa.uint64()),
                     ("rule", pa.string())])
def settings_text(s: EscalateConf) -> str:
    """The settings in force as one canonical JSON text (what `runs.escalation` records)."""
    return json.dumps(asdict(s), sort_keys=True, separators=(",", ":"))


def odd_threshold(art: ModelArtifact) -> float:
    """The model's odd-name bar (NaN without a question model, or one trained before it: the odd rule is off)."""
    if not art.has_qname:
        return math.nan
    return float(art.meta.qname.get("odd_threshold", math.nan))


# ---- per name -------------------------------------------------------------------------------------------------

def _flags(token: np.ndarray, alpha: np.ndarray, data_bytes: np.ndarray, bits: np.ndarray, asks: np.ndarray,
           group: np.ndarray, tag: np.ndarray, s: EscalateConf) -> dict[str, np.ndarray]:
    hexa = np.isin(alpha, HEXISH)
    text = np.isin(alpha, TEXT)
    wordy = (bits & WORDY) > 0
    rare = (bits & RARE) > 0
    # A token no host name has: hex longer than any hash in a label (SHA-1 is 40), or other encoded text
    # longer than base32 hashes and GUID parts; characters host names never use; NULL/PRIVATE.
    long_token = (hexa & (token >= s.shape_hex)) | (text & ~wordy & (token >= s.shape_text))
    shaped = long_token | ((bits & STRANGE) > 0) | rare | ((bits & COUNTED) > 0)
    arpa = np.char.endswith(group.astype(str), ".arpa")
    encoded = (hexa | text) & ~wordy
    datalike = ~arpa & (shaped | ((((bits & CARRIER) > 0) | rare) & encoded & (token >= s.socket_label)))
    new = asks <= s.max_asks
    carries = (data_bytes >= s.odd_min_bytes) & ~wordy
    odd_new = ((bits & ODD) > 0) & new & carries
    # In a group escalated by shape or socket, its other new names that carry data are the same tunnel's
    # (its polls and handshakes), and are flagged with it.
    companion = ~arpa & new & (data_bytes >= s.companion_bytes) & ~wordy
    # In a client's registered domain that the session rule escalated, its other new names are the session's
    # too, short ones included: a resolver's minimised queries on the way to it ('17.b.<domain>'), its polls.
    session_companion = ~arpa & new & ~wordy
    socket = (bits & SOCKET) > 0
    return {"shaped": shaped, "datalike": datalike, "odd_new": odd_new, "companion": companion,
            "session_companion": session_companion, "sock": socket & datalike, "sock_plain": socket & ~datalike,
            "tagged": new & (tag != 0) & ~arpa}


def name_flags(names: pa.Table, s: EscalateConf) -> dict[str, np.ndarray]:
    """Per NAMES row (udfs/evidence.py): tunnel-shaped, data-like, odd-new, long-socket with a data-like name
    (``sock``) and long-socket with an ordinary one (``sock_plain``)."""
    return _flags(names["token"].to_numpy(), names["token_alpha"].to_numpy(), names["data_bytes"].to_numpy(),
                  names["bits"].to_numpy(), names["asks"].to_numpy(),
                  names["group"].to_numpy(zero_copy_only=False), names["tag"].to_numpy(), s)


# flow_rules bits: RULES in order, then the companions of shape and socket, and those of session
SHAPE, SOCKET_RULE, SESSION, ODD_RULE, COMPANION, SESSION_COMPANION = 1, 2, 4, 8, 16, 32


def flow_rules(nm: Names, group: np.ndarray, bits: np.ndarray, asks: np.ndarray, s: EscalateConf) -> np.ndarray:
    """Per flow: which rules could flag it, judged on the flow alone (bits: 1 shape, its name is tunnel-shaped;
    2 socket, it kept a UDP socket open and its name is data-like; 4 session, its name is new and carries a tag, an
    id-like token; 8 odd, its name is odd, carries data and was asked at most ``asks`` times; 16 companion, its name
    is new and carries data, flagged in a group that shape or socket escalated; 32 session companion, its name is
    new and not words, flagged in a registered domain the session rule escalated for its client). A flow of an
    escalated group is flagged by a rule only when the rule's bit (or its companions' bit) is set here too, so
    Detect keeps these flows as candidates and the per-flow step agrees with it."""
    g = np.where(group == None, "", group).astype(str)  # noqa: E711 (elementwise over an object array)
    f = _flags(nm.token, nm.token_alpha, nm.data_bytes, bits, asks, g, nm.tag, s)
    zone = np.char.startswith(g, "z:")  # companions only ever in a registered domain's group
    out = (np.where(f["shaped"], SHAPE, 0) | np.where(f["sock"], SOCKET_RULE, 0) | np.where(f["tagged"], SESSION, 0)
           | np.where(f["odd_new"], ODD_RULE, 0) | np.where(f["companion"] & zone, COMPANION, 0)
           | np.where(f["session_companion"] & zone, SESSION_COMPANION, 0)).astype(np.uint8)
    return np.where(nm.key != 0, out, 0).astype(np.uint8)


def log10_chernoff(k: np.ndarray, n: np.ndarray, rate: float | np.ndarray) -> np.ndarray:
    """log10 of Chernoff's upper bound on P(X >= k), X ~ Binomial(n, rate): -n KL(k/n || rate) / ln 10 when
    k/n > rate, else 0. An upper bound on the p-value: escalation never fires more often than an exact binomial
    test would."""
    n = np.asarray(n, dtype=np.float64)
    k = np.asarray(k, dtype=np.float64)
    r = np.broadcast_to(np.asarray(rate, dtype=np.float64), n.shape)
    share = np.divide(k, n, out=np.zeros_like(k), where=n > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        kl = np.where(share > 0, share * np.log(share / r), 0.0) + np.where(
            share < 1, (1 - share) * np.log((1 - share) / (1 - r)), 0.0)
    return np.where(share > r, -n * kl / math.log(10), 0.0)


# ---- the driver's decision --------------------------------------------------------------------------------------

_COUNTED = ("shaped", "odd_new", "sock", "sock_plain")


def _per_name(names: pa.Table, f: dict[str, np.ndarray]) -> pa.Table:
    t = names.select(["date", "src_ip", "group", "key", "data_bytes"])
    for c in _COUNTED:
        t = t.append_column(c, pa.array(f[c].astype(np.int64)))
    return t


def groups(names: pa.Table, s: EscalateConf) -> tuple[pa.Table, pa.Table]:
    """(client level, zone level) per group of merged NAMES: distinct names, data bytes and the per-rule counts."""
    t = _per_name(names, name_flags(names, s))
    agg = [("key", "count"), ("data_bytes", "sum"), *[(c, "sum") for c in _COUNTED]]
    client = t.group_by(["date", "src_ip", "group"], use_threads=False).aggregate(agg)
    client = client.rename_columns([c.removesuffix("_count").removesuffix("_sum") for c in client.column_names])
    client = client.rename_columns({"key": "names"}).append_column(
        "clients", pa.array(np.ones(client.num_rows, np.int64)))
    # Zone level: one row per distinct name across clients first, so every count is of distinct names.
    per = t.group_by(["date", "group", "key"], use_threads=False).aggregate(
        [("data_bytes", "max"), *[(c, "max") for c in _COUNTED]])
    per = per.rename_columns([c.removesuffix("_max") for c in per.column_names])
    zone = per.group_by(["date", "group"], use_threads=False).aggregate(agg)
    zone = zone.rename_columns([c.removesuffix("_count").removesuffix("_sum") for c in zone.column_names])
    zone = zone.rename_columns({"key": "names"})
    clients = (names.group_by(["date", "group"], use_threads=False).aggregate([("src_ip", "count_distinct")])
               .rename_columns(["date", "group", "clients"]))
    zone = zone.join(clients, ["date", "group"], use_threads=False)
    zone = zone.append_column("src_ip", pa.nulls(zone.num_rows, pa.string()))
    return client, zone


def day_odd_share(names: pa.Table) -> dict[str, float]:
    """Per date: the share of the judged distinct names (per client) the question model finds odd. About the
    training rate on traffic like the window's; far above it, the model does not describe the day."""
    bits = names["bits"].to_numpy()
    judged = (bits & JUDGED) > 0
    odd = (bits & ODD) > 0
    dates = names["date"].to_numpy(zero_copy_only=False).astype(str)
    return {d: float(odd[judged & (dates == d)].mean()) if (judged & (dates == d)).any() else 0.0
            for d in np.unique(dates)}


def decide(names: pa.Table, s: EscalateConf, odd_rate: float, odd_on: bool = True,
           servers: Callable[[], pa.Table] | None = None) -> tuple[pa.Table, pa.Table]:
    """The driver's decision over merged NAMES (udfs/evidence.py ``merge`` of every task's evidence):
    (ESCALATED, one row per group, level and rule that fired; FLAGGED, the names to flag in them). ``odd_on``
    False: no question model with an odd bar, the odd rule is off. ``servers()``: which server each client sent
    each name to (``unpack`` of the evidence: date, src_ip, dst_ip, group, key), for the cut-off groups' links
    (``_linked``), called only when a cut-off group escalated; None: no links."""
    if names.num_rows == 0:
        return ESCALATED.empty_table(), FLAGGED.empty_table()
    client, zone = groups(names, s)
    out: list[dict] = []
    for level, g in (("client", client), ("zone", zone)):
        if g.num_rows == 0:
            continue
        cols = {c: g[c].to_numpy(zero_copy_only=False) for c in
                ("date", "src_ip", "group", "names", *_COUNTED, "clients", "data_bytes")}
        dates, n = cols["date"].astype(str), cols["names"].astype(np.int64)
        shaped = cols["shaped"].astype(np.int64)
        if level == "client" or s.zone_level:
            hit = (shaped >= s.shape_min_names) & (shaped >= s.shape_min_share * n)
            if level == "zone":
                hit &= cols["clients"] > 1  # a group of one client is judged at client level already
            for i in np.flatnonzero(hit):
                out.append(_row(cols, i, level, "shape", int(shaped[i]), math.nan, math.nan,
                                f"{shaped[i]} of {n[i]} distinct names carry a {s.shape_hex}-byte hex or "
                                f"{s.shape_text}-byte encoded token, a data token numbered by a counter label, "
                                f"characters host names never use, or NULL/PRIVATE queries (at least "
                                f"{s.shape_min_names} and {s.shape_min_share:.0%} needed)"))
        if level == "zone":
            continue
        quiet = _socket_quiet(cols, s)
        sock = cols["sock"].astype(np.int64)
        for i in np.flatnonzero(sock > 0):
            if (dates[i], cols["src_ip"][i]) not in quiet:
                out.append(_row(cols, i, level, "socket", int(sock[i]), math.nan, math.nan,
                                f"{sock[i]} data-like name(s) sent over one UDP socket of {s.socket_pkts} "
                                "datagrams or more"))
        for i, (tag, m, total) in _sessions(names, cols, s).items():
            out.append(_row(cols, i, level, "session", m, math.nan, math.nan,
                            f"{m} of the client's {total} distinct names in this group and those its tag appears in "
                            f"are new and carry one id-like token (tag {tag:08x}): a session polling or sending data "
                            f"(at least {s.session_min_names} and {s.session_share:.0%} needed)", tag=tag))
        if not (s.odd and odd_on):
            continue
        odd = cols["odd_new"].astype(np.int64)
        share = day_odd_share(names)
        day = np.array([share[d] for d in dates])
        rate = np.maximum(odd_rate, day)
        per_day = {d: int((dates == d).sum()) for d in np.unique(dates)}
        lp = log10_chernoff(np.minimum(odd, n), n, np.minimum(rate, 0.999))
        limit = np.log10(s.alpha / np.array([per_day[d] for d in dates]))
        hit = (odd >= s.odd_min_share * n) & (n > 0) & (lp <= limit) & (day <= s.odd_quiet_above)
        for i in np.flatnonzero(hit):
            out.append(_row(cols, i, level, "odd", int(odd[i]), float(lp[i]), float(rate[i]),
                            f"{odd[i]} of {n[i]} distinct names odd to the question model, new (asked at most "
                            f"{s.max_asks}x) and carrying {s.odd_min_bytes}+ bytes of non-word labels; chance at "
                            f"the day's base rate {rate[i]:.2f}: 10^{lp[i]:.1f} (limit 10^{limit[i]:.1f})"))
    if not out:
        return ESCALATED.empty_table(), FLAGGED.empty_table()
    chosen = pa.Table.from_pylist(out, schema=ESCALATED)
    flagged = flagged_names(names, chosen, s)
    links, linked = _linked(names, chosen, servers, client, s)
    if links.num_rows:
        chosen, flagged = pa.concat_tables([chosen, links]), pa.concat_tables([flagged, linked])
    return chosen, flagged


def _linked(names: pa.Table, chosen: pa.Table, servers: Callable[[], pa.Table] | None, client: pa.Table,
            s: EscalateConf) -> tuple[pa.Table, pa.Table]:
    """A cut-off group's domain is invisible, its server is not: when shape or socket escalates a client's cut-off
    group (``s:<server>/...``) and the client's complete names sent to that server, ``shape_min_names`` or more,
    all fall in one registered domain (the server is that domain's, not a resolver or a host of many zones), those
    of them that are new and not words are the same tunnel's (its polls, a resolver's minimised steps
    '17.p.<domain>'). One ESCALATED row per registered domain they fall in (the rule that escalated the cut-off
    group, its reason naming the link) and their FLAGGED rows. Domains the client's own names already escalated
    are left to their own rules."""
    if servers is None:
        return ESCALATED.empty_table(), FLAGGED.empty_table()
    rows = chosen.to_pylist()
    done = {(r["date"], r["src_ip"], r["group"]) for r in rows if r["level"] == "client"}
    cut = [r for r in rows if r["level"] == "client" and r["rule"] in ("shape", "socket")
           and r["group"].startswith("s:")]
    if not cut:
        return ESCALATED.empty_table(), FLAGGED.empty_table()
    links = pa.table({"date": [r["date"] for r in cut], "src_ip": [r["src_ip"] for r in cut],
                      "dst_ip": [r["group"][2:].split("/", 1)[0] for r in cut], "via": [r["group"] for r in cut],
                      "rule": [r["rule"] for r in cut]})
    every = servers()
    sent = every.filter(pc.starts_with(every["group"], "z:")).join(
        links, ["date", "src_ip", "dst_ip"], join_type="inner", use_threads=False)
    # Only a server that answers this client for one registered domain, over at least ``shape_min_names`` distinct
    # names, is the tunnel's own: through a resolver (a host's cut-off group) or a hosting provider's server, the
    # client's names span many domains (and a quiet host's one or two lookups through its resolver prove nothing).
    spans = sent.group_by(["date", "src_ip", "dst_ip"], use_threads=False).aggregate(
        [("group", "count_distinct"), ("key", "count_distinct")])
    one = spans.filter(pc.and_(pc.equal(spans["group_count_distinct"], 1),
                               pc.greater_equal(spans["key_count_distinct"], s.shape_min_names)))
    one = one.select(["date", "src_ip", "dst_ip"])
    sent = sent.join(one, ["date", "src_ip", "dst_ip"], join_type="left semi", use_threads=False)
    if sent.num_rows == 0:
        return ESCALATED.empty_table(), FLAGGED.empty_table()
    f = name_flags(names, s)
    mates = names.select(["date", "src_ip", "group", "key"]).filter(pa.array(f["session_companion"]))
    hit = mates.join(sent.select(["date", "src_ip", "group", "key", "via", "rule"]),
                     ["date", "src_ip", "group", "key"], join_type="inner", use_threads=False)
    hit = hit.group_by(["date", "src_ip", "group", "key"], use_threads=False).aggregate(
        [("via", "min"), ("rule", "min")]).rename_columns(["date", "src_ip", "group", "key", "via", "rule"])
    keep = [(d, c, g) not in done for d, c, g in zip(hit["date"].to_pylist(), hit["src_ip"].to_pylist(),
                                                      hit["group"].to_pylist(), strict=True)]
    hit = hit.filter(pa.array(keep, pa.bool_()))
    if hit.num_rows == 0:
        return ESCALATED.empty_table(), FLAGGED.empty_table()
    size = {(d, c, g): (n, b) for d, c, g, n, b in zip(*(client[k].to_pylist() for k in
                                                         ("date", "src_ip", "group", "names", "data_bytes")),
                                                       strict=True)}
    per = hit.group_by(["date", "src_ip", "group", "via", "rule"], use_threads=False).aggregate([("key", "count")])
    out = []
    for r in per.to_pylist():
        n, b = size[(r["date"], r["src_ip"], r["group"])]
        server = r["via"][2:].split("/", 1)[0]
        out.append({"date": r["date"], "src_ip": r["src_ip"], "group": r["group"], "level": "client",
                    "rule": r["rule"], "names": n, "hits": r["key_count"], "clients": 1, "data_bytes": b,
                    "log10_p": None, "baseline": None, "tag": None,
                    "reason": f"{r['rule']} [{r['group']}, {r['src_ip']}, 1 client(s), {b} label bytes]: "
                              f"{r['key_count']} new names of this domain sent to {server}, whose cut-off names "
                              f"({r['via']}) the {r['rule']} rule escalated for this client"})
    flagged = hit.select(["date", "src_ip", "group", "key", "rule"]).cast(FLAGGED)
    return pa.Table.from_pylist(out, schema=ESCALATED), flagged


def _sessions(names: pa.Table, cols: dict, s: EscalateConf) -> dict[int, tuple[int, int, int]]:
    """Sessions: a client's new names that carry one tag (an id-like token), at least ``session_min_names`` of them
    and ``session_share`` of the client's names in the groups they fall in (a registered domain, and the cut-off
    shape its longer names take). {row of cols of each such group: (tag, names carrying it, names of those
    groups)}."""
    f = name_flags(names, s)
    t = names.filter(pa.array(f["tagged"]))
    if t.num_rows == 0:
        return {}
    c = t.group_by(["date", "src_ip", "tag"], use_threads=False).aggregate([("key", "count_distinct")])
    c = c.filter(pc.greater_equal(c["key_count_distinct"], s.session_min_names))
    if c.num_rows == 0:
        return {}
    where = {(d, a, g): i for i, (d, a, g) in enumerate(zip(cols["date"].tolist(), cols["src_ip"].tolist(),
                                                           cols["group"].tolist(), strict=True))}
    homes = (t.join(c.select(["date", "src_ip", "tag"]), ["date", "src_ip", "tag"], join_type="left semi",
                    use_threads=False).group_by(["date", "src_ip", "tag", "group"], use_threads=False).aggregate([]))
    at: dict[tuple, list[int]] = {}
    for r in homes.to_pylist():
        at.setdefault((r["date"], r["src_ip"], r["tag"]), []).append(where[(r["date"], r["src_ip"], r["group"])])
    out: dict[int, tuple[int, int, int]] = {}
    for r in c.to_pylist():
        rows = at[(r["date"], r["src_ip"], r["tag"])]
        total = int(sum(cols["names"][i] for i in rows))
        m = int(r["key_count_distinct"])
        if m >= s.session_share * total:
            for i in rows:
                if i not in out or m > out[i][1]:
                    out[i] = (int(r["tag"]), m, total)
    return out


def _socket_quiet(cols: dict, s: EscalateConf) -> set[tuple[str, str]]:
    """Clients that keep one port for many queries of ordinary names, in several groups."""
    plain = cols["sock_plain"] > 0
    count: dict[tuple[str, str], int] = {}
    for d, c in zip(cols["date"][plain].astype(str), cols["src_ip"][plain].astype(str), strict=True):
        count[(d, c)] = count.get((d, c), 0) + 1
    return {k for k, v in count.items() if v >= s.socket_quiet_groups}


def _row(cols: dict, i: int, level: str, rule: str, hits: int, lp: float, base: float, why: str,
         tag: int | None = None) -> dict:
    who = "all clients" if level == "zone" else cols["src_ip"][i]
    return {"date": str(cols["date"][i]), "src_ip": None if level == "zone" else str(cols["src_ip"][i]), "tag": tag,
            "group": str(cols["group"][i]), "level": level, "rule": rule, "names": int(cols["names"][i]),
            "hits": hits, "clients": int(cols["clients"][i]), "data_bytes": int(cols["data_bytes"][i]),
            "log10_p": None if math.isnan(lp) else lp, "baseline": None if math.isnan(base) else base,
            "reason": f"{rule} [{cols['group'][i]}, {who}, {cols['clients'][i]} client(s), "
                      f"{cols['data_bytes'][i]} label bytes]: {why}"}


def flagged_names(names: pa.Table, chosen: pa.Table, s: EscalateConf) -> pa.Table:
    """FLAGGED: per escalated group and rule, the names whose flows are flagged."""
    f = name_flags(names, s)
    which = {"shape": f["shaped"], "socket": f["sock"], "odd": f["odd_new"], "session": f["tagged"]}
    tags = names["tag"].to_numpy()
    parts = []
    for r in chosen.select(["date", "src_ip", "group", "level", "rule", "tag"]).to_pylist():
        # Companions only in one client's group of one registered domain: the tunnel's own zone. (A cut-off
        # group's domain is unknown, and a zone-level group mixes clients.)
        with_companions = r["rule"] != "odd" and r["level"] == "client" and r["group"].startswith("z:")
        sel = pc.and_(pc.equal(names["date"], r["date"]), pc.equal(names["group"], r["group"]))
        if r["level"] == "client":
            sel = pc.and_(sel, pc.equal(names["src_ip"], r["src_ip"]))
        mine = which[r["rule"]] & (tags == r["tag"]) if r["rule"] == "session" else which[r["rule"]]
        extra = (f["session_companion"] if r["rule"] == "session" else f["companion"]) if with_companions else False
        rows = np.flatnonzero(sel.to_numpy(zero_copy_only=False) & (mine | extra))
        keys = np.unique(names["key"].to_numpy()[rows])
        parts.append(pa.table({"date": [r["date"]] * len(keys), "src_ip": pa.array([r["src_ip"]] * len(keys),
                                                                                   pa.string()),
                               "group": [r["group"]] * len(keys), "key": pa.array(keys, pa.uint64()),
                               "rule": [r["rule"]] * len(keys)}, schema=FLAGGED))
    return pa.concat_tables(parts) if parts else FLAGGED.empty_table()


def history_rows(names: pa.Table, chosen: pa.Table, s: EscalateConf) -> pa.Table:
    """HISTORY rows of merged NAMES: one per date and group, over all clients."""
    if names.num_rows == 0:
        return HISTORY.empty_table()
    _client, zone = groups(names, s)
    zone = zone.select(["date", "group", "names", "clients", "data_bytes", "shaped", "odd_new"])
    fired: dict[tuple[str, str], set[str]] = {}
    for r in chosen.select(["date", "group", "rule"]).to_pylist():
        fired.setdefault((r["date"], r["group"]), set()).add(r["rule"])
    esc = [",".join(x for x in RULES if x in fired.get((d, g), ())) for d, g in
           zip(zone["date"].to_pylist(), zone["group"].to_pylist(), strict=True)]
    return zone.append_column("escalated", pa.array(esc, pa.string())).cast(HISTORY).sort_by(
        [("date", "ascending"), ("group", "ascending")])


PAIRS = pa.schema([("date", pa.string()), ("src_ip", pa.string()), ("dst_ip", pa.string())])


def from_evidence(ev: pa.Table, art: ModelArtifact, s: EscalateConf
                  ) -> tuple[pa.Table, pa.Table, pa.Table, pa.Table]:
    """The driver's whole decision from every slice's EVIDENCE rows (udfs/evidence.py): (ESCALATED, FLAGGED,
    HISTORY, and the (date, client, server) PAIRS whose flows must be read again: an escalated group some slice
    did not keep every candidate of)."""
    names = merge(ev)
    bar = odd_threshold(art)
    rate = float(art.meta.qname.get("odd_rate", s.odd_rate)) if art.has_qname else s.odd_rate
    chosen, flagged = decide(names, s, rate, odd_on=not math.isnan(bar),
                             servers=lambda: unpack(ev).select(["date", "src_ip", "dst_ip", "group", "key"]))
    return chosen, flagged, history_rows(names, chosen, s), reread(ev, chosen)


def reread(ev: pa.Table, chosen: pa.Table) -> pa.Table:
    """PAIRS to read again: the servers of an escalated group's evidence rows that a slice did not keep every
    candidate of."""
    gaps = ev.filter(pc.invert(ev["kept"])).select(["date", "src_ip", "dst_ip", "group"])
    strong = chosen
    if gaps.num_rows == 0 or strong.num_rows == 0:
        return PAIRS.empty_table()
    zone = pc.equal(strong["level"], "zone")
    parts = [gaps.join(strong.filter(pc.invert(zone)).select(["date", "src_ip", "group"]), ["date", "src_ip", "group"],
                       join_type="left semi", use_threads=False),
             gaps.join(strong.filter(zone).select(["date", "group"]), ["date", "group"], join_type="left semi",
                       use_threads=False)]
    t = pa.concat_tables(parts).select(PAIRS.names)
    return t.group_by(PAIRS.names, use_threads=False).aggregate([]).cast(PAIRS)


def plain(out: pa.Table, art: ModelArtifact, cfg: Config, run_id: str, scored_at_us: int,
          rules: Sequence[Rule] = (), flows: Callable[[pa.Table], pa.Table] | None = None
          ) -> tuple[pa.Table, pa.Table, pa.Table]:
    """Escalate without Spark, over Detect's OUT rows of any number of slices (the benchmark's plain pass and
    benchmarks/tunnel_eval.py): (the tunnel anomalies and SUPPRESSED rows as OUT, ESCALATED, HISTORY). The same
    functions as jobs/engine/pipeline.py ``escalate``, in one process; ``flows(pairs)`` reads a PAIRS table's
    flows again (FLOW_COLUMNS), as the Source does there."""
    kinds = out[KIND]
    ev = out.filter(pc.equal(kinds, EVIDENCE_KIND)).select(["date", "src_ip", "dst_ip", GROUP, RECORDS, KEPT])
    chosen, flagged, history, again = from_evidence(ev.rename_columns(EVIDENCE.names).cast(EVIDENCE), art,
                                                    cfg.escalate)
    cand = out.filter(pc.equal(kinds, CANDIDATE))
    renamed = {PREFIX: "orig_payload_prefix", ORIG_BYTES: "orig_bytes", ORIG_PKTS: "orig_pkts"}
    rows = cand.rename_columns([renamed.get(c, c) for c in cand.column_names]).select(list(FLOW_COLUMNS))
    if again.num_rows:
        if flows is None:
            raise ValueError("escalated groups need their flows read again: pass flows")
        rows = pa.concat_tables([rows.join(again, PAIRS.names, join_type="left anti", use_threads=False)
                                 .select(list(FLOW_COLUMNS)), flows(again).select(list(FLOW_COLUMNS))])
    return judge(rows, art, cfg, run_id, scored_at_us, chosen, flagged, rules), chosen, history


# ---- the per-flow step ---------------------------------------------------------------------------------------

def flow_view(rows: pa.Table, qloss: np.ndarray, odd_bar: float, s: EscalateConf
              ) -> tuple[Names, np.ndarray, np.ndarray]:
    """Per flow: (its name facts, group, record bits) as the evidence sees them (``rows``: FLOW_COLUMNS)."""
    prefix = rows["orig_payload_prefix"].combine_chunks()
    proto = np.asarray(pc.fill_null(rows["proto"], 0).to_numpy(zero_copy_only=False), dtype=np.int8)
    nm = describe(prefix, proto)
    group = flow_groups(nm, rows["dst_ip"])
    bits = flow_bits(nm, qloss, odd_bar, proto, pkts_of(rows), s.socket_pkts)
    return nm, group, bits


def pkts_of(rows: pa.Table) -> np.ndarray | None:
    """The flows' client datagram counts, or None when the archive does not map them (all null)."""
    if "orig_pkts" not in rows.column_names or rows["orig_pkts"].null_count == rows.num_rows:
        return None
    return np.asarray(pc.fill_null(rows["orig_pkts"], -1).to_numpy(zero_copy_only=False), dtype=np.int64)


def match(rows: pa.Table, keys: np.ndarray, group: np.ndarray, eligible: np.ndarray, flagged: pa.Table
          ) -> np.ndarray:
    """Per flow: the index into RULES of the rule that flags it (-1: none): its name is among FLAGGED for its
    client's group (or its group at zone level) under a rule whose ``flow_rules`` bit the flow has."""
    n = rows.num_rows
    best = np.full(n, len(RULES), np.int64)
    if n and flagged.num_rows:
        t = pa.table({"date": rows["date"].cast(pa.string()), "src_ip": rows["src_ip"].cast(pa.string()),
                      "group": pa.array(group, pa.string()), "key": pa.array(keys, pa.uint64()),
                      "row": pa.array(np.arange(n, dtype=np.int64))})
        rank = {r: i for i, r in enumerate(RULES)}
        fl = flagged.append_column("rank", pa.array([rank[r] for r in flagged["rule"].to_pylist()], pa.int64()))
        zone = pc.is_null(fl["src_ip"])
        for part, on in ((fl.filter(pc.invert(zone)), ["date", "src_ip", "group", "key"]),
                         (fl.filter(zone), ["date", "group", "key"])):
            if part.num_rows == 0:
                continue
            j = t.join(part.select([*on, "rank"]), on, join_type="inner", use_threads=False)
            r, k = j["row"].to_numpy(), j["rank"].to_numpy()
            bit = np.left_shift(1, k).astype(np.uint8)
            # shape and socket flag their companions too, and (in a domain linked to their cut-off group) its
            # new names of any length
            bit = np.where(k <= rank["socket"], bit | COMPANION | SESSION_COMPANION, bit)
            bit = np.where(k == rank["session"], bit | SESSION_COMPANION, bit)  # and session its own
            ok = (eligible[r] & bit) > 0
            np.minimum.at(best, r[ok], k[ok])
    return np.where(best < len(RULES), best, -1).astype(np.int8)


def judge(rows: pa.Table, art: ModelArtifact, cfg: Config, run_id: str, scored_at_us: int, escalated: pa.Table,
          flagged: pa.Table, rules: Sequence[Rule] = ()) -> pa.Table:
    """The per-flow step: flows of escalated groups (FLOW_COLUMNS; candidates, or any superset read again) in; as
    OUT rows, anomalies (detector tunnel, with the group's evidence in the escalation_* columns) for those no
    per-flow detector flagged whose name the decision flagged, less what a suppression rule keeps out (SUPPRESSED
    rows count those)."""
    if rows.num_rows == 0 or flagged.num_rows == 0:
        return OUT.empty_table()
    scorer = cached_scorer(art, cfg.spark.torch_threads_per_task)
    rows = rows.select(list(FLOW_COLUMNS))
    prefix = rows["orig_payload_prefix"].combine_chunks()
    proto, orig = rows["proto"].combine_chunks(), rows["orig_bytes"].combine_chunks()
    v = scorer.score(prefix, proto, orig)
    nm, group, bits = flow_view(rows, v.qloss, odd_threshold(art), cfg.escalate)
    # The decision counted asks over the day; here every flow counts once, and FLAGGED holds only names asked
    # at most max_asks times.
    eligible = flow_rules(nm, group, bits, np.ones(len(bits), np.int64), cfg.escalate)
    which = match(rows, nm.key, group, eligible, flagged)
    hit = np.flatnonzero((which >= 0) & (v.detector == 0))
    if len(hit) == 0:
        return OUT.empty_table()
    idx = pa.array(hit)
    verdicts = Verdicts(v.loss[hit], v.reason[hit], v.qloss[hit], np.full(len(hit), TUNNEL, np.int8))
    found = scorer.explain(prefix.take(idx), pc.take(proto, idx), pc.take(orig, idx), cfg.output.top_bytes, verdicts)
    table = anomaly_table(rows.take(idx), found, art.meta, cfg.scope.ports, run_id, scored_at_us)
    table = with_escalation(table, group[hit], np.asarray(RULES, dtype=object)[which[hit]], escalated)
    table, gone, _ = suppress.apply(table, rules, dt.datetime.fromtimestamp(scored_at_us / 1e6, dt.timezone.utc))
    gone = gone.rename_columns(["date", RULE, SUPPRESSED_N])
    return pa.Table.from_batches([*as_out(table, ANOMALY), *as_out(gone, SUPPRESSED)], schema=OUT)


def with_escalation(table: pa.Table, group: np.ndarray, rule: np.ndarray, escalated: pa.Table) -> pa.Table:
    """The anomalies' escalation_* columns from their group's ESCALATED row (client level first, then zone)."""
    n = table.num_rows
    by: dict[tuple, dict] = {}
    for r in escalated.to_pylist():
        by.setdefault((r["date"], r["src_ip"], r["group"], r["rule"]), r)
    dates, srcs = table["date"].to_pylist(), table["src_ip"].to_pylist()
    rows = [by.get((d, c, g, x)) or by.get((d, None, g, x)) for d, c, g, x in
            zip(dates, srcs, group.tolist(), rule.tolist(), strict=True)]
    cols = {"escalation": [r["rule"] for r in rows], "escalation_group": [r["group"] for r in rows],
            "escalation_level": [r["level"] for r in rows], "escalation_names": [r["names"] for r in rows],
            "escalation_hits": [r["hits"] for r in rows], "escalation_clients": [r["clients"] for r in rows],
            "escalation_bytes": [r["data_bytes"] for r in rows], "escalation_log10_p": [r["log10_p"] for r in rows],
            "escalation_baseline": [r["baseline"] for r in rows], "escalation_reason": [r["reason"] for r in rows]}
    for name, values in cols.items():
        i = table.schema.get_field_index(name)
        table = table.set_column(i, ESCALATION.field(name), pa.array(values, ESCALATION.field(name).type))
    assert table.num_rows == n
    return table
