"""The Spark session: built here from config, then passed to every job (never a global); called by jobs/cli.py.

A local session loads the Delta jars (and, for s3:// or s3a:// paths, hadoop-aws with the AWS SDK),
fetched from Maven on first use by jars.py. Where they cannot be had, it starts without them, says so in
one line, and the warehouse is written by delta-rs. Spark's own start-up output (log4j notices, native
library and hostname warnings) is kept off the terminal unless ``verbose``.
"""

from __future__ import annotations

import collections
import os
import re
import shutil
import subprocess
import sys
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field

from pyspark.sql import SparkSession

from portprint.conf.config import Config
from portprint.jobs.engine import jars
from portprint.jobs.engine.storage import S3_SCHEMES, hadoop_s3a_options, s3_settings, use_s3_conf

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


def build_session(cfg: Config, uris: Sequence[str | None] = (), verbose: bool = False) -> SparkSession:
    """Get the active session (Databricks, Spark Connect) or start the configured local one. ``uris``: the
    paths the command reads or writes (s3:// or s3a:// ones bring the s3a connector when s3a_jars is auto)."""
    use_s3_conf(cfg.s3)
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
    options = local_options(cfg, uris, verbose)
    if not verbose:
        _launch_quiet_jvm(options)
    builder = SparkSession.builder
    for key, value in options.items():
        builder = builder.config(key, value)
    return builder.getOrCreate()


def local_options(cfg: Config, uris: Sequence[str | None] = (), verbose: bool = False) -> dict[str, str]:
    """The Spark conf of a local session (a local Spark Connect server takes the same): sizes, quiet output,
    the Delta and s3a jars with their settings, and the catalog."""
    s = cfg.spark
    options = {
        "spark.master": s.master,
        "spark.app.name": s.app_name,
        "spark.driver.memory": s.driver_memory,
        "spark.sql.shuffle.partitions": str(s.shuffle_partitions),
        "spark.sql.files.maxPartitionBytes": s.max_partition_bytes,
        "spark.sql.execution.arrow.maxRecordsPerBatch": str(s.arrow_batch_rows),
        "spark.sql.session.timeZone": "UTC",
        "spark.log.level": "WARN" if verbose and s.log_level in ("FATAL", "ERROR", "OFF") else s.log_level,
        "spark.sql.parquet.outputTimestampType": "TIMESTAMP_MICROS",
        "spark.ui.enabled": "false",
        "spark.ui.showConsoleProgress": "false",
        # Partition columns stay strings: `date` is 'YYYY-MM-DD' text in the contract.
        "spark.sql.sources.partitionColumnTypeInference.enabled": "false",
    }
    if str(s.master).startswith("local"):
        # A local session serves only this machine: bind to loopback, not the first network interface.
        options["spark.driver.bindAddress"] = options["spark.driver.host"] = "127.0.0.1"
    packages = local_packages(cfg, uris, verbose)
    if packages.jars:
        # local: the jars are where Ivy's cache holds them on this machine: not copied per session.
        options["spark.jars"] = ",".join("local:" + j for j in packages.jars)
    if packages.delta:
        options["spark.sql.extensions"] = jars.DELTA_EXTENSION
        options["spark.sql.catalog.spark_catalog"] = jars.DELTA_CATALOG
        # Delta rebuilds a table's state in 50 tasks by default, sized for clusters; a local session's small
        # tables take several times longer that way than in shuffle_partitions tasks.
        options["spark.databricks.delta.snapshotPartitions"] = str(max(1, s.shuffle_partitions))
        # VACUUM lists a table's files in parallelPartitionDiscovery.parallelism tasks (10,000 by default): on
        # local cores that is a minute and a half for a table of three files; shuffle_partitions tasks suffice.
        options["spark.sql.sources.parallelPartitionDiscovery.parallelism"] = str(max(1, s.shuffle_partitions))
    if packages.s3a:
        options.update(hadoop_s3a_options(s3_settings(cfg.s3)))
    if s.catalog_dir:
        # A persistent local catalog (tables by name outlive the process): Hive's metastore in an embedded Derby
        # database, and managed tables, both under catalog_dir. Derby admits one process at a time.
        base = os.path.abspath(os.path.expanduser(s.catalog_dir))
        os.makedirs(base, exist_ok=True)
        options["spark.sql.catalogImplementation"] = "hive"
        options["spark.sql.warehouse.dir"] = os.path.join(base, "warehouse")
        options["spark.hadoop.javax.jdo.option.ConnectionURL"] = (
            f"jdbc:derby:;databaseName={os.path.join(base, 'metastore_db')};create=true")
        options["spark.driver.extraJavaOptions"] = f"-Dderby.system.home={base}"
    return options


@dataclass
class Packages:
    """The jars a local session gets, and which features they bring."""

    jars: list[str] = field(default_factory=list)
    delta: bool = False
    s3a: bool = False


_SAID: set[str] = set()


def say_once(topic: str, message: str) -> None:
    """One plain line on stderr, once per topic and process (a second session in the same run says nothing new)."""
    if topic not in _SAID:
        _SAID.add(topic)
        print(f"portprint: {message}", file=sys.stderr, flush=True)


def wants_s3a(cfg: Config, uris: Sequence[str | None]) -> bool:
    mode = cfg.spark.s3a_jars
    return mode == "on" or (mode == "auto" and any(u and u.split("://", 1)[0].lower() in S3_SCHEMES
                                                   for u in uris if u and "://" in u))


def local_packages(cfg: Config, uris: Sequence[str | None] = (), verbose: bool = False) -> Packages:
    """Fetch (first use) or find (cached) the Delta and s3a jars; a failure is said once and left out."""
    s = cfg.spark
    out = Packages()
    wanted = []
    if s.delta_jars == "auto":
        wanted.append(("delta", jars.delta_coordinates))
    if wants_s3a(cfg, uris):
        wanted.append(("s3a", jars.s3a_coordinates))
    for name, coords in wanted:
        try:
            got = jars.fetch(coords(), s.jars_cache, s.maven_repositories, s.maven_timeout_s)
        except jars.FetchError as exc:
            fix = ("Spark reads and writes Delta through delta-rs instead; to use Spark's Delta, let this machine "
                   "reach Maven Central or name a mirror in spark.maven_repositories (spark.delta_jars: off "
                   "silences this)") if name == "delta" else (
                   "s3:// and s3a:// paths cannot be read by Spark; let this machine reach Maven Central or name "
                   "a mirror in spark.maven_repositories")
            say_once(f"fetch-{name}", f"could not fetch Spark's {name} jars ({exc}); {fix}")
            continue
        if verbose and got.report:
            print(got.report, file=sys.stderr)
        if not got.from_cache:
            say_once(f"fetched-{name}", f"fetched Spark's {name} jars ({len(got.jars)} files) in {got.seconds:.0f} s; "
                     "cached for the next runs")
        out.jars += [j for j in got.jars if j not in out.jars]
        setattr(out, name, True)
    return out


# The JVM's own output (launcher, log4j before spark.log.level applies, Ivy, Python workers' stderr):
# kept in memory, the last lines, for an error that needs them.
JVM_OUTPUT: collections.deque[str] = collections.deque(maxlen=400)


def _launch_quiet_jvm(options: dict[str, str]) -> None:
    """Start Spark's JVM with its stdout and stderr read by a thread instead of the terminal.

    pyspark's ``launch_gateway(popen_kwargs=...)`` exists for this; the gateway is then the one
    SparkContext uses. A JVM already running (a second session in this process) is left alone."""
    from pyspark import SparkConf, SparkContext
    from pyspark.java_gateway import launch_gateway

    if SparkContext._gateway is not None or "PYSPARK_GATEWAY_PORT" in os.environ:
        return
    read_fd, write_fd = os.pipe()

    def drain() -> None:
        with os.fdopen(read_fd, "r", errors="replace") as stream:
            for line in stream:
                JVM_OUTPUT.append(line.rstrip("\n"))

    threading.Thread(target=drain, name="portprint-jvm-output", daemon=True).start()
    conf = SparkConf(loadDefaults=False).setAll(list(options.items()))
    try:
        gateway = launch_gateway(conf, popen_kwargs={"stdout": write_fd, "stderr": write_fd})
    except Exception as exc:
        tail = " | ".join(list(JVM_OUTPUT)[-3:])
        raise EnvironmentProblem(f"Spark's JVM did not start: {exc}. Its last output: {tail or 'none'}. "
                                 "Rerun with --verbose to see all of it") from exc
    finally:
        os.close(write_fd)
    SparkContext._ensure_initialized(gateway=gateway)
