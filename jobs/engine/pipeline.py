"""The stages on Spark, as `score` and `evaluate` run them: Detect over a Source into a Stage, then Escalate
from the Stage's evidence (decided on the driver) back into the Stage, then the per-date counts of what was
staged.

The stage functions themselves are pure (udfs/detect.py, udfs/escalate.py); here they are shipped to the
Python workers in the closures of ``mapInArrow``/``applyInArrow`` (the model's bytes with them: no
SparkContext, so Spark Connect works).
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc
from pyspark.sql import functions as F

from portprint.conf.config import Config
from portprint.jobs.archive import ArchiveError, Source
from portprint.jobs.archive.rowgroups import READ_FAILED
from portprint.jobs.engine.faults import killing_worker_once
from portprint.jobs.warehouse import Stage, counts_by_date
from portprint.models.artifact import ModelArtifact
from portprint.udfs import escalate as esc
from portprint.udfs import evidence
from portprint.udfs.detect import detect_tables, escalating
from portprint.udfs.schemas import (
    ANOMALY,
    CANDIDATE,
    COUNT_FIELDS,
    COUNTS,
    EVIDENCE,
    FLOW_COLUMNS,
    GROUP,
    KEPT,
    ORIG_BYTES,
    ORIG_PKTS,
    OUT,
    PREFIX,
    RECORDS,
    RULE,
    SUPPRESSED,
    SUPPRESSED_N,
    spark_schema,
)
from portprint.udfs.suppress import Rule


def explain_failure(exc: Exception, root: str) -> Exception:
    """Turn Spark's long failure into one line that names the file and says what to do.

    Only read failures become ArchiveError; anything else (a bug, a lost worker) is returned as it was so its
    traceback is not disguised as bad input.
    """
    text = str(exc)
    m = re.search(r"FAILED_READ_FILE[^\n]*?reading file (\S+?)\.?(?:\s|$)", text)
    ours = re.search(re.escape(READ_FAILED) + r" (\S+) \(row group \d+\): ([^\n]+)", text)
    if ours:
        return ArchiveError(f"cannot read {ours.group(1)}: {ours.group(2)[:300]}. Nothing was written; move the "
                            f"file out of {root} (or restore it) and rerun the date")
    if not m:
        return exc
    reason = re.search(r"Caused by: ([^\n]+)", text)
    return ArchiveError(f"cannot read {m.group(1)}: {reason.group(1)[:300] if reason else 'corrupt or unreadable'}"
                        f". Nothing was written; move the file out of {root} (or restore it) and rerun the date")


def _write(stage: Stage, df, root: str, append: bool = False) -> None:
    try:
        stage.write(df, append=append)
    except Exception as exc:
        raise explain_failure(exc, root) from None


def detect(source: Source, art: ModelArtifact, cfg: Config, run_id: str, scored_at_us: int, stage: Stage, *,
           scores: bool = False, rules: Sequence[Rule] = ()) -> None:
    """Detect over every in-scope flow of the source's dates, into the stage (one Spark job: the models run
    once per flow, and only anomalies, counts and evidence come back). Anomalies that a suppression rule in
    ``rules`` matches are counted, not staged."""
    out = source.run(killing_worker_once(detect_tables(art, cfg, run_id, scored_at_us, scores=scores, rules=rules)),
                     OUT)
    if out is not None:
        _write(stage, out, source.plan.root)


@dataclass(frozen=True)
class Escalation:
    """What the Escalate stage decided for a chunk: the escalated groups (udfs/escalate.py ESCALATED) and the
    per-date, per-group history rows the Sink keeps (HISTORY)."""

    escalated: pa.Table
    history: pa.Table


def escalate(source: Source, art: ModelArtifact, cfg: Config, run_id: str, scored_at_us: int,
             stage: Stage, rules: Sequence[Rule] = ()) -> Escalation:
    """Escalate from the staged evidence: merge every task's evidence (exact, however the flows were sliced),
    decide on the driver, then judge the escalated groups' candidate flows (kept by Detect's tasks) in Spark
    tasks; their anomalies (detector tunnel) are appended to the stage."""
    none = Escalation(esc.ESCALATED.empty_table(), esc.HISTORY.empty_table())
    if not escalating(cfg) or not stage.written:
        return none
    ev = stage.table((EVIDENCE,), ["date", "src_ip", "dst_ip", GROUP, RECORDS, KEPT])
    chosen, flagged, history, again = esc.from_evidence(
        ev.rename_columns(evidence.EVIDENCE.names).cast(evidence.EVIDENCE), art, cfg.escalate)
    if flagged.num_rows == 0:
        return Escalation(chosen, history)
    renamed = {PREFIX: "orig_payload_prefix", ORIG_BYTES: "orig_bytes", ORIG_PKTS: "orig_pkts"}
    # Only the escalated clients' candidates (zone-level groups: any client's) cross to the judging tasks.
    wanted = flagged.select(["date", "src_ip"]).group_by(["date", "src_ip"], use_threads=False).aggregate([])
    cand = stage.frame(CANDIDATE)
    if wanted.filter(pc.is_null(wanted["src_ip"])).num_rows == 0:
        cand = cand.join(F.broadcast(stage.spark.createDataFrame(wanted)), ["date", "src_ip"], "left_semi")
    rows = cand.select(*[F.col(next((k for k, v in renamed.items() if v == c), c)).alias(c) for c in FLOW_COLUMNS])
    if again.num_rows:
        # Groups some task did not keep every candidate of: their (client, server) flows are read again, and
        # those pairs' candidates left out so that no flow is judged twice.
        pairs = F.broadcast(stage.spark.createDataFrame(again))
        rows = rows.join(pairs, list(esc.PAIRS.names), "left_anti").select(*FLOW_COLUMNS)
        extra = source.flows(again)
        if extra is not None:
            rows = rows.unionByName(extra.select(*FLOW_COLUMNS))

    def judge(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        for b in batches:
            yield from esc.judge(pa.Table.from_batches([b]), art, cfg, run_id, scored_at_us, chosen, flagged,
                                 rules).to_batches()

    _write(stage, rows.mapInArrow(judge, spark_schema(OUT)), source.plan.root, append=True)
    return Escalation(chosen, history)


def chunk_counts(stage: Stage, source: Source, dates: list[str]) -> tuple[dict[str, dict[str, int]], list[dict]]:
    """Per date: flows read, in scope, skipped (no payload), flagged per detector and in all, and suppressed, from
    the staged COUNTS rows (Detect's), the staged tunnel anomalies (Escalate's) and the SUPPRESSED rows (both);
    and per date and rule, how many anomalies the rule kept out."""
    counts = counts_by_date(stage.table((COUNTS,), ["date", *COUNT_FIELDS]), dates, COUNT_FIELDS)
    tunnel_rows = stage.table((ANOMALY,), ["date", "detector"])
    tunnel_dates = tunnel_rows.filter(pc.equal(tunnel_rows["detector"], "tunnel"))["date"].to_pylist()
    gone = stage.table((SUPPRESSED,), ["date", RULE, SUPPRESSED_N])
    hits = (gone.group_by(["date", RULE], use_threads=False).aggregate([(SUPPRESSED_N, "sum")])
            .rename_columns(["date", "rule_id", "flows"]).to_pylist()) if gone.num_rows else []
    read = source.flows_read()
    for d, c in counts.items():
        c["_tunnel"] = tunnel_dates.count(d)
        c["_flagged"] += tunnel_dates.count(d)
        c["flows_read"] = int(read.get(d, 0))
        c["suppressed"] = sum(h["flows"] for h in hits if h["date"] == d)
    return counts, hits


def say_repeated_ids(stage: Stage, log: Callable[[str], None]) -> None:
    """Anomalies whose flow_id another archive row of the date repeats: kept (every row is a flow) and said."""
    ids = stage.table((ANOMALY,), ["date", "flow_id"])
    if ids.num_rows == 0:
        return
    per = ids.group_by(["date", "flow_id"], use_threads=False).aggregate([("flow_id", "count")])
    rep = per.filter(pc.greater(per["flow_id_count"], 1))
    for d in sorted(set(rep["date"].to_pylist())):
        n = pc.sum(rep.filter(pc.equal(rep["date"], d))["flow_id_count"]).as_py()
        log(f"portprint score: {d}: {n} anomalies share a flow_id with another row of the date (the archive repeats "
            "flow ids, e.g. a file copied twice): each row is kept, and a verdict on such an id covers them all")


def progress(log: Callable[[str], None], chunk: list[str], chunk_rows: list[dict], rows: list[dict], total: int,
              t0: float, seconds: float) -> None:
    done = len(rows)
    elapsed = time.monotonic() - t0
    rate = sum(r["flows_scored"] for r in rows) / max(elapsed, 1e-9)
    escalated = sum(r["groups_escalated"] for r in chunk_rows)
    log(f"portprint score: [{done}/{total} dates] {chunk[0]}..{chunk[-1]}: "
        f"{sum(r['flows_scored'] for r in chunk_rows):,} flows scored, {sum(r['anomalies'] for r in chunk_rows)} "
        f"anomalies" + (f" ({escalated} name groups escalated as tunnels)" if escalated else "")
        + f", {seconds:.1f}s; {rate:,.0f} flows/s overall, ETA {elapsed / done * (total - done):.0f}s")


def escalation_settings(cfg: Config) -> str:
    """The escalation settings in force, as canonical JSON: recorded in each `runs` row (with its hash), and a
    change to them makes `score --new-only` score the dates again (jobs/warehouse/history.py)."""
    return esc.settings_text(cfg.escalate) if cfg.escalate.enabled else "off"


def once(log: Callable[[str], None]) -> Callable[[str], None]:
    """``log``, but a note that holds for the whole run (same text after its last colon) is said once."""
    said: set[str] = set()

    def say(message: str) -> None:
        key = message.split(":")[-1]
        if key not in said:
            said.add(key)
            log(message)
    return say


def say_blind_socket(cfg: Config, counts: dict[str, dict[str, int]], log: Callable[[str], None]) -> None:
    """Say when no flow of the chunk carries orig_pkts: the escalate socket rule cannot see those dates."""
    if cfg.escalate.enabled and cfg.escalate.socket_pkts:
        blind = [d for d, c in counts.items() if c["_scoped"] > c["_skipped"] and c["_pkts"] == 0]
        if blind:
            log(f"portprint score: no flow of {blind[0]}..{blind[-1]} carries orig_pkts "
                "(archive.columns.orig_pkts): the escalate socket rule is off for those dates")


def say_model_gaps(cfg: Config, art: ModelArtifact, log: Callable[[str], None]) -> None:
    """Say when the model cannot serve a rule the settings ask for (no odd-name bar: the odd rule is off)."""
    if cfg.escalate.enabled and cfg.escalate.odd and math.isnan(esc.odd_threshold(art)):
        log(f"portprint score: model {art.meta.model_version} has no question model with an odd-name bar: the "
            "escalate odd rule is off (shape and socket rules run); retrain with `portprint train` to turn it on")
