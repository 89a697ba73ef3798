"""The nightly scoring job: archive dates in, Delta tables `anomalies` and `runs` out."""

from __future__ import annotations

import datetime as dt
import os
import re
import shutil
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

import pyarrow as pa
from pyspark.sql import DataFrame, Observation, SparkSession
from pyspark.sql import functions as F

from portprint.jobs import delta_io
from portprint.jobs.archive import ArchiveError, plan_archive, read_archive
from portprint.jobs.config import Config
from portprint.jobs.tables import ANOMALIES, RUNS
from portprint.jobs.transforms import canonical, has_payload, in_scope, score_flows
from portprint.models.artifact import ModelArtifact, ModelError
from portprint.udfs.features import FEATURE_VERSION
from portprint.udfs.scoring import make_udfs


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


def table_paths(cfg: Config, warehouse: str) -> tuple[str, str]:
    """Where the two tables live: names from config, relative to the warehouse folder."""
    return (os.path.join(warehouse, cfg.output.anomalies), os.path.join(warehouse, cfg.output.runs))


def _per_date_counts(dates: list[str], prefix: str, condition=None) -> list:
    cond = F.lit(True) if condition is None else condition
    return [F.sum(F.when((F.col("date") == d) & cond, 1).otherwise(0)).alias(f"{prefix}{i}")
            for i, d in enumerate(dates)]


def load_model(model_dir: str) -> ModelArtifact:
    art = ModelArtifact.load(model_dir)
    if art.meta.feature_version != FEATURE_VERSION:
        raise ModelError(f"model {model_dir} uses features {art.meta.feature_version}, this portprint computes "
                         f"{FEATURE_VERSION}: retrain with `portprint train`")
    return art


def run_score(spark: SparkSession, cfg: Config, flows: str, model_dir: str, warehouse: str,
              start: str | None = None, end: str | None = None,
              log: Callable[[str], None] = lambda m: print(m, file=sys.stderr)) -> ScoreReport:
    """Score every archive date in [start, end] and replace those dates in `anomalies`; log to `runs`."""
    t0 = time.monotonic()
    art = load_model(model_dir)
    meta = art.meta
    cols = cfg.archive.columns
    plan = plan_archive(flows, cols, cfg.archive.prefix_encoding, start, end)
    writer = delta_io.choose_writer(spark, cfg.output.writer)
    anomalies_table, runs_table = table_paths(cfg, warehouse)
    run_id = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ-") + uuid.uuid4().hex[:8]
    started = dt.datetime.now(dt.timezone.utc)
    log(f"portprint score: run {run_id}, {len(plan.dates)} date(s) {plan.dates[0]}..{plan.dates[-1]}, "
        f"model {meta.model_version} (threshold {meta.threshold:.4g}), writer {writer}")
    spark.conf.set("spark.sql.parquet.outputTimestampType", "TIMESTAMP_MICROS")

    staged = os.path.join(warehouse, "_staging", run_id)
    read_obs, scope_obs = Observation("read"), Observation("scope")
    raw = read_archive(spark, plan, cols)
    if raw is not None:
        score_udf, explain_udf = make_udfs(art.weights, meta.model_version, meta.width, meta.id_mode,
                                           tuple(meta.hidden), cfg.spark.torch_threads_per_task,
                                           cfg.output.top_bytes)
        flows_df = canonical(raw, cols, cfg.archive.prefix_encoding)
        flows_df = flows_df.observe(read_obs, *_per_date_counts(plan.dates, "n"))
        scoped = in_scope(flows_df, cfg.scope)
        scoped = scoped.observe(scope_obs, *_per_date_counts(plan.dates, "s"),
                                *_per_date_counts(plan.dates, "k", ~has_payload()))
        anomalies = score_flows(scoped.where(has_payload()), score_udf, explain_udf, width=meta.width,
                                threshold=meta.threshold, model_version=meta.model_version, run_id=run_id,
                                scored_at=started.strftime("%Y-%m-%d %H:%M:%S.%f"))
        # One action computes everything: the UDFs run once, and the counts come from the observations.
        try:
            anomalies.write.mode("overwrite").parquet(staged)
        except Exception as exc:
            raise _explain_spark_failure(exc, flows) from None
        read_counts, scope_counts = read_obs.get, scope_obs.get
    else:
        read_counts, scope_counts = {}, {}
    log(f"portprint score: scored in {time.monotonic() - t0:.1f}s; writing {anomalies_table}")
    found = _staged_counts(spark, staged) if raw is not None else {}
    delta_io.replace_dates(spark, staged, anomalies_table, ANOMALIES, plan.dates, writer)

    seconds = time.monotonic() - t0
    rows = []
    for i, d in enumerate(plan.dates):
        n_scope, n_skip = int(scope_counts.get(f"s{i}") or 0), int(scope_counts.get(f"k{i}") or 0)
        rule, model, total = found.get(d, (0, 0, 0))
        rows.append({
            "run_id": run_id, "date": d, "status": "succeeded",
            "flows_read": int(read_counts.get(f"n{i}") or 0), "flows_scored": n_scope - n_skip,
            "flows_skipped": n_skip, "anomalies": total, "model_flagged": model, "rule_flagged": rule,
            "threshold": meta.threshold, "model_version": meta.model_version, "writer": writer,
            "seconds": seconds, "started_at": started, "archive": flows,
        })
    delta_io.append(spark, pa.Table.from_pylist(rows, schema=RUNS), runs_table, writer)
    if "://" not in staged:
        shutil.rmtree(staged, ignore_errors=True)
    return ScoreReport(run_id, plan.dates, writer, sum(r["flows_read"] for r in rows),
                       sum(r["flows_scored"] for r in rows), sum(r["flows_skipped"] for r in rows),
                       sum(r["anomalies"] for r in rows), seconds, anomalies_table, runs_table,
                       meta.model_version)


def _staged_counts(spark: SparkSession, staged: str) -> dict[str, tuple[int, int, int]]:
    """Per date: (rule flagged, model flagged, anomalies), read back from the small staged output."""
    df: DataFrame = spark.read.parquet(staged)
    out = df.groupBy("date").agg(
        F.sum(F.when(F.col("detector") == "header-rule", 1).otherwise(0)).alias("rule"),
        F.sum(F.when(F.col("score") > 1, 1).otherwise(0)).alias("model"),
        F.count(F.lit(1)).alias("total"),
    ).collect()
    return {r["date"]: (int(r["rule"]), int(r["model"]), int(r["total"])) for r in out}


def _explain_spark_failure(exc: Exception, flows: str) -> Exception:
    """Turn Spark's long failure into one line that names the file and says what to do.

    Only read failures become ArchiveError; anything else (a bug, a lost worker) is returned as it
    was so its traceback is not disguised as bad input.
    """
    text = str(exc)
    m = re.search(r"FAILED_READ_FILE[^\n]*?reading file (\S+?)\.?(?:\s|$)", text)
    if not m:
        return exc
    reason = re.search(r"Caused by: ([^\n]+)", text)
    return ArchiveError(f"cannot read {m.group(1)}: {reason.group(1)[:300] if reason else 'corrupt or unreadable'}"
                        f". Nothing was written; move the file out of {flows} (or restore it) and rerun the date")
