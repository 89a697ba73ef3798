"""The Escalate stage without Spark (udfs/evidence.py, udfs/escalate.py): evidence that merges exactly however the
flows are sliced (against a plain-Python reference), each rule on queries encoded by dnspython, and Detect's
candidates agreeing with the per-flow step."""

from __future__ import annotations

import collections
import dataclasses
import itertools
import math

import dns.message
import dns.name
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from portprint.conf.config import EscalateConf
from portprint.udfs import escalate, evidence, names

UDP, TCP = 17, 6
ODD = 0.5  # the odd bar on the made-up losses below
DAY = "2026-12-01"


def wire(name: str, qtype: str = "A") -> bytes:
    msg = dns.message.make_query(dns.name.from_text(name), qtype).to_wire()
    return msg[:64]


def flows(rows: list[tuple]) -> pa.Table:
    """(date, src, dst, name, qtype, orig_pkts) rows as the contract's columns."""
    date, src, dst, name, qtype, pkts = zip(*rows, strict=True)
    return pa.table({"date": list(date), "src_ip": list(src), "dst_ip": list(dst),
                     "proto": pa.array([UDP] * len(rows), pa.int32()),
                     "orig_payload_prefix": pa.array([wire(n, q) for n, q in zip(name, qtype, strict=True)],
                                                     pa.binary()),
                     "orig_pkts": pa.array(list(pkts), pa.int64())})


def slice_evidence(t: pa.Table, qloss: np.ndarray, s: EscalateConf, batches: int = 1) -> pa.Table:
    """One slice's EVIDENCE rows, its flows handed over in ``batches`` batches (as a task's Arrow batches)."""
    ev = evidence.SliceEvidence()
    bounds = np.linspace(0, t.num_rows, batches + 1).astype(int)
    for a, b in itertools.pairwise(bounds):
        part = t.slice(a, b - a)
        nm, group, bits = escalate.flow_view(part, qloss[a:b], ODD, s)
        ev.add(part, nm, group, bits)
    return ev.table()


def decide(rows, loss, s: EscalateConf | None = None, odd_rate: float = 0.1):
    s = s or EscalateConf()
    t = flows(rows)
    ev = slice_evidence(t, np.asarray(loss, dtype=np.float64), s)
    servers = evidence.unpack(ev).select(["date", "src_ip", "dst_ip", "group", "key"])
    return t, *escalate.decide(evidence.merge(ev), s, odd_rate, servers=lambda: servers)


# ---- evidence merges exactly ------------------------------------------------------------------------------

POOL = ["www.example.com.", "mail.example.com.", "x1k9.t.tunnel.net.", "x2k9.t.tunnel.net.", "8.8.8.8.in-addr.arpa.",
        "ab" * 30 + ".t.tunnel.net.", "cdn.example.org.", "WWW.EXAMPLE.COM."]
flow_row = st.tuples(st.sampled_from([DAY, "2026-12-02"]), st.sampled_from(["10.0.0.1", "10.0.0.2"]),
                     st.sampled_from(["10.0.0.53", "10.0.0.54"]), st.integers(0, len(POOL) - 1),
                     st.sampled_from(["A", "AAAA", "TXT", "NULL"]), st.integers(1, 100))


@settings(max_examples=40, deadline=None)
@given(st.lists(flow_row, min_size=1, max_size=40), st.lists(st.integers(0, 40), max_size=4), st.integers(1, 3))
def test_evidence_of_any_slicing_merges_to_the_same_names(rows, cuts, batches):
    s = EscalateConf()
    t = flows([(d, c, x, POOL[k], q, p) for d, c, x, k, q, p in rows])
    loss = np.array([0.9 if POOL[k].startswith(("x", "ab")) else 0.1 for *_, k, _q, _p in rows])
    whole = evidence.merge(slice_evidence(t, loss, s))
    bounds = sorted({0, t.num_rows, *[min(c, t.num_rows) for c in cuts]})
    pieces = [slice_evidence(t.slice(a, b - a), loss[a:b], s, batches) for a, b in itertools.pairwise(bounds)]
    assert evidence.merge(pa.concat_tables(pieces)).equals(whole)
    # Plain-Python reference: asks, socket flows and odd per (date, client, name), names case-folded and without
    # their record type; the name too long for the prefix is grouped by its server (its domain is invisible).
    want: dict[tuple, list] = collections.defaultdict(lambda: [0, False, False])
    for d, c, x, k, _q, p in rows:
        name = POOL[k].lower()
        group = f"s:{x}" if len(name) > 52 else "z:" + ".".join(name.strip(".").split(".")[-2:])
        if name.endswith("in-addr.arpa."):
            group = "z:8.in-addr.arpa"
        w = want[(d, c, group, name)]
        w[0] += 1
        w[1] |= p >= s.socket_pkts
        w[2] |= name.startswith(("x", "ab"))
    keys = names.describe(t["orig_payload_prefix"], np.full(t.num_rows, UDP, np.int8)).key
    name_of = {int(k): POOL[r[3]].lower() for k, r in zip(keys, rows, strict=True)}
    got = {(r["date"], r["src_ip"], r["group"].split("/")[0], name_of[r["key"]]):
           [r["asks"], bool(r["bits"] & evidence.SOCKET), bool(r["bits"] & evidence.ODD)] for r in whole.to_pylist()}
    assert got == dict(want)


def test_a_record_is_twenty_bytes_per_distinct_name_of_a_client_and_server():
    s = EscalateConf()
    t = flows([(DAY, "10.0.0.1", "10.0.0.53", f"n{i % 5}.example.com.", "A", 1) for i in range(50)])
    ev = slice_evidence(t, np.full(50, math.nan), s)
    assert ev.num_rows == 1 and len(ev["records"][0].as_py()) == 5 * evidence.REC.itemsize == 100


# ---- the rules ------------------------------------------------------------------------------------------------

def background(rng: np.random.Generator, clients: int = 30, each: int = 40, odd_share: float = 0.1):
    """Clients asking distinct ordinary names, each odd with probability ``odd_share``."""
    rows, loss = [], []
    for c in range(clients):
        for j in range(each):
            rows.append((DAY, f"10.1.0.{c}", "10.0.0.53", f"web{j % 7}.shop{c}x{j}.example{c % 3}.com.", "A", 1))
            loss.append(0.9 if rng.random() < odd_share else 0.1)
    return rows, loss


def test_shape_needs_enough_distinct_long_tokens_in_one_group_and_adds_clients_up_at_zone_level():
    s = EscalateConf()
    token = "k" + "3q" * 25  # 51 bytes of base32: past the prefix with its domain
    few = [(DAY, "10.0.0.7", "10.0.0.53", f"{j:02d}{token}.t.example.net.", "A", 1)
           for j in range(s.shape_min_names - 1)]
    _, chosen, _ = decide(few, [math.nan] * len(few))
    assert chosen.num_rows == 0
    more = [*few, (DAY, "10.0.0.8", "10.0.0.53", f"99{token}.t.example.net.", "A", 1)]
    _, chosen, flagged = decide(more, [math.nan] * len(more))
    assert [(r["level"], r["rule"], r["names"], r["clients"]) for r in chosen.to_pylist()] == [
        ("zone", "shape", s.shape_min_names, 2)]
    assert flagged.num_rows == s.shape_min_names
    # A 48-byte hash after a word ("cache-<hash>") is not a tunnel's token, however many there are.
    hashes = [(DAY, "10.0.0.9", "10.0.0.53", f"cache-{j:08x}{'ab' * 20}.edge.example.com.", "A", 1) for j in range(40)]
    _, chosen, _ = decide(hashes, [math.nan] * len(hashes))
    assert chosen.num_rows == 0


def test_hash_length_fragments_numbered_for_reassembly_add_up_over_clients_and_hashes_do_not():
    """A spread exfiltration: 40-hex fragments (the length of a SHA-1, which genuine reputation lookups send by
    the hundred), each with its index as the next label, one or two per source. The index makes them a tunnel's
    over all clients; the same hashes without it are a reputation service's lookups."""
    rng = np.random.default_rng(7)
    frag = [(DAY, f"10.1.0.{j % 40}", "10.0.0.53", f"{rng.bytes(20).hex()}.{j}.p.cdn-example.net.", "A", 1)
            for j in range(60)]
    _, chosen, flagged = decide(frag, [math.nan] * len(frag))
    assert [(r["rule"], r["level"], r["hits"]) for r in chosen.to_pylist()] == [("shape", "zone", 60)]
    assert flagged.num_rows == 60
    hashes = [(DAY, f"10.1.0.{j % 40}", "10.0.0.53", f"{rng.bytes(20).hex()}.hash.cymru-example.com.", "A", 1)
              for j in range(60)]
    hashes += [(DAY, "10.2.0.1", "10.0.0.53", f"0.0.0.0.1.0.0.4e.{rng.bytes(16).hex()[:26]}.avqs.example.com.", "A",
                1) for _ in range(60)]
    _, chosen, _ = decide(hashes, [math.nan] * len(hashes))
    assert chosen.num_rows == 0


def test_a_long_socket_with_a_data_like_name_is_escalated_and_a_port_reusing_client_is_not():
    tunnel = [(DAY, "10.30.28.90", "10.30.28.94", "AAAAAO1kQA.=auth.srv.tunnel.com.", "TXT", 81)]
    _, chosen, _ = decide(tunnel, [math.nan])
    assert [(r["rule"], r["src_ip"]) for r in chosen.to_pylist()] == [("socket", "10.30.28.90")]
    fixed = [(DAY, "10.30.28.90", f"192.0.2.{k}", f"www.site{k}.example{k}.com.", "A", 40) for k in range(3)]
    _, chosen, _ = decide(tunnel + fixed, [math.nan] * 4)
    assert chosen.num_rows == 0  # the same host keeps long flows of ordinary names in three groups: a fixed port
    _, chosen, _ = decide([(*tunnel[0][:5], 1)], [math.nan])
    assert chosen.num_rows == 0  # one datagram is not a socket kept open


def test_a_session_is_many_new_names_sharing_an_id_and_a_word_is_not_an_id():
    s = EscalateConf()
    beacon = [(DAY, "10.9.9.9", "10.0.0.53", f"f27337b7.{j}.b.telemetry-example.net.", "TXT", 1)
              for j in range(s.session_min_names)]
    _, chosen, flagged = decide(beacon, [math.nan] * len(beacon))
    assert [(r["rule"], r["hits"]) for r in chosen.to_pylist()] == [("session", s.session_min_names)]
    assert flagged.num_rows == s.session_min_names
    _, chosen, _ = decide(beacon[:-1], [math.nan] * (len(beacon) - 1))
    assert chosen.num_rows == 0  # one name too few
    words = [(DAY, "10.9.9.9", "10.0.0.53", f"{j}.trusted.bl-example.org.", "A", 1) for j in range(60)]
    _, chosen, _ = decide(words, [math.nan] * 60)
    assert chosen.num_rows == 0  # "trusted" is a word, not an id
    # The same id in a minority of the client's names in those groups: an ordinary service with a device id.
    others = int(s.session_min_names / s.session_share) - s.session_min_names + 1  # the share just under the bar
    mixed = beacon + [(DAY, "10.9.9.9", "10.0.0.53", f"svc{j}x.telemetry-example.net.", "A", 1)
                      for j in range(others)]
    _, chosen, _ = decide(mixed, [math.nan] * len(mixed))
    assert chosen.num_rows == 0
    # A numeric id (a random hex id with no letter) is an id too; five digits are a counter, not an id.
    numeric = [(DAY, "10.9.9.9", "10.0.0.53", f"91060439.{j}.c.updcheck-example.org.", "TXT", 1)
               for j in range(s.session_min_names)]
    _, chosen, _ = decide(numeric, [math.nan] * len(numeric))
    assert [r["rule"] for r in chosen.to_pylist()] == ["session"]
    counters = [(DAY, "10.9.9.9", "10.0.0.53", f"12345.{j}.c.updcheck-example.org.", "TXT", 1) for j in range(60)]
    _, chosen, _ = decide(counters, [math.nan] * 60)
    assert chosen.num_rows == 0


def test_a_resolvers_minimised_queries_of_a_session_are_flagged_with_it():
    """A resolver with qname minimisation asks '<seq>.b.<domain>' before each '<id>.<seq>.b.<domain>': those
    names carry no id, and are the session's all the same (its client's other new names in that domain)."""
    s = EscalateConf()
    n = s.session_min_names
    rows = [(DAY, "10.0.0.53", "192.0.2.9", name, "TXT", 1) for j in range(n)
            for name in (f"{j}.b.telemetry-example.net.", f"f27337b7.{j}.b.telemetry-example.net.")]
    rows.append((DAY, "10.0.0.53", "192.0.2.10", "www.example.com.", "A", 1))  # another domain: not flagged
    _, chosen, flagged = decide(rows, [math.nan] * len(rows))
    assert [(r["rule"], r["names"]) for r in chosen.to_pylist()] == [("session", 2 * n)]
    assert flagged.num_rows == 2 * n


ODD_ON = EscalateConf(odd=True)


def test_the_odd_rule_fires_on_a_day_the_model_describes_and_goes_quiet_on_one_it_does_not():
    rng = np.random.default_rng(1)
    slow = [(DAY, "10.9.9.9", "10.0.0.53", f"t{j:03d}k9xq2zvm7.c.exfil-example.net.", "A", 1) for j in range(30)]
    rows, loss = background(rng)
    _, chosen, _ = decide(rows + slow, loss + [0.9] * 30, ODD_ON)
    assert {(r["src_ip"], r["group"], r["rule"]) for r in chosen.to_pylist()} == {
        ("10.9.9.9", "z:exfil-example.net", "odd")}
    assert chosen["baseline"][0].as_py() == pytest.approx(max(0.1, (sum(v > ODD for v in loss) + 30) / (1200 + 30)))
    _, chosen, _ = decide(rows + slow, loss + [0.9] * 30)  # the defaults: the odd rule is off
    assert chosen.num_rows == 0
    rows, loss = background(rng, odd_share=0.5)  # a day of another kind: half of everything is odd
    _, chosen, _ = decide(rows + slow, loss + [0.9] * 30, ODD_ON)
    assert chosen.num_rows == 0


def test_odd_names_of_words_or_short_labels_carry_no_data():
    rng = np.random.default_rng(5)
    rows, loss = background(rng)
    for name in ("q{j}.c.exfil-example.net.", "support-{j}-garden-north-hospital.exfil-example.net."):
        slow = [(DAY, "10.9.9.9", "10.0.0.53", name.format(j=j), "A", 1) for j in range(30)]
        _, chosen, _ = decide(rows + slow, loss + [0.9] * 30, ODD_ON)
        assert chosen.num_rows == 0, name


def test_a_shape_group_of_a_domain_flags_its_other_new_data_names_and_a_zone_level_one_does_not():
    s = EscalateConf()
    token = "m" + "x7" * 25
    tunnel = [(DAY, "10.5.5.5", "10.0.0.53", f"{j}{token}.t.tunnel-example.net.", "A", 1) for j in range(10)]
    # Complete names under the same domain: new polls of 10 data bytes, and the name server's name.
    polls = [(DAY, "10.5.5.5", "10.0.0.53", f"pq{j:02d}k7za9b.t.tunnel-example.net.", "TXT", 1) for j in range(5)]
    ns = [(DAY, "10.5.5.5", "10.0.0.53", "ns1.tunnel-example.net.", "A", 1)]
    # The host's other lookups through the same resolver (so its cut-off group links to no one domain).
    other = [(DAY, "10.5.5.5", "10.0.0.53", f"www.site{j}-example.org.", "A", 1) for j in range(3)]
    t, chosen, flagged = decide(tunnel + polls + ns + other, [math.nan] * 19)
    keys = names.describe(t["orig_payload_prefix"], np.full(19, UDP, np.int8)).key
    # The long names are cut off by the prefix (their own group); the polls' group is the registered domain.
    assert "shape" in set(chosen["rule"].to_pylist())
    assert set(flagged["key"].to_pylist()) >= set(keys[:10].tolist())
    assert not set(flagged["key"].to_pylist()) & set(keys[10:].tolist())  # no shape evidence in the domain's group
    shaped_polls = [(DAY, "10.5.5.5", "10.0.0.53", f"p{j}=.{token[:20]}.t.tunnel-example.net.", "TXT", 1)
                    for j in range(s.shape_min_names)]
    t, chosen, flagged = decide(shaped_polls + polls + ns, [math.nan] * (s.shape_min_names + 6))
    keys = names.describe(t["orig_payload_prefix"], np.full(t.num_rows, UDP, np.int8)).key
    assert set(flagged["key"].to_pylist()) == set(keys[: s.shape_min_names + 5].tolist())  # the polls, not ns1


def spread_through_a_resolver(resolver: str, server: str, n: int = 12) -> list[tuple]:
    """A minimising resolver's own queries for a spread exfiltration: '<seq>.p.<domain>' first, then the name with
    its 40-hex fragment, cut off by the prefix, both to the tunnel's server."""
    rows = []
    for j in range(n):
        frag = f"{j:04x}" + "9f3c" * 9
        rows += [(DAY, resolver, server, f"{j}.p.exfil-example.net.", "A", 1),
                 (DAY, resolver, server, f"{frag}.{j}.p.exfil-example.net.", "A", 1)]
    return rows


def test_a_cut_off_group_links_the_names_sent_to_its_server_when_that_server_answers_one_domain():
    s = EscalateConf()
    rows = spread_through_a_resolver("10.0.0.53", "192.0.2.9")
    # The same resolver's names to other servers, and the tunnel domain's apex asked of its parent's server.
    rows += [(DAY, "10.0.0.53", "192.0.2.20", f"www{j}.shop-example.org.", "A", 1) for j in range(5)]
    rows += [(DAY, "10.0.0.53", "192.0.2.30", "p.exfil-example.net.", "NS", 1)]
    t, chosen, flagged = decide(rows, [math.nan] * len(rows), s)
    keys = names.describe(t["orig_payload_prefix"], np.full(t.num_rows, UDP, np.int8)).key
    link = chosen.filter(pc.equal(chosen["group"], "z:exfil-example.net")).to_pylist()
    assert [(r["rule"], r["level"], r["hits"]) for r in link] == [("shape", "client", 12)]
    assert "192.0.2.9" in link[0]["reason"] and "s:192.0.2.9/" in link[0]["reason"]
    assert set(flagged["key"].to_pylist()) == set(keys[:24].tolist())  # both kinds of name, nothing else
    # The per-flow step flags the same flows.
    nm, group, bits = escalate.flow_view(t, np.full(t.num_rows, math.nan), ODD, s)
    eligible = escalate.flow_rules(nm, group, bits, np.ones(t.num_rows, np.int64), s)
    assert set(np.flatnonzero(escalate.match(t, nm.key, group, eligible, flagged) >= 0).tolist()) == set(range(24))


def test_a_hosts_cut_off_group_does_not_link_the_other_names_it_asks_its_resolver():
    s = EscalateConf()
    host = [(d, "10.1.1.7", "10.0.0.53", n.replace("10.0.0.53", "x"), q, p)
            for d, _c, _x, n, q, p in spread_through_a_resolver("10.0.0.53", "10.0.0.53")]
    ordinary = [(DAY, "10.1.1.7", "10.0.0.53", f"{w}.{d}.", "A", 1) for w in ("api", "cdn7", "x9")
                for d in ("shop-example.org", "news-example.de")]
    _t, chosen, flagged = decide(host + ordinary, [math.nan] * (len(host) + len(ordinary)), s)
    assert "shape" in chosen["rule"].to_pylist()
    assert not {g for g in chosen["group"].to_pylist() if not g.startswith("s:")}
    assert set(flagged["group"].to_pylist()) == set(chosen["group"].to_pylist())
    # A quiet host: its long names and one other lookup through the resolver, in one domain but one name.
    cut = [r for r in host if len(r[3]) > 52]
    _t, chosen, _ = decide([*cut, ordinary[0]], [math.nan] * (len(cut) + 1), s)
    assert "shape" in chosen["rule"].to_pylist()
    assert not {g for g in chosen["group"].to_pylist() if not g.startswith("s:")}


@pytest.mark.parametrize("p", [0.05, 0.1, 0.3])
def test_chernoff_bound_is_never_below_the_exact_binomial_tail(p):
    for n in (1, 3, 10, 40, 120):
        for k in range(n + 1):
            exact = sum(math.comb(n, i) * p ** i * (1 - p) ** (n - i) for i in range(k, n + 1))
            assert float(escalate.log10_chernoff(np.array([k]), np.array([n]), p)[0]) >= math.log10(exact) - 1e-9


# ---- Detect's candidates and the per-flow step agree ----------------------------------------------------------

def test_the_flows_a_rule_may_flag_are_exactly_those_the_per_flow_step_flags_in_an_escalated_group():
    s = EscalateConf()
    rng = np.random.default_rng(3)
    rows, loss = background(rng, clients=10)
    token = "k" + "3q" * 25
    tunnel = [(DAY, "10.5.5.5", "10.0.0.53", f"{j}{token}.t.tunnel-example.net.", "NULL", 1) for j in range(12)]
    beacon = [(DAY, "10.9.9.9", "10.0.0.53", f"f27337b7.{j}.b.telemetry-example.net.", "TXT", 1) for j in range(25)]
    repeat = [(DAY, "10.9.9.9", "10.0.0.53", "f27337b7.0.b.telemetry-example.net.", "TXT", 1)] * 3
    all_rows = rows + tunnel + beacon + repeat
    qloss = np.array(loss + [math.nan] * (len(all_rows) - len(loss)))
    t, chosen, flagged = decide(all_rows, qloss, s)
    assert set(chosen["rule"].to_pylist()) >= {"shape", "session"}
    nm, group, bits = escalate.flow_view(t, qloss, ODD, s)
    eligible = escalate.flow_rules(nm, group, bits, np.ones(t.num_rows, np.int64), s)
    which = escalate.match(t, nm.key, group, eligible, flagged)
    flagged_rows = set(np.flatnonzero(which >= 0).tolist())
    tunnel_rows = set(range(len(rows), len(rows) + len(tunnel) + len(beacon)))
    # The beacon's first name was asked four times that day: not new, so never flagged.
    assert flagged_rows == tunnel_rows - {len(rows) + len(tunnel)}
    assert {escalate.RULES[w] for w in which[sorted(flagged_rows)]} == {"shape", "session"}


@pytest.mark.parametrize("over, message", [
    ({"odd_rate": 0.6}, "escalate.odd_rate"),
    ({"odd_min_share": 0.05}, "escalate.odd_min_share"),
    ({"alpha": 0}, "escalate.alpha"),
    ({"session_share": 0}, "escalate.session_share"),
    ({"shape_hex": 0}, "escalate.shape_hex"),
    ({"typo": 1}, "typo"),
])
def test_escalate_settings_are_checked_when_the_configuration_loads(over, message):
    from portprint.conf.config import ConfigError, load_config

    with pytest.raises(ConfigError, match=message):
        load_config("local", overrides={"escalate": over})


def test_the_settings_text_changes_with_any_setting():
    a = escalate.settings_text(EscalateConf())
    assert a == escalate.settings_text(EscalateConf())
    for f in dataclasses.fields(EscalateConf):
        value = getattr(EscalateConf(), f.name)
        other = (not value) if isinstance(value, bool) else value * 2 if value else 1
        assert escalate.settings_text(dataclasses.replace(EscalateConf(), **{f.name: other})) != a, f.name


def test_history_rows_count_distinct_names_and_clients_per_group():
    rows = [(DAY, "10.0.0.1", "10.0.0.53", "a1.cdn.example.com.", "A", 1),
            (DAY, "10.0.0.2", "10.0.0.53", "a1.cdn.example.com.", "AAAA", 1),
            (DAY, "10.0.0.2", "10.0.0.53", "b1.cdn.example.com.", "A", 1),
            ("2026-12-02", "10.0.0.1", "10.0.0.53", "c1.cdn.example.com.", "A", 1)]
    s = EscalateConf()
    t = flows(rows)
    merged = evidence.merge(slice_evidence(t, np.full(4, math.nan), s))
    h = escalate.history_rows(merged, escalate.ESCALATED.empty_table(), s)
    assert {(r["date"], r["group"], r["names"], r["clients"], r["escalated"]) for r in h.to_pylist()} == {
        (DAY, "z:example.com", 2, 2, ""), ("2026-12-02", "z:example.com", 1, 1, "")}
    assert pc.sum(h["data_bytes"]).as_py() == 3 * len("a1" + "cdn")  # declared label bytes, dots aside
