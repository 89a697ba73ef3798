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

import math
from collections.abc import Iterator
from dataclasses import asdict

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pyspark.sql import DataFrame, SparkSession

from portprint.jobs.archive import ArchivePlan, is_remote
from portprint.jobs.config import Config
from portprint.jobs.tables import ANOMALIES, TS, spark_schema
from portprint.models.artifact import ModelArtifact
from portprint.udfs.pairs import PAIR, distinct_names, pair_flags, slice_counts, summarize
from portprint.udfs.scoring import QNAME_PAIR, Verdicts, anomaly_table, cached_scorer

KIND, SCOPED, SKIPPED, NAMES, KEY = "_kind", "_scoped", "_skipped", "_names", "_key"
CAND, PREFIX, ORIG_BYTES = "_cand", "_prefix", "_orig_bytes"
# Values of KIND: an anomaly row; one row group's counts; a pair's distinct judged names in one slice (and
# whether its flows there were kept as candidates); one odd name of a pair; a candidate flow (the judged
# flows of a pair whose slice is mostly odd names, kept so that pair escalation need not read them again).
ANOMALY, COUNTS, PAIR_NAMES, ODD_NAME, CANDIDATE = "a", "c", "n", "o", "r"
OUT = pa.schema([*ANOMALIES, pa.field(SCOPED, pa.int64()), pa.field(SKIPPED, pa.int64()),
                 pa.field(KIND, pa.string()), pa.field(NAMES, pa.int64()), pa.field(KEY, pa.int64()),
                 pa.field(CAND, pa.bool_()), pa.field(PREFIX, pa.binary()), pa.field(ORIG_BYTES, pa.int64())])
STAGED = [*ANOMALIES.names, KIND, NAMES, KEY, CAND, PREFIX, ORIG_BYTES]  # anomalies, evidence, candidates
READ_FAILED = "portprint could not read"
ROWS = ("flow_id", "ts", "src_ip", "dst_ip", "src_port", "dst_port", "proto", "orig_payload_prefix", "orig_bytes",
        "date")  # the flow columns a worker needs (canonical names)


def as_out(t: pa.Table, kind: str) -> Iterator[pa.RecordBatch]:
    """Rows of one KIND as OUT batches: the columns ``t`` lacks are null."""
    n = t.num_rows
    if n == 0:
        return
    cols = [t[f.name].cast(f.type) if f.name in t.column_names else pa.nulls(n, f.type) for f in OUT]
    cols[OUT.get_field_index(KIND)] = pa.array([kind] * n, pa.string())
    yield from pa.table(cols, schema=OUT).to_batches()


def pairs_on(art: ModelArtifact, cfg: Config) -> bool:
    """Pair escalation needs a question model trained with an odd threshold (models before it lack one)."""
    return cfg.pairs.enabled and art.has_qname and "odd_threshold" in art.meta.qname


class Detector:
    """One Python worker's view of a slice of flows (a Spark task): anomalies out as they are found, the
    pairs' evidence out at the end, so a name seen in many batches of the slice counts once."""

    def __init__(self, art: ModelArtifact, cfg: Config, run_id: str, scored_at_us: int) -> None:
        self.scorer = cached_scorer(art, cfg.spark.torch_threads_per_task)
        self.art, self.ports, self.top = art, cfg.scope.ports, cfg.output.top_bytes
        self.run_id, self.scored_at_us = run_id, scored_at_us
        self.pairs = pairs_on(art, cfg)
        self.odd = float(art.meta.qname.get("odd_threshold", "nan")) if self.pairs else math.nan
        self.min_share = cfg.pairs.min_share
        self.pieces: list[pa.Table] = []  # the distinct judged names of each batch or row group
        self.suspect: list[pa.Table] = []  # per pair and batch or row group: were its flows kept?

    def rows(self, rows: pa.Table) -> Iterator[pa.RecordBatch]:
        """Score flows with a payload (ROWS columns); yield their anomalies."""
        if rows.num_rows == 0:
            return
        prefix = rows["orig_payload_prefix"].combine_chunks()
        proto, orig = rows["proto"].combine_chunks(), rows["orig_bytes"].combine_chunks()
        v = self.scorer.score(prefix, proto, orig)
        if self.pairs:
            yield from self._evidence(rows, v)
        found = self.scorer.detect(prefix, proto, orig, self.top, v)
        if found.null_count < len(found):
            hit = found.is_valid()
            yield from as_out(anomaly_table(rows.filter(hit), found.filter(hit), self.art.meta, self.ports,
                                            self.run_id, self.scored_at_us), ANOMALY)

    def _evidence(self, rows: pa.Table, v: Verdicts) -> Iterator[pa.RecordBatch]:
        distinct = distinct_names(rows["date"], rows["src_ip"], rows["dst_ip"], v.qkey, v.qloss, self.odd)
        self.pieces.append(distinct)
        local = slice_counts(distinct, self.min_share)
        self.suspect.append(local.select([*PAIR, "suspect"]))
        suspects = local.filter(pc.field("suspect")).select(list(PAIR))
        if suspects.num_rows:
            judged = rows.filter(pa.array(~np.isnan(v.qloss)))
            cand = judged.join(suspects, list(PAIR), join_type="left semi", use_threads=False)
            yield from as_out(cand.rename_columns([{"orig_payload_prefix": PREFIX, "orig_bytes": ORIG_BYTES}.get(c, c)
                                                   for c in cand.column_names]), CANDIDATE)

    def finish(self) -> Iterator[pa.RecordBatch]:
        """The slice's evidence: per pair its distinct judged names and whether every batch or row group
        that saw them kept its flows as candidates; and the odd names."""
        if not self.pairs:
            return
        names, odd = summarize(self.pieces)
        if self.suspect:
            covered = (pa.concat_tables(self.suspect).group_by(list(PAIR), use_threads=False)
                       .aggregate([("suspect", "min")]).rename_columns([*PAIR, CAND]))
            names = names.join(covered, list(PAIR), use_threads=False)
        self.pieces, self.suspect = [], []
        yield from as_out(names.rename_columns({"names": NAMES}), PAIR_NAMES)
        yield from as_out(odd.rename_columns([*PAIR, KEY]), ODD_NAME)


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


FLOW_TYPES = {"flow_id": pa.string(), "ts": TS, "src_ip": pa.string(), "dst_ip": pa.string(), "src_port": pa.int32(),
              "dst_port": pa.int32(), "proto": pa.int32(), "orig_payload_prefix": pa.binary(),
              "orig_bytes": pa.int64(), "date": pa.string()}
ROWS_SCHEMA = pa.schema([(c, FLOW_TYPES[c]) for c in ROWS])


class _Reader:
    """Reads one row group's flows in the contract's names and types and keeps the scope."""

    def __init__(self, cfg: Config) -> None:
        self.names, self.scope = asdict(cfg.archive.columns), cfg.scope
        self.ports = pa.array(cfg.scope.ports, pa.int32())
        self.protocols = pa.array(cfg.scope.protocols, pa.int32())

    def read(self, path: str, rg: int, columns: tuple[str, ...], rows: pa.Array | None = None) -> pa.Table:
        try:
            raw = pq.ParquetFile(path).read_row_group(rg, columns=[self.names[c] for c in columns])
        except (OSError, pa.ArrowException) as exc:
            # The driver turns this line into an ArchiveError that names the file.
            raise RuntimeError(f"{READ_FAILED} {path} (row group {rg}): {exc}") from None
        if rows is not None:
            raw = raw.filter(rows)
        return pa.table({c: raw.column(self.names[c]).cast(FLOW_TYPES[c]) for c in columns})

    def pairs_in(self, path: str, rg: int, pairs: list[str]) -> pa.Array | None:
        """Which rows of a row group belong to one of ``pairs`` ("src\\0dst"); None if none does."""
        ips = self.read(path, rg, ("src_ip", "dst_ip"))
        both = pc.binary_join_element_wise(ips["src_ip"], ips["dst_ip"], "\x00")
        hit = pc.fill_null(pc.is_in(both, value_set=pa.array(pairs, pa.string())), False)
        return hit if pc.any(hit).as_py() else None

    def scoped(self, t: pa.Table) -> pa.Table:
        responder = pc.is_in(t["dst_port"], value_set=self.ports)
        initiator = pc.is_in(t["src_port"], value_set=self.ports)
        side = {"responder": responder, "initiator": initiator,
                "either": pc.or_(responder, initiator)}[self.scope.match]
        return t.filter(pc.fill_null(pc.and_(pc.is_in(t["proto"], value_set=self.protocols), side), False))

    @staticmethod
    def with_payload(scoped: pa.Table, date: str) -> pa.Table:
        payload = pc.fill_null(pc.greater(pc.binary_length(scoped["orig_payload_prefix"]), 0), False)
        rows = scoped.filter(payload)
        return rows.append_column("date", pa.array([date] * rows.num_rows, pa.string()))


def _scan(tasks: list[list[tuple[str, int, str]]], art: ModelArtifact, cfg: Config, run_id: str,
          scored_at_us: int):
    """The mapInArrow function: task numbers in (indexes into ``tasks``, lists of (path, row group,
    date) shipped in the closure), anomalies, counts and the pairs' evidence out."""
    reader = _Reader(cfg)

    def run(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        det = Detector(art, cfg, run_id, scored_at_us)
        for batch in batches:
            for path, rg, date in (item for i in batch.column(0).to_pylist() for item in tasks[i]):
                scoped = reader.scoped(reader.read(path, rg, ROWS[:-1]))
                rows = reader.with_payload(scoped, date)
                yield from det.rows(rows)
                counts = {"date": date, SCOPED: scoped.num_rows,
                          SKIPPED: scoped.num_rows - rows.num_rows, KIND: COUNTS}
                yield pa.RecordBatch.from_pylist([counts], schema=OUT)
        yield from det.finish()

    return run


def pair_rows(spark: SparkSession, plan: ArchivePlan, cfg: Config, pairs: pa.Table) -> DataFrame | None:
    """The escalated pairs' in-scope flows with a payload (ROWS), read again by the workers: each row
    group's two address columns first, the rest only where a pair is in it."""
    tasks = _tasks(plan, cfg.spark.rows_per_task)
    if not tasks:
        return None
    wanted: dict[str, list[str]] = {}
    for r in pairs.select(list(PAIR)).to_pylist():
        wanted.setdefault(r["date"], []).append(f"{r['src_ip']}\x00{r['dst_ip']}")
    reader = _Reader(cfg)

    def run(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        for batch in batches:
            for path, rg, date in (item for i in batch.column(0).to_pylist() for item in tasks[i]):
                if date not in wanted:
                    continue
                hit = reader.pairs_in(path, rg, wanted[date])
                if hit is None:
                    continue
                rows = reader.with_payload(reader.scoped(reader.read(path, rg, ROWS[:-1], hit)), date)
                yield from rows.select(list(ROWS)).cast(ROWS_SCHEMA).to_batches()

    return spark.range(0, len(tasks), 1, len(tasks)).mapInArrow(run, spark_schema(ROWS_SCHEMA))


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



def spark_scan(art: ModelArtifact, cfg: Config, run_id: str, scored_at_us: int):
    """The mapInArrow function of Spark's own scan: in-scope flows with a payload (ROWS columns) in,
    anomalies and the pairs' evidence out, as the row-group path gives them."""

    def run(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        det = Detector(art, cfg, run_id, scored_at_us)
        for batch in batches:
            yield from det.rows(pa.Table.from_batches([batch]).select(list(ROWS)))
        yield from det.finish()

    return run


def pair_detect(art: ModelArtifact, cfg: Config, run_id: str, scored_at_us: int):
    """The applyInArrow function of pair escalation's second step: one escalated pair's flows of one day
    (ROWS columns) in; those no detector flagged in the first pass and whose name is odd or asked once
    that day out, as anomalies of detector qname-pair (udfs/pairs.py)."""

    def run(rows: pa.Table) -> pa.Table:
        scorer = cached_scorer(art, cfg.spark.torch_threads_per_task)
        rows = rows.select(list(ROWS))
        if rows.num_rows == 0:
            return OUT.empty_table()
        prefix = rows["orig_payload_prefix"].combine_chunks()
        proto, orig = rows["proto"].combine_chunks(), rows["orig_bytes"].combine_chunks()
        v = scorer.score(prefix, proto, orig)
        pair = rows.select(list(PAIR)).slice(0, 1)
        flag = pair_flags(rows["date"], rows["src_ip"], rows["dst_ip"], v.qkey, v.qloss,
                          float(art.meta.qname["odd_threshold"]), pair) & (v.detector == 0)
        hit = np.flatnonzero(flag)
        if len(hit) == 0:
            return OUT.empty_table()
        idx = pa.array(hit)
        verdicts = Verdicts(v.loss[hit], v.reason[hit], v.qloss[hit], np.full(len(hit), QNAME_PAIR, np.int8))
        found = scorer.explain(prefix.take(idx), pc.take(proto, idx), pc.take(orig, idx), cfg.output.top_bytes,
                               verdicts)
        table = anomaly_table(rows.take(idx), found, art.meta, cfg.scope.ports, run_id, scored_at_us)
        return pa.Table.from_batches(list(as_out(table, ANOMALY)), schema=OUT)

    return run
