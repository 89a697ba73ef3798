"""Bytes from traffic and from the archive are inert where portprint prints them: the terminal and JSON.

A real archive whose strings and payloads carry HTML, ANSI escapes, NUL, invalid UTF-8 and Markdown pipes is
scored into a real warehouse, then read back with `portprint sql` and `portprint evaluate --out`.
"""

from __future__ import annotations

import json
import struct
from datetime import datetime, timezone
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given
from hypothesis import strategies as st
from model_fixtures import make_artifact

from portprint.jobs.cli import main
from portprint.jobs.engine.render import terminal as inert
from portprint.jobs.warehouse.tables import FLOWS
from portprint.models.artifact import ModelArtifact
from portprint.models.registry import Registry

ESC_CLEAR, ESC_RED = "\x1b[2J", "\x1b]0;owned\x07\x1b[31m"
HTML = "<script>alert(1)</script>"
PIPES = "| col | forged |"
INVALID = b"\xff\xfe\xc3("  # not UTF-8
DATE = "2026-11-01"


def unescape(text: str) -> bytes:
    """Read the original bytes back from inert() output (the test's own reading of the documented escapes)."""
    out, i = bytearray(), 0
    while i < len(text):
        ch = text[i]
        if ch != "\\":
            out += ch.encode("utf-8")
            i += 1
            continue
        kind = text[i + 1]
        if kind in "\\|":
            out += kind.encode()
            i += 2
        elif kind == "x":
            out.append(int(text[i + 2:i + 4], 16))
            i += 4
        else:
            width = 4 if kind == "u" else 8
            out += chr(int(text[i + 2:i + 2 + width], 16)).encode("utf-8")
            i += 2 + width
    return bytes(out)


def cells_of(line: str) -> list[str]:
    """The cells of one printed table line, splitting at bars that no backslash escapes."""
    cells, cur, i = [], "", 0
    while i < len(line):
        if line[i] == "\\":
            cur += line[i:i + 2]
            i += 2
        elif line[i] == "|":
            cells.append(cur)
            cur, i = "", i + 1
        else:
            cur += line[i]
            i += 1
    return [*cells, cur]


def assert_inert(text: str) -> None:
    bad = [f"U+{ord(c):04X}" for c in text if c != "\n" and not c.isprintable()]
    assert not bad, f"non-printable characters reached the terminal: {bad[:10]}"


@given(st.binary(max_size=64))
def test_inert_is_printable_and_reversible_for_any_bytes(raw):
    text = inert(raw)
    assert_inert(text)
    assert "\n" not in text and "|" not in text.replace("\\|", "")
    assert unescape(text) == raw


@given(st.text(max_size=40))
def test_inert_reverses_any_text(value):
    text = inert(value)
    assert_inert(text)
    assert unescape(text) == value.encode("utf-8", "surrogatepass")


def test_inert_examples():
    assert inert(ESC_CLEAR + "x") == "\\x1b[2Jx"
    assert inert(INVALID) == "\\xff\\xfe\\xc3("
    assert inert("a\x00b") == "a\\x00b"
    assert inert(HTML) == HTML  # markup is inert on a terminal; it is the reports' business to escape it
    assert inert("x|y\\z") == "x\\|y\\\\z"
    assert inert("rtl\u202eexe.txt") == "rtl\\u202eexe.txt" and inert("\u0085") == "\\u0085"


def _dns(qid: int, labels: list[bytes], opcode: int = 0) -> bytes:
    head = struct.pack(">HHHHHH", qid, opcode << 11 | 0x0100, 1, 0, 0, 0)
    return head + b"".join(bytes([len(x)]) + x for x in labels) + b"\x00\x00\x01\x00\x01"


def _strings(values: list[bytes]) -> pa.Array:
    """A string column holding exactly these bytes, valid UTF-8 or not (as another tool may have written it)."""
    offsets = [0]
    for v in values:
        offsets.append(offsets[-1] + len(v))
    return pa.Array.from_buffers(pa.string(), len(values), [None, pa.py_buffer(struct.pack(f"<{len(offsets)}i",
                                                                                             *offsets)),
                                                            pa.py_buffer(b"".join(values))])


# (flow_id, src_ip, prefix, label): the prefixes fail the header rule, so each flow lands in anomalies.
FLOWS_ROWS = [
    (b"f1-" + ESC_CLEAR.encode() + ESC_RED.encode(), b"10.0.0.1", b"\x1b[2J" + HTML.encode() + b"\x00\xff|x|", "dns"),
    (b"f2-" + HTML.encode(), (ESC_RED + "10.0.0.2").encode(),
     _dns(7, [ESC_RED.encode(), b"a|b", b"nul\x00z", INVALID, b"<i>"], opcode=14), HTML),
    (b"f3-" + PIPES.encode(), b"10.0.0.3\x00", b"SSH-2.0-" + ESC_CLEAR.encode() + PIPES.encode(), "x" + ESC_RED),
    (b"f4-" + INVALID, b"10.0.0.4", b"\x00\x00" + INVALID * 4, None),
    (b"f5-nul\x00end", b"10.0.0.5", _dns(9, [b"www", b"example", b"com"], opcode=15), "nul\x00" + PIPES),
]


@pytest.fixture(scope="module")
def hostile(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("hostile")
    n = len(FLOWS_ROWS)
    ts = datetime(2026, 11, 1, 12, tzinfo=timezone.utc)
    table = pa.Table.from_arrays([
        _strings([r[0] for r in FLOWS_ROWS]), pa.array([ts] * n, FLOWS.field("ts").type),
        _strings([r[1] for r in FLOWS_ROWS]), pa.array(["192.0.2.53"] * n),
        pa.array([40000 + i for i in range(n)], pa.int32()), pa.array([53] * n, pa.int32()),
        pa.array([17] * n, pa.int8()), pa.array([r[2] for r in FLOWS_ROWS], pa.binary()),
        pa.array([None] * n, pa.binary()), pa.array([len(r[2]) for r in FLOWS_ROWS], pa.int64()),
        pa.array([0] * n, pa.int64()), pa.array([1] * n, pa.int64()), pa.array([0] * n, pa.int64()),
        pa.array([0.0] * n)], schema=FLOWS)
    (root / "flows" / f"date={DATE}").mkdir(parents=True)
    pq.write_table(table, root / "flows" / f"date={DATE}" / "part-0.parquet")
    labelled = [r for r in FLOWS_ROWS if r[3] is not None]
    pq.write_table(pa.table({"flow_id": _strings([r[0] for r in labelled]), "label": [r[3] for r in labelled]}),
                   root / "labels.parquet")
    make_artifact(seed=4).save(str(root / "model"))
    return root


def test_sql_prints_hostile_cells_inert(spark, hostile, tmp_path, capsys):
    wh, store = str(tmp_path / "wh"), str(tmp_path / "mlruns")
    # Scored with the registry's champion: score resolves the URI to a verified local copy of the folder.
    Registry.local(store).log_training(str(hostile / "model"), "portprint")
    assert main(["promote", "--model", "models:/portprint/1", "--registry", store]) == 0
    assert main(["score", "--flows", str(hostile / "flows"), "--model", "models:/portprint@champion", "--registry",
                 store, "--warehouse", wh]) == 0
    assert "model " + ModelArtifact.load(str(hostile / "model")).meta.model_version in capsys.readouterr().err
    capsys.readouterr()
    assert main(["sql", "--warehouse", wh, "SELECT flow_id, src_ip, prefix_text, qname, failed_fields, "
                 "cast(unhex(prefix_hex) AS STRING) AS raw, unhex(prefix_hex) AS bytes FROM anomalies "
                 "ORDER BY flow_id"]) == 0
    out = capsys.readouterr().out
    assert_inert(out)
    assert "\x1b" not in out and "\x00" not in out
    lines = [ln for ln in out.splitlines() if ln.startswith("|")]
    assert len(lines) == 1 + len(FLOWS_ROWS), out  # header and one row per flow: nothing was lost
    # Every printed line has exactly the table's own column separators: 7 columns between 8 bars.
    assert {len(cells_of(ln)) for ln in lines} == {9}, out
    cells = {cells_of(ln)[1].strip() for ln in lines[1:]}
    assert cells == {inert(r[0])[:60] for r in FLOWS_ROWS}, cells  # flow ids, escaped (show cuts at 60)
    assert "f4-\\xff\\xfe\\xc3(" in cells and "f5-nul\\x00end" in cells
    assert "\\x1b]0;owned\\x0710.0.0.2" in out.replace("\\x1b[31m", "")  # the address column, escaped
    assert "<i>" in out and HTML in out  # markup stays as text: a terminal does not render it


def test_evaluate_prints_labels_inert_and_its_json_stays_strict_json(spark, hostile, tmp_path, capsys):
    out = tmp_path / "ev"
    assert main(["evaluate", "--flows", str(hostile / "flows"), "--labels", str(hostile / "labels.parquet"),
                 "--model", str(hostile / "model"), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert_inert(printed)
    assert inert("x" + ESC_RED) in printed and inert("nul\x00" + PIPES)[:14] in printed  # cut to the column
    text = (out / "evaluation.json").read_text()
    assert text.isascii() and all(c == "\n" or c.isprintable() for c in text)

    def no_constants(name):
        raise AssertionError(f"{name} is not JSON")

    ev = json.loads(text, parse_constant=no_constants)
    labels = {r[3] for r in FLOWS_ROWS if r[3] is not None}
    found = set()

    def walk(v):
        if isinstance(v, dict):
            found.update(k for k in v if k in labels)
            for x in v.values():
                walk(x)
        elif isinstance(v, list):
            for x in v:
                walk(x)

    walk(ev)
    assert found == labels, found  # every hostile label survives, byte for byte, as a JSON key
