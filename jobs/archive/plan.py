"""Plan an archive: find its date partitions and files, check every footer, and fingerprint each date.

Called by jobs/archive/__init__.py (``open_source``) for every command that reads an archive.

Local, ``/Volumes`` and object-store roots (``s3://``, ``s3a://``, ``abfss://``, ``gs://``) are planned alike by
jobs/engine/storage.py: listed, every footer read (schema, row counts, row groups) and each date fingerprinted
from its files' sizes and ETags or modification times. Where the driver has no storage credentials of its own
(Spark Connect, Databricks), Spark lists instead (``archive.lister``); a Delta table as the archive is planned
from its log (jobs/archive/delta_table.py).
"""

from __future__ import annotations

import datetime as dt
import sys
from dataclasses import dataclass, field

import pyarrow as pa

from portprint.conf.config import Columns, S3Conf
from portprint.jobs.engine import storage

# The contract keeps the first 64 bytes of each flow's payload; longer prefixes are cut to this as they are read, so
# the models judge what they were built for and the tables' prefix columns stay bounded.
PREFIX_BYTES = 64


class ArchiveError(ValueError):
    """The flow archive cannot be read as asked; the message names the path and what to do."""


def parse_date(text: str, what: str = "date") -> str:
    try:
        return dt.date.fromisoformat(text).isoformat()
    except (TypeError, ValueError):
        raise ArchiveError(f"{what} {text!r} is not a date: use YYYY-MM-DD, e.g. 2026-11-27") from None


@dataclass(frozen=True)
class DeltaSource:
    """How Spark reads an archive that is a Delta table: its path or catalog name, and its date column."""

    table: str
    date_col: str = "date"


@dataclass
class ArchivePlan:
    """The dates and files a run will read, and the files it leaves out (with why)."""

    root: str
    dates: list[str]
    files: dict[str, list[str]] = field(default_factory=dict)  # date -> files (what the readers read)
    skipped_files: list[tuple[str, str]] = field(default_factory=list)
    rows: dict[str, int] | None = None  # date -> rows in its files, from the footers (None: counted while read)
    # file -> rows in each of its Parquet row groups, from the footers (the row-group reader's tasks)
    row_groups: dict[str, tuple[int, ...]] = field(default_factory=dict)
    fingerprints: dict[str, str] = field(default_factory=dict)  # date -> what it held when planned
    lister: str = "arrow"               # who listed it: arrow (pyarrow.fs), spark, or delta (the table's log)
    delta: DeltaSource | None = None    # set when the archive is a Delta table that Spark's reader reads

    def all_files(self) -> list[str]:
        return [f for d in self.dates for f in self.files.get(d, [])]

    def subset(self, dates: list[str]) -> ArchivePlan:
        """The same plan restricted to some of its dates (a chunk of a backfill)."""
        rows = None if self.rows is None else {d: self.rows.get(d, 0) for d in dates}
        return ArchivePlan(self.root, list(dates), {d: self.files.get(d, []) for d in dates}, [], rows,
                           self.row_groups, {d: self.fingerprints.get(d, "") for d in dates}, self.lister,
                           self.delta)

    def snapshot(self, date: str) -> str:
        """A fingerprint of what a date held when planned (files, sizes, ETags or modification times; for a
        Delta table, the data files its log lists for the date).

        A date written late, or rewritten, gets a new fingerprint, so `score --new-only` scores it again.
        """
        return self.fingerprints.get(date, "")


def is_remote(path: str) -> bool:
    return "://" in path and not path.startswith("file:")


def list_dates(root: str, date_col: str = "date", s3: S3Conf | None = None) -> list[str]:
    """The date partitions present under an archive root (local or on object storage)."""
    try:
        return storage.list_dates(root, date_col, s3)
    except storage.StorageError as exc:
        raise ArchiveError(_missing(root, exc)) from None


def _missing(root: str, exc: Exception) -> str:
    if "does not exist" in str(exc):
        return (f"flow archive {root} does not exist or is not a folder; "
                "pass --flows with the archive's root (the folder holding date=YYYY-MM-DD/)")
    return f"cannot list the flow archive {root}: {exc}"


def _expected_types(cols: Columns, prefix_encoding: str) -> dict[str, tuple[str, ...]]:
    prefix_kinds = ("binary",) if prefix_encoding == "binary" else ("string",)
    return {
        cols.flow_id: ("string",),
        cols.ts: ("timestamp",),
        cols.src_ip: ("string",),
        cols.dst_ip: ("string",),
        cols.src_port: ("integer",),
        cols.dst_port: ("integer",),
        cols.proto: ("integer",),
        cols.orig_payload_prefix: prefix_kinds,
        cols.orig_bytes: ("integer",),
    }


def _kind(t: pa.DataType) -> str:
    if pa.types.is_integer(t):
        return "integer"
    if pa.types.is_binary(t) or pa.types.is_large_binary(t) or pa.types.is_fixed_size_binary(t):
        return "binary"
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return "string"
    if pa.types.is_timestamp(t):
        return "timestamp"
    return str(t)


def plan_archive(root: str, cols: Columns, prefix_encoding: str, start: str | None, end: str | None,
                 dates: list[str] | None = None, *, s3: S3Conf | None = None, spark=None,
                 lister: str = "auto") -> ArchivePlan:
    """Choose the dates in [start, end] and check every file's footer (or, where Spark lists, the schema
    Spark reads).

    A corrupt file or a column of the wrong type stops the run with the file's name (nothing is
    written). A file that lacks the archive's columns altogether (another tool's output dropped in
    the same folder) is left out and reported, so the rest of the date still gets scored.
    ``lister``: arrow, spark, or auto (jobs/engine/storage.py ``choose_lister``).
    """
    start = parse_date(start, "--start") if start else None
    end = parse_date(end, "--end") if end else None
    if start and end and start > end:
        raise ArchiveError(f"--start {start} is after --end {end}")
    from portprint.jobs.archive import delta_table

    if delta_table.is_delta_archive(root, spark, s3):
        return delta_table.plan_delta(root, cols, prefix_encoding, start, end, dates, s3=s3, spark=spark,
                                      lister=lister)
    use = storage.choose_lister(root, spark) if lister == "auto" else lister
    if use == "spark" and spark is None:
        use = "arrow"
    try:
        if dates is not None:
            present = list(dates)
        elif use == "spark":
            present = storage.spark_list_dates(spark, root, cols.date)
        else:
            present = storage.list_dates(root, cols.date, s3)
    except storage.StorageError as exc:
        raise ArchiveError(_missing(root, exc)) from None
    chosen = [d for d in present if (not start or d >= start) and (not end or d <= end)]
    if not chosen:
        have = (f"dates present: {present[0]} .. {present[-1]} ({len(present)})" if present
                else "no date=YYYY-MM-DD folders")
        raise ArchiveError(f"no archive dates between {start or 'the first'} and {end or 'the last'} under "
                           f"{root} ({have})")
    if use == "spark":
        return _plan_with_spark(spark, root, cols, prefix_encoding, chosen)
    return _plan_with_arrow(root, cols, prefix_encoding, chosen, s3)


def _plan_with_arrow(root: str, cols: Columns, prefix_encoding: str, chosen: list[str],
                     s3: S3Conf | None) -> ArchivePlan:
    """List the dates' files and read every footer from the driver (in parallel: object stores answer slowly)."""
    try:
        listed = storage.list_files(root, chosen, cols.date, s3)
        footers = storage.read_footers(root, [f for d in chosen for f in listed[d]], s3=s3)
    except storage.StorageError as exc:
        if exc.path and "corrupt Parquet" in str(exc):
            raise ArchiveError(f"{exc}. Nothing was written. Move the file out of the archive (or restore it) "
                               "and rerun the date") from None
        raise ArchiveError(_missing(root, exc)) from None
    plan = ArchivePlan(root, chosen, rows={})
    expected = _expected_types(cols, prefix_encoding)
    for d in chosen:
        files = []
        for f in listed[d]:
            footer = footers[f.path]
            present_cols = {c.name: c.type for c in footer.schema}
            if not _is_flow_file(present_cols, cols):
                plan.skipped_files.append((f.path, "not a flow file: it has neither "
                                           f"{cols.flow_id} nor {cols.orig_payload_prefix}"))
                continue
            check_columns(f.path, present_cols, expected, cols)
            files.append(f.path)
            # The footer's row count is exact: flows_read needs no pass over the rows.
            plan.rows[d] = plan.rows.get(d, 0) + footer.num_rows
            plan.row_groups[f.path] = footer.row_group_rows
        plan.files[d] = files
        plan.fingerprints[d] = storage.fingerprint(storage.with_etags(listed[d], footers))
    _report_skipped(plan)
    return plan


def _plan_with_spark(spark, root: str, cols: Columns, prefix_encoding: str, chosen: list[str]) -> ArchivePlan:
    """Spark lists the files (sizes and modification times, no ETags) and infers the schema it will read; the
    rows are counted while the scorer reads them."""
    listed = storage.spark_list_files(spark, root, chosen, cols.date)
    plan = ArchivePlan(root, chosen, {d: [f.path for f in listed[d]] for d in chosen}, lister="spark",
                       fingerprints={d: storage.fingerprint(listed[d]) for d in chosen})
    files = plan.all_files()
    if files:
        schema = spark.read.option("basePath", root).parquet(*files).schema
        check_columns(root, {f.name: _spark_kind(f.dataType) for f in schema.fields},
                      _expected_types(cols, prefix_encoding), cols)
    return plan


def _is_flow_file(present_cols: dict, cols: Columns) -> bool:
    return cols.orig_payload_prefix in present_cols or cols.flow_id in present_cols


def check_columns(where: str, present_cols: dict, expected: dict[str, tuple[str, ...]], cols: Columns) -> None:
    """Raise ArchiveError naming ``where`` when a contract column is missing or of the wrong kind. ``present_cols``
    maps names to Arrow types or to kinds already (integer, string, binary, timestamp)."""
    missing = [c for c in expected if c not in present_cols]
    if missing:
        raise ArchiveError(f"{where} lacks column(s) {', '.join(missing)}; columns present: "
                           f"{', '.join(present_cols)}. If the archive names them differently, map them "
                           "in a --conf file under archive.columns")
    for c, kinds in expected.items():
        t = present_cols[c]
        kind = t if isinstance(t, str) else _kind(t)
        if kind not in kinds:
            hint = (" (hex text? set archive.prefix_encoding: hex)" if c == cols.orig_payload_prefix
                    and kind == "string" else "")
            raise ArchiveError(f"{where}: column {c} is {t}, expected {' or '.join(kinds)}{hint}")


def _spark_kind(t) -> str:
    name = t.typeName()
    if name in ("byte", "short", "integer", "long"):
        return "integer"
    if name in ("timestamp", "timestamp_ntz"):
        return "timestamp"
    return name  # string, binary, ...


def _report_skipped(plan: ArchivePlan) -> None:
    for path, why in plan.skipped_files:
        print(f"portprint: left out {path}: {why}", file=sys.stderr)
