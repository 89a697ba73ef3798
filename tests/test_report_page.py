"""`portprint report`: numbers against DuckDB over the Delta tables, hostile text inert in HTML and Markdown, the
page rendered by Chromium without script errors, and no torch on the report's side."""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import duckdb
import pyarrow as pa
import pytest
from deltalake import DeltaTable, write_deltalake
from markdown_it import MarkdownIt

from portprint.jobs.report import write_report
from portprint.jobs.warehouse.tables import ANOMALIES, PATTERNS, RUNS, SUPPRESSIONS, VERDICTS

pytestmark = pytest.mark.slow
UTC = dt.timezone.utc
EVIL = "<script>alert(1)</script>|`x`**b**\x1b[31m\x00\u202e<img src=x onerror=alert(2)>"
START, END = "2026-11-03", "2026-11-16"
SUPPRESSED_SRC = "10.9.9.9"


def _warehouse(wh: str) -> None:
    """Three weeks of runs (a gap, a spike, a rescore with a new model, a failed run), anomalies of every
    detector, patterns, verdicts and a rule; hostile text in names, prefixes and patterns."""
    runs, anomalies, patterns = [], [], []
    for i in range(21):
        if i in (6, 7):
            continue
        d = (dt.date(2026, 11, 1) + dt.timedelta(days=i)).isoformat()
        n_rule, n_pair = 3 + i % 4, (9 if i == 12 else i % 3)
        version = "model-a" if i < 10 else "model-b"
        started = dt.datetime(2026, 11, 2, 2, tzinfo=UTC) + dt.timedelta(days=i)
        base = dict.fromkeys(RUNS.names) | {"date": d, "flows_read": 10_000 + i, "flows_scored": 9_000 + 10 * i,
                                            "flows_skipped": 3, "model_flagged": 0, "rule_flagged": n_rule,
                                            "threshold": 0.1, "writer": "delta-rs", "seconds": 1.0, "archive": "/a"}
        runs.append(base | {"run_id": f"r{i}", "status": "succeeded", "anomalies": n_rule + n_pair + 1,
                            "model_version": version, "started_at": started})
        if i == 11:  # an older run of the same date, superseded by the one above
            runs.append(base | {"run_id": "old", "status": "succeeded", "anomalies": 500, "model_version": "model-a",
                                "started_at": started - dt.timedelta(hours=5), "flows_scored": 1})
        if i == 13:  # a later failed run changes nothing
            runs.append(base | {"run_id": "bad", "status": "failed", "anomalies": 999, "model_version": "model-c",
                                "started_at": started + dt.timedelta(hours=5)})
        ts = dt.datetime.fromisoformat(d).replace(tzinfo=UTC) + dt.timedelta(hours=3)
        common = {"date": d, "dst_port": 53, "src_port": 40000, "model_version": version, "run_id": f"r{i}",
                  "scored_at": started, "threshold": 0.1, "loss": 0.01, "score": 0.1}
        for j in range(n_rule):
            src = SUPPRESSED_SRC if j == 0 else f"10.0.{i}.{j}"
            anomalies.append(common | {"flow_id": f"R{i}-{j}", "ts": ts + dt.timedelta(minutes=j), "src_ip": src,
                                       "dst_ip": "192.0.2.53", "proto": 6, "detector": "header-rule",
                                       "header_verdict": "invalid", "header_reason": "opcode",
                                       "prefix_hex": "5353482d322e302d" if j % 2 else "16030102aa", "prefix_len": 8,
                                       "prefix_text": "SSH-2.0-" if j % 2 else EVIL})
        for j in range(n_pair):
            anomalies.append(common | {"flow_id": f"P{i}-{j}", "ts": ts + dt.timedelta(minutes=30 + j),
                                       "src_ip": "10.1.1.1", "dst_ip": f"198.51.100.{j % 2}", "proto": 17,
                                       "detector": "tunnel", "header_verdict": "valid", "header_reason": "ok",
                                       "prefix_hex": "00", "qname": f"{j}{EVIL}.t.evil.example.",
                                       "qname_complete": True, "qname_score": 0.5 + j / 10,
                                       "escalation": "shape", "escalation_group": "z:evil.example",
                                       "escalation_level": "client", "escalation_names": 40 + i,
                                       "escalation_hits": 30 + i, "escalation_clients": 1,
                                       "escalation_bytes": 900 + i,
                                       "escalation_reason": f"shape: {30 + i} of {40 + i} names"})
        anomalies.append(common | {"flow_id": f"M{i}", "ts": ts + dt.timedelta(hours=5), "src_ip": "10.2.2.2",
                                   "dst_ip": "192.0.2.53", "proto": 17, "detector": "header-model",
                                   "header_verdict": "valid", "header_reason": "ok",
                                   "prefix_hex": "123484000001000500000000", "score": 2.0})
    for k, (p, first) in enumerate([("bytes tcp 5353482d", "2026-11-01"), ("bytes tcp 16030102", "2026-11-05"),
                                    (f"qname *.{EVIL}", "2026-11-09"), ("dns udp flags=8400 qd=0001 an=0005",
                                                                       "2026-11-20")]):
        f = dt.datetime.fromisoformat(first).replace(tzinfo=UTC) + dt.timedelta(hours=k)
        patterns.append(dict.fromkeys(PATTERNS.names) | {
            "pattern": p, "detector": "header-rule", "first_seen": f, "last_seen": f + dt.timedelta(days=3),
            "days": 3, "flows": 10 + k, "distinct_sources": 2, "distinct_destinations": 1,
            "example_prefix_text": EVIL, "model_versions": ["model-a"]})
    t0 = dt.datetime(2026, 11, 10, 9, tzinfo=UTC)
    verdicts = [dict.fromkeys(VERDICTS.names) | v for v in (
        {"verdict_id": "a", "recorded_at": t0, "recorded_by": "ana", "target_kind": "pattern",
         "pattern": "bytes tcp 5353482d", "status": "benign"},
        {"verdict_id": "b", "recorded_at": t0 + dt.timedelta(hours=1), "recorded_by": "bob", "target_kind": "pattern",
         "pattern": "dns udp flags=8400 qd=0001 an=0005", "status": "duplicate"},
        {"verdict_id": "c", "recorded_at": t0, "recorded_by": "x", "target_kind": "flow", "status": "bogus"})]
    rule = dict.fromkeys(SUPPRESSIONS.names) | {"rule_id": "mon1", "kind": "src", "value": SUPPRESSED_SRC,
                                                "reason": EVIL, "created_by": "ana", "created_at": t0}
    for name, data, schema, part in (("runs", runs, RUNS, ["date"]), ("anomalies", anomalies, ANOMALIES, ["date"]),
                                     ("anomaly_patterns", patterns, PATTERNS, None),
                                     ("verdicts", verdicts, VERDICTS, None),
                                     ("suppressions", [rule], SUPPRESSIONS, None)):
        rows = [dict.fromkeys(schema.names) | r for r in data]
        write_deltalake(os.path.join(wh, name), pa.Table.from_pylist(rows, schema=schema), partition_by=part)


@pytest.fixture(scope="module")
def report(spark, cfg, tmp_path_factory):
    wh = str(tmp_path_factory.mktemp("report-wh"))
    _warehouse(wh)
    out = str(tmp_path_factory.mktemp("report-out"))
    at = dt.datetime(2026, 11, 25, tzinfo=UTC)
    files = write_report(spark, cfg, wh, out, START, END, at=at)
    return wh, out, files, json.loads(Path(files.data).read_text())


def _duck(wh: str) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect()
    for name in ("runs", "anomalies", "anomaly_patterns", "verdicts"):
        con.register(name, DeltaTable(os.path.join(wh, name)).to_pyarrow_dataset())
    return con


def test_report_numbers_match_an_independent_computation(report):
    wh, _, _, data = report
    con = _duck(wh)
    latest = dict((r[0], r[1:]) for r in con.execute("""
        SELECT date, flows_scored, anomalies, model_version FROM (
          SELECT *, row_number() OVER (PARTITION BY date ORDER BY started_at DESC, run_id DESC) AS n
          FROM runs WHERE status = 'succeeded') WHERE n = 1 AND date BETWEEN ? AND ?""", [START, END]).fetchall())
    per_det = {(d, k): n for d, k, n in con.execute(
        "SELECT date, detector, count(*) FROM anomalies GROUP BY ALL").fetchall()}
    daily = {r["date"]: r for r in data["daily"]}
    assert len(daily) == 14 and {d for d, r in daily.items() if r["scored"]} == set(latest)
    for d, (flows, anomalies, version) in latest.items():
        r = daily[d]
        assert (r["flows_scored"], r["anomalies"], r["model_version"]) == (flows, anomalies, version)
        assert r["detectors"] == {k: per_det.get((d, k), 0) for k in r["detectors"]}
        assert r["rate"] == pytest.approx(anomalies / flows)
    assert data["flows_scored"] == sum(v[0] for v in latest.values())
    assert data["model_changes"] == ["2026-11-11"]
    assert [(m["model_version"], m["from"], m["to"]) for m in data["models"]] == [
        ("model-a", START, "2026-11-10"), ("model-b", "2026-11-11", END)]
    new = con.execute("SELECT count(*) FROM anomaly_patterns WHERE strftime(first_seen, '%Y-%m-%d') BETWEEN ? AND ?",
                      [START, END]).fetchone()[0]
    assert data["new_patterns_total"] == new == 2
    groups = con.execute("""SELECT date, escalation_group, src_ip, escalation, count(*), count(DISTINCT src_ip),
        max(escalation_names), max(escalation_hits), max(escalation_bytes), max(escalation_reason)
        FROM anomalies WHERE detector = 'tunnel' AND date BETWEEN ? AND ? GROUP BY ALL""", [START, END]).fetchall()
    assert data["tunnels_total"] == len(groups) > 0
    got = {(p["date"], p["escalation_group"], p["client"], p["escalation"]):
           (p["flows"], p["sources"], p["names"], p["hits"], p["label_bytes"], p["reason"]) for p in data["tunnels"]}
    assert got == {tuple(g[:4]): tuple(g[4:]) for g in groups}
    # Triage, by hand: pattern verdicts by prefix; the rule hides its source; the bad verdict row is ignored.
    status = dict(con.execute("""
        SELECT status, count(*) FROM (
          SELECT CASE WHEN src_ip = ? THEN 'suppressed'
                      WHEN detector = 'header-rule' AND prefix_hex LIKE '5353482d%' THEN 'benign'
                      WHEN detector = 'header-model' THEN 'duplicate' ELSE 'new' END AS status
          FROM anomalies WHERE date BETWEEN ? AND ?) GROUP BY status""", [SUPPRESSED_SRC, START, END]).fetchall())
    assert data["triage"]["by_status"] == {s: status.get(s, 0) for s in ("new", "confirmed", "benign", "duplicate",
                                                                       "suppressed")}
    waits = con.execute("""
        SELECT median(greatest(epoch(v.recorded_at) - epoch(a.ts), 0)) / 3600 FROM anomalies a JOIN verdicts v
        ON (v.pattern = 'bytes tcp 5353482d' AND a.prefix_hex LIKE '5353482d%' AND a.src_ip <> ?)
        OR (v.pattern LIKE 'dns udp%' AND a.detector = 'header-model') WHERE a.date BETWEEN ? AND ?""",
                        [SUPPRESSED_SRC, START, END]).fetchone()[0]
    assert data["triage"]["median_hours_to_verdict"] == pytest.approx(waits)
    assert data["triage"]["ignored_verdict_rows"] == 1
    oldest = con.execute("""SELECT flow_id FROM anomalies WHERE date BETWEEN ? AND ? AND src_ip <> ?
        AND NOT (detector = 'header-rule' AND prefix_hex LIKE '5353482d%') AND detector <> 'header-model'
        ORDER BY ts, flow_id LIMIT 1""", [START, END, SUPPRESSED_SRC]).fetchone()[0]
    assert data["triage"]["oldest_untriaged"]["flow_id"] == oldest
    (rule,) = data["suppressions"]
    assert rule["hidden_now"] == status["suppressed"]


class _Tags(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags, self.text = [], []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data):
        self.text.append(data)


TEMPLATE_TAGS = {"html", "head", "meta", "title", "style", "body", "h1", "h2", "p", "ul", "li", "img", "div", "table",
                 "thead", "tbody", "tr", "th", "td"}


def test_hostile_text_is_inert_in_html_and_markdown(report):
    files = report[2]
    page = Path(files.html).read_text()
    parser = _Tags()
    parser.feed(page)
    assert {t for t, _ in parser.tags} <= TEMPLATE_TAGS
    imgs = [a for t, a in parser.tags if t == "img"]
    assert len(imgs) == 2 and all(a["src"].startswith("data:image/png;base64,") for a in imgs)
    assert not any(k.startswith("on") for _, a in parser.tags for k in a)
    shown = "".join(parser.text)
    assert "<script>alert(1)</script>|`x`**b**\\x1b[31m\\x00\\u202e" in shown  # visible, as text
    assert "\x1b" not in page and "\x00" not in page and "\u202e" not in page
    text = Path(files.markdown).read_text()
    assert "\x1b" not in text and "\x00" not in text and "\u202e" not in text
    md = MarkdownIt("commonmark", {"html": True}).enable("table")
    tokens = md.parse(text)
    assert not [t for t in tokens if t.type in ("html_block", "html_inline")]
    rendered = md.render(text)
    assert "<script" not in rendered and "<img src=\"x\"" not in rendered and "<strong>" not in rendered
    assert rendered.count("<img") == 2
    # Pipes inside cells stay inside them: every row of a table has its header's cell count.
    tables = MarkdownIt("commonmark").enable("table").render(text).split("<table>")[1:]
    for table in tables:
        widths = {row.count("<td") + row.count("<th") for row in table.split("</table>")[0].split("<tr>")[1:]}
        assert len(widths) == 1, widths
    # The per-day table in the Markdown twin holds the same numbers as report.json.
    data = json.loads(Path(files.data).read_text())
    first = next(r for r in data["daily"] if r["scored"])
    assert f"| {first['date']} | {first['flows_scored']:,} | {first['anomalies']:,} |" in text


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


@pytest.mark.skipif(_chromium() is None, reason="no chromium on PATH: .ci/run installs Debian's chromium")
def test_the_page_renders_in_chromium_without_script_errors(report, tmp_path):
    files = report[2]
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={tmp_path / 'p'}",
             "--enable-logging=stderr", "--v=0"]
    url = Path(files.html).resolve().as_uri()
    dom = subprocess.run([_chromium(), *flags, "--dump-dom", url], capture_output=True, text=True, timeout=180)
    assert dom.returncode == 0, dom.stderr[-2000:]
    for section in ("daily", "models", "patterns", "tunnels", "triage", "suppressions", "blind-spots"):
        assert f'id="{section}"' in dom.stdout
    assert "<script" not in dom.stdout
    console = [ln for ln in dom.stderr.splitlines() if "CONSOLE" in ln or "Uncaught" in ln]
    assert not console, console
    shot = tmp_path / "page.png"
    run = subprocess.run([_chromium(), *flags, f"--screenshot={shot}", "--window-size=1280,2400", url],
                         capture_output=True, text=True, timeout=180)
    assert run.returncode == 0 and shot.stat().st_size > 50_000


def test_the_report_side_never_imports_torch(report, tmp_path):
    data = report[3]
    Path(tmp_path, "data.json").write_text(json.dumps(data))
    notebooks = Path(__file__).resolve().parents[1] / "notebooks"
    imports = "\n".join(line for nb in sorted(notebooks.glob("*.py")) for line in nb.read_text().splitlines()
                        if line.startswith(("from portprint", "import portprint")))
    code = f"""
import json, sys
from portprint.jobs import export, report, sql, suppress, triage
from portprint.jobs.engine import render
from portprint.jobs.warehouse import views
{imports}
report.write_files(json.load(open({str(tmp_path / 'data.json')!r})), {str(tmp_path / 'out')!r})
bad = sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.') or m == 'portprint.udfs.scoring')
print(json.dumps(bad))
"""
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    assert json.loads(run.stdout.strip().splitlines()[-1]) == []
    assert (tmp_path / "out" / "report.html").stat().st_size > 10_000


def test_report_and_export_from_the_command_line(report, tmp_path, capsys):
    from portprint.jobs.cli import main

    wh = report[0]
    assert main(["report", "--warehouse", wh, "--start", START, "--end", END, "--out", str(tmp_path / "r")]) == 0
    assert f"report of {START}..{END}" in capsys.readouterr().out
    assert {"report.html", "report.md", "report.json", "trend.png", "detectors.png"} <= set(os.listdir(tmp_path / "r"))
    assert main(["report", "--warehouse", wh, "--start", END, "--end", START, "--out", str(tmp_path / "x")]) == 2
    assert "is after --end" in capsys.readouterr().err
    out = str(tmp_path / "alerts.csv")
    assert main(["export", "--warehouse", wh, "--format", "csv", "--out", out]) == 0
    printed = capsys.readouterr().out
    n = int(printed.split()[1])
    assert n > 0 and len(Path(out).read_text().splitlines()) == n + 1  # the header, then one row per anomaly
    assert main(["export", "--warehouse", wh, "--format", "csv", "--out", out]) == 0
    assert capsys.readouterr().out.startswith("exported 0 anomalies")
