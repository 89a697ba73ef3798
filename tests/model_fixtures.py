"""Small real model folders for the model-lifecycle tests (untrained networks, real thresholds)."""

from __future__ import annotations

import io
from dataclasses import asdict

import numpy as np

from portprint.models.artifact import ModelArtifact, ModelMeta, content_version
from portprint.models.autoencoder import PrefixAutoencoder, state_bytes
from portprint.models.calibration import calibrate
from portprint.udfs.features import FEATURE_VERSION
from portprint.udfs.qname import N_QNAME_INPUTS, QNAME_VERSION


def npy(values: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, values)
    return buf.getvalue()


def _stats(loss: np.ndarray) -> dict:
    return {"p50": float(np.median(loss)), "p99": float(np.quantile(loss, 0.99)),
            "p999": float(np.quantile(loss, 0.999)), "max": float(loss.max()), "mean": float(loss.mean())}


def make_artifact(seed: int = 0, threshold: float | None = None, **qname_over) -> ModelArtifact:
    """A model folder's content: networks as initialised (their values do not matter to these tests), the
    thresholds calibrated on made-up held-out losses, which the folder keeps for `portprint threshold`."""
    import torch

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    blob = state_bytes(PrefixAutoencoder(66, (32, 12)))
    qblob = state_bytes(PrefixAutoencoder(N_QNAME_INPUTS, (16, 4)))
    known = np.array([3, 17, 99], np.uint64).astype("<u8").tobytes()
    cal, qcal = rng.lognormal(-4, 0.5, 2000), rng.lognormal(-2, 0.4, 1500)
    th, qth = calibrate(cal, 1e-3, "empirical"), calibrate(qcal, 1e-4, "lognormal")
    q = {"feature_version": QNAME_VERSION, "n_features": N_QNAME_INPUTS, "hidden": [16, 4], "threshold": qth.value,
         "threshold_info": qth.as_dict(), "odd_threshold": float(np.quantile(qcal, 0.9)), "odd_rate": 0.1,
         "loss_stats": _stats(qcal),
         "flows_used": {"train": 900 + seed}, "epochs_run": 4, "known_names": 3}
    header_threshold = th.value if threshold is None else threshold
    meta = ModelMeta(FEATURE_VERSION, 8, "mask", [32, 12], 66, header_threshold, th.as_dict(),
                     "2026-11-01", "2026-11-03", {"train": 1000 + seed, "calibration": 2000},
                     _stats(cal),
                     {"epochs_run": 3, "history": [[0.5, 0.6], [0.3, 0.4], [0.2, 0.35]], "seed": 53,
                      "window": {"how": "days", "days": 3, "end": None,
                                 "dates": ["2026-11-01", "2026-11-02", "2026-11-03"]}},
                     qname=q | qname_over)
    meta = ModelMeta(**(asdict(meta) | {"model_version": content_version(blob, meta, qblob, known)}))
    return ModelArtifact(blob, meta, qblob, known, {"calibration_loss.npy": npy(cal),
                                                    "qname_calibration_loss.npy": npy(qcal)})
