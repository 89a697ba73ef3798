"""Sink: the warehouse's Delta tables (`anomalies`, `runs`, `anomaly_patterns` and its per-date building block),
their staging area and each chunk's commits. Used by `score` and `evaluate` (staging), `sql` and `report`.

Delta is written in jobs/warehouse/delta.py only (Spark's Delta writer or delta-rs); schemas are in
jobs/warehouse/tables.py; the pattern tables' upkeep in jobs/warehouse/patterns.py.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pyarrow as pa
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from portprint.conf.config import Config
from portprint.jobs.engine.faults import fault
from portprint.jobs.warehouse import delta
from portprint.jobs.warehouse.history import COLUMNS as HISTORY_COLUMNS
from portprint.jobs.warehouse.history import COMMITTING, SUCCEEDED
from portprint.jobs.warehouse.lock import STAGING, WarehouseError, commit_lock, remove_stale_staging, run_mark
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
    """The tables of one warehouse root, written by one writer (Spark's Delta writer or delta-rs).

    A chunk is committed in this order, under the warehouse's commit lock (jobs/warehouse/lock.py): a
    `committing` row in `runs` for each date, then `anomalies`, `anomaly_pattern_days`, `anomaly_patterns` and
    `suppression_hits`, then the closing `succeeded` rows listing what was committed. A failure logs `failed`
    rows listing what was committed before it; a kill leaves the `committing` rows alone. Either way `runs`
    never claims more than the tables hold, and the next `score --new-only` redoes the dates."""

    def __init__(self, spark: SparkSession, cfg: Config, root: str, create: bool = True) -> None:
        self.spark, self.cfg, self.root = spark, cfg, root
        self.tables = table_paths(cfg, root)
        self.committed: list[str] = []  # what the chunk being committed has committed so far
        t = self.tables
        self.writer = delta.choose_writer(spark, cfg.output.writer, [t.anomalies, t.runs, t.pattern_days, t.patterns])
        for table, schema in ((t.anomalies, ANOMALIES), (t.runs, RUNS), (t.pattern_days, PATTERN_DAYS),
                              (t.patterns, PATTERNS)):
            if create:
                delta.ensure_table(spark, table, schema, cfg.output.location)  # catalog names only

    @contextlib.contextmanager
    def run(self, run_id: str, log: Callable[[str], None] = lambda m: None) -> Iterator[list[str]]:
        """For the block, mark the run alive (its staging is its own); first remove the staging of runs that
        were killed. Yields the staging folders removed."""
        with run_mark(self.root, run_id):
            stale = remove_stale_staging(self.root, self.cfg.output.stale_staging_hours * 3600)
            if stale:
                log(f"portprint score: removed the staging of {len(stale)} killed run(s): {', '.join(stale)}")
            yield stale

    @contextlib.contextmanager
    def stage(self, run_id: str, first_date: str) -> Iterator[Stage]:
        """A fresh staging folder for one chunk, removed however the chunk ends."""
        s = Stage(self.spark, os.path.join(self.root, STAGING, run_id, first_date))
        try:
            yield s
        finally:
            fault("score:before-unstage")
            s.remove()
            parent = os.path.dirname(s.path)
            if delta.is_local(parent):
                with contextlib.suppress(OSError):
                    os.rmdir(delta.local_path(parent))  # the run's folder, once its last stage is gone

    def remove_stale_staging(self) -> list[str]:
        """Remove the staging folders of failed or killed runs (jobs/warehouse/lock.py: on a local warehouse those
        no live run holds the mark of; on object storage those older than output.stale_staging_hours). Returns
        what was removed; for `maintain`."""
        return remove_stale_staging(self.root, self.cfg.output.stale_staging_hours * 3600)

    def history(self) -> list[dict]:
        """The `runs` rows (history.COLUMNS; columns an older table lacks are None), for jobs/warehouse/history.py."""
        t = self.tables.runs
        if not delta.table_exists(t, self.spark):
            return []
        if delta.is_local(t) and not delta.is_table_name(t):
            # Small, and read on the driver: delta-rs fills the columns older files lack with nulls.
            from deltalake import DeltaTable

            table = DeltaTable(delta.local_path(t))
            have = [f.name for f in table.schema().fields]
            rows = table.to_pyarrow_table(columns=[c for c in HISTORY_COLUMNS if c in have]).to_pylist()
        else:
            df = delta.read_table(self.spark, t, RUNS, self.writer)
            rows = [r.asDict() for r in df.select(*[c for c in HISTORY_COLUMNS if c in df.columns]).collect()]
        return [dict.fromkeys(HISTORY_COLUMNS) | r for r in rows]

    @contextlib.contextmanager
    def locked(self, run_id: str, log: Callable[[str], None], wait_s: float | None = None) -> Iterator[None]:
        """The warehouse's commit lock (jobs/warehouse/lock.py) for the block."""
        wait = self.cfg.output.lock_wait_s if wait_s is None else wait_s
        with commit_lock(self.root, run_id, wait, log):
            yield

    def commit(self, stage: Stage, dates: list[str], runs: list[dict], hits: list[dict] = (),
               history: pa.Table | None = None, *, rebuild_patterns: bool = False,
               log: Callable[[str], None] = lambda m: None) -> None:
        """Make the chunk's dates in `anomalies` exactly the staged anomalies (one commit; no rows if nothing was
        staged), fold them into the pattern tables, replace the dates' `suppression_hits` (what each rule kept
        out) and `escalation_history` (per name group), and log the chunk's `runs` rows: `committing` first, the
        given rows (`succeeded`) last.
        ``rebuild_patterns``: the dates were left half-finished by a killed run (patterns.update_patterns)."""
        t = self.tables
        self.committed = []
        keys = {t.anomalies: "anomalies", t.pattern_days: "anomaly_pattern_days", t.patterns: "anomaly_patterns"}
        with self.locked(runs[0]["run_id"] if runs else "", log):
            self.log([r | {"status": COMMITTING, "committed": [], "error": None} for r in runs])
            fault("score:before-anomalies")
            staged = stage.path if stage.written else ANOMALIES.empty_table()
            delta.replace_dates(self.spark, staged, t.anomalies, ANOMALIES, dates, self.writer, kind=(KIND, ANOMALY))
            self.committed.append("anomalies")
            fault("score:after-anomalies")
            anomalies = stage.anomalies() if stage.written else self.spark.createDataFrame([], spark_schema(ANOMALIES))
            update_patterns(self.spark, anomalies, dates, (t.pattern_days, t.patterns), self.writer,
                            rebuild=rebuild_patterns, committed=lambda table: self.committed.append(keys[table]))
            fault("score:after-patterns")
            hits_table = table_path(self.cfg, self.root, "suppression_hits")
            if hits or delta.table_exists(hits_table, self.spark):
                delta.ensure_table(self.spark, hits_table, SUPPRESSION_HITS, self.cfg.output.location)
                delta.replace_dates(self.spark, pa.Table.from_pylist(list(hits), schema=SUPPRESSION_HITS), hits_table,
                                    SUPPRESSION_HITS, dates, self.writer)
                self.committed.append("suppression_hits")
            if history is not None:
                history_table = table_path(self.cfg, self.root, "escalation_history")
                delta.ensure_table(self.spark, history_table, ESCALATION_HISTORY, self.cfg.output.location)
                delta.replace_dates(self.spark, history.cast(ESCALATION_HISTORY), history_table, ESCALATION_HISTORY,
                                    dates, self.writer)
                self.committed.append("escalation_history")
            self.log([r | {"status": SUCCEEDED, "committed": list(self.committed)} for r in runs])

    def log(self, runs: list[dict]) -> None:
        """Append rows to `runs` (stamped with logged_at)."""
        now = dt.datetime.now(dt.timezone.utc)
        rows = [r | {"logged_at": now} for r in runs]
        delta.append(self.spark, pa.Table.from_pylist(rows, schema=RUNS), self.tables.runs, self.writer)

    def log_failure(self, exc: BaseException, runs: list[dict], log: Callable[[str], None]) -> WarehouseError | None:
        """Append a failed chunk's rows (``exc`` says why; `committed` lists what the chunk did commit) under the
        commit lock, waiting a minute at most; never raises: the failure itself matters more than its log row.
        Returns the one-line error to raise instead of ``exc`` when the disk is full."""
        status = "interrupted" if isinstance(exc, KeyboardInterrupt) else "failed"
        full = full_disk(exc, self.root) if isinstance(exc, Exception) else None
        error = str(full or exc).splitlines()[0][:500] if str(full or exc) else type(exc).__name__
        rows = [r | {"status": status, "error": error, "committed": list(self.committed)} for r in runs]
        wait = min(self.cfg.output.lock_wait_s, 60.0)
        with contextlib.suppress(Exception), self.locked(runs[0]["run_id"] if runs else "", log, wait):
            self.log(rows)
        return full


_NO_SPACE = re.compile(r"No space left on device|ENOSPC|errno 28|Disk quota exceeded", re.IGNORECASE)


def full_disk(exc: BaseException, root: str) -> WarehouseError | None:
    """A one-line WarehouseError when ``exc`` (Python's, Spark's or delta-rs's) says the device is full."""
    text = f"{exc}\n{exc.__cause__ or ''}"
    if not (isinstance(exc, OSError) and exc.errno == 28) and not _NO_SPACE.search(text):
        return None
    return WarehouseError(f"no space left on the device holding {root} (the warehouse and its staging): this chunk "
                          "committed nothing more than `runs` lists; free space there and rerun with --new-only")


def counts_by_date(rows: pa.Table, dates: list[str], fields: tuple[str, ...]) -> dict[str, dict[str, int]]:
    """Sum staged COUNTS rows per date: {date: {field: n}} for every date (0 where a date had no rows)."""
    out = {d: dict.fromkeys(fields, 0) for d in dates}
    if rows.num_rows:
        g = rows.group_by(["date"], use_threads=False).aggregate([(f, "sum") for f in fields])
        for r in g.to_pylist():
            if r["date"] in out:
                out[r["date"]] = {f: int(r[f"{f}_sum"] or 0) for f in fields}
    return out


__all__ = ["STAGING", "Stage", "Tables", "Warehouse", "WarehouseError", "counts_by_date", "full_disk",
           "remove_stale_staging", "table_paths"]
