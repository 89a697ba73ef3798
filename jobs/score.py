"""`portprint score`, the nightly job: source → detect → escalate → sink, chunk by chunk, with progress and
`runs` rows per date. Called by jobs/cli.py and by Databricks wheel tasks.

Which dates it scores comes from the `runs` log (jobs/warehouse/history.py): new, written late, failed or left
half-finished; history is rescored only when asked (``rescore``). Each chunk of dates is read by the Source
(jobs/archive/), detected and escalated (jobs/engine/pipeline.py, which runs udfs/detect.py and udfs/escalate.py
on Spark) into a staging folder, then committed by the Sink (jobs/warehouse/) under the warehouse's lock: its
dates in `anomalies` replaced in one Delta commit, folded into `anomaly_patterns`, and logged in `runs`.
"""

from __future__ import annotations

import datetime as dt
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial

import pyarrow.compute as pc
from pyspark.sql import SparkSession

from portprint.conf.config import Config
from portprint.jobs.archive import Source, open_source
from portprint.jobs.engine import pipeline
from portprint.jobs.suppress import rules_at
from portprint.jobs.warehouse import Warehouse, full_disk, history
from portprint.models.artifact import ModelArtifact
from portprint.udfs.detect import pairs_on
from portprint.udfs.schemas import ANOMALY
from portprint.udfs.scoring import load_model
from portprint.udfs.suppress import Rule


@dataclass(frozen=True)
class Decision:
    """What a run does with one date of its range, and why (``score --dry-run`` prints these)."""

    date: str
    score: bool
    reason: str   # history.NEW, LATE, FAILED, HALF, RESCORE; DONE when skipped
    detail: str   # what the runs log says about the date


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
    decisions: list[Decision] = field(default_factory=list)
    dry_run: bool = False
    stale_staging: list[str] = field(default_factory=list)  # staging of killed runs, removed at the start


class AlreadyScored(ValueError):
    """A plain `score` would replace dates already scored: rescoring history is asked for with --rescore."""


def plan_dates(states: dict[str, history.DateState], dates: list[str], *, new_only: bool, rescore: bool
               ) -> list[Decision]:
    """Each date's decision. With ``rescore`` every date is scored; otherwise dates whose last finished run
    succeeded on unchanged files are skipped (--new-only) or refused (a plain run: raises AlreadyScored)."""
    out = []
    for d in dates:
        st = states[d]
        if rescore:
            out.append(Decision(d, True, history.RESCORE, st.describe()))
        else:
            out.append(Decision(d, st.state != history.DONE, st.state, st.describe()))
    return out


def refusal(decisions: list[Decision]) -> str | None:
    """Why a plain `score` (neither --new-only nor --rescore) must not run, or None."""
    done = [x.date for x in decisions if not x.score]
    if not done:
        return None
    span = done[0] if len(done) == 1 else f"{done[0]}..{done[-1]} ({len(done)} dates)"
    todo = [x.date for x in decisions if x.score]
    return (f"{span} already scored (the runs table has a finished run on unchanged files); nothing was written. "
            f"Pass --new-only to score only the {len(todo)} other date(s), or --rescore with --start and --end "
            "to replace them on purpose")


def run_score(spark: SparkSession, cfg: Config, flows: str, model_dir: str, warehouse: str,
              start: str | None = None, end: str | None = None, *, new_only: bool = False, rescore: bool = False,
              dry_run: bool = False, chunk_days: int | None = None,
              log: Callable[[str], None] = lambda m: print(m, file=sys.stderr)) -> ScoreReport:
    """Score the archive dates in [start, end], chunk by chunk.

    Which dates: those not done (jobs/warehouse/history.py: never scored, written late, failed or left
    half-finished). A date already scored, by this model or an older one, is history: ``new_only`` skips it (the
    nightly job; a stopped backfill resumes), ``rescore`` (with both ``start`` and ``end``) scores it again on
    purpose, and a plain run refuses (AlreadyScored) rather than rewrite it by accident. ``dry_run`` decides,
    writes nothing, and returns the decisions."""
    t0 = time.monotonic()
    if new_only and rescore:
        raise ValueError("--new-only and --rescore contradict each other: --new-only skips scored dates, "
                         "--rescore replaces them")
    if rescore and (start is None or end is None):
        raise ValueError("--rescore replaces history: name the dates with both --start and --end")
    art = load_model(model_dir)
    source = open_source(spark, cfg, flows, start, end)
    sink = Warehouse(spark, cfg, warehouse, create=not dry_run)
    run_id = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ-") + uuid.uuid4().hex[:8]
    # Fingerprint each date once, before reading it: `runs` records what this run saw, even if files land
    # while it works (a later --new-only run then scores the date again).
    snapshots = {d: source.plan.snapshot(d) for d in source.plan.dates}
    states = history.date_states(sink.history(), snapshots)
    decisions = plan_dates(states, list(source.plan.dates), new_only=new_only, rescore=rescore)
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
        raise AlreadyScored(refusal(decisions))
    reasons = {x.date: x.reason for x in decisions}
    rules = rules_at(spark, cfg, warehouse)  # in force when the run starts; an expired rule stops applying
    log(f"portprint score: run {run_id}: {len(todo)} date(s) to score in {len(chunks)} chunk(s)"
        + (f", {len(skipped)} already scored" if skipped else "")
        + f"; model {art.meta.model_version} (threshold {art.meta.threshold:.4g}); writer {sink.writer}")
    if cfg.pairs.enabled and art.has_qname and not pairs_on(art, cfg):
        log(f"portprint score: model {art.meta.model_version} predates pair escalation (no odd_threshold): scoring "
            "without it; retrain with `portprint train` to turn it on")
    try:
        return _run_chunks(sink, source, art, cfg, chunks, report, flows, run_id, snapshots, rules, reasons, t0, log)
    except Exception as exc:
        full = full_disk(exc, warehouse)
        if full is not None:
            raise full from None
        raise


def _run_chunks(sink: Warehouse, source: Source, art: ModelArtifact, cfg: Config, chunks: list[list[str]],
                report: Callable[..., ScoreReport], flows: str, run_id: str, snapshots: dict[str, str],
                rules: list[Rule], reasons: dict[str, str], t0: float, log: Callable[[str], None]) -> ScoreReport:
    """The chunks one after the other, each committed or logged as failed; the report of them all."""
    rows: list[dict] = []
    total = sum(len(c) for c in chunks)
    with sink.run(run_id) as stale:
        if stale:
            log(f"portprint score: removed the staging of {len(stale)} killed run(s): {', '.join(stale)}")
        for k, chunk in enumerate(chunks):
            c0, started = time.monotonic(), dt.datetime.now(dt.timezone.utc)
            base = {"run_id": run_id, "threshold": art.meta.threshold, "model_version": art.meta.model_version,
                    "writer": sink.writer, "started_at": started, "archive": flows, "chunk": k}
            sink.committed = []
            try:
                chunk_rows = _score_chunk(source.subset(chunk), art, cfg, sink, run_id, started, base, snapshots,
                                          rules, reasons, log)
            except BaseException as exc:
                # Earlier chunks stay committed; this one's dates are logged as failed with what it committed.
                status = "interrupted" if isinstance(exc, KeyboardInterrupt) else "failed"
                full = full_disk(exc, sink.root) if isinstance(exc, Exception) else None
                error = str(full or exc).splitlines()[0][:500] if str(full or exc) else type(exc).__name__
                sink.log_failure([base | {"date": d, "status": status, "seconds": time.monotonic() - c0,
                                          "archive_snapshot": snapshots[d], "error": error, "reason": reasons[d],
                                          "committed": list(sink.committed)} for d in chunk], log)
                if full is not None:
                    raise full from None
                raise
            rows += chunk_rows
            _progress(log, chunk, chunk_rows, rows, total, t0, time.monotonic() - c0)
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
        pairs = pipeline.escalate(source, art, cfg, run_id, scored_at_us, stage, rules)
        escalated = pairs["date"].to_pylist()
        counts, hits = pipeline.chunk_counts(stage, source, dates)
        _say_repeated_ids(stage, log)
        rows = [base | {"date": d, "archive_snapshot": snapshots[d], "status": "succeeded", "error": None,
                        "flows_read": c["flows_read"], "flows_scored": c["_scoped"] - c["_skipped"],
                        "flows_skipped": c["_skipped"],
                        "anomalies": c["_flagged"], "model_flagged": c["_model"], "rule_flagged": c["_rule"],
                        "qname_flagged": c["_qname"], "pairs_escalated": escalated.count(d),
                        "suppressed": c["suppressed"], "seconds": time.monotonic() - c0, "reason": reasons[d]}
                for d, c in counts.items()]
        sink.commit(stage, dates, rows, [h | {"run_id": run_id} for h in hits],
                    rebuild_patterns=any(reasons[d] == history.HALF for d in dates), log=log)
    return rows


def _say_repeated_ids(stage, log: Callable[[str], None]) -> None:
    """Anomalies whose flow_id another archive row of the date repeats: kept (every row is a flow) and said."""
    ids = stage.table((ANOMALY,), ["date", "flow_id"])
    if ids.num_rows == 0:
        return
    per = ids.group_by(["date", "flow_id"], use_threads=False).aggregate([("flow_id", "count")])
    rep = per.filter(pc.greater(per["flow_id_count"], 1))
    for d in sorted(set(rep["date"].to_pylist())):
        n = pc.sum(rep.filter(pc.equal(rep["date"], d))["flow_id_count"]).as_py()
        log(f"portprint score: {d}: {n} anomalies share a flow_id with another row of the date (the archive repeats "
            "flow ids, e.g. a file copied twice): each row is kept, and a verdict on such an id covers them all")


def _progress(log: Callable[[str], None], chunk: list[str], chunk_rows: list[dict], rows: list[dict], total: int,
              t0: float, seconds: float) -> None:
    done = len(rows)
    elapsed = time.monotonic() - t0
    rate = sum(r["flows_scored"] for r in rows) / max(elapsed, 1e-9)
    escalated = sum(r["pairs_escalated"] for r in chunk_rows)
    log(f"portprint score: [{done}/{total} dates] {chunk[0]}..{chunk[-1]}: "
        f"{sum(r['flows_scored'] for r in chunk_rows):,} flows scored, {sum(r['anomalies'] for r in chunk_rows)} "
        f"anomalies" + (f" ({escalated} client-server pairs escalated)" if escalated else "")
        + f", {seconds:.1f}s; {rate:,.0f} flows/s overall, ETA {elapsed / done * (total - done):.0f}s")
