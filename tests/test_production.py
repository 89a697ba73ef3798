"""The production paths: an archive on loopback S3 and as a Delta table, catalog names, schema evolution and
`portprint maintain`, each checked against what an independent reader (boto3, pyarrow, deltalake) sees."""

from __future__ import annotations

import os
from dataclasses import replace

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest
from deltalake import DeltaTable, write_deltalake

from portprint.jobs.archive.plan import plan_archive
from portprint.jobs.warehouse import delta

DATES = ["2026-11-01", "2026-11-02"]  # the small archive's


def _flow_files(root: str, date: str) -> list[str]:
    folder = os.path.join(root, f"date={date}")
    return sorted(os.path.join(folder, f) for f in os.listdir(folder) if f.endswith(".parquet"))


def _rows_on_disk(root: str) -> dict[str, int]:
    return {d: sum(pq.ParquetFile(f).metadata.num_rows for f in _flow_files(root, d)) for d in DATES}


def _archive_table(root: str) -> pa.Table:
    part = ds.partitioning(pa.schema([("date", pa.string())]), flavor="hive")
    files = [f for d in DATES for f in _flow_files(root, d)]
    return ds.dataset(files, format="parquet", partitioning=part, partition_base_dir=root).to_table()


# --- an archive on object storage ------------------------------------------------------------------------------


def test_an_archive_on_loopback_s3_plans_like_the_same_archive_on_disk(cfg, small_archive, s3):
    for d in DATES:
        for f in _flow_files(small_archive, d):
            s3.client.upload_file(f, s3.name, f"flows/date={d}/{os.path.basename(f)}")
    cols, enc = cfg.archive.columns, cfg.archive.prefix_encoding
    local = plan_archive(small_archive, cols, enc, None, None)
    remote = plan_archive(s3.uri("flows"), cols, enc, None, None, s3=cfg.s3)
    assert remote.dates == local.dates == DATES
    assert remote.rows == local.rows == _rows_on_disk(small_archive)
    assert sorted(map(os.path.basename, remote.all_files())) == sorted(map(os.path.basename, local.all_files()))
    assert all(remote.snapshot(d) for d in DATES)
    # A date rewritten in place (same key, other bytes: a new ETag) gets a new fingerprint; the other keeps its own.
    key = next(k for k in s3.objects("flows/date=2026-11-02/") if k.endswith(".parquet"))
    s3.client.upload_file(_flow_files(small_archive, "2026-11-01")[0], s3.name, key)
    again = plan_archive(s3.uri("flows"), cols, enc, None, None, s3=cfg.s3)
    assert again.snapshot("2026-11-01") == remote.snapshot("2026-11-01")
    assert again.snapshot("2026-11-02") != remote.snapshot("2026-11-02")
    # --start/--end prune remote dates as they do local ones.
    assert plan_archive(s3.uri("flows"), cols, enc, "2026-11-02", None, s3=cfg.s3).dates == ["2026-11-02"]


# --- a Delta table as the archive ------------------------------------------------------------------------------


@pytest.fixture
def delta_archive(small_archive, tmp_path) -> str:
    path = str(tmp_path / "bronze_flows")
    write_deltalake(path, _archive_table(small_archive), partition_by=["date"])
    return path


def test_a_delta_table_archive_is_planned_from_its_log_and_new_only_sees_the_changed_date(cfg, small_archive,
                                                                                        delta_archive):
    cols, enc = cfg.archive.columns, cfg.archive.prefix_encoding
    plan = plan_archive(delta_archive, cols, enc, None, None)
    assert plan.lister == "delta"
    assert plan.dates == DATES
    assert plan.rows == _rows_on_disk(small_archive)
    assert plan_archive(delta_archive, cols, enc, None, "2026-11-01").dates == ["2026-11-01"]
    late = _archive_table(small_archive).filter(pc.equal(pc.field("date"), "2026-11-02")).slice(0, 10)
    write_deltalake(delta_archive, late, mode="append", partition_by=["date"])
    again = plan_archive(delta_archive, cols, enc, None, None)
    assert again.snapshot("2026-11-01") == plan.snapshot("2026-11-01")
    assert again.snapshot("2026-11-02") != plan.snapshot("2026-11-02")
    assert again.rows["2026-11-02"] == plan.rows["2026-11-02"] + 10


def test_scoring_a_delta_table_archive_then_new_only_rescores_only_the_changed_date(spark, cfg, small_archive,
                                                                                   delta_archive, quick_model,
                                                                                   tmp_path):
    from portprint.jobs.score import run_score

    rs = replace(cfg, output=replace(cfg.output, writer="delta-rs"))
    wh = str(tmp_path / "wh")
    first = run_score(spark, rs, delta_archive, quick_model, wh, log=lambda m: None)
    assert first.dates == DATES and first.flows_read == sum(_rows_on_disk(small_archive).values())
    assert run_score(spark, rs, delta_archive, quick_model, wh, new_only=True, log=lambda m: None).dates == []
    late = _archive_table(small_archive).filter(pc.equal(pc.field("date"), "2026-11-02")).slice(0, 10)
    write_deltalake(delta_archive, late, mode="append", partition_by=["date"])
    assert run_score(spark, rs, delta_archive, quick_model, wh, new_only=True,
                     log=lambda m: None).dates == ["2026-11-02"]


# --- catalog names ---------------------------------------------------------------------------------------------

SMALL = pa.schema([("key", pa.string()), ("flows", pa.int64()), ("date", pa.string())])


def _small(rows: list[tuple[str, int, str]]) -> pa.Table:
    return pa.Table.from_pylist([dict(zip(SMALL.names, r, strict=True)) for r in rows], schema=SMALL)


def test_three_part_names_managed_and_external_replace_and_merge_by_name(spark, tmp_path):
    external, managed = "spark_catalog.pp_names.daily", "spark_catalog.pp_names.patterns"
    spark.sql("DROP SCHEMA IF EXISTS spark_catalog.pp_names CASCADE")
    location = str(tmp_path / "external")
    delta.ensure_table(spark, external, SMALL, location=location)
    delta.replace_dates(spark, _small([("a", 1, DATES[0]), ("b", 2, DATES[1])]), external, SMALL, DATES, "spark")
    delta.replace_dates(spark, _small([("c", 3, DATES[1])]), external, SMALL, [DATES[1]], "spark")
    assert os.path.isdir(os.path.join(location, "daily", "_delta_log"))  # the files are where LOCATION says
    assert spark.catalog.getTable(external).tableType.upper() == "EXTERNAL"
    got = DeltaTable(os.path.join(location, "daily")).to_pyarrow_table().sort_by("key").to_pylist()
    assert [(r["key"], r["flows"], r["date"]) for r in got] == [("a", 1, DATES[0]), ("c", 3, DATES[1])]

    delta.merge_upsert(spark, _small([("p", 5, DATES[0]), ("q", 6, DATES[0])]), managed, "key", "spark")
    assert spark.catalog.getTable(managed).tableType.upper() == "MANAGED"  # saveAsTable, no LOCATION
    # MERGE INTO by name: q's flows are gone (deleted), p updated, r inserted.
    delta.merge_upsert(spark, _small([("p", 7, DATES[1]), ("q", 0, DATES[0]), ("r", 1, DATES[1])]), managed,
                       "key", "spark")
    rows = sorted(tuple(r) for r in spark.sql(f"SELECT key, flows, date FROM {managed}").collect())
    assert rows == [("p", 7, DATES[1]), ("r", 1, DATES[1])]
    ops = [r["operation"] for r in spark.sql(f"DESCRIBE HISTORY {managed}").collect()]
    assert ops[0] == "MERGE"
    spark.sql("DROP SCHEMA spark_catalog.pp_names CASCADE")


def test_score_writes_catalog_tables_and_portprint_sql_reads_them_by_name(spark, cfg, small_archive, quick_model,
                                                                          tmp_path):
    from portprint.jobs.score import run_score
    from portprint.jobs.sql import register_tables

    spark.sql("DROP SCHEMA IF EXISTS spark_catalog.pp_uc CASCADE")
    names = {k: f"spark_catalog.pp_uc.{getattr(cfg.output, k)}" for k in
             ("anomalies", "runs", "patterns", "pattern_days", "suppression_hits", "verdicts", "suppressions",
              "exported")}
    location = str(tmp_path / "ext")
    named = replace(cfg, output=replace(cfg.output, writer="spark", location=location, **names))
    report = run_score(spark, named, small_archive, quick_model, str(tmp_path / "wh"), log=lambda m: None)
    assert report.writer == "spark"
    # External tables under output.location, read back by an independent reader.
    on_disk = DeltaTable(os.path.join(location, "anomalies")).to_pyarrow_table()
    assert on_disk.num_rows == report.anomalies > 0
    assert register_tables(spark, named, str(tmp_path / "wh")) == "spark"
    assert spark.sql("SELECT count(*) FROM anomalies").first()[0] == report.anomalies
    assert spark.sql(f"SELECT count(*) FROM {names['anomalies']}").first()[0] == report.anomalies
    writers = {r[0] for r in spark.sql(f"SELECT DISTINCT writer FROM {names['runs']}").collect()}
    assert writers == {"spark"}
    spark.sql("DROP SCHEMA spark_catalog.pp_uc CASCADE")


# --- schema evolution ------------------------------------------------------------------------------------------

NEW = pa.schema([("key", pa.string()), ("score", pa.float64()), ("qname_score", pa.float64()),
                 ("date", pa.string())])
OLD = pa.schema([f for f in NEW if f.name != "qname_score"])


def test_a_table_an_older_portprint_wrote_takes_the_new_columns_without_rewriting_history(spark, writer, tmp_path):
    table = str(tmp_path / "anomalies")
    old_rows = pa.Table.from_pylist([{"key": "a", "score": 1.5, "date": DATES[0]},
                                     {"key": "b", "score": 2.5, "date": DATES[1]}], schema=OLD)
    write_deltalake(table, old_rows, partition_by=["date"])
    first_files = set(DeltaTable(table).file_uris())
    new_rows = pa.Table.from_pylist([{"key": "c", "score": 3.5, "qname_score": 0.5, "date": DATES[1]}], schema=NEW)
    delta.replace_dates(spark, new_rows, table, NEW, [DATES[1]], writer)
    now = DeltaTable(table)
    assert now.version() == 1                                    # one commit on top of the old one
    assert "qname_score" in [f.name for f in now.schema().fields]
    assert "qname_score" not in [f.name for f in DeltaTable(table, version=0).schema().fields]  # history as it was
    kept = [f for f in first_files if f"date={DATES[0]}" in f]
    assert set(kept) <= set(now.file_uris())                     # the untouched date's file is not rewritten
    rows = sorted((r["key"], r["score"], r["qname_score"]) for r in
                  delta.read_table(spark, table, NEW, writer).collect())
    assert rows == [("a", 1.5, None), ("c", 3.5, 0.5)]


# --- maintain --------------------------------------------------------------------------------------------------


def test_maintain_refuses_a_vacuum_shorter_than_time_travel_and_removes_dead_staging(spark, cfg, tmp_path):
    from portprint.jobs.warehouse import STAGING
    from portprint.jobs.warehouse.lock import run_mark
    from portprint.jobs.warehouse.maintain import RetentionError, run_maintain

    wh = tmp_path / "wh"
    dead, live = wh / STAGING / "run-dead", wh / STAGING / "run-live"
    for folder in (dead, live):
        folder.mkdir(parents=True)
        pq.write_table(pa.table({"prefix_hex": ["deadbeef"]}), folder / "part-0.parquet")
    floor = cfg.maintain.time_travel_days
    with pytest.raises(RetentionError, match="time_travel_days"):
        run_maintain(spark, cfg, str(wh), retain_days=floor - 1, log=lambda m: None)
    assert dead.exists()  # refused before anything is touched
    # Three small appends to a table, compacted into one file; VACUUM at the floor keeps version 0 readable.
    table = wh / cfg.output.runs
    for i in range(3):
        write_deltalake(str(table), pa.table({"run_id": [f"r{i}"], "date": [DATES[0]]}), mode="append")
    with run_mark(str(wh), "run-live"):  # a run in progress holds its staging's mark
        report = run_maintain(spark, cfg, str(wh), log=lambda m: None)
    assert report.retain_hours == floor * 24
    assert report.staging_removed == [str(dead)]
    assert not dead.exists() and live.exists()
    assert len(DeltaTable(str(table)).file_uris()) == 1
    assert DeltaTable(str(table), version=0).to_pyarrow_table().num_rows == 1


# --- mixed history ---------------------------------------------------------------------------------------------


def _rows(table: str) -> list[tuple]:
    t = DeltaTable(table).to_pyarrow_table().drop_columns(["run_id", "scored_at"])
    return sorted(tuple(map(repr, r.values())) for r in t.to_pylist())


def test_a_warehouse_started_by_delta_rs_is_continued_by_spark_and_back_with_identical_rows(spark, cfg,
                                                                                         small_archive,
                                                                                         quick_model, tmp_path):
    from portprint.jobs.score import run_score

    def score(writer: str, wh: str, end: str | None = None, rescore: bool = False):
        wcfg = replace(cfg, output=replace(cfg.output, writer=writer))
        start = DATES[0] if rescore else None
        return run_score(spark, wcfg, small_archive, quick_model, wh, start=start, end=end, rescore=rescore,
                         log=lambda m: None)

    alone = str(tmp_path / "delta-rs-only")
    score("delta-rs", alone)
    want = _rows(os.path.join(alone, "anomalies"))
    assert want

    mixed = str(tmp_path / "mixed")
    score("delta-rs", mixed, end=DATES[0])       # started by delta-rs (first date)
    # Continued by Spark's writer, which rewrites the first date and adds the second; then back to delta-rs.
    assert score("spark", mixed, end=DATES[-1], rescore=True).writer == "spark"
    assert _rows(os.path.join(mixed, "anomalies")) == want
    score("delta-rs", mixed, end=DATES[-1], rescore=True)
    assert _rows(os.path.join(mixed, "anomalies")) == want
    runs = DeltaTable(os.path.join(mixed, "runs")).to_pyarrow_table()
    runs = runs.filter(pc.equal(runs["status"], "succeeded")).sort_by([("started_at", "ascending"),
                                                                      ("date", "ascending")])
    assert runs.column("writer").to_pylist() == ["delta-rs", "spark", "spark", "delta-rs", "delta-rs"]
    engines = [str(h.get("engineInfo") or h.get("clientVersion") or "") for h in
               DeltaTable(os.path.join(mixed, "anomalies")).history()]
    assert any("Spark" in e or "Delta-Lake" in e for e in engines) and any("delta-rs" in e for e in engines)
