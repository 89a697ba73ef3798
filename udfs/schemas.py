"""The records every stage shares, defined once in Arrow: the flow archive contract (what Source reads) and
the anomaly record (what Detect and Escalate emit, and the Sink's `anomalies` table holds). Spark's schemas
are derived from these (``spark_schema``); used by udfs/, jobs/archive/ and jobs/warehouse/."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pyarrow as pa

if TYPE_CHECKING:
    from pyspark.sql.types import StructType

TS = pa.timestamp("us", tz="UTC")

# The flow archive contract (shared/README §1): what `sample` and `ingest` write, what `score` reads by default.
FLOWS = pa.schema([
    ("flow_id", pa.string()),
    ("ts", TS),
    ("src_ip", pa.string()),
    ("dst_ip", pa.string()),
    ("src_port", pa.int32()),
    ("dst_port", pa.int32()),
    ("proto", pa.int8()),
    ("orig_payload_prefix", pa.binary()),
    ("resp_payload_prefix", pa.binary()),
    ("orig_bytes", pa.int64()),
    ("resp_bytes", pa.int64()),
    ("orig_pkts", pa.int64()),
    ("resp_pkts", pa.int64()),
    ("duration", pa.float64()),
])

# The detectors, as `anomalies.detector` names them; index = the detector code of udfs/scoring.py (0: none fired).
# qname-pair: the question model's evidence over a day of one client-server pair (udfs/escalate.py).
DETECTORS = ("", "header-rule", "header-model", "qname-model", "qname-pair")

ANOMALIES = pa.schema([
    ("flow_id", pa.string()),
    ("ts", TS),
    ("date", pa.string()),
    ("src_ip", pa.string()),
    ("src_port", pa.int32()),
    ("dst_ip", pa.string()),
    ("dst_port", pa.int32()),
    ("proto", pa.int32()),
    ("matched_side", pa.string()),     # responder | initiator: which port put the flow in scope
    ("detector", pa.string()),         # header-rule | header-model | qname-model | qname-pair: the first that fired
    ("header_verdict", pa.string()),   # valid | invalid (the rule's view, whichever detector fired)
    ("header_reason", pa.string()),    # why the rule said invalid, else 'ok'
    ("loss", pa.float64()),            # the header model's loss
    ("threshold", pa.float64()),
    ("score", pa.float64()),           # loss / threshold: > 1 means the header model flagged it
    ("qname_loss", pa.float64()),      # the question model's loss; null when no name byte is visible
    ("qname_threshold", pa.float64()),
    ("qname_score", pa.float64()),     # qname_loss / qname_threshold: > 1 means the question model flagged it
    ("prefix_len", pa.int32()),
    ("prefix_hex", pa.string()),
    ("prefix_text", pa.string()),
    ("dns_id", pa.int32()),
    ("qr", pa.int32()),
    ("opcode", pa.int32()),
    ("rcode", pa.int32()),
    ("qdcount", pa.int32()),
    ("ancount", pa.int32()),
    ("tcp_len", pa.int32()),
    ("failed_bytes", pa.list_(pa.int32())),  # message offsets (after the TCP length), worst first
    ("failed_fields", pa.string()),   # header fields, or for the question model its features, worst first
    ("qname", pa.string()),            # the visible query name, RFC 1035 escapes (\\DDD) for unsafe bytes
    ("qname_complete", pa.bool_()),    # false: the name runs past the stored prefix
    ("qtype", pa.string()),            # record type, when the prefix shows it
    ("model_version", pa.string()),
    ("run_id", pa.string()),
    ("scored_at", TS),
])


# ---- People decide (jobs/triage.py, jobs/suppress.py, jobs/export.py). Analysts may write the first two
# with plain SQL (INSERT INTO); rows that break the rules below are listed with why and ignored, never fatal.

def spark_schema(schema: pa.Schema) -> StructType:
    """The Spark schema of an Arrow schema (timestamps become Spark's UTC-normalised TIMESTAMP)."""
    from pyspark.sql.pandas.types import from_arrow_schema  # Spark only where Spark is used

    return from_arrow_schema(schema)


# ---- What Detect and Escalate hand back to the engine: one Arrow schema, rows told apart by ``_kind`` ----
KIND = "_kind"
# an anomaly; per-date counts of one slice; one pair's evidence from one slice; a candidate flow (a judged flow of
# a pair whose names in its batch were mostly odd, kept so the pair need not be read again); one flow's scores
# (evaluate only).
# an anomaly a suppression rule kept out: per date and rule, how many (``_rule``, ``_suppressed``).
ANOMALY, COUNTS, EVIDENCE, CANDIDATE, SCORES, SUPPRESSED = "a", "c", "e", "r", "s", "x"
COUNT_FIELDS = ("_scoped", "_skipped", "_rule", "_model", "_qname", "_flagged")
PREFIX, ORIG_BYTES, NAMES, ODD, KEPT = "_prefix", "_orig_bytes", "_names", "_odd", "_kept"
RULE, SUPPRESSED_N = "_rule_id", "_suppressed"
# SCORES rows: which per-flow detectors fired, each on its own (bits: 1 rule, 2 header model, 4 question model).
FIRED = "_fired"
OUT = pa.schema([*ANOMALIES, pa.field(KIND, pa.string()), *[pa.field(c, pa.int64()) for c in (*COUNT_FIELDS, FIRED)],
                 pa.field(NAMES, pa.binary()), pa.field(ODD, pa.binary()), pa.field(KEPT, pa.bool_()),
                 pa.field(PREFIX, pa.binary()), pa.field(ORIG_BYTES, pa.int64()), pa.field(RULE, pa.string()),
                 pa.field(SUPPRESSED_N, pa.int64())])

# The in-scope flows a Source hands to Detect (the contract's names and types, as far as scoring needs them).
FLOW_COLUMNS = ("flow_id", "ts", "src_ip", "dst_ip", "src_port", "dst_port", "proto", "orig_payload_prefix",
                "orig_bytes", "date")
FLOW_TYPES = {"flow_id": pa.string(), "ts": TS, "src_ip": pa.string(), "dst_ip": pa.string(),
              "src_port": pa.int32(), "dst_port": pa.int32(), "proto": pa.int32(), "orig_payload_prefix": pa.binary(),
              "orig_bytes": pa.int64(), "date": pa.string()}
FLOWS_IN = pa.schema([(c, FLOW_TYPES[c]) for c in FLOW_COLUMNS])


def as_out(t: pa.Table, kind: str) -> list[pa.RecordBatch]:
    """Rows of one kind as OUT batches: the columns ``t`` lacks are null."""
    n = t.num_rows
    if n == 0:
        return []
    cols = [t[f.name].cast(f.type) if f.name in t.column_names else pa.nulls(n, f.type) for f in OUT]
    cols[OUT.get_field_index(KIND)] = pa.array([kind] * n, pa.string())
    return pa.table(cols, schema=OUT).to_batches()
