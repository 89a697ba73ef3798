"""`portprint sql`: register the warehouse's Delta tables and views for analysts (`portprint sql`, the notebooks,
the report), and print results inertly. Torch-free: it never imports the scoring code.

Cells of the anomalies and runs tables hold bytes that came from traffic or from the archive (flow ids, addresses,
names), so a result is made inert (jobs/engine/render.py) before it reaches a terminal.
"""

from __future__ import annotations

import datetime as dt
import os

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from portprint.conf.config import Config
from portprint.jobs import triage
from portprint.jobs.engine.render import terminal as inert
from portprint.jobs.warehouse import delta as delta_io
from portprint.jobs.warehouse import people as people_tables
from portprint.jobs.warehouse.tables import (
    ANOMALIES,
    ESCALATION_HISTORY,
    EXPORTED,
    PATTERNS,
    RUNS,
    SUPPRESSION_HITS,
    SUPPRESSIONS,
    VERDICTS,
)

VIEWS = ("anomalies", "runs", "anomaly_patterns", "verdicts", "suppressions", "suppression_rules",
         "suppression_hits", "escalation_history", "exported", "anomalies_triaged", "verdicts_rejected",
         "suppressions_rejected")


def register_tables(spark: SparkSession, cfg: Config, warehouse: str, at: dt.datetime | None = None) -> str:
    """Create the temp views VIEWS; return the reader used (spark or delta-rs).

    `anomalies_triaged` is `anomalies` with each row's pattern, status, verdict and suppressing rule, as the
    rules stand at ``at`` (default: now). `suppression_rules` is one row per rule with its state;
    `verdicts_rejected` and `suppressions_rejected` list rows written by hand that are ignored, with why.
    """
    reader = delta_io.choose_writer(spark, cfg.output.writer)
    for view, key, schema in (("anomalies", "anomalies", ANOMALIES), ("runs", "runs", RUNS),
                              ("anomaly_patterns", "patterns", PATTERNS),
                              ("suppressions", "suppressions", SUPPRESSIONS),
                              ("suppression_hits", "suppression_hits", SUPPRESSION_HITS),
                              ("escalation_history", "escalation_history", ESCALATION_HISTORY),
                              ("exported", "exported", EXPORTED)):
        people_tables.read(spark, cfg, warehouse, key, schema, reader).createOrReplaceTempView(view)
    verdicts = triage.read_verdicts(spark, cfg, warehouse, reader)
    verdicts.drop("problem").createOrReplaceTempView("verdicts")
    verdicts.where(F.col("problem").isNotNull()).createOrReplaceTempView("verdicts_rejected")
    at = at or triage.now()
    rules, problems = triage.load_rules(spark, cfg, warehouse, reader)
    triage.rules_frame(spark, rules, at).createOrReplaceTempView("suppression_rules")
    triage.rejected_rules_frame(spark, problems).createOrReplaceTempView("suppressions_rejected")
    triage.triaged(spark.table("anomalies"), verdicts, rules, at).createOrReplaceTempView("anomalies_triaged")
    if reader == delta_io.SPARK and cfg.spark.master is not None:
        register_history(spark, cfg, warehouse)
    return reader


# The tables analysts write by hand (`INSERT INTO portprint.verdicts ...`, README). They exist only once someone
# recorded a verdict or a rule; `portprint sql --write` creates them empty first, so a first INSERT has a table.
WRITABLE = (("verdicts", VERDICTS), ("suppressions", SUPPRESSIONS))


def create_writable_tables(spark: SparkSession, cfg: Config, warehouse: str) -> None:
    for key, schema in WRITABLE:
        if not delta_io.table_exists(people_tables.table_path(cfg, warehouse, key), spark):
            people_tables.append_rows(spark, cfg, warehouse, key, schema.empty_table())


# The warehouse's tables as `portprint sql` names them for time travel: <output.sql_schema>.<name>.
HISTORY = (("anomalies", "anomalies"), ("runs", "runs"), ("anomaly_patterns", "patterns"),
           ("anomaly_pattern_days", "pattern_days"), ("suppression_hits", "suppression_hits"),
           ("verdicts", "verdicts"), ("suppressions", "suppressions"), ("exported", "exported"))


def register_history(spark: SparkSession, cfg: Config, warehouse: str) -> dict[str, str]:
    """Name each existing path table of the warehouse ``<sql_schema>.<table>`` in the local session's catalog (an
    external table over the same folder: nothing is copied, and dropping the name leaves the files).

    Temp views cannot time-travel; catalog tables can: ``SELECT ... FROM portprint.anomalies VERSION AS OF 3``,
    ``DESCRIBE HISTORY portprint.anomalies``. A name already pointing at another warehouse's folder is moved to
    this one; a managed table of that name is left alone. Returns name -> path of what is registered."""
    schema = cfg.output.sql_schema
    out: dict[str, str] = {}
    for name, key in HISTORY:
        path = people_tables.table_path(cfg, warehouse, key)
        if delta_io.is_table_name(path) or not delta_io.table_exists(path, spark):
            continue  # catalog tables time-travel by their own names
        full = f"spark_catalog.{schema}.{name}"
        location = _normal(path)
        if spark.catalog.tableExists(full):
            detail = spark.sql(f"DESCRIBE DETAIL {full}").select("location").first()
            if detail and _normal(detail["location"] or "") == location:
                out[full] = path
                continue
            if spark.catalog.getTable(full).tableType.upper() != "EXTERNAL":
                continue
            spark.sql(f"DROP TABLE {full}")  # an external table: the name goes, its files stay
        elif not spark.catalog.databaseExists(f"spark_catalog.{schema}"):
            spark.sql(f"CREATE SCHEMA IF NOT EXISTS spark_catalog.{schema}")
        spark.sql(f"CREATE TABLE {full} USING DELTA LOCATION '{location}'")
        out[full] = path
    return out


def _normal(path: str) -> str:
    """A table location as Spark's catalog reports it (local folders as absolute paths, no file: prefix)."""
    if delta_io.is_local(path):
        return os.path.abspath(delta_io.local_path(path)).rstrip("/")
    return path.rstrip("/")


def inert_frame(spark: SparkSession, df: DataFrame, limit: int) -> DataFrame:
    """The first ``limit`` + 1 rows of ``df`` as strings made inert (binary columns stay bytes, which
    ``show`` prints as hex), with inert column names: what ``show`` may print as it is.

    Every other column is cast to a string by Spark (as ``show`` itself renders it) and then to its raw
    bytes, so text that is not valid UTF-8 reaches ``inert`` as it is stored."""
    n = len(df.columns)
    positional = df.toDF(*[f"c{i}" for i in range(n)])  # result columns may share a name (a join)
    binary = [isinstance(f.dataType, T.BinaryType) for f in positional.schema.fields]
    cols = [F.col(f"c{i}") if binary[i] else F.col(f"c{i}").cast("string").cast("binary").alias(f"c{i}")
            for i in range(n)]
    rows = positional.select(*cols).limit(limit + 1).collect()
    schema = T.StructType([T.StructField(inert(name), T.BinaryType() if binary[i] else T.StringType())
                           for i, name in enumerate(df.columns)])
    data = [tuple(bytes(v) if binary[i] and v is not None else v if binary[i] else inert(v)
                  for i, v in enumerate(row)) for row in rows]
    return spark.createDataFrame(data, schema)
