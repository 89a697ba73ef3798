"""Spark on a real S3 API on loopback: Parquet through s3a:// (hadoop-aws fetched from Maven), Spark's Delta writer
and reader on s3a://, and the Spark-side archive lister; credentials only from the standard AWS_* variables.

A user's process has its AWS_* variables before Spark's JVM starts, and the JVM reads them then; the suite's
own session started long before this module's server. So Spark runs here in a subprocess, started with the
variables, exactly as `portprint` would be. Expected values come from pyarrow (what was written), boto3 (what
the store holds) and delta-rs (reading Spark's table back).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from unittest import mock

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from portprint.jobs.engine import storage

pytestmark = pytest.mark.slow
DATES = ["2026-11-01", "2026-11-02"]

SCRIPT = textwrap.dedent("""\
    import json, sys
    from pyspark.sql import functions as F
    from portprint.jobs.engine import storage
from portprint.jobs.warehouse import delta as delta_io
    from portprint.conf.config import load_config
    from portprint.jobs.engine.session import JVM_OUTPUT, build_session

    a = json.loads(sys.argv[1])
    cfg = load_config("local", overrides={"spark": {"master": "local[2]", "shuffle_partitions": 2}})
    spark = build_session(cfg, uris=[a["archive"]])
    out = {"writer": delta_io.choose_writer(spark, "auto")}
    paths = [a["archive"] + "/date=" + d for d in a["dates"]]
    df = spark.read.option("basePath", a["archive"]).parquet(*paths)
    out["rows"] = {r["date"]: r["count"] for r in df.groupBy("date").count().collect()}
    out["port_sum"] = df.agg(F.sum("dst_port")).first()[0]
    out["rows_via_s3_scheme"] = spark.read.parquet(a["archive"].replace("s3a://", "s3://", 1) + "/date="
                                                   + a["dates"][0]).count()
    t = a["table"]
    rows = [("2026-11-01", 1.0), ("2026-11-02", 2.0)]
    spark.createDataFrame(rows, "date string, score double").write.format("delta").partitionBy("date").save(t)
    (spark.createDataFrame([("2026-11-02", 7.0)], "date string, score double").write.format("delta")
     .mode("overwrite").option("replaceWhere", "date = '2026-11-02'").save(t))
    out["delta"] = sorted((r["date"], r["score"]) for r in spark.read.format("delta").load(t).collect())
    out["delta_v0"] = sorted((r["date"], r["score"]) for r in spark.sql(
        f"SELECT * FROM delta.`{t}` VERSION AS OF 0").collect())
    out["history"] = [r["operation"] for r in spark.sql(f"DESCRIBE HISTORY delta.`{t}`").collect()]
    out["spark_dates"] = storage.spark_list_dates(spark, a["archive"])
    out["spark_files"] = {d: [[f.path, f.size, f.mtime_ns] for f in fs]
                          for d, fs in storage.spark_list_files(spark, a["archive"], a["dates"]).items()}
    out["spark_rows"] = storage.spark_rows_per_date(spark, a["archive"], a["dates"])
    out["conf"] = spark.sparkContext.getConf().getAll()
    out["hadoop_keys"] = {k: spark.sparkContext._jsc.hadoopConfiguration().get(k) for k in (
        "fs.s3a.endpoint", "fs.s3a.path.style.access")}
    out["jvm_output"] = list(JVM_OUTPUT)
    print("PORTPRINT-RESULT " + json.dumps(out), flush=True)
    spark.stop()
""")


def _flows(n: int, seed: int) -> pa.Table:
    rng = np.random.default_rng(seed)
    return pa.table({"flow_id": [f"f{seed}-{i}" for i in range(n)],
                     "dst_port": pa.array(rng.integers(0, 65536, n), pa.int32())})


@pytest.fixture(scope="module")
def spark_on_s3(s3_server, tmp_path_factory):
    """Write an archive with pyarrow, then run Spark against it in a subprocess; its report and the inputs."""
    bucket = s3_server.new_bucket()
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(s3_server.env(), PYSPARK_PYTHON=sys.executable, PYSPARK_DRIVER_PYTHON=sys.executable)
    written = {}
    with mock.patch.dict(os.environ, s3_server.env()):  # pyarrow's AWS SDK reads the credentials from here
        s3fs = storage.arrow_s3(storage.s3_settings())
        for i, d in enumerate(DATES):
            parts = [_flows(700 + 300 * i, 10 * i), _flows(50, 10 * i + 1)]
            for j, t in enumerate(parts):
                pq.write_table(t, f"{bucket}/arch/date={d}/part-{j}.parquet", filesystem=s3fs, row_group_size=256)
            written[d] = pa.concat_tables(parts)
    args = {"archive": f"s3a://{bucket}/arch", "dates": DATES, "table": f"s3a://{bucket}/wh/anomalies"}
    proc = subprocess.run([sys.executable, "-c", SCRIPT, json.dumps(args)], env=env, capture_output=True,
                          text=True, timeout=900, cwd=str(tmp_path_factory.mktemp("spark-s3")))
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("PORTPRINT-RESULT ")]
    assert proc.returncode == 0 and lines, f"exit {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return {"report": json.loads(lines[-1].split(" ", 1)[1]), "bucket": bucket, "written": written,
            "client": s3_server.client(), "stdout": proc.stdout, "stderr": proc.stderr, "env": s3_server.env()}


def _objects(client, bucket: str, prefix: str) -> dict[str, dict]:
    return {o["Key"]: o for o in client.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", [])}


def test_spark_reads_parquet_through_s3a(spark_on_s3):
    r, written = spark_on_s3["report"], spark_on_s3["written"]
    assert r["rows"] == {d: t.num_rows for d, t in written.items()}
    assert r["port_sum"] == sum(pc.sum(t.column("dst_port")).as_py() for t in written.values())
    assert r["rows_via_s3_scheme"] == written[DATES[0]].num_rows


def test_spark_delta_writes_and_reads_on_s3a(spark_on_s3):
    from deltalake import DeltaTable

    r, bucket = spark_on_s3["report"], spark_on_s3["bucket"]
    assert r["writer"] == "spark"
    assert r["delta"] == [["2026-11-01", 1.0], ["2026-11-02", 7.0]]
    assert r["delta_v0"] == [["2026-11-01", 1.0], ["2026-11-02", 2.0]]
    assert r["history"] == ["WRITE", "WRITE"]
    keys = set(_objects(spark_on_s3["client"], bucket, "wh/anomalies/"))
    assert "wh/anomalies/_delta_log/00000000000000000001.json" in keys
    # delta-rs reads Spark's table on the same store: one protocol, two writers.
    with mock.patch.dict(os.environ, spark_on_s3["env"]):
        options = storage.delta_rs_storage_options(storage.s3_settings())
        got = DeltaTable(f"s3://{bucket}/wh/anomalies", storage_options=options).to_pyarrow_table().sort_by("date")
    assert list(zip(got.column("date").to_pylist(), got.column("score").to_pylist(), strict=True)) == [
        ("2026-11-01", 1.0), ("2026-11-02", 7.0)]


def test_spark_lister_agrees_with_boto3(spark_on_s3):
    r, bucket = spark_on_s3["report"], spark_on_s3["bucket"]
    listed = _objects(spark_on_s3["client"], bucket, "arch/")
    assert r["spark_dates"] == DATES
    for d in DATES:
        got = {p.split(f"{bucket}/", 1)[1]: (size, ns) for p, size, ns in r["spark_files"][d]}
        expected = {k: o for k, o in listed.items() if k.startswith(f"arch/date={d}/")}
        assert set(got) == set(expected)
        for key, (size, ns) in got.items():
            assert size == expected[key]["Size"]
            assert abs(ns / 1e9 - expected[key]["LastModified"].timestamp()) < 1.0
    assert r["spark_rows"] == {d: t.num_rows for d, t in spark_on_s3["written"].items()}


def test_credentials_are_not_copied_into_spark_or_its_output(spark_on_s3):
    r = spark_on_s3
    secret, key = r["env"]["AWS_SECRET_ACCESS_KEY"], r["env"]["AWS_ACCESS_KEY_ID"]
    conf = dict(r["report"]["conf"])
    assert conf["spark.hadoop.fs.s3a.endpoint"] == r["env"]["AWS_ENDPOINT_URL"]
    assert r["report"]["hadoop_keys"] == {"fs.s3a.endpoint": r["env"]["AWS_ENDPOINT_URL"],
                                          "fs.s3a.path.style.access": "true"}
    # (Spark itself copies AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY into its in-memory Hadoop
    # configuration; what matters is that they reach no conf listing, log or output.)
    for text in (json.dumps(r["report"]["conf"]), "\n".join(r["report"]["jvm_output"]), r["stdout"], r["stderr"]):
        assert secret not in text and key not in text
