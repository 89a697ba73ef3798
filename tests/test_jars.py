"""Spark's Delta and s3a jars fetched from Maven on first use (jobs/engine/jars.py),
the delta-rs fallback when they cannot
be, and a quiet terminal: real Ivy, a real repository, real refusals and silences on loopback."""

from __future__ import annotations

import importlib.metadata
import json
import os
import socket
import subprocess
import sys
import textwrap
import threading
import time
import zipfile

import pyarrow as pa
import pytest

from portprint.jobs.engine import jars

UNREACHABLE = "http://127.0.0.1:9/"  # the discard port: nothing listens, the connection is refused at once


def _manifest(jar: str) -> dict[str, str]:
    with zipfile.ZipFile(jar) as z:
        text = z.read("META-INF/MANIFEST.MF").decode()
    return dict(line.split(": ", 1) for line in text.splitlines() if ": " in line)


def _pom_version(jar: str, group: str, artifact: str) -> str:
    with zipfile.ZipFile(jar) as z:
        text = z.read(f"META-INF/maven/{group}/{artifact}/pom.properties").decode()
    return dict(line.split("=", 1) for line in text.splitlines() if "=" in line)["version"]


def test_delta_jar_is_the_installed_delta_spark_for_this_spark():
    got = jars.fetch(jars.delta_coordinates())
    import pyspark

    minor = ".".join(pyspark.__version__.split(".")[:2])
    delta = [j for j in got.jars if os.path.basename(j).startswith(f"delta-spark_{minor}_2.13-")]
    assert len(delta) == 1
    assert _manifest(delta[0])["Implementation-Version"] == importlib.metadata.version("delta-spark")
    names = {os.path.basename(j) for j in got.jars}
    assert any(n.startswith("delta-storage-") for n in names)
    # What Spark ships is not fetched again (its copies would shadow nothing and warn about SLF4J).
    assert not any(n.startswith(("hadoop-client-", "parquet-", "slf4j-", "log4j-", "scala-library")) for n in names)


def test_hadoop_aws_matches_the_hadoop_pyspark_bundles():
    runtime = jars.pyspark_jars_dir() / f"hadoop-client-api-{jars.hadoop_version()}.jar"
    bundled = _pom_version(str(runtime), "org.apache.hadoop", "hadoop-client-api")
    (coord,) = jars.s3a_coordinates()
    assert (coord.group, coord.artifact, coord.version) == ("org.apache.hadoop", "hadoop-aws", bundled)


def test_a_second_fetch_reads_the_cached_classpath_without_any_repository():
    first = jars.fetch(jars.delta_coordinates())
    again = jars.fetch(jars.delta_coordinates(), repositories=(UNREACHABLE,))
    assert again.from_cache and again.jars == first.jars and again.report == ""
    assert again.seconds < 0.5


def test_a_refused_repository_fails_at_once_with_one_line(tmp_path):
    start = time.monotonic()
    with pytest.raises(jars.FetchError) as info:
        jars.fetch(jars.delta_coordinates(), tmp_path / "empty-cache", repositories=(UNREACHABLE,), timeout_s=5)
    elapsed = time.monotonic() - start
    message = str(info.value)
    assert "\n" not in message and "io.delta:delta-spark_" in message
    assert "cannot reach http://127.0.0.1:9/ (Connection refused)" in message
    assert elapsed < 30, f"a refused connection took {elapsed:.0f} s to fail"


def test_a_silent_repository_fails_after_the_timeout_not_never(tmp_path):
    """A repository that accepts connections and never answers (a stuck proxy): Ivy's read time-out ends it."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        start = time.monotonic()
        with pytest.raises(jars.FetchError):
            jars.fetch(jars.delta_coordinates(), tmp_path / "empty-cache",
                       repositories=(f"http://127.0.0.1:{server.getsockname()[1]}/",), timeout_s=2)
        elapsed = time.monotonic() - start
        assert held, "Ivy never connected: the test proved nothing"
        assert elapsed < 60, f"a silent repository held the fetch for {elapsed:.0f} s"
    finally:
        stop.set()
        thread.join(5)
        for c in held:
            c.close()
        server.close()


FALLBACK = textwrap.dedent("""\
    import sys
    from pyspark.sql import SparkSession
    from portprint.jobs.warehouse import delta as delta_io
    from portprint.jobs.cli import main
    from portprint.conf.config import load_config
    from portprint.jobs.engine.session import build_session, local_packages

    code = main(["sql", "--conf", sys.argv[1], "--warehouse", sys.argv[2],
                 "SELECT date, writer FROM runs ORDER BY date"])
    spark = SparkSession.getActiveSession()
    cfg = load_config("local", sys.argv[1])
    assert build_session(cfg) is spark
    local_packages(cfg)  # tries again, fails again, and must not say so twice
    print("WRITER", delta_io.choose_writer(spark, "auto"), "EXIT", code, flush=True)
""")


def _env() -> dict[str, str]:
    return dict(os.environ, PYSPARK_PYTHON=sys.executable, PYSPARK_DRIVER_PYTHON=sys.executable)


@pytest.mark.slow
def test_without_the_jars_delta_rs_takes_over_and_says_so_once(tmp_path):
    from deltalake import write_deltalake

    from portprint.jobs.warehouse.tables import RUNS

    rows = [{"run_id": "r1", "date": d, "status": "ok", "writer": "delta-rs"} for d in ("2026-11-01", "2026-11-02")]
    write_deltalake(str(tmp_path / "wh" / "runs"), pa.Table.from_pylist(rows, schema=RUNS), partition_by=["date"])
    conf = tmp_path / "offline.yml"
    conf.write_text(json.dumps({"spark": {"master": "local[1]", "jars_cache": str(tmp_path / "empty-cache"),
                                          "maven_repositories": [UNREACHABLE], "maven_timeout_s": 5}}))
    proc = subprocess.run([sys.executable, "-c", FALLBACK, str(conf), str(tmp_path / "wh")], capture_output=True,
                          text=True, timeout=600, env=_env(), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "WRITER delta-rs EXIT 0" in proc.stdout
    assert "2026-11-01" in proc.stdout and "2026-11-02" in proc.stdout
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    line = lines[0]
    assert line.startswith("portprint: could not fetch Spark's delta jars (io.delta:delta-spark_")
    assert "delta-rs" in line and "spark.maven_repositories" in line and "spark.delta_jars: off" in line


@pytest.mark.slow
def test_sql_prints_only_its_own_output_unless_verbose(tmp_path):
    jars.fetch(jars.delta_coordinates())  # warm: the first fetch says so, once, which is also portprint's line
    (tmp_path / "wh").mkdir()
    argv = [sys.executable, "-m", "portprint.jobs.cli", "sql", "--warehouse", str(tmp_path / "wh"),
            "SELECT count(*) AS n FROM anomalies"]
    quiet = subprocess.run(argv, capture_output=True, text=True, timeout=600, env=_env(), cwd=tmp_path)
    assert quiet.returncode == 0
    assert quiet.stderr == ""
    assert quiet.stdout.split() == ["+---+", "|", "n|", "+---+", "|", "0|", "+---+"]
    loud = subprocess.run([*argv, "--verbose"], capture_output=True, text=True, timeout=600, env=_env(), cwd=tmp_path)
    assert loud.returncode == 0
    assert "log4j" in loud.stderr or "WARN" in loud.stderr, loud.stderr[-2000:]


def test_the_proxy_pip_and_curl_use_is_handed_to_ivy():
    env = {"HTTPS_PROXY": "http://proxy.corp:3128", "http_proxy": "proxy.corp:8080", "NO_PROXY": "localhost,.corp"}
    assert jars.proxy_properties(env) == [
        "-Dhttps.proxyHost=proxy.corp", "-Dhttps.proxyPort=3128", "-Dhttp.proxyHost=proxy.corp",
        "-Dhttp.proxyPort=8080", "-Dhttp.nonProxyHosts=localhost|*.corp"]
    assert jars.proxy_properties({"NO_PROXY": "localhost"}) == []
