"""People decide, end to end on real `run_score` runs of a sample archive: verdicts survive a rescore, a chunked
backfill and a new model; suppressions apply retroactively and come back when removed or expired; hand-written
rows are listed, not fatal; the export goes out once; `train --benign-from` stops a benign pattern firing."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import os
import re
import shutil
from pathlib import Path

import pyarrow as pa
import pytest
from conftest import MONTH_DAYS
from deltalake import DeltaTable, write_deltalake

from portprint.jobs import suppress as suppressions
from portprint.jobs import triage
from portprint.jobs.cli import main
from portprint.jobs.export import run_export
from portprint.jobs.score import run_score
from portprint.jobs.sql import register_tables
from portprint.jobs.train import run_train
from portprint.jobs.warehouse.tables import ANOMALIES, SUPPRESSIONS, VERDICTS
from portprint.udfs.suppress import pattern_keys

pytestmark = pytest.mark.slow
DAYS = MONTH_DAYS
UTC = dt.timezone.utc


def quiet(*args, **kwargs):
    return run_score(*args, log=lambda m: None, **kwargs)


def rows(wh: str, name: str) -> list[dict]:
    path = os.path.join(wh, name)
    return DeltaTable(path).to_pyarrow_table().to_pylist() if os.path.isdir(path) else []


def reference_pattern(row: dict) -> str:
    """anomaly_patterns.pattern as the README defines it, restated (as in test_backfill)."""
    proto = "tcp" if row["proto"] == 6 else "udp"
    if row["detector"] in ("qname-model", "tunnel"):
        labels = row["qname"].lower().rstrip(".").split(".")
        if row["qname_complete"]:
            return "qname *." + ".".join(labels[-2:])
        return f"qname cut first-label={len(labels[0])}"
    if row["header_verdict"] != "valid":
        return f"bytes {proto} {row['prefix_hex'][:8]}"
    msg = row["prefix_hex"][4:] if proto == "tcp" else row["prefix_hex"]
    return f"dns {proto} flags={msg[4:8]} qd={msg[8:12]} an={msg[12:16]}"


def reference_status(anomalies: list[dict], verdicts: list[dict]) -> dict[str, str]:
    """flow_id -> status with no rules: the latest applicable verdict by time (flow > pair > pattern on a tie)."""
    spec = {"flow": 3, "pair": 2, "pattern": 1}
    out = {}
    for a in anomalies:
        hits = [v for v in verdicts if (v["target_kind"] == "flow" and v["flow_id"] == a["flow_id"])
                or (v["target_kind"] == "pattern" and v["pattern"] == reference_pattern(a))
                or (v["target_kind"] == "pair" and (v["src_ip"], v["dst_ip"], v["date"]) ==
                    (a["src_ip"], a["dst_ip"], a["date"]))]
        best = max(hits, key=lambda v: (v["recorded_at"], spec[v["target_kind"]], v["verdict_id"]), default=None)
        out[a["flow_id"]] = best["status"] if best else "new"
    return out


def view_status(spark, cfg, wh: str, at: dt.datetime | None = None) -> dict[str, tuple[str, str | None]]:
    register_tables(spark, cfg, wh, at)
    return {r["flow_id"]: (r["status"], r["suppressed_by"]) for r in
            spark.sql("SELECT flow_id, status, suppressed_by FROM anomalies_triaged").collect()}


@pytest.fixture(scope="module")
def archive(month_archive):
    return month_archive


@pytest.fixture(scope="module")
def model(month_model):
    return month_model


@pytest.fixture(scope="module")
def scored(spark, cfg, archive, model, tmp_path_factory):
    """A warehouse scored in one chunk, with three verdicts: a flow, a pattern and a pair."""
    wh = str(tmp_path_factory.mktemp("people-wh"))
    quiet(spark, cfg, archive, model, wh, chunk_days=10)
    anomalies = rows(wh, "anomalies")
    by_det = {}
    for a in sorted(anomalies, key=lambda a: a["flow_id"]):
        by_det.setdefault(a["detector"], []).append(a)
    assert {"header-rule", "header-model", "tunnel"} <= set(by_det)
    t0 = dt.datetime(2026, 11, 1, tzinfo=UTC)
    pair = by_det["tunnel"][0]
    model_pattern = reference_pattern(by_det["header-model"][0])
    flow = next(a for a in by_det["tunnel"] if (a["src_ip"], a["dst_ip"]) != (pair["src_ip"], pair["dst_ip"])
                or a["date"] != pair["date"])
    triage.record_verdict(spark, cfg, wh, status="benign", by="ana", pattern=model_pattern, note="resolver",
                          at=t0)
    triage.record_verdict(spark, cfg, wh, status="duplicate", by="bob", pair=f"{pair['src_ip']},{pair['dst_ip']}",
                          date=pair["date"], at=t0 + dt.timedelta(hours=1))
    # A later flow verdict on a flow of that same pair: the latest wins for that flow only.
    same_pair = next(a for a in by_det["tunnel"] if (a["src_ip"], a["dst_ip"], a["date"]) ==
                     (pair["src_ip"], pair["dst_ip"], pair["date"]) and a["flow_id"] != pair["flow_id"])
    triage.record_verdict(spark, cfg, wh, status="confirmed", by="carl", flow_id=same_pair["flow_id"],
                          at=t0 + dt.timedelta(hours=2))
    triage.record_verdict(spark, cfg, wh, status="confirmed", by="carl", flow_id=flow["flow_id"],
                          at=t0 + dt.timedelta(hours=3))
    return {"wh": wh, "pattern": model_pattern, "pair": pair, "flow": flow, "confirmed_in_pair": same_pair}


def test_pattern_keys_without_spark_match_pattern_of(spark, scored):
    from portprint.jobs.warehouse.patterns import pattern_of

    wh = scored["wh"]
    t = DeltaTable(os.path.join(wh, "anomalies")).to_pyarrow_table()
    edge = pa.Table.from_pylist([dict.fromkeys(ANOMALIES.names) | r for r in (
        {"flow_id": "e1", "detector": "qname-model", "qname": "A.B.Example.NET.", "qname_complete": True, "proto": 17},
        {"flow_id": "e2", "detector": "tunnel", "qname": "abc.de", "qname_complete": False, "proto": 6},
        {"flow_id": "e3", "detector": "tunnel", "qname": "solo.", "qname_complete": True, "proto": 17},
        {"flow_id": "e4", "detector": "header-model", "header_verdict": "valid", "proto": 6,
         "prefix_hex": "001c12340100000100000000"},
        {"flow_id": "e5", "detector": "header-rule", "header_verdict": "invalid", "proto": 6, "prefix_hex": "5353"},
    )], schema=ANOMALIES)
    t = pa.concat_tables([t.select(ANOMALIES.names).cast(ANOMALIES), edge])
    want = dict(zip(t["flow_id"].to_pylist(), pattern_keys(t).to_pylist(), strict=True))
    got = {r["flow_id"]: r["p"] for r in spark.createDataFrame(t.to_pandas()).select(
        "flow_id", pattern_of().alias("p")).collect()}
    assert got == want
    assert {r["pattern"] for r in rows(wh, "anomaly_patterns")} == set(pattern_keys(
        DeltaTable(os.path.join(wh, "anomalies")).to_pyarrow_table()).to_pylist())


def test_status_is_the_latest_verdict_on_flow_pattern_or_pair(spark, cfg, scored):
    wh = scored["wh"]
    got = view_status(spark, cfg, wh)
    want = reference_status(rows(wh, "anomalies"), rows(wh, "verdicts"))
    assert {k: s for k, (s, _) in got.items()} == want
    assert set(want.values()) == {"new", "benign", "duplicate", "confirmed"}
    assert got[scored["confirmed_in_pair"]["flow_id"]][0] == "confirmed"
    assert got[scored["pair"]["flow_id"]][0] == "duplicate"


def test_verdicts_survive_a_rescore_and_a_chunked_backfill(spark, cfg, archive, model, scored):
    wh = scored["wh"]
    before = view_status(spark, cfg, wh)
    runs_before = {r["run_id"] for r in rows(wh, "runs")}
    quiet(spark, cfg, archive, model, wh, start=DAYS[1], end=DAYS[2], rescore=True)   # a rescore of two dates
    assert view_status(spark, cfg, wh) == before
    quiet(spark, cfg, archive, model, wh, start=DAYS[0], end=DAYS[-1], rescore=True, chunk_days=1)  # one per chunk
    assert view_status(spark, cfg, wh) == before
    assert len({r["run_id"] for r in rows(wh, "anomalies")} - runs_before) >= 1  # the rows are new ones


def test_a_suppression_hides_existing_rows_and_removing_it_brings_them_back(spark, cfg, scored, tmp_path):
    wh = str(tmp_path / "wh")
    shutil.copytree(scored["wh"], wh)
    before = view_status(spark, cfg, wh)
    assert not rows(wh, "suppressions")  # a new warehouse has no rules
    pair = scored["pair"]
    t0 = dt.datetime.now(UTC) - dt.timedelta(minutes=5)
    rule = suppressions.add_rule(spark, cfg, wh, "src", pair["src_ip"], "the monitoring host", "ana", at=t0)
    hidden = view_status(spark, cfg, wh)
    anomalies = rows(wh, "anomalies")
    for a in anomalies:
        status, by = hidden[a["flow_id"]]
        if a["src_ip"] == pair["src_ip"] and before[a["flow_id"]][0] != "confirmed":
            assert (status, by) == ("suppressed", rule["rule_id"])
        else:  # other rows, and what a person confirmed, stay as they were
            assert status == before[a["flow_id"]][0]
    assert any(s == "suppressed" for s, _ in hidden.values())
    suppressions.remove_rule(spark, cfg, wh, rule["rule_id"], "bob")
    assert view_status(spark, cfg, wh) == before
    audit = rows(wh, "suppressions")
    assert [(r["rule_id"], r["created_by"], r["removed_by"]) for r in audit] in (
        [(rule["rule_id"], "ana", None), (rule["rule_id"], None, "bob")],
        [(rule["rule_id"], None, "bob"), (rule["rule_id"], "ana", None)])
    # An expired rule stops applying: in force an hour ago, not now.
    old = suppressions.add_rule(spark, cfg, wh, "detector", "header-rule", "noisy week", "ana", expires="2h",
                                at=dt.datetime.now(UTC) - dt.timedelta(hours=3))
    then = view_status(spark, cfg, wh, at=dt.datetime.now(UTC) - dt.timedelta(hours=2))
    assert {f for f, (s, by) in then.items() if by == old["rule_id"]} == {
        a["flow_id"] for a in anomalies if a["detector"] == "header-rule" and before[a["flow_id"]][0] != "confirmed"}
    assert view_status(spark, cfg, wh) == before


def test_rows_written_by_hand_are_listed_with_why_and_ignored(spark, cfg, scored, tmp_path, capsys):
    wh = str(tmp_path / "wh")
    shutil.copytree(scored["wh"], wh)
    before = view_status(spark, cfg, wh)
    now = dt.datetime.now(UTC)
    bad = [dict.fromkeys(VERDICTS.names) | r for r in (
        {"verdict_id": "v1", "recorded_at": now, "recorded_by": "sql", "target_kind": "flow",
         "flow_id": scored["flow"]["flow_id"], "status": "fixed"},
        {"verdict_id": "v2", "recorded_at": now, "recorded_by": "sql", "target_kind": "flow", "status": "benign"},
        {"verdict_id": "v3", "recorded_at": now, "recorded_by": "sql", "target_kind": "pair", "src_ip": "10.0.0.1",
         "dst_ip": "10.0.0.2", "status": "benign"},
    )]
    write_deltalake(os.path.join(wh, "verdicts"), pa.Table.from_pylist(bad, schema=VERDICTS), mode="append")
    rule = dict.fromkeys(SUPPRESSIONS.names) | {"rule_id": "w", "kind": "domain", "value": "*.example.com",
                                                "reason": "r", "created_by": "sql", "created_at": now}
    write_deltalake(os.path.join(wh, "suppressions"), pa.Table.from_pylist([rule], schema=SUPPRESSIONS))
    assert view_status(spark, cfg, wh) == before
    why = {r["verdict_id"]: r["problem"] for r in spark.sql("SELECT * FROM verdicts_rejected").collect()}
    assert why == {"v1": "status fixed is not one of confirmed, benign, duplicate, new",
                   "v2": "a flow verdict needs flow_id", "v3": "a pair verdict needs src_ip, dst_ip and date"}
    assert "write 'example.com' instead" in spark.sql("SELECT problem FROM suppressions_rejected").collect()[0][0]
    capsys.readouterr()
    assert main(["suppress", "list", "--warehouse", wh]) == 0
    err = capsys.readouterr().err
    assert "ignored verdict row v1" in err and "ignored suppressions row w" in err


def test_the_readmes_insert_records_a_verdict_where_none_was_recorded_yet(spark, cfg, scored, tmp_path):
    """The README's plain-SQL verdict, run as written through `portprint sql --write` on a warehouse with no
    verdicts table yet, is a verdict like any other."""
    wh = str(tmp_path / "wh")
    shutil.copytree(scored["wh"], wh)
    shutil.rmtree(os.path.join(wh, "verdicts"))
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    insert = re.search(r"^INSERT INTO portprint\.verdicts .*?;$", readme, re.S | re.M).group(0).rstrip(";")
    flow = scored["flow"]["flow_id"]
    assert main(["sql", "--warehouse", wh, "--write", insert.replace("F20261103-0000a1b2", flow)]) == 0
    got = [(r["recorded_by"], r["target_kind"], r["flow_id"], r["status"], r["note"]) for r in rows(wh, "verdicts")]
    assert got == [("ana", "flow", flow, "benign", "backup agent")]
    assert view_status(spark, cfg, wh)[flow][0] == "benign"


def test_triage_and_suppress_from_the_command_line(spark, scored, tmp_path, capsys):
    wh = str(tmp_path / "wh")
    shutil.copytree(scored["wh"], wh)
    assert main(["triage", "--warehouse", wh, "--pattern", "bytes tcp 5353482d", "--status", "benign", "--by", "ana",
                 "--note", "lab ssh"]) == 0
    assert "verdict benign on pattern bytes tcp 5353482d" in capsys.readouterr().out
    assert main(["triage", "--warehouse", wh, "--flow-id", "no-such-flow", "--status", "benign", "--by", "a"]) == 2
    assert "no anomaly matches flow" in capsys.readouterr().err
    assert main(["suppress", "add", "--warehouse", wh, "--kind", "domain", "--value", "*.example.com", "--reason",
                 "r", "--by", "a"]) == 2
    assert "write 'example.com' instead" in capsys.readouterr().err
    assert main(["suppress", "add", "--warehouse", wh, "--kind", "dst", "--value", "10.0.0.0/8", "--reason",
                 "internal resolvers", "--by", "ana", "--expires", "30d"]) == 0
    rule_id = capsys.readouterr().out.split()[1].rstrip(":")
    assert main(["suppress", "list", "--warehouse", wh]) == 0
    assert rule_id in capsys.readouterr().out
    assert main(["suppress", "remove", "--warehouse", wh, "--rule-id", rule_id, "--by", "bob"]) == 0
    assert main(["suppress", "list", "--warehouse", wh]) == 0
    assert "no rules in force" in capsys.readouterr().out


def test_each_anomaly_is_exported_once_whatever_the_reruns(spark, cfg, archive, model, scored, tmp_path):
    wh = str(tmp_path / "wh")
    shutil.copytree(scored["wh"], wh)
    out = str(tmp_path / "alerts.jsonl")
    status = view_status(spark, cfg, wh)
    first = run_export(spark, cfg, wh, "jsonl", out)
    sent = [json.loads(line) for line in Path(out).read_text().splitlines()]
    want = {f for f, (s, _) in status.items() if s not in ("benign", "suppressed")}
    assert first.rows == len(sent) == len(want) and {d["portprint"]["flow_id"] for d in sent} == want
    assert first.left_out == len(status) - len(want) > 0
    d = sent[0]
    assert d["event"]["kind"] == "alert" and d["rule"]["name"] in ("header-rule", "header-model", "tunnel")
    assert {"ip", "port"} <= set(d["source"]) and d["network"]["transport"] in ("tcp", "udp")
    assert run_export(spark, cfg, wh, "jsonl", out).rows == 0          # a second export is empty
    quiet(spark, cfg, archive, model, wh, start=DAYS[0], end=DAYS[1], rescore=True)  # same anomalies, new run_id
    assert run_export(spark, cfg, wh, "jsonl", out).rows == 0
    left = run_export(spark, cfg, wh, "jsonl", out, include_all=True)  # --all: the benign ones too, once
    assert left.rows == first.left_out
    assert run_export(spark, cfg, wh, "jsonl", out, include_all=True).rows == 0
    assert len(Path(out).read_text().splitlines()) == len(status)


def test_hostile_bytes_come_out_inert_in_jsonl_and_csv(spark, cfg, tmp_path):
    wh = str(tmp_path / "wh")
    evil = "<script>alert(1)</script>|`rm -rf`\x1b[2J\x07\x00\u202eexe.txt"
    row = dict.fromkeys(ANOMALIES.names) | {
        "flow_id": "=HYPERLINK(\"http://x\")" + evil, "ts": dt.datetime(2026, 10, 1, tzinfo=UTC), "date": "2026-10-01",
        "src_ip": "+10.0.0.1" + evil, "src_port": 5, "dst_ip": "@SUM(1)", "dst_port": 53, "proto": 17,
        "detector": "qname-model", "header_verdict": "valid", "header_reason": "ok", "qname": "-2+3" + evil + ".",
        "qname_complete": True, "qtype": "TXT", "prefix_text": "\tcmd" + evil, "prefix_hex": "00", "dns_id": 7,
        "qr": 0, "opcode": 0, "rcode": 0, "model_version": "m", "run_id": "r", "failed_fields": "\rx"}
    t = pa.Table.from_pylist([row], schema=ANOMALIES)
    # A string column holding bytes that are not UTF-8, as another tool might write it.
    raw = pa.array([b"bad\xff\xfe" + evil.encode()], pa.binary()).view(pa.string())
    t = t.set_column(t.schema.get_field_index("failed_fields"), "failed_fields", raw)
    write_deltalake(os.path.join(wh, "anomalies"), t, partition_by=["date"])
    for fmt in ("jsonl", "csv"):
        out = str(tmp_path / f"alerts.{fmt}")
        assert run_export(spark, cfg, wh, fmt, out).rows == 1
        data = Path(out).read_bytes()
        assert all(b in (0x0A, 0x0D) or 0x20 <= b < 0x7F for b in data) if fmt == "jsonl" else True
        text = data.decode("utf-8")
        for c in ("\x1b", "\x07", "\x00", "\u202e"):
            assert c not in text
        if fmt == "jsonl":
            assert b"<" not in data and b">" not in data
            doc = json.loads(data)
            assert doc["portprint"]["failed_fields"].startswith("bad\\xff\\xfe<script>")
            assert "\\x1b[2J" in doc["dns"]["question"]["name"]
        else:
            header, values = list(csv.reader(io.StringIO(data.decode("utf-8"), newline="")))
            cells = dict(zip(header, values, strict=True))
            for col in ("portprint.flow_id", "source.ip", "destination.ip", "dns.question.name",
                        "portprint.prefix_text", "portprint.failed_fields"):
                assert not cells[col].startswith(("=", "+", "-", "@", "\t", "\r")), col
            assert cells["destination.ip"] == "'@SUM(1)" and cells["portprint.flow_id"].startswith("'=HYPERLINK")
        shutil.rmtree(os.path.join(wh, "exported"))


def test_a_benign_pattern_stops_firing_after_retraining_with_the_feedback(spark, cfg, archive, scored, tmp_path):
    """Also: verdicts on flows survive a new model (the flows it still flags keep their status)."""
    wh = str(tmp_path / "wh")
    shutil.copytree(scored["wh"], wh)
    pattern = scored["pattern"]
    before = view_status(spark, cfg, wh)
    n_marked = sum(1 for a in rows(wh, "anomalies") if reference_pattern(a) == pattern)
    assert n_marked > 0
    model2 = str(tmp_path / "model2")
    report = run_train(spark, cfg, archive, model2, end=DAYS[1], log=lambda m: None, benign_from=wh)
    fb = report.flows_used["benign_feedback"]
    assert fb["marked_benign"] == n_marked and fb["added"] == n_marked and fb["not_in_archive"] == 0
    assert f"**{n_marked} flows** people marked benign" in Path(model2, "MODEL_CARD.md").read_text()
    quiet(spark, cfg, archive, model2, wh, start=DAYS[0], end=DAYS[-1], rescore=True)  # history, on purpose
    after_rows = rows(wh, "anomalies")
    assert {a["model_version"] for a in after_rows} == {report.model_version}
    assert not [a for a in after_rows if reference_pattern(a) == pattern]
    after = view_status(spark, cfg, wh)
    kept = set(after) & set(before)
    assert kept and all(after[f] == before[f] for f in kept)
    assert after[scored["flow"]["flow_id"]][0] == "confirmed"


def test_scoring_skips_what_a_rule_matches_and_counts_it_in_runs(spark, cfg, archive, model, scored, tmp_path):
    """A rule in force when `score` runs keeps its rows out of `anomalies`; `runs.suppressed` and
    `suppression_hits` count them. Expected: the unsuppressed warehouse's rows that match the rule, by hand."""
    wh = str(tmp_path / "wh")
    rule = suppressions.add_rule(spark, cfg, wh, "detector", "header-rule", "the rule is noisy this week", "ana",
                                 at=dt.datetime.now(UTC) - dt.timedelta(minutes=1))
    quiet(spark, cfg, archive, model, wh, chunk_days=10)
    everything = rows(scored["wh"], "anomalies")
    matched = [a for a in everything if a["detector"] == "header-rule"]
    assert matched  # the sample plants protocols that fail the header rule
    kept = rows(wh, "anomalies")
    assert sorted(a["flow_id"] for a in kept) == sorted(a["flow_id"] for a in everything
                                                         if a["detector"] != "header-rule")
    runs = {r["date"]: r for r in rows(wh, "runs")}
    for d in DAYS:
        want = sum(a["date"] == d for a in matched)
        assert runs[d]["suppressed"] == want
        assert runs[d]["anomalies"] == sum(a["date"] == d for a in kept)
        assert runs[d]["rule_flagged"] == 0
    hits = {(h["date"], h["rule_id"]): h["flows"] for h in rows(wh, "suppression_hits")}
    assert hits == {(d, rule["rule_id"]): n for d in DAYS
                    if (n := sum(a["date"] == d for a in matched))}
