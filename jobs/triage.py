"""Verdicts and the `anomalies_triaged` view: what people decided about each anomaly, and which rules hide it.
Called by `portprint triage` and `portprint sql` (jobs/cli.py, jobs/sql.py), the report, the export, the
notebooks and `train --benign-from`.

An anomaly's verdict is the latest (by ``recorded_at``) of the verdicts on its ``flow_id``, on its pattern
(jobs/patterns.pattern_of) and on its (src_ip, dst_ip, date) pair; on a tie of times the most specific target
wins (flow, then pair, then pattern). All three keys are stable: a rescore, a new model or a chunked backfill
gives the same flow_id, pattern and pair, so verdicts survive them (run_id is never used).

``status`` in the view: ``confirmed`` when the verdict is confirmed (a rule never hides what a person
confirmed); else ``suppressed`` when a suppression rule in force matches (``suppressed_by`` names it); else
the verdict (``benign``, ``duplicate``, ``new``), or ``new`` when there is none.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

import pyarrow as pa
from pyspark.sql import Column, DataFrame, SparkSession, Window
from pyspark.sql import functions as F
from pyspark.sql.types import StringType, StructField, StructType

from portprint.conf.config import Config
from portprint.jobs.archive.plan import parse_date
from portprint.jobs.warehouse import delta as delta_io
from portprint.jobs.warehouse import people as people_tables
from portprint.jobs.warehouse.patterns import pattern_of
from portprint.jobs.warehouse.tables import ANOMALIES, SUPPRESSIONS, TS, VERDICTS
from portprint.udfs.suppress import Rule, applicable, rules_from_rows, suppressed_by

STATUSES = ("confirmed", "benign", "duplicate", "new")
TRIAGE_STATUSES = ("new", "confirmed", "benign", "duplicate", "suppressed")
TARGETS = ("flow", "pattern", "pair")
TRIAGE_COLUMNS = ("pattern", "status", "verdict_status", "verdict_by", "verdict_at", "verdict_note",
                  "verdict_target", "first_verdict_at", "suppressed_by")
_SPECIFIC = {"flow": 3, "pair": 2, "pattern": 1}
# The anomalies_triaged view's schema (for tools that check SQL against it).
TRIAGED = pa.schema([*ANOMALIES, ("pattern", pa.string()), ("status", pa.string()), ("verdict_status", pa.string()),
                     ("verdict_by", pa.string()), ("verdict_at", TS), ("verdict_note", pa.string()),
                     ("verdict_target", pa.string()), ("first_verdict_at", TS), ("suppressed_by", pa.string())])


def now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


# ---------------------------------------------------------------- verdicts

def _blank(c: str) -> Column:
    return F.col(c).isNull() | (F.trim(F.col(c)) == "")


def verdict_problem() -> Column:
    """Null for a usable verdict row, else why it is ignored (rows may come from an analyst's INSERT INTO)."""
    kind, status = F.col("target_kind"), F.col("status")
    return (F.when(F.col("recorded_at").isNull(), F.lit("no recorded_at"))
            .when(_blank("recorded_by"), F.lit("no recorded_by"))
            .when(status.isNull() | ~status.isin(*STATUSES),
                  F.concat(F.lit("status "), F.coalesce(status, F.lit("null")),
                           F.lit(f" is not one of {', '.join(STATUSES)}")))
            .when(kind.isNull() | ~kind.isin(*TARGETS),
                  F.concat(F.lit("target_kind "), F.coalesce(kind, F.lit("null")),
                           F.lit(f" is not one of {', '.join(TARGETS)}")))
            .when((kind == "flow") & _blank("flow_id"), F.lit("a flow verdict needs flow_id"))
            .when((kind == "pattern") & _blank("pattern"), F.lit("a pattern verdict needs pattern"))
            .when((kind == "pair") & (_blank("src_ip") | _blank("dst_ip") | _blank("date")),
                  F.lit("a pair verdict needs src_ip, dst_ip and date"))
            .when((kind == "pair") & ~F.col("date").rlike(r"^\d{4}-\d{2}-\d{2}$"),
                  F.lit("date must be YYYY-MM-DD")))


def read_verdicts(spark: SparkSession, cfg: Config, warehouse: str, reader: str | None = None) -> DataFrame:
    """Every row of the verdicts table, with ``problem`` (null when the row is usable)."""
    return people_tables.read(spark, cfg, warehouse, "verdicts", VERDICTS, reader).withColumn(
        "problem", verdict_problem())


def latest_verdicts(verdicts: DataFrame, at: dt.datetime | None = None) -> tuple[DataFrame, DataFrame, DataFrame]:
    """(per flow_id, per pattern, per pair) the latest usable verdict recorded at or before ``at``, as a
    struct column ``v`` that orders by (recorded_at, specificity, verdict_id), and the first one's time
    (``first``)."""
    v = verdicts.where(F.col("problem").isNull()) if "problem" in verdicts.columns else verdicts.where(
        verdict_problem().isNull())
    if at is not None:
        v = v.where(F.col("recorded_at") <= F.lit(at))
    spec = F.create_map(*[x for k, n in _SPECIFIC.items() for x in (F.lit(k), F.lit(n))])[F.col("target_kind")]
    v = v.withColumn("v", F.struct(F.col("recorded_at").alias("at"), spec.alias("specific"),
                                   F.coalesce("verdict_id", F.lit("")).alias("id"), F.col("status"),
                                   F.col("recorded_by").alias("by"), F.col("note"),
                                   F.col("target_kind").alias("target")))

    def latest(kind: str, keys: list[str]) -> DataFrame:
        w = Window.partitionBy(*keys).orderBy(F.col("v").desc())
        first = F.min("recorded_at").over(Window.partitionBy(*keys))
        return (v.where(F.col("target_kind") == kind).withColumn("_n", F.row_number().over(w))
                .withColumn("first", first).where("_n = 1").select(*keys, "v", "first"))

    return latest("flow", ["flow_id"]), latest("pattern", ["pattern"]), latest("pair", ["src_ip", "dst_ip", "date"])


# ---------------------------------------------------------------- suppression rules

def load_rules(spark: SparkSession, cfg: Config, warehouse: str,
               reader: str | None = None) -> tuple[list[Rule], list[tuple[dict, str]]]:
    """The rules of the suppressions table (removals folded in), and the rows ignored with why."""
    rows = people_tables.read(spark, cfg, warehouse, "suppressions", SUPPRESSIONS, reader).toArrow()
    return rules_from_rows(rows.to_pylist())


def rules_frame(spark: SparkSession, rules: Sequence[Rule], at: dt.datetime | None = None) -> DataFrame:
    """One row per rule with its state at ``at`` (active, expired, removed, future)."""
    at = at or now()
    rows = [{"rule_id": r.rule_id, "kind": r.kind, "value": r.value, "reason": r.reason, "created_by": r.created_by,
             "created_at": r.created_at, "expires_at": r.expires_at, "removed_by": r.removed_by,
             "removed_at": r.removed_at, "state": r.state(at)} for r in rules]
    schema = pa.schema([*SUPPRESSIONS, ("state", pa.string())])
    return spark.createDataFrame(pa.Table.from_pylist(rows, schema=schema).to_pandas() if rows else [],
                                 delta_io.spark_schema(schema))


def _suppress_batches(rules: list[Rule], at: dt.datetime):
    def fn(batches):
        for b in batches:
            by = suppressed_by(pa.Table.from_batches([b]), rules, at)
            yield pa.RecordBatch.from_arrays([*b.columns, by], names=[*b.schema.names, "suppressed_by"])
    return fn


# ---------------------------------------------------------------- the view

def triaged(anomalies: DataFrame, verdicts: DataFrame, rules: Sequence[Rule],
            at: dt.datetime | None = None) -> DataFrame:
    """``anomalies`` with their pattern, verdict and suppression: the columns of ``anomalies`` plus
    TRIAGE_COLUMNS. Rules in force at ``at`` (default now) apply to every row, old ones included, so a new
    rule hides what it matches at once, and removing it (or its expiry) brings the rows back."""
    at = at or now()
    live = applicable(rules, at)
    a = anomalies.withColumn("pattern", pattern_of())
    if live:
        schema = StructType([*a.schema.fields, StructField("suppressed_by", StringType())])
        a = a.mapInArrow(_suppress_batches(live, at), schema)
    else:
        a = a.withColumn("suppressed_by", F.lit(None).cast("string"))
    flow, pattern, pair = latest_verdicts(verdicts, at)
    a = (a.join(F.broadcast(flow.withColumnsRenamed({"v": "_vf", "first": "_ff"})), "flow_id", "left")
         .join(F.broadcast(pattern.withColumnsRenamed({"v": "_vp", "first": "_fp"})), "pattern", "left")
         .join(F.broadcast(pair.withColumnsRenamed({"v": "_vq", "first": "_fq"})), ["src_ip", "dst_ip", "date"],
               "left")
         .withColumn("_v", F.greatest("_vf", "_vp", "_vq")))
    verdict = F.col("_v.status")
    status = (F.when(verdict == "confirmed", F.lit("confirmed"))
              .when(F.col("suppressed_by").isNotNull(), F.lit("suppressed"))
              .otherwise(F.coalesce(verdict, F.lit("new"))))
    return a.select(*ANOMALIES.names, "pattern", status.alias("status"), verdict.alias("verdict_status"),
                    F.col("_v.by").alias("verdict_by"), F.col("_v.at").alias("verdict_at"),
                    F.col("_v.note").alias("verdict_note"), F.col("_v.target").alias("verdict_target"),
                    F.least("_ff", "_fp", "_fq").alias("first_verdict_at"), "suppressed_by")


def triaged_from_warehouse(spark: SparkSession, cfg: Config, warehouse: str, at: dt.datetime | None = None,
                           reader: str | None = None) -> DataFrame:
    reader = reader or delta_io.choose_writer(spark, cfg.output.writer)
    anomalies = people_tables.read(spark, cfg, warehouse, "anomalies", ANOMALIES, reader)
    rules, _ = load_rules(spark, cfg, warehouse, reader)
    return triaged(anomalies, read_verdicts(spark, cfg, warehouse, reader), rules, at)


# ---------------------------------------------------------------- recording a verdict

@dataclass(frozen=True)
class VerdictResult:
    row: dict
    anomalies: int        # how many current anomalies the target covers
    old_status: str


def _target(flow_id: str | None, pattern: str | None, pair: str | None, date: str | None) -> dict:
    given = [x for x in (flow_id, pattern, pair) if x]
    if len(given) != 1:
        raise ValueError("give exactly one target: --flow-id ID, --pattern P, or --pair SRC,DST with --date D")
    if flow_id:
        return {"target_kind": "flow", "flow_id": flow_id.strip()}
    if pattern:
        return {"target_kind": "pattern", "pattern": pattern.strip()}
    parts = [p.strip() for p in pair.split(",")]
    if len(parts) != 2 or not all(parts):
        raise ValueError(f"--pair {pair!r}: write SRC,DST, e.g. --pair 10.0.0.5,192.0.2.53")
    for p in parts:
        try:
            ipaddress.ip_address(p)
        except ValueError:
            raise ValueError(f"--pair {pair!r}: {p!r} is not an IP address") from None
    if not date:
        raise ValueError("--pair needs --date YYYY-MM-DD (a pair's verdict is for one day)")
    return {"target_kind": "pair", "src_ip": parts[0], "dst_ip": parts[1], "date": parse_date(date, "date")}


def target_condition(target: dict) -> Column:
    kind = target["target_kind"]
    if kind == "flow":
        return F.col("flow_id") == target["flow_id"]
    if kind == "pattern":
        return F.col("pattern") == target["pattern"]
    return ((F.col("src_ip") == target["src_ip"]) & (F.col("dst_ip") == target["dst_ip"])
            & (F.col("date") == target["date"]))


def record_verdict(spark: SparkSession, cfg: Config, warehouse: str, *, status: str, by: str,
                   flow_id: str | None = None, pattern: str | None = None, pair: str | None = None,
                   date: str | None = None, note: str | None = None, at: dt.datetime | None = None) -> VerdictResult:
    """Append one verdict. The target must cover at least one current anomaly (a typo would otherwise be
    recorded and never apply)."""
    if status not in STATUSES:
        raise ValueError(f"--status {status!r}: use one of {', '.join(STATUSES)}")
    if not by or not by.strip():
        raise ValueError("--by NAME is required: a verdict says who decided")
    target = _target(flow_id, pattern, pair, date)
    reader = delta_io.choose_writer(spark, cfg.output.writer)
    view = triaged_from_warehouse(spark, cfg, warehouse, at, reader).where(target_condition(target))
    counts = {r["status"]: r["n"] for r in view.groupBy("status").agg(F.count(F.lit(1)).alias("n")).collect()}
    if not counts:
        hint = {"flow": "SELECT flow_id FROM anomalies", "pattern": "SELECT pattern FROM anomaly_patterns",
                "pair": "SELECT DISTINCT src_ip, dst_ip, date FROM anomalies"}[target["target_kind"]]
        shown = {k: v for k, v in target.items() if k != "target_kind"}
        raise ValueError(f"no anomaly matches {target['target_kind']} {shown} in {warehouse}; nothing recorded "
                         f"(see `portprint sql --warehouse {warehouse} \"{hint}\"`)")
    old = next(iter(counts)) if len(counts) == 1 else "mixed"
    row = dict.fromkeys(VERDICTS.names) | target | {
        "verdict_id": str(uuid.uuid4()), "recorded_at": at or now(), "recorded_by": by.strip(),
        "old_status": old, "status": status, "note": note}
    people_tables.append_rows(spark, cfg, warehouse, "verdicts", pa.Table.from_pylist([row], schema=VERDICTS), reader)
    return VerdictResult(row, sum(counts.values()), old)



def rejected_rules_frame(spark: SparkSession, problems: Sequence[tuple[dict, str]]) -> DataFrame:
    """The suppressions rows ignored, with ``problem`` saying why."""
    schema = pa.schema([*SUPPRESSIONS, ("problem", pa.string())])
    rows = [dict.fromkeys(SUPPRESSIONS.names) | {k: row.get(k) for k in SUPPRESSIONS.names} | {"problem": why}
            for row, why in problems]
    return spark.createDataFrame(pa.Table.from_pylist(rows, schema=schema).to_pandas() if rows else [],
                                 delta_io.spark_schema(schema))
