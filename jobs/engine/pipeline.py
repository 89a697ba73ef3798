"""The stages on Spark, as `score` and `evaluate` run them: Detect over a Source into a Stage, then Escalate
from the Stage's evidence back into the Stage, then the per-date counts of what was staged.

The stage functions themselves are pure (udfs/detect.py, udfs/escalate.py); here they are shipped to the
Python workers in the closures of ``mapInArrow``/``applyInArrow`` (the model's bytes with them: no
SparkContext, so Spark Connect works).
"""

from __future__ import annotations

import dataclasses
import json
import re
import time
from collections.abc import Callable, Sequence

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
from portprint.udfs.detect import detect_tables, pairs_on
from portprint.udfs.schemas import (
    ANOMALY,
    CANDIDATE,
    COUNT_FIELDS,
    COUNTS,
    EVIDENCE,
    FLOW_COLUMNS,
    KEPT,
    NAMES,
    ODD,
    ORIG_BYTES,
    OUT,
    PREFIX,
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


def escalate(source: Source, art: ModelArtifact, cfg: Config, run_id: str, scored_at_us: int,
             stage: Stage, rules: Sequence[Rule] = ()) -> pa.Table:
    """Escalate from the staged evidence: the escalated pairs (udfs/escalate.py ESCALATED); their flows' anomalies
    (detector qname-pair) are appended to the stage. Pairs whose every slice kept their judged flows as
    candidates are judged from those; the others' flows are read again from the source."""
    if not pairs_on(art, cfg) or not stage.written:
        return esc.ESCALATED.empty_table()
    ev = stage.table((EVIDENCE,), ["date", "src_ip", "dst_ip", NAMES, ODD, KEPT])
    totals = esc.merge(ev.rename_columns(esc.EVIDENCE.names).cast(esc.EVIDENCE))
    q, conf = art.meta.qname, cfg.pairs
    chosen = esc.decide(totals, q.get("odd_rate", conf.odd_rate), conf.min_share, conf.alpha)
    if chosen.num_rows == 0:
        return chosen
    pair = list(esc.PAIR)
    covered = chosen.filter(chosen["covered"]).select(pair)
    again = chosen.filter(pa.compute.invert(chosen["covered"])).select(pair)
    parts = []
    if covered.num_rows:
        renamed = {PREFIX: "orig_payload_prefix", ORIG_BYTES: "orig_bytes"}
        cand = stage.frame(CANDIDATE).join(F.broadcast(stage.spark.createDataFrame(covered)), pair, "left_semi")
        parts.append(cand.select(*[F.col(next((k for k, v in renamed.items() if v == c), c)).alias(c)
                                   for c in FLOW_COLUMNS]))
    if again.num_rows:
        rows = source.flows(again)
        if rows is not None:
            parts.append(rows.select(*FLOW_COLUMNS))
    if not parts:
        return chosen
    rows = parts[0] if len(parts) == 1 else parts[0].unionByName(parts[1])

    def judge(t: pa.Table) -> pa.Table:
        return esc.judge(t, art, cfg, run_id, scored_at_us, rules)

    _write(stage, rows.groupBy(*pair).applyInArrow(judge, spark_schema(OUT)), source.plan.root, append=True)
    return chosen


def chunk_counts(stage: Stage, source: Source, dates: list[str]) -> tuple[dict[str, dict[str, int]], list[dict]]:
    """Per date: flows read, in scope, skipped (no payload), flagged per detector and in all, and suppressed, from
    the staged COUNTS rows (Detect's), the staged qname-pair anomalies (Escalate's) and the SUPPRESSED rows (both);
    and per date and rule, how many anomalies the rule kept out."""
    counts = counts_by_date(stage.table((COUNTS,), ["date", *COUNT_FIELDS]), dates, COUNT_FIELDS)
    pair_rows = stage.table((ANOMALY,), ["date", "detector"])
    pair_dates = pair_rows.filter(pc.equal(pair_rows["detector"], "qname-pair"))["date"].to_pylist()
    gone = stage.table((SUPPRESSED,), ["date", RULE, SUPPRESSED_N])
    hits = (gone.group_by(["date", RULE], use_threads=False).aggregate([(SUPPRESSED_N, "sum")])
            .rename_columns(["date", "rule_id", "flows"]).to_pylist()) if gone.num_rows else []
    read = source.flows_read()
    for d, c in counts.items():
        c["_qname"] += pair_dates.count(d)
        c["_flagged"] += pair_dates.count(d)
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
    escalated = sum(r["pairs_escalated"] for r in chunk_rows)
    log(f"portprint score: [{done}/{total} dates] {chunk[0]}..{chunk[-1]}: "
        f"{sum(r['flows_scored'] for r in chunk_rows):,} flows scored, {sum(r['anomalies'] for r in chunk_rows)} "
        f"anomalies" + (f" ({escalated} client-server pairs escalated)" if escalated else "")
        + f", {seconds:.1f}s; {rate:,.0f} flows/s overall, ETA {elapsed / done * (total - done):.0f}s")


def escalation_settings(cfg: Config) -> str:
    """The escalation settings in force, as canonical JSON: recorded in each `runs` row (with its hash), and a
    change to them makes `score --new-only` score the dates again (jobs/warehouse/history.py)."""
    return json.dumps({"pairs": dataclasses.asdict(cfg.pairs)}, sort_keys=True, separators=(",", ":"))
