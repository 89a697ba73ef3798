"""Part of the Sink: where each warehouse table lives, and appends to the unpartitioned tables people write
(verdicts, suppressions, the export cursor). Called by jobs/warehouse/__init__.py, jobs/triage.py,
jobs/suppress.py, jobs/export.py and jobs/sql.py.

Torch-free on purpose: the analysts' side (sql, notebooks, report, export) never loads the models.
"""

from __future__ import annotations

import os

import pyarrow as pa
from pyspark.sql import DataFrame, SparkSession

from portprint.conf.config import Config
from portprint.jobs.warehouse import delta as delta_io
from portprint.jobs.warehouse.tables import spark_schema


def table_path(cfg: Config, warehouse: str, key: str) -> str:
    """A table by its output.* key: a Unity Catalog name as configured, any other name a folder under the
    warehouse (jobs/warehouse/__init__.py table_paths places the scoring tables with it)."""
    name = getattr(cfg.output, key)
    return name if delta_io.is_table_name(name) else os.path.join(warehouse, name)


def read(spark: SparkSession, cfg: Config, warehouse: str, key: str, schema: pa.Schema,
         reader: str | None = None) -> DataFrame:
    """The table's current snapshot (empty with the schema when it does not exist yet)."""
    reader = reader or delta_io.choose_writer(spark, cfg.output.writer)
    return delta_io.read_table(spark, table_path(cfg, warehouse, key), schema, reader)


def append_rows(spark: SparkSession, cfg: Config, warehouse: str, key: str, rows: pa.Table,
                writer: str | None = None) -> None:
    """Append rows to an unpartitioned table, creating it on first use. An append never rewrites what is
    there, so concurrent writers (the CLI, an analyst's INSERT INTO) do not conflict."""
    table = table_path(cfg, warehouse, key)
    writer = writer or delta_io.choose_writer(spark, cfg.output.writer)
    if writer == delta_io.SPARK:
        if delta_io.is_table_name(table) and not spark.catalog.tableExists(table):
            cols = ", ".join(f"`{f.name}` {f.dataType.simpleString()}" for f in spark_schema(rows.schema).fields)
            where = cfg.output.location
            loc = f" LOCATION '{where.rstrip('/')}/{table.split('.')[-1].strip('`')}'" if where else ""
            spark.sql(f"CREATE TABLE IF NOT EXISTS {table} ({cols}) USING DELTA{loc}")
        df = spark.createDataFrame(rows.to_pylist(), schema=spark_schema(rows.schema))
        w = df.write.format("delta").mode("append")
        w.saveAsTable(table) if delta_io.is_table_name(table) else w.save(table)
        return
    from deltalake import write_deltalake

    write_deltalake(table, rows, mode="append")
