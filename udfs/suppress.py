"""Suppression rules and what they match: pure pyarrow/numpy/ipaddress, no Spark. Called by scoring (rows a
rule suppresses are not written, but counted), by the `anomalies_triaged` view (jobs/triage.py, through
mapInArrow) and by `portprint suppress` (jobs/suppress.py) to validate a rule before it is stored.

Semantics, stated once:
- ``domain``: a label boundary. ``example.com`` covers ``example.com`` itself and every name under it
  (``a.b.example.com``), never ``badexample.com``. Case and one trailing dot are ignored. ``*.example.com``
  is refused with a hint: it is not needed, and DNS's own wildcard would *not* cover ``example.com``, so
  accepting it either way would surprise someone. Only complete names match: a name cut off by the stored
  prefix does not show its parent domain (``a.example.com`` may be ``a.example.com.evil.net``).
- ``pattern``: the pattern key exactly as in ``anomaly_patterns.pattern`` (``pattern_keys`` below).
- ``src`` / ``dst``: an address or a CIDR block (IPv4 or IPv6; host bits must be zero). IPv4-mapped IPv6
  addresses (``::ffff:10.0.0.1``) in the data count as IPv4.
- ``pair``: ``SRC,DST``, each an address or a CIDR block.
- ``detector``: header-rule, header-model, qname-model or tunnel.
- A rule applies at time ``at`` when ``created_at <= at``, ``at < expires_at`` (none: never expires) and it
  was not removed at or before ``at``.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from portprint.udfs.schemas import DETECTORS

KINDS = ("domain", "pattern", "src", "dst", "pair", "detector")
# The detectors' names as they appear in anomalies.detector (udfs/scoring.py gives them; that module loads
# torch, which the analysts' side never needs).
DETECTOR_NAMES = DETECTORS[1:]
_LABEL = re.compile(r"^[a-z0-9_-]{1,63}$")
_PATTERN = re.compile(r"^(dns (udp|tcp) flags=\S* qd=\S* an=\S*|bytes (udp|tcp) [0-9a-f]{0,8}|qname .+"
                      r"|tunnel [zs]:.+)$")
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class RuleError(ValueError):
    """A rule's value does not fit its kind; the message says what to write instead."""


@dataclass(frozen=True)
class Rule:
    rule_id: str
    kind: str
    value: str                           # normalised (normalise())
    created_at: dt.datetime
    expires_at: dt.datetime | None = None
    removed_at: dt.datetime | None = None
    reason: str | None = None
    created_by: str | None = None
    removed_by: str | None = None

    def active(self, at: dt.datetime) -> bool:
        return (self.created_at <= at and (self.expires_at is None or at < self.expires_at)
                and (self.removed_at is None or at < self.removed_at))

    def state(self, at: dt.datetime) -> str:
        if self.removed_at is not None and self.removed_at <= at:
            return "removed"
        if self.expires_at is not None and self.expires_at <= at:
            return "expired"
        return "active" if self.created_at <= at else "future"


def normalise_domain(value: str) -> str:
    v = value.strip()
    if v.startswith("*."):
        raise RuleError(f"domain {value!r}: write {v[2:]!r} instead; a domain rule covers the domain itself and "
                        "every name under it, so no '*.' is needed (and a DNS wildcard would not cover "
                        f"{v[2:]!r} itself)")
    if "*" in v:
        raise RuleError(f"domain {value!r}: wildcards are not supported; give the parent domain, e.g. example.com")
    if v.endswith("."):
        v = v[:-1]
    try:
        v = v.encode("ascii").decode() if v.isascii() else v.encode("idna").decode("ascii")
    except UnicodeError:
        raise RuleError(f"domain {value!r} is not a valid internationalised name") from None
    v = v.lower()
    labels = v.split(".")
    if not v or len(v) > 253 or not all(_LABEL.match(label) for label in labels):
        raise RuleError(f"domain {value!r}: give a name such as example.com (labels of 1-63 letters, digits, '-' or "
                        "'_', separated by single dots)")
    return v


def _network(text: str, what: str) -> Network:
    t = text.strip()
    try:
        net = ipaddress.ip_network(t, strict=True)
    except ValueError as exc:
        if "host bits set" in str(exc):
            loose = ipaddress.ip_network(t, strict=False)
            raise RuleError(f"{what} {text!r} has host bits set; did you mean {loose}?") from None
        raise RuleError(f"{what} {text!r} is not an IPv4/IPv6 address or CIDR block (e.g. 10.1.2.3, "
                        "10.1.0.0/16, 2001:db8::/32)") from None
    if isinstance(net, ipaddress.IPv6Network) and net.prefixlen >= 96 and net.network_address.ipv4_mapped:
        net = ipaddress.ip_network(f"{net.network_address.ipv4_mapped}/{net.prefixlen - 96}")
    return net


def normalise(kind: str, value: str | None) -> str:
    """The canonical text of a rule's value, or RuleError saying what to write instead."""
    if kind not in KINDS:
        raise RuleError(f"kind {kind!r} is unknown; use one of {', '.join(KINDS)}")
    if value is None or not str(value).strip():
        raise RuleError(f"a {kind} rule needs a value")
    value = str(value)
    if kind == "domain":
        return normalise_domain(value)
    if kind == "pattern":
        v = value.strip()
        if not _PATTERN.match(v):
            raise RuleError(f"pattern {value!r} is not a pattern key; copy one from anomaly_patterns.pattern, e.g. "
                            "'dns udp flags=8400 qd=0001 an=0005', 'qname *.example.net' or 'tunnel z:example.net'")
        return v
    if kind in ("src", "dst"):
        return str(_network(value, kind))
    if kind == "pair":
        parts = value.split(",")
        if len(parts) != 2:
            raise RuleError(f"pair {value!r}: write SRC,DST (each an address or CIDR block), e.g. 10.0.0.5,192.0.2.53")
        return ",".join(str(_network(p, "pair side")) for p in parts)
    v = value.strip().lower()
    if v not in DETECTOR_NAMES:
        raise RuleError(f"detector {value!r} is unknown; use one of {', '.join(DETECTOR_NAMES)}")
    return v


# ---------------------------------------------------------------- the pattern key, without Spark

def _pattern(detector, verdict, proto, prefix_hex, qname, complete, group=None) -> str | None:
    """anomaly_patterns.pattern of one anomaly: jobs/warehouse/patterns.pattern_of() restated for pyarrow callers (a
    test checks both give the same keys)."""
    p = "tcp" if proto == 6 else "udp"
    if detector == "tunnel":
        return f"tunnel {group or ''}"
    if detector == "qname-model":
        if qname is None:
            return None
        name = qname.lower()
        name = name[:-1] if name.endswith(".") else name
        if complete:
            return "qname *." + ".".join(name.split(".")[-2:])
        return f"qname cut first-label={len(name.split('.')[0])}"
    h = prefix_hex or ""
    if verdict == "valid":
        msg = h[4:] if p == "tcp" else h
        return f"dns {p} flags={msg[4:8]} qd={msg[8:12]} an={msg[12:16]}"
    return f"bytes {p} {h[:8]}"


def pattern_keys(anomalies: pa.Table) -> pa.Array:
    """The pattern key of every row of an ``anomalies``-shaped table."""
    cols = [anomalies[c].to_pylist() if c in anomalies.column_names else [None] * anomalies.num_rows
            for c in ("detector", "header_verdict", "proto", "prefix_hex", "qname", "qname_complete",
                      "escalation_group")]
    return pa.array([_pattern(*row) for row in zip(*cols, strict=True)], pa.string())


# ---------------------------------------------------------------- matching

def _address(text: str | None) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    if text is None:
        return None
    try:
        a = ipaddress.ip_address(text.strip())
    except ValueError:
        return None  # an address the archive spelt oddly never matches a rule
    return a.ipv4_mapped if isinstance(a, ipaddress.IPv6Address) and a.ipv4_mapped else a


class _Addresses:
    """Distinct addresses of a column, parsed once; rule masks are computed per distinct value."""

    def __init__(self, column: pa.ChunkedArray | pa.Array) -> None:
        col = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
        self.uniques = pc.unique(col)
        self.parsed = [_address(a) for a in self.uniques.to_pylist()]
        idx = pc.fill_null(pc.index_in(col, value_set=self.uniques), len(self.parsed))
        self.index = idx.to_numpy(zero_copy_only=False).astype(np.int64)

    def within(self, net: Network) -> np.ndarray:
        hit = np.array([a is not None and a.version == net.version and a in net for a in self.parsed] + [False])
        return hit[self.index]


def _bool(a) -> np.ndarray:
    return pc.fill_null(a, False).to_numpy(zero_copy_only=False).astype(bool)


def applicable(rules: Sequence[Rule], at: dt.datetime) -> list[Rule]:
    """The rules in force at ``at``, oldest first (the oldest matching rule is the one credited)."""
    return sorted((r for r in rules if r.active(at)), key=lambda r: (r.created_at, r.rule_id))


def suppressed_rows(anomalies: pa.Table, rules: Sequence[Rule], at: dt.datetime) -> dict[str, np.ndarray]:
    """rule_id -> boolean mask over ``anomalies``' rows that the rule suppresses at time ``at``.

    Only rules in force at ``at`` appear. A row may be matched by several rules; ``suppressed_by`` credits one.
    """
    live = applicable(rules, at)
    n = anomalies.num_rows
    if not live or n == 0:
        return {r.rule_id: np.zeros(n, bool) for r in live}
    lazy: dict[str, object] = {}

    def get(key: str):
        if key not in lazy:
            if key in ("src_ip", "dst_ip"):
                lazy[key] = _Addresses(anomalies[key])
            elif key == "name":
                name = pc.ascii_lower(anomalies["qname"])
                lazy[key] = pc.replace_substring_regex(name, r"\.$", "")
            elif key == "pattern":
                lazy[key] = pattern_keys(anomalies)
        return lazy[key]

    out: dict[str, np.ndarray] = {}
    for r in live:
        if r.kind == "domain":
            name = get("name")
            hit = _bool(pc.or_(pc.equal(name, r.value), pc.ends_with(name, "." + r.value)))
            hit &= _bool(anomalies["qname_complete"])
        elif r.kind == "pattern":
            hit = _bool(pc.equal(get("pattern"), r.value))
        elif r.kind == "detector":
            hit = _bool(pc.equal(anomalies["detector"], r.value))
        elif r.kind in ("src", "dst"):
            hit = get(f"{r.kind}_ip").within(ipaddress.ip_network(r.value))
        else:
            s, d = r.value.split(",")
            hit = get("src_ip").within(ipaddress.ip_network(s)) & get("dst_ip").within(ipaddress.ip_network(d))
        out[r.rule_id] = out.get(r.rule_id, np.zeros(n, bool)) | hit
    return out


def suppressed_by(anomalies: pa.Table, rules: Sequence[Rule], at: dt.datetime) -> pa.Array:
    """Per row, the id of the oldest rule in force at ``at`` that suppresses it, or null."""
    masks = suppressed_rows(anomalies, rules, at)
    out = np.full(anomalies.num_rows, None, dtype=object)
    for rule_id, mask in reversed(list(masks.items())):  # oldest last, so it wins
        out[mask] = rule_id
    return pa.array(out, pa.string())


def hits_per_rule(anomalies: pa.Table, rules: Sequence[Rule], at: dt.datetime) -> tuple[np.ndarray, dict[str, int]]:
    """For scoring: (keep mask, rows credited to each rule), each suppressed row credited to one rule once."""
    by = suppressed_by(anomalies, rules, at)
    keep = _bool(pc.is_null(by))
    counts = pc.value_counts(by.filter(pc.is_valid(by))).to_pylist()
    return keep, {c["values"]: int(c["counts"]) for c in counts}


def apply(anomalies: pa.Table, rules: Sequence[Rule], at: dt.datetime) -> tuple[pa.Table, pa.Table, np.ndarray]:
    """Scoring-time suppression, as Detect and Escalate apply it where anomalies are made: the rows no rule in
    force suppresses; per date and rule how many rows it kept out (date, rule_id, flows); and the keep mask."""
    empty = pa.table({"date": pa.array([], pa.string()), "rule_id": pa.array([], pa.string()),
                      "flows": pa.array([], pa.int64())})
    keep = np.ones(anomalies.num_rows, bool)
    if not rules or anomalies.num_rows == 0:
        return anomalies, empty, keep
    by = suppressed_by(anomalies, rules, at)
    keep = _bool(pc.is_null(by))
    if keep.all():
        return anomalies, empty, keep
    hit = pa.array(~keep)
    gone = pa.table({"date": anomalies["date"].filter(hit), "rule_id": by.filter(hit)})
    counts = gone.group_by(["date", "rule_id"], use_threads=False).aggregate([("rule_id", "count")])
    return (anomalies.filter(pa.array(keep)), counts.rename_columns(["date", "rule_id", "flows"]).cast(empty.schema),
            keep)


# ---------------------------------------------------------------- the suppressions table, read

def rules_from_rows(rows: Sequence[dict]) -> tuple[list[Rule], list[tuple[dict, str]]]:
    """Rules from ``suppressions`` rows (jobs/tables.SUPPRESSIONS), and the rows ignored with why.

    A rule is defined by one row; a row with removed_at set removes the rule of its rule_id (the earliest
    removal counts). Rows written by hand with SQL that break this are listed, never fatal.
    """
    problems: list[tuple[dict, str]] = []
    defs: dict[str, Rule] = {}
    removals: list[dict] = []
    for row in sorted(rows, key=lambda r: (r.get("created_at") or _EPOCH, r.get("rule_id") or "")):
        rid = (row.get("rule_id") or "").strip()
        if not rid:
            problems.append((row, "no rule_id (SQL: uuid())"))
            continue
        if row.get("removed_at") is not None:
            removals.append(row)
            continue
        missing = [c for c in ("kind", "value", "reason", "created_by", "created_at") if row.get(c) in (None, "")]
        if missing:
            problems.append((row, f"missing {', '.join(missing)}"))
            continue
        try:
            value = normalise(row["kind"], row["value"])
        except RuleError as exc:
            problems.append((row, str(exc)))
            continue
        if row.get("expires_at") is not None and row["expires_at"] <= row["created_at"]:
            problems.append((row, "expires_at is not after created_at"))
            continue
        if rid in defs:
            problems.append((row, f"rule_id {rid} is already defined; give a new rule a new id"))
            continue
        defs[rid] = Rule(rid, row["kind"], value, row["created_at"], row.get("expires_at"), None,
                         row.get("reason"), row.get("created_by"))
    for row in sorted(removals, key=lambda r: r["removed_at"]):
        rid = row["rule_id"].strip()
        if rid not in defs:
            problems.append((row, f"removes rule {rid}, which is not defined"))
        elif defs[rid].removed_at is None:
            r = defs[rid]
            defs[rid] = Rule(r.rule_id, r.kind, r.value, r.created_at, r.expires_at, row["removed_at"], r.reason,
                             r.created_by, row.get("removed_by"))
    return sorted(defs.values(), key=lambda r: (r.created_at, r.rule_id)), problems


_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)
