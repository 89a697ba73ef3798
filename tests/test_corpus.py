"""The labelled corpus of real protocol software (tests/data/corpus): rule, model and evaluate on it."""

from __future__ import annotations

import collections
import csv
import hashlib
import os

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest
from deltalake import DeltaTable

from portprint.conf.config import load_config
from portprint.jobs.evaluate import metrics, read_labels, run_evaluate, score_labelled
from portprint.jobs.ingest import ingest
from portprint.jobs.score import run_score
from portprint.jobs.train import run_train
from portprint.udfs.header_rule import REASONS, reasons_from_arrow

CORPUS = os.path.join(os.path.dirname(__file__), "data", "corpus")
LABELS = os.path.join(CORPUS, "labels.csv")
# The question-section issue's goals (README, "What it catches, measured"): measured 0.956 and 0.0006.
TUNNEL_RECALL_FLOOR = 0.9
DNS_FPR_CEILING = 0.001
# The evaluation issue's goal for what the first bytes decide (rule or header model): at most 0.1% of
# genuine DNS, shown by the 95% upper bound, and every non-DNS protocol at 98% or more.
HEADER_FPR_GOAL = 0.001


@pytest.fixture(scope="module")
def archive(tmp_path_factory) -> str:
    out = str(tmp_path_factory.mktemp("corpus") / "flows")
    ingest([CORPUS], out)
    return out


@pytest.fixture(scope="module")
def flows(archive):
    table = pq.read_table(archive)
    labels = pacsv.read_csv(LABELS)
    label_of = dict(zip(labels["flow_id"].to_pylist(), labels["label"].to_pylist(), strict=True))
    prefix, proto, sent = table["orig_payload_prefix"], table["proto"].to_numpy(), table["orig_bytes"].to_numpy()
    reasons = reasons_from_arrow(prefix, proto, sent)
    return table, np.array([label_of[f] for f in table["flow_id"].to_pylist()]), reasons


def test_rule_passes_every_genuine_dns_flow_from_real_servers_and_clients(flows):
    _table, labels, reasons = flows
    assert (labels == "dns").sum() >= 5000
    assert [REASONS[r] for r in reasons[labels == "dns"]] == ["ok"] * int((labels == "dns").sum())


# Each rule with the real protocols whose first bytes trigger it (tests/data/make_corpus.sh made them).
RULE_CASES = {
    "tcp_length": {"ssh", "http", "tls", "redis", "postgresql", "socks5", "mqtt"},
    "opcode": {"sip", "tftp"},
    "rcode": {"snmp", "radius", "syslog"},
    "qdcount": {"stun"},
    "no_question": {"ntp"},
    "empty": {"openvpn"},  # a connection that closed before sending anything
}


@pytest.mark.parametrize("rule", sorted(RULE_CASES))
def test_each_rule_fires_on_real_packets(flows, rule):
    _table, labels, reasons = flows
    fired = collections.defaultdict(set)
    for lab, r in zip(labels.tolist(), reasons.tolist(), strict=True):
        fired[REASONS[r]].add(lab)
    assert RULE_CASES[rule] <= fired[rule]


def test_every_non_dns_protocol_fails_the_rule_and_tunnels_pass_it(flows):
    table, labels, reasons = flows
    payload = np.array([bool(p) for p in table["orig_payload_prefix"].to_pylist()])
    other = ~np.isin(labels, ["dns", "dns-tunnel"]) & payload
    assert len(set(labels[other])) >= 8
    assert (reasons[other] > 1).all()
    # Tunnels are well-formed DNS: the rule cannot see them, and the tests say so rather than hide it.
    assert (reasons[labels == "dns-tunnel"] == 0).all()


def _train_half(row: dict) -> bool:
    """Train narrow: half of the ordinary genuine DNS (by a hash of the flow id), nothing else."""
    return (row["label"] == "dns" and row["category"] == "ordinary"
            and int(hashlib.sha256(row["flow_id"].encode()).hexdigest(), 16) % 2 == 0)


@pytest.fixture(scope="module")
def narrow(archive, tmp_path_factory):
    """(training archive, labels of every other flow): test wide on what training never saw."""
    with open(LABELS, newline="") as fh:
        rows = list(csv.DictReader(fh))
    train_ids = sorted(r["flow_id"] for r in rows if _train_half(r))
    out = tmp_path_factory.mktemp("narrow")
    table = ds.dataset(archive, format="parquet", partitioning="hive").to_table()
    picked = table.filter(pc.is_in(table["flow_id"], pa.array(train_ids)))
    for d in sorted(set(picked["date"].to_pylist())):
        part = out / "train" / f"date={d}"
        part.mkdir(parents=True)
        pq.write_table(picked.filter(pc.equal(picked["date"], d)).drop(["date"]), part / "part-0.parquet")
    test_labels = out / "test_labels.csv"
    with open(test_labels, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(r for r in rows if not _train_half(r))
    return str(out / "train"), str(test_labels)


@pytest.mark.slow
def test_train_narrow_test_wide_on_real_software(spark, archive, narrow, tmp_path):
    train_archive, test_labels = narrow
    cfg = load_config("local", overrides={"spark": {"master": "local[2]"}, "model": {"calibration_fraction": 0.4}})
    model = str(tmp_path / "model")
    run_train(spark, cfg, train_archive, model, log=lambda m: None)
    ev = run_evaluate(spark, cfg, archive, test_labels, model, out=str(tmp_path / "eval"), log=lambda m: None)
    dns = ev["per_label"]["dns"]
    assert dns["flows"] >= 3000  # enough genuine DNS never seen in training to measure a rate near 0.1%
    assert ev["hard_benign"]["flows"] >= 500 and ev["tunnel"]["flows"] >= 300
    # Every non-DNS protocol is caught (the rule carries this); none of them below 98%.
    assert all(rate == 1.0 for rate in ev["recall_per_protocol"].values()), ev["recall_per_protocol"]
    assert len(ev["recall_per_protocol"]) >= 8
    # The goals as the tunnel issue states them (recall: the mean over tool families, so the tool with the most
    # flows does not hide the others), hard-benign names included in the genuine DNS.
    assert ev["tunnel"]["family_mean"] >= TUNNEL_RECALL_FLOOR, ev["tunnel"]
    assert ev["fpr"] <= DNS_FPR_CEILING, (dns, ev["hard_benign"])
    # Only names show tunnels: the question model, and the Escalate stage (which adds only flows nothing else flagged).
    det = ev["detectors"]
    assert det["header-both"]["tunnel_recall"] == 0.0
    assert det["tunnel"]["tunnel_recall"] > 0
    assert abs(det["qname-model"]["tunnel_recall"] + det["tunnel"]["tunnel_recall"] - ev["tunnel"]["recall"]) < 1e-9
    header = ev["detectors"]["header-both"]
    assert header["fpr_upper95"] <= HEADER_FPR_GOAL and header["recall"] >= 0.995, header
    assert "dns-tunnel" not in ev["recall_per_protocol"]
    for name in ("evaluation.json", "evaluation.md", "roc.png", "loss_by_label.png"):
        assert os.path.getsize(tmp_path / "eval" / name) > 0

    # evaluate and score agree, flow for flow, on what is flagged.
    scored, art = score_labelled(spark, cfg, archive, read_labels(test_labels), model, None, None)
    qth = art.meta.qname["threshold"]
    flagged = ((scored.loss > art.meta.threshold) | scored.rule | (np.nan_to_num(scored.qloss, nan=0) > qth)
               | scored.tunnel)
    run_score(spark, cfg, archive, model, str(tmp_path / "wh"), log=lambda m: None)
    anomalies = DeltaTable(str(tmp_path / "wh" / "anomalies")).to_pyarrow_table()
    in_test = set(scored.flow_id.tolist())
    assert {f for f in anomalies["flow_id"].to_pylist() if f in in_test} == set(scored.flow_id[flagged].tolist())
    assert metrics(scored, art.meta.threshold, qth)["fpr"] == ev["fpr"]
