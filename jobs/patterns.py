"""anomaly_patterns: one row per recurring prefix pattern over all scored history, kept with MERGE.

Counts must survive rescoring (a new model replaces dates): so each chunk first replaces its dates
in `anomaly_pattern_days` (pattern x date, with HyperLogLog sketches of the addresses), then the
patterns it touched are re-aggregated from those days and MERGEd into `anomaly_patterns`. The same
anomalies therefore always give the same pattern rows, however the dates were chunked or rerun.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from portprint.jobs import delta_io
from portprint.jobs.tables import PATTERN_DAYS, PATTERNS


def pattern_of() -> Column:
    """What recurs: for the question model, the parent domain of the name (or, when the prefix cuts the
    name off, the first label's length); else the decoded header shape without the random ID when the
    prefix is DNS-shaped, else its first bytes."""
    proto = F.when(F.col("proto") == 6, F.lit("tcp")).otherwise(F.lit("udp"))
    msg = F.when(F.col("proto") == 6, F.substring("prefix_hex", 5, 1 << 20)).otherwise(F.col("prefix_hex"))
    dns = F.concat_ws(" ", F.lit("dns"), proto, F.concat(F.lit("flags="), F.substring(msg, 5, 4)),
                      F.concat(F.lit("qd="), F.substring(msg, 9, 4)), F.concat(F.lit("an="), F.substring(msg, 13, 4)))
    # Four leading bytes: enough for "SSH-", "GET ", a TLS record header, few enough to recur.
    raw = F.concat_ws(" ", F.lit("bytes"), proto, F.substring("prefix_hex", 1, 8))
    name = F.regexp_replace(F.lower(F.col("qname")), r"\.$", "")
    qname = F.when(F.col("qname_complete"), F.concat(F.lit("qname *."), F.substring_index(name, ".", -2))).otherwise(
        F.concat(F.lit("qname cut first-label="), F.length(F.substring_index(name, ".", 1)).cast("string")))
    return (F.when(F.col("detector") == "qname-model", qname)
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


def totals(days: DataFrame) -> DataFrame:
    """Re-aggregate pattern x date rows to one row per pattern."""
    return days.groupBy("pattern").agg(
        F.min("detector").alias("detector"), F.min("first_seen").alias("first_seen"),
        F.max("last_seen").alias("last_seen"), F.count(F.lit(1)).cast("long").alias("days"),
        F.sum("flows").cast("long").alias("flows"),
        F.hll_sketch_estimate(F.hll_union_agg("src_sketch")).alias("distinct_sources"),
        F.hll_sketch_estimate(F.hll_union_agg("dst_sketch")).alias("distinct_destinations"),
        F.min_by("example_flow_id", "first_seen").alias("example_flow_id"),
        F.min_by("example_prefix_text", "first_seen").alias("example_prefix_text"),
        F.array_sort(F.array_distinct(F.flatten(F.collect_list("model_versions")))).alias("model_versions"),
    )


def update_patterns(spark: SparkSession, anomalies: DataFrame, dates: list[str], names: tuple[str, str],
                    writer: str) -> int:
    """Fold one chunk's anomalies into the pattern tables; return how many patterns it touched.

    Two Spark jobs: the chunk's pattern x date rows (small: collected), then the totals of every
    pattern the chunk touches, computed from the table as it will be once the chunk's dates are
    replaced. Both tables are written after that, so a failure before the writes changes neither.
    """
    days_table, patterns_table = names  # located by score.table_paths (paths or Unity Catalog names)
    days = pattern_days(anomalies).toArrow()
    days = days.select(PATTERN_DAYS.names).cast(PATTERN_DAYS)
    before = delta_io.read_table(spark, days_table, PATTERN_DAYS, writer)
    chunk = spark.createDataFrame(days) if days.num_rows else spark.createDataFrame([], before.schema)
    in_chunk = F.col("date").isin(dates)
    # Touched: what these dates held before (now possibly gone) and what they hold now.
    touched = before.where(in_chunk).select("pattern").unionByName(chunk.select("pattern")).distinct()
    after = before.where(~in_chunk).unionByName(chunk)
    # A left join keeps the touched patterns with no days left (flows null): MERGE deletes those.
    rows = touched.join(totals(after.join(touched, "pattern", "left_semi")), "pattern", "left").toArrow()
    delta_io.replace_dates(spark, days, days_table, PATTERN_DAYS, dates, writer)
    if not rows.num_rows:
        return 0
    live = rows.filter(pc.is_valid(rows["flows"])).select(PATTERNS.names).cast(PATTERNS)
    gone = rows.filter(pc.is_null(rows["flows"]))["pattern"].to_pylist()
    delta_io.merge_upsert(spark, pa.concat_tables([live, _deletions(sorted(gone))]), patterns_table, "pattern", writer)
    return rows.num_rows


def _deletions(patterns: list[str]) -> pa.Table:
    """Source rows that tell MERGE a pattern has no flows left (its dates were rescored away)."""
    cols = {f.name: pa.nulls(len(patterns), f.type) for f in PATTERNS}
    cols["pattern"] = pa.array(patterns, pa.string())
    cols["flows"] = pa.array([0] * len(patterns), pa.int64())
    return pa.table(cols, schema=PATTERNS)
