"""Register the warehouse's Delta tables as Spark SQL views for analysts."""

from __future__ import annotations

from pyspark.sql import SparkSession

from portprint.jobs import delta_io
from portprint.jobs.config import Config
from portprint.jobs.score import table_paths
from portprint.jobs.tables import ANOMALIES, RUNS


def register_tables(spark: SparkSession, cfg: Config, warehouse: str) -> str:
    """Create temp views `anomalies` and `runs`; return the reader used (spark or delta-rs)."""
    reader = delta_io.choose_writer(spark, cfg.output.writer)
    anomalies, runs = table_paths(cfg, warehouse)
    delta_io.read_table(spark, anomalies, ANOMALIES, reader).createOrReplaceTempView("anomalies")
    delta_io.read_table(spark, runs, RUNS, reader).createOrReplaceTempView("runs")
    return reader
