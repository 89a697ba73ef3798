"""Suppression rules (udfs/suppress.py) without Spark: the matcher against a plain-Python reference (Hypothesis),
the domain semantics, value checks, and rows written by hand."""

from __future__ import annotations

import datetime as dt
import ipaddress

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from portprint.jobs.engine.render import csv_cell, md, text
from portprint.jobs.warehouse.tables import ANOMALIES
from portprint.udfs.suppress import Rule, RuleError, normalise, rules_from_rows, suppressed_by, suppressed_rows

UTC = dt.timezone.utc
AT = dt.datetime(2026, 11, 10, 12, tzinfo=UTC)
LABELS = ["example", "com", "badexample", "a", "net", "mail", "zen", "spamhaus", "org", "in-addr", "arpa", "x_y"]


def table(rows: list[dict]) -> pa.Table:
    full = [dict.fromkeys(ANOMALIES.names) | r for r in rows]
    return pa.Table.from_pylist(full, schema=ANOMALIES)


# ---------------------------------------------------------------- the plain-Python reference

def ref_address(text: str | None):
    """An address as (version, integer), IPv4-mapped IPv6 as IPv4; None when it does not parse."""
    if text is None:
        return None
    try:
        a = ipaddress.ip_address(text.strip())
    except ValueError:
        return None
    if a.version == 6 and int(a) >> 32 == 0xFFFF:
        return 4, int(a) & 0xFFFFFFFF
    return a.version, int(a)


def ref_in(text: str | None, block: str) -> bool:
    a = ref_address(text)
    base, _, bits = block.partition("/")
    version, net = ref_address(base)
    width = 32 if version == 4 else 128
    plen = int(bits) if bits else width
    return a is not None and a[0] == version and a[1] >> (width - plen) == net >> (width - plen)


def ref_match(row: dict, kind: str, value: str) -> bool:
    if kind == "domain":
        if not row["qname_complete"] or row["qname"] is None:
            return False
        name = row["qname"].lower()
        name = name[:-1] if name.endswith(".") else name
        want = value.lower().rstrip(".").split(".")
        return name.split(".")[-len(want):] == want
    if kind == "src":
        return ref_in(row["src_ip"], value)
    if kind == "dst":
        return ref_in(row["dst_ip"], value)
    if kind == "pair":
        s, d = value.split(",")
        return ref_in(row["src_ip"], s) and ref_in(row["dst_ip"], d)
    if kind == "detector":
        return row["detector"] == value
    raise AssertionError(kind)


def ref_active(rule: dict, at: dt.datetime) -> bool:
    return (rule["created_at"] <= at and (rule["expires_at"] is None or at < rule["expires_at"])
            and (rule["removed_at"] is None or at < rule["removed_at"]))


# ---------------------------------------------------------------- strategies

v4 = st.integers(0, 2**32 - 1)
v6 = st.integers(0, 2**128 - 1)


@st.composite
def address(draw, near: list[int] | None = None) -> str:
    kind = draw(st.sampled_from(["v4", "v6", "mapped", "junk"]))
    if kind == "v4":
        return str(ipaddress.IPv4Address(draw(v4)))
    if kind == "mapped":
        return "::ffff:" + str(ipaddress.IPv4Address(draw(v4)))
    if kind == "v6":
        s = str(ipaddress.IPv6Address(draw(v6)))
        return s.upper() if draw(st.booleans()) else s
    return draw(st.sampled_from(["", "not-an-ip", "10.0.0.256"]))


@st.composite
def network(draw, addresses: list[str]) -> str:
    """A CIDR block, often around one of the rows' addresses so that matches happen."""
    parsed = [ref_address(a) for a in addresses if ref_address(a)]
    if parsed and draw(st.booleans()):
        version, n = draw(st.sampled_from(parsed))
    else:
        version = draw(st.sampled_from([4, 6]))
        n = draw(v4 if version == 4 else v6)
    width = 32 if version == 4 else 128
    plen = draw(st.integers(0, width))
    net = (n >> (width - plen)) << (width - plen) if plen else 0
    cls = ipaddress.IPv4Network if version == 4 else ipaddress.IPv6Network
    return str(cls((net, plen)))


def name(draw) -> str:
    labels = draw(st.lists(st.sampled_from(LABELS), min_size=1, max_size=4))
    cased = "".join(c.upper() if draw(st.booleans()) else c for c in ".".join(labels))
    return cased + ("." if draw(st.booleans()) else "")


@st.composite
def case(draw):
    rows = []
    for _ in range(draw(st.integers(1, 12))):
        rows.append({"flow_id": f"f{len(rows)}", "src_ip": draw(address()), "dst_ip": draw(address()),
                     "qname": draw(st.one_of(st.none(), st.builds(lambda: None).map(lambda _: name(draw)))),
                     "qname_complete": draw(st.booleans()),
                     "detector": draw(st.sampled_from(["header-rule", "header-model", "qname-model", "tunnel"]))})
    addrs = [r["src_ip"] for r in rows] + [r["dst_ip"] for r in rows]
    rules = []
    for i in range(draw(st.integers(1, 6))):
        kind = draw(st.sampled_from(["domain", "src", "dst", "pair", "detector"]))
        if kind == "domain":
            value = ".".join(draw(st.lists(st.sampled_from(LABELS), min_size=1, max_size=2)))
            value = value.upper() if draw(st.booleans()) else value
            value += "." if draw(st.booleans()) else ""
        elif kind in ("src", "dst"):
            value = draw(network(addrs))
        elif kind == "pair":
            value = f"{draw(network(addrs))},{draw(network(addrs))}"
        else:
            value = draw(st.sampled_from(["header-rule", "tunnel"]))
        hours = st.integers(-48, 48).map(lambda h: AT + dt.timedelta(hours=h))
        rules.append({"rule_id": f"r{i}", "kind": kind, "value": value, "created_at": draw(hours),
                      "expires_at": draw(st.one_of(st.none(), hours)), "removed_at": draw(st.one_of(st.none(), hours))})
    return rows, rules


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case())
def test_matcher_agrees_with_the_plain_python_reference(c):
    rows, rules = c
    t = table(rows)
    objs = [Rule(r["rule_id"], r["kind"], normalise(r["kind"], r["value"]), r["created_at"], r["expires_at"],
                 r["removed_at"]) for r in rules]
    got = suppressed_rows(t, objs, AT)
    live = [r for r in rules if ref_active(r, AT)]
    assert set(got) == {r["rule_id"] for r in live}
    for r in live:
        want = [ref_match(row, r["kind"], r["value"]) for row in rows]
        assert got[r["rule_id"]].tolist() == want, (r, rows)
    # Each suppressed row is credited to the oldest rule in force that matches it.
    by = suppressed_by(t, objs, AT).to_pylist()
    for i, row in enumerate(rows):
        matching = sorted((r["created_at"], r["rule_id"]) for r in live if ref_match(row, r["kind"], r["value"]))
        assert by[i] == (matching[0][1] if matching else None)


def test_domain_is_a_label_boundary_and_covers_itself():
    rows = [{"qname": q, "qname_complete": True} for q in
            ("example.com.", "A.B.Example.COM", "badexample.com.", "example.com.evil.net.", "example.co.",
             "x\\046example.com.")]
    rows.append({"qname": "a.example.com", "qname_complete": False})  # cut off: may be a.example.com.evil.net
    rule = Rule("r", "domain", normalise("domain", "Example.COM."), AT - dt.timedelta(days=1))
    # x\046example is one label holding a dot: the name is under com, not under example.com.
    assert suppressed_rows(table(rows), [rule], AT)["r"].tolist() == [True, True, False, False, False, False, False]


def test_a_wildcard_domain_is_refused_with_a_hint():
    with pytest.raises(RuleError, match=r"write 'example.com' instead.*would not cover 'example.com' itself"):
        normalise("domain", "*.example.com")
    with pytest.raises(RuleError, match="wildcards are not supported"):
        normalise("domain", "a.*.com")


@pytest.mark.parametrize(("kind", "value", "message"), [
    ("src", "10.0.0.5/24", "did you mean 10.0.0.0/24"),
    ("dst", "999.1.1.1", "not an IPv4/IPv6 address"),
    ("pair", "10.0.0.1", "write SRC,DST"),
    ("detector", "header", "use one of header-rule"),
    ("pattern", "SSH-2.0", "copy one from anomaly_patterns.pattern"),
    ("domain", "exa mple.com", "give a name such as example.com"),
    ("colour", "red", "kind 'colour' is unknown"),
])
def test_bad_values_say_what_to_write(kind, value, message):
    with pytest.raises(RuleError, match=message):
        normalise(kind, value)


def test_values_are_normalised():
    assert normalise("domain", "BÜCHER.example.") == "xn--bcher-kva.example"
    assert normalise("src", "2001:DB8::/32") == "2001:db8::/32"
    assert normalise("src", "::ffff:10.0.0.0/104") == "10.0.0.0/8"
    assert normalise("pair", " 10.0.0.5 , 192.0.2.0/24") == "10.0.0.5/32,192.0.2.0/24"


def test_rows_written_by_hand_are_folded_or_listed_with_why():
    t0 = AT - dt.timedelta(days=2)
    good = {"rule_id": "g", "kind": "domain", "value": "example.com", "reason": "AV lookups", "created_by": "ana",
            "created_at": t0}
    rows = [good,
            {"rule_id": "g", "removed_by": "bob", "removed_at": AT - dt.timedelta(hours=1)},
            {"rule_id": "w", "kind": "domain", "value": "*.example.net", "reason": "r", "created_by": "ana",
             "created_at": t0},
            {"rule_id": "n", "kind": "src", "value": "10.0.0.0/8", "created_by": "ana", "created_at": t0},
            {"rule_id": None, "kind": "src", "value": "10.0.0.0/8", "reason": "r", "created_by": "a", "created_at": t0},
            {"rule_id": "e", "kind": "src", "value": "10.0.0.0/8", "reason": "r", "created_by": "a", "created_at": t0,
             "expires_at": t0 - dt.timedelta(days=1)},
            {"rule_id": "zz", "removed_by": "bob", "removed_at": AT}]
    rules, problems = rules_from_rows(rows)
    assert [(r.rule_id, r.removed_by, r.state(AT)) for r in rules] == [("g", "bob", "removed")]
    why = {row.get("rule_id"): reason for row, reason in problems}
    assert "write 'example.net' instead" in why["w"]
    assert why["n"] == "missing reason"
    assert why[None].startswith("no rule_id")
    assert why["e"] == "expires_at is not after created_at"
    assert why["zz"].startswith("removes rule zz")


def test_expiry_and_removal_times():
    r = Rule("r", "detector", "header-rule", AT, expires_at=AT + dt.timedelta(hours=1))
    assert not r.active(AT - dt.timedelta(seconds=1)) and r.active(AT)
    assert not r.active(AT + dt.timedelta(hours=1)) and r.state(AT + dt.timedelta(hours=1)) == "expired"
    assert np.array_equal(suppressed_rows(table([{"detector": "header-rule"}]), [r], AT + dt.timedelta(hours=2))
                          .get("r", np.zeros(1, bool)), np.zeros(1, bool))


# ---------------------------------------------------------------- rendering of hostile text

HOSTILE = "<script>alert(1)</script>|`x`\x1b[31m\x00\u202e=cmd|' /C calc'!A0\udcff"


def test_text_shows_control_characters_as_escapes():
    out = text(HOSTILE)
    assert "\x1b" not in out and "\x00" not in out and "\u202e" not in out and "\udcff" not in out
    assert "\\x1b" in out and "\\x00" in out and "\\u202e" in out and "\\xff" in out
    assert text(b"a\xffb") == "a\\xffb"


def test_markdown_escape_keeps_pipes_backticks_and_tags_inert():
    out = md(HOSTILE)
    for raw in ("<", "|", "`"):
        assert all(out[i - 1] == "\\" for i, c in enumerate(out) if c == raw and raw != "<"), raw
    assert "<" not in out and "&lt;script&gt;" in out


@pytest.mark.parametrize("cell", ["=1+1", "+1", "-1", "@SUM(A1)", "\tx", "\rx"])
def test_csv_cells_that_start_a_formula_are_neutralised(cell):
    out = csv_cell(cell)
    assert out.startswith("'") and "\t" not in out and "\r" not in out
