"""Detect: a slice of in-scope flows in (Arrow), its anomalies, per-date counts and tunnel evidence out.

The one function every path runs: Spark tasks of `score` and `evaluate` (through jobs/engine/), and the
benchmark's plain pass in one process. A Source (jobs/archive/) hands it Arrow tables of in-scope flows
(``FLOWS_IN``); it keeps those with a payload, scores them (udfs/scoring.py), explains the flagged ones and
collects the evidence the Escalate stage needs (udfs/evidence.py, udfs/escalate.py). Its output rows (``OUT``) are
told apart by ``_kind``: anomalies and candidate flows as they are found, then the slice's counts and evidence
when the slice ends.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from portprint.conf.config import Config, ScopeConf
from portprint.models.artifact import ModelArtifact
from portprint.udfs import escalate, evidence, suppress
from portprint.udfs.header_rule import REASONS
from portprint.udfs.schemas import (
    ANOMALY,
    CANDIDATE,
    COUNT_FIELDS,
    COUNTS,
    EVIDENCE,
    FIRED,
    FLOW_COLUMNS,
    GROUP,
    KEPT,
    ORIG_BYTES,
    ORIG_PKTS,
    PREFIX,
    RECORDS,
    RULE,
    SCORES,
    SUPPRESSED,
    SUPPRESSED_N,
    as_out,
)
from portprint.udfs.scoring import DETECTORS, Verdicts, anomaly_table, cached_scorer
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


def escalating(cfg: Config) -> bool:
    """The Escalate stage runs (its shape and socket rules need no model; its odd rule needs the question
    model's odd bar, udfs/escalate.py ``odd_threshold``)."""
    return cfg.escalate.enabled


class Detector:
    """One slice's detection (a Spark task, or a plain process): ``flows`` per Arrow table as it comes,
    ``finish`` once at the end. With ``scores``, every scored flow's losses come out too (``evaluate``)."""

    def __init__(self, art: ModelArtifact, cfg: Config, run_id: str, scored_at_us: int, *,
                 scores: bool = False, rules: Sequence[Rule] = ()) -> None:
        self.scorer = cached_scorer(art, cfg.spark.torch_threads_per_task)
        self.art, self.ports, self.top = art, cfg.scope.ports, cfg.output.top_bytes
        self.run_id, self.scored_at_us, self.scores = run_id, scored_at_us, scores
        self.escalating, self.settings = escalating(cfg), cfg.escalate
        self.odd = escalate.odd_threshold(art)
        self.counts: dict[str, np.ndarray] = {}  # date -> COUNT_FIELDS
        self.evidence = evidence.SliceEvidence()
        self.judged = self.odd_seen = 0  # the slice's judged and odd flows so far
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
        self._count(rows["date"], _pkts=pc.is_valid(rows["orig_pkts"]).to_numpy(zero_copy_only=False))
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
        if self.escalating:
            yield from self._evidence(rows, v)
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

    def _evidence(self, rows: pa.Table, v: Verdicts) -> Iterator[pa.RecordBatch]:
        """Add the batch's names to the slice's evidence; yield as candidates the flows no per-flow detector
        flagged that a rule could flag on their own (escalate.flow_rules), so an escalated group need not be read
        again: shape and socket candidates always; a group's companion names (new, carrying data) where the batch
        shows its shape or socket evidence too; odd names where the batch shows the group mostly odd; tagged names,
        and their group's new names, where the batch shows a tag twice. Where some are not kept, the slice says
        so (``kept``) and an escalated group's flows are read again."""
        nm, group, bits = escalate.flow_view(rows, v.qloss, self.odd, self.settings)
        self.evidence.add(rows, nm, group, bits)
        # Asks within the batch: a name asked more than max_asks times here is asked more that day, and the odd
        # rule never flags it.
        src = pc.dictionary_encode(rows["src_ip"].combine_chunks()).indices.to_numpy(zero_copy_only=False)
        pairs = np.stack([src.astype(np.uint64), nm.key], axis=1)
        _, inverse, counts = np.unique(pairs, axis=0, return_inverse=True, return_counts=True)
        elig = escalate.flow_rules(nm, group, bits, counts[inverse.ravel()], self.settings)
        free = v.detector == 0
        codes = pc.fill_null(pc.dictionary_encode(pa.array(group, pa.string())).indices, -1).to_numpy()
        where = src.astype(np.int64) * (int(codes.max(initial=0)) + 2) + codes + 1  # one number per client and group
        _, at = np.unique(where, return_inverse=True)
        at = at.ravel()

        def per_group(mask: np.ndarray) -> np.ndarray:  # per flow: its client's group's flows in the batch with mask
            return np.bincount(at, weights=mask, minlength=at.max(initial=-1) + 1)[at]

        strong = per_group((elig & (escalate.SHAPE | escalate.SOCKET_RULE)) > 0) > 0
        odd = (elig & escalate.ODD_RULE) > 0
        # Odd candidates where the batch itself shows the group mostly odd and the slice so far is a day the model
        # describes; elsewhere the slice says it did not keep them, and an escalated group is read again.
        judged, self.judged = ~np.isnan(v.qloss), self.judged + int((~np.isnan(v.qloss)).sum())
        self.odd_seen += int((v.qloss[judged] > self.odd).sum())
        active = self.odd_seen <= self.settings.odd_quiet_above * max(self.judged, 1)
        oddish = active & (per_group(odd) >= self.settings.odd_min_share * per_group(np.ones(len(odd))))
        companion = (elig & escalate.COMPANION) > 0
        # Tagged names where the batch shows the client's group sending that tag more than once.
        tagged = (elig & escalate.SESSION) > 0
        _, tag_at, tag_n = np.unique(np.stack([where, nm.tag.astype(np.int64)], axis=1), axis=0,
                                     return_inverse=True, return_counts=True)
        shared = tag_n[tag_at.ravel()] >= 2
        # A session's companions where the batch shows the client's group sending a tag more than once.
        session_companion = (elig & escalate.SESSION_COMPANION) > 0
        session = per_group(tagged & shared) > 0
        keep = free & (((elig & (escalate.SHAPE | escalate.SOCKET_RULE)) > 0) | (odd & oddish) | (companion & strong)
                       | (tagged & shared) | (session_companion & session))
        self.evidence.not_kept(rows, group, free & (odd | companion | tagged | session_companion) & ~keep)
        if keep.any():
            cand = rows.filter(pa.array(keep)).select(list(FLOW_COLUMNS))
            yield from as_out(cand.rename_columns(
                [{"orig_payload_prefix": PREFIX, "orig_bytes": ORIG_BYTES, "orig_pkts": ORIG_PKTS}.get(c, c)
                 for c in cand.column_names]), CANDIDATE)

    def finish(self) -> Iterator[pa.RecordBatch]:
        """The slice's per-date counts, and its tunnel evidence."""
        if self.counts:
            dates = sorted(self.counts)
            table = pa.table({"date": pa.array(dates, pa.string()),
                              **{f: pa.array([int(self.counts[d][i]) for d in dates], pa.int64())
                                 for i, f in enumerate(COUNT_FIELDS)}})
            yield from as_out(table, COUNTS)
        if self.escalating:
            ev = self.evidence.table()
            yield from as_out(ev.rename_columns({"group": GROUP, "records": RECORDS, "kept": KEPT}), EVIDENCE)
        yield from suppressed_out(self.suppressed)
        self.counts, self.suppressed = {}, []


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

