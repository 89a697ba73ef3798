"""The warehouse's tables (the Sink's schemas), defined once in Arrow: `runs`, the pattern tables, and the
`anomalies` record from udfs/schemas.py. Used by jobs/warehouse/ and the entry points that read the tables."""

from __future__ import annotations

import pyarrow as pa

from portprint.udfs.schemas import ANOMALIES, FLOWS, HISTORY, TS, spark_schema

__all__ = ["ANOMALIES", "ESCALATION_HISTORY", "EXPORTED", "FLOWS", "PATTERNS", "PATTERN_DAYS", "RUNS", "SUPPRESSIONS",
           "SUPPRESSION_HITS", "TS", "VERDICTS", "spark_schema"]

RUNS = pa.schema([
    ("run_id", pa.string()),
    ("date", pa.string()),
    ("status", pa.string()),            # committing | succeeded | failed | interrupted
    ("flows_read", pa.int64()),
    ("flows_scored", pa.int64()),
    ("flows_skipped", pa.int64()),      # in scope but with no payload to judge (null or empty prefix)
    ("anomalies", pa.int64()),
    ("model_flagged", pa.int64()),
    ("rule_flagged", pa.int64()),
    ("qname_flagged", pa.int64()),     # flagged by the question model alone
    ("tunnel_flagged", pa.int64()),    # flagged by the Escalate stage (detector tunnel)
    ("groups_escalated", pa.int64()),  # name groups (per client, or over all clients) escalated as tunnels that day
    ("suppressed", pa.int64()),        # anomalies suppression rules kept out (per rule: suppression_hits)
    ("threshold", pa.float64()),
    ("model_version", pa.string()),
    ("writer", pa.string()),
    ("seconds", pa.float64()),
    ("started_at", TS),
    ("archive", pa.string()),
    ("chunk", pa.int32()),              # which chunk of the run (backfills commit chunk by chunk)
    ("archive_snapshot", pa.string()),  # fingerprint of the date's files when scored
    ("error", pa.string()),             # why a failed chunk failed
    # Why the date was scored: new, late-written (its files changed since), rescore (asked for), failed or
    # half-finished (an earlier attempt did not finish), range (a plain `score` of dates not scored before).
    ("reason", pa.string()),
    # What this row's chunk committed, in order: anomalies, anomaly_patterns, anomaly_pattern_days,
    # suppression_hits. A `committing` row (written just before the first commit) lists nothing: a chunk
    # with a `committing` row and no later row of its run was stopped midway, and its dates are not done.
    ("committed", pa.list_(pa.string())),
    ("logged_at", TS),                  # when this row was written (orders a date's attempts)
    ("escalation", pa.string()),        # the escalate settings in force (JSON, or "off")
    ("escalation_hash", pa.string()),   # their hash: a change makes --new-only score the date again
])

# Per pattern and date: the building block that makes anomaly_patterns rebuildable when dates are rescored.
PATTERN_DAYS = pa.schema([
    ("pattern", pa.string()),
    ("date", pa.string()),
    ("detector", pa.string()),
    ("flows", pa.int64()),
    ("src_sketch", pa.binary()),        # HyperLogLog sketches (Spark's hll_sketch_agg) of the addresses
    ("dst_sketch", pa.binary()),
    ("first_seen", TS),
    ("last_seen", TS),
    ("example_flow_id", pa.string()),
    ("example_prefix_text", pa.string()),
    ("model_versions", pa.list_(pa.string())),
])

# One row per recurring pattern across all scored history: "when did this start, and who else does it?"
PATTERNS = pa.schema([
    ("pattern", pa.string()),           # 'dns udp flags=0100 qd=0001 an=0000' or 'bytes tcp 5353482d'
    ("detector", pa.string()),
    ("first_seen", TS),
    ("last_seen", TS),
    ("days", pa.int64()),
    ("flows", pa.int64()),
    ("distinct_sources", pa.int64()),   # HyperLogLog estimates: exact for small counts, ~2% error beyond
    ("distinct_destinations", pa.int64()),
    ("example_flow_id", pa.string()),
    ("example_prefix_text", pa.string()),
    ("model_versions", pa.list_(pa.string())),
])

# Append-only: the history is the audit. An anomaly's status is the latest verdict (recorded_at) on its flow,
# its pattern, or its (src_ip, dst_ip, date) pair; stable keys, so verdicts survive rescoring.
VERDICTS = pa.schema([
    ("verdict_id", pa.string()),        # any unique text (the CLI writes a UUID; SQL: uuid())
    ("recorded_at", TS),                # required: the order of verdicts
    ("recorded_by", pa.string()),       # required: who decided
    ("target_kind", pa.string()),       # flow | pattern | pair
    ("flow_id", pa.string()),           # target_kind flow
    ("pattern", pa.string()),           # target_kind pattern: anomaly_patterns.pattern
    ("src_ip", pa.string()),            # target_kind pair: src_ip, dst_ip and date
    ("dst_ip", pa.string()),
    ("date", pa.string()),
    ("old_status", pa.string()),        # what the target showed before (informative; may be null)
    ("status", pa.string()),            # confirmed | benign | duplicate | new
    ("note", pa.string()),
])

# Append-only too: a rule is added by one row; removal appends a row with the same rule_id and removed_by /
# removed_at set (the table itself is the audit; Delta history is pruned by log retention and VACUUM).
SUPPRESSIONS = pa.schema([
    ("rule_id", pa.string()),
    ("kind", pa.string()),              # domain | pattern | src | dst | pair | detector
    ("value", pa.string()),             # example.com | a pattern | address or CIDR | "SRC,DST" | detector name
    ("reason", pa.string()),
    ("created_by", pa.string()),
    ("created_at", TS),
    ("expires_at", TS),                 # null: never
    ("removed_by", pa.string()),        # set on the removal row
    ("removed_at", TS),
])

# Per date and name group over all clients, what the Escalate stage counted (udfs/escalate.py HISTORY), replaced per
# scored date: a group's history over months (first seen, daily distinct names, clients) in one table.
ESCALATION_HISTORY = HISTORY

# What scoring-time suppression kept out of `anomalies`, per date and rule (replaced per date like anomalies).
SUPPRESSION_HITS = pa.schema([
    ("date", pa.string()),
    ("rule_id", pa.string()),
    ("flows", pa.int64()),
    ("run_id", pa.string()),
])

# One row per anomaly handed to a SIEM: the export cursor. Keyed on stable identities, never run_id.
EXPORTED = pa.schema([
    ("flow_id", pa.string()),
    ("detector", pa.string()),
    ("date", pa.string()),
    ("exported_at", TS),
    ("export_id", pa.string()),
    ("format", pa.string()),
])
