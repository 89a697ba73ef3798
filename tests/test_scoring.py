"""Scorer: scoring each distinct header once per batch gives the same losses as scoring every row."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from portprint.jobs.sample import sample_table
from portprint.models.artifact import ModelArtifact, ModelMeta, content_version
from portprint.models.autoencoder import (
    feature_weights,
    model_from_bytes,
    reconstruction_loss,
    state_bytes,
    train_autoencoder,
)
from portprint.udfs.features import features_from_arrow
from portprint.udfs.qname import (
    N_QNAME_INPUTS,
    QNAME_VERSION,
    model_inputs,
    qname_features_from_arrow,
    render_qname,
)
from portprint.udfs.scoring import DETECTION, DETECTORS, Scorer, printable


def _artifact(flows: pa.Table, qname: bool = True) -> ModelArtifact:
    """Two small models trained on the first half of the flows (few epochs: this checks plumbing)."""
    prefix, proto, sent = flows["orig_payload_prefix"], flows["proto"].to_numpy(), flows["orig_bytes"].to_numpy()
    feats = features_from_arrow(prefix, proto, sent, 8, True)
    w = feature_weights(8, "mask")
    model = train_autoencoder(feats[:3000], w, hidden=(32, 12), epochs=2, batch_size=256, learning_rate=0.003,
                              patience=2, seed=1, validation_fraction=0.1).model
    qmeta, qblob = {}, None
    if qname:
        q = model_inputs(qname_features_from_arrow(prefix, proto))[:3000]
        qmodel = train_autoencoder(q, np.ones(N_QNAME_INPUTS, np.float32), hidden=(32, 8), epochs=2,
                                   batch_size=256, learning_rate=0.003, patience=2, seed=1,
                                   validation_fraction=0.1).model
        qblob = state_bytes(qmodel)
        qmeta = {"feature_version": QNAME_VERSION, "hidden": [32, 8], "threshold": 0.05}
    meta = ModelMeta("bits-v1", 8, "mask", [32, 12], 66, 0.05, {}, "", "", {}, {}, {}, qname=qmeta)
    blob = state_bytes(model)
    return ModelArtifact(blob, ModelMeta(**(vars(meta) | {"model_version": content_version(blob, meta, qblob)})),
                         qblob)


def test_dedup_scoring_equals_row_by_row_scoring():
    flows, _ = sample_table(6000, "2026-11-01", np.random.default_rng(3))
    art = _artifact(flows)
    prefix, proto, sent = flows["orig_payload_prefix"], flows["proto"].to_numpy(), flows["orig_bytes"].to_numpy()
    scorer = Scorer(art)
    assert scorer.dedup
    v = scorer.score(prefix, flows["proto"], flows["orig_bytes"])
    w = feature_weights(8, "mask")
    header = model_from_bytes(art.weights, 66, (32, 12))
    np.testing.assert_allclose(v.loss, reconstruction_loss(header, features_from_arrow(prefix, proto, sent, 8, True),
                                                           w), rtol=1e-9, atol=1e-12)
    # The question model: every row scored on its own gives the same losses as one per distinct name.
    qfeats = qname_features_from_arrow(prefix, proto)
    qmodel = model_from_bytes(art.qname_weights, N_QNAME_INPUTS, (32, 8))
    each = reconstruction_loss(qmodel, model_inputs(qfeats), np.ones(N_QNAME_INPUTS, np.float32))
    # Judged: a name is shown, and it is cut off or has 3+ labels (read here from the rendered text).
    names = [render_qname(p, int(k)) for p, k in zip(prefix.to_pylist(), proto, strict=True)]
    judged = np.array([text is not None and (not complete or len(text.rstrip(".").split(".")) >= 3)
                       for text, complete, _ in names])
    np.testing.assert_allclose(v.qloss[judged], each[judged], rtol=1e-9, atol=1e-12)
    assert np.isnan(v.qloss[~judged]).all() and (~judged).any() and judged.any()
    short = np.array([text is not None and complete and 1 <= len(text.rstrip(".").split(".")) <= 2
                      for text, complete, _ in names])
    assert short.any() and np.isnan(v.qloss[short]).all()  # 'example.com.' can't reach a tunnel's zone


def test_detector_is_the_first_that_fired_and_detect_explains_only_those():
    flows, _ = sample_table(6000, "2026-11-01", np.random.default_rng(4))
    art = _artifact(flows)
    scorer = Scorer(art)
    v = scorer.score(flows["orig_payload_prefix"], flows["proto"], flows["orig_bytes"])
    rule, header = v.reason > 1, v.loss > art.meta.threshold
    qname = np.nan_to_num(v.qloss, nan=-1) > art.meta.qname["threshold"]
    empty = np.array([not p for p in flows["orig_payload_prefix"].to_pylist()])
    want = np.where(empty, 0, np.where(rule, 1, np.where(header, 2, np.where(qname, 3, 0))))
    np.testing.assert_array_equal(v.detector, want)
    found = scorer.detect(flows["orig_payload_prefix"], flows["proto"], flows["orig_bytes"], 3)
    assert found.type == DETECTION and len(found) == flows.num_rows
    np.testing.assert_array_equal(found.is_valid().to_numpy(zero_copy_only=False), want > 0)
    got = found.filter(found.is_valid()).field("detector").to_pylist()
    assert got == [DETECTORS[k] for k in want[want > 0]]
    hex_ = found.filter(found.is_valid()).field("prefix_hex").to_pylist()
    assert hex_ == [p.hex() for p, k in zip(flows["orig_payload_prefix"].to_pylist(), want, strict=True) if k]


def test_known_names_are_never_judged_and_change_the_model_version():
    from dataclasses import replace

    from portprint.udfs.features import binary_buffers
    from portprint.udfs.qname import question_keys

    flows, _ = sample_table(6000, "2026-11-01", np.random.default_rng(6))
    art = _artifact(flows)
    prefix, proto = flows["orig_payload_prefix"], flows["proto"]
    before = Scorer(art).score(prefix, proto, flows["orig_bytes"])
    b = binary_buffers(prefix)
    keys = question_keys(b.offsets, b.data, b.validity, b.bit_offset, proto.to_numpy().astype(np.int8))
    judged = ~np.isnan(before.qloss)
    common = np.unique(keys[judged])[:5]  # five names the model judged
    known = replace(art, qname_known=np.sort(common).astype("<u8").tobytes())
    after = Scorer(known).score(prefix, proto, flows["orig_bytes"])
    hit = np.isin(keys, common)
    assert hit.any() and np.isnan(after.qloss[hit]).all()
    np.testing.assert_allclose(after.qloss[~hit], before.qloss[~hit], rtol=1e-12)  # batch make-up: last bits
    assert content_version(known.weights, known.meta, known.qname_weights, known.qname_known) != \
        content_version(art.weights, art.meta, art.qname_weights)


def test_known_names_travel_with_the_model_files(tmp_path):
    import pytest

    from portprint.models.artifact import QNAME_KNOWN, ModelError

    flows, _ = sample_table(3000, "2026-11-01", np.random.default_rng(7))
    art = _artifact(flows)
    known = np.array([3, 17, 2**63 + 5], np.uint64).astype("<u8").tobytes()
    raw = vars(art.meta) | {"model_version": content_version(art.weights, art.meta, art.qname_weights, known)}
    ModelArtifact(art.weights, ModelMeta(**raw), art.qname_weights, known).save(str(tmp_path))
    assert ModelArtifact.load(str(tmp_path)).qname_known == known
    (tmp_path / QNAME_KNOWN).write_bytes(known[:8])  # edited apart from model.json: refused
    with pytest.raises(ModelError, match="do not match"):
        ModelArtifact.load(str(tmp_path))


def test_a_model_without_question_block_never_fires_it():
    flows, _ = sample_table(3000, "2026-11-01", np.random.default_rng(5))
    v = Scorer(_artifact(flows, qname=False)).score(flows["orig_payload_prefix"], flows["proto"],
                                                    flows["orig_bytes"])
    assert np.isnan(v.qloss).all() and not (v.detector == 3).any()


def test_printable_rendering_is_safe_text():
    arr = pa.array([b"SSH-2.0-\r\n\x00\xff", None, b"", b"\x1b[31mred"], pa.binary()).slice(0)
    assert printable(arr).to_pylist() == ["SSH-2.0-....", None, "", ".[31mred"]
    assert printable(arr.slice(1)).to_pylist() == [None, "", ".[31mred"]
