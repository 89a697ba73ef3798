"""Pure transforms: DataFrames plus plain values in, DataFrames out. No I/O, no session."""

from __future__ import annotations

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from portprint.jobs.config import Columns, ScopeConf
from portprint.udfs.header_rule import REASONS

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


def add_scores(df: DataFrame, score_udf, width: int) -> DataFrame:
    """Add `loss` and the rule's `reason` code to in-scope flows that carry a payload.

    Only a short slice of the prefix (the header plus the TCP length) and three numbers cross to
    the Python workers; the wide columns stay in the JVM.
    """
    cut = max(width, 12) + 2
    return df.withColumn(
        "_s",
        score_udf(F.substring("orig_payload_prefix", 1, cut), F.col("proto").cast("byte"),
                  F.col("orig_bytes"), F.length("orig_payload_prefix").cast("int")),
    ).withColumn("loss", F.col("_s.loss")).withColumn("reason", F.col("_s.reason").cast("int")).drop("_s")


def rule_fired() -> Column:
    """The header rule judged the flow not DNS (reason 0 is ok, 1 is 'no payload')."""
    return F.col("reason") > F.lit(1)


def model_fired(threshold: float) -> Column:
    return F.col("loss") > F.lit(threshold)


def flagged(threshold: float) -> Column:
    """The one decision every command shares: the rule or the model fired."""
    return rule_fired() | model_fired(threshold)


def score_flows(df: DataFrame, score_udf, explain_udf, *, width: int, threshold: float, model_version: str,
                run_id: str, scored_at: str) -> DataFrame:
    """Score in-scope flows that carry a payload and return the anomalies with their explanations."""
    hits = add_scores(df, score_udf, width).where(flagged(threshold))
    # Flagged flows are few: explain them from the whole stored prefix, for a readable rendering.
    explained = hits.withColumn("_e", explain_udf(F.col("orig_payload_prefix"), F.col("proto").cast("byte"),
                                                  F.col("orig_bytes")))
    reason_name = F.element_at(F.array(*[F.lit(r) for r in REASONS]), F.col("reason") + 1)
    return explained.select(
        "flow_id", "ts", "date", "src_ip", "src_port", "dst_ip", "dst_port", "proto", "matched_side",
        F.when(rule_fired(), F.lit("header-rule")).otherwise(F.lit("header-model")).alias("detector"),
        F.when(rule_fired(), F.lit("invalid")).otherwise(F.lit("valid")).alias("header_verdict"),
        reason_name.alias("header_reason"),
        "loss",
        F.lit(threshold).alias("threshold"),
        (F.col("loss") / F.lit(threshold)).alias("score"),
        F.length("orig_payload_prefix").cast("int").alias("prefix_len"),
        F.lower(F.hex("orig_payload_prefix")).alias("prefix_hex"),
        F.col("_e.prefix_text").alias("prefix_text"),
        *[F.col(f"_e.{c}").alias(c) for c in ("dns_id", "qr", "opcode", "rcode", "qdcount", "ancount",
                                               "tcp_len", "failed_bytes", "failed_fields")],
        F.lit(model_version).alias("model_version"),
        F.lit(run_id).alias("run_id"),
        F.to_timestamp(F.lit(scored_at)).alias("scored_at"),
    )
