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
import pyarrow.compute
from pyspark.sql import DataFrame, Observation, SparkSession, Window
from pyspark.sql import functions as F

from portprint.jobs import delta_io, row_groups
from portprint.jobs.archive import ArchiveError, ArchivePlan, plan_archive, read_archive
from portprint.jobs.config import Config
from portprint.jobs.patterns import update_patterns
from portprint.jobs.tables import ANOMALIES, PATTERN_DAYS, PATTERNS, RUNS, spark_schema
from portprint.jobs.transforms import canonical, detect_flows, has_payload, scope_condition
from portprint.models.artifact import ModelArtifact, ModelError
from portprint.udfs import pairs as pairs_mod
from portprint.udfs.features import FEATURE_VERSION
from portprint.udfs.qname import QNAME_VERSION


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
    if cfg.pairs.enabled and art.has_qname and not row_groups.pairs_on(art, cfg):
        log(f"portprint score: model {meta.model_version} predates pair escalation (no odd_threshold): scoring "
            "without it; retrain with `portprint train` to turn it on")
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
            f"{sum(r['anomalies'] for r in chunk_rows)} anomalies"
            + (f" ({chunk_rows[0]['pairs_escalated']} client-server pairs escalated)"
               if chunk_rows and chunk_rows[0].get("pairs_escalated") else "")
            + f", {seconds:.1f}s; "
            f"{rate:,.0f} flows/s overall, ETA {eta:.0f}s")
    return ScoreReport(run_id, todo, writer, sum(r["flows_read"] for r in rows),
                       sum(r["flows_scored"] for r in rows), sum(r["flows_skipped"] for r in rows),
                       sum(r["anomalies"] for r in rows), time.monotonic() - t0, tables.anomalies, tables.runs,
                       meta.model_version, skipped, len(chunks))


def _score_chunk(spark: SparkSession, cfg: Config, art: ModelArtifact, plan: ArchivePlan, tables: Tables,
                 writer: str, warehouse: str, run_id: str, started: dt.datetime) -> list[dict]:
    """Score one chunk of dates and commit it; return its per-date counts."""
    cols = cfg.archive.columns
    staged = os.path.join(warehouse, "_staging", f"{run_id}-{plan.dates[0]}")
    read_obs, scope_obs = Observation("read"), Observation("scope")
    read_counts = {f"n{i}": plan.rows.get(d, 0) for i, d in enumerate(plan.dates)} if plan.rows is not None else {}
    scope_counts, tally_obs, wrote = {}, Observation("tallies"), False
    scored_at_us = int(started.timestamp()) * 1_000_000 + started.microsecond
    is_anomaly = F.col(row_groups.KIND) == row_groups.ANOMALY
    out = None
    if row_groups.usable(plan, cfg):
        out = row_groups.detect_row_groups(spark, plan, cfg, art, run_id, scored_at_us)
        if out is not None:
            # The counts ride along as observations of the small output stream, so the stage holds only
            # anomalies and the pairs' evidence (no partitioned write, no job to read counts back).
            out = out.observe(tally_obs, *_per_date_counts(plan.dates, "s", value=F.col(row_groups.SCOPED)),
                              *_per_date_counts(plan.dates, "k", value=F.col(row_groups.SKIPPED)),
                              *_tallies(plan.dates, is_anomaly))
    else:
        raw = read_archive(spark, plan, cols)
        if raw is not None:
            flows_df = canonical(raw, cols, cfg.archive.prefix_encoding)
            if plan.rows is None:  # remote archive: count while scanning (an observation costs ~10% of the job)
                flows_df = flows_df.observe(read_obs, *_per_date_counts(plan.dates, "n"))
            scoped = flows_df.where(scope_condition(cfg.scope))
            scoped = scoped.observe(scope_obs, *_per_date_counts(plan.dates, "s"),
                                    *_per_date_counts(plan.dates, "k", ~has_payload()))
            out = detect_flows(scoped, art, cfg, run_id, scored_at_us).observe(tally_obs,
                                                                               *_tallies(plan.dates, is_anomaly))
    if out is not None:
        # One action computes everything: the models run once, and the counts come from the observations.
        try:
            out.where(F.col(row_groups.KIND) != row_groups.COUNTS).select(*row_groups.STAGED) \
                .write.mode("overwrite").parquet(staged)
        except Exception as exc:
            raise _explain_spark_failure(exc, plan.root) from None
        scope_counts = tally_obs.get if row_groups.usable(plan, cfg) else scope_obs.get
        if plan.rows is None and not row_groups.usable(plan, cfg):
            read_counts = read_obs.get
        wrote = True
    tallies = dict(tally_obs.get) if wrote else {}
    escalated = 0
    if wrote and row_groups.pairs_on(art, cfg):
        pairs = escalated_pairs(spark, staged, art, cfg)
        escalated = pairs.num_rows
        if escalated:
            pair_obs = Observation("pairs")
            try:
                (pair_pass(spark, cfg, art, plan, pairs, staged, run_id, scored_at_us)
                 .observe(pair_obs, *_per_date_counts(plan.dates, "p"))
                 .select(*row_groups.STAGED).write.mode("append").parquet(staged))
            except Exception as exc:
                raise _explain_spark_failure(exc, plan.root) from None
            for i in range(len(plan.dates)):
                extra = int(pair_obs.get.get(f"p{i}") or 0)
                for k in ("qname", "total"):
                    tallies[f"{k}{i}"] = int(tallies.get(f"{k}{i}") or 0) + extra
    # Nothing staged (no readable files for these dates): the dates are still replaced, by no rows.
    delta_io.replace_dates(spark, staged if wrote else ANOMALIES.empty_table(), tables.anomalies, ANOMALIES,
                           plan.dates, writer, kind=(row_groups.KIND, row_groups.ANOMALY))
    staged_df = (spark.read.schema(spark_schema(row_groups.OUT)).parquet(staged).where(is_anomaly)
                 .select(*ANOMALIES.names) if wrote else spark.createDataFrame([], spark_schema(ANOMALIES)))
    update_patterns(spark, staged_df, plan.dates, (tables.pattern_days, tables.patterns), writer)
    delta_io.remove_folder(staged)
    out = []
    for i, d in enumerate(plan.dates):
        n_scope, n_skip = int(scope_counts.get(f"s{i}") or 0), int(scope_counts.get(f"k{i}") or 0)
        rule, model, qname, total = (int(tallies.get(f"{k}{i}") or 0) for k in ("rule", "model", "qname", "total"))
        out.append({"date": d, "flows_read": int(read_counts.get(f"n{i}") or 0), "flows_scored": n_scope - n_skip,
                    "flows_skipped": n_skip, "anomalies": total, "model_flagged": model, "rule_flagged": rule,
                    "qname_flagged": qname, "pairs_escalated": escalated})
    return out


def escalated_pairs(spark: SparkSession, staged: str, art: ModelArtifact, cfg: Config) -> pa.Table:
    """The chunk's escalated pairs (udfs/pairs.py ESCALATED, plus ``covered``: every slice that saw the
    pair kept its flows as candidates), from the evidence rows in the stage."""
    odd_rate, conf = art.meta.qname.get("odd_rate", cfg.pairs.odd_rate), cfg.pairs
    pair = list(pairs_mod.PAIR)
    if delta_io.is_local(staged):
        # A local stage is read on the driver directly: a few hundred thousand small rows, no Spark job.
        import pyarrow.dataset as ds

        ev = ds.dataset(delta_io.local_path(staged), format="parquet").to_table(
            columns=[*pair, row_groups.KIND, row_groups.NAMES, row_groups.KEY, row_groups.CAND],
            filter=ds.field(row_groups.KIND).isin([row_groups.PAIR_NAMES, row_groups.ODD_NAME]))
        kinds = ev[row_groups.KIND]
        names = ev.filter(pa.compute.equal(kinds, row_groups.PAIR_NAMES))
        odd = ev.filter(pa.compute.equal(kinds, row_groups.ODD_NAME)).select([*pair, row_groups.KEY])
        chosen = pairs_mod.escalate(
            pairs_mod.totals(names.select([*pair, row_groups.NAMES]).rename_columns(pairs_mod.NAMES.names)
                             .cast(pairs_mod.NAMES), odd.rename_columns(pairs_mod.ODD.names).cast(pairs_mod.ODD)),
            odd_rate, conf.min_share, conf.alpha)
        covered = (names.select([*pair, row_groups.CAND]).group_by(pair, use_threads=False)
                   .aggregate([(row_groups.CAND, "min")]).rename_columns([*pair, "covered"]))
    else:
        k = F.col(row_groups.KIND)
        ev = spark.read.schema(spark_schema(row_groups.OUT)).parquet(staged).where(
            k.isin(row_groups.PAIR_NAMES, row_groups.ODD_NAME))
        per_pair = ev.groupBy(*pair).agg(
            F.sum(F.when(k == row_groups.PAIR_NAMES, F.col(row_groups.NAMES))).alias("names"),
            F.count_distinct(F.when(k == row_groups.ODD_NAME, F.col(row_groups.KEY))).alias("odd"),
            F.min(F.when(k == row_groups.PAIR_NAMES, F.col(row_groups.CAND))).alias("covered"))
        # Only pairs that pass the share test come back to the driver, with the day's pair count (Bonferroni).
        per_pair = per_pair.withColumn("pairs_that_day", F.count(F.lit(1)).over(Window.partitionBy("date")))
        near = per_pair.where((F.col("names") > 0) & (F.col("odd") >= F.lit(conf.min_share) * F.col("names")))
        table = near.select(*pairs_mod.TOTALS.names, "covered").toArrow()
        chosen = pairs_mod.escalate(table.select(pairs_mod.TOTALS.names).cast(pairs_mod.TOTALS), odd_rate,
                                    conf.min_share, conf.alpha)
        covered = table.select([*pair, "covered"])
    out = chosen.join(covered, pair, use_threads=False)
    return out.set_column(out.schema.get_field_index("covered"), "covered",
                          pa.compute.fill_null(out["covered"], False))


def pair_pass(spark: SparkSession, cfg: Config, art: ModelArtifact, plan: ArchivePlan, pairs: pa.Table,
              staged: str, run_id: str, scored_at_us: int) -> DataFrame:
    """Pair escalation's second step: the escalated pairs' flows, grouped by pair, give the anomalies of
    detector qname-pair (OUT rows). Pairs whose every slice kept its flows as candidates take them from
    the stage; the others' flows are read again from the archive."""
    pair = list(pairs_mod.PAIR)
    covered = pairs.filter(pairs["covered"]).select(pair)
    again = pairs.filter(pa.compute.invert(pairs["covered"])).select(pair)
    parts = []
    if covered.num_rows:
        renamed = {row_groups.PREFIX: "orig_payload_prefix", row_groups.ORIG_BYTES: "orig_bytes"}
        cand = (spark.read.schema(spark_schema(row_groups.OUT)).parquet(staged)
                .where(F.col(row_groups.KIND) == row_groups.CANDIDATE)
                .join(F.broadcast(spark.createDataFrame(covered)), pair, "left_semi"))
        parts.append(cand.select(*[F.col(next((k for k, v in renamed.items() if v == c), c)).alias(c)
                                   for c in row_groups.ROWS]))
    if again.num_rows:
        rows = row_groups.pair_rows(spark, plan, cfg, again) if row_groups.usable(plan, cfg) else None
        if rows is None:
            cols = cfg.archive.columns
            flows_df = canonical(read_archive(spark, plan, cols), cols, cfg.archive.prefix_encoding)
            rows = (flows_df.where(scope_condition(cfg.scope) & has_payload()).select(*row_groups.ROWS)
                    .join(F.broadcast(spark.createDataFrame(again)), pair, "left_semi"))
        parts.append(rows.select(*row_groups.ROWS))
    rows = parts[0] if len(parts) == 1 else parts[0].unionByName(parts[1])
    return rows.groupBy(*pair).applyInArrow(row_groups.pair_detect(art, cfg, run_id, scored_at_us),
                                            spark_schema(row_groups.OUT))


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
