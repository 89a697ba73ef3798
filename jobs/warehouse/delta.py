"""The one place that writes Delta: Spark's Delta data source where it exists, delta-rs where it does not.
Called by jobs/warehouse/ (the Sink) and the commands that read the tables (`sql`, `report`).

Both write the same Delta protocol table (same schema, partitioned by ``date``), so Databricks,
Spark, DuckDB and Polars read either. Rewrites of a date are one Delta commit with a predicate:
a rerun replaces that date's rows (never duplicates) and a failure leaves the table as it was.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterable

import pyarrow as pa
import pyarrow.compute
import pyarrow.dataset as ds
from pyspark.sql import DataFrame, DataFrameWriter, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import StructType

from portprint.jobs.warehouse.tables import spark_schema

SPARK = "spark"
DELTA_RS = "delta-rs"
_TABLE_NAME = re.compile(r"^[A-Za-z0-9_`-]+\.[A-Za-z0-9_`-]+\.[A-Za-z0-9_`-]+$")


def is_table_name(table: str) -> bool:
    """A Unity Catalog name (catalog.schema.table) rather than a path: written with saveAsTable."""
    return bool(_TABLE_NAME.match(table))


def _sql_ref(table: str) -> str:
    return table if is_table_name(table) else f"delta.`{table}`"


def _save(writer: DataFrameWriter, table: str) -> None:
    if is_table_name(table):
        writer.saveAsTable(table)
    else:
        writer.save(table)


def ensure_table(spark: SparkSession, table: str, schema: pa.Schema, location: str | None = None) -> None:
    """Create a Unity Catalog table if it does not exist: managed, or external under ``location``."""
    if not is_table_name(table) or spark.catalog.tableExists(table):
        return
    columns = ", ".join(f"`{f.name}` {f.dataType.simpleString()}" for f in spark_schema(schema).fields)
    partitioned = " PARTITIONED BY (date)" if "date" in schema.names else ""
    where = f" LOCATION '{location.rstrip('/')}/{table.split('.')[-1].strip('`')}'" if location else ""
    spark.sql(f"CREATE TABLE IF NOT EXISTS {table} ({columns}) USING DELTA{partitioned}{where}")


def spark_delta_available(spark: SparkSession) -> bool:
    """Is Spark's Delta data source on the classpath? Probed by reading a path that cannot exist:
    a missing data source and a missing table fail differently. Works on Spark Connect too."""
    try:
        spark.read.format("delta").load("/nonexistent/portprint-delta-probe").limit(0).collect()
    except Exception as exc:
        text = str(exc)
        return not ("DATA_SOURCE_NOT_FOUND" in text or "Failed to find data source: delta" in text)
    return True


def choose_writer(spark: SparkSession, requested: str) -> str:
    """auto: Spark's Delta writer when it is on the classpath, delta-rs otherwise."""
    if requested in (SPARK, DELTA_RS):
        if requested == SPARK and not spark_delta_available(spark):
            raise RuntimeError("output.writer is spark but Spark has no Delta data source: add delta-spark's "
                               "jars (configure_spark_with_delta_pip) or set output.writer: auto")
        return requested
    return SPARK if spark_delta_available(spark) else DELTA_RS


def date_predicate(dates: Iterable[str]) -> str:
    quoted = ", ".join(f"'{d}'" for d in sorted(set(dates)))
    return f"date IN ({quoted})"


def is_local(path: str) -> bool:
    """Is this a path on the driver's filesystem (plain or file:)?"""
    return "://" not in path or path.startswith("file:")


def local_path(path: str) -> str:
    """A filesystem path for a local URI (file:/x, file:///x) or plain path."""
    return "/" + path[len("file:"):].lstrip("/") if path.startswith("file:") else path


def replace_dates(spark: SparkSession, staged: str | pa.Table, table: str, schema: pa.Schema, dates: list[str],
                  writer: str, batch_rows: int = 65536, kind: tuple[str, str] | None = None) -> None:
    """Make ``table``'s rows for ``dates`` exactly the staged rows, in one commit. ``staged`` is a
    folder of Parquet files (the anomalies, any size) or a small driver-side Arrow table. ``kind``
    (column, value): the staged files also hold other rows; keep those with this value."""
    small = isinstance(staged, pa.Table)
    if writer == SPARK:
        if small:
            df = spark.createDataFrame(staged.select(schema.names).cast(schema))
        elif kind:
            fields = [*spark_schema(schema).fields, *spark_schema(pa.schema([(kind[0], pa.string())])).fields]
            df = (spark.read.schema(StructType(fields)).parquet(staged).where(F.col(kind[0]) == kind[1])
                  .select(*schema.names))
        else:
            df = spark.read.schema(spark_schema(schema)).parquet(staged)
        w = (df.write.format("delta").mode("overwrite").option("replaceWhere", date_predicate(dates))
             .partitionBy("date"))
        _save(w, table)
        return
    from deltalake import write_deltalake

    if small:
        batches = iter(staged.select(schema.names).cast(schema).to_batches(batch_rows))
    else:
        # Stream the staged files batch by batch: the driver never holds more than one batch.
        dataset = ds.dataset(local_path(staged), format="parquet") if has_parquet(staged) else None
        # Only the table's columns: staging may carry bookkeeping columns beside them.
        where = (ds.field(kind[0]) == kind[1]) if kind and dataset and kind[0] in dataset.schema.names else None
        batches = ((b.select(schema.names).cast(schema)
                    for b in dataset.to_batches(batch_size=batch_rows, filter=where))
                   if dataset else iter(()))
    reader = pa.RecordBatchReader.from_batches(schema, batches)
    write_deltalake(table, reader, mode="overwrite", predicate=date_predicate(dates), partition_by=["date"])


def has_parquet(path: str) -> bool:
    root = local_path(path)
    return os.path.isdir(root) and any(f.endswith(".parquet") for f in os.listdir(root))


def append(spark: SparkSession, rows: pa.Table, table: str, writer: str) -> None:
    """Append a small driver-side table (the runs log). Columns the table lacks (written by an older portprint)
    are added to it."""
    if writer == SPARK:
        df = spark.createDataFrame(rows.to_pylist(), schema=spark_schema(rows.schema))
        _save(df.write.format("delta").mode("append").option("mergeSchema", "true").partitionBy("date"), table)
        return
    from deltalake import write_deltalake

    write_deltalake(table, rows, mode="append", partition_by=["date"], schema_mode="merge")


def remove_folder(path: str) -> None:
    """Remove a staging folder, local or on object storage (pyarrow.fs; s3a:// is S3 to it). Missing is fine."""
    if is_local(path):
        shutil.rmtree(local_path(path), ignore_errors=True)
        return
    import pyarrow.fs as pafs

    uri = "s3://" + path[len("s3a://"):] if path.startswith("s3a://") else path
    fs, inner = pafs.FileSystem.from_uri(uri)
    if fs.get_file_info(inner).type != pafs.FileType.NotFound:
        fs.delete_dir(inner)


def table_exists(table: str, spark: SparkSession | None = None) -> bool:
    """Does the Delta table exist yet? (A first run reads runs and the pattern tables before writing them.)"""
    if is_table_name(table):
        return spark is not None and spark.catalog.tableExists(table)
    if is_local(table):
        return os.path.isdir(os.path.join(local_path(table), "_delta_log"))
    if spark is None:
        return True
    try:  # a cloud URI: ask Spark's Delta reader (works on Spark Connect too)
        spark.read.format("delta").load(table).limit(0).collect()
    except Exception as exc:
        text = str(exc)
        if any(s in text for s in ("DELTA_MISSING_DELTA_TABLE", "PATH_NOT_FOUND", "is not a Delta table")):
            return False
        raise
    return True


def read_table(spark: SparkSession, table: str, schema: pa.Schema, writer: str) -> DataFrame:
    """A Spark DataFrame of the table's current snapshot, with or without Spark's Delta reader.

    Without it, the snapshot's data files are listed by delta-rs and read by Spark's Parquet
    reader: the same rows, scanned in parallel, never collected to the driver.
    """
    sschema = spark_schema(schema)
    if not table_exists(table, spark):
        return spark.createDataFrame([], sschema)
    if writer == SPARK:
        return spark.read.table(table) if is_table_name(table) else spark.read.format("delta").load(table)
    from deltalake import DeltaTable

    dt = DeltaTable(table)
    features = set(dt.protocol().writer_features or [])
    if features & {"deletionVectors", "columnMapping"}:
        raise RuntimeError(f"{table} uses {sorted(features)}, which Spark's Parquet reader cannot apply; "
                           "read it with Spark's Delta data source (Databricks or delta-spark jars)")
    files = dt.file_uris()
    if not files:
        return spark.createDataFrame([], sschema)
    df = spark.read.option("basePath", local_path(table)).parquet(*files)
    return df.select(*[df[f.name].cast(f.dataType).alias(f.name) for f in sschema.fields])


def merge_upsert(spark: SparkSession, source: pa.Table, table: str, key: str, writer: str) -> None:
    """MERGE ``source`` into ``table`` on ``key``: rows with flows = 0 delete, others update or insert.

    One Delta commit either way: Spark SQL's MERGE INTO where the Delta data source exists, delta-rs's
    merge otherwise.
    """
    live = source.filter(pa.compute.greater(source["flows"], 0))
    if not table_exists(table, spark):
        if live.num_rows:
            if writer == SPARK:
                df = spark.createDataFrame(live.to_pylist(), schema=spark_schema(live.schema))
                _save(df.write.format("delta"), table)
            else:
                from deltalake import write_deltalake

                write_deltalake(table, live)
        return
    if writer == SPARK:
        spark.createDataFrame(source.to_pylist(), schema=spark_schema(source.schema)).createOrReplaceTempView(
            "_portprint_merge_source")
        spark.sql(f"MERGE INTO {_sql_ref(table)} AS t USING _portprint_merge_source AS s ON t.{key} = s.{key} "
                  "WHEN MATCHED AND s.flows = 0 THEN DELETE WHEN MATCHED THEN UPDATE SET * "
                  "WHEN NOT MATCHED AND s.flows > 0 THEN INSERT *")
        return
    from deltalake import DeltaTable

    (DeltaTable(table).merge(source=source, predicate=f"t.{key} = s.{key}", source_alias="s", target_alias="t")
     .when_matched_delete(predicate="s.flows = 0")
     .when_matched_update_all()
     .when_not_matched_insert_all(predicate="s.flows > 0")
     .execute())
