"""The same verdicts however the work is sliced: Spark tasks of 1,000 rows or the default, one file per date or
many small shuffled ones, chunks of one date or of seven. Every run must write identical `anomalies` (tunnel
escalation included: its evidence is merged per date and name group, not per task) and the same per-date counts in
`runs`."""

from __future__ import annotations

import dataclasses
import os

import numpy as np
import pyarrow.parquet as pq
import pytest
from deltalake import DeltaTable
from model_fixtures import make_artifact
from nightly_fixtures import DAYS, table_rows

from portprint.jobs.sample import write_sample
from portprint.jobs.score import run_score

pytestmark = pytest.mark.slow
COUNTS = ("flows_read", "flows_scored", "flows_skipped", "anomalies", "model_flagged", "rule_flagged",
          "qname_flagged", "tunnel_flagged", "groups_escalated")


def split(src: str, dst: str, parts: int, seed: int) -> None:
    """The archive's rows, shuffled, in ``parts`` files per date with row groups of 250 rows."""
    rng = np.random.default_rng(seed)
    for d in DAYS:
        t = pq.read_table(os.path.join(src, f"date={d}", "part-00000.parquet"))
        t = t.take(rng.permutation(t.num_rows))
        os.makedirs(os.path.join(dst, f"date={d}"))
        step = -(-t.num_rows // parts)
        for i in range(parts):
            pq.write_table(t.slice(i * step, step), os.path.join(dst, f"date={d}", f"part-{i:05d}.parquet"),
                           row_group_size=250)


def per_date_counts(wh: str) -> dict[str, tuple]:
    rows = DeltaTable(os.path.join(wh, "runs")).to_pyarrow_table().to_pylist()
    return {r["date"]: tuple(r[c] for c in COUNTS) for r in rows if r["status"] == "succeeded"}


def test_every_slicing_gives_identical_anomalies(spark, cfg, tmp_path):
    one = str(tmp_path / "one")
    write_sample(one, days=len(DAYS), flows_per_day=3000, seed=31, start=DAYS[0])
    many = str(tmp_path / "many")
    split(one, many, parts=7, seed=5)
    # Header model silent: what fires beyond the rule is the per-name model and tunnel escalation, whose
    # evidence per name group is what per-task counting would get wrong.
    model = str(make_artifact(seed=0, threshold=10.0).save(str(tmp_path / "model")))
    small = dataclasses.replace(cfg, spark=dataclasses.replace(cfg.spark, rows_per_task=1000))
    runs = {
        "one file, default tasks, 7-day chunks": (cfg, one, 7),
        "one file, 1,000-row tasks, 1-day chunks": (small, one, 1),
        "many files, 1,000-row tasks, 1-day chunks": (small, many, 1),
        "many files, default tasks, 7-day chunks": (cfg, many, 7),
    }
    results = {}
    for name, (c, archive, days) in runs.items():
        wh = str(tmp_path / f"wh-{len(results)}")
        run_score(spark, c, archive, model, wh, chunk_days=days, log=lambda m: None)
        results[name] = (table_rows(wh, "anomalies"), per_date_counts(wh))
    reference, counts = results.pop("one file, default tasks, 7-day chunks")
    detectors = {r["detector"] for r in reference}
    # The check means something only if tunnel escalation fired, and not on every group.
    assert "tunnel" in detectors, detectors
    assert sum(c[COUNTS.index("groups_escalated")] for c in counts.values()) > 0
    assert sum(c[COUNTS.index("anomalies")] for c in counts.values()) < sum(c[1] for c in counts.values())
    # The networks' float losses move by ~1e-6 relative with how rows are batched (float32 matrix work); every
    # verdict, and every other column, must be identical.
    floats = ("loss", "score", "qname_loss", "qname_score")

    def exact(rows):
        return sorted(({k: v for k, v in r.items() if k not in floats} for r in rows), key=repr)

    def approx(rows):
        return {r["flow_id"] + r["detector"]: [r[f] for f in floats] for r in rows}

    for name, (rows, cnt) in results.items():
        assert cnt == counts, name
        assert len(rows) == len(reference) and exact(rows) == exact(reference), name
        got, want = approx(rows), approx(reference)
        assert got.keys() == want.keys(), name
        for k, v in want.items():
            assert got[k] == pytest.approx(v, rel=1e-4, nan_ok=True), (name, k)
