"""train's window (--days, --start/--end) and its two targets (--target-fpr, --qname-target-fpr)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from mlflow import MlflowClient

from portprint.conf.config import load_config
from portprint.jobs.cli import main
from portprint.jobs.sample import write_sample
from portprint.jobs.train import run_train

pytestmark = pytest.mark.slow

DATES = ["2026-11-01", "2026-11-02", "2026-11-03", "2026-11-04", "2026-11-05"]


@pytest.fixture(scope="module")
def archive(tmp_path_factory) -> Path:
    """Five days of sample, then the third day removed: the archive's dates are not every calendar day."""
    root = tmp_path_factory.mktemp("window") / "flows"
    write_sample(str(root), days=5, flows_per_day=2500, seed=11, start=DATES[0])
    shutil.rmtree(root / f"date={DATES[2]}")
    return root


def _present(root: Path) -> list[str]:
    return sorted(n.split("=", 1)[1] for n in os.listdir(root) if n.startswith("date="))


def test_days_takes_the_most_recent_archive_dates_ending_at_end(spark, cfg, archive, tmp_path):
    small = load_config("local", overrides={"spark": {"master": "local[2]", "shuffle_partitions": 2},
                                            "model": {"epochs": 3, "epoch_rows": 5000, "window_days": 3}})
    end = DATES[3]
    expected = [d for d in _present(archive) if d <= end][-2:]  # two archive dates, not two calendar days
    assert expected == [DATES[1], DATES[3]]
    r = run_train(spark, small, str(archive), str(tmp_path / "m"), end=end, days=2, target_fpr=1e-3,
                  log=lambda m: None)
    meta = json.loads((tmp_path / "m" / "model.json").read_text())
    assert (meta["train_start"], meta["train_end"]) == (expected[0], expected[-1])
    assert meta["training"]["window"] == {"how": "days", "days": 2, "end": end, "dates": expected}
    card = (tmp_path / "m" / "MODEL_CARD.md").read_text()
    assert f"{expected[0]} .. {expected[-1]} (2 archive dates: the 2 most recent ending at {end})" in card
    # --target-fpr moves the header model's threshold only; the question model keeps its own setting.
    assert meta["threshold_info"]["target_fpr"] == 1e-3
    assert meta["qname"]["threshold_info"]["target_fpr"] == small.threshold.qname_target_fpr == 1e-6
    assert r.flows_used["in_scope_with_payload"] > 0

    # No --days: model.window_days (3 here) most recent dates up to the last present.
    run_train(spark, small, str(archive), str(tmp_path / "d"), log=lambda m: None)
    meta = json.loads((tmp_path / "d" / "model.json").read_text())
    assert meta["training"]["window"]["dates"] == _present(archive)[-3:] == [DATES[1], DATES[3], DATES[4]]


def test_cli_start_end_win_and_qname_target_is_its_own_flag(spark, archive, tmp_path, capsys):
    conf = tmp_path / "small.yml"
    conf.write_text("model:\n  epochs: 3\n  epoch_rows: 5000\nspark:\n  master: local[2]\n")
    model = tmp_path / "models" / "m"
    assert main(["train", "--flows", str(archive), "--model", str(model), "--conf", str(conf), "--start", DATES[0],
                 "--end", DATES[1], "--days", "1", "--qname-target-fpr", "0.001"]) == 0
    out = capsys.readouterr().out
    meta = json.loads((model / "model.json").read_text())
    assert meta["training"]["window"]["dates"] == [DATES[0], DATES[1]]
    assert meta["training"]["window"]["how"] == "explicit"
    assert meta["qname"]["threshold_info"]["target_fpr"] == 0.001
    assert meta["threshold_info"]["target_fpr"] == 1e-4  # the header model's default, untouched
    # Registered beside the model folder as a candidate, with the window among its parameters.
    assert "registered as models:/portprint/1 (candidate)" in out
    db = tmp_path / "models" / "mlruns" / "mlflow.db"
    client = MlflowClient(tracking_uri=f"sqlite:///{db}", registry_uri=f"sqlite:///{db}")
    mv = client.get_model_version_by_alias("portprint", "candidate")
    assert mv.tags["portprint.model_version"] == meta["model_version"]
    params = client.get_run(mv.run_id).data.params
    assert (params["train_start"], params["train_end"], params["window.how"]) == (DATES[0], DATES[1], "explicit")
    assert main(["train", "--flows", str(archive), "--model", str(model), "--days", "-1"]) == 2
    assert "--days" in capsys.readouterr().err
