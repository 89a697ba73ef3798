"""`portprint sql`: register the warehouse's Delta tables as Spark SQL views for analysts. Called by jobs/cli.py
and the notebooks."""

from __future__ import annotations

from pyspark.sql import SparkSession

from portprint.conf.config import Config
from portprint.jobs.warehouse import delta as delta_io
from portprint.jobs.warehouse import table_paths
from portprint.jobs.warehouse.tables import ANOMALIES, PATTERNS, RUNS


def register_tables(spark: SparkSession, cfg: Config, warehouse: str) -> str:
    """Create temp views `anomalies`, `runs` and `anomaly_patterns`; return the reader used (spark or delta-rs)."""
    reader = delta_io.choose_writer(spark, cfg.output.writer)
    t = table_paths(cfg, warehouse)
    for view, path, schema in (("anomalies", t.anomalies, ANOMALIES), ("runs", t.runs, RUNS),
                               ("anomaly_patterns", t.patterns, PATTERNS)):
        delta_io.read_table(spark, path, schema, reader).createOrReplaceTempView(view)
    return reader
