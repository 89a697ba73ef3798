"""Escalate, the pure side: a day of mostly odd, new names between two hosts is a tunnel (detector qname-pair).

Called by udfs/detect.py (per slice of flows: a Spark task, or a plain process), by jobs/engine/escalate.py (the
driver's decision and the per-pair judgement on Spark) and by the benchmark's plain pass.

Per name, the question model cannot tell every tunnel query from an odd but genuine name: an iodine poll looks
like a CDN label. What no genuine client does is send a day of mostly odd, never-repeated names to one server.
So names are also judged together, per (date, client, server):

- a name is *odd* when its question-model loss is above the held-out ``1 - odd_rate`` quantile (training stores
  that loss as ``odd_threshold``), so a pair of genuine DNS has about ``odd_rate`` of its distinct names odd;
- a pair is *escalated* when at least ``min_share`` of its distinct judged names are odd and that many would be
  unlikely by chance: P(X >= odd) <= alpha / pairs that day, X ~ Binomial(names, odd_rate), bounded from above
  by Chernoff's bound (so the test is, if anything, conservative);
- in an escalated pair, a judged flow is flagged when its name is odd or asked only once that day.

Evidence is exact however the work is sliced: each slice sends, per pair, the sorted set of its distinct judged
name keys (and the odd subset) as packed uint64 bytes, and the driver counts the union. Two slices that saw
the same name count it once.
"""

from __future__ import annotations

import datetime as dt
import itertools
import math
from collections.abc import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from portprint.conf.config import Config
from portprint.models.artifact import ModelArtifact
from portprint.udfs import suppress
from portprint.udfs.schemas import ANOMALY, FLOW_COLUMNS, OUT, RULE, SUPPRESSED, SUPPRESSED_N, as_out
from portprint.udfs.scoring import QNAME_PAIR, Verdicts, anomaly_table, cached_scorer
from portprint.udfs.suppress import Rule

PAIR = ("date", "src_ip", "dst_ip")
_PAIR_FIELDS = [("date", pa.string()), ("src_ip", pa.string()), ("dst_ip", pa.string())]
# One slice's evidence about one pair: its distinct judged names and the odd ones (sorted uint64, little-endian),
# and whether the slice kept the pair's judged flows as candidates (so the pair need not be read again).
EVIDENCE = pa.schema([*_PAIR_FIELDS, ("names", pa.binary()), ("odd", pa.binary()), ("kept", pa.bool_())])
# A pair's day: distinct judged names, distinct odd names, whether every slice that saw it kept its flows, and
# how many pairs the day has (for Bonferroni).
TOTALS = pa.schema([*_PAIR_FIELDS, ("names", pa.int64()), ("odd", pa.int64()), ("covered", pa.bool_()),
                    ("pairs_that_day", pa.int64())])
ESCALATED = pa.schema([*TOTALS, ("log10_p", pa.float64())])
_DISTINCT = pa.schema([*_PAIR_FIELDS, ("key", pa.uint64()), ("odd", pa.bool_())])


def distinct_names(date: pa.Array, src: pa.Array, dst: pa.Array, keys: np.ndarray, qloss: np.ndarray,
                   odd_threshold: float) -> pa.Table:
    """The distinct judged names of these flows per pair (pair, key, odd). ``qloss`` is NaN where the question
    model does not judge the flow. A name's loss depends only on its bytes, so "odd" is the same for every flow
    of one name."""
    judged = ~np.isnan(qloss)
    with np.errstate(invalid="ignore"):
        odd = qloss > odd_threshold
    t = pa.table({"date": date, "src_ip": src, "dst_ip": dst, "key": pa.array(np.asarray(keys, np.uint64)),
                  "odd": pa.array(odd)}).cast(_DISTINCT).filter(pa.array(judged))
    if t.num_rows == 0:
        return _DISTINCT.empty_table()
    return t.group_by([*PAIR, "key"], use_threads=False).aggregate([("odd", "max")]).rename_columns(
        _DISTINCT.names).cast(_DISTINCT)


def suspect_pairs(distinct: pa.Table, min_share: float) -> pa.Table:
    """Per pair of some DISTINCT rows: ``suspect`` when at least one name and at least ``min_share`` of them are
    odd; a slice keeps a suspect pair's judged flows as candidates."""
    if distinct.num_rows == 0:
        return pa.table({**{c: pa.array([], pa.string()) for c in PAIR}, "suspect": pa.array([], pa.bool_())})
    t = distinct.append_column("odd_n", pc.cast(distinct["odd"], pa.int64()))
    g = t.group_by(list(PAIR), use_threads=False).aggregate([("key", "count"), ("odd_n", "sum")])
    names, odd = g["key_count"].to_numpy(), g["odd_n_sum"].to_numpy()
    return g.select(list(PAIR)).append_column("suspect", pa.array((odd >= 1) & (odd >= min_share * names)))


def _pack(keys: np.ndarray) -> bytes:
    return np.unique(np.asarray(keys, np.uint64)).astype("<u8").tobytes()


def _pack_lists(lists: pa.ChunkedArray) -> list[bytes]:
    """Each list of uint64 keys (nulls dropped) as its sorted distinct keys' packed bytes."""
    arr = lists.combine_chunks()
    offsets = arr.offsets.to_numpy()
    values = arr.values
    valid = values.is_valid().to_numpy(zero_copy_only=False)
    flat = pc.fill_null(values, 0).to_numpy()
    return [_pack(flat[a:b][valid[a:b]]) for a, b in itertools.pairwise(offsets)]


def _unpack(blob: bytes | None) -> np.ndarray:
    return np.frombuffer(blob or b"", "<u8")


def slice_evidence(pieces: list[pa.Table], kept: list[pa.Table]) -> pa.Table:
    """EVIDENCE rows of one slice from its batches' DISTINCT tables and their ``suspect_pairs``: a pair is
    ``kept`` when every batch that saw it kept its flows."""
    distinct = pa.concat_tables(pieces) if pieces else _DISTINCT.empty_table()
    if distinct.num_rows == 0:
        return EVIDENCE.empty_table()
    odd_keys = pc.if_else(distinct["odd"], distinct["key"], pa.nulls(distinct.num_rows, pa.uint64()))
    g = (distinct.append_column("odd_key", odd_keys).group_by(list(PAIR), use_threads=False)
         .aggregate([("key", "list"), ("odd_key", "list")]))
    packed = {"names": _pack_lists(g["key_list"]), "odd": _pack_lists(g["odd_key_list"])}
    ev = g.select(list(PAIR)).append_column("names", pa.array(packed["names"], pa.binary())).append_column(
        "odd", pa.array(packed["odd"], pa.binary()))
    all_kept = (pa.concat_tables(kept).group_by(list(PAIR), use_threads=False).aggregate([("suspect", "min")])
                .rename_columns([*PAIR, "kept"]))
    ev = ev.join(all_kept, list(PAIR), use_threads=False)
    ev = ev.set_column(ev.schema.get_field_index("kept"), "kept", pc.fill_null(ev["kept"], False))
    return ev.select(EVIDENCE.names).cast(EVIDENCE)


def merge(evidence: pa.Table) -> pa.Table:
    """TOTALS of a day's EVIDENCE rows from any number of slices: names and odd names counted distinct over the
    union of the slices' sets (exact, however the flows were sliced)."""
    if evidence.num_rows == 0:
        return TOTALS.empty_table()
    g = evidence.group_by(list(PAIR), use_threads=False).aggregate(
        [("names", "list"), ("odd", "list"), ("kept", "min")])

    def distinct(blobs: list[list[bytes]]) -> list[int]:
        return [len(np.unique(np.concatenate([_unpack(b) for b in v]))) for v in blobs]

    t = g.select(list(PAIR)).append_column("names", pa.array(distinct(g["names_list"].to_pylist()), pa.int64()))
    t = t.append_column("odd", pa.array(distinct(g["odd_list"].to_pylist()), pa.int64()))
    t = t.append_column("covered", g["kept_min"])
    per_day = t.group_by(["date"], use_threads=False).aggregate([("names", "count")]).rename_columns(
        ["date", "pairs_that_day"])
    return t.join(per_day, ["date"], use_threads=False).select(TOTALS.names).cast(TOTALS)


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


def decide(t: pa.Table, odd_rate: float, min_share: float, alpha: float) -> pa.Table:
    """The escalated pairs (ESCALATED) among TOTALS rows."""
    if t.num_rows == 0:
        return ESCALATED.empty_table()
    n, k = t["names"].to_numpy(), t["odd"].to_numpy()
    lp = log10_chernoff(k, n, odd_rate)
    # Bonferroni: a day with many pairs gets a stricter bound per pair.
    limit = np.log10(alpha / np.maximum(t["pairs_that_day"].to_numpy(), 1))
    hit = (k >= min_share * n) & (n > 0) & (lp <= limit)
    out = t.append_column("log10_p", pa.array(lp)).filter(pa.array(hit))
    return out.select(ESCALATED.names).cast(ESCALATED)


def flags(date: pa.Array, src: pa.Array, dst: pa.Array, keys: np.ndarray, qloss: np.ndarray,
          odd_threshold: float, escalated: pa.Table) -> np.ndarray:
    """Per flow: in an escalated pair, judged, and its name odd or asked once that day (in these flows, which
    must hold the pairs' whole day)."""
    n = len(qloss)
    if n == 0 or escalated.num_rows == 0:
        return np.zeros(n, bool)
    t = pa.table({"date": date, "src_ip": src, "dst_ip": dst}).cast(pa.schema(_PAIR_FIELDS))
    t = t.append_column("row", pa.array(np.arange(n, dtype=np.int64)))
    inside = t.join(escalated.select(list(PAIR)), list(PAIR), join_type="inner", use_threads=False)["row"].to_numpy()
    out = np.zeros(n, bool)
    sub = np.zeros(n, bool)
    sub[inside] = True
    sub &= ~np.isnan(qloss)
    rows = np.flatnonzero(sub)
    if len(rows) == 0:
        return out
    key_t = pa.table({"date": pc.take(t["date"], rows), "src_ip": pc.take(t["src_ip"], rows),
                      "dst_ip": pc.take(t["dst_ip"], rows), "key": pa.array(np.asarray(keys, np.uint64)[rows]),
                      "row": pa.array(rows)})
    counts = key_t.group_by([*PAIR, "key"], use_threads=False).aggregate([("row", "count")])
    once = key_t.join(counts, [*PAIR, "key"], use_threads=False)
    once_rows = once["row"].to_numpy()[once["row_count"].to_numpy() == 1]
    with np.errstate(invalid="ignore"):
        out[rows] = qloss[rows] > odd_threshold
    out[once_rows] = True
    return out


def judge(rows: pa.Table, art: ModelArtifact, cfg: Config, run_id: str, scored_at_us: int,
          rules: Sequence[Rule] = ()) -> pa.Table:
    """The per-pair step: escalated pairs' flows of whole days (FLOW_COLUMNS, any number of pairs) in; as OUT
    anomaly rows (detector qname-pair), those no per-flow detector flagged whose name is odd or asked once, less
    what a suppression rule keeps out (SUPPRESSED rows count those)."""
    if rows.num_rows == 0:
        return OUT.empty_table()
    scorer = cached_scorer(art, cfg.spark.torch_threads_per_task)
    rows = rows.select(list(FLOW_COLUMNS))
    prefix = rows["orig_payload_prefix"].combine_chunks()
    proto, orig = rows["proto"].combine_chunks(), rows["orig_bytes"].combine_chunks()
    v = scorer.score(prefix, proto, orig)
    pairs = rows.select(list(PAIR)).group_by(list(PAIR), use_threads=False).aggregate([])
    hit = np.flatnonzero(flags(rows["date"], rows["src_ip"], rows["dst_ip"], v.qkey, v.qloss,
                               float(art.meta.qname["odd_threshold"]), pairs) & (v.detector == 0))
    if len(hit) == 0:
        return OUT.empty_table()
    idx = pa.array(hit)
    verdicts = Verdicts(v.loss[hit], v.reason[hit], v.qloss[hit], np.full(len(hit), QNAME_PAIR, np.int8))
    found = scorer.explain(prefix.take(idx), pc.take(proto, idx), pc.take(orig, idx), cfg.output.top_bytes, verdicts)
    table = anomaly_table(rows.take(idx), found, art.meta, cfg.scope.ports, run_id, scored_at_us)
    table, gone, _ = suppress.apply(table, rules, dt.datetime.fromtimestamp(scored_at_us / 1e6, dt.timezone.utc))
    gone = gone.rename_columns(["date", RULE, SUPPRESSED_N])
    return pa.Table.from_batches([*as_out(table, ANOMALY), *as_out(gone, SUPPRESSED)], schema=OUT)
