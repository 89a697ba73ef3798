"""`portprint evaluate`: how good the detectors are on labelled flows, side by side, with a report. Called by
jobs/cli.py; it runs the same Source, Detect and Escalate as `score` (jobs/engine/pipeline.py), keeping every
scored flow's losses."""

from __future__ import annotations

import json
import math
import os
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from portprint.conf.config import Config
from portprint.jobs.archive import ArchiveError, open_source
from portprint.jobs.archive.spark import canonical, read_archive, scope_condition
from portprint.jobs.engine import pipeline
from portprint.jobs.engine.render import terminal as inert
from portprint.jobs.warehouse import Stage
from portprint.models.metrics import (
    BENIGN,
    NOT_SCORED,
    TUNNEL,
    attack_mask,
    per_label,
    recall_at_fpr,
    roc_auc,
    roc_curve,
)
from portprint.udfs.detect import escalating
from portprint.udfs.schemas import ANOMALY, FIRED, SCORES
from portprint.udfs.scoring import load_model

TARGETS = (1e-2, 1e-3, 1e-4)


ORDINARY = "ordinary"  # the category of genuine DNS that is not one of the hard-benign name shapes


@dataclass(frozen=True)
class Scored:
    """Per scored flow: label, category, each detector's view; plus what was skipped and why."""

    flow_id: np.ndarray
    label: np.ndarray
    loss: np.ndarray
    rule: np.ndarray  # each per-flow detector fired, on its own (udfs/scoring.py Scorer.fired)
    skipped: dict[str, int]
    qloss: np.ndarray | None = None  # NaN where the question model does not judge; None without one
    category: np.ndarray | None = None  # labels' optional `category` column ("" where absent)
    tunnel: np.ndarray | None = None  # flagged by the Escalate stage (udfs/escalate.py); None when it is off
    model: np.ndarray | None = None
    qmodel: np.ndarray | None = None
    family: np.ndarray | None = None  # labels' optional `family` column (tunnel tool family; "" where absent)
    dates: tuple[str, ...] = ()  # the archive dates scored

    @property
    def flagged(self) -> np.ndarray:
        """What `score` writes to `anomalies`: any detector fired."""
        out = self.rule | self.model
        if self.qmodel is not None:
            out = out | self.qmodel
        return out | self.tunnel if self.tunnel is not None else out


def read_labels(path: str) -> pa.Table:
    """flow_id,label (and category, family, if present) from Parquet or CSV, with each flow's date (YYYY-MM-DD)
    from a `date` or `ts` column (null when the file has neither)."""
    if not os.path.exists(path):
        raise ArchiveError(f"labels file {path} does not exist")
    try:
        table = pacsv.read_csv(path) if path.endswith((".csv", ".csv.gz")) else pq.read_table(path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise ArchiveError(f"cannot read labels {path}: {exc}") from None
    missing = {"flow_id", "label"} - set(table.column_names)
    if missing:
        raise ArchiveError(f"labels {path} lack column(s) {', '.join(sorted(missing))}; "
                           f"they need flow_id,label (columns present: {', '.join(table.column_names)})")
    category = (pc.fill_null(table["category"].cast(pa.string()), "") if "category" in table.column_names
                else pa.array([""] * table.num_rows, pa.string()))
    family = (pc.fill_null(table["family"].cast(pa.string()), "") if "family" in table.column_names
              else pa.array([""] * table.num_rows, pa.string()))
    table = pa.table({"flow_id": table["flow_id"].cast(pa.string()), "label": table["label"].cast(pa.string()),
                      "category": category, "family": family, "date": _dates_of(table)})
    if pc.count_distinct(table["flow_id"]).as_py() != table.num_rows:
        raise ArchiveError(f"labels {path} name some flow_id more than once; give each flow one label")
    return table


def _dates_of(table: pa.Table) -> pa.Array:
    if "date" in table.column_names:
        return table["date"].cast(pa.string())
    if "ts" in table.column_names and pa.types.is_timestamp(table["ts"].type):
        return pc.strftime(table["ts"], "%Y-%m-%d")
    return pa.nulls(table.num_rows, pa.string())


def labelled_dates(labels: pa.Table) -> list[str] | None:
    """The dates the labelled flows fall on, when every label has one (read_labels); else None."""
    if "date" not in labels.column_names or labels.num_rows == 0 or labels["date"].null_count:
        return None
    return sorted(set(labels["date"].to_pylist()))


def score_labelled(spark: SparkSession, cfg: Config, flows: str, labels: pa.Table, model_dir: str,
                   start: str | None, end: str | None, dates: list[str] | None = None) -> tuple[Scored, object]:
    """Score the archive's in-scope flows exactly as `score` does (the same Source, Detect and Escalate), keep
    every flow's losses, and join the labels. Escalation judges a group's whole day, so every in-scope flow
    of the range (or of ``dates``) is scored, labelled or not."""
    art = load_model(model_dir)
    if dates is not None:
        from portprint.jobs.archive.plan import is_remote, list_dates

        present = set(dates) if is_remote(flows) else set(list_dates(flows, cfg.archive.columns.date))
        dates = [d for d in dates if d in present]
        if not dates:
            raise ArchiveError(f"none of the labelled flows' dates is in {flows}: pass the archive that holds them")
    source = open_source(spark, cfg, flows, start, end, dates)
    with tempfile.TemporaryDirectory(prefix="portprint-evaluate-") as tmp:
        stage = Stage(spark, os.path.join(tmp, "stage"))
        pipeline.detect(source, art, cfg, "evaluate", 0, stage, scores=True)
        pipeline.escalate(source, art, cfg, "evaluate", 0, stage)
        every = stage.table((SCORES,), ["flow_id", "loss", "qname_loss", FIRED])
        found = stage.table((ANOMALY,), ["flow_id", "detector"])
    return joined(every, found, labels, art, cfg, _skipped(spark, cfg, source.plan, labels),
                  tuple(source.plan.dates)), art


def joined(every: pa.Table, found: pa.Table, labels: pa.Table, art, cfg: Config, skipped: dict[str, int],
           dates: tuple[str, ...] = ()) -> Scored:
    """Scored from Detect's SCORES rows (every scored flow) and the anomaly rows (for the tunnel detector's),
    joined with the labels: shared by `evaluate` and benchmarks/tunnel_eval.py (its plain pass)."""
    tunnel_ids = found.filter(pc.equal(found["detector"], "tunnel"))["flow_id"]
    every = every.append_column("_tunnel", pc.is_in(every["flow_id"], value_set=tunnel_ids))
    table = every.join(labels, "flow_id", join_type="inner", use_threads=False).sort_by("flow_id")
    fired = table[FIRED].to_numpy()
    qloss = pc.fill_null(table["qname_loss"], np.nan).to_numpy(zero_copy_only=False).astype(np.float64)
    return Scored(table["flow_id"].to_numpy(zero_copy_only=False).astype(str),
                  table["label"].to_numpy(zero_copy_only=False).astype(str),
                  table["loss"].to_numpy(), (fired & 1) > 0, skipped,
                  qloss if art.has_qname else None,
                  table["category"].to_numpy(zero_copy_only=False).astype(str),
                  # Escalation adds only flows no per-flow detector flagged, as in `score`.
                  table["_tunnel"].to_numpy(zero_copy_only=False) if escalating(cfg) else None,
                  (fired & 2) > 0, (fired & 4) > 0 if art.has_qname else None,
                  table["family"].to_numpy(zero_copy_only=False).astype(str), tuple(dates))


def _skipped(spark: SparkSession, cfg: Config, plan, labels: pa.Table) -> dict[str, int]:
    """Why labelled flows were not scored: outside the archive's range, out of scope, or without a payload."""
    cols = cfg.archive.columns
    raw = read_archive(spark, plan, cols, cfg.archive.prefix_encoding)
    if raw is None:
        return {"not_in_archive_range": labels.num_rows, "filtered_port": 0, "no_payload": 0}
    flows_df = canonical(raw, cols, cfg.archive.prefix_encoding)
    joined = flows_df.join(spark.createDataFrame(labels.select(["flow_id"])), "flow_id")
    scope = scope_condition(cfg.scope)
    payload = F.col("orig_payload_prefix").isNotNull() & (F.length("orig_payload_prefix") > 0)
    counts = joined.agg(
        F.count(F.lit(1)).alias("matched"),
        F.sum(F.when(~scope, 1).otherwise(0)).alias("filtered_port"),
        F.sum(F.when(scope & ~payload, 1).otherwise(0)).alias("no_payload"),
    ).collect()[0]
    return {"not_in_archive_range": labels.num_rows - int(counts["matched"]),
            "filtered_port": int(counts["filtered_port"] or 0), "no_payload": int(counts["no_payload"] or 0)}


def _upper95(flagged: int, n: int) -> float:
    """One-sided 95% upper bound on a rate seen as flagged/n: Clopper-Pearson's exact bound, the rate u at which
    seeing flagged or fewer of n has a 5% chance. Found by bisection on the binomial distribution in log space:
    the exact bound is the beta distribution's quantile, and scipy, which has it, is not a dependency for one
    function."""
    if n == 0:
        return float("nan")
    if flagged >= n:
        return 1.0
    if flagged == 0:
        return 1.0 - 0.05 ** (1.0 / n)
    i = np.arange(flagged + 1, dtype=np.float64)
    log_comb = math.lgamma(n + 1) - np.array([math.lgamma(x + 1) + math.lgamma(n - x + 1) for x in i.tolist()])

    def at_most(u: float) -> float:  # P(X <= flagged), X ~ Binomial(n, u)
        terms = log_comb + i * math.log(u) + (n - i) * math.log1p(-u)
        top = terms.max()
        return float(math.exp(top) * np.exp(terms - top).sum())

    lo, hi = flagged / n, 1.0
    for _ in range(100):  # the bound to about 1e-30: P(X <= flagged) falls as u rises
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if at_most(mid) > 0.05 else (lo, mid)
    return hi


def _lower95(flagged: int, n: int) -> float:
    """One-sided 95% lower bound on a rate seen as flagged/n (the upper bound of the misses, mirrored)."""
    return float("nan") if n == 0 else 1.0 - _upper95(n - flagged, n)


def _by_category(cat: np.ndarray, flags: np.ndarray) -> dict:
    """Per category: flows, flagged, the rate and its 95% bounds."""
    out = {}
    for c in sorted(set(cat.tolist())):
        n, k = int((cat == c).sum()), int(flags[cat == c].sum())
        out[c] = {"flows": n, "flagged": k, "rate": k / n if n else float("nan"), "upper95": _upper95(k, n),
                  "lower95": _lower95(k, n)}
    return out


def metrics(s: Scored, threshold: float, qname_threshold: float | None = None) -> dict:
    """Everything evaluation.json holds, for the combined decision and for each detector alone."""
    model = s.model
    has_q = s.qmodel is not None and qname_threshold is not None
    qloss = np.nan_to_num(s.qloss, nan=0.0) if has_q else np.zeros(len(s.loss))
    qmodel = s.qmodel if has_q else np.zeros(len(s.loss), bool)
    tunnel_det = s.tunnel if s.tunnel is not None else np.zeros(len(s.loss), bool)
    combined = s.flagged
    benign, attack, tunnel = s.label == BENIGN, attack_mask(s.label), s.label == TUNNEL
    category = s.category if s.category is not None else np.full(len(s.label), "")
    hard = benign & ~np.isin(category, ["", ORDINARY])
    rates = per_label(s.label, combined)
    for lab, row in rates.items():
        sel = s.label == lab
        row["rule_flagged"] = int(s.rule[sel].sum())
        row["model_flagged"] = int(model[sel].sum())
        row["qname_flagged"] = int(qmodel[sel].sum())  # the question model alone
        row["tunnel_flagged"] = int(tunnel_det[sel].sum())  # the Escalate stage
    # One score for the combined decision: each model's loss over its threshold (> 1 flags), and the
    # rule, which has no threshold, as "always above" when it fires.
    ratio = s.loss / threshold
    if has_q:
        ratio = np.maximum(ratio, qloss / qname_threshold)
    combined_score = np.where(s.rule, np.inf, ratio)

    def summary(flags: np.ndarray) -> dict:
        return {"fpr": float(flags[benign].mean()) if benign.any() else float("nan"),
                "fpr_upper95": _upper95(int(flags[benign].sum()), int(benign.sum())),
                "recall": float(flags[attack].mean()) if attack.any() else float("nan"),
                "tunnel_recall": float(flags[tunnel].mean()) if tunnel.any() else None,
                "hard_benign_fpr": float(flags[hard].mean()) if hard.any() else None}

    at = {}
    for target in TARGETS:
        th, rec = recall_at_fpr(combined_score[benign], combined_score[attack], target)
        th_m, rec_m = recall_at_fpr(s.loss[benign], s.loss[attack], target)
        at[f"{target:g}"] = {"threshold": th, "recall": rec, "model_threshold": th_m, "model_recall": rec_m}
        if has_q and tunnel.any():
            th_q, rec_q = recall_at_fpr(qloss[benign], qloss[tunnel], target)
            at[f"{target:g}"] |= {"qname_threshold": th_q, "qname_tunnel_recall": rec_q}
    protocols = {lab: row["rate"] for lab, row in rates.items() if attack[s.label == lab].all()}
    n_benign, fp = int(benign.sum()), int(combined[benign].sum())
    family = s.family if s.family is not None else np.full(len(s.label), "")
    # Recall per tunnel tool family (the labels' `family`; a tunnel without one counts under its category).
    fam = np.where(family == "", category, family)
    by_family = _by_category(fam[tunnel], combined[tunnel]) if tunnel.any() else {}
    # Rule and header model together: what the first bytes alone decide (the evaluation issue's test).
    detectors = {"header-rule": summary(s.rule), "header-model": summary(model), "header-both": summary(s.rule | model)}
    if has_q:
        detectors["qname-model"] = summary(qmodel)
    if s.tunnel is not None:
        detectors["tunnel"] = summary(tunnel_det)
    detectors["combined"] = summary(combined)
    return {
        "threshold": threshold,
        "qname_threshold": qname_threshold if has_q else None,
        "per_label": rates,
        **summary(combined),
        "fpr_upper95": _upper95(fp, n_benign),
        "detectors": detectors,
        "recall_per_protocol": protocols,
        "tunnel": {"flows": int(tunnel.sum()), "flagged": int(combined[tunnel].sum()),
                   "recall": float(combined[tunnel].mean()) if tunnel.any() else None,
                   "by_category": _by_category(category[tunnel], combined[tunnel]),
                   "by_family": by_family,
                   "family_mean": float(np.mean([v["rate"] for v in by_family.values()])) if by_family else None},
        "genuine_by_category": _by_category(category[benign], combined[benign]),
        "hard_benign": {"flows": int(hard.sum()), "flagged": int(combined[hard].sum()),
                        "fpr": float(combined[hard].mean()) if hard.any() else None,
                        "by_category": _by_category(category[hard], combined[hard])},
        "roc_auc": roc_auc(combined_score[benign], combined_score[attack]),
        "roc_auc_model": roc_auc(s.loss[benign], s.loss[attack]),
        "roc_auc_qname_tunnel": roc_auc(qloss[benign], qloss[tunnel]) if has_q and tunnel.any() else None,
        "at_fpr": at,
        "skipped": s.skipped,
        "flows_scored": len(s.label),
    }


def format_table(ev: dict) -> str:
    """The stdout table: one line per label and detector, then the headline numbers."""
    lines = [f"{'label':<14}{'flows':>9}{'flagged':>9}{'rate':>9}{'rule':>8}{'model':>8}{'qname':>8}{'tunnel':>8}"]
    for lab, row in sorted(ev["per_label"].items(), key=lambda kv: (kv[0] != BENIGN, kv[0] == TUNNEL, kv[0])):
        lines.append(f"{inert(lab):<14}{row['flows']:>9}{row['flagged']:>9}{row['rate']:>9.4f}"
                     f"{row['rule_flagged']:>8}{row['model_flagged']:>8}{row.get('qname_flagged', 0):>8}"
                     f"{row.get('tunnel_flagged', 0):>8}")
    lines.append("")
    for name, d in ev["detectors"].items():
        tunnel = "" if d["tunnel_recall"] is None else f"  tunnel recall {d['tunnel_recall']:.4f}"
        lines.append(f"{name:<13} false-positive rate on dns {d['fpr']:.5f} (upper {d['fpr_upper95']:.5f})   "
                     f"non-DNS recall {d['recall']:.4f}{tunnel}")
    lines.append(f"false positives on genuine DNS: {ev['fpr']:.5f} (95% upper bound {ev['fpr_upper95']:.5f}, "
                 f"{ev['per_label'].get(BENIGN, {}).get('flows', 0)} flows)")
    hb = ev["hard_benign"]
    if hb["flows"]:
        lines.append(f"hard-benign names: {hb['flagged']}/{hb['flows']} flagged, false-positive rate {hb['fpr']:.5f}; "
                     "per category (95% upper bound):")
        lines += [f"  {inert(c):<22}{v['flagged']:>6}/{v['flows']:<7} {v['rate']:.4%} (<= {v['upper95']:.3%})"
                  for c, v in hb["by_category"].items()]
    tu = ev["tunnel"]
    if tu["flows"]:
        lines.append(f"dns-tunnel: {tu['flagged']}/{tu['flows']} flagged, recall {tu['recall']:.4f}; mean over "
                     f"families {tu['family_mean']:.4f}; per family (95% lower bound):")
        lines += [f"  {inert(c):<22}{v['flagged']:>6}/{v['flows']:<7} {v['rate']:.2%} (>= {v['lower95']:.2%})"
                  for c, v in tu["by_family"].items()]
    lines.append(f"ROC-AUC combined {ev['roc_auc']:.5f}, header model alone {ev['roc_auc_model']:.5f}"
                 + (f"; question model on tunnels {ev['roc_auc_qname_tunnel']:.5f}"
                    if ev.get("roc_auc_qname_tunnel") is not None else ""))
    for target, row in ev["at_fpr"].items():
        lines.append(f"at FPR {target:>6}: recall {row['recall']:.4f} (threshold {row['threshold']:.4g}); "
                     f"model alone {row['model_recall']:.4f} (threshold {row['model_threshold']:.4g})"
                     + (f"; question model tunnel recall {row['qname_tunnel_recall']:.4f} "
                        f"(threshold {row['qname_threshold']:.4g})" if "qname_tunnel_recall" in row else ""))
    sk = ev["skipped"]
    lines.append(f"skipped: {sk['filtered_port']} not port 53 / not UDP-TCP, {sk['no_payload']} without payload, "
                 f"{sk['not_in_archive_range']} labels outside the archive range")
    if TUNNEL in ev["per_label"]:
        lines.append("dns-tunnel is reported on its own line and left out of the headline non-DNS recall: tunnels "
                     "are well-formed DNS, which only the question model is built to see.")
    return "\n".join(lines)


def json_safe(value):
    """``value`` with numpy scalars as Python numbers and NaN or infinite floats as None."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [json_safe(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value


def write_report(ev: dict, s: Scored, out: str) -> str:
    """evaluation.json, roc.png, loss_by_label.png and evaluation.md in ``out``."""
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "evaluation.json"), "w") as f:
        # Strict JSON: NaN and infinities (a rate over no flows) become null; label names from the labels file
        # are escaped by the encoder (ASCII only, so no control character or invalid byte reaches a reader).
        json.dump(json_safe(ev), f, indent=2, sort_keys=True, allow_nan=False, ensure_ascii=True)
    images = []
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        import matplotlib.ticker
    except ImportError:  # plots are for people; the numbers stand without them
        plt = None
    if plt is not None:
        benign, attack = s.label == BENIGN, attack_mask(s.label)
        fig, ax = plt.subplots(figsize=(5, 4))
        for name, score in (("model loss", s.loss), ("rule + model", np.where(s.rule, np.inf, s.loss))):
            fpr, tpr = roc_curve(score[benign], score[attack])
            ax.plot(np.clip(fpr, 1e-6, 1), tpr, label=name)
        ax.set_xscale("log")
        ax.set_xlabel("false-positive rate on genuine DNS (log)")
        ax.set_ylabel("recall of non-DNS")
        ax.axvline(1e-3, color="grey", lw=0.5)
        ax.legend(loc="lower right")
        fig.tight_layout()
        fig.savefig(os.path.join(out, "roc.png"), dpi=110)
        plt.close(fig)
        fig, ax = plt.subplots(figsize=(7, 4))
        floor = max(float(np.min(s.loss[s.loss > 0])) if (s.loss > 0).any() else 1e-9, 1e-9)
        bins = np.logspace(np.log10(floor), np.log10(max(float(s.loss.max()), floor * 10)), 60)
        ax.set_prop_cycle(color=plt.cm.tab20.colors)  # one colour per label, up to twenty
        for lab in sorted(set(s.label.tolist())):
            ax.hist(np.clip(s.loss[s.label == lab], floor, None), bins=bins, histtype="step", label=inert(lab),
                    density=True)
        ax.axvline(ev["threshold"], color="black", ls="--", label="threshold")
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_xlabel("reconstruction loss (log)")
        ax.set_ylabel("density")
        ax.legend(fontsize=7, ncol=2)
        fig.tight_layout()
        fig.savefig(os.path.join(out, "loss_by_label.png"), dpi=110)
        plt.close(fig)
        images = ["![ROC curve](roc.png)", "![loss by label](loss_by_label.png)"]
    md = ["# portprint evaluation", "", "```", format_table(ev), "```", "", *images, ""]
    path = os.path.join(out, "evaluation.md")
    with open(path, "w") as f:
        f.write("\n".join(md))
    return path


def run_evaluate(spark: SparkSession, cfg: Config, flows: str, labels_path: str, model_dir: str,
                 start: str | None = None, end: str | None = None, out: str | None = None,
                 log: Callable[[str], None] = lambda m: print(m, file=sys.stderr)) -> dict:
    """Score labelled flows and report per-label rates, FPR, recall, ROC-AUC and thresholds. Without ``start`` and
    ``end``, only the dates the labelled flows fall on are scored (when the labels carry a date or ts column)."""
    labels = read_labels(labels_path)
    dates = labelled_dates(labels) if start is None and end is None else None
    s, art = score_labelled(spark, cfg, flows, labels, model_dir, start, end, dates)
    if not (s.label == BENIGN).any():
        raise ArchiveError(f"no flow labelled '{BENIGN}' among the scored flows: the false-positive rate needs them")
    ev = metrics(s, art.meta.threshold, art.meta.qname.get("threshold") if art.has_qname else None)
    ev["model_version"] = art.meta.model_version
    ev["dates"] = list(s.dates)
    ev["unscored_labels"] = [lab for lab in NOT_SCORED if lab in set(labels["label"].to_pylist())]
    if out:
        ev["report"] = write_report(ev, s, out)
        log(f"portprint evaluate: report in {ev['report']}")
    return ev
