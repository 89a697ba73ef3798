"""`portprint export`: new anomalies to a SIEM or ticketing system, in Elastic Common Schema fields, each once.
Called by jobs/cli.py.

Field names follow ECS (https://www.elastic.co/guide/en/ecs/current/): ``@timestamp``, ``event.*``,
``rule.*``, ``source.*``, ``destination.*``, ``network.*``, ``dns.*``; portprint's own fields go under
``portprint.*``. JSON lines carry nested objects (ECS's canonical form); CSV columns are the dotted names.
No ECS library is used: the pieces on PyPI model Python logging records, not alerts; the names are written here.

Once: a cursor table (`exported`, keyed on flow_id, detector and date; never run_id) records what went out.
The rows are appended to FILE and flushed before the cursor commits, so a failure in between exports them
again on the next run (at least once, never lost); ``event.id`` is a stable hash of the same key, so a SIEM
can deduplicate on it. A rescore gives the same keys and exports nothing new; a new detector for the same
flow is a new alert.
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import io
import json
import os
import uuid
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from portprint.conf.config import Config
from portprint.jobs import triage
from portprint.jobs.engine import render
from portprint.jobs.warehouse import delta as delta_io
from portprint.jobs.warehouse import people as people_tables
from portprint.jobs.warehouse.tables import EXPORTED

KEY = ("flow_id", "detector", "date")
# event.severity (ECS: numeric, meaning set by the source): how sure a detector's verdict is that this is not
# the site's DNS. The rule's breach of the protocol and a pair's day of odd names weigh most.
SEVERITY = {"header-rule": 73, "tunnel": 73, "qname-model": 63, "header-model": 47}
LEFT_OUT = ("suppressed", "benign")
CSV_COLUMNS = (
    "@timestamp", "event.id", "event.kind", "event.category", "event.type", "event.severity", "event.module",
    "event.dataset", "event.created", "rule.name", "rule.ruleset", "rule.version", "rule.description",
    "source.ip", "source.port", "destination.ip", "destination.port", "network.transport", "network.iana_number",
    "dns.id", "dns.type", "dns.op_code", "dns.response_code", "dns.question.name", "dns.question.type",
    "portprint.flow_id", "portprint.date", "portprint.status", "portprint.suppressed_by", "portprint.pattern",
    "portprint.matched_side", "portprint.header_verdict", "portprint.header_reason", "portprint.score",
    "portprint.loss", "portprint.threshold", "portprint.qname_score", "portprint.qname_loss",
    "portprint.qname_threshold", "portprint.qname_complete", "portprint.prefix_len", "portprint.prefix_hex",
    "portprint.prefix_text", "portprint.failed_fields", "portprint.model_version", "portprint.run_id",
    "portprint.verdict_by", "portprint.verdict_note",
)
_OPCODES = {0: "QUERY", 1: "IQUERY", 2: "STATUS", 4: "NOTIFY", 5: "UPDATE", 6: "DSO"}
_RCODES = {0: "NOERROR", 1: "FORMERR", 2: "SERVFAIL", 3: "NXDOMAIN", 4: "NOTIMP", 5: "REFUSED", 6: "YXDOMAIN",
           7: "YXRRSET", 8: "NXRRSET", 9: "NOTAUTH", 10: "NOTZONE"}


@dataclass(frozen=True)
class ExportReport:
    rows: int
    left_out: int     # suppressed or benign, not exported (without --all)
    already: int      # exported by an earlier run
    export_id: str


def event_id(flow_id: str, detector: str, date: str) -> str:
    return hashlib.sha256(f"{flow_id}\x00{detector}\x00{date}".encode()).hexdigest()[:32]


def _iso(ts: dt.datetime | None) -> str | None:
    return None if ts is None else ts.astimezone(dt.timezone.utc).isoformat(timespec="microseconds").replace(
        "+00:00", "Z")


def ecs_document(row: dict, exported_at: dt.datetime) -> dict:
    """One anomaly (an anomalies_triaged row, strings already inert) as a nested ECS document."""
    valid = row.get("header_verdict") == "valid"
    transport = {6: "tcp", 17: "udp"}.get(row.get("proto"))
    doc: dict = {
        "@timestamp": _iso(row.get("ts")),
        "event": {"id": event_id(row["flow_id"], row["detector"], row["date"]), "kind": "alert",
                  "category": ["network"], "type": ["protocol"], "severity": SEVERITY.get(row.get("detector"), 47),
                  "module": "portprint", "dataset": "portprint.anomalies", "created": _iso(row.get("scored_at"))},
        "rule": {"name": row.get("detector"), "ruleset": "portprint", "version": row.get("model_version"),
                 "description": row.get("header_reason") if row.get("detector") == "header-rule"
                 else row.get("failed_fields")},
        "source": {"ip": row.get("src_ip"), "port": row.get("src_port")},
        "destination": {"ip": row.get("dst_ip"), "port": row.get("dst_port")},
        "network": {"transport": transport, "iana_number": None if row.get("proto") is None else str(row["proto"])},
        "portprint": {k: row.get(k) for k in (
            "flow_id", "date", "status", "suppressed_by", "pattern", "matched_side", "header_verdict", "header_reason",
            "score", "loss", "threshold", "qname_score", "qname_loss", "qname_threshold", "qname_complete",
            "prefix_len", "prefix_hex", "prefix_text", "failed_fields", "model_version", "run_id", "verdict_by",
            "verdict_note")} | {"exported_at": _iso(exported_at)},
    }
    if valid:  # the decoded header means something only when the prefix is DNS-shaped
        dns = {"id": None if row.get("dns_id") is None else str(row["dns_id"]),
               "type": {0: "query", 1: "answer"}.get(row.get("qr")),
               "op_code": _OPCODES.get(row.get("opcode"), None if row.get("opcode") is None else str(row["opcode"])),
               "response_code": _RCODES.get(row.get("rcode"), None if row.get("rcode") is None else str(row["rcode"]))}
        if row.get("qname") is not None:
            dns["question"] = {"name": row["qname"], "type": row.get("qtype")}
        doc["dns"] = dns
    return doc


def _flatten(doc: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in doc.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and k != "@timestamp":
            out |= _flatten(v, key + ".")
        else:
            out[key] = v
    return out


def _json_line(doc: dict) -> str:
    # ASCII only; <, > and & as \\u escapes (valid JSON, same value): a viewer that pastes it into HTML stays inert.
    line = json.dumps(doc, ensure_ascii=True, separators=(",", ":"), allow_nan=False, default=str)
    return line.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026") + "\n"


def _csv_rows(docs: list[dict], header: bool) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\r\n", quoting=csv.QUOTE_MINIMAL)
    if header:
        w.writerow(CSV_COLUMNS)
    for doc in docs:
        flat = _flatten(doc)
        w.writerow([render.csv_cell(",".join(map(str, v)) if isinstance(v, list) else v)
                    if isinstance(v, (str, list)) else ("" if v is None else v) for v in
                    (flat.get(c) for c in CSV_COLUMNS)])
    return buf.getvalue()


def _inert_rows(table: pa.Table) -> list[dict]:
    """Rows with every string made inert (control characters escaped, undecodable bytes as \\xNN)."""
    cols = {}
    for name in table.column_names:
        col = table[name]
        if pa.types.is_string(col.type) or pa.types.is_large_string(col.type):
            # As bytes: a string column written by another tool may hold bytes that are not UTF-8.
            cols[name] = [render.from_bytes(v) for v in pc.cast(col, pa.binary()).to_pylist()]
        else:
            cols[name] = col.to_pylist()
    return [dict(zip(cols, vals, strict=True)) for vals in zip(*cols.values(), strict=True)] if cols else []


def run_export(spark: SparkSession, cfg: Config, warehouse: str, fmt: str, out: str, include_all: bool = False,
               at: dt.datetime | None = None) -> ExportReport:
    """Append the anomalies not exported before to ``out``; then record them in the cursor table."""
    if fmt not in ("jsonl", "csv"):
        raise ValueError(f"--format {fmt!r}: use jsonl or csv")
    reader = delta_io.choose_writer(spark, cfg.output.writer)
    at = at or triage.now()
    view = triage.triaged_from_warehouse(spark, cfg, warehouse, at, reader)
    done = people_tables.read(spark, cfg, warehouse, "exported", EXPORTED, reader).select(*KEY).distinct()
    fresh = view.join(F.broadcast(done), list(KEY), "left_anti")
    counts = view.join(F.broadcast(done), list(KEY), "left_semi").count()
    wanted = fresh if include_all else fresh.where(~F.col("status").isin(*LEFT_OUT))
    left_out = 0 if include_all else fresh.where(F.col("status").isin(*LEFT_OUT)).count()
    table = wanted.orderBy("ts", "flow_id", "detector").toArrow()
    export_id = at.strftime("%Y%m%dT%H%M%SZ-") + uuid.uuid4().hex[:8]
    if table.num_rows:
        docs = [ecs_document(r, at) for r in _inert_rows(table)]
        new_file = not os.path.exists(out) or os.path.getsize(out) == 0
        payload = "".join(map(_json_line, docs)) if fmt == "jsonl" else _csv_rows(docs, header=new_file)
        os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
        with open(out, "a", encoding="ascii" if fmt == "jsonl" else "utf-8", newline="") as f:
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
        keys = table.select(list(KEY))
        n = keys.num_rows
        cursor = keys.append_column("exported_at", pa.array([at] * n, EXPORTED.field("exported_at").type)) \
            .append_column("export_id", pa.array([export_id] * n)).append_column("format", pa.array([fmt] * n))
        people_tables.append_rows(spark, cfg, warehouse, "exported", cursor.cast(EXPORTED), reader)
    elif not os.path.exists(out):
        open(out, "a").close()  # the file exists after every run, so a shipper's path is always there
    return ExportReport(table.num_rows, left_out, counts, export_id)
