"""`portprint report`: the period's report for people who lead, as a self-contained HTML page, a Markdown twin,
PNG plots and report.json, in the same layout every time. Called by jobs/cli.py and `make run`.

``collect`` turns the warehouse's tables (Spark DataFrames) into plain numbers; ``render_html``,
``render_markdown`` and ``draw_plots`` only format them, so they run without Spark. Every string that came
from traffic or from a person goes through jobs/engine/render.py. Nothing here imports the scoring code (no torch).
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import os
import statistics
from dataclasses import dataclass, field

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from portprint.conf.config import Config
from portprint.jobs import triage
from portprint.jobs.archive.plan import parse_date
from portprint.jobs.engine.render import html_text, md
from portprint.jobs.warehouse import delta as delta_io
from portprint.jobs.warehouse import people as people_tables
from portprint.jobs.warehouse.tables import ANOMALIES, PATTERNS, RUNS, SUPPRESSION_HITS
from portprint.jobs.warehouse.views import latest_per_date, trend_frame
from portprint.udfs.suppress import DETECTOR_NAMES, Rule

PERIOD_DAYS = 14
TOP = 25  # rows shown per list; the count of the rest is stated
PLOTS = ("trend.png", "detectors.png")
BLIND_SPOTS = (
    "A tunnel whose names look like hash lookups (short hex or base32 labels: beacons, low-and-slow exfiltration) "
    "is caught only by the odd rule, which needs a question model trained on traffic like the day's and goes quiet "
    "when the day differs in kind.",
    "A tunnel that spreads names of hash-like labels over many source addresses is not caught: only names no host "
    "name has (long encoded labels) add up over all clients.",
    "Names of one or two labels are not judged by the question model, so a tunnel client that sends such names "
    "straight to its own server on port 53 is not seen by it.",
    "Only the stored prefix is seen (the first bytes a client sent): a name longer than the prefix is judged on "
    "the part that is there, and flows with no stored payload are not judged at all.",
    "Only ports in scope (53) are read: DNS over HTTPS (443) or DNS over TLS (853) is not looked at.",
    "Suppressed traffic is not written to anomalies: a rule that is too broad hides a real tunnel (see the "
    "suppressions section for what each rule hid).",
)


@dataclass
class Frames:
    """The tables a report reads."""
    runs: DataFrame
    anomalies: DataFrame
    patterns: DataFrame
    verdicts: DataFrame
    hits: DataFrame
    rules: list[Rule]
    rejected_rules: list = field(default_factory=list)


@dataclass(frozen=True)
class ReportFiles:
    start: str
    end: str
    html: str
    markdown: str
    data: str
    plots: list[str]


def frames_from_warehouse(spark: SparkSession, cfg: Config, warehouse: str) -> Frames:
    reader = delta_io.choose_writer(spark, cfg.output.writer)

    def read(key, schema):
        return people_tables.read(spark, cfg, warehouse, key, schema, reader)

    rules, rejected = triage.load_rules(spark, cfg, warehouse, reader)
    return Frames(read("runs", RUNS), read("anomalies", ANOMALIES), read("patterns", PATTERNS),
                  triage.read_verdicts(spark, cfg, warehouse, reader), read("suppression_hits", SUPPRESSION_HITS),
                  rules, rejected)


def _days(start: str, end: str) -> list[str]:
    a, b = dt.date.fromisoformat(start), dt.date.fromisoformat(end)
    return [(a + dt.timedelta(days=i)).isoformat() for i in range((b - a).days + 1)]


def _iso(ts) -> str | None:
    return None if ts is None else ts.astimezone(dt.timezone.utc).strftime("%Y-%m-%d %H:%M")


def _utc(micros: int | None) -> dt.datetime | None:
    """Timestamps leave Spark as UTC microseconds: a collected TIMESTAMP is a naive local time."""
    return None if micros is None else dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc) + dt.timedelta(
        microseconds=micros)


def collect(f: Frames, start: str | None = None, end: str | None = None, at: dt.datetime | None = None) -> dict:
    """The report's numbers, as plain data (also written as report.json)."""
    at = at or triage.now()
    latest = latest_per_date(f.runs)
    scored = {r["date"]: r.asDict() for r in latest.join(
        f.runs.where(F.col("status") == "succeeded").groupBy("date", "run_id").agg(
            F.sum("flows_scored").alias("flows_scored"),
            *([F.sum("suppressed").alias("suppressed")] if "suppressed" in f.runs.columns else [])),
        ["date", "run_id"]).collect()}
    last = max(scored) if scored else at.date().isoformat()
    end = parse_date(end, "end") if end else last
    start = parse_date(start, "start") if start else (dt.date.fromisoformat(end)
                                                      - dt.timedelta(days=PERIOD_DAYS - 1)).isoformat()
    if start > end:
        raise ValueError(f"--start {start} is after --end {end}")
    days = _days(start, end)
    trend = {r["date"]: r.asDict() for r in trend_frame(f.runs).where(F.col("date").between(start, end)).collect()}
    in_period = f.anomalies.where(F.col("date").between(start, end))
    per_det = {(r["date"], r["detector"]): r["n"] for r in in_period.groupBy("date", "detector").agg(
        F.count(F.lit(1)).alias("n")).collect()}
    versions = [(d, scored[d]["model_version"]) for d in sorted(scored) if d <= end]
    before = [v for d, v in versions if d < start]
    prev = before[-1] if before else None
    daily = []
    for d in days:
        s, t = scored.get(d), trend.get(d, {})
        row = {"date": d, "scored": s is not None}
        if s:
            flows = int(s["flows_scored"] or 0)
            version = s["model_version"]
            row |= {"flows_scored": flows, "anomalies": int(s["anomalies"] or 0),
                    "rate": (s["anomalies"] or 0) / flows if flows else None,
                    "detectors": {k: int(per_det.get((d, k), 0)) for k in DETECTOR_NAMES},
                    "detector_rates": {k: per_det.get((d, k), 0) / flows if flows else None for k in DETECTOR_NAMES},
                    "moving_avg": t.get("moving_avg"), "band_low": t.get("band_low"), "band_high": t.get("band_high"),
                    "outside_band": bool(t.get("outside_band")), "model_version": version,
                    "model_changed": prev is not None and version != prev,
                    "suppressed_at_scoring": None if s.get("suppressed") is None else int(s["suppressed"])}
            prev = version
        daily.append(row)
    used = [r for r in daily if r["scored"]]
    models = []
    for r in used:
        if not models or models[-1]["model_version"] != r["model_version"]:
            models.append({"model_version": r["model_version"], "from": r["date"], "to": r["date"], "dates": 0})
        models[-1]["to"], models[-1]["dates"] = r["date"], models[-1]["dates"] + 1

    # New patterns: first seen in the period (anomaly_patterns covers all history).
    first = F.date_format(F.col("first_seen"), "yyyy-MM-dd")
    new_patterns = f.patterns.where(first.between(start, end)).orderBy(F.col("flows").desc(), "pattern")
    n_new = new_patterns.count()
    patterns = [{"pattern": r["pattern"], "detector": r["detector"], "first_seen": _iso(_utc(r["first"])),
                 "last_seen": _iso(_utc(r["last"])), "flows": r["flows"], "sources": r["distinct_sources"],
                 "destinations": r["distinct_destinations"], "example": r["example_prefix_text"]}
                for r in new_patterns.withColumns({"first": F.unix_micros("first_seen"),
                                                   "last": F.unix_micros("last_seen")}).limit(TOP).collect()]

    # Escalated name groups (detector tunnel) with the evidence their rows carry (the escalation_* columns).
    client = F.when(F.col("escalation_level") == "zone", F.lit("all clients")).otherwise(F.col("src_ip"))
    tunnels_df = (in_period.where(F.col("detector") == "tunnel").withColumn("client", client)
                  .groupBy("date", "escalation_group", "client", "escalation")
                  .agg(F.count(F.lit(1)).alias("flows"), F.count_distinct("src_ip").alias("sources"),
                       F.max("escalation_names").alias("names"), F.max("escalation_hits").alias("hits"),
                       F.max("escalation_bytes").alias("label_bytes"), F.max("escalation_reason").alias("reason"),
                       F.slice(F.array_sort(F.collect_set("qname")), 1, 3).alias("examples"))
                  .orderBy(F.col("flows").desc(), "date", "escalation_group", "client"))
    n_tunnels = tunnels_df.count()
    tunnels = [r.asDict() for r in tunnels_df.limit(TOP).collect()]

    # Triage over the period's anomalies, as the rules stand at `at`.
    view = triage.triaged(in_period, f.verdicts, f.rules, at)
    status = {r["status"]: r["n"] for r in view.groupBy("status").agg(F.count(F.lit(1)).alias("n")).collect()}
    # A verdict on a pattern or pair can precede a later flow: that flow was triaged as it arrived (0 hours).
    waits = [max(r["w"], 0) / 3.6e9 for r in view.where(F.col("first_verdict_at").isNotNull()).select(
        (F.unix_micros("first_verdict_at") - F.unix_micros("ts")).alias("w")).collect()]
    oldest = (view.where(F.col("status") == "new").orderBy("ts", "flow_id").limit(1)
              .withColumn("t", F.unix_micros("ts")).collect())
    untriaged = None
    if oldest:
        o = oldest[0]
        untriaged = {"date": o["date"], "ts": _iso(_utc(o["t"])), "detector": o["detector"], "src_ip": o["src_ip"],
                     "dst_ip": o["dst_ip"], "pattern": o["pattern"], "flow_id": o["flow_id"],
                     "age_days": round((at - _utc(o["t"])).total_seconds() / 86400, 1)}
    rejected_verdicts = f.verdicts.where(F.col("problem").isNotNull()).count() if "problem" in f.verdicts.columns else 0

    # Suppressions: what each rule hides now among the period's rows, and what scoring kept out.
    hidden = {r["suppressed_by"]: r["n"] for r in view.where(F.col("status") == "suppressed").groupBy(
        "suppressed_by").agg(F.count(F.lit(1)).alias("n")).collect()}
    kept_out = {r["rule_id"]: r["n"] for r in f.hits.where(F.col("date").between(start, end)).groupBy("rule_id").agg(
        F.sum("flows").alias("n")).collect()}
    end_ts = dt.datetime.fromisoformat(end).replace(tzinfo=dt.timezone.utc) + dt.timedelta(days=1)
    rules = [{"rule_id": r.rule_id, "kind": r.kind, "value": r.value, "reason": r.reason, "created_by": r.created_by,
              "created_at": _iso(r.created_at), "expires_at": _iso(r.expires_at), "state": r.state(at),
              "hidden_now": int(hidden.get(r.rule_id, 0)), "kept_out_at_scoring": int(kept_out.get(r.rule_id, 0))}
             for r in f.rules if r.created_at < end_ts or r.rule_id in hidden or r.rule_id in kept_out]

    total_flows = sum(r["flows_scored"] for r in used)
    total_anom = sum(r["anomalies"] for r in used)
    return {
        "start": start, "end": end, "generated_at": _iso(at), "dates_scored": len(used), "dates": len(days),
        "flows_scored": total_flows, "anomalies": total_anom,
        "rate": total_anom / total_flows if total_flows else None,
        "days_outside_band": [r["date"] for r in used if r["outside_band"]],
        "daily": daily, "models": models,
        "model_changes": [r["date"] for r in used if r["model_changed"]],
        "new_patterns": patterns, "new_patterns_total": n_new,
        "tunnels": tunnels, "tunnels_total": n_tunnels,
        "triage": {"by_status": {s: int(status.get(s, 0)) for s in triage.TRIAGE_STATUSES},
                   "verdicts_applied": len(waits),
                   "median_hours_to_verdict": statistics.median(waits) if waits else None,
                   "oldest_untriaged": untriaged, "ignored_verdict_rows": rejected_verdicts},
        "suppressions": rules, "ignored_suppression_rows": len(f.rejected_rules),
        "blind_spots": list(BLIND_SPOTS),
    }


# ---------------------------------------------------------------- formatting

def _n(v) -> str:
    return "–" if v is None else f"{v:,}"


def _pct(v) -> str:
    return "–" if v is None else f"{100 * v:.3f}%"


def _f(v, digits: int = 1) -> str:
    return "–" if v is None else f"{v:,.{digits}f}"


def _per100k(v) -> str:
    return "–" if v is None else f"{1e5 * v:.1f}"


def _sections(d: dict) -> list[tuple[str, str, list[str], list[list[str]], list[str]]]:
    """(id, title, header, rows, notes) of every table section, raw text (escaped by the renderer)."""
    det = list(DETECTOR_NAMES)
    daily_rows = []
    for r in d["daily"]:
        if not r["scored"]:
            daily_rows.append([r["date"], "not scored", *[""] * (7 + len(det))])
            continue
        flags = (("OUTSIDE BAND", r["outside_band"]), ("MODEL CHANGE", r["model_changed"]))
        marks = " ".join(m for m, on in flags if on)
        band = "–" if r["band_low"] is None else f"{_f(r['band_low'])} – {_f(r['band_high'])}"
        daily_rows.append([r["date"], _n(r["flows_scored"]), _n(r["anomalies"]), _pct(r["rate"]),
                           *[f"{r['detectors'][k]} · {_per100k(r['detector_rates'][k])}" for k in det],
                           _f(r["moving_avg"]), band, _n(r["suppressed_at_scoring"]), r["model_version"], marks])
    models = [[m["model_version"], m["from"], m["to"], str(m["dates"])] for m in d["models"]]
    pats = [[p["pattern"], p["detector"], p["first_seen"], p["last_seen"], _n(p["flows"]), _n(p["sources"]),
             _n(p["destinations"]), p["example"] or ""] for p in d["new_patterns"]]
    tunnels = [[p["date"], p["escalation_group"], p["client"], p["escalation"], _n(p["flows"]), _n(p["sources"]),
                _n(p["names"]), _n(p["hits"]), _n(p["label_bytes"]), " | ".join(p["examples"] or []), p["reason"] or ""]
               for p in d["tunnels"]]
    t = d["triage"]
    tri = [[s, _n(n)] for s, n in t["by_status"].items()]
    o = t["oldest_untriaged"]
    tri_notes = [
        f"Median time from the flow to its first verdict (0 when a verdict on its pattern or pair came first): "
        f"{_f(t['median_hours_to_verdict'])} hours "
        f"({t['verdicts_applied']} anomalies with a verdict).",
        ("Oldest untriaged: " + f"{o['ts']} UTC, {o['age_days']} days old, {o['detector']}, {o['src_ip']} -> "
         f"{o['dst_ip']}, pattern {o['pattern']}, flow {o['flow_id']}.") if o else "Oldest untriaged: none.",
    ]
    if t["ignored_verdict_rows"]:
        tri_notes.append(f"{t['ignored_verdict_rows']} verdict rows written by hand are malformed and ignored "
                         "(portprint sql: SELECT * FROM verdicts_rejected).")
    sup = [[r["rule_id"], r["kind"], r["value"], r["reason"] or "", r["created_by"] or "", r["created_at"],
            r["expires_at"] or "never", r["state"], _n(r["hidden_now"]), _n(r["kept_out_at_scoring"])]
           for r in d["suppressions"]]
    sup_notes = [f"{d['ignored_suppression_rows']} suppressions rows written by hand are malformed and ignored "
                 "(SELECT * FROM suppressions_rejected)."] if d["ignored_suppression_rows"] else []
    more = lambda total, shown: [f"{total - shown} more not shown."] if total > shown else []  # noqa: E731
    return [
        ("daily", "Per day", ["date", "flows scored", "anomalies", "rate", *[f"{k} (n · per 100k)" for k in det],
                              "7-day avg", "±2σ band", "suppressed at scoring", "model", "marks"], daily_rows,
         ["Days outside the band of the 7 scored days before them are marked; so are model changes."]),
        ("models", "Model versions in force", ["model_version", "from", "to", "dates"], models, []),
        ("patterns", "New patterns of the period", ["pattern", "detector", "first seen", "last seen", "flows",
                                                     "sources", "destinations", "example prefix (printable)"], pats,
         more(d["new_patterns_total"], len(pats))),
        ("tunnels", "Escalated name groups (tunnel)",
         ["date", "group", "client", "rule", "flows", "sources", "distinct names", "names the rule counted",
          "label bytes", "example names", "why"], tunnels, more(d["tunnels_total"], len(tunnels))),
        ("triage", "Triage", ["status", "anomalies"], tri, tri_notes),
        ("suppressions", "Suppressions: what each rule hid", ["rule", "kind", "value", "reason", "by", "created",
                                                              "expires", "state", "hidden now (period)",
                                                              "kept out at scoring (period)"], sup, sup_notes),
    ]


def _summary(d: dict) -> list[str]:
    t = d["triage"]["by_status"]
    return [f"Period {d['start']} .. {d['end']}: {d['dates_scored']} of {d['dates']} days scored, "
            f"{_n(d['flows_scored'])} port-53 flows, {_n(d['anomalies'])} anomalies ({_pct(d['rate'])}).",
            f"Days outside the band: {', '.join(d['days_outside_band']) or 'none'}. "
            f"Model changes: {', '.join(d['model_changes']) or 'none'}.",
            f"Untriaged: {_n(t['new'])}; confirmed {_n(t['confirmed'])}, benign {_n(t['benign'])}, duplicate "
            f"{_n(t['duplicate'])}, suppressed {_n(t['suppressed'])}."]


CSS = """body{font:14px/1.45 system-ui,-apple-system,'Segoe UI',sans-serif;color:#1d232a;margin:24px auto;
max-width:1400px;padding:0 16px}h1{font-size:22px;margin:0 0 4px}
h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid #ccd3da;padding-bottom:3px}
p.meta{color:#5b6670;margin:0 0 12px}ul.summary li{margin:2px 0}
.scroll{overflow-x:auto}table{border-collapse:collapse;font-size:12.5px;margin:4px 0 6px}
th,td{border:1px solid #d6dce2;padding:3px 7px;text-align:left;vertical-align:top}td{white-space:nowrap}
td.wrap{white-space:normal;min-width:16em}
th{background:#eef1f4;font-weight:600}tr.out td{background:#fdecea}tr.chg td:first-child{border-left:4px solid #6a4fb3}
tr.gap td{color:#8a949c;background:#f7f7f7}td.num{text-align:right;font-variant-numeric:tabular-nums}
code,.mono{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:12px;word-break:break-all}
img{max-width:100%;height:auto;border:1px solid #e1e5e9;margin:6px 0}p.note{color:#5b6670;margin:2px 0}
p.empty{color:#5b6670;font-style:italic}"""
_MONO = {"pattern", "value", "example prefix (printable)", "example names", "client", "server", "model", "rule",
         "model_version"}
_WRAP = {"pattern", "example prefix (printable)", "example names", "value"}
_WRAP_TEXT = {"reason", "marks"}
_NUMERIC = {"flows scored", "anomalies", "rate", "7-day avg", "suppressed at scoring", "flows", "sources",
            "destinations", "distinct names", "median qname_score", "max qname_score", "dates", "hidden now (period)",
            "kept out at scoring (period)"}


def render_html(d: dict, images: dict[str, bytes]) -> str:
    """The page: no script, a Content-Security-Policy that allows none, plots as data: URIs."""
    out = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
           '<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; img-src data:; '
           'style-src \'unsafe-inline\'">', '<meta name="viewport" content="width=device-width, initial-scale=1">',
           f"<title>portprint report {html_text(d['start'])} .. {html_text(d['end'])}</title>",
           f"<style>{CSS}</style></head><body>",
           f"<h1>portprint report: {html_text(d['start'])} .. {html_text(d['end'])}</h1>",
           f'<p class="meta">Generated {html_text(d["generated_at"])} UTC. Text from traffic is shown escaped. '
           "portprint raises alerts for people to judge; it never blocks or acts.</p>",
           '<ul class="summary">', *[f"<li>{html_text(s)}</li>" for s in _summary(d)], "</ul>"]
    for name in PLOTS:
        if name in images:
            alt = {"trend.png": "anomalies per day with the 7-day moving average and bands",
                   "detectors.png": "anomaly rate per detector per day"}[name]
            out.append(f'<img src="data:image/png;base64,{base64.b64encode(images[name]).decode()}" alt="{alt}">')
    daily = d["daily"]
    for sid, title, header, rows, notes in _sections(d):
        out.append(f'<h2 id="{sid}">{html_text(title)}</h2>')
        if rows:
            out.append('<div class="scroll"><table><thead><tr>' + "".join(f"<th>{html_text(h)}</th>" for h in header)
                       + "</tr></thead><tbody>")
            for i, row in enumerate(rows):
                cls = ""
                if sid == "daily":
                    r = daily[i]
                    cls = (" class=\"gap\"" if not r["scored"] else " class=\"out\"" if r["outside_band"]
                           else " class=\"chg\"" if r["model_changed"] else "")
                cells = []
                for h, v in zip(header, row, strict=True):
                    kind = (' class="mono wrap"' if h in _WRAP else ' class="mono"' if h in _MONO
                            else ' class="wrap"' if h in _WRAP_TEXT
                            else ' class="num"' if h in _NUMERIC or "per 100k" in h else "")
                    cells.append(f"<td{kind}>{html_text(v)}</td>")
                out.append(f"<tr{cls}>" + "".join(cells) + "</tr>")
            out.append("</tbody></table></div>")
        else:
            out.append('<p class="empty">None in this period.</p>')
        out += [f'<p class="note">{html_text(n)}</p>' for n in notes]
    out.append('<h2 id="blind-spots">Blind spots</h2><ul>')
    out += [f"<li>{html_text(b)}</li>" for b in d["blind_spots"]]
    out.append("</ul></body></html>")
    return "\n".join(out) + "\n"


def render_markdown(d: dict, plots: list[str]) -> str:
    """The Markdown twin: the same sections, every cell escaped (pipes, backticks, <, control characters)."""
    out = [f"# portprint report: {md(d['start'])} .. {md(d['end'])}", "",
           f"Generated {md(d['generated_at'])} UTC. Text from traffic is shown escaped.", ""]
    out += [f"- {md(s)}" for s in _summary(d)] + [""]
    out += [f"![{name[:-4]}]({name})" for name in PLOTS if name in plots] + [""]
    for _, title, header, rows, notes in _sections(d):
        out += [f"## {md(title)}", ""]
        if rows:
            out.append("| " + " | ".join(md(h) for h in header) + " |")
            out.append("|" + "---|" * len(header))
            out += ["| " + " | ".join(md(v) for v in row) + " |" for row in rows]
        else:
            out.append("None in this period.")
        out += [""] + [md(n) + "  " for n in notes] + ([""] if notes else [])
    out += ["## Blind spots", ""] + [f"- {md(b)}" for b in d["blind_spots"]]
    return "\n".join(out) + "\n"


def draw_plots(d: dict, out_dir: str) -> dict[str, str]:
    """trend.png (anomalies, moving average, ±2σ band, outside days, model changes) and detectors.png (rate per
    detector); drawn even for an empty period, so the layout never changes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.dates as mdates
    import matplotlib.pyplot as plt

    used = [r for r in d["daily"] if r["scored"]]
    x = [dt.date.fromisoformat(r["date"]) for r in used]
    span = (dt.date.fromisoformat(d["start"]) - dt.timedelta(days=0.5),
            dt.date.fromisoformat(d["end"]) + dt.timedelta(days=0.5))
    changes = [dt.date.fromisoformat(c) for c in d["model_changes"]]
    paths = {}

    def finish(fig, ax, name: str, ylabel: str) -> None:
        ax.set_xlim(*span)
        ax.set_ylabel(ylabel)
        ax.xaxis.set_major_formatter(mdates.DateFormatter("%m-%d"))
        for i, c in enumerate(changes):
            ax.axvline(c, color="#6a4fb3", linestyle=":", linewidth=1.5, label="model change" if i == 0 else None)
        if not used:
            ax.text(0.5, 0.5, "no scored days in this period", transform=ax.transAxes, ha="center", color="#5b6670")
        ax.grid(alpha=0.25)
        handles, _ = ax.get_legend_handles_labels()
        if handles:
            ax.legend(loc="upper left", fontsize=8)
        fig.autofmt_xdate()
        fig.tight_layout()
        path = os.path.join(out_dir, name)
        fig.savefig(path, dpi=100)
        plt.close(fig)
        paths[name] = path

    fig, ax = plt.subplots(figsize=(11, 3.6))
    if used:
        lo = [r["band_low"] if r["band_low"] is not None else float("nan") for r in used]
        hi = [r["band_high"] if r["band_high"] is not None else float("nan") for r in used]
        ax.fill_between(x, [max(v, 0) for v in lo], hi, color="#8fb3d9", alpha=0.35, label="±2σ band (7 days before)")
        ax.plot(x, [r["moving_avg"] if r["moving_avg"] is not None else float("nan") for r in used], "--",
                color="#3a6ea5", label="7-day moving average")
        ax.plot(x, [r["anomalies"] for r in used], "o-", color="#1d232a", label="anomalies")
        out = [(xi, r["anomalies"]) for xi, r in zip(x, used, strict=True) if r["outside_band"]]
        if out:
            ax.scatter(*zip(*out, strict=True), s=80, facecolors="none", edgecolors="#c62828", linewidths=2,
                       zorder=3, label="outside the band")
    ax.set_ylim(bottom=0)
    ax.set_title("Anomalies per day", fontsize=11)
    finish(fig, ax, "trend.png", "anomalies")

    fig, ax = plt.subplots(figsize=(11, 3.6))
    colors = {"header-rule": "#c62828", "header-model": "#ef6c00", "qname-model": "#2e7d32", "tunnel": "#1565c0"}
    for k in DETECTOR_NAMES:
        if used:
            ax.plot(x, [1e5 * (r["detector_rates"][k] or 0) for r in used], "o-", color=colors[k], label=k,
                    markersize=4)
    ax.set_ylim(bottom=0)
    ax.set_title("Anomaly rate per detector", fontsize=11)
    finish(fig, ax, "detectors.png", "per 100,000 flows scored")
    return paths


def write_report(spark: SparkSession, cfg: Config, warehouse: str, out_dir: str, start: str | None = None,
                 end: str | None = None, at: dt.datetime | None = None) -> ReportFiles:
    data = collect(frames_from_warehouse(spark, cfg, warehouse), start, end, at)
    return write_files(data, out_dir)


def write_files(data: dict, out_dir: str) -> ReportFiles:
    """Render collected data to out_dir: report.html, report.md, report.json and the PNG plots."""
    os.makedirs(out_dir, exist_ok=True)
    plots = draw_plots(data, out_dir)
    images = {}
    for name, path in plots.items():
        with open(path, "rb") as fh:
            images[name] = fh.read()
    paths = {k: os.path.join(out_dir, f"report.{k}") for k in ("html", "md", "json")}
    with open(paths["html"], "w", encoding="utf-8") as fh:
        fh.write(render_html(data, images))
    with open(paths["md"], "w", encoding="utf-8") as fh:
        fh.write(render_markdown(data, list(plots)))
    with open(paths["json"], "w", encoding="utf-8") as fh:
        json.dump(data, fh, indent=1, default=str, ensure_ascii=True)
    return ReportFiles(data["start"], data["end"], paths["html"], paths["md"], paths["json"], list(plots.values()))
