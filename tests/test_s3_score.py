"""`portprint score` with the archive and the warehouse on a real S3 API on loopback (moto's server): the same
tables as the same archive scored on local disk, with each Delta writer, and no credential in the output.

The command runs as a child process started with the standard AWS_* variables, as a user would run it: Spark's
JVM reads them when it starts (the suite's own session started long before the server). Expected rows come
from scoring the same files on local disk in the suite's session; the S3 tables are read back with delta-rs.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path
from unittest import mock

import pytest
import yaml
from deltalake import DeltaTable

from portprint.conf.config import S3Conf
from portprint.jobs.engine import storage
from portprint.jobs.score import run_score
from portprint.jobs.warehouse import Warehouse

pytestmark = pytest.mark.slow


def _rows(table: DeltaTable) -> list[tuple]:
    """The table's rows, sorted, losses to 12 significant digits: the autoencoders' arithmetic on batches of
    another size (another reader, another process's thread count) can move a loss in its last bit."""
    t = table.to_pyarrow_table().drop_columns(["run_id", "scored_at"])
    return sorted(tuple(repr(float(f"{v:.12g}")) if isinstance(v, float) else repr(v) for v in r.values())
                  for r in t.to_pylist())


@pytest.fixture(scope="module")
def local_reference(spark, cfg, small_archive, quick_model, tmp_path_factory) -> list[tuple]:
    wh = str(tmp_path_factory.mktemp("local-wh"))
    run_score(spark, cfg, small_archive, quick_model, wh, log=lambda m: None)
    return _rows(DeltaTable(os.path.join(wh, "anomalies")))


@pytest.fixture(scope="module")
def s3_archive(s3_server, small_archive):
    """The small archive's date folders uploaded as they are; returns the bucket and the server."""
    bucket = s3_server.new_bucket()
    client = s3_server.client()
    for folder in sorted(Path(small_archive).glob("date=*")):
        for f in sorted(folder.glob("*.parquet")):
            client.upload_file(str(f), bucket, f"flows/{folder.name}/{f.name}")
    return bucket, s3_server


@pytest.mark.parametrize("writer", ["spark", "delta-rs"])
def test_an_archive_on_s3_scores_to_the_same_tables_as_on_disk(s3_archive, local_reference, quick_model, writer,
                                                                tmp_path):
    bucket, server = s3_archive
    aws = server.env()
    conf = tmp_path / "conf.yml"
    conf.write_text(yaml.safe_dump({"spark": {"master": "local[2]", "shuffle_partitions": 2},
                                    "output": {"writer": writer}}))
    warehouse = f"s3://{bucket}/wh-{writer}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(aws, PYSPARK_PYTHON=sys.executable)
    proc = subprocess.run([sys.executable, "-m", "portprint.jobs.cli", "score", "--conf", str(conf),
                           "--flows", f"s3://{bucket}/flows", "--model", quick_model, "--warehouse", warehouse],
                          env=env, capture_output=True, text=True, timeout=900)
    said = proc.stdout + proc.stderr
    assert proc.returncode == 0, said[-4000:]
    assert aws["AWS_SECRET_ACCESS_KEY"] not in said and aws["AWS_ACCESS_KEY_ID"] not in said
    with mock.patch.dict(os.environ, aws):
        options = storage.delta_rs_storage_options(storage.s3_settings())
        anomalies = DeltaTable(f"{warehouse}/anomalies", storage_options=options)
        runs = DeltaTable(f"{warehouse}/runs", storage_options=options).to_pyarrow_table().to_pylist()
    assert local_reference and _rows(anomalies) == local_reference
    succeeded = [r for r in runs if r["status"] == "succeeded"]
    assert {r["writer"] for r in succeeded} == {writer} and len(succeeded) == 2
    for r in runs:  # nothing in the runs log carries a credential either
        assert aws["AWS_SECRET_ACCESS_KEY"] not in repr(r)
    # A killed or finished run leaves no staging on the store (raw prefixes of unflagged flows).
    listed = server.client().list_objects_v2(Bucket=bucket, Prefix=f"wh-{writer}/_staging/").get("Contents", [])
    assert not [o["Key"] for o in listed if o["Key"].endswith(".parquet")], listed


def test_a_run_on_s3_removes_staging_older_than_stale_staging_hours_and_nothing_else(spark, cfg, s3, monkeypatch):
    """Object storage has no liveness marks: a run removes the staging whose newest object is older than
    output.stale_staging_hours (the store's LastModified), at its start, through the Warehouse.run that
    jobs/score.py enters before its first chunk. The age is set to a few seconds; objects written before a pause
    longer than it are old, those written after it young. boto3 lists the bucket before and after. One warehouse
    is named s3:// with the endpoint in AWS_ENDPOINT_URL, the other s3a:// with the endpoint in conf/ only."""
    age_s = 8.0
    short = replace(cfg, output=replace(cfg.output, stale_staging_hours=age_s / 3600))
    roots = {"s3": "wh", "s3a": "wh-conf"}

    def put(keys):
        for k in keys:
            s3.client.put_object(Bucket=s3.name, Key=k, Body=b"PAR1 raw prefixes of unflagged flows")

    old, young, other = [], [], []
    for wh in roots.values():
        old += [f"{wh}/_staging/run-killed/2026-11-01/part-00000.parquet",  # a run killed with its stages on disk
                f"{wh}/_staging/run-killed/2026-11-02/part-00000.parquet",
                f"{wh}/_staging/loose-old.parquet"]
        # A long run still going: its first stage is old, its latest young; the newest object dates the folder.
        other += [f"{wh}/_staging/run-long/2026-11-01/part-00000.parquet",
                  f"{wh}/anomalies/_delta_log/00000000000000000000.json", f"{wh}/runs/part-00000.parquet",
                  f"{wh}/_staging_notes/part-00000.parquet"]  # a sibling whose name only starts like staging
    other += ["flows/date=2026-11-01/part-00000.parquet", "elsewhere/_staging/run-killed/part-00000.parquet"]
    put(old + other)
    sinks = {scheme: Warehouse(spark, short, s3.uri(wh, scheme), create=False) for scheme, wh in roots.items()}
    time.sleep(age_s + 1.5)  # LastModified has whole seconds: the old objects are now at least age_s old
    written = time.monotonic()
    for wh in roots.values():
        young += [f"{wh}/_staging/run-live/2026-11-01/part-00000.parquet",
                  f"{wh}/_staging/run-long/2026-11-02/part-00000.parquet", f"{wh}/_staging/loose-young.parquet"]
    put(young)
    before = s3.objects()
    assert set(before) == set(old + other + young)

    removed, said = {}, []
    for scheme, sink in sinks.items():
        if scheme == "s3a":  # the endpoint as conf/ gives it (s3.endpoint), as the session builder sets it
            monkeypatch.setattr(storage, "_CONFIGURED", list(storage._CONFIGURED))
            storage.use_s3_conf(S3Conf(endpoint=s3.server.endpoint))
            monkeypatch.delenv("AWS_ENDPOINT_URL")
        with sink.run(f"run-now-{scheme}", said.append) as gone:
            removed[scheme] = sorted(gone)
    took = time.monotonic() - written
    assert took < age_s - 1.5, f"the young objects aged {took:.1f}s before the check: the test's premise fails"

    after = s3.objects()
    # pyarrow keeps a folder it deleted from as a zero-byte marker object: `_staging/` itself, nothing else.
    markers = {f"{wh}/_staging/" for wh in roots.values()}
    assert set(after) - markers == set(before) - set(old)
    assert all(after[k]["Size"] == 0 for k in markers & set(after))
    assert {k: (v["ETag"], v["LastModified"]) for k, v in after.items() if k not in markers} == {
        k: (before[k]["ETag"], before[k]["LastModified"]) for k in after if k not in markers}
    assert removed == {scheme: [f"{scheme}://{s3.name}/{wh}/_staging/loose-old.parquet",
                                f"{scheme}://{s3.name}/{wh}/_staging/run-killed"] for scheme, wh in roots.items()}
    assert len(said) == 2 and all("removed the staging of 2 killed run(s)" in m for m in said)
