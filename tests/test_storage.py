"""Archive listing, footers and fingerprints (jobs/engine/storage.py)
on a local folder and on a real S3 API on loopback,
checked against what was written and against boto3's and os.stat's own view; and delta-rs on that S3."""

from __future__ import annotations

import os
import time

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest

from portprint.jobs.engine import storage

DATES = ["2026-11-01", "2026-11-02", "2026-11-04"]
# (date, relative file, rows, row group size): the expected values of every test below
FILES = [
    ("2026-11-01", "part-0.parquet", 1000, 300),
    ("2026-11-01", "part-1.parquet", 10, 100),
    ("2026-11-02", "part-0.parquet", 2500, 1000),
    ("2026-11-02", "hour=03/part-0.parquet", 40, 40),
    ("2026-11-04", "part-0.parquet", 1, 10),
]
HIDDEN = ["date=2026-11-01/_SUCCESS", "date=2026-11-01/.part-0.parquet.crc", "date=2026-11-02/_tmp/part-9.parquet"]
NOT_DATES = ["other/part-0.parquet", "date=latest/part-0.parquet", "day=2026-11-03/part-0.parquet"]


def _flows(n: int, seed: int) -> pa.Table:
    rng = np.random.default_rng(seed)
    return pa.table({"flow_id": [f"f{seed}-{i}" for i in range(n)], "dst_port": rng.integers(0, 65536, n),
                     "orig_payload_prefix": [bytes(rng.integers(0, 256, 12, dtype=np.uint8)) for _ in range(n)]})


def _write_archive(fs: pafs.FileSystem, root: str) -> None:
    local = isinstance(fs, pafs.LocalFileSystem)  # object stores need no folders (and get no marker objects)
    for i, (d, rel, rows, group) in enumerate(FILES):
        path = f"{root}/date={d}/{rel}"
        if local:
            fs.create_dir(path.rsplit("/", 1)[0], recursive=True)
        pq.write_table(_flows(rows, i), path, filesystem=fs, row_group_size=group)
    for rel in HIDDEN + NOT_DATES:
        if local:
            fs.create_dir(f"{root}/{rel}".rsplit("/", 1)[0], recursive=True)
        pq.write_table(_flows(3, 99), f"{root}/{rel}", filesystem=fs)


def _expected_groups(rows: int, group: int) -> tuple[int, ...]:
    return tuple(min(group, rows - k) for k in range(0, rows, group))


def _check_plan(root: str, sizes_and_tags: dict[str, tuple[int, str | None]]) -> dict[str, list]:
    """List, read footers, and compare with the written files and the store's own listing."""
    assert storage.list_dates(root) == DATES
    files = storage.list_files(root, DATES)
    expected_paths = {d: sorted(f"{root}/date={d}/{rel}" for dd, rel, _, _ in FILES if dd == d) for d in DATES}
    assert {d: [f.path for f in fs] for d, fs in files.items()} == expected_paths
    flat = [f for d in DATES for f in files[d]]
    assert {f.path: f.size for f in flat} == {p: sizes_and_tags[p][0] for p in (f.path for f in flat)}
    footers = storage.read_footers(root, flat, threads=4)
    for d, rel, rows, group in FILES:
        ft = footers[f"{root}/date={d}/{rel}"]
        assert ft.num_rows == rows
        assert ft.row_group_rows == _expected_groups(rows, group)
        assert len(ft.row_group_bytes) == len(ft.row_group_rows) and all(b > 0 for b in ft.row_group_bytes)
        assert ft.schema.names == ["flow_id", "dst_port", "orig_payload_prefix"]
        assert ft.etag == sizes_and_tags[ft.path][1]
    return {d: storage.with_etags(files[d], footers) for d in DATES}


def test_local_archive_is_listed_like_os_sees_it(tmp_path):
    root = str(tmp_path / "flows")
    _write_archive(pafs.LocalFileSystem(), root)
    expected = {}
    for dirpath, _, names in os.walk(root):
        for n in names:
            expected[os.path.join(dirpath, n)] = (os.stat(os.path.join(dirpath, n)).st_size, None)
    files = _check_plan(root, expected)
    mtimes = {f.path: f.mtime_ns for d in DATES for f in files[d]}
    assert mtimes == {p: os.stat(p).st_mtime_ns for p in mtimes}
    # file: URIs name the same folder
    assert storage.list_dates("file://" + root) == DATES


def test_remote_archive_is_listed_like_boto3_sees_it(s3):
    fs, base = storage.filesystem(s3.uri())
    assert isinstance(fs, pafs.S3FileSystem)
    _write_archive(fs, f"{base}/arch")
    listed = s3.objects("arch/")
    assert len(listed) == len(FILES) + len(HIDDEN) + len(NOT_DATES)
    for scheme in ("s3", "s3a"):
        root = s3.uri("arch", scheme)
        expected = {f"{scheme}://{s3.name}/{k}": (o["Size"], o["ETag"].strip('"')) for k, o in listed.items()}
        files = _check_plan(root, expected)
        mtimes = {f.path.split(f"{s3.name}/", 1)[1]: f.mtime_ns for d in DATES for f in files[d]}
        for key, ns in mtimes.items():
            assert abs(ns / 1e9 - listed[key]["LastModified"].timestamp()) < 1.0


def test_fingerprint_changes_when_a_date_changes_and_only_then(s3):
    fs, base = storage.filesystem(s3.uri())
    _write_archive(fs, f"{base}/arch")
    root = s3.uri("arch")

    def prints() -> dict[str, str]:
        files = storage.list_files(root, DATES)
        footers = storage.read_footers(root, [f for d in DATES for f in files[d]])
        return {d: storage.fingerprint(storage.with_etags(files[d], footers)) for d in DATES}

    before = prints()
    assert len(set(before.values())) == len(DATES)
    assert prints() == before                                    # nothing changed: same fingerprints
    # The same number of rows of other content: same size class, new ETag.
    time.sleep(1.1)
    pq.write_table(_flows(1, 12345), f"{base}/arch/date=2026-11-04/part-0.parquet", filesystem=fs,
                   row_group_size=10)
    after = prints()
    assert after["2026-11-04"] != before["2026-11-04"]
    assert {d: after[d] for d in DATES[:2]} == {d: before[d] for d in DATES[:2]}
    # A file written late into a date
    pq.write_table(_flows(5, 7), f"{base}/arch/date=2026-11-01/part-2.parquet", filesystem=fs)
    assert prints()["2026-11-01"] != before["2026-11-01"]
    # Hidden files do not count
    fs.open_output_stream(f"{base}/arch/date=2026-11-02/_SUCCESS").close()
    assert prints()["2026-11-02"] == before["2026-11-02"]


def test_fingerprint_falls_back_to_mtime_without_etags():
    a = storage.ArchiveFile("/a/date=2026-11-01/p.parquet", 10, 1_000, None)
    b = storage.ArchiveFile("/a/date=2026-11-01/p.parquet", 10, 2_000, None)
    assert storage.fingerprint([a]) != storage.fingerprint([b])
    # the root's own location does not count: a moved archive keeps its fingerprints
    moved = storage.ArchiveFile("s3://x/y/date=2026-11-01/p.parquet", 10, 1_000, None)
    assert storage.fingerprint([a]) == storage.fingerprint([moved])


def test_missing_root_and_corrupt_file_are_named(tmp_path, s3):
    with pytest.raises(storage.StorageError, match="does not exist"):
        storage.list_dates(str(tmp_path / "nope"))
    fs, base = storage.filesystem(s3.uri())
    with fs.open_output_stream(f"{base}/arch/date=2026-11-01/part-0.parquet") as out:
        out.write(b"not parquet at all")
    root = s3.uri("arch")
    files = storage.list_files(root, ["2026-11-01"])["2026-11-01"]
    with pytest.raises(storage.StorageError, match=r"corrupt Parquet file s3://.*/date=2026-11-01/part-0\.parquet"):
        storage.read_footers(root, files)


def test_s3_settings_follow_the_standard_variables_and_conf_wins():
    from portprint.conf.config import S3Conf

    env = {"AWS_ENDPOINT_URL": "http://127.0.0.1:9000", "AWS_REGION": "eu-west-1", "AWS_ACCESS_KEY_ID": "k",
           "AWS_SECRET_ACCESS_KEY": "secret-value"}
    s = storage.s3_settings(None, env)
    assert (s.endpoint, s.region, s.path_style) == ("http://127.0.0.1:9000", "eu-west-1", True)
    assert storage.s3_settings(S3Conf(endpoint="https://minio.example:9000", path_style=False), env).endpoint \
        == "https://minio.example:9000"
    assert storage.s3_settings(None, {"AWS_DEFAULT_REGION": "us-west-2"}) == storage.S3Settings(
        None, "us-west-2", False, None)
    hadoop = storage.hadoop_s3a_options(s, env)
    assert hadoop["spark.hadoop.fs.s3a.endpoint"] == "http://127.0.0.1:9000"
    assert hadoop["spark.hadoop.fs.s3a.path.style.access"] == "true"
    assert hadoop["spark.hadoop.fs.s3a.connection.ssl.enabled"] == "false"
    options = storage.delta_rs_storage_options(s)
    # Credentials are read by each client from the environment, never copied into settings.
    for settings in (hadoop, options):
        assert not any("secret-value" in v or v == "k" for v in settings.values())
    profile = storage.hadoop_s3a_options(storage.s3_settings(None, {}), {"AWS_PROFILE": "team"})
    assert "ProfileCredentialsProvider" in profile["spark.hadoop.fs.s3a.aws.credentials.provider"]


def test_delta_rs_writes_a_table_on_s3(s3):
    from deltalake import DeltaTable, write_deltalake

    options = storage.delta_rs_storage_options(storage.s3_settings())
    table = s3.uri("wh/anomalies")
    data = pa.table({"date": ["2026-11-01", "2026-11-02"], "score": [1.5, 2.5]})
    write_deltalake(table, data, partition_by=["date"], storage_options=options)
    write_deltalake(table, pa.table({"date": ["2026-11-02"], "score": [9.0]}), mode="overwrite",
                    predicate="date = '2026-11-02'", partition_by=["date"], storage_options=options)
    keys = set(s3.objects("wh/anomalies/"))
    assert {"wh/anomalies/_delta_log/00000000000000000000.json",
            "wh/anomalies/_delta_log/00000000000000000001.json"} <= keys
    assert any(k.startswith("wh/anomalies/date=2026-11-01/") and k.endswith(".parquet") for k in keys)
    got = DeltaTable(table, storage_options=options).to_pyarrow_table().sort_by("date")
    assert got.column("score").to_pylist() == [1.5, 9.0]
    assert DeltaTable(table, storage_options=options, version=0).to_pyarrow_table().num_rows == 2
