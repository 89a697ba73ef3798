"""Detect: a slice of in-scope flows in (Arrow), its anomalies, per-date counts and the pairs' evidence out.

The one function every path runs: Spark tasks of `score` and `evaluate` (through jobs/engine/), and the
benchmark's plain pass in one process. A Source (jobs/archive/) hands it Arrow tables of in-scope flows
(``FLOWS_IN``); it keeps those with a payload, scores them (udfs/scoring.py), explains the flagged ones and
collects the evidence pair escalation needs (udfs/escalate.py). Its output rows (``OUT``) are told apart by
``_kind``: anomalies as they are found, then the slice's counts and evidence when the slice ends.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Callable, Iterator, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from portprint.conf.config import Config, ScopeConf
from portprint.models.artifact import ModelArtifact
from portprint.udfs import escalate, suppress
from portprint.udfs.header_rule import REASONS
from portprint.udfs.schemas import (
    ANOMALY,
    CANDIDATE,
    COUNT_FIELDS,
    COUNTS,
    EVIDENCE,
    FIRED,
    FLOW_COLUMNS,
    ORIG_BYTES,
    PREFIX,
    RULE,
    SCORES,
    SUPPRESSED,
    SUPPRESSED_N,
    as_out,
)
from portprint.udfs.scoring import DETECTORS, anomaly_table, cached_scorer
from portprint.udfs.suppress import Rule


def in_scope(t: pa.Table, scope: ScopeConf) -> pa.Array:
    """Which flows are scored: protocol in scope and a scope port on the configured side(s). Spark's reader
    pushes the same rule down as a filter (jobs/archive/spark.py ``scope_condition``; a test holds them equal)."""
    ports, protos = pa.array(scope.ports, pa.int32()), pa.array(scope.protocols, pa.int32())
    responder = pc.is_in(t["dst_port"].cast(pa.int32()), value_set=ports)
    initiator = pc.is_in(t["src_port"].cast(pa.int32()), value_set=ports)
    side = {"responder": responder, "initiator": initiator, "either": pc.or_(responder, initiator)}[scope.match]
    return pc.fill_null(pc.and_(pc.is_in(t["proto"].cast(pa.int32()), value_set=protos), side), False)


def has_payload(prefix: pa.Array | pa.ChunkedArray) -> pa.Array:
    """A flow has something to judge when its stored prefix is at least one byte."""
    return pc.fill_null(pc.greater(pc.binary_length(prefix), 0), False)


def pairs_on(art: ModelArtifact, cfg: Config) -> bool:
    """Pair escalation needs a question model trained with an odd threshold (models before it lack one)."""
    return cfg.pairs.enabled and art.has_qname and "odd_threshold" in art.meta.qname


class Detector:
    """One slice's detection (a Spark task, or a plain process): ``flows`` per Arrow table as it comes,
    ``finish`` once at the end. With ``scores``, every scored flow's losses come out too (``evaluate``)."""

    def __init__(self, art: ModelArtifact, cfg: Config, run_id: str, scored_at_us: int, *,
                 scores: bool = False, rules: Sequence[Rule] = ()) -> None:
        self.scorer = cached_scorer(art, cfg.spark.torch_threads_per_task)
        self.art, self.ports, self.top = art, cfg.scope.ports, cfg.output.top_bytes
        self.run_id, self.scored_at_us, self.scores = run_id, scored_at_us, scores
        self.pairs = pairs_on(art, cfg)
        self.odd = float(art.meta.qname.get("odd_threshold", "nan")) if self.pairs else math.nan
        self.min_share = cfg.pairs.min_share
        self.counts: dict[str, np.ndarray] = {}  # date -> COUNT_FIELDS
        self.pieces: list[pa.Table] = []  # the distinct judged names of each table seen
        self.kept: list[pa.Table] = []  # per pair and table: were its judged flows kept as candidates?
        # Suppression rules in force when the run started (udfs/suppress.py): matching anomalies are counted per
        # date and rule, never written.
        self.rules, self.suppressed = list(rules), []
        self.at = dt.datetime.fromtimestamp(scored_at_us / 1e6, dt.timezone.utc)

    def _count(self, dates: pa.Array, **columns: np.ndarray) -> None:
        names = np.asarray(dates.to_numpy(zero_copy_only=False), dtype=object)
        for d in np.unique(names):
            sel = names == d
            row = self.counts.setdefault(d, np.zeros(len(COUNT_FIELDS), np.int64))
            for i, field in enumerate(COUNT_FIELDS):
                if field in columns:
                    row[i] += int(np.asarray(columns[field])[sel].sum())

    def flows(self, t: pa.Table) -> Iterator[pa.RecordBatch]:
        """Detect in one table of in-scope flows (FLOW_COLUMNS); yield its anomalies (and candidates, scores)."""
        if t.num_rows == 0:
            return
        payload = has_payload(t["orig_payload_prefix"]).to_numpy(zero_copy_only=False)
        self._count(t["date"], _scoped=np.ones(t.num_rows, np.int64), _skipped=~payload)
        rows = t.filter(pa.array(payload)).select(list(FLOW_COLUMNS))
        if rows.num_rows == 0:
            return
        prefix = rows["orig_payload_prefix"].combine_chunks()
        proto, orig = rows["proto"].combine_chunks(), rows["orig_bytes"].combine_chunks()
        v = self.scorer.score(prefix, proto, orig)
        rule, model, qmodel = self.scorer.fired(v.loss, v.reason, v.qloss)
        if self.scores:
            yield from as_out(rows.select(["flow_id", "date", "src_ip", "dst_ip"]).append_column(
                "loss", pa.array(v.loss)).append_column(
                "qname_loss", pa.array(v.qloss, mask=np.isnan(v.qloss))).append_column(
                "header_reason", pa.array(np.asarray(REASONS, dtype=object)[v.reason], pa.string())).append_column(
                "detector", pa.array(np.asarray(DETECTORS, dtype=object)[v.detector], pa.string())).append_column(
                FIRED, pa.array(rule * 1 + model * 2 + qmodel * 4, pa.int64())), SCORES)
        if self.pairs:
            yield from self._evidence(rows, v.qkey, v.qloss)
        flagged = v.detector > 0
        found = self.scorer.detect(prefix, proto, orig, self.top, v)
        table = anomaly_table(rows.filter(pa.array(flagged)), found.filter(pa.array(flagged)), self.art.meta,
                              self.ports, self.run_id, self.scored_at_us) if flagged.any() else None
        kept = flagged
        if table is not None and self.rules:
            table, gone, keep = suppress.apply(table, self.rules, self.at)
            self.suppressed.append(gone)
            kept = flagged.copy()
            kept[np.flatnonzero(flagged)[~keep]] = False
        # The day's tallies count what `anomalies` gets: flagged and not suppressed.
        self._count(rows["date"], _rule=kept & (v.detector == 1), _model=kept & model,
                    _qname=kept & (v.detector == 3), _flagged=kept)
        if table is not None:
            yield from as_out(table, ANOMALY)

    def _evidence(self, rows: pa.Table, qkey: np.ndarray, qloss: np.ndarray) -> Iterator[pa.RecordBatch]:
        distinct = escalate.distinct_names(rows["date"], rows["src_ip"], rows["dst_ip"], qkey, qloss, self.odd)
        self.pieces.append(distinct)
        local = escalate.suspect_pairs(distinct, self.min_share)
        self.kept.append(local)
        suspects = local.filter(pc.field("suspect")).select(list(escalate.PAIR))
        if suspects.num_rows:
            judged = rows.filter(pa.array(~np.isnan(qloss)))
            cand = judged.join(suspects, list(escalate.PAIR), join_type="left semi", use_threads=False)
            yield from as_out(cand.rename_columns(
                [{"orig_payload_prefix": PREFIX, "orig_bytes": ORIG_BYTES}.get(c, c) for c in cand.column_names]),
                CANDIDATE)

    def finish(self) -> Iterator[pa.RecordBatch]:
        """The slice's per-date counts, and per pair its evidence."""
        if self.counts:
            dates = sorted(self.counts)
            table = pa.table({"date": pa.array(dates, pa.string()),
                              **{f: pa.array([int(self.counts[d][i]) for d in dates], pa.int64())
                                 for i, f in enumerate(COUNT_FIELDS)}})
            yield from as_out(table, COUNTS)
        if self.pairs:
            ev = escalate.slice_evidence(self.pieces, self.kept)
            yield from as_out(ev.rename_columns({"names": "_names", "odd": "_odd", "kept": "_kept"}), EVIDENCE)
        yield from suppressed_out(self.suppressed)
        self.counts, self.pieces, self.kept, self.suppressed = {}, [], [], []


def suppressed_out(pieces: list[pa.Table]) -> list[pa.RecordBatch]:
    """Per date and rule, how many anomalies suppression kept out (SUPPRESSED rows)."""
    if not pieces:
        return []
    t = pa.concat_tables(pieces).group_by(["date", "rule_id"], use_threads=False).aggregate([("flows", "sum")])
    return as_out(t.rename_columns(["date", RULE, SUPPRESSED_N]), SUPPRESSED)


def detect_tables(art: ModelArtifact, cfg: Config, run_id: str, scored_at_us: int, *, scores: bool = False,
                  rules: Sequence[Rule] = ()) -> Callable[[Iterator[pa.Table]], Iterator[pa.RecordBatch]]:
    """Detect as one function of a slice's tables of in-scope flows: what a Source runs per task."""

    def run(tables: Iterator[pa.Table]) -> Iterator[pa.RecordBatch]:
        det = Detector(art, cfg, run_id, scored_at_us, scores=scores, rules=rules)
        for t in tables:
            yield from det.flows(t)
        yield from det.finish()

    return run

