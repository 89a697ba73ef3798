"""The Spark session: built here from config by `cli`, then passed to every job (never a global)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys

from pyspark.sql import SparkSession

from portprint.conf.config import Config

JAVA_HELP = (
    "portprint needs Java 17 or newer for Spark. Install it (Debian/Ubuntu: `apt-get install -y "
    "openjdk-17-jre-headless`; macOS: `brew install openjdk@17`) and make sure `java` is on PATH or "
    "JAVA_HOME points at it."
)


class EnvironmentProblem(RuntimeError):
    """Something outside portprint (Java, a path) is missing; the message says how to fix it."""


def java_major_version() -> int | None:
    """The major version of the `java` Spark would start, or None when there is none."""
    java_home = os.environ.get("JAVA_HOME")
    java = os.path.join(java_home, "bin", "java") if java_home else shutil.which("java")
    if not java or not os.path.exists(java):
        return None
    try:
        out = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=30).stderr
    except (OSError, subprocess.TimeoutExpired):
        return None
    m = re.search(r'version "(\d+)(?:\.(\d+))?', out)
    if not m:
        return None
    major = int(m.group(1))
    return int(m.group(2)) if major == 1 and m.group(2) else major


def require_java(min_major: int = 17) -> None:
    """Fail at once, with the fix, instead of Spark's long stack trace after a minute."""
    major = java_major_version()
    if major is None or major < min_major:
        found = "no java found" if major is None else f"found Java {major}"
        raise EnvironmentProblem(f"{found}. {JAVA_HELP}")


def build_session(cfg: Config) -> SparkSession:
    """Get the active session (Databricks, Spark Connect) or start the configured local one."""
    active = SparkSession.getActiveSession()
    if active is not None:
        return active
    if cfg.spark.master is None:
        # A Databricks wheel task may start before any session is active: attach to the cluster's.
        try:
            return SparkSession.builder.getOrCreate()
        except Exception as exc:
            raise EnvironmentProblem("no Spark session to attach to and spark.master is null (env databricks); "
                                     "run on a Databricks cluster or use --env local") from exc
    require_java()
    # Spark's Python workers must run this interpreter, which has numba, torch and portprint.
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    s = cfg.spark
    builder = (
        SparkSession.builder.master(s.master)
        .appName(s.app_name)
        .config("spark.driver.memory", s.driver_memory)
        .config("spark.sql.shuffle.partitions", str(s.shuffle_partitions))
        .config("spark.sql.files.maxPartitionBytes", s.max_partition_bytes)
        .config("spark.sql.execution.arrow.maxRecordsPerBatch", str(s.arrow_batch_rows))
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.log.level", s.log_level)
        .config("spark.sql.parquet.outputTimestampType", "TIMESTAMP_MICROS")
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        # Partition columns stay strings: `date` is 'YYYY-MM-DD' text in the contract.
        .config("spark.sql.sources.partitionColumnTypeInference.enabled", "false")
    )
    return builder.getOrCreate()
