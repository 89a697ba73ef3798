"""Spark's own Parquet (or Delta) reader, the other Source (jobs/archive/__init__.py chooses it for remote archives,
hex prefixes and Delta tables Spark reads): Spark scans, renames to the contract, pushes the scope filter down,
and hands Arrow batches of in-scope flows to the stage function in the Python workers."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pyarrow as pa
from pyspark.sql import Column, DataFrame, Observation, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import BinaryType, LongType, StringType, StructField, StructType, TimestampType

from portprint.conf.config import Columns, Config, ScopeConf
from portprint.jobs.archive.delta_table import is_catalog_name
from portprint.jobs.archive.plan import PREFIX_BYTES, ArchivePlan
from portprint.udfs.schemas import FLOW_COLUMNS, FLOWS_IN, spark_schema


def canonical(df: DataFrame, cols: Columns, prefix_encoding: str) -> DataFrame:
    """Rename the archive's columns to the contract's names and types; decode hex prefixes."""
    prefix = F.col(cols.orig_payload_prefix)
    if prefix_encoding == "hex":
        # unhex gives NULL for malformed hex: such a flow is then skipped and counted, not guessed at.
        prefix = F.unhex(F.regexp_replace(prefix, r"[\s:]", ""))
    prefix = F.substring(prefix, 1, PREFIX_BYTES)
    return df.select(
        F.col(cols.flow_id).cast("string").alias("flow_id"),
        F.col(cols.ts).alias("ts"),
        F.col(cols.src_ip).cast("string").alias("src_ip"),
        F.col(cols.dst_ip).cast("string").alias("dst_ip"),
        F.col(cols.src_port).cast("int").alias("src_port"),
        F.col(cols.dst_port).cast("int").alias("dst_port"),
        F.col(cols.proto).cast("int").alias("proto"),
        prefix.alias("orig_payload_prefix"),
        F.col(cols.orig_bytes).cast("long").alias("orig_bytes"),
        # Optional: not mapped, or not in the files, is null (the rule that needs it is then off).
        (F.col(cols.orig_pkts).cast("long") if cols.orig_pkts and cols.orig_pkts in df.columns
         else F.lit(None).cast("long")).alias("orig_pkts"),
        F.col(cols.date).cast("string").alias("date"),
    )


def scope_condition(scope: ScopeConf) -> Column:
    """udfs/detect.py ``in_scope`` as a Spark filter, so the scan skips out-of-scope rows before Python."""
    ports = list(scope.ports)
    responder = F.col("dst_port").isin(ports)
    initiator = F.col("src_port").isin(ports)
    side = {"responder": responder, "initiator": initiator, "either": responder | initiator}[scope.match]
    return F.coalesce(F.col("proto").isin(list(scope.protocols)) & side, F.lit(False))


def _read_schema(cols: Columns, prefix_string: bool) -> StructType:
    """The archive columns portprint reads, each at the widest type the contract allows."""
    types = [(cols.flow_id, StringType()), (cols.ts, TimestampType()), (cols.src_ip, StringType()),
             (cols.dst_ip, StringType()), (cols.src_port, LongType()), (cols.dst_port, LongType()),
             (cols.proto, LongType()), (cols.orig_payload_prefix, StringType() if prefix_string else BinaryType()),
             (cols.orig_bytes, LongType()), (cols.date, StringType())]
    types += [(c, LongType()) for c in (cols.orig_pkts,) if c]
    return StructType([StructField(name, t) for name, t in types])


def read_archive(spark: SparkSession, plan: ArchivePlan, cols: Columns, prefix_encoding: str = "binary"
                 ) -> DataFrame | None:
    """Read the planned files (what was listed and fingerprinted), or, for a Delta table read by Spark's Delta
    reader, the planned dates of it; None if there is nothing to read."""
    prefix_string = prefix_encoding == "hex"
    needed = [cols.flow_id, cols.ts, cols.src_ip, cols.dst_ip, cols.src_port, cols.dst_port, cols.proto,
              cols.orig_payload_prefix, cols.orig_bytes]
    optional = [c for c in (cols.orig_pkts,) if c]
    if plan.delta is not None:
        if not plan.all_files():
            return None
        t = plan.delta.table
        df = spark.read.table(t) if is_catalog_name(t) else spark.read.format("delta").load(t)
        # The partition filter prunes to the planned dates' files.
        return (df.where(F.col(cols.date).cast("string").isin(list(plan.dates)))
                .select(*needed, *[c for c in optional if c in df.columns], cols.date))
    # The widest type of each column, given rather than inferred from one file: files of one date may differ
    # (int32 or int64 ports, a timestamp with or without a zone; Parquet readers widen but never narrow). An
    # optional column a file lacks is read as nulls.
    reader = spark.read.option("basePath", plan.root).schema(_read_schema(cols, prefix_string))
    paths = plan.all_files()
    if not paths:
        return None
    df = reader.parquet(*paths)
    return df.select(*needed, *[c for c in optional if c in df.columns], cols.date)


class SparkSource:
    """A planned archive scanned by Spark's Parquet reader."""

    def __init__(self, spark: SparkSession, cfg: Config, plan: ArchivePlan) -> None:
        self.spark, self.cfg, self.plan = spark, cfg, plan
        self._read: Observation | None = None

    def subset(self, dates: list[str]) -> SparkSource:
        return SparkSource(self.spark, self.cfg, self.plan.subset(dates))

    def _scoped(self, observe: bool) -> DataFrame | None:
        cols = self.cfg.archive.columns
        raw = read_archive(self.spark, self.plan, cols, self.cfg.archive.prefix_encoding)
        if raw is None:
            return None
        df = canonical(raw, cols, self.cfg.archive.prefix_encoding)
        # No footers read at planning: count while scanning (it costs about 10% of the scan).
        if observe and self.plan.rows is None:
            self._read = Observation("read")
            df = df.observe(self._read, *[F.sum(F.when(F.col("date") == d, 1).otherwise(0)).alias(d)
                                          for d in self.plan.dates])
        return df.where(scope_condition(self.cfg.scope)).select(*FLOW_COLUMNS)

    def flows_read(self) -> dict[str, int]:
        """Rows read per date: from the footers, or from the scan of the last ``run`` (after its action)."""
        if self.plan.rows is not None:
            return dict(self.plan.rows)
        return {d: int(v or 0) for d, v in (self._read.get if self._read else {}).items()}

    def run(self, fn: Callable[[Iterator[pa.Table]], Iterator[pa.RecordBatch]], schema: pa.Schema
            ) -> DataFrame | None:
        """fn over each task's in-scope flows (FLOWS_IN tables, one per Arrow batch)."""
        scoped = self._scoped(observe=True)
        if scoped is None:
            return None

        def run(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
            yield from fn(pa.Table.from_batches([b]).cast(FLOWS_IN) for b in batches)

        return scoped.mapInArrow(run, spark_schema(schema))

    def flows(self, pairs: pa.Table | None = None) -> DataFrame | None:
        """In-scope flows with a payload (FLOWS_IN); with ``pairs`` (date, src_ip, dst_ip), only theirs."""
        scoped = self._scoped(observe=False)
        if scoped is None:
            return None
        df = scoped.where(F.col("orig_payload_prefix").isNotNull() & (F.length("orig_payload_prefix") > 0))
        if pairs is not None:
            df = df.join(F.broadcast(self.spark.createDataFrame(pairs.select(["date", "src_ip", "dst_ip"]))),
                         ["date", "src_ip", "dst_ip"], "left_semi").select(*FLOW_COLUMNS)
        return df
