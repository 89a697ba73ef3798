import os
from deltalake import DeltaTable
from portprint.jobs.score import run_score


def test_smoke(spark, wcfg, small_archive, quick_model, tmp_path):
    wh = str(tmp_path / "wh")
    r = run_score(spark, wcfg, small_archive, quick_model, wh, log=print)
    print(r)
    t = DeltaTable(os.path.join(wh, "anomalies")).to_pyarrow_table()
    runs = DeltaTable(os.path.join(wh, "runs")).to_pyarrow_table()
    print(t.num_rows, runs.column("writer").to_pylist(), runs.column("archive_snapshot").to_pylist())
    r2 = run_score(spark, wcfg, small_archive, quick_model, wh, new_only=True, log=print)
    assert r2.dates == []
