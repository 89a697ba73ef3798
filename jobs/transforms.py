"""Pure transforms: DataFrames plus plain values in, DataFrames out. No I/O, no session."""

from __future__ import annotations

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from portprint.jobs.config import Columns, ScopeConf
from portprint.udfs.scoring import DETECTION

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
    model, null where no name is visible) and `detector_code` (0 none, else index into DETECTORS)."""
    return (df.withColumn("_s", score_udf(*_udf_args()))
            .select("*", *[F.col(f"_s.{c}").alias(a) for c, a in (("loss", "loss"), ("reason", "reason"),
                                                                   ("qname_loss", "qname_loss"),
                                                                   ("detector", "detector_code"))])
            .drop("_s"))


def score_flows(df: DataFrame, detect_udf, *, threshold: float, qname_threshold: float | None, model_version: str,
                run_id: str, scored_at: str) -> DataFrame:
    """Score in-scope flows that carry a payload and return the anomalies with their explanations.

    The UDF returns null for flows no detector flagged, so the filter keeps only anomalies and the
    explanation is built for those alone.
    """
    hits = df.withColumn("_d", detect_udf(*_udf_args())).where(F.col("_d").isNotNull())
    qth = F.lit(float(qname_threshold)) if qname_threshold is not None else F.lit(None).cast("double")
    d = {f.name: F.col(f"_d.{f.name}") for f in DETECTION}
    return hits.select(
        "flow_id", "ts", "date", "src_ip", "src_port", "dst_ip", "dst_port", "proto", "matched_side",
        d["detector"].alias("detector"), d["header_verdict"].alias("header_verdict"),
        d["header_reason"].alias("header_reason"),
        d["loss"].alias("loss"),
        F.lit(threshold).alias("threshold"),
        (d["loss"] / F.lit(threshold)).alias("score"),
        d["qname_loss"].alias("qname_loss"),
        qth.alias("qname_threshold"),
        (d["qname_loss"] / qth).alias("qname_score"),
        F.length("orig_payload_prefix").cast("int").alias("prefix_len"),
        *[d[c].alias(c) for c in ("prefix_hex", "prefix_text", "dns_id", "qr", "opcode", "rcode", "qdcount",
                                  "ancount", "tcp_len", "failed_bytes", "failed_fields", "qname", "qname_complete",
                                  "qtype")],
        F.lit(model_version).alias("model_version"),
        F.lit(run_id).alias("run_id"),
        F.to_timestamp(F.lit(scored_at)).alias("scored_at"),
    )
