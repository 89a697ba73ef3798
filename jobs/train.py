"""Train the autoencoder on the site's own port-53 flows and calibrate its threshold."""

from __future__ import annotations

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

from portprint.jobs.archive import plan_archive, read_archive
from portprint.jobs.config import Config
from portprint.jobs.transforms import canonical, has_payload, in_scope
from portprint.models.artifact import ModelArtifact, ModelMeta, content_version
from portprint.models.augment import augmented_features
from portprint.models.autoencoder import (
    feature_weights,
    model_from_bytes,
    reconstruction_loss,
    state_bytes,
    train_autoencoder,
    unique_patterns,
)
from portprint.models.calibration import Threshold, calibrate
from portprint.udfs.features import FEATURE_VERSION, features_from_arrow
from portprint.udfs.header_rule import REASONS, reasons_from_arrow

CALIBRATION_LOSS = "calibration_loss.npy"


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


def collect_training_flows(spark: SparkSession, cfg: Config, flows: str, start: str | None,
                           end: str | None) -> tuple[pa.Table, list[str], dict]:
    """The in-scope flows of the window, sampled down to max_train_flows, as a narrow Arrow table."""
    cols = cfg.archive.columns
    plan = plan_archive(flows, cols, cfg.archive.prefix_encoding, start, end)
    raw = read_archive(spark, plan, cols)
    if raw is None:
        raise TrainingError(f"the dates {plan.dates[0]}..{plan.dates[-1]} of {flows} hold no flow files")
    scoped = in_scope(canonical(raw, cols, cfg.archive.prefix_encoding), cfg.scope).where(has_payload())
    cut = max(cfg.features.width, 12) + 2
    narrow = scoped.select("flow_id", F.substring("orig_payload_prefix", 1, cut).alias("prefix"),
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


def model_card(meta: ModelMeta, th: Threshold) -> str:
    """A short Markdown card: what the model saw, how its threshold was set, what it cannot see."""
    fu, ls = meta.flows_used, meta.loss_stats
    return f"""# portprint model {meta.model_version}

- **Features:** {meta.feature_version}: the first {meta.width} DNS message bytes as bits (after the TCP length
  prefix), plus is_tcp and whether the framing length is plausible. The random DNS ID is
  {"masked (not an input, not in the loss)" if meta.id_mode == "mask" else "kept, as in the published design"}.
- **Architecture:** dense autoencoder {meta.n_features} -> {" -> ".join(map(str, meta.hidden))} -> mirrored.
- **Training window:** {meta.train_start} .. {meta.train_end}.
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

## What this model cannot see
- **Well-formed DNS tunnels** (iodine, dns2tcp, dnscat2): their headers are valid DNS, so neither this model
  nor the header rule flags them. They need the question-section detector.
- Anything past the first {meta.width} message bytes, and flows with no stored payload.
- DNS from implementations absent from the training window may score higher than the site's own.

portprint raises alerts for people to judge; it never blocks or acts on traffic.
"""


def run_train(spark: SparkSession, cfg: Config, flows: str, model_dir: str, start: str | None = None,
              end: str | None = None, target_fpr: float | None = None,
              log: Callable[[str], None] = lambda m: print(m, file=sys.stderr)) -> TrainReport:
    """Train on the window's port-53 flows, calibrate on held-out ones, write the model directory."""
    t0 = time.monotonic()
    mc, fc = cfg.model, cfg.features
    target = target_fpr if target_fpr is not None else cfg.threshold.target_fpr
    table, dates, used = collect_training_flows(spark, cfg, flows, start, end)
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
    order = rng.permutation(len(feats))
    n_cal = int(len(order) * mc.calibration_fraction)
    if n_cal < 100 or len(order) - n_cal < 100:
        raise TrainingError(f"only {len(feats)} usable port-53 flows in {dates[0]}..{dates[-1]}; training needs at "
                            "least a few hundred (widen --start/--end)")
    cal, fit = feats[order[:n_cal]], feats[order[n_cal:]]
    used.update(train=len(fit), calibration=len(cal))
    weights = feature_weights(fc.width, fc.id_mode)
    patterns, counts = unique_patterns(fit)
    used["distinct_patterns"] = len(patterns)
    if mc.augment:
        # Legal headers the window may lack join as patterns seen once (see models/augment.py).
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
    th = calibrate(cal_loss, target, cfg.threshold.method)
    q = np.quantile(cal_loss, [0.5, 0.99, 0.999])
    meta = ModelMeta(
        feature_version=FEATURE_VERSION, width=fc.width, id_mode=fc.id_mode, hidden=list(mc.hidden),
        n_features=fit.shape[1], threshold=th.value, threshold_info=th.as_dict(),
        train_start=dates[0], train_end=dates[-1], flows_used=used,
        loss_stats={"p50": float(q[0]), "p99": float(q[1]), "p999": float(q[2]), "max": float(cal_loss.max()),
                    "mean": float(cal_loss.mean()), "best_val_loss": result.best_val_loss},
        training={"epochs_run": result.epochs_run, "history": result.history, **asdict(mc)},
    )
    meta = ModelMeta(**(asdict(meta) | {"model_version": content_version(blob, meta)}))
    ModelArtifact(blob, meta).save(model_dir, card=model_card(meta, th))
    # Kept so `portprint threshold` can move the threshold later without retraining.
    np.save(os.path.join(model_dir, CALIBRATION_LOSS), cal_loss.astype(np.float64))
    seconds = time.monotonic() - t0
    log(f"portprint train: model {meta.model_version}, threshold {th.value:.4g} ({th.method}), "
        f"{result.epochs_run} epochs, {seconds:.1f}s")
    return TrainReport(model_dir, meta.model_version, th.value, th.method, used, result.epochs_run, seconds)


def rethreshold(model_dir: str, target_fpr: float, method: str = "auto") -> tuple[ModelArtifact, Threshold]:
    """Re-derive the threshold from the stored held-out losses, without retraining."""
    art = ModelArtifact.load(model_dir)
    path = os.path.join(model_dir, CALIBRATION_LOSS)
    if not os.path.isfile(path):
        raise TrainingError(f"{path} is missing: this model was trained without stored calibration losses; retrain")
    th = calibrate(np.load(path), target_fpr, method)
    new = art.with_threshold(th.value, th.as_dict())
    new.save(model_dir, card=model_card(new.meta, th))
    return new, th
