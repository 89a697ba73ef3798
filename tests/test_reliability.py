"""The reliability matrix's cases that tests/test_bad_input.py, test_artifact.py, test_nightly_faults.py and
test_hostile_output.py do not already cover (docs/operations.md lists every case and where it is tested):
prefixes longer than 64 bytes, duplicate flow ids, timestamps without a zone, two schemas in one date, and a
full disk under the warehouse (a real size-limited tmpfs in a user namespace)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from deltalake import DeltaTable
from model_fixtures import make_artifact
from nightly_fixtures import conf_file, table_rows

from portprint.jobs.sample import sample_table
from portprint.jobs.score import run_score

pytestmark = pytest.mark.slow
DAY = "2026-11-05"


@pytest.fixture(scope="module")
def day() -> pa.Table:
    flows, _ = sample_table(3000, DAY, np.random.default_rng(11))
    return flows


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> str:
    return str(make_artifact(seed=0).save(str(tmp_path_factory.mktemp("m") / "model")))


def write(root, table: pa.Table, name: str = "part-0.parquet") -> str:
    folder = os.path.join(root, f"date={DAY}")
    os.makedirs(folder, exist_ok=True)
    pq.write_table(table, os.path.join(folder, name))
    return str(root)


def score(spark, cfg, archive, model, wh, **kw):
    said: list[str] = []
    r = run_score(spark, cfg, archive, model, str(wh), log=said.append, **kw)
    return r, "\n".join(said)


def anomalies(wh) -> dict[str, dict]:
    rows = DeltaTable(os.path.join(wh, "anomalies")).to_pyarrow_table().to_pylist()
    return {r["flow_id"]: r for r in rows}


def test_prefixes_longer_than_64_bytes_are_judged_on_their_first_64(spark, cfg, day, model, tmp_path):
    long = day.set_column(day.schema.get_field_index("orig_payload_prefix"), "orig_payload_prefix",
                          pa.array([None if p is None else p + bytes(range(200)) for p in
                                    day["orig_payload_prefix"].to_pylist()], pa.binary()))
    cut = long.set_column(long.schema.get_field_index("orig_payload_prefix"), "orig_payload_prefix",
                          pa.array([None if p is None else p[:64] for p in long["orig_payload_prefix"].to_pylist()],
                                   pa.binary()))
    r_long, _ = score(spark, cfg, write(tmp_path / "long", long), model, tmp_path / "wl")
    r_cut, _ = score(spark, cfg, write(tmp_path / "cut", cut), model, tmp_path / "wc")
    assert r_long.flows_read == r_cut.flows_read == 3000
    a, b = anomalies(tmp_path / "wl"), anomalies(tmp_path / "wc")
    assert a and a.keys() == b.keys()
    keep = ("detector", "header_reason", "loss", "qname", "prefix_hex", "prefix_len")
    assert {f: tuple(r[k] for k in keep) for f, r in a.items()} == {f: tuple(r[k] for k in keep) for f, r in b.items()}
    assert max(r["prefix_len"] for r in a.values()) <= 64


def test_duplicate_flow_ids_are_kept_and_said(spark, cfg, day, model, tmp_path):
    wh = tmp_path / "wh"
    r1, _ = score(spark, cfg, write(tmp_path / "once", day), model, wh)
    flagged = sorted(anomalies(wh))
    twice = write(tmp_path / "twice", day)
    write(tmp_path / "twice", day, name="part-copy.parquet")  # the same file copied twice
    r2, said = score(spark, cfg, twice, model, tmp_path / "wh2")
    assert r2.flows_read == 2 * r1.flows_read and r2.anomalies == 2 * r1.anomalies
    ids = DeltaTable(str(tmp_path / "wh2" / "anomalies")).to_pyarrow_table()["flow_id"].to_pylist()
    assert sorted(ids) == sorted(flagged * 2)
    assert f"{DAY}: {2 * len(flagged)} anomalies share a flow_id with another row" in said


def test_timestamps_without_a_zone_are_read_as_utc(spark, cfg, day, model, tmp_path):
    naive = day.set_column(day.schema.get_field_index("ts"), "ts", day["ts"].cast(pa.timestamp("us")))
    r_utc, _ = score(spark, cfg, write(tmp_path / "utc", day), model, tmp_path / "wu")
    r_naive, _ = score(spark, cfg, write(tmp_path / "naive", naive), model, tmp_path / "wn")
    assert r_naive.flows_read == r_utc.flows_read
    a, b = anomalies(tmp_path / "wu"), anomalies(tmp_path / "wn")
    assert a.keys() == b.keys() and {f: r["ts"] for f, r in a.items()} == {f: r["ts"] for f, r in b.items()}


def test_two_flow_schemas_in_one_date_are_both_read(spark, cfg, day, model, tmp_path):
    """One file as the contract says, one with an extra column and narrower ports (uint16): same flows, same
    verdicts as the date written as one file."""
    half = day.num_rows // 2
    first, second = day.slice(0, half), day.slice(half)
    second = second.append_column("vlan", pa.array(np.arange(second.num_rows), pa.int32()))
    for col in ("src_port", "dst_port"):
        second = second.set_column(second.schema.get_field_index(col), col, pc.cast(second[col], pa.uint16()))
    mixed = tmp_path / "mixed"
    write(mixed, first, "part-0.parquet")
    write(mixed, second, "part-1.parquet")
    r_one, _ = score(spark, cfg, write(tmp_path / "one", day), model, tmp_path / "w1")
    r_mix, _ = score(spark, cfg, str(mixed), model, tmp_path / "w2")
    assert r_mix.flows_read == r_one.flows_read == day.num_rows
    assert anomalies(tmp_path / "w1").keys() == anomalies(tmp_path / "w2").keys()


FILL = r"""
set -e
mount -t tmpfs -o size=24m tmpfs "$MNT"
cp -a "$BASE" "$MNT/wh"
# Leave about 64 KiB free: the staging and the commit need more.
avail=$(df -k --output=avail "$MNT" | tail -1)
dd if=/dev/zero of="$MNT/filler" bs=1k count=$((avail - 64)) 2>/dev/null || true
set +e
"$PY" -m portprint.jobs.cli score --conf "$CONF" --flows "$FLOWS" --model "$MODEL" --warehouse "$MNT/wh" \
    --rescore --start "$DAY" --end "$DAY" > "$LOG" 2>&1
echo $? > "$RC"
rm -f "$MNT/filler"
cp -a "$MNT/wh" "$OUT"
"""


def _userns_tmpfs() -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(["unshare", "-rm", "sh", "-c", "mount -t tmpfs -o size=1m tmpfs /mnt || "
                            "mount -t tmpfs -o size=1m tmpfs /tmp"], capture_output=True)
    return probe.returncode == 0


@pytest.mark.skipif(not _userns_tmpfs(), reason="needs unprivileged user namespaces to mount a small tmpfs")
def test_a_full_disk_under_the_warehouse_fails_clearly_and_leaves_the_tables_unchanged(spark, cfg, day, tmp_path):
    archive = write(tmp_path / "flows", day)
    loud = str(make_artifact(seed=0).save(str(tmp_path / "loud")))
    base = tmp_path / "base"
    run_score(spark, cfg, archive, str(make_artifact(seed=0, threshold=10.0).save(str(tmp_path / "quiet"))),
              str(base), log=lambda m: None)
    mnt, out, log, rc = tmp_path / "mnt", tmp_path / "after", tmp_path / "child.log", tmp_path / "rc"
    mnt.mkdir()
    env = dict(os.environ, MNT=str(mnt), BASE=str(base), PY=sys.executable, CONF=conf_file(tmp_path / "c.yml"),
               FLOWS=archive, MODEL=loud, DAY=DAY, LOG=str(log), RC=str(rc), OUT=str(out),
               PYSPARK_PYTHON=sys.executable)
    subprocess.run(["unshare", "-rm", "sh", "-c", FILL], env=env, check=True, timeout=900)
    said = log.read_text()
    assert rc.read_text().strip() == "2", said[-3000:]
    assert "no space left on the device holding" in said and "rerun with --new-only" in said, said[-3000:]
    assert "Traceback" not in said
    for name in ("anomalies", "anomaly_pattern_days", "anomaly_patterns"):
        assert table_rows(str(out), name) == table_rows(str(base), name), name
    # The runs log claims nothing it did not do: no succeeded row for the failed rescore.
    runs = DeltaTable(str(out / "runs")).to_pyarrow_table().to_pylist()
    assert [r for r in runs if r["status"] == "succeeded" and r["reason"] == "rescore"] == []
