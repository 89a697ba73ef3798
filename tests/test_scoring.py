"""Scorer: scoring each distinct header once per batch gives the same losses as scoring every row."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from portprint.jobs.sample import sample_table
from portprint.models.autoencoder import feature_weights, reconstruction_loss, state_bytes, train_autoencoder
from portprint.udfs.features import features_from_arrow
from portprint.udfs.scoring import Scorer, printable


def test_dedup_scoring_equals_row_by_row_scoring():
    flows, _ = sample_table(6000, "2026-11-01", np.random.default_rng(3))
    prefix, proto, sent = flows["orig_payload_prefix"], flows["proto"].to_numpy(), flows["orig_bytes"].to_numpy()
    feats = features_from_arrow(prefix, proto, sent, 8, True)
    w = feature_weights(8, "mask")
    model = train_autoencoder(feats[:3000], w, hidden=(32, 12), epochs=2, batch_size=256, learning_rate=0.003,
                              patience=2, seed=1, validation_fraction=0.1).model
    scorer = Scorer(state_bytes(model), 8, "mask", (32, 12))
    assert scorer.dedup
    loss, reasons = scorer.score(prefix, flows["proto"], flows["orig_bytes"])
    np.testing.assert_allclose(loss, reconstruction_loss(model, feats, w), rtol=1e-5, atol=1e-9)
    assert len(reasons) == flows.num_rows


def test_printable_rendering_is_safe_text():
    arr = pa.array([b"SSH-2.0-\r\n\x00\xff", None, b"", b"\x1b[31mred"], pa.binary()).slice(0)
    assert printable(arr).to_pylist() == ["SSH-2.0-....", None, "", ".[31mred"]
    assert printable(arr.slice(1)).to_pylist() == [None, "", ".[31mred"]
