"""Plan an archive: find its date partitions and files, check every footer, and fingerprint each date.

Called by jobs/archive/__init__.py (``open_source``) for every command that reads an archive."""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import re
import sys
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.parquet as pq

from portprint.conf.config import Columns

# The contract keeps the first 64 bytes of each flow's payload; longer prefixes are cut to this as they are read, so
# the models judge what they were built for and the tables' prefix columns stay bounded.
PREFIX_BYTES = 64
_DATE_DIR = re.compile(r"^(?P<col>[A-Za-z_][A-Za-z0-9_]*)=(?P<date>\d{4}-\d{2}-\d{2})$")


class ArchiveError(ValueError):
    """The flow archive cannot be read as asked; the message names the path and what to do."""


def parse_date(text: str, what: str = "date") -> str:
    try:
        return dt.date.fromisoformat(text).isoformat()
    except (TypeError, ValueError):
        raise ArchiveError(f"{what} {text!r} is not a date: use YYYY-MM-DD, e.g. 2026-11-27") from None


@dataclass
class ArchivePlan:
    """The dates and files a run will read, and the files it leaves out (with why)."""

    root: str
    dates: list[str]
    files: dict[str, list[str]] = field(default_factory=dict)  # date -> files (local archives only)
    skipped_files: list[tuple[str, str]] = field(default_factory=list)
    rows: dict[str, int] | None = None  # date -> rows in its files, from the footers (local archives only)
    # file -> rows in each of its Parquet row groups, from the footers (local archives)
    row_groups: dict[str, tuple[int, ...]] = field(default_factory=dict)

    def all_files(self) -> list[str]:
        return [f for d in self.dates for f in self.files.get(d, [])]

    def subset(self, dates: list[str]) -> ArchivePlan:
        """The same plan restricted to some of its dates (a chunk of a backfill)."""
        rows = None if self.rows is None else {d: self.rows.get(d, 0) for d in dates}
        return ArchivePlan(self.root, list(dates), {d: self.files.get(d, []) for d in dates}, [], rows,
                           self.row_groups)

    def snapshot(self, date: str) -> str:
        """A fingerprint of what a date holds now (files, sizes, modification times).

        A date written late, or rewritten, gets a new fingerprint, so `score --new-only` scores it
        again. Remote archives have none (""): there only the absence of a successful run counts.
        """
        if is_remote(self.root):
            return ""
        h = hashlib.sha256()
        for f in self.files.get(date, []):
            st = os.stat(f)
            h.update(f"{os.path.relpath(f, self.root)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        return h.hexdigest()[:16]


def is_remote(path: str) -> bool:
    return "://" in path and not path.startswith("file:")


def list_dates(root: str, date_col: str = "date") -> list[str]:
    """The date partitions present under a local archive root."""
    if not os.path.isdir(root):
        raise ArchiveError(f"flow archive {root} does not exist or is not a folder; "
                           "pass --flows with the archive's root (the folder holding date=YYYY-MM-DD/)")
    dates = []
    for name in os.listdir(root):
        m = _DATE_DIR.match(name)
        if m and m.group("col") == date_col and os.path.isdir(os.path.join(root, name)):
            dates.append(m.group("date"))
    return sorted(dates)


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
                 dates: list[str] | None = None) -> ArchivePlan:
    """Choose the dates in [start, end] and, for local archives, check every file's footer.

    A corrupt file or a column of the wrong type stops the run with the file's name (nothing is
    written). A file that lacks the archive's columns altogether (another tool's output dropped in
    the same folder) is left out and reported, so the rest of the date still gets scored.
    """
    start = parse_date(start, "--start") if start else None
    end = parse_date(end, "--end") if end else None
    if start and end and start > end:
        raise ArchiveError(f"--start {start} is after --end {end}")
    if is_remote(root):
        if dates is None:
            raise ArchiveError(f"{root} is a remote path: pass --start and --end so the dates are known")
        return ArchivePlan(root, dates)
    present = list_dates(root, cols.date) if dates is None else dates
    chosen = [d for d in present if (not start or d >= start) and (not end or d <= end)]
    if not chosen:
        have = (f"dates present: {present[0]} .. {present[-1]} ({len(present)})" if present
                else "no date=YYYY-MM-DD folders")
        raise ArchiveError(f"no archive dates between {start or 'the first'} and {end or 'the last'} under "
                           f"{root} ({have})")
    plan = ArchivePlan(root, chosen, rows={})
    expected = _expected_types(cols, prefix_encoding)
    for d in chosen:
        folder = os.path.join(root, f"{cols.date}={d}")
        files = []
        for dirpath, _, names in os.walk(folder):
            for name in sorted(names):
                if name.startswith(("_", ".")) or name.endswith(".crc"):
                    continue  # Spark's and Hadoop's hidden bookkeeping files
                path = os.path.join(dirpath, name)
                try:
                    footer = pq.read_metadata(path)
                    schema = footer.schema.to_arrow_schema()
                except (pa.ArrowInvalid, OSError) as exc:
                    raise ArchiveError(f"corrupt Parquet file {path}: {exc}. Nothing was written. Move the file "
                                       "out of the archive (or restore it) and rerun the date") from None
                present_cols = {f.name: f.type for f in schema}
                if cols.orig_payload_prefix not in present_cols and cols.flow_id not in present_cols:
                    plan.skipped_files.append((path, "not a flow file: it has neither "
                                               f"{cols.flow_id} nor {cols.orig_payload_prefix}"))
                    continue
                missing = [c for c in expected if c not in present_cols]
                if missing:
                    raise ArchiveError(f"{path} lacks column(s) {', '.join(missing)}; columns present: "
                                       f"{', '.join(present_cols)}. If the archive names them differently, map them "
                                       "in a --conf file under archive.columns")
                for c, kinds in expected.items():
                    if _kind(present_cols[c]) not in kinds:
                        hint = (" (hex text? set archive.prefix_encoding: hex)" if c == cols.orig_payload_prefix
                                and _kind(present_cols[c]) == "string" else "")
                        raise ArchiveError(f"{path}: column {c} is {present_cols[c]}, expected "
                                           f"{' or '.join(kinds)}{hint}")
                files.append(path)
                # The footer's row count is exact: flows_read needs no pass over the rows.
                plan.rows[d] = plan.rows.get(d, 0) + footer.num_rows
                plan.row_groups[path] = tuple(footer.row_group(i).num_rows for i in range(footer.num_row_groups))
        plan.files[d] = sorted(files)
    for path, why in plan.skipped_files:
        print(f"portprint: left out {path}: {why}", file=sys.stderr)
    return plan
