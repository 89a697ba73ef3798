"""`portprint suppress add|list|remove`: allowlists and mutes in the append-only `suppressions` table. Called by
jobs/cli.py; scoring reads the rules with ``rules_at`` and applies udfs/suppress.py.

Removal appends a row (same rule_id, removed_by, removed_at) instead of deleting: the table itself is the
audit of who added and who removed what, and when. Delta's own history would not do: it is pruned by log
retention (30 days by default) and VACUUM, and a report of a past period needs the rules in force then.
"""

from __future__ import annotations

import datetime as dt
import re
import uuid

import pyarrow as pa
from pyspark.sql import SparkSession

from portprint.conf.config import Config
from portprint.jobs.triage import load_rules, now
from portprint.jobs.warehouse import people as people_tables
from portprint.jobs.warehouse.tables import SUPPRESSIONS
from portprint.udfs.suppress import Rule, applicable, normalise

_DURATION = re.compile(r"^(\d+)([hdw])$")


def parse_expiry(text: str | None, start: dt.datetime) -> dt.datetime | None:
    """'30d', '12h', '2w', a date (YYYY-MM-DD, midnight UTC) or an ISO time; None or 'never' for no expiry."""
    if text is None or text.strip().lower() in ("", "never"):
        return None
    t = text.strip()
    m = _DURATION.match(t)
    if m:
        n, unit = int(m.group(1)), m.group(2)
        return start + {"h": dt.timedelta(hours=n), "d": dt.timedelta(days=n), "w": dt.timedelta(weeks=n)}[unit]
    try:
        when = dt.datetime.fromisoformat(t.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"--expires {text!r}: give a duration (12h, 30d, 2w), a date (2027-01-31), an ISO time "
                         "or 'never'") from None
    when = when if when.tzinfo else when.replace(tzinfo=dt.timezone.utc)
    if when <= start:
        raise ValueError(f"--expires {text!r} is not in the future")
    return when


def add_rule(spark: SparkSession, cfg: Config, warehouse: str, kind: str, value: str, reason: str, by: str,
             expires: str | None = None, at: dt.datetime | None = None) -> dict:
    """Validate and append a rule; return its row (rule_id is new)."""
    if not reason or not reason.strip():
        raise ValueError("--reason is required: say why this traffic is benign (the audit needs it)")
    if not by or not by.strip():
        raise ValueError("--by NAME is required")
    norm = normalise(kind, value)  # RuleError (a ValueError) says what to write instead
    created = at or now()
    row = dict.fromkeys(SUPPRESSIONS.names) | {
        "rule_id": uuid.uuid4().hex[:12], "kind": kind, "value": norm, "reason": reason.strip(),
        "created_by": by.strip(), "created_at": created, "expires_at": parse_expiry(expires, created)}
    people_tables.append_rows(spark, cfg, warehouse, "suppressions", pa.Table.from_pylist([row], schema=SUPPRESSIONS))
    return row


def remove_rule(spark: SparkSession, cfg: Config, warehouse: str, rule_id: str, by: str,
                at: dt.datetime | None = None) -> Rule:
    """Append the removal of a rule; the rows it hid come back in `anomalies_triaged` at once."""
    if not by or not by.strip():
        raise ValueError("--by NAME is required")
    when = at or now()
    rules, _ = load_rules(spark, cfg, warehouse)
    found = [r for r in rules if r.rule_id == rule_id.strip()]
    if not found:
        raise ValueError(f"no rule {rule_id!r} in {warehouse}; see `portprint suppress list --warehouse {warehouse}`")
    rule = found[0]
    if rule.removed_at is not None:
        raise ValueError(f"rule {rule_id} was removed already, by {rule.removed_by} at "
                         f"{rule.removed_at:%Y-%m-%d %H:%M}")
    row = dict.fromkeys(SUPPRESSIONS.names) | {
        "rule_id": rule.rule_id, "kind": rule.kind, "value": rule.value, "removed_by": by.strip(),
        "removed_at": when}
    people_tables.append_rows(spark, cfg, warehouse, "suppressions", pa.Table.from_pylist([row], schema=SUPPRESSIONS))
    return rule


def rules_at(spark: SparkSession, cfg: Config, warehouse: str, at: dt.datetime | None = None) -> list[Rule]:
    """The rules in force at ``at`` (default now), for scoring (udfs/suppress.py ``apply``, in Detect and Escalate)."""
    rules, _ = load_rules(spark, cfg, warehouse)
    return applicable(rules, at or now())
