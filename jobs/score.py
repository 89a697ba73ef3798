"""The nightly scoring job: archive dates in, Delta tables `anomalies` and `runs` out."""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import re
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

import pyarrow as pa
from pyspark.sql import Observation, SparkSession
from pyspark.sql import functions as F

from portprint.jobs import delta_io, row_groups
from portprint.jobs.archive import ArchiveError, ArchivePlan, plan_archive, read_archive
from portprint.jobs.config import Config
from portprint.jobs.patterns import update_patterns
from portprint.jobs.tables import ANOMALIES, PATTERN_DAYS, PATTERNS, RUNS, spark_schema
from portprint.jobs.transforms import canonical, has_payload, in_scope, score_flows
from portprint.models.artifact import ModelArtifact, ModelError
from portprint.udfs.features import FEATURE_VERSION
from portprint.udfs.qname import QNAME_VERSION
from portprint.udfs.scoring import make_detect_udf


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


@dataclass(frozen=True)
class Tables:
    anomalies: str
    runs: str
    pattern_days: str
    patterns: str


def table_paths(cfg: Config, warehouse: str) -> Tables:
    """Where the tables live: Unity Catalog names (catalog.schema.table) as configured, other names as
    folders under the warehouse."""
    o = cfg.output
    return Tables(*(n if delta_io.is_table_name(n) else os.path.join(warehouse, n)
                    for n in (o.anomalies, o.runs, o.pattern_days, o.patterns)))


def _per_date_counts(dates: list[str], prefix: str, condition=None, value=None) -> list:
    """Observation metrics ``{prefix}{i}``: per date, how many rows meet ``condition`` (or the sum of
    ``value`` over them)."""
    cond = F.lit(True) if condition is None else condition
    v = F.lit(1) if value is None else value
    return [F.sum(F.when((F.col("date") == d) & cond, v).otherwise(0)).alias(f"{prefix}{i}")
            for i, d in enumerate(dates)]


def _tallies(dates: list[str], where=None) -> list:
    """Per date, of the anomaly rows (``where``): flagged by the rule, by the header model, by the
    question model alone, and in all."""
    w = F.lit(True) if where is None else where
    return [*_per_date_counts(dates, "rule", w & (F.col("detector") == "header-rule")),
            *_per_date_counts(dates, "model", w & (F.col("score") > 1)),
            *_per_date_counts(dates, "qname", w & (F.col("detector") == "qname-model")),
            *_per_date_counts(dates, "total", w)]


def load_model(model_dir: str) -> ModelArtifact:
    art = ModelArtifact.load(model_dir)
    if art.meta.feature_version != FEATURE_VERSION:
        raise ModelError(f"model {model_dir} uses features {art.meta.feature_version}, this portprint computes "
                         f"{FEATURE_VERSION}: retrain with `portprint train`")
    if art.has_qname and art.meta.qname.get("feature_version") != QNAME_VERSION:
        raise ModelError(f"model {model_dir} has question features {art.meta.qname.get('feature_version')}, this "
                         f"portprint computes {QNAME_VERSION}: retrain with `portprint train`")
    return art


def already_scored(spark: SparkSession, runs_table: str, writer: str, model_version: str) -> dict[str, str]:
    """date -> archive snapshot of the latest successful run with this model."""
    runs = delta_io.read_table(spark, runs_table, RUNS, writer)
    rows = (runs.where((F.col("status") == "succeeded") & (F.col("model_version") == model_version))
            .groupBy("date").agg(F.max_by("archive_snapshot", "started_at").alias("snap")).collect())
    return {r["date"]: r["snap"] or "" for r in rows}


def run_score(spark: SparkSession, cfg: Config, flows: str, model_dir: str, warehouse: str,
              start: str | None = None, end: str | None = None, *, new_only: bool = False,
              chunk_days: int | None = None,
              log: Callable[[str], None] = lambda m: print(m, file=sys.stderr)) -> ScoreReport:
    """Score the archive dates in [start, end], chunk by chunk; each chunk replaces its dates in
    `anomalies` in one commit, folds them into `anomaly_patterns`, and logs a row per date to `runs`.

    With new_only, dates that already have a successful run with this model and an unchanged archive
    snapshot are skipped: a nightly job scores what is new or late, and a stopped backfill resumes.
    """
    t0 = time.monotonic()
    art = load_model(model_dir)
    meta = art.meta
    plan = plan_archive(flows, cfg.archive.columns, cfg.archive.prefix_encoding, start, end)
    writer = delta_io.choose_writer(spark, cfg.output.writer)
    tables = table_paths(cfg, warehouse)
    for table, schema in ((tables.anomalies, ANOMALIES), (tables.runs, RUNS), (tables.pattern_days, PATTERN_DAYS),
                          (tables.patterns, PATTERNS)):
        delta_io.ensure_table(spark, table, schema, cfg.output.location)  # Unity Catalog names only
    run_id = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ-") + uuid.uuid4().hex[:8]
    todo, skipped = list(plan.dates), []
    # Fingerprint each date once, before reading it: `runs` records what this run saw, even if files
    # land while it works (a later --new-only run then scores the date again).
    snapshots = {d: plan.snapshot(d) for d in plan.dates}
    if new_only:
        done = already_scored(spark, tables.runs, writer, meta.model_version)
        todo = [d for d in plan.dates if d not in done or done[d] != snapshots[d]]
        skipped = [d for d in plan.dates if d not in todo]
    size = chunk_days or cfg.output.chunk_days
    chunks = [todo[i : i + size] for i in range(0, len(todo), size)]
    log(f"portprint score: run {run_id}: {len(todo)} date(s) to score in {len(chunks)} chunk(s)"
        + (f", {len(skipped)} already scored" if skipped else "")
        + f"; model {meta.model_version} (threshold {meta.threshold:.4g}); writer {writer}")
    spark.conf.set("spark.sql.parquet.outputTimestampType", "TIMESTAMP_MICROS")
    rows: list[dict] = []
    scored_flows, done_dates = 0, 0
    for k, chunk in enumerate(chunks):
        c0 = time.monotonic()
        started = dt.datetime.now(dt.timezone.utc)
        base = {"run_id": run_id, "threshold": meta.threshold, "model_version": meta.model_version,
                "writer": writer, "started_at": started, "archive": flows, "chunk": k}
        try:
            chunk_rows = _score_chunk(spark, cfg, art, plan.subset(chunk), tables, writer, warehouse, run_id,
                                      started)
        except BaseException as exc:
            # Earlier chunks stay committed; this one's dates are logged as failed and left as they were.
            status = "interrupted" if isinstance(exc, KeyboardInterrupt) else "failed"
            failed = [base | {"date": d, "status": status, "seconds": time.monotonic() - c0,
                              "archive_snapshot": snapshots[d], "error": str(exc).splitlines()[0][:500]
                              if str(exc) else type(exc).__name__} for d in chunk]
            with contextlib.suppress(Exception):  # the original failure matters more than its log row
                delta_io.append(spark, pa.Table.from_pylist(failed, schema=RUNS), tables.runs, writer)
            raise
        seconds = time.monotonic() - c0
        chunk_rows = [base | r | {"status": "succeeded", "seconds": seconds,
                                  "archive_snapshot": snapshots[r["date"]], "error": None} for r in chunk_rows]
        delta_io.append(spark, pa.Table.from_pylist(chunk_rows, schema=RUNS), tables.runs, writer)
        rows += chunk_rows
        scored_flows += sum(r["flows_scored"] for r in chunk_rows)
        done_dates += len(chunk)
        rate = scored_flows / max(time.monotonic() - t0, 1e-9)
        eta = (time.monotonic() - t0) / done_dates * (len(todo) - done_dates)
        log(f"portprint score: [{done_dates}/{len(todo)} dates] {chunk[0]}..{chunk[-1]}: "
            f"{sum(r['flows_scored'] for r in chunk_rows):,} flows scored, "
            f"{sum(r['anomalies'] for r in chunk_rows)} anomalies, {seconds:.1f}s; "
            f"{rate:,.0f} flows/s overall, ETA {eta:.0f}s")
    return ScoreReport(run_id, todo, writer, sum(r["flows_read"] for r in rows),
                       sum(r["flows_scored"] for r in rows), sum(r["flows_skipped"] for r in rows),
                       sum(r["anomalies"] for r in rows), time.monotonic() - t0, tables.anomalies, tables.runs,
                       meta.model_version, skipped, len(chunks))


def _score_chunk(spark: SparkSession, cfg: Config, art: ModelArtifact, plan: ArchivePlan, tables: Tables,
                 writer: str, warehouse: str, run_id: str, started: dt.datetime) -> list[dict]:
    """Score one chunk of dates and commit it; return its per-date counts."""
    meta, cols = art.meta, cfg.archive.columns
    staged = os.path.join(warehouse, "_staging", f"{run_id}-{plan.dates[0]}")
    read_obs, scope_obs = Observation("read"), Observation("scope")
    scored_at = started.strftime("%Y-%m-%d %H:%M:%S.%f")
    read_counts = {f"n{i}": plan.rows.get(d, 0) for i, d in enumerate(plan.dates)} if plan.rows is not None else {}
    scope_counts, tally_obs, wrote = {}, Observation("tallies"), False
    if row_groups.usable(plan, cfg):
        out = row_groups.detect_row_groups(spark, plan, cfg, art, run_id,
                                           int(started.timestamp()) * 1_000_000 + started.microsecond)
        if out is not None:
            # The counts ride along as observations of the small output stream, so the stage holds only
            # anomalies (no partitioned write, no job to read counts back).
            is_anomaly = F.col(row_groups.KIND) == row_groups.ANOMALY
            counted = out.observe(tally_obs, *_per_date_counts(plan.dates, "s", value=F.col(row_groups.SCOPED)),
                                  *_per_date_counts(plan.dates, "k", value=F.col(row_groups.SKIPPED)),
                                  *_tallies(plan.dates, is_anomaly))
            try:
                counted.where(is_anomaly).select(*ANOMALIES.names).write.mode("overwrite").parquet(staged)
            except Exception as exc:
                raise _explain_spark_failure(exc, plan.root) from None
            scope_counts = tally_obs.get
            wrote = True
    else:
        raw = read_archive(spark, plan, cols)
        if raw is not None:
            detect_udf = make_detect_udf(art, cfg.spark.torch_threads_per_task, cfg.output.top_bytes)
            flows_df = canonical(raw, cols, cfg.archive.prefix_encoding)
            if plan.rows is None:  # remote archive: count while scanning (an observation costs ~10% of the job)
                flows_df = flows_df.observe(read_obs, *_per_date_counts(plan.dates, "n"))
            scoped = in_scope(flows_df, cfg.scope)
            scoped = scoped.observe(scope_obs, *_per_date_counts(plan.dates, "s"),
                                    *_per_date_counts(plan.dates, "k", ~has_payload()))
            anomalies = score_flows(scoped.where(has_payload()), detect_udf, threshold=meta.threshold,
                                    qname_threshold=meta.qname.get("threshold") if art.has_qname else None,
                                    model_version=meta.model_version, run_id=run_id, scored_at=scored_at)
            # One action computes everything: the UDF runs once, and the counts come from the observations.
            try:
                anomalies.observe(tally_obs, *_tallies(plan.dates)).write.mode("overwrite").parquet(staged)
            except Exception as exc:
                raise _explain_spark_failure(exc, plan.root) from None
            scope_counts = scope_obs.get
            if plan.rows is None:
                read_counts = read_obs.get
            wrote = True
    tallies = tally_obs.get if wrote else {}
    # Nothing staged (no readable files for these dates): the dates are still replaced, by no rows.
    delta_io.replace_dates(spark, staged if wrote else ANOMALIES.empty_table(), tables.anomalies, ANOMALIES,
                           plan.dates, writer)
    staged_df = (spark.read.schema(spark_schema(ANOMALIES)).parquet(staged) if wrote
                 else spark.createDataFrame([], spark_schema(ANOMALIES)))
    update_patterns(spark, staged_df, plan.dates, (tables.pattern_days, tables.patterns), writer)
    delta_io.remove_folder(staged)
    out = []
    for i, d in enumerate(plan.dates):
        n_scope, n_skip = int(scope_counts.get(f"s{i}") or 0), int(scope_counts.get(f"k{i}") or 0)
        rule, model, qname, total = (int(tallies.get(f"{k}{i}") or 0) for k in ("rule", "model", "qname", "total"))
        out.append({"date": d, "flows_read": int(read_counts.get(f"n{i}") or 0), "flows_scored": n_scope - n_skip,
                    "flows_skipped": n_skip, "anomalies": total, "model_flagged": model, "rule_flagged": rule,
                    "qname_flagged": qname})
    return out


def _explain_spark_failure(exc: Exception, flows: str) -> Exception:
    """Turn Spark's long failure into one line that names the file and says what to do.

    Only read failures become ArchiveError; anything else (a bug, a lost worker) is returned as it
    was so its traceback is not disguised as bad input.
    """
    text = str(exc)
    m = re.search(r"FAILED_READ_FILE[^\n]*?reading file (\S+?)\.?(?:\s|$)", text)
    ours = re.search(re.escape(row_groups.READ_FAILED) + r" (\S+) \(row group \d+\): ([^\n]+)", text)
    if ours:
        return ArchiveError(f"cannot read {ours.group(1)}: {ours.group(2)[:300]}. Nothing was written; move the "
                            f"file out of {flows} (or restore it) and rerun the date")
    if not m:
        return exc
    reason = re.search(r"Caused by: ([^\n]+)", text)
    return ArchiveError(f"cannot read {m.group(1)}: {reason.group(1)[:300] if reason else 'corrupt or unreadable'}"
                        f". Nothing was written; move the file out of {flows} (or restore it) and rerun the date")
