"""The model lifecycle as the nightly job meets it: a retrain does not make history new, rescoring is asked for,
a dry run writes nothing, a change of escalation settings is new, and promotion refuses with its numbers. Real
Spark, real Delta tables read back with delta-rs, a real MLflow store in a temporary folder."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from deltalake import DeltaTable
from mlflow import MlflowClient
from nightly_fixtures import DAYS, table_rows, write_models

from portprint.jobs.archive import ArchiveError
from portprint.jobs.cli import main
from portprint.jobs.promotion import run_promote
from portprint.jobs.sample import write_sample
from portprint.jobs.score import run_score
from portprint.jobs.warehouse.history import AlreadyScored
from portprint.models.registry import Registry

pytestmark = pytest.mark.slow
D1, D2 = DAYS
NAME = "portprint"


def quiet(*args, **kwargs):
    return run_score(*args, log=lambda m: None, **kwargs)


def runs(wh: str) -> list[dict]:
    return DeltaTable(os.path.join(wh, "runs")).to_pyarrow_table().to_pylist()


@pytest.fixture(scope="module")
def setup(spark, cfg, tmp_path_factory):
    """Two dates, two models that flag very differently, and a warehouse scored by the quiet one."""
    root = tmp_path_factory.mktemp("lifecycle")
    archive = str(root / "flows")
    write_sample(archive, days=len(DAYS), flows_per_day=1500, seed=23, start=D1)
    quiet_model, loud_model = write_models(root)
    wh = str(root / "scored")
    quiet(spark, cfg, archive, quiet_model, wh, chunk_days=1)
    return {"root": root, "archive": archive, "quiet": quiet_model, "loud": loud_model, "wh": wh}


def test_an_older_models_dates_are_not_new_and_rescoring_is_asked_for(spark, cfg, setup, tmp_path):
    wh = str(tmp_path / "wh")
    shutil.copytree(setup["wh"], wh)
    before = table_rows(wh, "anomalies")
    # The nightly run with a retrained model: both dates were scored by the older model, so nothing is new.
    nightly = quiet(spark, cfg, setup["archive"], setup["loud"], wh, new_only=True)
    assert (nightly.dates, nightly.skipped_dates) == ([], DAYS)
    # A plain run over scored dates refuses instead of rewriting them.
    with pytest.raises(AlreadyScored, match=rf"{D1}\.\.{D2} \(2 dates\) already scored.*--rescore"):
        quiet(spark, cfg, setup["archive"], setup["loud"], wh)
    assert table_rows(wh, "anomalies") == before
    with pytest.raises(ValueError, match="--start and --end"):
        quiet(spark, cfg, setup["archive"], setup["loud"], wh, start=D2, rescore=True)
    # Rescoring one date on purpose replaces that date only, logged as a rescore by the new model.
    r = quiet(spark, cfg, setup["archive"], setup["loud"], wh, start=D2, end=D2, rescore=True)
    assert r.dates == [D2]
    after = table_rows(wh, "anomalies")
    assert [x for x in after if x["date"] == D1] == [x for x in before if x["date"] == D1]
    assert {x["model_version"] for x in after if x["date"] == D2} == {r.model_version} != {
        x["model_version"] for x in before}
    mine = [x for x in runs(wh) if x["run_id"] == r.run_id and x["status"] == "succeeded"]
    assert [(x["date"], x["reason"]) for x in mine] == [(D2, "rescore")]


def test_dry_run_lists_the_dates_and_why_and_writes_nothing(spark, cfg, setup, tmp_path, capsys):
    fresh = str(tmp_path / "fresh")
    r = quiet(spark, cfg, setup["archive"], setup["quiet"], fresh, dry_run=True, new_only=True)
    assert [(x.date, x.score, x.reason) for x in r.decisions] == [(D1, True, "new"), (D2, True, "new")]
    assert not os.path.exists(fresh)

    wh = str(tmp_path / "wh")
    shutil.copytree(setup["wh"], wh)
    late = os.path.join(setup["archive"], f"date={D2}", "part-late.parquet")
    first = os.path.join(setup["archive"], f"date={D2}", "part-00000.parquet")
    pq.write_table(pq.read_table(first).slice(0, 10), late)
    version = DeltaTable(os.path.join(wh, "runs")).version()
    try:
        code = main(["score", "--flows", setup["archive"], "--model", setup["loud"], "--warehouse", wh,
                     "--new-only", "--dry-run"])
    finally:
        os.remove(late)
    out = capsys.readouterr().out
    assert code == 0
    lines = [line.split()[:3] for line in out.splitlines() if line.startswith("2026-")]
    assert lines == [[D1, "skip", "done"], [D2, "score", "late-written"]]
    assert "nothing was written" in out
    assert DeltaTable(os.path.join(wh, "runs")).version() == version  # no commit, not even a runs row
    assert not os.path.exists(os.path.join(wh, "_staging")) or os.listdir(os.path.join(wh, "_staging")) == []


def test_escalation_settings_are_recorded_and_their_change_is_new(spark, cfg, setup, tmp_path):
    wh = str(tmp_path / "wh")
    shutil.copytree(setup["wh"], wh)
    recorded = {json.loads(x["escalation"])["odd_min_share"] for x in runs(wh) if x["status"] == "succeeded"}
    assert recorded == {cfg.escalate.odd_min_share}
    assert quiet(spark, cfg, setup["archive"], setup["quiet"], wh, new_only=True).dates == []
    changed = dataclasses.replace(cfg, escalate=dataclasses.replace(cfg.escalate, odd_min_share=0.8))
    r = quiet(spark, changed, setup["archive"], setup["quiet"], wh, new_only=True)
    assert r.dates == DAYS and {x.reason for x in r.decisions} == {"settings-changed"}
    mine = [x for x in runs(wh) if x["run_id"] == r.run_id and x["status"] == "succeeded"]
    assert {json.loads(x["escalation"])["odd_min_share"] for x in mine} == {0.8}
    # Back at the new settings, the dates are done again.
    assert quiet(spark, changed, setup["archive"], setup["quiet"], wh, new_only=True).dates == []


def test_promotion_refuses_a_louder_candidate_with_the_numbers(spark, cfg, setup, tmp_path):
    store = str(tmp_path / "mlruns")
    reg = Registry.local(store)
    champ = reg.log_training(setup["quiet"], NAME)
    reg.promote(champ.uri)
    cand = reg.log_training(setup["loud"], NAME)
    # Independent numbers: the champion's alerts as its runs rows say, and the candidate's as `score` writes them
    # into a warehouse of its own.
    champion_alerts = sum(x["anomalies"] for x in runs(setup["wh"]) if x["status"] == "succeeded")
    other = str(tmp_path / "candidate-wh")
    cand_alerts = quiet(spark, cfg, setup["archive"], setup["loud"], other).anomalies
    assert cand_alerts > cfg.promote.max_alert_ratio * max(champion_alerts, 1)
    said: list[str] = []
    r = run_promote(spark, cfg, cand.uri, store, warehouse=setup["wh"], log=said.append)
    assert r.promoted is None and "not promoted" in r.refusal and "--force" in r.refusal
    (check,) = r.checks
    assert not check.passed
    assert f"raises {cand_alerts} alerts where the champion raised {champion_alerts}" in check.detail
    assert check.values["dates"] == DAYS
    client = MlflowClient(tracking_uri=reg.tracking_uri, registry_uri=reg.registry_uri)
    assert str(client.get_model_version_by_alias(NAME, "champion").version) == champ.version
    assert not os.listdir(os.path.join(setup["wh"], "_staging"))  # the check's staging is gone
    # Forced, with a reason: promoted, and the reason and the failed check are on the version.
    forced = run_promote(spark, cfg, cand.uri, store, warehouse=setup["wh"], force="reviewed: ticket SEC-1",
                         log=said.append)
    assert forced.forced and forced.promoted[0].version == cand.version
    tags = client.get_model_version(NAME, cand.version).tags
    assert tags["portprint.promote.forced"] == "reviewed: ticket SEC-1"
    assert tags["portprint.promote.alert_volume"].startswith("FAILED: the candidate raises")
    assert str(client.get_model_version_by_alias(NAME, "champion").version) == cand.version


def test_promotion_of_a_candidate_as_quiet_as_the_champion_passes(spark, cfg, setup, tmp_path):
    store = str(tmp_path / "mlruns")
    reg = Registry.local(store)
    champ = reg.log_training(setup["quiet"], NAME)
    reg.promote(champ.uri)
    cand = reg.log_training(setup["quiet"], NAME)  # the same weights registered again: the same alerts
    r = run_promote(spark, cfg, cand.uri, store, warehouse=setup["wh"], log=lambda m: None)
    assert r.promoted is not None and not r.forced and [c.passed for c in r.checks] == [True]
    assert "ratio 1.00" in r.checks[0].detail


# --- promotion with a labelled set: the evaluate goals --------------------------------------------------------
#
# The labelled sets are built from what `score` flagged with the candidate's weights: the champion warehouse's
# `anomalies` (the quiet model; the candidates below are its weights registered again), read back with delta-rs,
# and the archive's own labels file. Their outcome is known by construction, without `evaluate`: flagged
# non-DNS flows labelled as they are, and unflagged genuine DNS labelled `dns`, give non-DNS recall 1 and FPR 0;
# calling flows `dns-tunnel` of which a known share was flagged gives exactly that share as tunnel recall.


def _labelled(setup, date: str) -> tuple[list[dict], set[str]]:
    """The archive's labels of ``date``, and the flow ids `score` flagged on it (any detector)."""
    truth = [x for x in pq.read_table(os.path.join(setup["archive"], "_labels.parquet")).to_pylist()
             if x["date"] == date]
    flagged = {x["flow_id"] for x in DeltaTable(os.path.join(setup["wh"], "anomalies")).to_pyarrow_table(
        columns=["flow_id", "date"]).to_pylist() if x["date"] == date}
    return truth, flagged


def _write_labels(path, rows: list[tuple[str, str]], date: str) -> str:
    pq.write_table(pa.table({"flow_id": [r[0] for r in rows], "label": [r[1] for r in rows],
                             "date": [date] * len(rows)}), path)
    return str(path)


def _goal_sets(setup, tmp_path) -> dict:
    truth, flagged = _labelled(setup, D1)
    hits = sorted((x["flow_id"], x["label"]) for x in truth
                  if x["label"] not in ("dns", "dns-tunnel", "other-port", "empty") and x["flow_id"] in flagged)
    quiet_dns = sorted(x["flow_id"] for x in truth if x["label"] == "dns" and x["flow_id"] not in flagged)
    assert len(hits) >= 2 and len(quiet_dns) >= 100  # what the construction needs of the archive
    meets = hits + [(f, "dns") for f in quiet_dns]
    # One flagged non-DNS flow and three unflagged genuine DNS flows called tunnels: tunnel recall 1/4.
    tunnels = [hits[0][0], *quiet_dns[:3]]
    misses = hits[1:] + [(f, "dns") for f in quiet_dns[3:]] + [(f, "dns-tunnel") for f in tunnels]
    return {"meets": _write_labels(tmp_path / "meets.parquet", meets, D1),
            "misses": _write_labels(tmp_path / "misses.parquet", misses, D1),
            "hits": len(hits), "dns": len(quiet_dns)}


def test_promotion_with_a_labelled_set_that_meets_the_goals_promotes(spark, cfg, setup, tmp_path):
    sets = _goal_sets(setup, tmp_path)
    store = str(tmp_path / "mlruns")
    reg = Registry.local(store)
    cand = reg.log_training(setup["quiet"], NAME)
    g = cfg.promote.goals
    r = run_promote(spark, cfg, cand.uri, store, labels=sets["meets"], flows=setup["archive"], log=lambda m: None)
    assert r.refusal is None and not r.forced and r.promoted[0].version == cand.version
    volume, goals = r.checks
    assert volume.passed and "no champion yet" in volume.detail
    assert goals.name == "goals" and goals.passed
    assert (goals.values["fpr"], goals.values["recall"], goals.values["tunnel_recall"]) == (0.0, 1.0, None)
    assert goals.detail == (f"on 1 labelled date(s) ({D1}..{D1}): false-positive rate on genuine DNS 0 (meets <= "
                            f"{g.max_fpr:g}); non-DNS recall 1 (meets >= {g.min_recall:g}); tunnel recall: no such "
                            "flows labelled")
    client = MlflowClient(tracking_uri=reg.tracking_uri, registry_uri=reg.registry_uri)
    assert str(client.get_model_version_by_alias(NAME, "champion").version) == cand.version
    tags = client.get_model_version(NAME, cand.version).tags
    assert tags["portprint.promote.goals"] == "ok: " + goals.detail
    # evaluate's numbers are on the candidate's run: as many genuine DNS and non-DNS flows as the labels hold.
    metrics = client.get_run(cand.run_id).data.metrics
    assert (metrics["eval.fpr"], metrics["eval.recall"]) == (0.0, 1.0)
    assert metrics["eval.per_label.dns.flows"] == sets["dns"]


def test_promotion_refuses_a_candidate_that_misses_a_goal_with_the_numbers(spark, cfg, setup, tmp_path, capsys):
    sets = _goal_sets(setup, tmp_path)
    store = str(tmp_path / "mlruns")
    reg = Registry.local(store)
    champ = reg.log_training(setup["quiet"], NAME)
    reg.promote(champ.uri)
    cand = reg.log_training(setup["quiet"], NAME)  # the champion's weights: the alert volume check passes
    client = MlflowClient(tracking_uri=reg.tracking_uri, registry_uri=reg.registry_uri)
    before = client.get_model_version(NAME, cand.version)
    g = cfg.promote.goals
    code = main(["promote", "--model", cand.uri, "--registry", store, "--warehouse", setup["wh"],
                 "--labels", sets["misses"], "--flows", setup["archive"]])
    out, err = capsys.readouterr()
    assert code == 2
    assert "check alert volume: ok:" in out and "ratio 1.00" in out
    (line,) = [x for x in out.splitlines() if x.startswith("check goals: FAILED: ")]
    assert line.endswith(f"false-positive rate on genuine DNS 0 (meets <= {g.max_fpr:g}); non-DNS recall 1 (meets "
                         f">= {g.min_recall:g}); tunnel recall 0.25 (misses >= {g.min_tunnel_recall:g})")
    assert f"{cand.uri} was not promoted: goals check failed (numbers above)" in err
    assert "alert volume check failed" not in err
    # Nothing moved in the registry: the champion is the champion, the candidate is untagged by promote.
    assert str(client.get_model_version_by_alias(NAME, "champion").version) == champ.version
    after = client.get_model_version(NAME, cand.version)
    assert (after.tags, sorted(after.aliases)) == (before.tags, sorted(before.aliases))
    assert not os.listdir(os.path.join(setup["wh"], "_staging"))


def test_promotion_with_a_labelled_set_without_genuine_dns_stops_and_promotes_nothing(spark, cfg, setup, tmp_path):
    # Flows that are never scored (not on port 53, or without payload) and one the archive lacks: the
    # false-positive goal cannot be measured, so promotion stops with evaluate's reason.
    truth, _ = _labelled(setup, D1)
    unscored = sorted((x["flow_id"], x["label"]) for x in truth if x["label"] in ("other-port", "empty"))
    assert {lab for _, lab in unscored} == {"other-port", "empty"}
    labels = _write_labels(tmp_path / "unscored.parquet", [*unscored, ("no-such-flow", "dns")], D1)
    store = str(tmp_path / "mlruns")
    reg = Registry.local(store)
    cand = reg.log_training(setup["quiet"], NAME)
    with pytest.raises(ArchiveError, match="no flow labelled 'dns' among the scored flows"):
        run_promote(spark, cfg, cand.uri, store, labels=labels, flows=setup["archive"], log=lambda m: None)
    client = MlflowClient(tracking_uri=reg.tracking_uri, registry_uri=reg.registry_uri)
    assert "champion" not in client.get_model_version(NAME, cand.version).aliases
