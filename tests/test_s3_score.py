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
from pathlib import Path
from unittest import mock

import pytest
import yaml
from deltalake import DeltaTable

from portprint.jobs.engine import storage
from portprint.jobs.score import run_score

pytestmark = pytest.mark.slow


def _rows(table: DeltaTable) -> list[tuple]:
    t = table.to_pyarrow_table().drop_columns(["run_id", "scored_at"])
    return sorted(tuple(map(repr, r.values())) for r in t.to_pylist())


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
