"""Pair escalation (udfs/escalate.py) without Spark: its statistics against plain-Python references."""

from __future__ import annotations

import collections
import math

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from portprint.udfs import escalate as pairs

ODD = 0.5  # odd threshold on the synthetic losses below


def _exact_log10_sf(k: int, n: int, p: float) -> float:
    """log10 P(X >= k), X ~ Binomial(n, p), summed with exact integers (math.comb)."""
    total = sum(math.comb(n, i) * p**i * (1 - p) ** (n - i) for i in range(k, n + 1))
    return math.log10(total) if total > 0 else -math.inf


@pytest.mark.parametrize("p", [0.05, 0.1, 0.3])
def test_chernoff_bound_is_never_below_the_exact_binomial_tail(p):
    for n in (1, 2, 5, 13, 40, 120):
        for k in range(n + 1):
            bound = float(pairs.log10_chernoff(np.array([k]), np.array([n]), p)[0])
            assert bound >= _exact_log10_sf(k, n, p) - 1e-9, (k, n, p)
            assert bound <= 0.0
    # And it is not vacuous: 20 odd names out of 20 at p = 0.1 is below 1e-19.
    assert pairs.log10_chernoff(np.array([20]), np.array([20]), 0.1)[0] < -19


def _flows(rows: list[tuple[str, str, str, int, float]]):
    date, src, dst, key, loss = zip(*rows, strict=True)
    return (pa.array(date), pa.array(src), pa.array(dst), np.array(key, dtype=np.uint64),
            np.array(loss, dtype=np.float64))


flow = st.tuples(st.sampled_from(["2026-11-01", "2026-11-02"]), st.sampled_from(["10.0.0.1", "10.0.0.2"]),
                 st.sampled_from(["10.0.0.53", "203.0.113.9"]), st.integers(0, 12),
                 st.sampled_from([0.1, 0.9, math.nan]))


def _evidence(rows):
    """One slice's EVIDENCE rows, from its flows in two batches (a task's batches)."""
    half = len(rows) // 2
    pieces = [pairs.distinct_names(*_flows(part), ODD) for part in (rows[:half], rows[half:]) if part]
    return pairs.slice_evidence(pieces, [pairs.suspect_pairs(p, 0.5) for p in pieces])


@settings(max_examples=60, deadline=None)
@given(st.lists(flow, min_size=1, max_size=60), st.integers(1, 59), st.integers(1, 4))
def test_totals_count_distinct_judged_names_per_pair_however_the_flows_are_sliced(rows, cut, slices):
    # A name's loss follows from its key, as in the scorer.
    rows = [(d, s, t, k, [0.1, 0.9, math.nan][k % 3]) for d, s, t, k, _ in rows]
    want_names, want_odd = collections.defaultdict(set), collections.defaultdict(set)
    for d, s, t, k, loss in rows:
        if not math.isnan(loss):
            want_names[(d, s, t)].add(k)
            if loss > ODD:
                want_odd[(d, s, t)].add(k)
    want = {p: (len(v), len(want_odd[p])) for p, v in want_names.items()}
    # Any slicing: one slice, or the rows dealt round-robin to several (a name seen by several slices counts once).
    for parts in ([rows], [rows[i::slices] for i in range(slices)], [rows[:cut], rows[cut:]]):
        ev = pa.concat_tables([_evidence(p) for p in parts if p])
        total = pairs.merge(ev)
        got = {(r["date"], r["src_ip"], r["dst_ip"]): (r["names"], r["odd"]) for r in total.to_pylist()}
        assert got == want
        assert all(r["pairs_that_day"] == sum(p[0] == r["date"] for p in want) for r in total.to_pylist())


def test_a_pair_is_covered_only_when_every_slice_kept_its_flows():
    mostly_odd = [("d", "h", "ns", k, 0.9) for k in range(10)]
    mostly_plain = [("d", "h", "ns", k, 0.1) for k in range(10, 30)]
    both = pa.concat_tables([_evidence(mostly_odd), _evidence(mostly_odd[:3])])
    assert pairs.merge(both)["covered"].to_pylist() == [True]
    mixed = pa.concat_tables([_evidence(mostly_odd), _evidence(mostly_plain)])
    assert pairs.merge(mixed)["covered"].to_pylist() == [False]


def _day(rng: np.random.Generator, genuine_pairs: int, tunnel_names: int) -> list[tuple[str, str, str, int, float]]:
    """Genuine pairs whose names are odd with probability 0.1, and one tunnel pair of new odd names."""
    rows = []
    key = 0
    for i in range(genuine_pairs):
        for _ in range(int(rng.integers(5, 200))):
            key += 1
            loss = 0.9 if rng.random() < 0.1 else 0.1
            rows += [("2026-11-01", f"10.1.{i // 250}.{i % 250}", "10.0.0.53", key, loss)] * int(rng.integers(1, 4))
    for _ in range(tunnel_names):
        key += 1
        rows.append(("2026-11-01", "10.9.9.9", "198.51.100.7", key, 0.9 if rng.random() < 0.8 else 0.2))
    return rows


def test_a_tunnel_pair_is_escalated_and_genuine_pairs_are_not():
    rng = np.random.default_rng(7)
    rows = _day(rng, genuine_pairs=400, tunnel_names=60)
    chosen = pairs.decide(pairs.merge(_evidence(rows)), 0.1, 0.5, 0.01)
    assert [(r["src_ip"], r["dst_ip"]) for r in chosen.to_pylist()] == [("10.9.9.9", "198.51.100.7")]


def test_escalation_needs_both_the_share_and_the_significance():
    t = pa.table({"date": ["d"] * 3, "src_ip": ["a", "b", "c"], "dst_ip": ["x"] * 3,
                  "names": [2, 1000, 10], "odd": [2, 300, 10], "covered": [True] * 3,
                  "pairs_that_day": [3, 3, 3]}).cast(pairs.TOTALS)
    got = pairs.decide(t, 0.1, 0.5, 0.01)
    # a: all odd, but two names could be chance; b: significant but 30% odd (a busy resolver); c: both.
    assert got["src_ip"].to_pylist() == ["c"]
    # A stricter share bar or a day with far more pairs (Bonferroni) lets c pass no more.
    assert pairs.decide(t, 0.1, 1.01, 0.01).num_rows == 0
    many = t.set_column(t.schema.get_field_index("pairs_that_day"), "pairs_that_day", pa.array([10**9] * 3))
    assert pairs.decide(many, 0.1, 0.5, 0.01).num_rows == 0


def test_in_an_escalated_pair_odd_and_once_asked_names_are_flagged():
    rows = [
        ("d", "h", "ns", 1, 0.9), ("d", "h", "ns", 1, 0.9),  # odd, asked twice: flagged both times
        ("d", "h", "ns", 2, 0.1),                            # ordinary, asked once: new data, flagged
        ("d", "h", "ns", 3, 0.1), ("d", "h", "ns", 3, 0.1),  # ordinary and repeated (the NS lookup): not
        ("d", "h", "ns", 4, math.nan),                       # not judged: not
        ("d", "other", "ns", 5, 0.9),                        # odd, but not an escalated pair: not
        ("e", "h", "ns", 6, 0.9),                            # the same hosts on another date: not
    ]
    chosen = pa.table({"date": ["d"], "src_ip": ["h"], "dst_ip": ["ns"]})
    got = pairs.flags(*_flows(rows), ODD, chosen)
    assert got.tolist() == [True, True, True, False, False, False, False, False]
    assert not pairs.flags(*_flows(rows), ODD, chosen.slice(0, 0)).any()


@pytest.mark.parametrize("pairs_conf, message", [
    ({"odd_rate": 0.6}, "pairs.odd_rate"),
    ({"min_share": 0.05}, "pairs.min_share"),
    ({"alpha": 0}, "pairs.alpha"),
    ({"typo": 1}, "typo"),
])
def test_pair_settings_are_checked_when_the_configuration_loads(pairs_conf, message):
    from portprint.conf.config import ConfigError, load_config

    with pytest.raises(ConfigError, match=message):
        load_config("local", overrides={"pairs": pairs_conf})
