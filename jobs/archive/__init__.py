"""Source: plan an archive and read its in-scope flows, for `score`, `evaluate` and `train`.

``open_source`` plans the archive (jobs/archive/plan.py) and chooses, once, how it is read: the Python row-group
reader (jobs/archive/rowgroups.py) for local and /Volumes archives with binary prefixes (loose Parquet, or a local
Delta table's files), Spark's reader (jobs/archive/spark.py) otherwise: object stores, hex prefixes, and Delta
tables by catalog name or with deletion vectors. Both offer the same three methods, so nothing downstream asks
which one runs:

- ``run(fn, schema)``: a DataFrame of ``fn``'s output, where ``fn`` gets each Spark task's in-scope flows as an
  iterator of Arrow tables (udfs/schemas.py ``FLOWS_IN``: payload or not) — the Detect stage;
- ``flows(pairs=None)``: the in-scope flows with a payload, optionally only those of some (date, client, server)
  pairs — training's sample and the Escalate stage's second read;
- ``flows_read()``: rows read per date (exact; from the footers where they were read at planning).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Protocol

import pyarrow as pa
from pyspark.sql import DataFrame, SparkSession

from portprint.conf.config import Config
from portprint.jobs.archive.plan import ArchiveError, ArchivePlan, parse_date, plan_archive

__all__ = ["ArchiveError", "ArchivePlan", "Source", "open_source", "parse_date"]


class Source(Protocol):
    plan: ArchivePlan

    def subset(self, dates: list[str]) -> Source: ...

    def run(self, fn: Callable[[Iterator[pa.Table]], Iterator[pa.RecordBatch]], schema: pa.Schema
            ) -> DataFrame | None: ...

    def flows(self, pairs: pa.Table | None = None) -> DataFrame | None: ...

    def flows_read(self) -> dict[str, int]: ...


def open_source(spark: SparkSession, cfg: Config, flows: str, start: str | None = None, end: str | None = None,
                dates: list[str] | None = None) -> Source:
    """Plan ``flows`` for [start, end] (or exactly ``dates``) and choose its reader."""
    # The readers load the detection code (numba, torch) with them: imported here, so that importing the package
    # for its light parts (ArchiveError, parse_date: `report`, the notebooks) stays light.
    from portprint.jobs.archive.rowgroups import RowGroupSource, usable
    from portprint.jobs.archive.spark import SparkSource

    plan = plan_archive(flows, cfg.archive.columns, cfg.archive.prefix_encoding, start, end, dates, s3=cfg.s3,
                        spark=spark, lister=cfg.archive.lister)
    return RowGroupSource(spark, cfg, plan) if usable(plan, cfg) else SparkSource(spark, cfg, plan)
