"""Helpers for the nightly-run tests (lifecycle, crashes, concurrency, bad input): a small archive, two real model
folders that flag very differently, the warehouse's tables read back with delta-rs, and `portprint` run as a
child process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml
from deltalake import DeltaTable
from model_fixtures import make_artifact

DAYS = ["2026-10-01", "2026-10-02"]
# Columns that name the run or the moment, not the verdict: they differ between two runs of the same work.
VOLATILE = {"run_id", "scored_at", "started_at", "logged_at", "seconds", "chunk"}


def write_models(folder: Path) -> tuple[str, str]:
    """Two model folders: ``quiet`` (header threshold far above its losses: the rule and the question model
    decide) and ``loud`` (its calibrated threshold: an untrained network then flags a third of the flows)."""
    quiet = make_artifact(seed=0, threshold=10.0).save(str(folder / "quiet"))
    loud = make_artifact(seed=0).save(str(folder / "loud"))
    return str(quiet), str(loud)


def table_rows(wh: str, name: str) -> list[dict]:
    """A table's rows without the run's own columns, in a stable order (empty if the table does not exist)."""
    path = os.path.join(wh, name)
    if not os.path.isdir(os.path.join(path, "_delta_log")):
        return []
    rows = [{k: v for k, v in r.items() if k not in VOLATILE} for r in DeltaTable(path).to_pyarrow_table().to_pylist()]
    return sorted(rows, key=repr)


def latest_success(wh: str) -> dict[str, dict]:
    """Per date, the runs row of its latest successful attempt (without the run's own columns)."""
    out: dict[str, dict] = {}
    for r in DeltaTable(os.path.join(wh, "runs")).to_pyarrow_table().sort_by("logged_at").to_pylist():
        if r["status"] == "succeeded":
            out[r["date"]] = {k: v for k, v in r.items() if k not in VOLATILE | {"reason", "error"}}
    return out


def same_tables(a: str, b: str) -> None:
    """Assert two warehouses hold the same verdicts: every table's rows, and each date's closing runs row."""
    for name in ("anomalies", "anomaly_pattern_days", "anomaly_patterns", "suppression_hits"):
        ra, rb = table_rows(a, name), table_rows(b, name)
        assert ra == rb, f"{name}: {len(ra)} rows vs {len(rb)}"
    assert latest_success(a) == latest_success(b)


def staging_left(wh: str) -> list[str]:
    folder = os.path.join(wh, "_staging")
    return sorted(os.listdir(folder)) if os.path.isdir(folder) else []


def conf_file(path: Path, master: str = "local[2]", **output) -> str:
    """Write a --conf for child processes: the suite's small Spark session, plus output settings."""
    path.write_text(yaml.safe_dump({"spark": {"master": master, "shuffle_partitions": 2, "arrow_batch_rows": 8192},
                                    **({"output": output} if output else {})}))
    return str(path)


def portprint(args: list[str], env: dict[str, str] | None = None, log: Path | None = None) -> subprocess.Popen:
    """`portprint ARGS` as a child process (stdout and stderr to ``log``)."""
    out = open(log, "w") if log else subprocess.DEVNULL  # noqa: SIM115 - closed by the child's end
    return subprocess.Popen([sys.executable, "-m", "portprint.jobs.cli", *args], stdout=out, stderr=subprocess.STDOUT,
                            env=dict(os.environ, PYSPARK_PYTHON=sys.executable, **(env or {})))


def wait_for(path: Path, child: subprocess.Popen, timeout: float = 300) -> bool:
    """Wait until ``path`` exists (True) or the child ends first (False)."""
    deadline = time.monotonic() + timeout
    while not path.exists():
        if child.poll() is not None or time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def kill_at(args: list[str], point: str, tmp: Path) -> int:
    """Run `portprint ARGS`, SIGKILL it when it reaches fault point ``point``; its exit status."""
    ready = tmp / f"ready-{point.replace(':', '-')}"
    child = portprint(args, {"PORTPRINT_FAULT": point, "PORTPRINT_FAULT_READY": str(ready)}, tmp / f"{ready.name}.log")
    if wait_for(ready, child):
        assert int(ready.read_text()) == child.pid
        os.kill(child.pid, signal.SIGKILL)
    status = child.wait(timeout=300)
    assert status == -signal.SIGKILL, f"never reached {point}: " + (tmp / f"{ready.name}.log").read_text()[-2000:]
    return status
