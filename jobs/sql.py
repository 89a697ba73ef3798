"""Register the warehouse's Delta tables as Spark SQL views for analysts."""

from __future__ import annotations

from pyspark.sql import SparkSession

from portprint.jobs import delta_io
from portprint.jobs.config import Config
from portprint.jobs.score import table_paths
from portprint.jobs.tables import ANOMALIES, PATTERNS, RUNS


def register_tables(spark: SparkSession, cfg: Config, warehouse: str) -> str:
    """Create temp views `anomalies`, `runs` and `anomaly_patterns`; return the reader used (spark or delta-rs)."""
    reader = delta_io.choose_writer(spark, cfg.output.writer)
    t = table_paths(cfg, warehouse)
    for view, path, schema in (("anomalies", t.anomalies, ANOMALIES), ("runs", t.runs, RUNS),
                               ("anomaly_patterns", t.patterns, PATTERNS)):
        delta_io.read_table(spark, path, schema, reader).createOrReplaceTempView(view)
    return reader
