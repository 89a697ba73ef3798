# Databricks notebook source
# MAGIC %md
# MAGIC # portprint: analyst SQL
# MAGIC
# MAGIC Examples over the tables, registered as `anomalies`, `runs`, `anomaly_patterns` and `escalation_history`:
# MAGIC
# MAGIC | table | one row per | use it for |
# MAGIC |---|---|---|
# MAGIC | `anomalies` | flagged flow | the evidence: who, when, which bytes, decoded header, which detector |
# MAGIC | `runs` | date scored by a run | coverage and health: what was scored, with which model, how fast |
# MAGIC | `anomaly_patterns` | recurring prefix pattern, all months | "when did this start, and who else does it?" |
# MAGIC | `escalation_history` | name group and date | a domain's distinct names and clients a day; when it escalated |
# MAGIC
# MAGIC Each query is plain Spark SQL; copy it into a SQL editor against the Unity Catalog tables as well.

# COMMAND ----------

# ruff: noqa: F821 - spark, dbutils and display are the Databricks notebook's globals
from portprint.conf.config import load_config
from portprint.jobs.sql import register_tables

# COMMAND ----------

dbutils.widgets.text("env", "databricks", "conf overlay (--env)")
dbutils.widgets.text("conf", "", "extra conf file (--conf)")
dbutils.widgets.text("warehouse", "", "warehouse folder (--warehouse)")
cfg = load_config(dbutils.widgets.get("env"), dbutils.widgets.get("conf") or None)
register_tables(spark, cfg, dbutils.widgets.get("warehouse"))

# COMMAND ----------

# MAGIC %md ## Anomalies per date and detector, last 30 days

# COMMAND ----------

display(spark.sql("""
SELECT date, detector, count(*) AS anomalies, count(DISTINCT src_ip) AS sources
FROM anomalies
WHERE date >= date_format(date_sub(current_date(), 30), 'yyyy-MM-dd')
GROUP BY date, detector
ORDER BY date, detector
"""))

# COMMAND ----------

# MAGIC %md ## The worst anomalies of the last 7 days, with the decoded header and the bytes that failed

# COMMAND ----------

display(spark.sql("""
SELECT date, ts, src_ip, dst_ip, dst_port, proto, detector, header_reason, round(score, 1) AS score,
       prefix_text, prefix_hex, tcp_len, dns_id, qr, opcode, rcode, qdcount, ancount, failed_fields
FROM anomalies
WHERE date >= date_format(date_sub(current_date(), 7), 'yyyy-MM-dd')
ORDER BY score DESC
LIMIT 100
"""))

# COMMAND ----------

# MAGIC %md ## Sources that keep coming back: active on many dates, to many destinations

# COMMAND ----------

display(spark.sql("""
SELECT src_ip, count(*) AS anomalies, count(DISTINCT date) AS dates, min(date) AS first_date,
       max(date) AS last_date, count(DISTINCT dst_ip) AS destinations, collect_set(header_reason) AS reasons
FROM anomalies
GROUP BY src_ip
HAVING count(DISTINCT date) >= 3
ORDER BY dates DESC, anomalies DESC
LIMIT 100
"""))

# COMMAND ----------

# MAGIC %md ## DNS tunnels: names the question model found unlike the site's, by parent domain
# MAGIC `qname` is rendered safely (RFC 1035 `\DDD` escapes); `qname_complete = false` means the name runs
# MAGIC past the stored prefix. A tunnel shows as one parent domain with many long, random first labels.

# COMMAND ----------

display(spark.sql("""
SELECT CASE WHEN qname_complete THEN substring_index(trim(TRAILING '.' FROM lower(qname)), '.', -2) ELSE '(cut off)' END
         AS parent, count(*) AS flows, count(DISTINCT src_ip) AS sources, max(round(qname_score, 1)) AS worst,
       min(ts) AS first_seen, max(ts) AS last_seen, min_by(qname, ts) AS example, collect_set(qtype) AS qtypes
FROM anomalies
WHERE detector IN ('qname-model', 'tunnel') AND date >= date_sub(current_date(), 30)
GROUP BY 1
ORDER BY flows DESC
"""))

# COMMAND ----------

# MAGIC %md ## DNS tunnels: the name groups the Escalate stage escalated, per day, with the evidence
# MAGIC A group is a client's names under one registered domain (z:...), or of one cut-off shape to one server (s:...);
# MAGIC the rule that escalated it and its numbers are on every flow it flagged.

# COMMAND ----------

display(spark.sql("""
SELECT date, escalation_group, CASE WHEN escalation_level = 'zone' THEN 'all clients' ELSE src_ip END AS client,
       escalation AS rule, count(*) AS flows, max(escalation_names) AS names, max(escalation_hits) AS hits,
       max(escalation_bytes) AS label_bytes, min(ts) AS first_seen, max(ts) AS last_seen,
       min_by(qname, ts) AS example, max(escalation_reason) AS reason
FROM anomalies
WHERE detector = 'tunnel' AND date >= date_sub(current_date(), 30)
GROUP BY ALL
ORDER BY date DESC, flows DESC
"""))

# COMMAND ----------

# MAGIC %md ## A name group's history: distinct names, clients and label bytes per day (escalation_history)

# COMMAND ----------

display(spark.sql("""
SELECT group, min(date) AS first_seen, max(date) AS last_seen, count(*) AS days, max(names) AS most_names_a_day,
       max(clients) AS most_clients_a_day, sum(data_bytes) AS label_bytes, max(escalated) AS ever_escalated
FROM escalation_history
WHERE date >= date_sub(current_date(), 90)
GROUP BY group
ORDER BY days DESC, most_names_a_day DESC
LIMIT 100
"""))

# COMMAND ----------

# MAGIC %md ## Source port 53 (the firewall-bypass trick): flows in scope only because of the initiator side

# COMMAND ----------

display(spark.sql("""
SELECT date, src_ip, src_port, dst_ip, dst_port, detector, prefix_text
FROM anomalies
WHERE matched_side = 'initiator'
ORDER BY date DESC, ts DESC
LIMIT 100
"""))

# COMMAND ----------

# MAGIC %md ## Coverage and health: the latest run of each date, and dates whose latest run did not succeed

# COMMAND ----------

display(spark.sql("""
SELECT date, status, run_id, model_version, flows_read, flows_scored, flows_skipped, anomalies,
       round(flows_scored / nullif(seconds, 0)) AS flows_per_second, started_at
FROM (SELECT *, row_number() OVER (PARTITION BY date ORDER BY started_at DESC, logged_at DESC) AS newest FROM runs)
WHERE newest = 1
ORDER BY date DESC
"""))

# COMMAND ----------

display(spark.sql("""
SELECT date, status, run_id, started_at
FROM (SELECT *, row_number() OVER (PARTITION BY date ORDER BY started_at DESC, logged_at DESC) AS newest FROM runs)
WHERE newest = 1 AND status <> 'succeeded'
ORDER BY date
"""))

# COMMAND ----------

# MAGIC %md ## Rescoring history: dates scored by more than one model version, and how the counts moved

# COMMAND ----------

display(spark.sql("""
SELECT date, model_version, max(started_at) AS scored_at, max_by(anomalies, started_at) AS anomalies
FROM runs
WHERE status = 'succeeded'
  AND date IN (SELECT date FROM runs WHERE status = 'succeeded' GROUP BY date
               HAVING count(DISTINCT model_version) > 1)
GROUP BY date, model_version
ORDER BY date, scored_at
"""))

# COMMAND ----------

# MAGIC %md ## Patterns first seen in the last 7 days: new behaviour on port 53

# COMMAND ----------

display(spark.sql("""
SELECT pattern, detector, first_seen, last_seen, flows, distinct_sources, distinct_destinations, model_versions
FROM anomaly_patterns
WHERE first_seen >= date_sub(current_date(), 7)
ORDER BY distinct_sources DESC, flows DESC
"""))

# COMMAND ----------

# MAGIC %md ## When did it start, and who else does it: long-lived patterns, widest spread first

# COMMAND ----------

display(spark.sql("""
SELECT pattern, detector, first_seen, last_seen, datediff(last_seen, first_seen) + 1 AS days_span, flows,
       distinct_sources, distinct_destinations
FROM anomaly_patterns
WHERE datediff(last_seen, first_seen) >= 30
ORDER BY distinct_sources DESC, days_span DESC
LIMIT 100
"""))

# COMMAND ----------

# MAGIC %md ## A pattern's example flow, in full

# COMMAND ----------

display(spark.sql("""
SELECT p.pattern, p.first_seen, p.flows, a.*
FROM anomaly_patterns AS p
JOIN anomalies AS a ON a.flow_id = p.example_flow_id
ORDER BY p.flows DESC
LIMIT 20
"""))

# COMMAND ----------

# MAGIC %md ## Triage: what is still untriaged, oldest first (`anomalies_triaged`: status, verdict, suppressing rule)
# MAGIC Record a verdict with `portprint triage`, or in SQL:
# MAGIC `INSERT INTO <the verdicts table> (verdict_id, recorded_at, recorded_by, target_kind, pattern, status, note)
# MAGIC SELECT uuid(), current_timestamp(), 'ana', 'pattern', 'bytes tcp 5353482d', 'benign', 'lab SSH on 53'`
# MAGIC (the table's catalog name from the target's conf, or `portprint.verdicts` locally). Malformed rows are
# MAGIC listed in `verdicts_rejected`.

# COMMAND ----------

display(spark.sql("""
SELECT date, ts, detector, src_ip, dst_ip, pattern, qname, prefix_text, flow_id
FROM anomalies_triaged
WHERE status = 'new'
ORDER BY ts
LIMIT 100
"""))

# COMMAND ----------

# MAGIC %md ## Triage per day and status, and what each suppression rule hides now

# COMMAND ----------

display(spark.sql("""
SELECT date, status, count(*) AS anomalies
FROM anomalies_triaged
GROUP BY date, status
ORDER BY date, status
"""))

# COMMAND ----------

display(spark.sql("""
SELECT r.rule_id, r.kind, r.value, r.reason, r.created_by, r.expires_at, r.state, count(a.flow_id) AS hidden_now
FROM suppression_rules AS r
LEFT JOIN anomalies_triaged AS a ON a.suppressed_by = r.rule_id
GROUP BY r.rule_id, r.kind, r.value, r.reason, r.created_by, r.expires_at, r.state
ORDER BY hidden_now DESC
"""))
