"""A Delta table as the flow archive (bronze flow tables are usually Delta): planned from the table's log, for
jobs/archive/plan.py ``plan_archive``.

``--flows`` may name a table by path (a folder holding ``_delta_log``, local or on object storage) or by catalog
name (``catalog.schema.table`` or ``schema.table``). The table must hold the archive contract and be partitioned
by the date column; its dates are the partition values, pruned to [start, end].

Two ways to read the log, one plan:

- **delta-rs** (a path the driver can reach: local, ``/Volumes``, an object store with the driver's own
  credentials): the snapshot's add actions give each date's data files with their sizes and row counts, no Spark
  job. The files are plain Parquet (checked: no deletion vectors, no column mapping), so a local table's footers
  are read too and the Python row-group reader reads it like a Parquet archive.
- **Spark** (a catalog name, a driver without credentials, or a table delta-rs cannot read as plain Parquet):
  one Spark query groups the rows of the dates by ``_metadata.file_path`` (Spark answers it from the footers
  and the deletion vectors, reading no column), and Spark's Delta reader reads the archive.

``--new-only`` fingerprints a date by the data files the current snapshot lists for its partition, with their
sizes and live row counts. Delta never rewrites a data file in place: any commit that touches the date (an
append, a rewrite, OPTIMIZE, a DELETE through a deletion vector) changes that set, and commits that touch other
dates leave it alone. This reads the state the log describes rather than replaying its history since some
version, so it also holds after log clean-up and VACUUM, which remove the old history.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterable

import pyarrow as pa

from portprint.conf.config import Columns, S3Conf
from portprint.jobs.archive.plan import (
    ArchiveError,
    ArchivePlan,
    DeltaSource,
    _expected_types,
    _report_skipped,
    check_columns,
    is_remote,
)
from portprint.jobs.engine import storage

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_`][A-Za-z0-9_`]*){1,2}$")


def is_catalog_name(root: str) -> bool:
    """``catalog.schema.table`` or ``schema.table``, and not a folder that happens to be named so."""
    return bool(_NAME.match(root)) and not os.path.exists(root)


def is_delta_archive(root: str, spark=None, s3: S3Conf | None = None) -> bool:
    """Is ``root`` a Delta table (a catalog name, or a folder with a ``_delta_log``)?"""
    if is_catalog_name(root):
        return True
    if not is_remote(root):
        path = "/" + root[len("file:"):].lstrip("/") if root.startswith("file:") else root
        return os.path.isdir(os.path.join(path, "_delta_log"))
    if spark is not None and storage.choose_lister(root, spark) == "spark":
        return _spark_has_log(spark, root)
    import pyarrow.fs as pafs

    fs, path = storage.filesystem(root, s3)
    try:
        return fs.get_file_info(f"{path}/_delta_log").type == pafs.FileType.Directory or bool(
            fs.get_file_info(pafs.FileSelector(f"{path}/_delta_log", allow_not_found=True)))
    except OSError:
        return False


def _spark_has_log(spark, root: str) -> bool:
    try:
        spark.read.format("binaryFile").load(f"{root.rstrip('/')}/_delta_log").inputFiles()
        return True
    except Exception:
        return False


def plan_delta(root: str, cols: Columns, prefix_encoding: str, start: str | None, end: str | None,
               dates: list[str] | None = None, *, s3: S3Conf | None = None, spark=None,
               lister: str = "auto") -> ArchivePlan:
    """Plan a Delta table archive: its date partitions in range, their files and row counts, a fingerprint each."""
    from portprint.jobs.warehouse import delta as delta_io

    by_spark = (is_catalog_name(root) or lister == "spark"
                or (lister == "auto" and storage.choose_lister(root, spark) == "spark"))
    if not by_spark:
        table = delta_io._rs_table(root)
        unreadable = delta_io.parquet_unreadable(table)
        if not unreadable:
            return _plan_with_delta_rs(root, table, cols, prefix_encoding, start, end, dates, s3)
        if spark is None or not delta_io.spark_delta_available(spark):
            raise ArchiveError(f"{root} uses {', '.join(unreadable)}: only Spark's Delta reader reads it correctly, "
                               "and this session has none (let it load the delta-spark jars: spark.delta_jars: auto)")
    if spark is None or not delta_io.spark_delta_available(spark):
        raise ArchiveError(f"{root} is a Delta table by catalog name: reading it needs Spark's Delta reader, which "
                           "this session does not have (spark.delta_jars: auto, or pass the table's path)")
    return _plan_with_spark(spark, root, cols, prefix_encoding, start, end, dates)


def _in_range(present: Iterable[str], start: str | None, end: str | None, dates: list[str] | None,
              root: str) -> list[str]:
    present = sorted(set(present))
    wanted = present if dates is None else list(dates)
    chosen = [d for d in wanted if (not start or d >= start) and (not end or d <= end)]
    if not chosen:
        have = f"dates present: {present[0]} .. {present[-1]} ({len(present)})" if present else "no rows"
        raise ArchiveError(f"no archive dates between {start or 'the first'} and {end or 'the last'} in the Delta "
                           f"table {root} ({have})")
    return chosen


def _fingerprint(files: list[tuple[str, int, int | None]]) -> str:
    """A date's data files (path relative to the table, size, live rows) as one short hash."""
    h = hashlib.sha256(b"delta\n")
    for path, size, rows in sorted(files):
        h.update(f"{path}\0{size}\0{rows}\n".encode())
    return h.hexdigest()[:16]


def _check_partitioned(root: str, partition_columns: list[str], cols: Columns) -> None:
    if cols.date not in partition_columns:
        raise ArchiveError(f"the Delta table {root} is not partitioned by {cols.date} (partition columns: "
                           f"{', '.join(partition_columns) or 'none'}); portprint reads an archive date by date: "
                           f"rewrite it with PARTITIONED BY ({cols.date}) or map archive.columns.date")


def _plan_with_delta_rs(root: str, table, cols: Columns, prefix_encoding: str, start: str | None, end: str | None,
                        dates: list[str] | None, s3: S3Conf | None) -> ArchivePlan:
    meta = table.metadata()
    _check_partitioned(root, list(meta.partition_columns), cols)
    schema = pa.schema(table.schema().to_arrow())
    check_columns(root, {f.name: f.type for f in schema}, _expected_types(cols, prefix_encoding), cols)
    adds = pa.table(table.get_add_actions(flatten=True))
    part = adds.column(f"partition.{cols.date}").cast(pa.string()).to_pylist()
    paths = adds.column("path").to_pylist()
    sizes = adds.column("size_bytes").to_pylist()
    records = adds.column("num_records").to_pylist() if "num_records" in adds.column_names else [None] * len(paths)
    chosen = _in_range((p for p in part if p), start, end, dates, root)
    base = root.rstrip("/")
    by_date: dict[str, list[tuple[str, int, int | None]]] = {d: [] for d in chosen}
    for d, rel, size, n in zip(part, paths, sizes, records, strict=True):
        if d in by_date:
            by_date[d].append((rel, int(size), None if n is None else int(n)))
    plan = ArchivePlan(root, chosen, lister="delta")
    for d in chosen:
        entries = sorted(by_date[d])
        plan.files[d] = [rel if "://" in rel or rel.startswith("/") else f"{base}/{rel}" for rel, _, _ in entries]
        plan.fingerprints[d] = _fingerprint(entries)
    counted = [n for d in chosen for _, _, n in by_date[d]]
    plan.rows = None if any(n is None for n in counted) else {d: sum(n for _, _, n in by_date[d]) for d in chosen}
    if not is_remote(root):
        # Local files: their footers give the row groups the Python reader packs into tasks (and exact counts).
        try:
            footers = storage.read_footers(root, [storage.ArchiveFile(f, 0, None) for f in plan.all_files()], s3=s3)
        except storage.StorageError as exc:
            raise ArchiveError(f"{exc}. Nothing was written; the Delta table {root} lists a file it cannot "
                               "read: restore it (or the table's previous version) and rerun") from None
        plan.row_groups = {p: f.row_group_rows for p, f in footers.items()}
        plan.rows = {d: sum(footers[p].num_rows for p in plan.files[d]) for d in chosen}
    _report_skipped(plan)
    return plan


def _reader(spark, root: str):
    """Spark's Delta reader over the table, by catalog name or path."""
    return spark.read.table(root) if is_catalog_name(root) else spark.read.format("delta").load(root)


def _plan_with_spark(spark, root: str, cols: Columns, prefix_encoding: str, start: str | None, end: str | None,
                     dates: list[str] | None) -> ArchivePlan:
    from pyspark.sql import functions as F

    ref = root if is_catalog_name(root) else f"delta.`{root}`"
    detail = spark.sql(f"DESCRIBE DETAIL {ref}").select("partitionColumns", "location").first()
    _check_partitioned(root, list(detail["partitionColumns"] or []), cols)
    df = _reader(spark, root)
    check_columns(root, {f.name: _kind(f.dataType) for f in df.schema.fields},
                  _expected_types(cols, prefix_encoding), cols)
    day = F.col(cols.date).cast("string")
    if start:
        df = df.where(day >= start)
    if end:
        df = df.where(day <= end)
    if dates is not None:
        df = df.where(day.isin(list(dates)))
    # Partition values and file metadata only: Spark reads no column of the files, only their footers (and
    # deletion vectors), so this costs about a count(*).
    rows = (df.select(day.alias("d"), F.col("_metadata.file_path").alias("p"), F.col("_metadata.file_size").alias("s"))
            .groupBy("d", "p", "s").count().collect())
    location = str(detail["location"] or "").rstrip("/")
    by_date: dict[str, list[tuple[str, int, int | None]]] = {}
    for r in rows:
        rel = r["p"][len(location) + 1:] if location and r["p"].startswith(location + "/") else r["p"]
        by_date.setdefault(r["d"], []).append((rel, int(r["s"]), int(r["count"])))
    chosen = _in_range(by_date, start, end, dates, root)
    plan = ArchivePlan(root, chosen, lister="spark", delta=DeltaSource(root, cols.date))
    for d in chosen:
        entries = sorted(by_date.get(d, []))
        plan.files[d] = [p for p, _, _ in entries]
        plan.fingerprints[d] = _fingerprint(entries)
    plan.rows = {d: sum(n or 0 for _, _, n in by_date.get(d, [])) for d in chosen}
    return plan


def _kind(t) -> str:
    from portprint.jobs.archive.plan import _spark_kind

    return _spark_kind(t)
