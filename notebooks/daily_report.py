# Databricks notebook source
# MAGIC %md
# MAGIC # portprint: daily report
# MAGIC
# MAGIC Anomalies per date from the latest successful run of each date, against a trailing moving average with
# MAGIC ±k standard-deviation bands (`portprint.jobs.warehouse.views.trend_frame`, Spark window functions), and the
# MAGIC split by detector. Run daily by the bundle's `portprint_report_daily` job after the nightly score.

# COMMAND ----------

# ruff: noqa: F821 - spark, dbutils and display are the Databricks notebook's globals
import datetime as dt
import json

from portprint.conf.config import load_config
from portprint.jobs.sql import register_tables
from portprint.jobs.warehouse.views import detector_counts, plot_trend, trend_frame

# COMMAND ----------

dbutils.widgets.text("env", "databricks", "conf overlay (--env)")
dbutils.widgets.text("conf", "", "extra conf file (--conf)")
dbutils.widgets.text("warehouse", "", "warehouse folder (--warehouse)")
dbutils.widgets.text("window_days", "7", "baseline days")
dbutils.widgets.text("k", "2.0", "band width (standard deviations)")
dbutils.widgets.text("out", "", "folder for the trend plot (empty: none)")

cfg = load_config(dbutils.widgets.get("env"), dbutils.widgets.get("conf") or None)
register_tables(spark, cfg, dbutils.widgets.get("warehouse"))

# COMMAND ----------

# MAGIC %md ## Anomalies per date, moving average and bands

# COMMAND ----------

trend = trend_frame(spark.sql("SELECT * FROM runs"), window_days=int(dbutils.widgets.get("window_days")),
                    k=float(dbutils.widgets.get("k")))
display(trend)

# COMMAND ----------

# MAGIC %md ## Which detector fired, per date

# COMMAND ----------

display(detector_counts(spark.sql("SELECT date, detector FROM anomalies")))

# COMMAND ----------

# MAGIC %md ## DNS tunnels: the name groups the Escalate stage escalated, with their evidence
# MAGIC One row per day, name group (`z:<registered domain>`, or `s:<server>/<length>/<shape>` for names cut off by
# MAGIC the prefix) and client ("all clients" for a group judged over every source): the rule that fired (shape,
# MAGIC socket, session, odd), the group's distinct names, the names the rule counted, label bytes, and its reason.

# COMMAND ----------

display(spark.sql("""
SELECT date, escalation_group AS group_, CASE WHEN escalation_level = 'zone' THEN 'all clients' ELSE src_ip END
       AS client, escalation AS rule, count(*) AS flows, count(DISTINCT src_ip) AS sources,
       max(escalation_names) AS names, max(escalation_hits) AS counted, max(escalation_bytes) AS label_bytes,
       min_by(qname, ts) AS example, max(escalation_reason) AS reason
FROM anomalies WHERE detector = 'tunnel'
GROUP BY date, escalation_group, escalation_level, CASE WHEN escalation_level = 'zone' THEN 'all clients'
         ELSE src_ip END, escalation
ORDER BY date DESC, flows DESC"""))

# COMMAND ----------

# MAGIC %md ## Triage per date: new, confirmed, benign, duplicate, suppressed (`anomalies_triaged`)

# COMMAND ----------

display(spark.sql("SELECT date, status, count(*) AS anomalies FROM anomalies_triaged GROUP BY date, status "
                  "ORDER BY date, status"))

# COMMAND ----------

trend_pd = trend.toPandas()
plot = None
if dbutils.widgets.get("out"):
    plot = plot_trend(trend_pd, f"{dbutils.widgets.get('out')}/trend-{dt.date.today().isoformat()}.png")
    print(f"trend plot: {plot or 'not drawn (matplotlib is not installed)'}")
latest = trend_pd.iloc[-1].to_dict() if len(trend_pd) else {}
dbutils.notebook.exit(json.dumps({
    "dates": len(trend_pd), "latest_date": latest.get("date"), "latest_anomalies": latest.get("anomalies"),
    "latest_outside_band": bool(latest.get("outside_band", False)),
    "dates_outside_band": int(trend_pd["outside_band"].sum()) if len(trend_pd) else 0, "plot": plot,
}, default=str))
