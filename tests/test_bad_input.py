"""Messy archives: every failure names what and where, and loses nothing; odd rows are counted, not dropped."""

from __future__ import annotations

import os
import shutil

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import yaml
from deltalake import DeltaTable

from portprint.conf.config import load_config
from portprint.jobs.archive.plan import ArchiveError
from portprint.jobs.sample import sample_table
from portprint.jobs.score import run_score

pytestmark = pytest.mark.slow
DAY = "2026-11-05"


def write_day(root: str, table: pa.Table, day: str = DAY, name: str = "part-0.parquet") -> str:
    folder = os.path.join(root, f"date={day}")
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, name)
    pq.write_table(table, path)
    return path


def hex_prefixes(table: pa.Table) -> pa.Table:
    """The same flows with the prefix stored as hex text, as Arkime exports it."""
    hexed = pa.array([None if b is None else b.hex() for b in table["orig_payload_prefix"].to_pylist()])
    return table.set_column(table.schema.get_field_index("orig_payload_prefix"), "orig_payload_prefix", hexed)


@pytest.fixture(scope="module")
def day_table() -> pa.Table:
    flows, _ = sample_table(8000, DAY, np.random.default_rng(5))
    return flows


@pytest.fixture(scope="module")
def model(quick_model):
    """Any trained model: these tests are about the input, not about detection."""
    return quick_model


@pytest.fixture
def archive(tmp_path, day_table) -> str:
    root = str(tmp_path / "flows")
    write_day(root, day_table)
    return root


def score(spark, cfg, archive, model, wh):
    return run_score(spark, cfg, archive, model, wh, log=lambda m: None)


def test_corrupt_file_names_the_file_and_leaves_the_table_as_it_was(spark, cfg, archive, model, tmp_path):
    wh = str(tmp_path / "wh")
    score(spark, cfg, archive, model, wh)
    version = DeltaTable(os.path.join(wh, "anomalies")).version()
    bad = os.path.join(archive, f"date={DAY}", "part-1.parquet")
    with open(os.path.join(archive, f"date={DAY}", "part-0.parquet"), "rb") as f:
        good = f.read()
    with open(bad, "wb") as f:
        f.write(good[: len(good) // 2])  # a file cut short, as by a crashed copy
    with pytest.raises(ArchiveError, match=r"part-1\.parquet") as err:
        score(spark, cfg, archive, model, wh)
    assert "rerun" in str(err.value)
    assert DeltaTable(os.path.join(wh, "anomalies")).version() == version


def test_missing_column_says_which_and_how_to_map_it(spark, cfg, archive, model, tmp_path, day_table):
    write_day(archive, day_table.drop_columns(["orig_bytes"]))
    with pytest.raises(ArchiveError, match=r"lacks column\(s\) orig_bytes.*archive.columns"):
        score(spark, cfg, archive, model, str(tmp_path / "wh"))


def test_wrong_type_names_file_and_column(spark, cfg, archive, model, tmp_path, day_table):
    t = day_table.set_column(day_table.schema.get_field_index("src_port"), "src_port",
                             pc.cast(day_table["src_port"], pa.string()))
    path = write_day(archive, t, name="part-9.parquet")
    with pytest.raises(ArchiveError, match="src_port is string") as err:
        score(spark, cfg, archive, model, str(tmp_path / "wh"))
    assert path in str(err.value)


def test_hex_text_prefix_without_config_gets_a_hint(spark, cfg, archive, model, tmp_path, day_table):
    shutil.rmtree(archive)
    write_day(archive, hex_prefixes(day_table))
    with pytest.raises(ArchiveError, match="prefix_encoding: hex"):
        score(spark, cfg, archive, model, str(tmp_path / "wh"))


def test_foreign_files_are_left_out_and_the_date_still_scores(spark, cfg, archive, model, tmp_path, capsys):
    write_day(archive, pa.table({"host": ["a"], "cpu": [0.5]}), name="metrics.parquet")
    report = score(spark, cfg, archive, model, str(tmp_path / "wh"))
    assert report.flows_read == 8000
    assert "metrics.parquet" in capsys.readouterr().err


def test_empty_range_is_refused(spark, cfg, archive, model, tmp_path):
    with pytest.raises(ArchiveError, match="no archive dates between 2027-01-01"):
        run_score(spark, cfg, archive, model, str(tmp_path / "wh"), start="2027-01-01", log=lambda m: None)


def test_an_empty_date_is_logged_with_zero_flows(spark, cfg, archive, model, tmp_path):
    os.makedirs(os.path.join(archive, "date=2026-11-06"))
    wh = str(tmp_path / "wh")
    score(spark, cfg, archive, model, wh)
    runs = DeltaTable(os.path.join(wh, "runs")).to_pyarrow_table().to_pylist()
    by_date = {r["date"]: r for r in runs if r["status"] == "succeeded"}  # each date also has its `committing` row
    assert by_date["2026-11-06"]["flows_read"] == 0
    assert by_date[DAY]["flows_read"] == 8000


def test_null_and_short_prefixes_are_counted_not_lost(spark, cfg, model, tmp_path, day_table):
    n = 6
    odd = day_table.slice(0, n).to_pylist()
    for i, row in enumerate(odd):
        row.update(flow_id=f"odd-{i}", proto=17, dst_port=53,
                   orig_payload_prefix=[None, b"", b"\x12", b"\x12\x34\x01", b"\x00", None][i])
    table = pa.concat_tables([day_table, pa.Table.from_pylist(odd, schema=day_table.schema)])
    root = str(tmp_path / "flows")
    write_day(root, table)
    report = score(spark, cfg, root, model, str(tmp_path / "wh"))
    assert report.flows_read == 8000 + n
    got = DeltaTable(str(tmp_path / "wh" / "anomalies")).to_pyarrow_table()
    flagged = dict(zip(got["flow_id"].to_pylist(), got["header_reason"].to_pylist(), strict=True))
    # Three 1- to 3-byte datagrams cannot be DNS: the rule says so; the three without payload are skipped.
    assert {f: flagged.get(f) for f in ("odd-2", "odd-3", "odd-4")} == dict.fromkeys(("odd-2", "odd-3", "odd-4"),
                                                                                      "short")
    assert not {"odd-0", "odd-1", "odd-5"} & set(flagged)
    runs = DeltaTable(str(tmp_path / "wh" / "runs")).to_pyarrow_table().to_pylist()
    empty_in_sample = sum(1 for p, d, s in zip(day_table["orig_payload_prefix"].to_pylist(),
                                              day_table["dst_port"].to_pylist(), day_table["src_port"].to_pylist(),
                                              strict=True)
                          if not p and (d == 53 or s == 53))
    assert runs[0]["flows_skipped"] == empty_in_sample + 3


def test_renamed_columns_and_hex_prefixes_through_config(spark, cfg, archive, model, tmp_path, day_table):
    wh_plain = str(tmp_path / "plain")
    score(spark, cfg, archive, model, wh_plain)
    rename = {"flow_id": "id", "src_ip": "srcIp", "dst_ip": "dstIp", "src_port": "srcPort", "dst_port": "dstPort",
              "proto": "ipProtocol", "orig_payload_prefix": "srcPayload8", "orig_bytes": "srcBytes",
              "ts": "firstPacket"}
    t = hex_prefixes(day_table)
    t = t.rename_columns([rename.get(c, c) for c in t.column_names])
    root = str(tmp_path / "arkime")
    write_day(root, t)
    conf_file = tmp_path / "arkime.yml"
    conf_file.write_text(yaml.safe_dump({"archive": {"columns": rename, "prefix_encoding": "hex"}}))
    renamed_cfg = load_config("local", str(conf_file), overrides={"spark": {"master": "local[2]"}})
    wh = str(tmp_path / "renamed")
    run_score(spark, renamed_cfg, root, model, wh, log=lambda m: None)
    a = DeltaTable(os.path.join(wh_plain, "anomalies")).to_pyarrow_table()
    b = DeltaTable(os.path.join(wh, "anomalies")).to_pyarrow_table()
    assert b.num_rows > 0
    assert sorted(a["flow_id"].to_pylist()) == sorted(b["flow_id"].to_pylist())
    assert sorted(a["prefix_hex"].to_pylist()) == sorted(b["prefix_hex"].to_pylist())
