"""Train the autoencoders on the site's own port-53 flows and calibrate their thresholds (`portprint train`,
`portprint threshold`)."""

from __future__ import annotations

import datetime as dt
import io
import os
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from portprint.conf.config import Config
from portprint.jobs.archive import open_source
from portprint.jobs.archive.plan import ArchiveError, is_remote, list_dates, parse_date
from portprint.models.artifact import ModelArtifact, ModelMeta, content_version
from portprint.models.autoencoder import (
    PrefixAutoencoder,
    feature_weights,
    model_from_bytes,
    reconstruction_loss,
    state_bytes,
    train_autoencoder,
    unique_patterns,
)
from portprint.models.calibration import Threshold, calibrate
from portprint.udfs.augment import augmented_features, benign_name_prefixes
from portprint.udfs.features import FEATURE_VERSION, binary_buffers, features_from_arrow
from portprint.udfs.header_rule import REASONS, reasons_from_arrow
from portprint.udfs.qname import (
    N_QNAME_INPUTS,
    QNAME_VERSION,
    judged,
    model_inputs,
    qname_features_from_arrow,
    question_keys,
)

CALIBRATION_LOSS = "calibration_loss.npy"
QNAME_CALIBRATION_LOSS = "qname_calibration_loss.npy"


class TrainingError(ValueError):
    """Not enough usable flows to train; the message says what was found."""


@dataclass(frozen=True)
class TrainReport:
    model_dir: str
    model_version: str
    threshold: float
    method: str
    flows_used: dict
    epochs_run: int
    seconds: float


def training_window(flows: str, date_col: str, start: str | None, end: str | None,
                    days: int | None) -> tuple[list[str] | None, dict]:
    """The archive dates to train on, and how they were chosen (recorded in model.json and the card).

    Explicit ``start`` wins: every date in [start, end]. Otherwise the ``days`` most recent archive dates
    ending at ``end`` (default: the last present); a remote archive, which cannot be listed, takes the
    ``days`` calendar days ending at ``end``. ``days`` None or 0 with no ``start``: every date up to ``end``.
    """
    if start or not days:
        return None, {"how": "explicit" if start or end else "all", "start": start, "end": end}
    if days < 1:
        raise ArchiveError(f"--days must be at least 1, not {days}")
    end = parse_date(end, "--end") if end else None
    if is_remote(flows):
        if end is None:
            raise ArchiveError(f"{flows} is a remote path: pass --end (or --start and --end) so the window is known")
        last = dt.date.fromisoformat(end)
        dates = [(last - dt.timedelta(days=i)).isoformat() for i in range(days - 1, -1, -1)]
    else:
        present = [d for d in list_dates(flows, date_col) if end is None or d <= end]
        if not present:
            raise ArchiveError(f"no archive dates up to {end or 'the last'} under {flows}; "
                               "check --flows and --end")
        dates = present[-days:]
    return dates, {"how": "days", "days": days, "end": end}


def collect_training_flows(spark: SparkSession, cfg: Config, flows: str, start: str | None,
                           end: str | None, dates: list[str] | None = None) -> tuple[pa.Table, list[str], dict]:
    """The in-scope flows of the window, sampled down to max_train_flows, as a narrow Arrow table."""
    source = open_source(spark, cfg, flows, start, end, dates)
    plan = source.plan
    scoped = source.flows()
    if scoped is None:
        raise TrainingError(f"the dates {plan.dates[0]}..{plan.dates[-1]} of {flows} hold no flow files")
    # The whole stored prefix: the question model reads the name that follows the header.
    narrow = scoped.select("flow_id", "date", F.col("orig_payload_prefix").alias("prefix"),
                           F.col("proto").cast("byte").alias("proto"), "orig_bytes",
                           F.length("orig_payload_prefix").cast("int").alias("prefix_len"))
    total = narrow.count()
    cap = cfg.model.max_train_flows
    if total > cap:
        narrow = narrow.sample(fraction=min(1.0, 1.2 * cap / total), seed=cfg.model.seed)
    table = narrow.toArrow()
    # Spark's row order is not a contract: sort so the same archive always trains the same model.
    table = table.sort_by("flow_id").slice(0, cap)
    return table, plan.dates, {"in_scope_with_payload": int(total), "sampled": table.num_rows}


FLOOR_MARGIN = 0.05  # a threshold floor sits this far above the worst-reconstructed of what it protects


def model_card(meta: ModelMeta, th: Threshold, qth: Threshold | None = None) -> str:
    """A short Markdown card: what the model saw, how its threshold was set, what it cannot see."""
    fu, ls = meta.flows_used, meta.loss_stats
    return f"""# portprint model {meta.model_version}

- **Features:** {meta.feature_version}: the first {meta.width} DNS message bytes as bits (after the TCP length
  prefix), plus is_tcp and whether the framing length is plausible. The random DNS ID is
  {"masked (not an input, not in the loss)" if meta.id_mode == "mask" else "kept, as in the published design"}.
- **Architecture:** dense autoencoder {meta.n_features} -> {" -> ".join(map(str, meta.hidden))} -> mirrored.
- **Training window:** {_window_text(meta)}.
- **Flows:** {fu.get("in_scope_with_payload")} in scope with a payload; {fu.get("sampled")} sampled;
  {fu.get("rule_rejected")} left out because the header rule rejected them; {fu.get("train")} trained on,
  {fu.get("calibration")} held out for calibration.
- **Held-out loss:** median {ls.get("p50"):.4g}, p99 {ls.get("p99"):.4g}, p99.9 {ls.get("p999"):.4g},
  max {ls.get("max"):.4g}.
- **Threshold:** {th.value:.6g} by the **{th.method}** method at target false-positive rate {th.target_fpr:g}
  ({th.reason}). Empirical quantile: {th.empirical:.6g}; log-normal fit (Kitsune): {th.lognormal:.6g}
  (mu {th.lognormal_mu:.4g}, sigma {th.lognormal_sigma:.4g}).
- **Expected false positives:** about {th.target_fpr:g} of benign port-53 flows, i.e. {th.target_fpr * 1e6:.0f} per
  million, if next month's DNS resembles the training window.

{_feedback_card(fu.get("benign_feedback"))}{_qname_card(meta, qth)}
## What this model cannot see
- **A tunnel's first queries can look ordinary:** handshakes and polls with short names. The question
  model judges one query at a time; a parent domain's volume over days is for `anomaly_patterns`.
- Anything past the stored prefix: a name longer than the prefix is judged on the part that is there.
- Names of one or two labels are not judged by the question model: through a resolver they reach only root
  and TLD servers. A tunnel client that talks straight to its own server on port 53 could use them.
- Flows with no stored payload.
- DNS from implementations absent from the training window may score higher than the site's own.

portprint raises alerts for people to judge; it never blocks or acts on traffic.
"""


def _window_text(meta: ModelMeta) -> str:
    w = meta.training.get("window", {})
    n = len(w.get("dates", []))
    text = f"{meta.train_start} .. {meta.train_end} ({n} archive date{'s' if n != 1 else ''}"
    if w.get("how") == "days":
        text += f": the {w['days']} most recent ending at {w.get('end') or 'the last present'}"
    elif w.get("how") == "explicit":
        text += ": --start/--end"
    return text + ")"


def _loss_stats(cal_loss: np.ndarray) -> dict:
    q = np.quantile(cal_loss, [0.5, 0.99, 0.999])
    return {"p50": float(q[0]), "p99": float(q[1]), "p999": float(q[2]), "max": float(cal_loss.max()),
            "mean": float(cal_loss.mean())}


def train_qname(prefix: pa.Array, proto: np.ndarray, keep: np.ndarray, dates: pa.Array, cfg: Config, target: float,
                log: Callable[[str], None], fed: np.ndarray | None = None
                ) -> tuple[bytes | None, dict, np.ndarray | None, Threshold | None, bytes | None]:
    """Train and calibrate the question-section model on the flows the header rule accepts.

    Returns (weights, metadata, held-out losses, threshold, the known names' keys as bytes); weights
    None when too few flows show a name, e.g. an archive of 8-byte prefixes.
    """
    mc = cfg.model
    if not mc.qname:
        return None, {}, None, None, None
    buf = binary_buffers(prefix)
    raw = qname_features_from_arrow(prefix, proto)[keep]
    visible = raw[:, 0] > 0.5  # flows whose prefix shows at least one name byte
    raw = raw[visible]
    keys = question_keys(buf.offsets, buf.data, buf.validity, buf.bit_offset,
                         np.ascontiguousarray(proto, dtype=np.int8))[keep][visible]
    # Day number of each flow: recurring_names needs which day, not the date itself.
    days = np.unique(np.asarray(dates.to_numpy(zero_copy_only=False)), return_inverse=True)[1].ravel()[keep][visible]
    feats = model_inputs(raw)
    if len(feats) < mc.qname_min_flows:
        log(f"portprint train: no question model: only {len(feats)} flows show a query name "
            f"(model.qname_min_flows is {mc.qname_min_flows}); prefixes may be too short")
        return None, {}, None, None, None
    rng = np.random.default_rng(mc.seed + 1)
    fed = np.zeros(len(feats), bool) if fed is None else fed[keep][visible]
    order = _fed_last(rng.permutation(len(feats)), fed)
    n_cal = int(int((~fed).sum()) * mc.calibration_fraction)
    # Every name teaches the model what names look like; the threshold is set on the names it judges.
    cal, fit = feats[order[:n_cal]][judged(raw[order[:n_cal]])], feats[order[n_cal:]]
    if len(cal) < 100:
        log(f"portprint train: no question model: only {len(cal)} held-out names are ones a tunnel could use "
            "(cut off by the prefix, or three labels or more); widen --start/--end")
        return None, {}, None, None, None
    used = {"with_name": len(feats), "train": len(fit), "calibration": len(cal)}
    patterns, counts = unique_patterns(fit)
    used["distinct_patterns"] = len(patterns)
    if mc.qname_augment:
        # Benign name shapes the window may lack join as patterns seen once (see udfs/augment.py).
        wires, protos = benign_name_prefixes(seed=mc.seed)
        extra = model_inputs(qname_features_from_arrow(wires, protos))
        patterns, idx = np.unique(np.concatenate([patterns, extra]), axis=0, return_inverse=True)
        counts = np.bincount(idx.ravel(), weights=np.concatenate([counts, np.ones(len(extra))])).astype(np.int64)
        used["augmented_patterns"] = len(patterns) - used["distinct_patterns"]
    weights = np.ones(N_QNAME_INPUTS, dtype=np.float32)

    def fit_once(rows: np.ndarray, seen: np.ndarray):
        return train_autoencoder(rows, weights, hidden=tuple(mc.qname_hidden), epochs=mc.epochs,
                                 batch_size=mc.batch_size, learning_rate=mc.learning_rate, patience=mc.patience,
                                 seed=mc.seed, validation_fraction=mc.validation_fraction, counts=seen,
                                 balance=mc.qname_balance, epoch_rows=mc.epoch_rows)

    result = fit_once(patterns, counts)
    if mc.qname_trim > 0:
        # Trimmed refit: the window is unlabelled and may hold a tunnel already. Drop the patterns
        # behind the worst-reconstructed share of the window's flows and train again without them.
        loss = reconstruction_loss(result.model.double(), patterns.astype(np.float64), weights)
        worst = np.argsort(-loss, kind="stable")
        cut = np.searchsorted(np.cumsum(counts[worst]), mc.qname_trim * counts.sum(), side="right")
        keep = np.ones(len(patterns), bool)
        keep[worst[:cut]] = False
        keep |= _rows_in(patterns, feats[fed])  # what people marked benign is never trimmed
        used["trimmed_patterns"], used["trimmed_flows"] = int(cut), int(counts[worst[:cut]].sum())
        result = fit_once(patterns[keep], counts[keep])
    blob = state_bytes(result.model)
    known = recurring_names(keys, days, judged(raw), mc.qname_known_max)
    used["known_names"] = len(known)
    # The threshold is set on all judged held-out names, known ones included: the held-out names nobody
    # asked twice can be few (the sample: a dozen) and are where the window's tunnels, if any, would be.
    cal_loss = reconstruction_loss(model_from_bytes(blob, N_QNAME_INPUTS, tuple(mc.qname_hidden)), cal, weights)
    th = calibrate(cal_loss, target, cfg.threshold.qname_method)
    # The Escalate stage's "odd" name (udfs/escalate.py): above this held-out quantile, so about odd_rate of the
    # names of traffic like the window's are odd.
    odd_rate = cfg.escalate.odd_rate
    meta = {"feature_version": QNAME_VERSION, "n_features": N_QNAME_INPUTS, "hidden": list(mc.qname_hidden),
            "threshold": th.value, "threshold_info": th.as_dict(), "flows_used": used,
            "odd_rate": odd_rate, "odd_threshold": float(np.quantile(cal_loss, 1.0 - odd_rate)),
            "loss_stats": _loss_stats(cal_loss) | {"best_val_loss": result.best_val_loss},
            "epochs_run": result.epochs_run, "known_names": len(known)}
    return blob, meta, cal_loss, th, known.astype("<u8").tobytes() if len(known) else None


def _fed_last(order: np.ndarray, fed: np.ndarray) -> np.ndarray:
    """The permutation with the benign-feedback rows moved to its end: held-out rows are taken from its start."""
    return np.concatenate([order[~fed[order]], order[fed[order]]]) if fed.any() else order


def _rows_in(rows: np.ndarray, among: np.ndarray) -> np.ndarray:
    """Which of ``rows`` (2-D) equal some row of ``among``."""
    if not len(among):
        return np.zeros(len(rows), bool)

    def void(x: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(x, dtype=rows.dtype)
        return x.view(np.dtype((np.void, x.dtype.itemsize * x.shape[1]))).ravel()
    return np.isin(void(rows), void(among))


def recurring_names(keys: np.ndarray, days: np.ndarray, judge: np.ndarray, cap: int) -> np.ndarray:
    """Sorted question keys of the judged names the window asked on two days or more (at most ``cap``,
    the most asked first). A tunnel never repeats a name across days (each query carries new data, and
    a resolver would answer a repeat from its cache), so these are the site's own; the window's
    tunnels, if any, cannot get onto this list."""
    rows = np.flatnonzero(judge)
    if len(rows) == 0 or len(np.unique(days[rows])) < 2:
        return np.zeros(0, np.uint64)
    names, inverse, flows = np.unique(keys[rows], return_inverse=True, return_counts=True)
    pairs = np.unique(np.stack([inverse.ravel().astype(np.int64), days[rows].astype(np.int64)], axis=1), axis=0)
    n_days = np.bincount(pairs[:, 0], minlength=len(names))
    picked = np.flatnonzero(n_days >= 2)
    picked = picked[np.argsort(-flows[picked], kind="stable")[:cap]]
    return np.sort(names[picked]).astype(np.uint64)


def _feedback_card(fb: dict | None) -> str:
    if not fb:
        return ""
    return (f"## Benign feedback\n- **{fb['added']} flows** people marked benign or flagged under allowlisted domains "
            f"(from {fb['warehouse']}) were trained on as normal traffic: {fb['marked_benign']} marked benign, "
            f"{fb['allowlisted']} under allowlisted domains, {fb['not_in_archive']} no longer in the archive.\n\n")


def _qname_card(meta: ModelMeta, qth: Threshold | None) -> str:
    q = meta.qname
    if not q or qth is None:
        return ("## Question-section model\n- **Not trained:** too few flows showed a query name (or `model.qname` "
                "is off), so DNS tunnels are not looked for.\n")
    fu, ls = q["flows_used"], q["loss_stats"]
    return f"""## Question-section model
- **Features:** {q["feature_version"]}: {q["n_features"]} facts about the query name visible in the prefix (label
  lengths, character classes, entropy, record type; udfs/qname.py), case-folded.
- **Architecture:** dense autoencoder {q["n_features"]} -> {" -> ".join(map(str, q["hidden"]))} -> mirrored.
- **Flows:** {fu.get("with_name")} showed a name; {fu.get("train")} trained on ({fu.get("distinct_patterns")} distinct,
  {fu.get("augmented_patterns", 0)} benign shapes added), {fu.get("calibration")} held out.
- **Held-out loss:** median {ls["p50"]:.4g}, p99 {ls["p99"]:.4g}, max {ls["max"]:.4g}.
- **Threshold:** {qth.value:.6g} by the **{qth.method}** method at target false-positive rate {qth.target_fpr:g}.
- **Known names:** {q.get("known_names", 0)} names the window asked on two days or more are the site's own and are
  never flagged (a tunnel cannot repeat a name across days: each query carries new data).
- **Escalation's odd rule:** a name is odd above {q.get("odd_threshold", float("nan")):.4g} (the held-out
  {1 - q.get("odd_rate", float("nan")):.0%} quantile); a client's group of names under one domain whose day is
  mostly odd, new names is escalated when the day's own odd share stays near that rate (udfs/escalate.py,
  `escalate` in the configuration).
"""


def legal_floor(model: PrefixAutoencoder, weights: np.ndarray, width: int, mask_id: bool) -> tuple[float, str]:
    """The header threshold's floor: just above the loss of every legal header in udfs/augment.py.

    Those headers are DNS by RFC, so flagging one is a false positive by construction. A threshold read
    off a site's held-out traffic sits in the tail of its own few header shapes, which can be below a
    legal variant the small model reconstructs less well (an UPDATE, a TCP query with AD set).
    """
    loss = reconstruction_loss(model, augmented_features(width, mask_id), weights)
    return float(loss.max()) * (1 + FLOOR_MARGIN), (
        f"{FLOOR_MARGIN:.0%} above the worst-reconstructed of {len(loss)} legal DNS headers (RFC 1035/1996/2136/6891/"
        "7873), so no header the RFCs allow is flagged by the model")


def run_train(spark: SparkSession, cfg: Config, flows: str, model_dir: str, start: str | None = None,
              end: str | None = None, target_fpr: float | None = None, qname_target_fpr: float | None = None,
              days: int | None = None,
              log: Callable[[str], None] = lambda m: print(m, file=sys.stderr),
              benign_from: str | None = None) -> TrainReport:
    """Train on the window's port-53 flows, calibrate on held-out ones, write the model directory.

    The window: ``start``..``end`` when ``start`` is given, else the ``days`` most recent archive dates
    ending at ``end`` (``days`` None: ``model.window_days``). ``target_fpr`` sets the header model's
    threshold, ``qname_target_fpr`` the question model's; each defaults to its own ``threshold`` setting.
    ``benign_from``: a warehouse whose benign verdicts and allowlisted names join training as normal traffic.
    """
    t0 = time.monotonic()
    mc, fc = cfg.model, cfg.features
    target = target_fpr if target_fpr is not None else cfg.threshold.target_fpr
    window, how = training_window(flows, cfg.archive.columns.date, start, end,
                                  mc.window_days if days is None else days)
    table, dates, used = collect_training_flows(spark, cfg, flows, start, end, window)
    fed = np.zeros(table.num_rows, bool)
    if benign_from:  # people's benign verdicts and allowlisted names, as normal traffic (jobs/warehouse/feedback.py)
        from portprint.jobs.warehouse.feedback import benign_training_flows, with_feedback

        extra, used["benign_feedback"] = benign_training_flows(spark, cfg, benign_from, flows)
        table, fed = with_feedback(table, extra)
    log(f"portprint train: {table.num_rows} flows from {dates[0]}..{dates[-1]} collected "
        f"in {time.monotonic() - t0:.1f}s")
    proto = pc.fill_null(table["proto"], 0).to_numpy()
    orig = pc.fill_null(table["orig_bytes"], -1).to_numpy()
    reasons = reasons_from_arrow(table["prefix"], proto, orig, table["prefix_len"].to_numpy())
    keep = reasons == 0 if mc.clean_with_rule else np.ones(len(reasons), bool)
    used["rule_rejected"] = int((~keep).sum()) if mc.clean_with_rule else 0
    used["rule_rejected_by_reason"] = {REASONS[r]: int((reasons[~keep] == r).sum())
                                       for r in np.unique(reasons[~keep])} if mc.clean_with_rule else {}
    feats = features_from_arrow(table["prefix"], proto, orig, fc.width, fc.id_mode == "mask")[keep]
    rng = np.random.default_rng(mc.seed)
    order = _fed_last(rng.permutation(len(feats)), fed[keep])
    n_cal = int(int((~fed[keep]).sum()) * mc.calibration_fraction)
    if n_cal < 100 or len(order) - n_cal < 100:
        raise TrainingError(f"only {len(feats)} usable port-53 flows in {dates[0]}..{dates[-1]}; training needs at "
                            "least a few hundred (widen --start/--end)")
    cal, fit = feats[order[:n_cal]], feats[order[n_cal:]]
    used.update(train=len(fit), calibration=len(cal))
    weights = feature_weights(fc.width, fc.id_mode)
    patterns, counts = unique_patterns(fit)
    used["distinct_patterns"] = len(patterns)
    if mc.augment:
        # Legal headers the window may lack join as patterns seen once (see udfs/augment.py).
        extra = augmented_features(fc.width, fc.id_mode == "mask")
        patterns, idx = np.unique(np.concatenate([patterns, extra]), axis=0, return_inverse=True)
        counts = np.bincount(idx.ravel(), weights=np.concatenate([counts, np.ones(len(extra))])).astype(np.int64)
        used["augmented_patterns"] = len(patterns) - used["distinct_patterns"]
    result = train_autoencoder(patterns, weights, hidden=tuple(mc.hidden), epochs=mc.epochs,
                               batch_size=mc.batch_size, learning_rate=mc.learning_rate, patience=mc.patience,
                               seed=mc.seed, validation_fraction=mc.validation_fraction, counts=counts,
                               balance=mc.pattern_balance, epoch_rows=mc.epoch_rows)
    blob = state_bytes(result.model)
    # Calibrate with the model exactly as the scorer will run it (rebuilt from its bytes, float64).
    scoring_model = model_from_bytes(blob, fit.shape[1], tuple(mc.hidden))
    cal_loss = reconstruction_loss(scoring_model, cal, weights)
    floor, why = legal_floor(scoring_model, weights, fc.width, fc.id_mode == "mask") if mc.augment else (0.0, "")
    th = calibrate(cal_loss, target, cfg.threshold.method, floor, why)
    qtarget = qname_target_fpr if qname_target_fpr is not None else cfg.threshold.qname_target_fpr
    qblob, qmeta, qcal, qth, qknown = train_qname(table["prefix"], proto, keep, table["date"], cfg, qtarget, log,
                                                       fed)
    meta = ModelMeta(
        feature_version=FEATURE_VERSION, width=fc.width, id_mode=fc.id_mode, hidden=list(mc.hidden),
        n_features=fit.shape[1], threshold=th.value, threshold_info=th.as_dict(),
        train_start=dates[0], train_end=dates[-1], flows_used=used,
        loss_stats=_loss_stats(cal_loss) | {"best_val_loss": result.best_val_loss},
        training={"epochs_run": result.epochs_run, "history": result.history, **asdict(mc),
                  "window": how | {"dates": list(dates)}},
        qname=qmeta,
    )
    meta = ModelMeta(**(asdict(meta) | {"model_version": content_version(blob, meta, qblob, qknown)}))
    # The held-out losses are kept so `portprint threshold` can move the thresholds without retraining.
    extras = {CALIBRATION_LOSS: _npy(cal_loss)} | ({QNAME_CALIBRATION_LOSS: _npy(qcal)} if qcal is not None else {})
    ModelArtifact(blob, meta, qblob, qknown, extras).save(model_dir, card=model_card(meta, th, qth))
    seconds = time.monotonic() - t0
    log(f"portprint train: model {meta.model_version}, header threshold {th.value:.4g} ({th.method}), "
        + (f"question threshold {qth.value:.4g} ({qth.method}), " if qth else "no question model, ")
        + f"{result.epochs_run} epochs, {seconds:.1f}s")
    return TrainReport(model_dir, meta.model_version, th.value, th.method, used, result.epochs_run, seconds)


def _npy(values: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, values.astype(np.float64))
    return buf.getvalue()


def rethreshold(model_dir: str, out_dir: str, target_fpr: float, method: str = "auto",
                block: str = "header") -> tuple[ModelArtifact, Threshold]:
    """Re-derive one block's threshold from its stored held-out losses, without retraining, and write the
    result as a new model folder ``out_dir`` (a new model_version); ``model_dir`` is never changed."""
    if os.path.realpath(out_dir) == os.path.realpath(model_dir):
        raise TrainingError(f"--out {out_dir} is the model itself: a model is never edited in place; write the "
                            "re-thresholded model to a new folder")
    art = ModelArtifact.load(model_dir, with_extras=True)
    name = QNAME_CALIBRATION_LOSS if block == "qname" else CALIBRATION_LOSS
    if name not in art.extras:
        raise TrainingError(f"{os.path.join(model_dir, name)} is missing: this model was trained without stored "
                            f"{block} calibration losses; retrain")
    old = art.meta.qname.get("threshold_info", {}) if block == "qname" else art.meta.threshold_info
    # The floor was measured with this model at training time: it still holds for any new target.
    th = calibrate(np.load(io.BytesIO(art.extras[name])), target_fpr, method, old.get("floor", 0.0),
                   old.get("floor_reason", ""))
    new = art.with_threshold(th.value, th.as_dict(), block)
    header_th = Threshold(**new.meta.threshold_info)
    qname_th = Threshold(**new.meta.qname["threshold_info"]) if new.has_qname else None
    new.save(out_dir, card=model_card(new.meta, header_th, qname_th))
    return new, th
