"""The model registry against a real MLflow store in a temporary folder, checked with MLflow's own client."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest
from mlflow import MlflowClient
from model_fixtures import make_artifact

from portprint.jobs.cli import main
from portprint.models.artifact import ModelArtifact
from portprint.models.registry import Registry, RegistryError

NAME = "portprint"


@pytest.fixture
def store(tmp_path):
    """A local registry and MLflow's own client on the same SQLite store (the independent reader)."""
    reg = Registry.local(str(tmp_path / "mlruns"))
    client = MlflowClient(tracking_uri=reg.tracking_uri, registry_uri=reg.registry_uri)
    return reg, client


def _digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.iterdir() if p.name != "MLmodel"}


def test_a_training_is_logged_and_registered_as_a_candidate(tmp_path, store):
    reg, client = store
    folder = make_artifact(seed=0).save(str(tmp_path / "m1"), card="# m1\n")
    meta = json.loads((folder / "model.json").read_text())
    r = reg.log_training(str(folder), NAME, evaluation={"fpr": 0.002, "per_label": {"<b>|x\x1b[31m": {"recall": 0.5}}})

    mv = client.get_model_version_by_alias(NAME, "candidate")
    assert (str(mv.version), mv.run_id) == (r.version, r.run_id) == ("1", r.run_id)
    assert mv.tags["portprint.model_version"] == meta["model_version"] and mv.tags["portprint.stage"] == "candidate"
    run = client.get_run(r.run_id)
    assert run.info.status == "FINISHED"
    p, m = run.data.params, run.data.metrics
    assert (p["width"], p["id_mode"], p["hidden"], p["train_start"], p["train_end"]) == ("8", "mask", "[32, 12]",
                                                                                        "2026-11-01", "2026-11-03")
    assert p["window.days"] == "3" and p["window_dates"] == "3" and p["training.seed"] == "53"
    assert p["qname.odd_rate"] == "0.1" and p["qname.hidden"] == "[16, 4]"
    assert m["threshold"] == meta["threshold"] and m["qname.threshold"] == meta["qname"]["threshold"]
    assert m["qname.odd_threshold"] == meta["qname"]["odd_threshold"]
    assert m["loss.p99"] == meta["loss_stats"]["p99"] and m["qname.loss.max"] == meta["qname"]["loss_stats"]["max"]
    assert m["flows.train"] == meta["flows_used"]["train"] and m["eval.fpr"] == 0.002
    # A label name from a labels file becomes a key MLflow accepts, never a key that escapes its run.
    assert [k for k in m if k.startswith("eval.per_label.")] == ["eval.per_label._3c_b_3e__7c_x_1b__5b_31m.recall"]
    history = client.get_metric_history(r.run_id, "history.val_loss")
    assert [(h.step, h.value) for h in history] == [(0, 0.6), (1, 0.4), (2, 0.35)]
    # The whole folder is the run's artifact, byte for byte.
    listed = {os.path.basename(a.path) for a in client.list_artifacts(r.run_id, "model")}
    assert listed == {p.name for p in folder.iterdir()} | {"MLmodel"}
    got = Path(client.download_artifacts(r.run_id, "model", str(tmp_path / "dl")))
    assert _digests(got) == _digests(folder)


def test_champion_resolves_to_a_verified_cached_folder(tmp_path, store):
    reg, client = store
    f1 = make_artifact(seed=1).save(str(tmp_path / "m1"))
    f2 = make_artifact(seed=2).save(str(tmp_path / "m2"))
    r1, r2 = reg.log_training(str(f1), NAME), reg.log_training(str(f2), NAME)
    assert (r1.version, r2.version) == ("1", "2")
    assert client.get_model_version_by_alias(NAME, "candidate").version == 2
    with pytest.raises(RegistryError, match=r"no alias @champion.*portprint promote"):
        reg.resolve(f"models:/{NAME}@champion")

    new, before = reg.promote(f"models:/{NAME}/1")
    assert before is None and client.get_model_version_by_alias(NAME, "champion").version == 1
    local = reg.resolve(f"models:/{NAME}@champion")
    assert _digests(local) == _digests(f1)
    assert ModelArtifact.load(str(local)).meta.model_version == client.get_model_version(NAME, "1").tags[
        "portprint.model_version"]
    stamp = (local / "model.pt").stat().st_mtime_ns
    assert reg.resolve(f"models:/{NAME}/1") == local and (local / "model.pt").stat().st_mtime_ns == stamp

    # A cached copy that was changed is refused by its hash and fetched again.
    (local / "qname.pt").write_bytes(b"edited")
    assert _digests(reg.resolve(f"models:/{NAME}/1")) == _digests(f1)

    new, before = reg.promote(f"models:/{NAME}@candidate")
    assert (new.version, before.version) == ("2", "1")
    assert client.get_model_version_by_alias(NAME, "champion").version == 2
    assert client.get_model_version(NAME, "1").tags["portprint.stage"] == "retired"
    assert client.get_model_version(NAME, "2").tags["portprint.stage"] == "champion"
    assert _digests(reg.resolve(f"models:/{NAME}@champion")) == _digests(f2)


@pytest.mark.parametrize("uri, words", [
    ("models:/portprint", "not a model URI"),
    ("models:/portprint/9", "no version 9"),
    ("models:/nobody@champion", "no alias @champion"),
])
def test_bad_references_fail_with_what_was_looked_for(tmp_path, store, uri, words):
    reg, _ = store
    reg.log_training(str(make_artifact().save(str(tmp_path / "m"))), NAME)
    with pytest.raises(RegistryError, match=words):
        reg.resolve(uri)


def test_cli_threshold_writes_a_new_version_and_never_edits_the_old(tmp_path, capsys):
    """threshold from a registry URI: a new folder and a new candidate version; version 1 stays as it was."""
    store = str(tmp_path / "mlruns")
    f1 = make_artifact(seed=3).save(str(tmp_path / "m1"))
    before = _digests(f1)
    reg = Registry.local(store)
    reg.log_training(str(f1), NAME)
    assert main(["promote", "--model", f"models:/{NAME}/1", "--registry", store]) == 0
    assert "is the champion" in capsys.readouterr().out
    out = tmp_path / "m1-strict"
    assert main(["threshold", "--model", f"models:/{NAME}@champion", "--registry", store, "--out", str(out),
                 "--target-fpr", "0.0005", "--method", "empirical"]) == 0
    assert "registered as models:/portprint/2" in capsys.readouterr().out
    client = MlflowClient(tracking_uri=reg.tracking_uri, registry_uri=reg.registry_uri)
    v2 = client.get_model_version(NAME, "2")
    assert v2.tags["portprint.derived_from"] == f"models:/{NAME}@champion"
    assert client.get_model_version_by_alias(NAME, "champion").version == 1  # a candidate until promoted
    assert _digests(f1) == before
    old, new = ModelArtifact.load(str(f1)), ModelArtifact.load(str(out))
    assert new.weights == old.weights and new.meta.model_version != old.meta.model_version
    assert new.meta.threshold > old.meta.threshold  # 5e-4 is stricter than the 1e-3 it was calibrated at
    assert v2.tags["portprint.model_version"] == new.meta.model_version
    v1 = Path(client.download_artifacts(client.get_model_version(NAME, "1").run_id, "model", str(tmp_path / "v1")))
    assert _digests(v1) == before
    # In place is refused.
    code = main(["threshold", "--model", str(out), "--out", str(out), "--target-fpr", "0.001"])
    assert code == 2 and "never edited in place" in capsys.readouterr().err
