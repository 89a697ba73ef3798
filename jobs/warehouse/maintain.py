"""`portprint maintain`: keep the warehouse's Delta tables healthy for years; called by jobs/cli.py (weekly in the
bundle, resources/jobs.yml).

For every table that exists: its retention properties are set to keep ``maintain.time_travel_days`` of time
travel, small files are compacted (OPTIMIZE; `anomalies` Z-ordered by ``maintain.zorder``), and VACUUM removes
the files no version younger than the retention reads. Then the staging folders of failed or killed runs (raw
prefixes of flows that were not flagged) are removed. Run it when no `score` is running: OPTIMIZE rewrites the
same partitions a rescore replaces, and one of the two commits would fail.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass, field

from pyspark.sql import SparkSession

from portprint.conf.config import Config
from portprint.jobs.warehouse import Warehouse, delta
from portprint.jobs.warehouse.people import table_path

# Every table the warehouse may hold, by its output.* key.
TABLES = ("anomalies", "runs", "pattern_days", "patterns", "suppression_hits", "verdicts", "suppressions", "exported")


class RetentionError(ValueError):
    """A VACUUM retention shorter than the configured time travel; the message says how to proceed."""


@dataclass
class TableUpkeep:
    table: str
    files_removed: int = 0      # by OPTIMIZE (rewritten into fewer)
    files_added: int = 0
    vacuumed: int = 0           # files deleted by VACUUM
    properties_set: bool = False


@dataclass
class MaintainReport:
    writer: str
    retain_hours: int
    tables: list[TableUpkeep] = field(default_factory=list)
    staging_removed: list[str] = field(default_factory=list)


def retention_hours(cfg: Config, retain_days: float | None) -> int:
    """The VACUUM retention: ``retain_days`` (default: maintain.time_travel_days), never below the configured time
    travel."""
    floor = cfg.maintain.time_travel_days
    days = floor if retain_days is None else retain_days
    if days < floor:
        raise RetentionError(
            f"--retain-days {days:g} would break time travel to versions between {days:g} and {floor} days old "
            f"(maintain.time_travel_days: {floor}); pass --retain-days {floor} or more, or lower "
            "maintain.time_travel_days in a --conf file if that much history is really not needed")
    return round(days * 24)


def run_maintain(spark: SparkSession, cfg: Config, warehouse: str, retain_days: float | None = None,
                 log: Callable[[str], None] = lambda m: print(m, file=sys.stderr)) -> MaintainReport:
    hours = retention_hours(cfg, retain_days)  # refused before anything is touched
    sink = Warehouse(spark, cfg, warehouse)
    report = MaintainReport(sink.writer, hours)
    for key in TABLES:
        table = table_path(cfg, warehouse, key)
        if not delta.table_exists(table, spark):
            continue
        up = TableUpkeep(table)
        up.properties_set = delta.set_properties(spark, table, sink.writer,
                                                 delta.retention_properties(cfg.maintain.time_travel_days))
        zorder = list(cfg.maintain.zorder) if key == "anomalies" else []
        up.files_removed, up.files_added = delta.optimize(spark, table, sink.writer, zorder)
        up.vacuumed = delta.vacuum(spark, table, sink.writer, hours)
        report.tables.append(up)
        log(f"portprint maintain: {table}: {up.files_removed} small files compacted into {up.files_added}"
            + (f" (Z-ORDER BY {', '.join(zorder)})" if zorder and up.files_added else "")
            + f", {up.vacuumed} unreferenced files older than {hours} h removed")
    report.staging_removed = sink.remove_stale_staging()
    for path in report.staging_removed:
        log(f"portprint maintain: removed the staging folder of a dead run: {path}")
    return report
