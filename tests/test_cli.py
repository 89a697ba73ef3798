"""The `portprint` command line, run in-process on the suite's Spark session."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from deltalake import DeltaTable

from portprint.jobs.cli import main

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("command", ["sample", "train", "score", "sql", "triage", "report", "export"])
def test_every_command_has_a_help_that_teaches(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    assert "--conf" in text and "--env" in text
    assert len(text.splitlines()) > 8


def test_top_level_help_shows_a_nights_work(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    for command in ("sample", "train", "score", "sql"):
        assert f"portprint {command}" in out


def test_sample_train_score_sql_end_to_end(spark, tmp_path, capsys):
    """Every command as a user runs it; the test checks what each leaves behind, not detection quality, so `train`
    gets a short schedule through the user's own --conf (the suite's 2-core session, 3 epochs of 5000 rows)."""
    flows, model, wh = str(tmp_path / "flows"), str(tmp_path / "model"), str(tmp_path / "wh")
    conf = tmp_path / "short.yml"
    conf.write_text("model:\n  epochs: 3\n  epoch_rows: 5000\nspark:\n  master: local[2]\n  shuffle_partitions: 2\n")
    assert main(["sample", "--out", flows, "--days", "2", "--flows-per-day", "3000", "--seed", "3"]) == 0
    assert sorted(os.listdir(flows)) == ["_labels.parquet", "date=2026-11-01", "date=2026-11-02"]
    assert main(["train", "--flows", flows, "--model", model, "--end", "2026-11-01", "--target-fpr", "0.001",
                 "--conf", str(conf)]) == 0
    meta = json.loads(Path(model, "model.json").read_text())
    assert meta["threshold_info"]["target_fpr"] == 0.001
    assert meta["train_start"] == meta["train_end"] == "2026-11-01"
    assert os.path.isfile(os.path.join(model, "MODEL_CARD.md")) and os.path.isfile(os.path.join(model, "model.pt"))
    capsys.readouterr()
    assert main(["score", "--flows", flows, "--model", model, "--warehouse", wh]) == 0
    out = capsys.readouterr().out
    assert "anomalies" in out and "writer" in out
    n = DeltaTable(os.path.join(wh, "anomalies")).to_pyarrow_table().num_rows
    assert main(["sql", "--warehouse", wh, "SELECT count(*) AS n FROM anomalies"]) == 0
    assert f"|{n}|" in capsys.readouterr().out.replace(" ", "")
    assert main(["sql", "--warehouse", wh, "SELECT sum(anomalies) AS n FROM runs WHERE status = 'succeeded'"]) == 0
    assert f"|{n}|" in capsys.readouterr().out.replace(" ", "")


@pytest.mark.parametrize(
    "argv, words",
    [
        (["train", "--flows", "/nonexistent/archive", "--model", "{model}"],
         ["/nonexistent/archive", "does not exist"]),
        (["score", "--flows", "{flows}", "--model", "/nonexistent/model", "--warehouse", "{wh}"],
         ["/nonexistent/model", "portprint train"]),
        (["train", "--flows", "{flows}", "--model", "{model}", "--start", "2026-13-01"], ["2026-13-01", "YYYY-MM-DD"]),
        (["train", "--flows", "{flows}", "--model", "{model}", "--start", "2030-01-01"], ["no archive dates"]),
        (["score", "--flows", "{flows}", "--model", "{model}", "--warehouse", "{wh}", "--conf", "/nonexistent.yml"],
         ["/nonexistent.yml"]),
        (["sql", "--warehouse", "{wh}", "SELECT nope FROM anomalies"], ["nope"]),
    ],
)
def test_bad_input_exits_non_zero_with_one_line(spark, tmp_path, capsys, argv, words):
    flows = tmp_path / "flows"
    (flows / "date=2026-11-01").mkdir(parents=True)
    values = {"flows": str(flows), "model": str(tmp_path / "model"), "wh": str(tmp_path / "wh")}
    code = main([a.format(**values) for a in argv])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and err[0].startswith("portprint: error:"), err
    for w in words:
        assert w in err[0]


def test_without_java_the_cli_says_how_to_install_it(tmp_path):
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k not in ("JAVA_HOME", "SPARK_HOME")}
    env["PATH"] = str(tmp_path)  # no java on it
    (tmp_path / "flows" / "date=2026-11-01").mkdir(parents=True)
    proc = subprocess.run([sys.executable, "-m", "portprint.jobs.cli", "train", "--flows", str(tmp_path / "flows"),
                           "--model", str(tmp_path / "m")], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "Java 17" in proc.stderr and "apt-get install" in proc.stderr
