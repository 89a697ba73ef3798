"""`portprint score`, the nightly job: source → detect → escalate → sink, chunk by chunk, with progress and a
`runs` row per date. Called by jobs/cli.py and by Databricks wheel tasks.

Each chunk of dates is read by the Source (jobs/archive/), detected and escalated (jobs/engine/pipeline.py, which
runs udfs/detect.py and udfs/escalate.py on Spark), then committed by the Sink (jobs/warehouse/): its dates in
`anomalies` replaced in one Delta commit, folded into `anomaly_patterns`, and logged in `runs`.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

from pyspark.sql import SparkSession

from portprint.conf.config import Config
from portprint.jobs.archive import Source, open_source
from portprint.jobs.engine import pipeline
from portprint.jobs.suppress import rules_at
from portprint.jobs.warehouse import Warehouse
from portprint.models.artifact import ModelArtifact
from portprint.udfs.escalate import odd_threshold, settings_text
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


def run_score(spark: SparkSession, cfg: Config, flows: str, model_dir: str, warehouse: str,
              start: str | None = None, end: str | None = None, *, new_only: bool = False,
              chunk_days: int | None = None,
              log: Callable[[str], None] = lambda m: print(m, file=sys.stderr)) -> ScoreReport:
    """Score the archive dates in [start, end], chunk by chunk. With new_only, dates that already have a
    successful run with this model and an unchanged archive snapshot are skipped: a nightly job scores what is
    new or late, and a stopped backfill resumes."""
    t0 = time.monotonic()
    art = load_model(model_dir)
    source = open_source(spark, cfg, flows, start, end)
    sink = Warehouse(spark, cfg, warehouse)
    rules = rules_at(spark, cfg, warehouse)  # in force when the run starts; an expired rule stops applying
    run_id = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ-") + uuid.uuid4().hex[:8]
    # Fingerprint each date once, before reading it: `runs` records what this run saw, even if files land
    # while it works (a later --new-only run then scores the date again).
    snapshots = {d: source.plan.snapshot(d) for d in source.plan.dates}
    todo = list(source.plan.dates)
    escalation = settings_text(cfg.escalate) if cfg.escalate.enabled else "off"
    if new_only:
        # A date is done when scored with this model and these escalation settings (a change to them rescores).
        done = sink.scored(art.meta.model_version, escalation)
        todo = [d for d in todo if done.get(d) != snapshots[d]]
    skipped = [d for d in source.plan.dates if d not in todo]
    size = chunk_days or cfg.output.chunk_days
    chunks = [todo[i : i + size] for i in range(0, len(todo), size)]
    log(f"portprint score: run {run_id}: {len(todo)} date(s) to score in {len(chunks)} chunk(s)"
        + (f", {len(skipped)} already scored" if skipped else "")
        + f"; model {art.meta.model_version} (threshold {art.meta.threshold:.4g}); writer {sink.writer}")
    if cfg.escalate.enabled and cfg.escalate.odd and odd_threshold(art) != odd_threshold(art):  # NaN: no odd bar
        log(f"portprint score: model {art.meta.model_version} has no question model with an odd-name bar: the "
            "escalate odd rule is off (shape and socket rules run); retrain with `portprint train` to turn it on")
    said: set[str] = set()

    def once(message: str) -> None:  # a note that holds for the whole run is logged for its first chunk only
        key = message.split(":")[-1]
        if key not in said:
            said.add(key)
            log(message)

    rows: list[dict] = []
    for k, chunk in enumerate(chunks):
        c0, started = time.monotonic(), dt.datetime.now(dt.timezone.utc)
        base = {"run_id": run_id, "threshold": art.meta.threshold, "model_version": art.meta.model_version,
                "writer": sink.writer, "started_at": started, "archive": flows, "chunk": k, "escalation": escalation}
        try:
            chunk_rows = _score_chunk(source.subset(chunk), art, cfg, sink, run_id, started, base, snapshots, rules,
                                      once)
        except BaseException as exc:
            # Earlier chunks stay committed; this one's dates are logged as failed and left as they were.
            status = "interrupted" if isinstance(exc, KeyboardInterrupt) else "failed"
            error = str(exc).splitlines()[0][:500] if str(exc) else type(exc).__name__
            with contextlib.suppress(Exception):  # the original failure matters more than its log row
                sink.log([base | {"date": d, "status": status, "seconds": time.monotonic() - c0,
                                  "archive_snapshot": snapshots[d], "error": error} for d in chunk])
            raise
        rows += chunk_rows
        _progress(log, chunk, chunk_rows, rows, len(todo), t0, time.monotonic() - c0)
    return ScoreReport(run_id, todo, sink.writer, sum(r["flows_read"] for r in rows),
                       sum(r["flows_scored"] for r in rows), sum(r["flows_skipped"] for r in rows),
                       sum(r["anomalies"] for r in rows), time.monotonic() - t0, sink.tables.anomalies,
                       sink.tables.runs, art.meta.model_version, skipped, len(chunks))


def _score_chunk(source: Source, art: ModelArtifact, cfg: Config, sink: Warehouse, run_id: str,
                 started: dt.datetime, base: dict, snapshots: dict[str, str], rules: list[Rule],
                 note: Callable[[str], None] = lambda m: print(m, file=sys.stderr)) -> list[dict]:
    """Source → detect → escalate → sink for one chunk of dates; its `runs` rows (``base`` holds the run's fields)."""
    c0 = time.monotonic()
    scored_at_us = int(started.timestamp()) * 1_000_000 + started.microsecond
    dates = source.plan.dates
    with sink.stage(run_id, dates[0]) as stage:
        pipeline.detect(source, art, cfg, run_id, scored_at_us, stage, rules=rules)
        escalation = pipeline.escalate(source, art, cfg, run_id, scored_at_us, stage, rules)
        escalated = escalation.escalated["date"].to_pylist()
        counts, hits = pipeline.chunk_counts(stage, source, dates)
        rows = [base | {"date": d, "archive_snapshot": snapshots[d], "status": "succeeded", "error": None,
                        "flows_read": c["flows_read"], "flows_scored": c["_scoped"] - c["_skipped"],
                        "flows_skipped": c["_skipped"],
                        "anomalies": c["_flagged"], "model_flagged": c["_model"], "rule_flagged": c["_rule"],
                        "qname_flagged": c["_qname"], "tunnel_flagged": c["_tunnel"],
                        "groups_escalated": escalated.count(d),
                        "suppressed": c["suppressed"], "seconds": time.monotonic() - c0}
                for d, c in counts.items()]
        if cfg.escalate.enabled and cfg.escalate.socket_pkts:
            blind = [d for d, c in counts.items() if c["_scoped"] > c["_skipped"] and c["_pkts"] == 0]
            if blind:
                note(f"portprint score: no flow of {blind[0]}..{blind[-1]} carries orig_pkts "
                     "(archive.columns.orig_pkts): the escalate socket rule is off for those dates")
        sink.commit(stage, dates, rows, [h | {"run_id": run_id} for h in hits], escalation.history)
    return rows


def _progress(log: Callable[[str], None], chunk: list[str], chunk_rows: list[dict], rows: list[dict], total: int,
              t0: float, seconds: float) -> None:
    done = len(rows)
    elapsed = time.monotonic() - t0
    rate = sum(r["flows_scored"] for r in rows) / max(elapsed, 1e-9)
    escalated = sum(r["groups_escalated"] for r in chunk_rows)
    log(f"portprint score: [{done}/{total} dates] {chunk[0]}..{chunk[-1]}: "
        f"{sum(r['flows_scored'] for r in chunk_rows):,} flows scored, {sum(r['anomalies'] for r in chunk_rows)} "
        f"anomalies" + (f" ({escalated} name groups escalated as tunnels)" if escalated else "")
        + f", {seconds:.1f}s; {rate:,.0f} flows/s overall, ETA {elapsed / done * (total - done):.0f}s")
