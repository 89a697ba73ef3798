"""Pure transforms: DataFrames plus plain values in, DataFrames out. No I/O, no session."""

from __future__ import annotations

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from portprint.jobs import row_groups
from portprint.jobs.config import Columns, Config, ScopeConf
from portprint.jobs.tables import spark_schema
from portprint.models.artifact import ModelArtifact

CANONICAL = ("flow_id", "ts", "src_ip", "dst_ip", "src_port", "dst_port", "proto", "orig_payload_prefix",
             "orig_bytes", "date")


def canonical(df: DataFrame, cols: Columns, prefix_encoding: str) -> DataFrame:
    """Rename the archive's columns to the contract's names and types; decode hex prefixes."""
    prefix = F.col(cols.orig_payload_prefix)
    if prefix_encoding == "hex":
        # unhex gives NULL for malformed hex: such a flow is then skipped and counted, not guessed at.
        prefix = F.unhex(F.regexp_replace(prefix, r"[\s:]", ""))
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
        F.col(cols.date).cast("string").alias("date"),
    )


def scope_condition(scope: ScopeConf) -> Column:
    """Which flows are scored: protocol in scope and a scope port on the configured side(s)."""
    ports = list(scope.ports)
    responder = F.col("dst_port").isin(ports)
    initiator = F.col("src_port").isin(ports)
    side = {"responder": responder, "initiator": initiator, "either": responder | initiator}[scope.match]
    return F.col("proto").isin(list(scope.protocols)) & side


def in_scope(df: DataFrame, scope: ScopeConf) -> DataFrame:
    """Keep port-53 flows and record which side matched (initiator = source port 53, a bypass trick)."""
    return df.where(scope_condition(scope)).withColumn(
        "matched_side",
        F.when(F.col("dst_port").isin(list(scope.ports)), F.lit("responder")).otherwise(F.lit("initiator")),
    )


def has_payload() -> Column:
    return F.col("orig_payload_prefix").isNotNull() & (F.length("orig_payload_prefix") > 0)


def _udf_args() -> list[Column]:
    # The whole stored prefix crosses to Python (the question model reads the name after the header);
    # the wide columns stay in the JVM.
    return [F.col("orig_payload_prefix"), F.col("proto").cast("byte"), F.col("orig_bytes")]


def add_scores(df: DataFrame, score_udf) -> DataFrame:
    """Add every detector's view: `loss` (header model), `reason` (rule code), `qname_loss` (question
    model, null where no name is visible), `detector_code` (0 none, else index into DETECTORS) and
    `qname_key` (the name's key, which pair escalation counts)."""
    return (df.withColumn("_s", score_udf(*_udf_args()))
            .select("*", *[F.col(f"_s.{c}").alias(a) for c, a in (("loss", "loss"), ("reason", "reason"),
                                                                   ("qname_loss", "qname_loss"),
                                                                   ("detector", "detector_code"),
                                                                   ("qname_key", "qname_key"))])
            .drop("_s"))


def detect_flows(df: DataFrame, art: ModelArtifact, cfg: Config, run_id: str, scored_at_us: int) -> DataFrame:
    """In-scope flows (canonical columns) in; their anomalies and the pairs' evidence out (row_groups.OUT).

    The same worker code as the row-group path, fed by Spark's reader: each flow with a payload crosses
    to Python once (``mapInArrow``), and only anomalies and a little evidence per pair come back. The
    function's closure holds the model's bytes, so no SparkContext is needed (Spark Connect works).
    """
    rows = df.where(has_payload()).select(*row_groups.ROWS)
    return rows.mapInArrow(row_groups.spark_scan(art, cfg, run_id, scored_at_us), spark_schema(row_groups.OUT))
