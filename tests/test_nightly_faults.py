"""A nightly run killed at each step of its commit, then rerun; and two runs on one warehouse at once. Real child
processes (`portprint score`), real `kill -9`, real Delta tables, compared with clean runs row for row."""

from __future__ import annotations

import os
import re
import shutil
import signal
import time

import pytest
from deltalake import DeltaTable
from nightly_fixtures import (
    DAYS,
    conf_file,
    kill_at,
    latest_success,
    portprint,
    same_tables,
    staging_left,
    table_rows,
    wait_for,
    write_models,
)

from portprint.jobs.sample import write_sample
from portprint.jobs.score import run_score

pytestmark = pytest.mark.slow
D1, D2 = DAYS


def quiet(*args, **kwargs):
    return run_score(*args, log=lambda m: None, **kwargs)


@pytest.fixture(scope="module")
def setup(spark, cfg, tmp_path_factory):
    """An archive of two dates, two models, a warehouse scored by the first (``base``) and the clean result of
    rescoring the second date with the other model (``reference``)."""
    root = tmp_path_factory.mktemp("faults")
    archive = str(root / "flows")
    write_sample(archive, days=len(DAYS), flows_per_day=1500, seed=17, start=D1)
    quiet_model, loud_model = write_models(root)
    base = str(root / "base")
    quiet(spark, cfg, archive, quiet_model, base, chunk_days=1)
    reference = str(root / "reference")
    shutil.copytree(base, reference)
    quiet(spark, cfg, archive, loud_model, reference, start=D2, end=D2, rescore=True)
    assert table_rows(reference, "anomalies") != table_rows(base, "anomalies")  # the rescore changes D2's rows
    return {"archive": archive, "quiet": quiet_model, "loud": loud_model, "base": base, "reference": reference,
            "conf": conf_file(root / "child.yml")}


POINTS = ["score:before-anomalies", "score:after-anomalies", "score:after-patterns", "score:before-unstage"]


@pytest.mark.parametrize("point", POINTS)
def test_a_rescore_killed_at_each_step_is_repaired_by_the_next_nightly_run(spark, cfg, setup, point, tmp_path):
    wh = str(tmp_path / "wh")
    shutil.copytree(setup["base"], wh)
    args = ["score", "--conf", setup["conf"], "--flows", setup["archive"], "--model", setup["loud"], "--warehouse", wh,
            "--rescore", "--start", D2, "--end", D2]
    kill_at(args, point, tmp_path)

    runs = DeltaTable(os.path.join(wh, "runs")).to_pyarrow_table().to_pylist()
    killed = {r["run_id"] for r in runs if r["date"] == D2 and r["reason"] == "rescore"}
    assert len(killed) == 1
    mine = [r for r in runs if r["run_id"] in killed]
    # The runs log never claims more than happened: a `committing` row, and a closing row only if all committed.
    closed = [r for r in mine if r["status"] != "committing"]
    assert [r["status"] for r in mine if r["status"] == "committing"] == ["committing"]
    if point == "score:before-unstage":
        assert [(r["status"], r["committed"]) for r in closed] == [
            ("succeeded", ["anomalies", "anomaly_pattern_days", "anomaly_patterns", "escalation_history"])]
    else:
        assert closed == []
    # What the tables hold at the kill: the old rows, or the new anomalies beside the old patterns.
    new_anomalies = point != "score:before-anomalies"
    assert table_rows(wh, "anomalies") == table_rows(setup["reference" if new_anomalies else "base"], "anomalies")
    if point == "score:after-anomalies":
        assert table_rows(wh, "anomaly_patterns") == table_rows(setup["base"], "anomaly_patterns")
    (run_id,) = killed
    assert staging_left(wh) == [run_id, run_id + ".alive"]  # a kill -9 leaves the staging (raw prefixes)

    # The next nightly run: the half-finished date is not done; the killed run's staging goes.
    again = quiet(spark, cfg, setup["archive"], setup["loud"], wh, new_only=True)
    assert again.dates == ([] if point == "score:before-unstage" else [D2])
    assert again.stale_staging == [os.path.join(wh, "_staging", run_id)]
    assert staging_left(wh) == []
    same_tables(wh, setup["reference"])
    if again.dates:
        assert {r["reason"] for r in DeltaTable(os.path.join(wh, "runs")).to_pyarrow_table().to_pylist()
                if r["run_id"] == again.run_id} == {"half-finished"}


def _run_id(log) -> str | None:
    m = re.search(r"portprint score: run (\S+):", log.read_text()) if log.exists() else None
    return m.group(1) if m else None


def _wait_text(log, text: str, child, timeout: float = 300) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if log.exists() and text in log.read_text():
            return True
        if child.poll() is not None:
            return log.exists() and text in log.read_text()
        time.sleep(0.1)
    return False


def test_two_runs_on_one_warehouse_lose_nothing_and_a_third_fails_clearly(spark, cfg, setup, tmp_path):
    """A commits D1 and is paused inside its commit, between reading the pattern days and writing them. B scores
    D1..D2 meanwhile (and one of its Python workers is killed once: Spark's retry must give the same rows); C
    scores D2 with a 1 s wait. Without a lock B's patterns would be overwritten by A's stale aggregate."""
    wh = str(tmp_path / "wh")
    pause = tmp_path / "a-paused"
    a_log, b_log, c_log = tmp_path / "a.log", tmp_path / "b.log", tmp_path / "c.log"
    common = ["--flows", setup["archive"], "--model", setup["quiet"], "--warehouse", wh]
    a = portprint(["score", "--conf", setup["conf"], *common, "--start", D1, "--end", D1],
                  {"PORTPRINT_PAUSE": "patterns:aggregated", "PORTPRINT_PAUSE_READY": str(pause)}, a_log)
    b = c = None
    try:
        assert wait_for(pause, a), a_log.read_text()[-2000:]
        a_run = _run_id(a_log)
        marker = tmp_path / "worker-killed"
        retry = conf_file(tmp_path / "retry.yml", master="local[2,2]")
        b = portprint(["score", "--conf", retry, *common, "--new-only"],
                      {"PORTPRINT_KILL_WORKER_ONCE": str(marker)}, b_log)
        c = portprint(["score", "--conf", conf_file(tmp_path / "short.yml", lock_wait_s=1), *common, "--start", D2,
                       "--end", D2], log=c_log)
        assert c.wait(timeout=600) == 2
        said = c_log.read_text()
        assert f"is being written by run {a_run} (pid {a.pid}" in said and "committed nothing" in said, said[-2000:]
        assert _wait_text(b_log, f"waiting for run {a_run}", b), b_log.read_text()[-2000:]
        # B started while A was paused: A's staging is a live run's and stayed.
        assert os.path.isdir(os.path.join(wh, "_staging", a_run))
        pause.unlink()  # A goes on
        assert a.wait(timeout=600) == 0, a_log.read_text()[-2000:]
        assert b.wait(timeout=600) == 0, b_log.read_text()[-2000:]
    finally:
        for child in (a, b, c):
            if child is not None and child.poll() is None:
                os.kill(child.pid, signal.SIGKILL)
                child.wait()
    assert marker.exists()  # a Python worker of B was killed, and B still succeeded
    reference = str(tmp_path / "reference")
    quiet(spark, cfg, setup["archive"], setup["quiet"], reference)
    same_tables(wh, reference)
    assert table_rows(wh, "anomaly_patterns") and staging_left(wh) == []
    runs = DeltaTable(os.path.join(wh, "runs")).to_pyarrow_table().to_pylist()
    c_run = _run_id(c_log)
    assert c_run and not [r for r in runs if r["run_id"] == c_run]  # C wrote nothing
    assert set(latest_success(wh)) == set(DAYS)
