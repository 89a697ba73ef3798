"""Analyst views of the tables (the Sink's read side): the daily trend against a moving baseline, and the hunting
filters. The notebooks and `portprint report` (jobs/report.py) call these. They are plain DataFrame operations, so
they work on any session (classic, Databricks, Spark Connect) and need no SparkContext.
"""

from __future__ import annotations

import os
import re

from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

from portprint.jobs.archive.plan import parse_date
from portprint.udfs.schemas import DETECTORS

TREND_COLUMNS = ("date", "anomalies", "moving_avg", "band_low", "band_high", "outside_band")
HUNT_COLUMNS = ("date", "ts", "src_ip", "src_port", "dst_ip", "dst_port", "proto", "matched_side", "detector",
                "header_reason", "score", "qname_score", "qname", "qtype", "header", "prefix_text", "prefix_hex",
                "failed_fields", "model_version", "flow_id")
_HEX = re.compile(r"^[0-9a-f]*$")


def latest_per_date(runs_df: DataFrame) -> DataFrame:
    """One row per date: the latest succeeded run's (date, anomalies, model_version, run_id).

    ``runs`` logs every run, so a rescored date has several rows; only the newest describes the
    rows ``anomalies`` holds now. Failed or unfinished runs (status other than succeeded) are ignored.
    """
    df = runs_df
    if "status" in df.columns:
        df = df.where(F.col("status") == "succeeded")
    order = [F.col(c).desc_nulls_last() for c in ("started_at", "run_id") if c in df.columns]
    if not order:
        return df.groupBy("date").agg(F.sum("anomalies").cast("long").alias("anomalies"))
    newest = Window.partitionBy("date").orderBy(*order)
    keep = [c for c in ("date", "anomalies", "model_version", "run_id") if c in df.columns]
    return (df.withColumn("_rank", F.row_number().over(newest)).where(F.col("_rank") == 1)
            .select(*keep).withColumn("anomalies", F.col("anomalies").cast("long")))


def trend_frame(runs_df: DataFrame, window_days: int = 7, k: float = 2.0) -> DataFrame:
    """Anomalies per date with a trailing baseline: date, anomalies, moving_avg, band_low, band_high,
    outside_band, ordered by date.

    The baseline of a date is the scored dates in the ``window_days`` calendar days before it (the date
    itself excluded, so a spike does not widen its own band; dates never scored are absent, not zero).
    moving_avg is their mean, the bands are moving_avg -/+ k times their sample standard deviation
    (null until two baseline dates exist), and outside_band says the count lies outside the bands
    (false when there are no bands yet).
    """
    if window_days < 1:
        raise ValueError("window_days must be at least 1")
    daily = latest_per_date(runs_df).select("date", "anomalies")
    day = F.datediff(F.to_date(F.col("date")), F.to_date(F.lit("1970-01-01")))
    # Daily counts are a few rows per date: one unpartitioned window is the simple, correct choice.
    baseline = Window.orderBy("_day").rangeBetween(-window_days, -1)
    avg = F.avg(F.col("anomalies").cast("double")).over(baseline)
    sd = F.stddev_samp(F.col("anomalies").cast("double")).over(baseline)
    out = (daily.withColumn("_day", day)
           .withColumn("moving_avg", avg)
           .withColumn("_sd", sd)
           .withColumn("band_low", F.col("moving_avg") - F.lit(float(k)) * F.col("_sd"))
           .withColumn("band_high", F.col("moving_avg") + F.lit(float(k)) * F.col("_sd")))
    outside = (F.col("anomalies") > F.col("band_high")) | (F.col("anomalies") < F.col("band_low"))
    return (out.withColumn("outside_band", F.coalesce(outside, F.lit(False)))
            .orderBy("_day").select(*TREND_COLUMNS))


def detector_counts(anomalies_df: DataFrame) -> DataFrame:
    """Rows of ``anomalies`` per date and detector (header-rule, header-model, qname-model, tunnel),
    ordered by date."""
    return (anomalies_df.groupBy("date").pivot("detector", list(DETECTORS[1:])).count()
            .na.fill(0).orderBy("date"))


def _hex_prefix(text: str) -> str:
    """'16 03 01', '16:03:01' and '0x160301' all mean the bytes 16 03 01."""
    h = re.sub(r"[\s:]", "", text.lower())
    h = h[2:] if h.startswith("0x") else h
    if not _HEX.match(h) or len(h) % 2:
        raise ValueError(f"prefix {text!r} is not whole bytes in hex, e.g. '16 03 01' or '5353482d'")
    return h


def decoded_header() -> F.Column:
    """The DNS header fields of an anomaly as one readable string (null fields shown as '-')."""
    parts = [(name, F.coalesce(F.col(name).cast("string"), F.lit("-")))
             for name in ("tcp_len", "dns_id", "qr", "opcode", "rcode", "qdcount", "ancount")]
    return F.concat_ws(" ", *[F.concat(F.lit(f"{name}="), value) for name, value in parts])


def find_anomalies(anomalies_df: DataFrame, start: str | None = None, end: str | None = None,
                   prefix_hex: str | None = None, text: str | None = None, src_ip: str | None = None) -> DataFrame:
    """The anomalies of a hunt, worst first, with their decoded header.

    start/end: dates (inclusive); prefix_hex: the payload starts with these bytes (hex, spaces or colons
    allowed); text: the printable rendering contains this text (e.g. 'SSH-2.0'); src_ip: exact source.
    Empty strings mean "no filter", so notebook widgets can be passed as they are.
    """
    df = anomalies_df
    if start:
        df = df.where(F.col("date") >= parse_date(start, "start"))
    if end:
        df = df.where(F.col("date") <= parse_date(end, "end"))
    if prefix_hex:
        df = df.where(F.col("prefix_hex").startswith(_hex_prefix(prefix_hex)))
    if text:
        df = df.where(F.col("prefix_text").contains(text))
    if src_ip:
        df = df.where(F.col("src_ip") == src_ip.strip())
    return (df.withColumn("header", decoded_header())
            .select(*HUNT_COLUMNS).orderBy(F.col("score").desc_nulls_last(), "ts", "flow_id"))


def summarize_sources(anomalies_df: DataFrame) -> DataFrame:
    """Per source: anomalies, dates first and last seen, distinct destinations, detectors; most active first."""
    return (anomalies_df.groupBy("src_ip")
            .agg(F.count(F.lit(1)).alias("anomalies"), F.min("date").alias("first_seen"),
                 F.max("date").alias("last_seen"), F.countDistinct("dst_ip").alias("distinct_destinations"),
                 F.array_sort(F.collect_set("detector")).alias("detectors"))
            .orderBy(F.col("anomalies").desc(), "src_ip"))


def find_patterns(patterns_df: DataFrame, contains: str | None = None) -> DataFrame:
    """Rows of anomaly_patterns whose pattern contains the text (all when empty), the newest first."""
    df = patterns_df.where(F.col("pattern").contains(contains)) if contains else patterns_df
    return df.orderBy(F.col("first_seen").desc_nulls_last(), "pattern")


def plot_trend(pandas_df, path: str) -> str | None:
    """Draw a trend_frame (as pandas) to ``path``: counts, moving average, bands, outliers marked.

    Returns the path, or None when matplotlib is not installed (the tables still tell the story).
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    import pandas as pd

    df = pandas_df.copy()
    df["date"] = pd.to_datetime(df["date"])
    fig, ax = plt.subplots(figsize=(10, 4))
    ax.fill_between(df["date"], df["band_low"].astype(float), df["band_high"].astype(float), alpha=0.2,
                    label="baseline ± bands")
    ax.plot(df["date"], df["moving_avg"].astype(float), linestyle="--", label="moving average")
    ax.plot(df["date"], df["anomalies"], marker="o", label="anomalies")
    out = df[df["outside_band"].astype(bool)]
    ax.scatter(out["date"], out["anomalies"], color="red", zorder=3, label="outside the bands")
    ax.set_ylim(bottom=0)
    ax.set_ylabel("anomalies per date")
    ax.legend(loc="upper left")
    fig.autofmt_xdate()
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
