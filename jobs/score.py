"""`portprint score`, the nightly job: Source → Detect → Escalate → Sink, chunk by chunk, with `runs` rows per date.
Which dates: jobs/warehouse/history.py (new, late-written, failed, half-finished, settings changed; history only
with ``rescore``). Stages run in jobs/engine/pipeline.py; the Sink (jobs/warehouse/) commits under its lock.
"""

from __future__ import annotations

import datetime as dt
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial

from pyspark.sql import SparkSession

from portprint.conf.config import Config
from portprint.jobs.archive import Source, open_source
from portprint.jobs.engine import pipeline
from portprint.jobs.suppress import rules_at
from portprint.jobs.warehouse import Warehouse, full_disk, history
from portprint.models.artifact import ModelArtifact
from portprint.udfs.scoring import load_model
from portprint.udfs.suppress import Rule


@dataclass(frozen=True)
class ScoreReport:
    run_id: str
    dates: list[str]
    writer: str
    flows_read: int
    flows_scored: int
    flows_skipped: int
    anomalies: int
    seconds: float
    anomalies_table: str
    runs_table: str
    model_version: str
    skipped_dates: list[str] = field(default_factory=list)  # already scored (with --new-only)
    chunks: int = 0
    decisions: list[history.Decision] = field(default_factory=list)
    dry_run: bool = False
    stale_staging: list[str] = field(default_factory=list)  # staging of killed runs, removed at the start


def run_score(spark: SparkSession, cfg: Config, flows: str, model_dir: str, warehouse: str,
              start: str | None = None, end: str | None = None, *, new_only: bool = False, rescore: bool = False,
              dry_run: bool = False, chunk_days: int | None = None,
              log: Callable[[str], None] = lambda m: print(m, file=sys.stderr)) -> ScoreReport:
    """Score the archive dates in [start, end] not done yet (history.plan_dates). A date scored by any model is
    history: ``new_only`` skips it, ``rescore`` (with ``start`` and ``end``) replaces it on purpose, a plain run
    refuses (history.AlreadyScored). ``dry_run`` decides, writes nothing, and returns the decisions."""
    t0 = time.monotonic()
    history.check_request(new_only, rescore, start, end)
    art = load_model(model_dir)
    source = open_source(spark, cfg, flows, start, end)
    sink = Warehouse(spark, cfg, warehouse, create=not dry_run)
    run_id = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ-") + uuid.uuid4().hex[:8]
    # Each date's fingerprint before reading it: files landing meanwhile make the date late-written.
    snapshots = {d: source.plan.snapshot(d) for d in source.plan.dates}
    settings = pipeline.escalation_settings(cfg)
    states = history.date_states(sink.history(), snapshots, history.settings_hash(settings))
    decisions = history.plan_dates(states, list(source.plan.dates), new_only=new_only, rescore=rescore)
    todo = [x.date for x in decisions if x.score]
    skipped = [x.date for x in decisions if not x.score]
    size = chunk_days or cfg.output.chunk_days
    chunks = [todo[i : i + size] for i in range(0, len(todo), size)]
    report = partial(ScoreReport, run_id, todo, sink.writer, anomalies_table=sink.tables.anomalies,
                     runs_table=sink.tables.runs, model_version=art.meta.model_version, skipped_dates=skipped,
                     chunks=len(chunks), decisions=decisions)
    if dry_run:
        return report(0, 0, 0, 0, time.monotonic() - t0, dry_run=True)
    if not new_only and not rescore and skipped:
        raise history.AlreadyScored(history.refusal(decisions))
    reasons = {x.date: x.reason for x in decisions}
    rules = rules_at(spark, cfg, warehouse)  # in force when the run starts; an expired rule stops applying
    log(f"portprint score: run {run_id}: {len(todo)} date(s) to score in {len(chunks)} chunk(s)"
        + (f", {len(skipped)} already scored" if skipped else "")
        + f"; model {art.meta.model_version} (threshold {art.meta.threshold:.4g}); writer {sink.writer}")
    pipeline.say_model_gaps(cfg, art, log)
    try:
        return _run_chunks(sink, source, art, cfg, chunks, report, flows, run_id, snapshots, rules, reasons, t0,
                           pipeline.once(log))
    except Exception as exc:
        if (full := full_disk(exc, warehouse)) is not None:
            raise full from None
        raise


def _run_chunks(sink: Warehouse, source: Source, art: ModelArtifact, cfg: Config, chunks: list[list[str]],
                report: Callable[..., ScoreReport], flows: str, run_id: str, snapshots: dict[str, str],
                rules: list[Rule], reasons: dict[str, str], t0: float, log: Callable[[str], None]) -> ScoreReport:
    """The chunks one after the other, each committed or logged as failed; the report of them all."""
    rows: list[dict] = []
    total, settings = sum(len(c) for c in chunks), pipeline.escalation_settings(cfg)
    with sink.run(run_id, log) as stale:
        for k, chunk in enumerate(chunks):
            c0, started = time.monotonic(), dt.datetime.now(dt.timezone.utc)
            base = {"run_id": run_id, "threshold": art.meta.threshold, "model_version": art.meta.model_version,
                    "writer": sink.writer, "started_at": started, "archive": flows, "chunk": k,
                    "escalation": settings, "escalation_hash": history.settings_hash(settings)}
            sink.committed = []
            try:
                chunk_rows = _score_chunk(source.subset(chunk), art, cfg, sink, run_id, started, base, snapshots,
                                          rules, reasons, log)
            except BaseException as exc:  # earlier chunks stay; this one's dates are logged as failed
                full = sink.log_failure(exc, [base | {"date": d, "seconds": time.monotonic() - c0, "reason": reasons[d],
                                                      "archive_snapshot": snapshots[d]} for d in chunk], log)
                if full is not None:
                    raise full from None
                raise
            rows += chunk_rows
            pipeline.progress(log, chunk, chunk_rows, rows, total, t0, time.monotonic() - c0)
    return report(sum(r["flows_read"] for r in rows), sum(r["flows_scored"] for r in rows),
                  sum(r["flows_skipped"] for r in rows), sum(r["anomalies"] for r in rows), time.monotonic() - t0,
                  stale_staging=stale)


def _score_chunk(source: Source, art: ModelArtifact, cfg: Config, sink: Warehouse, run_id: str,
                 started: dt.datetime, base: dict, snapshots: dict[str, str], rules: list[Rule],
                 reasons: dict[str, str], log: Callable[[str], None]) -> list[dict]:
    """Source → detect → escalate → sink for one chunk of dates; its `runs` rows (``base`` holds the run's fields)."""
    c0 = time.monotonic()
    scored_at_us = int(started.timestamp()) * 1_000_000 + started.microsecond
    dates = source.plan.dates
    with sink.stage(run_id, dates[0]) as stage:
        pipeline.detect(source, art, cfg, run_id, scored_at_us, stage, rules=rules)
        escalation = pipeline.escalate(source, art, cfg, run_id, scored_at_us, stage, rules)
        escalated = escalation.escalated["date"].to_pylist()
        counts, hits = pipeline.chunk_counts(stage, source, dates)
        pipeline.say_repeated_ids(stage, log)
        rows = [base | {"date": d, "archive_snapshot": snapshots[d], "status": "succeeded", "error": None,
                        "flows_read": c["flows_read"], "flows_scored": c["_scoped"] - c["_skipped"],
                        "flows_skipped": c["_skipped"],
                        "anomalies": c["_flagged"], "model_flagged": c["_model"], "rule_flagged": c["_rule"],
                        "qname_flagged": c["_qname"], "tunnel_flagged": c["_tunnel"],
                        "groups_escalated": escalated.count(d), "suppressed": c["suppressed"],
                        "seconds": time.monotonic() - c0, "reason": reasons[d]}
                for d, c in counts.items()]
        pipeline.say_blind_socket(cfg, counts, log)
        sink.commit(stage, dates, rows, [h | {"run_id": run_id} for h in hits], escalation.history,
                    rebuild_patterns=any(reasons[d] == history.HALF for d in dates), log=log)
    return rows
