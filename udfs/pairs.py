"""Pair escalation: a tunnel is many new names between the same two hosts in one day.

Per name, the question model cannot tell every tunnel query from an odd but genuine name: an iodine
poll (``paaam0xa.t.example``) looks like a CDN label, and a 48-hex object-store label looks like hex
exfiltration. What no genuine client does is send a day of mostly odd, never-repeated names to one
server. So the names are also judged together, per (date, client, server):

- a name is *odd* when its question-model loss is above the held-out ``1 - odd_rate`` quantile
  (training stores that loss as ``odd_threshold``), so a pair of genuine DNS has about ``odd_rate``
  of its distinct names odd;
- a pair is *escalated* when at least ``min_share`` of its distinct judged names are odd and that
  many odd names would be unlikely by chance: P(X >= odd) <= alpha / pairs that day, X ~ Binomial(names,
  odd_rate), bounded from above by Chernoff's bound (so the test is, if anything, conservative);
- in an escalated pair, a judged flow is flagged (detector ``qname-pair``) when its name is odd or
  asked only once that day: a tunnel carries new data in every query, while the resolver's own
  lookups of the tunnel's name server repeat.

The pair is the flow's two addresses: at a perimeter sensor that is (resolver, authoritative server),
and a tunnel's authoritative server is the tunnel's own; inside, (client, resolver). Query names cut off
by the stored prefix have no visible parent domain, so the server stands in for it.

All functions here are plain pyarrow/numpy, used by Spark's workers, ``evaluate`` and the benchmark's
plain pass alike.
"""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

PAIR = ("date", "src_ip", "dst_ip")
# Evidence of one slice of flows (a Spark task): per pair, its distinct judged names; and its odd names.
NAMES = pa.schema([("date", pa.string()), ("src_ip", pa.string()), ("dst_ip", pa.string()), ("names", pa.int64())])
ODD = pa.schema([("date", pa.string()), ("src_ip", pa.string()), ("dst_ip", pa.string()), ("key", pa.int64())])
ESCALATED = pa.schema([*NAMES, ("odd", pa.int64()), ("log10_p", pa.float64())])


def _keys(keys: np.ndarray) -> pa.Array:
    # Arrow and Spark have no unsigned 64-bit column that survives every engine: the same bits as int64.
    return pa.array(np.ascontiguousarray(keys, dtype=np.uint64).view(np.int64))


DISTINCT = pa.schema([*ODD, ("odd", pa.bool_())])


def distinct_names(date: pa.Array, src: pa.Array, dst: pa.Array, keys: np.ndarray, qloss: np.ndarray,
                   odd_threshold: float) -> pa.Table:
    """The distinct judged names of these flows per pair (DISTINCT: pair, key, odd). ``qloss`` is NaN
    where the question model does not judge the flow."""
    judged = ~np.isnan(qloss)
    with np.errstate(invalid="ignore"):
        odd = qloss > odd_threshold
    t = pa.table({"date": date, "src_ip": src, "dst_ip": dst, "key": _keys(keys), "odd": pa.array(odd)})
    return _dedup(t.filter(pa.array(judged)).cast(DISTINCT))


def _dedup(t: pa.Table) -> pa.Table:
    # A name's loss depends only on its bytes, so "odd" is the same for every flow of a name.
    if t.num_rows == 0:
        return DISTINCT.empty_table()
    out = t.group_by([*PAIR, "key"], use_threads=False).aggregate([("odd", "max")])
    return out.rename_columns(DISTINCT.names).cast(DISTINCT)


def summarize(pieces: list[pa.Table]) -> tuple[pa.Table, pa.Table]:
    """Evidence of one slice of flows from its DISTINCT pieces: per pair, the number of distinct judged
    names (NAMES), and the distinct odd names themselves (ODD)."""
    distinct = _dedup(pa.concat_tables(pieces)) if pieces else DISTINCT.empty_table()
    if distinct.num_rows == 0:
        return NAMES.empty_table(), ODD.empty_table()
    names = distinct.group_by(list(PAIR), use_threads=False).aggregate([("key", "count")])
    names = names.rename_columns([*PAIR, "names"]).select(NAMES.names).cast(NAMES)
    return names, distinct.filter(pc.field("odd")).select(ODD.names).cast(ODD)


def slice_counts(distinct: pa.Table, min_share: float) -> pa.Table:
    """Per pair of one slice's DISTINCT names: ``names``, ``odd`` and ``suspect`` (at least one odd name and
    at least ``min_share`` of them): whether the slice keeps the pair's flows as candidates."""
    if distinct.num_rows == 0:
        return pa.table({**{c: pa.array([], pa.string()) for c in PAIR}, "names": pa.array([], pa.int64()),
                         "odd": pa.array([], pa.int64()), "suspect": pa.array([], pa.bool_())})
    t = distinct.append_column("odd_n", pc.cast(distinct["odd"], pa.int64()))
    g = t.group_by(list(PAIR), use_threads=False).aggregate([("key", "count"), ("odd_n", "sum")])
    g = g.rename_columns([*PAIR, "names", "odd"])
    names, odd = g["names"].to_numpy(), g["odd"].to_numpy()
    return g.append_column("suspect", pa.array((odd >= 1) & (odd >= min_share * names)))


def evidence(date: pa.Array, src: pa.Array, dst: pa.Array, keys: np.ndarray, qloss: np.ndarray,
             odd_threshold: float) -> tuple[pa.Table, pa.Table]:
    """NAMES and ODD evidence of these flows (``summarize`` of one piece)."""
    return summarize([distinct_names(date, src, dst, keys, qloss, odd_threshold)])


def log10_chernoff(odd: np.ndarray, names: np.ndarray, rate: float) -> np.ndarray:
    """log10 of Chernoff's upper bound on P(X >= odd), X ~ Binomial(names, rate): exp(-n KL(odd/n || rate))
    when odd/n > rate, else 1. An upper bound on the p-value: escalation never fires more often than an
    exact binomial test would."""
    n = np.asarray(names, dtype=np.float64)
    k = np.asarray(odd, dtype=np.float64)
    share = np.divide(k, n, out=np.zeros_like(k), where=n > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        kl = np.where(share > 0, share * np.log(share / rate), 0.0) + np.where(
            share < 1, (1 - share) * np.log((1 - share) / (1 - rate)), 0.0)
    return np.where(share > rate, -n * kl / math.log(10), 0.0)


TOTALS = pa.schema([*NAMES, ("odd", pa.int64()), ("pairs_that_day", pa.int64())])


def totals(names: pa.Table, odd: pa.Table) -> pa.Table:
    """Per pair (TOTALS): NAMES rows summed (a name seen by several slices counts once per slice, which
    only lowers a pair's odd share), ODD rows counted distinct, and how many pairs the day has."""
    if names.num_rows == 0:
        return TOTALS.empty_table()
    total = names.group_by(list(PAIR), use_threads=False).aggregate([("names", "sum")])
    total = total.rename_columns([*PAIR, "names"])
    odd_n = (odd.group_by(list(PAIR), use_threads=False).aggregate([("key", "count_distinct")])
             .rename_columns([*PAIR, "odd"]))
    t = total.join(odd_n, list(PAIR), join_type="left outer", use_threads=False)
    t = t.set_column(t.schema.get_field_index("odd"), "odd", pc.fill_null(t["odd"], 0))
    per_date = t.group_by(["date"], use_threads=False).aggregate([("names", "count")])
    t = t.join(per_date.rename_columns(["date", "pairs_that_day"]), ["date"], use_threads=False)
    return t.select(TOTALS.names).cast(TOTALS)


def escalate(t: pa.Table, odd_rate: float, min_share: float, alpha: float) -> pa.Table:
    """The escalated pairs (ESCALATED) among TOTALS rows."""
    if t.num_rows == 0:
        return ESCALATED.empty_table()
    n, k = t["names"].to_numpy(), t["odd"].to_numpy()
    # The odd names can exceed the per-slice name sum only if hashes collide; the share is capped at 1.
    k = np.minimum(k, n)
    lp = log10_chernoff(k, n, odd_rate)
    # Bonferroni: a day with many pairs gets a stricter bound per pair.
    limit = np.log10(alpha / np.maximum(t["pairs_that_day"].to_numpy(), 1))
    hit = (k >= min_share * n) & (n > 0) & (lp <= limit)
    out = t.append_column("log10_p", pa.array(lp)).filter(pa.array(hit))
    return out.select(ESCALATED.names).cast(ESCALATED)


def pair_flags(date: pa.Array, src: pa.Array, dst: pa.Array, keys: np.ndarray, qloss: np.ndarray,
               odd_threshold: float, escalated: pa.Table) -> np.ndarray:
    """Per flow: in an escalated pair, judged, and its name odd or asked once that day (in these flows,
    which must hold the pairs' whole day)."""
    n = len(qloss)
    if n == 0 or escalated.num_rows == 0:
        return np.zeros(n, bool)
    t = pa.table({"date": date, "src_ip": src, "dst_ip": dst}).cast(pa.schema(list(ODD)[:3]))
    t = t.append_column("row", pa.array(np.arange(n, dtype=np.int64)))
    inside = t.join(escalated.select(list(PAIR)), list(PAIR), join_type="inner", use_threads=False)["row"].to_numpy()
    flags = np.zeros(n, bool)
    if len(inside) == 0:
        return flags
    sub = np.zeros(n, bool)
    sub[inside] = True
    sub &= ~np.isnan(qloss)
    rows = np.flatnonzero(sub)
    if len(rows) == 0:
        return flags
    key_t = pa.table({"date": pc.take(t["date"], rows), "src_ip": pc.take(t["src_ip"], rows),
                      "dst_ip": pc.take(t["dst_ip"], rows), "key": _keys(np.asarray(keys)[rows]),
                      "row": pa.array(rows)})
    counts = key_t.group_by([*PAIR, "key"], use_threads=False).aggregate([("row", "count")])
    once = key_t.join(counts, [*PAIR, "key"], use_threads=False)
    once_rows = once["row"].to_numpy()[once["row_count"].to_numpy() == 1]
    with np.errstate(invalid="ignore"):
        flags[rows] = qloss[rows] > odd_threshold
    flags[once_rows] = True
    return flags
