"""Nightly and backfill runs: --new-only, chunked commits, resume after a failure, anomaly_patterns."""

from __future__ import annotations

import os

import pyarrow.parquet as pq
import pytest
from conftest import MONTH_DAYS
from deltalake import DeltaTable

from portprint.jobs.archive.plan import ArchiveError
from portprint.jobs.score import run_score

pytestmark = pytest.mark.slow
DAYS = MONTH_DAYS


@pytest.fixture(scope="module")
def archive(month_archive):
    return month_archive


@pytest.fixture(scope="module")
def model(month_model):
    return month_model


def table(wh: str, name: str):
    return DeltaTable(os.path.join(wh, name)).to_pyarrow_table()


def quiet(*args, **kwargs):
    return run_score(*args, log=lambda m: None, **kwargs)


def test_new_only_scores_what_is_new_or_rewritten(spark, wcfg, archive, model, tmp_path):
    cfg, wh = wcfg, str(tmp_path)
    first = quiet(spark, cfg, archive, model, wh, end=DAYS[1], new_only=True)
    assert first.dates == DAYS[:2]
    second = quiet(spark, cfg, archive, model, wh, new_only=True)
    assert second.dates == DAYS[2:] and second.skipped_dates == DAYS[:2]
    assert quiet(spark, cfg, archive, model, wh, new_only=True).dates == []
    # A late file lands in an old date: that date (only) is scored again.
    late = os.path.join(archive, f"date={DAYS[0]}", "part-late.parquet")
    pq.write_table(pq.read_table(os.path.join(archive, f"date={DAYS[0]}", "part-00000.parquet")).slice(0, 50), late)
    try:
        again = quiet(spark, cfg, archive, model, wh, new_only=True)
    finally:
        os.remove(late)
    assert again.dates == [DAYS[0]] and again.flows_read == 5050


def test_chunks_give_the_same_tables_as_one_pass(spark, cfg, archive, model, tmp_path):
    one, many = str(tmp_path / "one"), str(tmp_path / "many")
    r1 = quiet(spark, cfg, archive, model, one, chunk_days=10)
    r2 = quiet(spark, cfg, archive, model, many, chunk_days=1)
    assert (r1.chunks, r2.chunks) == (1, len(DAYS))
    ids = [sorted(table(wh, "anomalies")["flow_id"].to_pylist()) for wh in (one, many)]
    assert ids[0] == ids[1]
    runs = table(many, "runs")
    assert sorted(set(runs["chunk"].to_pylist())) == list(range(len(DAYS)))
    assert set(runs["status"].to_pylist()) == {"committing", "succeeded"}
    p1 = table(one, "anomaly_patterns").sort_by("pattern").to_pylist()
    p2 = table(many, "anomaly_patterns").sort_by("pattern").to_pylist()
    assert p1 == p2


def reference_pattern(row: dict) -> str:
    """The pattern as the README defines it, restated independently of the Spark expression."""
    proto = "tcp" if row["proto"] == 6 else "udp"
    if row["detector"] == "tunnel":
        return "tunnel " + (row["escalation_group"] or "")
    if row["detector"] == "qname-model":
        labels = row["qname"].lower().rstrip(".").split(".")
        if row["qname_complete"]:
            return "qname *." + ".".join(labels[-2:])
        return f"qname cut first-label={len(labels[0])}"
    if row["header_verdict"] != "valid":
        return f"bytes {proto} {row['prefix_hex'][:8]}"
    msg = row["prefix_hex"][4:] if proto == "tcp" else row["prefix_hex"]
    return f"dns {proto} flags={msg[4:8]} qd={msg[8:12]} an={msg[12:16]}"


def test_patterns_match_the_anomalies_and_survive_reruns(spark, cfg, archive, model, tmp_path):
    wh = str(tmp_path)
    quiet(spark, cfg, archive, model, wh, chunk_days=2)
    before = table(wh, "anomaly_patterns").sort_by("pattern").to_pylist()
    quiet(spark, cfg, archive, model, wh, start=DAYS[1], end=DAYS[2], rescore=True)  # rescore the middle dates
    after = table(wh, "anomaly_patterns").sort_by("pattern").to_pylist()
    assert after == before
    expected: dict[str, dict] = {}
    for row in table(wh, "anomalies").to_pylist():
        e = expected.setdefault(reference_pattern(row), {"flows": 0, "src": set(), "dst": set(), "dates": set(),
                                                         "first": row["ts"], "versions": set()})
        e["flows"] += 1
        e["src"].add(row["src_ip"])
        e["dst"].add(row["dst_ip"])
        e["dates"].add(row["date"])
        e["first"] = min(e["first"], row["ts"])
        e["versions"].add(row["model_version"])
    assert {p["pattern"] for p in after} == set(expected)
    for p in after:
        e = expected[p["pattern"]]
        # HyperLogLog is exact at these small counts.
        assert (p["flows"], p["distinct_sources"], p["distinct_destinations"], p["days"]) == (
            e["flows"], len(e["src"]), len(e["dst"]), len(e["dates"]))
        assert p["first_seen"] == e["first"] and p["model_versions"] == sorted(e["versions"])


def test_a_failed_chunk_loses_only_itself_and_a_rerun_resumes(spark, wcfg, archive, model, tmp_path):
    cfg, wh = wcfg, str(tmp_path)
    victim = os.path.join(archive, f"date={DAYS[2]}", "part-00000.parquet")
    with open(victim, "rb") as f:
        original = f.read()
    data = bytearray(original)
    # Damage the data pages but keep the footer: only reading the rows can find it, mid-backfill.
    for i in range(200, len(data) // 2, 97):
        data[i] ^= 0xFF
    with open(victim, "wb") as f:
        f.write(bytes(data))
    try:
        with pytest.raises(ArchiveError, match=rf"date={DAYS[2]}/part-00000\.parquet"):
            quiet(spark, cfg, archive, model, wh, chunk_days=2)
    finally:
        with open(victim, "wb") as f:
            f.write(original)
    runs = table(wh, "runs").to_pylist()
    assert {r["date"] for r in runs if r["status"] == "succeeded"} == set(DAYS[:2])
    assert {r["date"] for r in runs if r["status"] == "failed"} == set(DAYS[2:])
    assert set(table(wh, "anomalies")["date"].to_pylist()) == set(DAYS[:2])
    resumed = quiet(spark, cfg, archive, model, wh, chunk_days=2, new_only=True)
    assert resumed.dates == DAYS[2:]
    assert set(table(wh, "anomalies")["date"].to_pylist()) == set(DAYS)


def test_patterns_whose_flows_are_rescored_away_are_deleted(spark, writer, tmp_path):
    import datetime as dt

    import pyarrow as pa

    from portprint.jobs.warehouse.patterns import update_patterns
    from portprint.jobs.warehouse.tables import ANOMALIES, spark_schema

    names = (str(tmp_path / "days"), str(tmp_path / "patterns"))
    t0 = dt.datetime(2026, 11, 1, 12, tzinfo=dt.timezone.utc)

    def chunk(rows: list[tuple[str, str, str]]) -> int:
        """(flow_id, date, first four prefix bytes as hex) raw-byte anomalies, folded into the tables."""
        table = pa.Table.from_pylist([
            {"flow_id": f, "date": d, "ts": t0, "proto": 17, "prefix_hex": h + "00" * 8, "detector": "header-rule",
             "header_verdict": "invalid", "src_ip": "10.0.0.1", "dst_ip": "10.0.0.53", "model_version": "m"}
            for f, d, h in rows], schema=ANOMALIES)
        return update_patterns(spark, spark.createDataFrame(table, spark_schema(ANOMALIES)),
                               ["2026-11-01", "2026-11-02"], names, writer)

    def flows() -> dict[str, int]:
        t = DeltaTable(names[1]).to_pyarrow_table()
        return dict(zip(t["pattern"].to_pylist(), t["flows"].to_pylist(), strict=True))

    ssh, http = "bytes udp 5353482d", "bytes udp 47455420"
    assert chunk([("a", "2026-11-01", "5353482d"), ("b", "2026-11-02", "5353482d"),
                  ("c", "2026-11-01", "47455420")]) == 2
    assert flows() == {ssh: 2, http: 1}
    # Rescored: the GET flow is gone and one SSH flow is left. Two touched patterns, one deleted.
    assert chunk([("a", "2026-11-01", "5353482d")]) == 2
    assert flows() == {ssh: 1}
    # Rescored to nothing: the last pattern goes too, and a rerun of that changes nothing.
    assert chunk([]) == 1 and flows() == {}
    assert chunk([]) == 0 and flows() == {}
    days = DeltaTable(names[0]).to_pyarrow_table()
    assert days.num_rows == 0
