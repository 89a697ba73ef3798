"""The one place that writes Delta: Spark's Delta data source where it exists, delta-rs where it does not.
Called by jobs/warehouse/ (the Sink) and the commands that read the tables (`sql`, `report`).

Both write the same Delta protocol table (same schema, partitioned by ``date``), so Databricks,
Spark, DuckDB and Polars read either, and a table one writer started the other continues. Rewrites of a
date are one Delta commit with a predicate: a rerun replaces that date's rows (never duplicates) and a
failure leaves the table as it was. Every write merges the schema: a table an older portprint wrote (fewer
columns) takes the new columns on its next write, its history untouched.

A table is a path (local, ``/Volumes``, ``s3://``/``s3a://``, ``abfss://``, ``gs://``) or a catalog name
(``catalog.schema.table``: Unity Catalog, or the local session's ``spark_catalog``). delta-rs reaches S3
with the settings Spark's s3a uses (jobs/engine/storage.py); catalog names need Spark's writer.
"""

from __future__ import annotations

import os
import re
import shutil
import uuid
from collections.abc import Iterable

import pyarrow as pa
import pyarrow.compute
import pyarrow.dataset as ds
from pyspark.sql import DataFrame, DataFrameWriter, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import StructType

from portprint.jobs.engine import storage
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
    # mergeSchema: new columns of this portprint join a table an older one wrote (append and replaceWhere alike).
    writer = writer.option("mergeSchema", "true")
    if is_table_name(table):
        writer.saveAsTable(table)
    else:
        writer.save(table)


def rs_options(table: str) -> dict[str, str] | None:
    """delta-rs storage options for a table path: the S3 settings Spark's s3a has (conf/, else the standard
    AWS_* variables); credentials stay in the environment, where delta-rs reads them itself."""
    if table.split("://", 1)[0].lower() in storage.S3_SCHEMES and "://" in table:
        return storage.delta_rs_storage_options(storage.s3_settings(storage.configured_s3()))
    return None


def _rs_table(table: str, version: int | None = None):
    from deltalake import DeltaTable

    return DeltaTable(table, version=version, storage_options=rs_options(table))


def _write_rs(table: str, data, **kwargs) -> None:
    from deltalake import write_deltalake

    write_deltalake(table, data, storage_options=rs_options(table), **kwargs)


def ensure_table(spark: SparkSession, table: str, schema: pa.Schema, location: str | None = None,
                 partitioned: bool = True) -> None:
    """Create a catalog table if it does not exist: managed, or external under ``location`` (its folder named
    after the table). Its schema is created too where it is missing (a local catalog; Unity Catalog schemas are
    created by their owners)."""
    if not is_table_name(table) or spark.catalog.tableExists(table):
        return
    namespace = table.rsplit(".", 1)[0]
    if not spark.catalog.databaseExists(namespace):
        spark.sql(f"CREATE SCHEMA IF NOT EXISTS {namespace}")
    columns = ", ".join(f"`{f.name}` {f.dataType.simpleString()}" for f in spark_schema(schema).fields)
    by = " PARTITIONED BY (date)" if partitioned and "date" in schema.names else ""
    where = f" LOCATION '{location.rstrip('/')}/{table.split('.')[-1].strip('`')}'" if location else ""
    spark.sql(f"CREATE TABLE IF NOT EXISTS {table} ({columns}) USING DELTA{by}{where}")


def spark_delta_available(spark: SparkSession) -> bool:
    """Is Spark's Delta data source on the classpath? Probed by reading a path that cannot exist:
    a missing data source and a missing table fail differently. Works on Spark Connect too."""
    try:
        spark.read.format("delta").load("/nonexistent/portprint-delta-probe").limit(0).collect()
    except Exception as exc:
        text = str(exc)
        return not ("DATA_SOURCE_NOT_FOUND" in text or "Failed to find data source: delta" in text)
    return True


def choose_writer(spark: SparkSession, requested: str, tables: Iterable[str] = ()) -> str:
    """auto: Spark's Delta writer when it is on the classpath, delta-rs otherwise. Catalog names among
    ``tables`` need Spark's writer: delta-rs has no catalog."""
    names = [t for t in tables if is_table_name(t)]
    if names and requested == DELTA_RS:
        raise RuntimeError(f"output.writer is delta-rs but {names[0]} is a catalog name, which only Spark's Delta "
                           "writer can write: set output.writer: auto (or spark), or name the tables as paths")
    if names and not spark_delta_available(spark):
        raise RuntimeError(f"{names[0]} is a catalog name but Spark has no Delta data source to write it: "
                           "let the session load the delta-spark jars (spark.delta_jars: auto) or name the tables "
                           "as paths")
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
        if small and staged.num_rows == 0:
            # No rows for the dates (they are cleared): an empty Arrow table cannot make a DataFrame.
            df = spark.createDataFrame([], spark_schema(schema))
        elif small:
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
    if small:
        batches = iter(staged.select(schema.names).cast(schema).to_batches(batch_rows))
    else:
        # Stream the staged files batch by batch: the driver never holds more than one batch.
        dataset = staged_dataset(staged)
        # Only the table's columns: staging may carry bookkeeping columns beside them.
        where = (ds.field(kind[0]) == kind[1]) if kind and dataset and kind[0] in dataset.schema.names else None
        batches = ((b.select(schema.names).cast(schema)
                    for b in dataset.to_batches(batch_size=batch_rows, filter=where))
                   if dataset else iter(()))
    reader = pa.RecordBatchReader.from_batches(schema, batches)
    _write_rs(table, reader, mode="overwrite", predicate=date_predicate(dates), partition_by=["date"],
              schema_mode="merge")


def has_parquet(path: str) -> bool:
    root = local_path(path)
    return os.path.isdir(root) and any(f.endswith(".parquet") for f in os.listdir(root))


def staged_dataset(path: str) -> ds.Dataset | None:
    """The Parquet files Spark wrote to a staging folder, local or on object storage; None when it wrote none."""
    import pyarrow.fs as pafs

    fs, inner = storage.filesystem(path, storage.configured_s3())
    infos = fs.get_file_info(pafs.FileSelector(inner, allow_not_found=True))
    files = sorted(i.path for i in infos if i.type == pafs.FileType.File and i.base_name.endswith(".parquet"))
    return ds.dataset(files, format="parquet", filesystem=fs) if files else None


def append(spark: SparkSession, rows: pa.Table, table: str, writer: str, partitioned: bool = True) -> None:
    """Append a small driver-side table (the runs log; unpartitioned: the tables people write)."""
    by = ["date"] if partitioned else []
    if writer == SPARK:
        df = spark.createDataFrame(rows, schema=spark_schema(rows.schema))
        _save(df.write.format("delta").mode("append").option("mergeSchema", "true").partitionBy(*by), table)
        return
    _write_rs(table, rows, mode="append", partition_by=by or None, schema_mode="merge")


def remove_folder(path: str) -> None:
    """Remove a staging folder, local or on object storage (pyarrow.fs with the S3 settings of conf/ and the
    standard AWS_* variables; s3a:// is S3 to it). Missing is fine."""
    if is_local(path):
        shutil.rmtree(local_path(path), ignore_errors=True)
        return
    import pyarrow.fs as pafs

    fs, inner = storage.filesystem(path, storage.configured_s3())
    if fs.get_file_info(inner).type != pafs.FileType.NotFound:
        fs.delete_dir(inner)


def table_exists(table: str, spark: SparkSession | None = None) -> bool:
    """Does the Delta table exist yet? (A first run reads runs and the pattern tables before writing them.)"""
    if is_table_name(table):
        return spark is not None and spark.catalog.tableExists(table)
    if is_local(table):
        return os.path.isdir(os.path.join(local_path(table), "_delta_log"))
    if spark is None or not spark_delta_available(spark):
        from deltalake import DeltaTable

        return DeltaTable.is_deltatable(table, storage_options=rs_options(table))
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
    dt = _rs_table(table)
    unreadable = parquet_unreadable(dt)
    if unreadable:
        raise RuntimeError(f"{table} uses {unreadable}, which Spark's Parquet reader cannot apply; "
                           "read it with Spark's Delta data source (Databricks or delta-spark jars)")
    files = [same_scheme(f, table) for f in dt.file_uris()]
    if not files:
        return spark.createDataFrame([], sschema)
    # The table's schema as this portprint knows it, partition column included (taken from the paths): files an
    # older portprint wrote, without the newer columns, read those as null instead of failing.
    return spark.read.schema(sschema).option("basePath", local_path(table)).parquet(*files)


def parquet_unreadable(dt) -> list[str]:
    """The table features a plain Parquet read of its files would get wrong (deleted rows, renamed columns)."""
    p = dt.protocol()
    features = set(p.reader_features or []) | set(p.writer_features or [])
    return sorted(features & {"deletionVectors", "columnMapping"})


def same_scheme(uri: str, like: str) -> str:
    """A file URI delta-rs gives (s3://) in the scheme of the table's own path (s3a://), so that Spark sees the
    files under the table's root (partition discovery compares the two)."""
    if "://" in like and "://" in uri:
        a, b = like.split("://", 1)[0], uri.split("://", 1)[0]
        if a != b and {a.lower(), b.lower()} <= set(storage.S3_SCHEMES):
            return a + uri[len(b):]
    return uri


def merge_upsert(spark: SparkSession, source: pa.Table, table: str, key: str, writer: str) -> None:
    """MERGE ``source`` into ``table`` on ``key``: rows with flows = 0 delete, others update or insert.

    One Delta commit either way: Spark SQL's MERGE INTO where the Delta data source exists, delta-rs's
    merge otherwise.
    """
    live = source.filter(pa.compute.greater(source["flows"], 0))
    if not table_exists(table, spark):
        if live.num_rows:
            if writer == SPARK:
                df = spark.createDataFrame(live, schema=spark_schema(live.schema))
                _save(df.write.format("delta"), table)
            else:
                _write_rs(table, live)
        return
    if writer == SPARK:
        view = f"_portprint_merge_{uuid.uuid4().hex[:12]}"
        spark.createDataFrame(source, schema=spark_schema(source.schema)).createOrReplaceTempView(view)
        try:
            # WITH SCHEMA EVOLUTION: a table an older portprint wrote takes this one's new columns.
            spark.sql(f"MERGE WITH SCHEMA EVOLUTION INTO {_sql_ref(table)} AS t USING {view} AS s "
                      f"ON t.{key} = s.{key} WHEN MATCHED AND s.flows = 0 THEN DELETE WHEN MATCHED THEN UPDATE SET * "
                      "WHEN NOT MATCHED AND s.flows > 0 THEN INSERT *")
        finally:
            spark.catalog.dropTempView(view)
        return
    (_rs_table(table).merge(source=source, predicate=f"t.{key} = s.{key}", source_alias="s", target_alias="t",
                            merge_schema=True)
     .when_matched_delete(predicate="s.flows = 0")
     .when_matched_update_all()
     .when_not_matched_insert_all(predicate="s.flows > 0")
     .execute())


# --- upkeep (`portprint maintain`, jobs/warehouse/maintain.py) ------------------------------------------------


def retention_properties(days: int) -> dict[str, str]:
    """The table properties that keep ``days`` of time travel: VACUUM (either writer) refuses to remove files a
    version that young reads, and the log keeps those versions (never less than Delta's 30-day default)."""
    return {"delta.deletedFileRetentionDuration": f"interval {days} days",
            "delta.logRetentionDuration": f"interval {max(days, 30)} days"}


def table_properties(spark: SparkSession, table: str, writer: str) -> dict[str, str]:
    if writer == SPARK:
        return {r["key"]: r["value"] for r in spark.sql(f"SHOW TBLPROPERTIES {_sql_ref(table)}").collect()}
    return dict(_rs_table(table).metadata().configuration)


def set_properties(spark: SparkSession, table: str, writer: str, props: dict[str, str]) -> bool:
    """Set table properties where they differ (one metadata commit, no data rewritten); True if it committed."""
    current = table_properties(spark, table, writer)
    todo = {k: v for k, v in props.items() if current.get(k) != v}
    if not todo:
        return False
    if writer == SPARK:
        pairs = ", ".join(f"'{k}' = '{v}'" for k, v in todo.items())
        spark.sql(f"ALTER TABLE {_sql_ref(table)} SET TBLPROPERTIES ({pairs})")
    else:
        _rs_table(table).alter.set_table_properties(todo)
    return True


def optimize(spark: SparkSession, table: str, writer: str, zorder: Iterable[str] = ()) -> tuple[int, int]:
    """Compact small files (per date partition), clustering by ``zorder`` where given: Spark's OPTIMIZE ... ZORDER
    BY, delta-rs's optimize.z_order. Returns (files removed, files added)."""
    zorder = list(zorder)
    if writer == SPARK:
        by = f" ZORDER BY ({', '.join(f'`{c}`' for c in zorder)})" if zorder else ""
        m = spark.sql(f"OPTIMIZE {_sql_ref(table)}{by}").first()["metrics"]
        return int(m["numFilesRemoved"]), int(m["numFilesAdded"])
    t = _rs_table(table)
    m = t.optimize.z_order(zorder) if zorder else t.optimize.compact()
    return int(m.get("numFilesRemoved", 0)), int(m.get("numFilesAdded", 0))


def vacuum(spark: SparkSession, table: str, writer: str, retain_hours: int) -> int:
    """Delete the files no version younger than ``retain_hours`` reads; returns how many. The tables' own
    delta.deletedFileRetentionDuration still applies (both writers refuse a shorter retention)."""
    if writer == SPARK:
        ref = _sql_ref(table)
        doomed = spark.sql(f"VACUUM {ref} RETAIN {int(retain_hours)} HOURS DRY RUN").count()
        if doomed:
            spark.sql(f"VACUUM {ref} RETAIN {int(retain_hours)} HOURS").collect()
        return doomed
    return len(_rs_table(table).vacuum(retention_hours=int(retain_hours), dry_run=False,
                                       enforce_retention_duration=True))
