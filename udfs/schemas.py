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
# tunnel: the Escalate stage (udfs/escalate.py): a group of a day's names is a DNS tunnel (the rule that said so
# is in `escalation`).
DETECTORS = ("", "header-rule", "header-model", "qname-model", "tunnel")

# What a `tunnel` anomaly carries about its group (null on the other detectors' rows): SQL-friendly evidence.
ESCALATION = pa.schema([
    ("escalation", pa.string()),           # shape | socket | odd: the rule that escalated the group
    ("escalation_group", pa.string()),     # z:<registered domain> or s:<server>/<length bucket>/<shape>
    ("escalation_level", pa.string()),     # client (this src_ip's names) | zone (all clients' names)
    ("escalation_names", pa.int64()),      # distinct names in the group that day
    ("escalation_hits", pa.int64()),       # distinct names the rule counted (shaped, long-socket, odd-new)
    ("escalation_clients", pa.int64()),    # clients whose names were counted
    ("escalation_bytes", pa.int64()),      # declared label bytes of the group's distinct names that day
    ("escalation_log10_p", pa.float64()),  # odd: log10 of the bound on the chance of so many odd-new names
    ("escalation_baseline", pa.float64()),  # odd: the day's base rate of odd-new names
    ("escalation_reason", pa.string()),    # one line: rule, group, numbers, and what was needed
])

# Per date and name group over all clients: what the Escalate stage counted (udfs/escalate.py ``history_rows``),
# the Sink's `escalation_history` table.
HISTORY = pa.schema([
    ("date", pa.string()),
    ("group", pa.string()),
    ("names", pa.int64()),         # distinct names that day
    ("clients", pa.int64()),       # distinct clients that day
    ("data_bytes", pa.int64()),    # declared label bytes of the distinct names
    ("shaped", pa.int64()),        # distinct tunnel-shaped names
    ("odd_new", pa.int64()),       # distinct names some client asked odd and new
    ("escalated", pa.string()),    # the rules that escalated the group that day, comma-separated ("" none)
])

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
    ("detector", pa.string()),         # header-rule | header-model | qname-model | tunnel: the first that fired
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
    *ESCALATION,
])


# ---- People decide (jobs/triage.py, jobs/suppressions.py, jobs/export.py). Analysts may write the first two
# with plain SQL (INSERT INTO); rows that break the rules below are listed with why and ignored, never fatal.

def spark_schema(schema: pa.Schema) -> StructType:
    """The Spark schema of an Arrow schema (timestamps become Spark's UTC-normalised TIMESTAMP)."""
    from pyspark.sql.pandas.types import from_arrow_schema  # Spark only where Spark is used

    return from_arrow_schema(schema)


# ---- What Detect and Escalate hand back to the engine: one Arrow schema, rows told apart by ``_kind`` ----
KIND = "_kind"
# an anomaly; per-date counts of one slice; one (date, client, server, group)'s tunnel evidence from one slice
# (udfs/evidence.py: ``_group`` and the packed name records ``_evidence``); a candidate flow (one whose name an
# escalated group could flag, kept so it need not be read again); one flow's scores (evaluate only);
# an anomaly a suppression rule kept out: per date and rule, how many (``_rule``, ``_suppressed``).
ANOMALY, COUNTS, EVIDENCE, CANDIDATE, SCORES, SUPPRESSED = "a", "c", "e", "r", "s", "x"
COUNT_FIELDS = ("_scoped", "_skipped", "_rule", "_model", "_qname", "_flagged", "_pkts")
PREFIX, ORIG_BYTES, ORIG_PKTS, GROUP, RECORDS, KEPT = ("_prefix", "_orig_bytes", "_orig_pkts", "_group", "_evidence",
                                                      "_kept")
RULE, SUPPRESSED_N = "_rule_id", "_suppressed"
# SCORES rows: which per-flow detectors fired, each on its own (bits: 1 rule, 2 header model, 4 question model).
FIRED = "_fired"
OUT = pa.schema([*ANOMALIES, pa.field(KIND, pa.string()), *[pa.field(c, pa.int64()) for c in (*COUNT_FIELDS, FIRED)],
                 pa.field(GROUP, pa.string()), pa.field(RECORDS, pa.binary()), pa.field(KEPT, pa.bool_()),
                 pa.field(PREFIX, pa.binary()), pa.field(ORIG_BYTES, pa.int64()), pa.field(ORIG_PKTS, pa.int64()),
                 pa.field(RULE, pa.string()), pa.field(SUPPRESSED_N, pa.int64())])

# The in-scope flows a Source hands to Detect (the contract's names and types, as far as scoring needs them).
# orig_pkts is optional (archive.columns.orig_pkts null, or absent from the files): null, and the socket rule off.
FLOW_COLUMNS = ("flow_id", "ts", "src_ip", "dst_ip", "src_port", "dst_port", "proto", "orig_payload_prefix",
                "orig_bytes", "orig_pkts", "date")
OPTIONAL_COLUMNS = ("orig_pkts",)
FLOW_TYPES = {"flow_id": pa.string(), "ts": TS, "src_ip": pa.string(), "dst_ip": pa.string(),
              "src_port": pa.int32(), "dst_port": pa.int32(), "proto": pa.int32(), "orig_payload_prefix": pa.binary(),
              "orig_bytes": pa.int64(), "orig_pkts": pa.int64(), "date": pa.string()}
FLOWS_IN = pa.schema([(c, FLOW_TYPES[c]) for c in FLOW_COLUMNS])


def as_out(t: pa.Table, kind: str) -> list[pa.RecordBatch]:
    """Rows of one kind as OUT batches: the columns ``t`` lacks are null."""
    n = t.num_rows
    if n == 0:
        return []
    cols = [t[f.name].cast(f.type) if f.name in t.column_names else pa.nulls(n, f.type) for f in OUT]
    cols[OUT.get_field_index(KIND)] = pa.array([kind] * n, pa.string())
    return pa.table(cols, schema=OUT).to_batches()
