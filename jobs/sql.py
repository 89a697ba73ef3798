"""`portprint sql`: register the warehouse's Delta tables as Spark SQL views, and print results inertly.

Called by jobs/cli.py and the notebooks. Cells of the anomalies and runs tables hold bytes that came from traffic or from the
archive (flow ids, addresses, names), so a result is made inert (jobs/inert.py) before it reaches a terminal.
"""

from __future__ import annotations

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from portprint.conf.config import Config
from portprint.jobs.inert import inert
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
