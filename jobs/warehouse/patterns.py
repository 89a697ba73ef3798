"""anomaly_patterns: one row per recurring prefix pattern over all scored history, kept with MERGE (the Sink's
third table, updated by jobs/warehouse/__init__.py at every chunk commit).

Counts must survive rescoring (a new model replaces dates): so each chunk's dates are replaced in
`anomaly_pattern_days` (pattern x date, with HyperLogLog sketches of the addresses), and the patterns
it touched are re-aggregated from the days they will have afterwards (the table's other dates plus the
chunk's) and MERGEd into `anomaly_patterns`. The same anomalies therefore always give the same pattern
rows, however the dates were chunked or rerun.
"""

from __future__ import annotations

from collections.abc import Callable

import pyarrow as pa
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from portprint.jobs.engine.faults import fault
from portprint.jobs.warehouse import delta as delta_io
from portprint.jobs.warehouse.tables import PATTERN_DAYS, PATTERNS


def pattern_of() -> Column:
    """What recurs: for the tunnel detector, its escalated group (a registered domain, or a cut-off shape to one
    server); for the question model, the parent domain of the name (or, when the prefix cuts the name off, the
    first label's length); else the decoded header shape without the random ID when the prefix is DNS-shaped,
    else its first bytes."""
    proto = F.when(F.col("proto") == 6, F.lit("tcp")).otherwise(F.lit("udp"))
    msg = F.when(F.col("proto") == 6, F.substring("prefix_hex", 5, 1 << 20)).otherwise(F.col("prefix_hex"))
    dns = F.concat_ws(" ", F.lit("dns"), proto, F.concat(F.lit("flags="), F.substring(msg, 5, 4)),
                      F.concat(F.lit("qd="), F.substring(msg, 9, 4)), F.concat(F.lit("an="), F.substring(msg, 13, 4)))
    # Four leading bytes: enough for "SSH-", "GET ", a TLS record header, few enough to recur.
    raw = F.concat_ws(" ", F.lit("bytes"), proto, F.substring("prefix_hex", 1, 8))
    name = F.regexp_replace(F.lower(F.col("qname")), r"\.$", "")
    qname = F.when(F.col("qname_complete"), F.concat(F.lit("qname *."), F.substring_index(name, ".", -2))).otherwise(
        F.concat(F.lit("qname cut first-label="), F.length(F.substring_index(name, ".", 1)).cast("string")))
    return (F.when(F.col("detector") == "tunnel", F.concat(F.lit("tunnel "), F.coalesce("escalation_group", F.lit(""))))
            .when(F.col("detector") == "qname-model", qname)
            .when(F.col("header_verdict") == "valid", dns).otherwise(raw))


def pattern_days(anomalies: DataFrame) -> DataFrame:
    """Aggregate a chunk's anomalies to pattern x date."""
    return (anomalies.withColumn("pattern", pattern_of())
            .groupBy("pattern", "date")
            .agg(F.min("detector").alias("detector"), F.count(F.lit(1)).alias("flows"),
                 F.hll_sketch_agg("src_ip").alias("src_sketch"), F.hll_sketch_agg("dst_ip").alias("dst_sketch"),
                 F.min("ts").alias("first_seen"), F.max("ts").alias("last_seen"),
                 F.min_by("flow_id", F.struct("ts", "flow_id")).alias("example_flow_id"),
                 F.min_by("prefix_text", F.struct("ts", "flow_id")).alias("example_prefix_text"),
                 F.array_sort(F.collect_set("model_version")).alias("model_versions")))


def totals(days: DataFrame, keep: Column | None = None) -> DataFrame:
    """Re-aggregate pattern x date rows to one row per pattern, over the rows ``keep`` selects (all by
    default). A pattern none of whose rows are kept gets flows 0 and nulls: it has no flows left."""
    k = F.lit(True) if keep is None else keep

    def kept(col: str) -> Column:
        return F.when(k, F.col(col))  # aggregates skip the nulls this leaves for the other rows

    return days.groupBy("pattern").agg(
        F.min(kept("detector")).alias("detector"), F.min(kept("first_seen")).alias("first_seen"),
        F.max(kept("last_seen")).alias("last_seen"), F.count(kept("date")).cast("long").alias("days"),
        F.coalesce(F.sum(kept("flows")), F.lit(0)).cast("long").alias("flows"),
        F.hll_sketch_estimate(F.hll_union_agg(kept("src_sketch"))).alias("distinct_sources"),
        F.hll_sketch_estimate(F.hll_union_agg(kept("dst_sketch"))).alias("distinct_destinations"),
        F.min_by(kept("example_flow_id"), kept("first_seen")).alias("example_flow_id"),
        F.min_by(kept("example_prefix_text"), kept("first_seen")).alias("example_prefix_text"),
        F.array_sort(F.array_distinct(F.flatten(F.collect_list(kept("model_versions"))))).alias("model_versions"),
    )


def update_patterns(spark: SparkSession, anomalies: DataFrame, dates: list[str], names: tuple[str, str],
                    writer: str, rebuild: bool = False, committed: Callable[[str], None] = lambda table: None) -> int:
    """Fold one chunk's anomalies into the pattern tables; return how many patterns it touched.

    Two Spark jobs: the chunk's pattern x date rows (small: collected), then one aggregation over the
    table's rows plus the chunk's that gives the totals of every pattern the chunk touches, as they
    will be once the chunk's dates are replaced. Both tables are written after that, so a failure
    before the writes changes neither; ``committed`` is told each table written.

    ``rebuild``: a run stopped between the two writes left `anomaly_patterns` out of step with the days it
    was aggregated from, for patterns this chunk may not touch: every pattern is then aggregated again, and
    patterns no day holds any more are deleted.
    """
    days_table, patterns_table = names  # located by score.table_paths (paths or Unity Catalog names)
    days = pattern_days(anomalies).toArrow().select(PATTERN_DAYS.names).cast(PATTERN_DAYS)
    before = delta_io.read_table(spark, days_table, PATTERN_DAYS, writer)
    # Rows of the chunk's dates are replaced: they mark their patterns as touched (so a pattern whose
    # flows were all rescored away is deleted) but no longer count.
    old = before.withColumn("_new", F.lit(False)).withColumn("_touch", F.col("date").isin(dates) | F.lit(rebuild))
    new = (spark.createDataFrame(days) if days.num_rows else spark.createDataFrame([], before.schema)).withColumns(
        {"_new": F.lit(True), "_touch": F.lit(True)})
    # Only the touched patterns' history is aggregated, not the whole table's (it grows every night).
    touched = old.where("_touch").select("pattern").unionByName(new.select("pattern"))
    keep = F.col("_new") | ~F.col("date").isin(dates)
    rows = totals(old.join(touched, "pattern", "left_semi").unionByName(new), keep).toArrow()
    if rebuild:
        have = set(rows["pattern"].to_pylist())
        current = delta_io.read_table(spark, patterns_table, PATTERNS, writer).select("pattern").toArrow()
        gone = sorted(set(current["pattern"].to_pylist()) - have)
        if gone:  # in anomaly_patterns but in no day: flows 0 deletes them
            rows = pa.concat_tables([rows.select(PATTERNS.names).cast(PATTERNS), pa.Table.from_pylist(
                [{"pattern": p, "flows": 0} for p in gone], schema=PATTERNS)])
    fault("patterns:aggregated")
    delta_io.replace_dates(spark, days, days_table, PATTERN_DAYS, dates, writer)
    committed(days_table)
    if rows.num_rows:
        delta_io.merge_upsert(spark, rows.select(PATTERNS.names).cast(PATTERNS), patterns_table, "pattern", writer)
    committed(patterns_table)
    return rows.num_rows
