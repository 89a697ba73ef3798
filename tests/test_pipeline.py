"""End to end on real Spark and real Delta: sample archive -> train -> score -> read back."""

from __future__ import annotations

import os

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from deltalake import DeltaTable

from portprint.jobs.sample import NON_DNS_LABELS, TUNNEL_LABELS, write_sample
from portprint.jobs.score import run_score
from portprint.jobs.train import run_train

pytestmark = pytest.mark.slow
DAYS = ["2026-11-01", "2026-11-02", "2026-11-03"]


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    out = tmp_path_factory.mktemp("flows") / "archive"
    write_sample(str(out), days=3, flows_per_day=12000, seed=21, start=DAYS[0])
    return str(out)


@pytest.fixture(scope="module")
def labels(archive) -> dict[str, str]:
    t = pq.read_table(os.path.join(archive, "_labels.parquet"))
    return dict(zip(t["flow_id"].to_pylist(), t["label"].to_pylist(), strict=True))


@pytest.fixture(scope="module")
def model(spark, cfg, archive, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("model"))
    run_train(spark, cfg, archive, out, end=DAYS[1], log=lambda m: None)
    return out


def read_anomalies(warehouse: str) -> pa.Table:
    return DeltaTable(os.path.join(warehouse, "anomalies")).to_pyarrow_table()


def test_score_flags_the_planted_protocols_and_little_dns(spark, wcfg, writer, archive, labels, model, tmp_path):
    report = run_score(spark, wcfg, archive, model, str(tmp_path), log=lambda m: None)
    assert report.writer == writer
    assert set(DeltaTable(os.path.join(str(tmp_path), "runs")).to_pyarrow_table()["writer"].to_pylist()) == {writer}
    got = read_anomalies(str(tmp_path))
    flagged = set(got["flow_id"].to_pylist())
    assert got.num_rows == len(flagged) == report.anomalies
    planted = {f for f, lab in labels.items() if lab in NON_DNS_LABELS}
    assert planted and planted <= flagged, f"missed {len(planted - flagged)} of {len(planted)} non-DNS flows"
    dns = [f for f, lab in labels.items() if lab == "dns"]
    fp = sum(f in flagged for f in dns)
    # Calibrated at 1e-4 on a few thousand held-out flows; allow 10x for the small sample and the
    # third date, which the model never saw.
    assert fp <= max(3, 10 * 1e-4 * len(dns)), f"{fp} of {len(dns)} genuine DNS flows flagged"
    assert not flagged & {f for f, lab in labels.items() if lab in ("other-port", "empty")}
    assert report.flows_read == len(labels)
    assert report.flows_skipped == sum(lab == "empty" for lab in labels.values())
    assert sorted(set(got["date"].to_pylist())) == DAYS
    # The planted tunnels are valid DNS: only the question model can see them, and it must.
    tunnels = {f for f, lab in labels.items() if lab in TUNNEL_LABELS}
    hits = got.filter(pc.is_in(got["flow_id"], pa.array(sorted(tunnels))))
    assert len(tunnels) >= 20 and hits.num_rows > 0, f"{hits.num_rows} of {len(tunnels)} tunnels"
    assert set(hits["detector"].to_pylist()) <= {"qname-model", "tunnel"}
    assert all(q and q.isascii() and q.isprintable() for q in hits["qname"].to_pylist())
    alone = hits.filter(pc.equal(hits["detector"], "qname-model"))
    assert all(s > 1 for s in alone["qname_score"].to_pylist())
    # The sample runs each day's tunnel on one infected host: tunnel escalation names that host and no other,
    # and flags nothing the sample calls genuine DNS.
    by_pair = got.filter(pc.equal(got["detector"], "tunnel"))
    assert by_pair.num_rows > 0
    assert {labels[f] for f in by_pair["flow_id"].to_pylist()} <= set(TUNNEL_LABELS)
    hosts = {(d, s) for d, s in zip(by_pair["date"].to_pylist(), by_pair["src_ip"].to_pylist(), strict=True)}
    assert len(hosts) <= 2 * len(DAYS)  # the infected host's IPv4 and, rarely, IPv6 address


def test_rerun_replaces_rows_and_never_duplicates(spark, wcfg, archive, model, tmp_path):
    wh = str(tmp_path)
    run_score(spark, wcfg, archive, model, wh, log=lambda m: None)
    first = read_anomalies(wh)
    run_score(spark, wcfg, archive, model, wh, start=DAYS[0], end=DAYS[-1], rescore=True, log=lambda m: None)
    second = read_anomalies(wh)
    assert second.num_rows == first.num_rows
    assert sorted(second["flow_id"].to_pylist()) == sorted(first["flow_id"].to_pylist())
    assert len(set(second["run_id"].to_pylist())) == 1  # every row comes from the latest run
    runs = DeltaTable(os.path.join(wh, "runs")).to_pyarrow_table()
    # The runs log keeps both runs: each date's `committing` row, then its `succeeded` row.
    assert sorted(runs["status"].to_pylist()) == ["committing"] * 2 * len(DAYS) + ["succeeded"] * 2 * len(DAYS)


def test_a_second_date_appends_without_touching_the_first(spark, cfg, archive, model, tmp_path):
    wh = str(tmp_path)
    run_score(spark, cfg, archive, model, wh, start=DAYS[0], end=DAYS[0], log=lambda m: None)
    day1 = read_anomalies(wh)
    run_score(spark, cfg, archive, model, wh, start=DAYS[1], end=DAYS[1], log=lambda m: None)
    both = read_anomalies(wh)
    assert set(both["date"].to_pylist()) == {DAYS[0], DAYS[1]}
    again = both.filter(pc.equal(both["date"], DAYS[0]))
    assert sorted(again["flow_id"].to_pylist()) == sorted(day1["flow_id"].to_pylist())
    assert set(again["run_id"].to_pylist()) == set(day1["run_id"].to_pylist())


def test_tables_are_readable_by_deltalake_and_duckdb(spark, cfg, archive, model, tmp_path):
    wh = str(tmp_path)
    report = run_score(spark, cfg, archive, model, wh, log=lambda m: None)
    con = duckdb.connect()
    for name in ("anomalies", "runs"):
        dataset = DeltaTable(os.path.join(wh, name)).to_pyarrow_dataset()
        con.register(name, dataset)
    n = con.sql("SELECT count(*) FROM anomalies WHERE score > 1 OR qname_score > 1 "
                "OR detector IN ('header-rule', 'tunnel')").fetchall()[0][0]
    assert n == report.anomalies
    per_date = con.sql("SELECT date, anomalies FROM runs WHERE status = 'succeeded' ORDER BY date").fetchall()
    counted = con.sql("SELECT date, count(*) FROM anomalies GROUP BY date ORDER BY date").fetchall()
    assert per_date == counted
    assert DeltaTable(os.path.join(wh, "anomalies")).metadata().partition_columns == ["date"]


def test_spark_sql_reads_the_tables_back(spark, cfg, archive, model, tmp_path):
    from portprint.jobs.sql import register_tables

    wh = str(tmp_path)
    run_score(spark, cfg, archive, model, wh, log=lambda m: None)
    register_tables(spark, cfg, wh)
    via_spark = spark.sql("SELECT flow_id FROM anomalies").toArrow()
    assert sorted(via_spark["flow_id"].to_pylist()) == sorted(read_anomalies(wh)["flow_id"].to_pylist())
    explained = spark.sql("SELECT * FROM anomalies WHERE detector = 'header-model' OR score > 1").toArrow()
    assert explained.num_rows > 0
    assert all(t is not None and all(c.isprintable() for c in t) for t in explained["prefix_text"].to_pylist())


def test_each_flow_crosses_to_python_once_on_the_spark_path(spark, cfg, archive, model):
    from portprint.jobs.archive import open_source
    from portprint.jobs.archive.spark import SparkSource
    from portprint.udfs.detect import detect_tables
    from portprint.udfs.schemas import OUT
    from portprint.udfs.scoring import load_model

    source = open_source(spark, cfg, archive)
    out = SparkSource(spark, cfg, source.plan).run(detect_tables(load_model(model), cfg, "r", 0), OUT)
    physical = out._jdf.queryExecution().executedPlan().toString()
    assert physical.count("MapInArrow") == 1, physical
    assert "ArrowEvalPython" not in physical and "BatchEvalPython" not in physical, physical


def test_row_group_reader_and_spark_reader_give_the_same_tables(spark, cfg, archive, model, tmp_path):
    """Local archives are read by the Python workers row group by row group; Spark's own reader is the
    fallback (remote URIs, hex prefixes). Both must give the same anomalies and the same counts."""
    from dataclasses import replace

    spark_reader = replace(cfg, spark=replace(cfg.spark, python_reader=False))
    a = run_score(spark, cfg, archive, model, str(tmp_path / "rows"), log=lambda m: None)
    b = run_score(spark, spark_reader, archive, model, str(tmp_path / "spark"), log=lambda m: None)
    assert (a.flows_read, a.flows_scored, a.flows_skipped, a.anomalies) == (
        b.flows_read, b.flows_scored, b.flows_skipped, b.anomalies)
    # Losses may differ in the last bits between batchings (float64 matrix products); all else is equal.
    floats = ["loss", "score", "qname_loss", "qname_score"]
    got, want = (read_anomalies(str(tmp_path / w)).drop(["run_id", "scored_at"]).sort_by("flow_id")
                 for w in ("rows", "spark"))
    assert got.schema == want.schema
    assert got.drop(floats).to_pylist() == want.drop(floats).to_pylist()
    for name in floats:
        x, y = (np.nan_to_num(t[name].to_numpy(zero_copy_only=False).astype(float), nan=-1) for t in (got, want))
        np.testing.assert_allclose(x, y, rtol=1e-12)
    runs = [DeltaTable(str(tmp_path / w / "runs")).to_pyarrow_table().sort_by("date") for w in ("rows", "spark")]
    keep = ["date", "flows_read", "flows_scored", "flows_skipped", "anomalies", "model_flagged", "rule_flagged",
            "qname_flagged"]
    assert runs[0].select(keep).to_pylist() == runs[1].select(keep).to_pylist()


def test_row_groups_are_packed_into_tasks_in_order_each_once(tmp_path):
    from portprint.jobs.archive.plan import ArchivePlan
    from portprint.jobs.archive.rowgroups import tasks as pack

    files: dict[str, list[str]] = {}
    for d, sizes in {"2026-11-01": [1000, 250], "2026-11-02": [10]}.items():  # rows per file
        for k, n in enumerate(sizes):
            path = str(tmp_path / f"{d}-{k}.parquet")
            pq.write_table(pa.table({"x": list(range(n))}), path, row_group_size=100 + 30 * k)
            files.setdefault(d, []).append(path)
    meta = {p: pq.ParquetFile(p).metadata for ps in files.values() for p in ps}
    groups = {p: tuple(m.row_group(i).num_rows for i in range(m.num_row_groups)) for p, m in meta.items()}
    plan = ArchivePlan(str(tmp_path), list(files), files, [], None, groups)
    tasks = pack(plan, 300)
    # Every row group pyarrow reports, in date and file order, exactly once.
    assert [item for task in tasks for item in task] == [(p, rg, d) for d, ps in files.items() for p in ps
                                                         for rg in range(len(groups[p]))]
    rows = [sum(groups[p][rg] for p, rg, _ in task) for task in tasks]
    assert max(rows) <= 300 and sum(rows) == 1260
    # Greedy: no task could have taken the next task's first row group.
    assert all(rows[i] + groups[tasks[i + 1][0][0]][tasks[i + 1][0][1]] > 300 for i in range(len(tasks) - 1))


def test_names_asked_on_both_training_days_are_known_and_never_judged(archive, labels, model):
    import collections

    import pyarrow.dataset as pads

    from portprint.models.artifact import ModelArtifact
    from portprint.udfs.qname import render_qname
    from portprint.udfs.scoring import Scorer

    art = ModelArtifact.load(model)
    assert art.qname_known and art.meta.qname["known_names"] == len(art.qname_known) // 8
    flows = pads.dataset(archive, format="parquet", partitioning="hive").to_table()
    prefix, proto = flows["orig_payload_prefix"].to_pylist(), flows["proto"].to_pylist()
    # Reference, from the rendered names: the (name, type) pairs of genuine DNS seen on both training days.
    days = collections.defaultdict(set)
    shown = [render_qname(p, k) for p, k in zip(prefix, proto, strict=True)]
    for f, d, (text, _, qtype) in zip(flows["flow_id"].to_pylist(), flows["date"].to_pylist(), shown, strict=True):
        if text and labels[f] == "dns" and d in DAYS[:2]:
            days[(text.lower(), qtype)].add(d)
    recurring = {k for k, v in days.items() if len(v) == 2}
    v = Scorer(art).score(flows["orig_payload_prefix"], flows["proto"], flows["orig_bytes"])
    dns_rows = [i for i, f in enumerate(flows["flow_id"].to_pylist()) if labels[f] == "dns" and shown[i][0]]
    known = [i for i in dns_rows if (shown[i][0].lower(), shown[i][2]) in recurring]
    assert len(known) > 0.5 * len(dns_rows)  # a site's DNS is mostly names it asks every day
    assert all(np.isnan(v.qloss[i]) for i in known)
    # Tunnel names never recur, so none of them is known: the question model judges every one.
    tunnel = [i for i, f in enumerate(flows["flow_id"].to_pylist()) if labels[f] in TUNNEL_LABELS]
    assert tunnel and not np.isnan(v.qloss[tunnel]).any()


def test_escalated_groups_judged_from_candidates_or_read_again_agree(spark, cfg, archive, labels, model, tmp_path):
    """An escalated group is judged from the candidate flows the first pass kept, or, where some slice did
    not keep them, from its flows read again (by the workers, or by Spark's reader): the same flags."""
    from dataclasses import replace

    from pyspark.sql import functions as F

    from portprint.jobs.archive import open_source
    from portprint.jobs.archive.spark import SparkSource
    from portprint.jobs.engine import pipeline
    from portprint.jobs.warehouse import Stage
    from portprint.udfs.schemas import ANOMALY, CANDIDATE, KEPT, KIND, OUT, spark_schema
    from portprint.udfs.scoring import load_model

    art = load_model(model)
    source = open_source(spark, cfg, archive)
    kept = Stage(spark, str(tmp_path / "kept"))
    pipeline.detect(source, art, cfg, "r", 0, kept)
    # The same first pass as if no slice had kept its candidates: every escalated group must be read again.
    first = spark.read.schema(spark_schema(OUT)).parquet(kept.path)
    spark_reader = SparkSource(spark, replace(cfg, spark=replace(cfg.spark, python_reader=False)), source.plan)
    got = []
    for name, src in (("kept", source), ("rows", source), ("spark", spark_reader)):
        stage = kept
        if name != "kept":
            stage = Stage(spark, str(tmp_path / name))
            stage.write(first.where(F.col(KIND) != CANDIDATE).withColumn(KEPT, F.lit(False)).select(*OUT.names))
        before = set(stage.table((ANOMALY,), ["flow_id"])["flow_id"].to_pylist())
        assert pipeline.escalate(src, art, cfg, "r", 0, stage).escalated.num_rows > 0
        got.append(sorted(set(stage.table((ANOMALY,), ["flow_id"])["flow_id"].to_pylist()) - before))
    assert got[0] and got[0] == got[1] == got[2]
    assert {labels[f] for f in got[0]} <= set(TUNNEL_LABELS)


@pytest.mark.xfail(strict=True, reason="known gap, docs/detection.md: the sample's tunnel groups hold fewer names "
                                       "than the shape rule needs, and base64url labels split into short tokens")
def test_the_sample_tunnels_are_caught_at_the_recall_goal(spark, cfg, archive, labels, model, tmp_path):
    """The tunnel recall goal (90%) on the sample's planted tunnels. Strict: when the detector meets it, this
    test fails as XPASS and the mark goes."""
    run_score(spark, cfg, archive, model, str(tmp_path), log=lambda m: None)
    flagged = set(read_anomalies(str(tmp_path))["flow_id"].to_pylist())
    tunnels = {f for f, lab in labels.items() if lab in TUNNEL_LABELS}
    assert len(flagged & tunnels) >= 0.9 * len(tunnels), f"{len(flagged & tunnels)} of {len(tunnels)} tunnels"
