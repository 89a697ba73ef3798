"""Sink: the warehouse's Delta tables (`anomalies`, `runs`, `anomaly_patterns` and its per-date building block),
their staging area and each chunk's commits. Used by `score` and `evaluate` (staging), `sql` and `report`.

Delta is written in jobs/warehouse/delta.py only (Spark's Delta writer or delta-rs); schemas are in
jobs/warehouse/tables.py; the pattern tables' upkeep in jobs/warehouse/patterns.py.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass

import pyarrow as pa
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from portprint.conf.config import Config
from portprint.jobs.warehouse import delta
from portprint.jobs.warehouse.patterns import update_patterns
from portprint.jobs.warehouse.people import table_path
from portprint.jobs.warehouse.tables import (
    ANOMALIES,
    ESCALATION_HISTORY,
    PATTERN_DAYS,
    PATTERNS,
    RUNS,
    SUPPRESSION_HITS,
    spark_schema,
)
from portprint.udfs.schemas import ANOMALY, KIND, OUT

STAGING = "_staging"


@dataclass(frozen=True)
class Tables:
    anomalies: str
    runs: str
    pattern_days: str
    patterns: str


def table_paths(cfg: Config, root: str) -> Tables:
    """Where the tables live: catalog names (catalog.schema.table) as configured, other names as folders under
    the warehouse root."""
    return Tables(*(table_path(cfg, root, key) for key in ("anomalies", "runs", "pattern_days", "patterns")))


class Stage:
    """One chunk's staged Detect and Escalate output (udfs/schemas.py OUT rows) as Parquet under the warehouse.
    It holds raw prefixes of flows that were not flagged (pair candidates), so it is removed on every exit."""

    def __init__(self, spark: SparkSession, path: str) -> None:
        self.spark, self.path, self.written = spark, path, False

    def write(self, df: DataFrame, append: bool = False) -> None:
        df.select(*OUT.names).write.mode("append" if append else "overwrite").parquet(self.path)
        self.written = True

    def frame(self, *kinds: str) -> DataFrame:
        """The staged rows of these kinds (all columns of OUT)."""
        if not self.written:
            return self.spark.createDataFrame([], spark_schema(OUT))
        return self.spark.read.schema(spark_schema(OUT)).parquet(self.path).where(F.col(KIND).isin(*kinds))

    def table(self, kinds: tuple[str, ...], columns: list[str]) -> pa.Table:
        """The staged rows of these kinds on the driver: read directly when the stage is local (small rows,
        no Spark job), through Spark otherwise."""
        if not self.written:
            return OUT.empty_table().select(columns)
        if delta.is_local(self.path):
            import pyarrow.dataset as ds

            if not delta.has_parquet(self.path):
                return OUT.empty_table().select(columns)
            return ds.dataset(delta.local_path(self.path), format="parquet", schema=OUT).to_table(
                columns=columns, filter=ds.field(KIND).isin(list(kinds)))
        return self.frame(*kinds).select(*columns).toArrow()

    def anomalies(self) -> DataFrame:
        return self.frame(ANOMALY).select(*ANOMALIES.names)

    def remove(self) -> None:
        delta.remove_folder(self.path)


class Warehouse:
    """The tables of one warehouse root, written by one writer (Spark's Delta writer or delta-rs)."""

    def __init__(self, spark: SparkSession, cfg: Config, root: str) -> None:
        self.spark, self.cfg, self.root = spark, cfg, root
        self.writer = delta.choose_writer(spark, cfg.output.writer)
        self.tables = table_paths(cfg, root)
        t = self.tables
        for table, schema in ((t.anomalies, ANOMALIES), (t.runs, RUNS), (t.pattern_days, PATTERN_DAYS),
                              (t.patterns, PATTERNS)):
            delta.ensure_table(spark, table, schema, cfg.output.location)  # catalog names only

    @contextlib.contextmanager
    def stage(self, run_id: str, first_date: str) -> Iterator[Stage]:
        """A fresh staging folder for one chunk, removed however the chunk ends."""
        s = Stage(self.spark, os.path.join(self.root, STAGING, f"{run_id}-{first_date}"))
        try:
            yield s
        finally:
            s.remove()

    def scored(self, model_version: str, escalation: str | None = None) -> dict[str, str]:
        """date -> archive snapshot of the latest successful run with this model (and, when given, these
        escalation settings: `runs.escalation`)."""
        runs = delta.read_table(self.spark, self.tables.runs, RUNS, self.writer)
        ok = (F.col("status") == "succeeded") & (F.col("model_version") == model_version)
        if escalation is not None:
            ok = ok & (F.col("escalation") == escalation)
        rows = runs.where(ok).groupBy("date").agg(F.max_by("archive_snapshot", "started_at").alias("snap")).collect()
        return {r["date"]: r["snap"] or "" for r in rows}

    def commit(self, stage: Stage, dates: list[str], runs: list[dict], hits: list[dict] = (),
               history: pa.Table | None = None) -> None:
        """Make the chunk's dates in `anomalies` exactly the staged anomalies (one commit; no rows if nothing was
        staged), fold them into the pattern tables, replace the dates' `suppression_hits` (what each rule kept
        out) and `escalation_history` (per name group), and log the chunk's `runs` rows."""
        t = self.tables
        staged = stage.path if stage.written else ANOMALIES.empty_table()
        delta.replace_dates(self.spark, staged, t.anomalies, ANOMALIES, dates, self.writer, kind=(KIND, ANOMALY))
        anomalies = stage.anomalies() if stage.written else self.spark.createDataFrame([], spark_schema(ANOMALIES))
        update_patterns(self.spark, anomalies, dates, (t.pattern_days, t.patterns), self.writer)
        hits_table = table_path(self.cfg, self.root, "suppression_hits")
        if hits or delta.table_exists(hits_table, self.spark):
            delta.ensure_table(self.spark, hits_table, SUPPRESSION_HITS, self.cfg.output.location)
            delta.replace_dates(self.spark, pa.Table.from_pylist(list(hits), schema=SUPPRESSION_HITS), hits_table,
                                SUPPRESSION_HITS, dates, self.writer)
        if history is not None:
            history_table = table_path(self.cfg, self.root, "escalation_history")
            delta.ensure_table(self.spark, history_table, ESCALATION_HISTORY, self.cfg.output.location)
            delta.replace_dates(self.spark, history.cast(ESCALATION_HISTORY), history_table, ESCALATION_HISTORY, dates,
                                self.writer)
        self.log(runs)

    def log(self, runs: list[dict]) -> None:
        """Append rows to `runs`."""
        delta.append(self.spark, pa.Table.from_pylist(runs, schema=RUNS), self.tables.runs, self.writer)


def counts_by_date(rows: pa.Table, dates: list[str], fields: tuple[str, ...]) -> dict[str, dict[str, int]]:
    """Sum staged COUNTS rows per date: {date: {field: n}} for every date (0 where a date had no rows)."""
    out = {d: dict.fromkeys(fields, 0) for d in dates}
    if rows.num_rows:
        g = rows.group_by(["date"], use_threads=False).aggregate([(f, "sum") for f in fields])
        for r in g.to_pylist():
            if r["date"] in out:
                out[r["date"]] = {f: int(r[f"{f}_sum"] or 0) for f in fields}
    return out


__all__ = ["Stage", "Tables", "Warehouse", "counts_by_date", "table_paths"]
