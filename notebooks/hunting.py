# Databricks notebook source
# MAGIC %md
# MAGIC # portprint: hunting
# MAGIC
# MAGIC Pick a date range and a payload prefix, a text, or a source IP, and see the anomalies with their decoded
# MAGIC DNS headers (`portprint.jobs.warehouse.views.find_anomalies`). Then: who else sends it, and since when
# MAGIC (`anomaly_patterns`). Leave a widget empty to not filter on it.

# COMMAND ----------

# ruff: noqa: F821 - spark, dbutils and display are the Databricks notebook's globals
from portprint.conf.config import load_config
from portprint.jobs.sql import register_tables
from portprint.jobs.warehouse.views import find_anomalies, find_patterns, summarize_sources

# COMMAND ----------

dbutils.widgets.text("env", "databricks", "conf overlay (--env)")
dbutils.widgets.text("conf", "", "extra conf file (--conf)")
dbutils.widgets.text("warehouse", "", "warehouse folder (--warehouse)")
dbutils.widgets.text("start", "", "first date (YYYY-MM-DD)")
dbutils.widgets.text("end", "", "last date (YYYY-MM-DD)")
dbutils.widgets.text("prefix_hex", "", "payload starts with (hex, e.g. 16 03 01)")
dbutils.widgets.text("text", "", "printable payload contains (e.g. SSH-2.0)")
dbutils.widgets.text("src_ip", "", "source IP")
dbutils.widgets.text("pattern", "", "anomaly_patterns.pattern contains")
dbutils.widgets.text("limit", "200", "rows to show")

cfg = load_config(dbutils.widgets.get("env"), dbutils.widgets.get("conf") or None)
register_tables(spark, cfg, dbutils.widgets.get("warehouse"))
limit = int(dbutils.widgets.get("limit"))

# COMMAND ----------

# MAGIC %md ## The anomalies, worst first, with their decoded headers

# COMMAND ----------

hits = find_anomalies(spark.table("anomalies"), start=dbutils.widgets.get("start"), end=dbutils.widgets.get("end"),
                      prefix_hex=dbutils.widgets.get("prefix_hex"), text=dbutils.widgets.get("text"),
                      src_ip=dbutils.widgets.get("src_ip"))
display(hits.limit(limit))

# COMMAND ----------

# MAGIC %md ## What people decided: status, verdict and suppressing rule of each anomaly (`anomalies_triaged`)

# COMMAND ----------

keys = ["flow_id", "detector", "date"]
display(spark.table("anomalies_triaged").join(hits.select(*keys), keys)
        .select("date", "status", "verdict_by", "verdict_note", "suppressed_by", "detector", "src_ip", "dst_ip",
                "pattern", "flow_id").limit(limit))

# COMMAND ----------

# MAGIC %md ## Who sends it: sources of these anomalies, most active first

# COMMAND ----------

display(summarize_sources(hits).limit(limit))

# COMMAND ----------

# MAGIC %md ## Since when: recurring patterns (one row per pattern across all months)

# COMMAND ----------

if spark.catalog.tableExists("anomaly_patterns"):
    display(find_patterns(spark.table("anomaly_patterns"), dbutils.widgets.get("pattern")).limit(limit))
else:
    print("no anomaly_patterns table yet: it is written by `portprint score`")
