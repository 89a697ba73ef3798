"""Score a local archive by handing Parquet row groups to the Python workers (``mapInArrow``).

The default Spark path scans the files in the JVM, converts every in-scope row to Arrow, sends it to a
Python worker and carries the wide columns past the UDF. For archives on a local or FUSE path (a
laptop, a Unity Catalog volume under /Volumes) the workers can read the row groups themselves: each
Spark task takes a few consecutive row groups (``spark.rows_per_task`` rows), reads the needed columns
with pyarrow, keeps the scope, scores, explains, and returns only the anomalies plus a row of counts
per row group. Spark still schedules, retries and writes. Remote
URIs (s3://, abfss://) and hex prefixes keep the Spark path; a test checks both paths give the same
tables.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pyspark.sql import DataFrame, SparkSession

from portprint.jobs.archive import ArchivePlan, is_remote
from portprint.jobs.config import Config
from portprint.jobs.tables import ANOMALIES, TS, spark_schema
from portprint.models.artifact import ModelArtifact
from portprint.udfs.scoring import anomaly_table, cached_scorer

KIND, SCOPED, SKIPPED = "_kind", "_scoped", "_skipped"
ANOMALY, COUNTS = "a", "c"  # values of KIND: an anomaly row, or one row group's counts
OUT = pa.schema([*ANOMALIES, pa.field(SCOPED, pa.int64()), pa.field(SKIPPED, pa.int64()),
                 pa.field(KIND, pa.string())])
READ_FAILED = "portprint could not read"


def usable(plan: ArchivePlan, cfg: Config) -> bool:
    """The row-group path needs local files (footers read at planning) and binary prefixes."""
    return (cfg.spark.python_reader and not is_remote(plan.root) and cfg.archive.prefix_encoding == "binary"
            and bool(plan.row_groups))


def _tasks(plan: ArchivePlan, rows_per_task: int) -> list[list[tuple[str, int, str]]]:
    """Consecutive row groups, as (path, row group, date), packed into tasks of about rows_per_task rows."""
    tasks: list[list[tuple[str, int, str]]] = [[]]
    rows = 0
    for d in plan.dates:
        for path in plan.files.get(d, []):
            for rg, n in enumerate(plan.row_groups.get(path, ())):
                if tasks[-1] and rows + n > rows_per_task:
                    tasks.append([])
                    rows = 0
                tasks[-1].append((path, rg, d))
                rows += n
    return [t for t in tasks if t]


def _scan(tasks: list[list[tuple[str, int, str]]], art: ModelArtifact, cfg: Config, run_id: str,
          scored_at_us: int):
    """The mapInArrow function: task numbers in (indexes into ``tasks``, lists of (path, row group,
    date) shipped in the closure), anomalies and counts out."""
    names = asdict(cfg.archive.columns)
    scope, threads, top = cfg.scope, cfg.spark.torch_threads_per_task, cfg.output.top_bytes
    wanted = ("flow_id", "ts", "src_ip", "dst_ip", "src_port", "dst_port", "proto", "orig_payload_prefix",
              "orig_bytes")
    types = {"flow_id": pa.string(), "ts": TS, "src_ip": pa.string(), "dst_ip": pa.string(),
             "src_port": pa.int32(), "dst_port": pa.int32(), "proto": pa.int32(), "orig_bytes": pa.int64()}
    ports, protocols = pa.array(scope.ports, pa.int32()), pa.array(scope.protocols, pa.int32())

    def run(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        scorer = cached_scorer(art, threads)
        for batch in batches:
            for path, rg, date in (item for i in batch.column(0).to_pylist() for item in tasks[i]):
                try:
                    raw = pq.ParquetFile(path).read_row_group(rg, columns=[names[c] for c in wanted])
                except (OSError, pa.ArrowException) as exc:
                    # The driver turns this line into an ArchiveError that names the file.
                    raise RuntimeError(f"{READ_FAILED} {path} (row group {rg}): {exc}") from None
                t = pa.table({c: raw.column(names[c]) if c not in types else raw.column(names[c]).cast(types[c])
                              for c in wanted})
                responder = pc.is_in(t["dst_port"], value_set=ports)
                initiator = pc.is_in(t["src_port"], value_set=ports)
                side = {"responder": responder, "initiator": initiator,
                        "either": pc.or_(responder, initiator)}[scope.match]
                keep = pc.fill_null(pc.and_(pc.is_in(t["proto"], value_set=protocols), side), False)
                scoped = t.filter(keep)
                prefix = scoped["orig_payload_prefix"]
                payload = pc.fill_null(pc.greater(pc.binary_length(prefix), 0), False)
                rows = scoped.filter(payload).append_column("date", pa.array([date] * int(pc.sum(payload).as_py() or 0),
                                                                          pa.string()))
                if rows.num_rows:
                    found = scorer.detect(rows["orig_payload_prefix"].combine_chunks(), rows["proto"].combine_chunks(),
                                          rows["orig_bytes"].combine_chunks(), top)
                    hit = found.is_valid()
                    if found.null_count < len(found):
                        out = anomaly_table(rows.filter(hit), found.filter(hit), art.meta, scope.ports, run_id,
                                            scored_at_us)
                        n = out.num_rows
                        for name in (SCOPED, SKIPPED):
                            out = out.append_column(name, pa.nulls(n, pa.int64()))
                        yield from out.append_column(KIND, pa.array([ANOMALY] * n, pa.string())).to_batches()
                counts = {"date": date, SCOPED: scoped.num_rows,
                          SKIPPED: scoped.num_rows - rows.num_rows, KIND: COUNTS}
                yield pa.RecordBatch.from_pylist([counts], schema=OUT)

    return run


def detect_row_groups(spark: SparkSession, plan: ArchivePlan, cfg: Config, art: ModelArtifact, run_id: str,
                      scored_at_us: int) -> DataFrame | None:
    """Anomaly rows and per-row-group count rows (``_kind`` a / c) for the plan's row groups, as one DataFrame."""
    tasks = _tasks(plan, cfg.spark.rows_per_task)
    if not tasks:
        return None
    # One Spark task per group of row groups: a range split into as many partitions as rows holds one
    # number per partition, with no shuffle (a local relation would need one to spread), on Spark Connect too.
    ids = spark.range(0, len(tasks), 1, len(tasks))
    return ids.mapInArrow(_scan(tasks, art, cfg, run_id, scored_at_us), spark_schema(OUT))

