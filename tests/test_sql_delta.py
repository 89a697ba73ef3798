"""Analyst SQL on Spark's Delta reader: time travel and DESCRIBE HISTORY through `portprint sql`, by path and by name,
on a table Spark's Delta writer wrote; and the Spark-side archive lister on a local folder."""

from __future__ import annotations

import datetime as dt
import os
import uuid

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from portprint.jobs.cli import main
from portprint.jobs.engine import storage
from portprint.jobs.warehouse import delta as delta_io

pytestmark = pytest.mark.slow


def _rows(out: str) -> list[list[str]]:
    """The data rows of df.show()'s table."""
    return [[c.strip() for c in ln.strip("|").split("|")] for ln in out.splitlines()
            if ln.startswith("|")][1:]


@pytest.fixture
def two_versions(spark, tmp_path):
    """A Delta table written twice by Spark's writer: version 0 holds a, b; version 1 replaced b by c."""
    assert delta_io.choose_writer(spark, "auto") == "spark", "the suite's session has no Delta jars"
    path = str(tmp_path / "wh" / "verdicts")
    spark.createDataFrame([("a", 1), ("b", 2)], "k string, v int").write.format("delta").save(path)
    spark.createDataFrame([("a", 1), ("c", 3)], "k string, v int").write.format("delta").mode("overwrite").save(path)
    # Delta dates a version (of a table without in-commit timestamps) by its log file's modification time.
    log0 = os.path.join(path, "_delta_log", "00000000000000000000.json")
    return path, str(tmp_path / "wh"), os.stat(log0).st_mtime_ns // 1_000_000


def test_time_travel_and_history_by_path(two_versions, capsys):
    path, wh, ts_ms = two_versions
    assert main(["sql", "--warehouse", wh, f"SELECT k, v FROM delta.`{path}` VERSION AS OF 0 ORDER BY k"]) == 0
    assert _rows(capsys.readouterr().out) == [["a", "1"], ["b", "2"]]
    assert main(["sql", "--warehouse", wh, f"SELECT k FROM delta.`{path}` ORDER BY k"]) == 0
    assert _rows(capsys.readouterr().out) == [["a"], ["c"]]
    # The moment version 0's log file was written names version 0.
    when = dt.datetime.fromtimestamp(ts_ms / 1000, dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S.%f")
    assert main(["sql", "--warehouse", wh, f"SELECT k FROM delta.`{path}` TIMESTAMP AS OF '{when}' ORDER BY k"]) == 0
    assert _rows(capsys.readouterr().out) == [["a"], ["b"]]
    assert main(["sql", "--warehouse", wh,
                 f"DESCRIBE HISTORY delta.`{path}`"]) == 0
    history = _rows(capsys.readouterr().out)
    assert [r[0] for r in history] == ["1", "0"]
    assert [r[4] for r in history] == ["WRITE", "WRITE"]


def test_named_table_time_travel_and_the_write_guard(two_versions, capsys):
    path, wh, _ = two_versions
    name = f"verdicts_{uuid.uuid4().hex[:8]}"
    assert main(["sql", "--warehouse", wh, f"CREATE TABLE {name} USING DELTA LOCATION '{path}'"]) == 2
    assert "CREATE would change the warehouse" in capsys.readouterr().err
    assert main(["sql", "--write", "--warehouse", wh, f"CREATE TABLE {name} USING DELTA LOCATION '{path}'"]) == 0
    try:
        capsys.readouterr()
        assert main(["sql", "--warehouse", wh, f"SELECT k FROM {name} VERSION AS OF 0 ORDER BY k"]) == 0
        assert _rows(capsys.readouterr().out) == [["a"], ["b"]]
        assert main(["sql", "--warehouse", wh, f"DESCRIBE HISTORY spark_catalog.default.{name}"]) == 0
        assert [r[0] for r in _rows(capsys.readouterr().out)] == ["1", "0"]
        assert main(["sql", "--warehouse", wh, f"DROP TABLE {name}"]) == 2
    finally:
        assert main(["sql", "--write", "--warehouse", wh, f"DROP TABLE IF EXISTS {name}"]) == 0
    assert os.path.isdir(os.path.join(path, "_delta_log"))  # an external table's files outlive its name


def test_spark_lister_on_a_local_folder_agrees_with_os(spark, tmp_path):
    root = tmp_path / "flows"
    counts = {"2026-11-01": [30, 5], "2026-11-03": [12]}
    for d, ns in counts.items():
        (root / f"date={d}").mkdir(parents=True)
        for i, n in enumerate(ns):
            pq.write_table(pa.table({"x": list(range(n))}), root / f"date={d}" / f"part-{i}.parquet")
        (root / f"date={d}" / "_SUCCESS").write_bytes(b"")
    (root / "not-a-date").mkdir()
    assert storage.spark_list_dates(spark, str(root)) == sorted(counts)
    files = storage.spark_list_files(spark, str(root), [*counts, "2026-11-02"])
    assert files["2026-11-02"] == []
    for d, ns in counts.items():
        expected = {str(root / f"date={d}" / f"part-{i}.parquet") for i in range(len(ns))}
        got = {f.path: f for f in files[d]}
        assert set(got) == expected
        for p, f in got.items():
            st = os.stat(p)
            assert f.size == st.st_size and abs(f.mtime_ns - st.st_mtime_ns) < 2_000_000  # Spark keeps ms
    assert storage.spark_rows_per_date(spark, str(root), [*counts, "2026-11-02"]) == {
        "2026-11-01": 35, "2026-11-03": 12, "2026-11-02": 0}
