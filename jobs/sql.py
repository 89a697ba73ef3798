"""Register the warehouse's Delta tables as Spark SQL views for analysts (`portprint sql`, the notebooks, the
report). Torch-free: it never imports the scoring code."""

from __future__ import annotations

import datetime as dt

from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from portprint.jobs import delta_io, people_tables, triage
from portprint.jobs.config import Config
from portprint.jobs.tables import ANOMALIES, EXPORTED, PATTERNS, RUNS, SUPPRESSION_HITS, SUPPRESSIONS

VIEWS = ("anomalies", "runs", "anomaly_patterns", "verdicts", "suppressions", "suppression_rules",
         "suppression_hits", "exported", "anomalies_triaged", "verdicts_rejected", "suppressions_rejected")


def register_tables(spark: SparkSession, cfg: Config, warehouse: str, at: dt.datetime | None = None) -> str:
    """Create the temp views VIEWS; return the reader used (spark or delta-rs).

    `anomalies_triaged` is `anomalies` with each row's pattern, status, verdict and suppressing rule, as the
    rules stand at ``at`` (default: now). `suppression_rules` is one row per rule with its state;
    `verdicts_rejected` and `suppressions_rejected` list rows written by hand that are ignored, with why.
    """
    reader = delta_io.choose_writer(spark, cfg.output.writer)
    for view, key, schema in (("anomalies", "anomalies", ANOMALIES), ("runs", "runs", RUNS),
                              ("anomaly_patterns", "patterns", PATTERNS),
                              ("suppressions", "suppressions", SUPPRESSIONS),
                              ("suppression_hits", "suppression_hits", SUPPRESSION_HITS),
                              ("exported", "exported", EXPORTED)):
        people_tables.read(spark, cfg, warehouse, key, schema, reader).createOrReplaceTempView(view)
    verdicts = triage.read_verdicts(spark, cfg, warehouse, reader)
    verdicts.drop("problem").createOrReplaceTempView("verdicts")
    verdicts.where(F.col("problem").isNotNull()).createOrReplaceTempView("verdicts_rejected")
    at = at or triage.now()
    rules, problems = triage.load_rules(spark, cfg, warehouse, reader)
    triage.rules_frame(spark, rules, at).createOrReplaceTempView("suppression_rules")
    triage.rejected_rules_frame(spark, problems).createOrReplaceTempView("suppressions_rejected")
    triage.triaged(spark.table("anomalies"), verdicts, rules, at).createOrReplaceTempView("anomalies_triaged")
    return reader
