"""`train --benign-from WAREHOUSE`: the flows people marked benign, and the flagged names under allowlisted
domains, fetched from the archive by flow_id to be trained on as normal traffic. Called by jobs/train.py.

Which flows: every anomaly whose latest verdict (on its flow, pattern or pair; jobs/triage.py) is ``benign``,
and every anomaly a ``domain`` suppression rule in force matches. Their prefixes come from the archive (the
anomalies table keeps only a rendering), by date and flow_id; ids no longer in the archive are counted.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from portprint.conf.config import Config
from portprint.jobs import triage
from portprint.jobs.archive import open_source
from portprint.jobs.warehouse import delta as delta_io
from portprint.jobs.warehouse import people as people_tables
from portprint.jobs.warehouse.tables import ANOMALIES


def benign_training_flows(spark: SparkSession, cfg: Config, warehouse: str, flows: str) -> tuple[pa.Table, dict]:
    """(flow_id, date, prefix, proto, orig_bytes, prefix_len) of the benign flows, as training collects them,
    and the counts for the model card."""
    reader = delta_io.choose_writer(spark, cfg.output.writer)
    rules, _ = triage.load_rules(spark, cfg, warehouse, reader)
    at = triage.now()
    domains = [r for r in rules if r.kind == "domain" and r.active(at)]
    anomalies = people_tables.read(spark, cfg, warehouse, "anomalies", ANOMALIES, reader)
    verdicts = triage.read_verdicts(spark, cfg, warehouse, reader)
    marked = (triage.triaged(anomalies, verdicts, [], at).where(F.col("verdict_status") == "benign")
              .select("flow_id", "date").distinct().toArrow())
    allowed = (triage.triaged(anomalies, verdicts.limit(0), domains, at).where(F.col("suppressed_by").isNotNull())
               .select("flow_id", "date").distinct().toArrow()) if domains else marked.schema.empty_table()
    keys = pa.concat_tables([marked, allowed]).group_by(["flow_id", "date"]).aggregate([])
    counts = {"warehouse": warehouse, "marked_benign": marked.num_rows, "allowlisted": allowed.num_rows,
              "added": 0, "not_in_archive": 0}
    empty = pa.schema([("flow_id", pa.string()), ("date", pa.string()), ("prefix", pa.binary()),
                       ("proto", pa.int8()), ("orig_bytes", pa.int64()), ("prefix_len", pa.int32())]).empty_table()
    if not keys.num_rows:
        return empty, counts
    dates = sorted(set(keys["date"].to_pylist()))
    source = open_source(spark, cfg, flows, dates[0], dates[-1])
    present = [d for d in dates if d in source.plan.dates]
    flows_df = source.subset(present).flows() if present else None
    if flows_df is None:
        counts["not_in_archive"] = keys.num_rows
        return empty, counts
    wanted = spark.createDataFrame(keys.to_pandas())
    found = (flows_df
             .join(F.broadcast(wanted), ["flow_id", "date"], "left_semi")
             .select("flow_id", "date", F.col("orig_payload_prefix").alias("prefix"),
                     F.col("proto").cast("byte").alias("proto"), "orig_bytes",
                     F.length("orig_payload_prefix").cast("int").alias("prefix_len"))
             .toArrow().sort_by("flow_id"))
    counts["not_in_archive"] = keys.num_rows - found.num_rows
    counts["added"] = found.num_rows
    return found, counts


def with_feedback(window: pa.Table, extra: pa.Table) -> tuple[pa.Table, np.ndarray]:
    """The training table with the benign flows last (taken out of the window where it had them), and a mask
    of those rows: training never holds them out for calibration and never trims them."""
    if not extra.num_rows:
        return window, np.zeros(window.num_rows, bool)
    dup = pc.is_in(window["flow_id"], value_set=extra["flow_id"].combine_chunks())
    window = window.filter(pc.invert(dup))
    table = pa.concat_tables([window, extra.select(window.column_names).cast(window.schema)])
    fed = np.zeros(table.num_rows, bool)
    fed[window.num_rows:] = True
    return table, fed
