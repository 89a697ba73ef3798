"""The Python row-group reader, one of the two Sources (jobs/archive/__init__.py chooses it for local and
/Volumes archives with binary prefixes).

Each Spark task takes a few consecutive Parquet row groups (``spark.rows_per_task`` rows), reads only the
needed columns with pyarrow, keeps the in-scope flows and hands them to the stage function (Detect) in the
same worker, so only the function's output crosses back to the JVM. Spark still schedules, retries and writes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import asdict

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pyspark.sql import DataFrame, SparkSession

from portprint.conf.config import Config
from portprint.jobs.archive.plan import PREFIX_BYTES, ArchivePlan, is_remote
from portprint.udfs.detect import has_payload, in_scope
from portprint.udfs.schemas import FLOW_COLUMNS, FLOW_TYPES, FLOWS_IN, OPTIONAL_COLUMNS, spark_schema

READ_FAILED = "portprint could not read"
Task = list[tuple[str, int, str]]  # (path, row group, date)


def usable(plan: ArchivePlan, cfg: Config) -> bool:
    """The row-group reader needs local files (footers read at planning) and binary prefixes."""
    return (cfg.spark.python_reader and not is_remote(plan.root) and cfg.archive.prefix_encoding == "binary"
            and bool(plan.row_groups) and plan.delta is None)


def tasks(plan: ArchivePlan, rows_per_task: int) -> list[Task]:
    """Consecutive row groups, as (path, row group, date), packed into tasks of about rows_per_task rows."""
    out: list[Task] = [[]]
    rows = 0
    for d in plan.dates:
        for path in plan.files.get(d, []):
            for rg, n in enumerate(plan.row_groups.get(path, ())):
                if out[-1] and rows + n > rows_per_task:
                    out.append([])
                    rows = 0
                out[-1].append((path, rg, d))
                rows += n
    return [t for t in out if t]


class Reader:
    """Reads one row group's flows in the contract's names and types, in scope only."""

    def __init__(self, cfg: Config) -> None:
        self.names, self.scope = asdict(cfg.archive.columns), cfg.scope

    def read(self, path: str, rg: int, date: str, columns: tuple[str, ...] = FLOW_COLUMNS[:-1],
             rows: pa.Array | None = None) -> pa.Table:
        try:
            f = pq.ParquetFile(path)
            # An optional column (orig_pkts) that is not mapped or not in this file is read as nulls.
            have = [c for c in columns if self.names.get(c) and (c not in OPTIONAL_COLUMNS
                                                                 or self.names[c] in f.schema_arrow.names)]
            raw = f.read_row_group(rg, columns=[self.names[c] for c in have])
        except (OSError, pa.ArrowException) as exc:
            # The driver turns this line into an ArchiveError that names the file.
            raise RuntimeError(f"{READ_FAILED} {path} (row group {rg}): {exc}") from None
        if rows is not None:
            raw = raw.filter(rows)
        t = pa.table({c: raw.column(self.names[c]).cast(FLOW_TYPES[c]) if c in have
                      else pa.nulls(raw.num_rows, FLOW_TYPES[c]) for c in columns})
        if "orig_payload_prefix" in columns:
            cut = pc.binary_slice(t["orig_payload_prefix"], 0, PREFIX_BYTES)
            t = t.set_column(t.schema.get_field_index("orig_payload_prefix"), "orig_payload_prefix", cut)
        return t.append_column("date", pa.array([date] * t.num_rows, pa.string()))

    def scoped(self, path: str, rg: int, date: str, rows: pa.Array | None = None) -> pa.Table:
        t = self.read(path, rg, date, rows=rows)
        return t.filter(in_scope(t, self.scope))

    def pairs_in(self, path: str, rg: int, date: str, pairs: list[str]) -> pa.Array | None:
        """Which rows of a row group belong to one of ``pairs`` ("src\\0dst"); None if none does."""
        ips = self.read(path, rg, date, ("src_ip", "dst_ip"))
        both = pc.binary_join_element_wise(ips["src_ip"], ips["dst_ip"], "\x00")
        hit = pc.fill_null(pc.is_in(both, value_set=pa.array(pairs, pa.string())), False)
        return hit if pc.any(hit).as_py() else None


class RowGroupSource:
    """A planned local archive read row group by row group in the Python workers."""

    def __init__(self, spark: SparkSession, cfg: Config, plan: ArchivePlan) -> None:
        self.spark, self.cfg, self.plan = spark, cfg, plan

    def subset(self, dates: list[str]) -> RowGroupSource:
        return RowGroupSource(self.spark, self.cfg, self.plan.subset(dates))

    def flows_read(self) -> dict[str, int]:
        return dict(self.plan.rows or {})

    def _over_tasks(self, per_task: Callable[[Task], Iterator[pa.RecordBatch]], schema: pa.Schema
                    ) -> DataFrame | None:
        work = tasks(self.plan, self.cfg.spark.rows_per_task)
        if not work:
            return None

        def run(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
            for batch in batches:
                for i in batch.column(0).to_pylist():
                    yield from per_task(work[i])

        # One Spark task per group of row groups: a range split into as many partitions as it has numbers,
        # with no shuffle (a local relation would need one to spread), on Spark Connect too.
        return self.spark.range(0, len(work), 1, len(work)).mapInArrow(run, spark_schema(schema))

    def run(self, fn: Callable[[Iterator[pa.Table]], Iterator[pa.RecordBatch]], schema: pa.Schema
            ) -> DataFrame | None:
        """fn over each task's in-scope flows (FLOWS_IN tables, one per row group)."""
        reader = Reader(self.cfg)
        return self._over_tasks(lambda task: fn(reader.scoped(p, rg, d) for p, rg, d in task), schema)

    def flows(self, pairs: pa.Table | None = None) -> DataFrame | None:
        """In-scope flows with a payload (FLOWS_IN); with ``pairs`` (date, src_ip, dst_ip), only theirs: each
        row group's two address columns are read first, the rest only where a pair is in it."""
        reader = Reader(self.cfg)
        wanted: dict[str, list[str]] = {}
        for r in (pairs.to_pylist() if pairs is not None else []):
            wanted.setdefault(r["date"], []).append(f"{r['src_ip']}\x00{r['dst_ip']}")

        def per_task(task: Task) -> Iterator[pa.RecordBatch]:
            for path, rg, date in task:
                hit = None
                if pairs is not None:
                    if date not in wanted:
                        continue
                    hit = reader.pairs_in(path, rg, date, wanted[date])
                    if hit is None:
                        continue
                t = reader.scoped(path, rg, date, hit)
                yield from t.filter(has_payload(t["orig_payload_prefix"])).cast(FLOWS_IN).to_batches()

        return self._over_tasks(per_task, FLOWS_IN)
