"""The scoring job, unchanged, on Spark Connect: the same anomalies as on the classic session.

Databricks serverless and shared clusters give jobs a Spark Connect session: no SparkContext, no
``_jvm``. pyspark 4.2 starts such a session locally with ``SparkSession.builder.remote("local[2]")``.
A process can hold a classic or a Connect session, not both, so the Connect run happens in a
subprocess while this process keeps the suite's classic session.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pyarrow as pa
import pytest
from deltalake import DeltaTable

from portprint.jobs.score import run_score

pytestmark = pytest.mark.slow
DAYS = ["2026-11-01", "2026-11-02"]  # the small archive's (conftest)

CONNECT_SCRIPT = textwrap.dedent("""\
    import dataclasses, json, sys
    from pyspark.sql import SparkSession

    from portprint.conf.config import load_config
    from portprint.jobs.score import run_score
    from portprint.jobs.engine.session import build_session

    from portprint.jobs.engine.session import local_options

    # The server gets a local session's own conf (the Delta jars among it), as a Databricks cluster has them.
    builder = SparkSession.builder.remote("local[2]")
    base = load_config("local", overrides={"spark": {"master": "local[2]", "shuffle_partitions": 2}})
    for key, value in local_options(base).items():
        if key not in ("spark.master", "spark.driver.bindAddress", "spark.driver.host"):
            builder = builder.config(key, value)
    spark = builder.getOrCreate()
    try:
        for line in sys.stdin:  # each line one job's arguments, sent once the archive and model exist
            if not line.strip():
                break
            args = json.loads(line)
            cfg = load_config("local", overrides=args["overrides"])
            # The CLI's path: build_session must hand back the Connect session, not start a classic one.
            same = build_session(cfg) is spark
            try:
                spark.sparkContext
                has_context = True
            except Exception:
                has_context = False
            report = run_score(spark, cfg, args["flows"], args["model"], args["warehouse"], new_only=True,
                               log=lambda m: None)
            print("PORTPRINT-REPORT " + json.dumps({
                "session": type(spark).__module__ + "." + type(spark).__qualname__,
                "build_session_returns_it": same, "has_spark_context": has_context,
                "report": dataclasses.asdict(report)}, default=str), flush=True)
    finally:
        spark.stop()
""")


def _connect_deps_missing() -> str | None:
    import importlib.util

    missing = [m for m in ("grpc", "grpc_status", "google.rpc", "zstandard") if importlib.util.find_spec(m) is None]
    return ", ".join(missing) if missing else None


class ConnectRunner:
    """A subprocess holding a local Spark Connect session, started early so its JVM boots while this
    process trains; it scores once when given its arguments."""

    def __init__(self, log_path: str) -> None:
        env = dict(os.environ)
        for name in ("SPARK_REMOTE", "SPARK_CONNECT_MODE_ENABLED", "SPARK_LOCAL_REMOTE"):
            env.pop(name, None)
        env["PYSPARK_PYTHON"] = sys.executable
        env["PYSPARK_DRIVER_PYTHON"] = sys.executable
        # pyspark's test mode binds the Connect server to an ephemeral port (and the client asks the
        # server which one), so this test never fights another Spark Connect server for port 15002.
        env["SPARK_TESTING"] = "1"
        self.log_path = log_path
        self._log = open(log_path, "w")  # noqa: SIM115 - closed in close()
        self.proc = subprocess.Popen([sys.executable, "-c", CONNECT_SCRIPT], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=self._log, text=True, env=env)

    def start_score(self, flows: str, model: str, warehouse: str, cfg) -> None:
        """Send the job's arguments, with the whole configuration of the classic run."""
        overrides = {k: v for k, v in dataclasses.asdict(cfg).items() if k != "env"}
        args = {"flows": flows, "model": model, "warehouse": warehouse, "overrides": overrides}
        try:
            self.proc.stdin.write(json.dumps(args) + "\n")
            self.proc.stdin.flush()
        except BrokenPipeError:
            pass  # it died while starting; result() reports why

    def result(self, timeout: float = 600) -> dict:
        """The next job's report (the session lives on for the next job)."""
        seen = []
        while True:
            line = self.proc.stdout.readline()
            if not line:
                break
            if line.startswith("PORTPRINT-REPORT "):
                return json.loads(line[len("PORTPRINT-REPORT "):])
            seen.append(line)
        self.proc.wait(timeout=timeout)
        with open(self.log_path) as fh:
            err = fh.read()
        pytest.fail(f"Spark Connect run failed (exit {self.proc.returncode}):\n{err[-4000:]}\n{''.join(seen)[-2000:]}")

    def close(self) -> None:
        if self.proc.poll() is None:
            if self.proc.stdin and not self.proc.stdin.closed:
                self.proc.stdin.close()  # an empty line: the script stops its session and exits
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()


@pytest.fixture(scope="session")
def connect_runner(tmp_path_factory):
    """Session-scoped only so that, run alone, it starts before the suite's classic session."""
    if _connect_deps_missing():
        pytest.skip(f"Spark Connect client libraries missing ({_connect_deps_missing()}): "
                    "pip install -e '.[local,test]'")
    runner = ConnectRunner(str(tmp_path_factory.mktemp("connect-log") / "stderr.txt"))
    yield runner
    runner.close()


@pytest.fixture
def archive(small_archive) -> str:
    return small_archive


@pytest.fixture
def model(quick_model) -> str:
    """A quickly trained model: the point is that both sessions apply the same one, not its quality."""
    return quick_model


def _anomalies(warehouse: str, name: str = "anomalies") -> pa.Table:
    return DeltaTable(os.path.join(warehouse, name)).to_pyarrow_table().sort_by("flow_id")


def test_score_on_spark_connect_matches_the_classic_session(connect_runner, spark, wcfg, writer, archive, model,
                                                            tmp_path):
    cfg = wcfg
    classic_wh, connect_wh = str(tmp_path / "classic"), str(tmp_path / "connect")
    connect_runner.start_score(archive, model, connect_wh, cfg)
    # Both runs at once: the Connect server's Python workers warm up while the classic run scores.
    # As the nightly job runs it (--new-only); on an empty warehouse that is every date.
    classic = run_score(spark, cfg, archive, model, classic_wh, new_only=True, log=lambda m: None)
    got = connect_runner.result()

    assert got["session"] == "pyspark.sql.connect.session.SparkSession"
    assert got["has_spark_context"] is False  # really the serverless situation: no SparkContext
    assert got["build_session_returns_it"] is True
    remote = got["report"]
    assert classic.writer == remote["writer"] == writer  # Spark's Delta writer on Connect too, or delta-rs
    for key in ("dates", "flows_read", "flows_scored", "flows_skipped", "anomalies", "model_version"):
        assert remote[key] == getattr(classic, key), key

    a, b = _anomalies(classic_wh, cfg.output.anomalies), _anomalies(connect_wh, cfg.output.anomalies)
    assert a.num_rows > 0
    assert b["flow_id"].to_pylist() == a["flow_id"].to_pylist()
    # The losses agree to float32 precision, not bit for bit: the autoencoder runs in float32, and its
    # results depend slightly on how rows are batched (measured: up to ~1e-5 relative across batch splits).
    for col in ("loss", "score"):
        np.testing.assert_allclose(b[col].to_numpy(), a[col].to_numpy(), rtol=1e-4, err_msg=col)
    same_columns = [c for c in a.column_names if c not in ("run_id", "scored_at", "loss", "score")]
    assert b.select(same_columns).equals(a.select(same_columns))

    runs = DeltaTable(os.path.join(connect_wh, cfg.output.runs)).to_pyarrow_table()
    by_status = {s: sorted(d for d, x in zip(runs["date"].to_pylist(), runs["status"].to_pylist(), strict=True)
                           if x == s) for s in set(runs["status"].to_pylist())}
    assert by_status == {"committing": DAYS, "succeeded": DAYS}

    p_classic = DeltaTable(os.path.join(classic_wh, cfg.output.patterns)).to_pyarrow_table().sort_by("pattern")
    p_connect = DeltaTable(os.path.join(connect_wh, cfg.output.patterns)).to_pyarrow_table().sort_by("pattern")
    assert p_classic.num_rows > 0
    assert p_connect.equals(p_classic)  # counts, sketches' estimates, examples, first and last seen
