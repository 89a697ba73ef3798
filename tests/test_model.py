"""The autoencoder, its training loop and the threshold calibration."""

from __future__ import annotations

import math

import dns.message
import numpy as np
import pyarrow as pa
import pytest

from portprint.models.autoencoder import (
    feature_weights,
    model_from_bytes,
    reconstruction_loss,
    state_bytes,
    train_autoencoder,
)
from portprint.models.calibration import calibrate, empirical_threshold, lognormal_threshold
from portprint.udfs.features import features_from_arrow

TRAIN = dict(hidden=(32, 12), epochs=15, batch_size=256, learning_rate=0.003, patience=3, seed=5,
             validation_fraction=0.1)


def dns_features(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    wires = []
    for i in range(n):
        m = dns.message.make_query(f"h{i % 50}.example.com", ["A", "AAAA", "MX"][i % 3], id=int(rng.integers(65536)))
        wires.append(m.to_wire())
    return features_from_arrow(pa.array(wires), np.full(n, 17, np.int8), np.array([len(w) for w in wires]), 8, True)


def test_training_is_deterministic_and_learns_dns():
    feats = dns_features(2000, 1)
    w = feature_weights(8, "mask")
    a = train_autoencoder(feats, w, **TRAIN)
    b = train_autoencoder(feats, w, **TRAIN)
    assert state_bytes(a.model) == state_bytes(b.model)
    dns_loss = reconstruction_loss(a.model, dns_features(500, 2), w)
    noise = np.random.default_rng(3).integers(0, 2, size=(500, feats.shape[1])).astype(np.float32)
    noise_loss = reconstruction_loss(a.model, noise, w)
    # Held-out DNS reconstructs far better than random bit patterns.
    assert np.quantile(dns_loss, 0.99) < np.quantile(noise_loss, 0.01)


def test_weights_round_trip_and_batching_keep_the_losses():
    feats = dns_features(300, 4)
    w = feature_weights(8, "mask")
    model = train_autoencoder(feats, w, **(TRAIN | {"epochs": 2})).model
    again = model_from_bytes(state_bytes(model), feats.shape[1], (32, 12))  # float64 for scoring
    whole = reconstruction_loss(again, feats, w)
    np.testing.assert_allclose(reconstruction_loss(model, feats, w), whole, rtol=1e-5)
    # Batches of another size and make-up give the same losses (float64 rounding noise at most).
    np.testing.assert_allclose(reconstruction_loss(again, feats, w, batch=7), whole, rtol=1e-12)
    np.testing.assert_allclose(reconstruction_loss(again, feats[::-1], w)[::-1], whole, rtol=1e-12)


def test_masked_id_does_not_change_the_loss():
    w = feature_weights(8, "mask")
    assert w[:16].sum() == 0 and w[16:].min() == 1
    model = train_autoencoder(dns_features(300, 6), w, **(TRAIN | {"epochs": 2})).model
    wires = [dns.message.make_query("example.com", "A", id=i).to_wire() for i in (1, 0xBEEF)]
    feats = features_from_arrow(pa.array(wires), np.full(2, 17, np.int8), np.array([len(x) for x in wires]), 8,
                                True)
    loss = reconstruction_loss(model, feats, w)
    assert loss[0] == loss[1]
    kept = features_from_arrow(pa.array(wires), np.full(2, 17, np.int8), np.array([len(x) for x in wires]), 8,
                               False)
    assert not np.array_equal(kept[0], kept[1])  # the published design does see the ID


def test_empirical_threshold_is_an_order_statistic():
    x = np.arange(1, 10001, dtype=float)  # 1..10000
    assert empirical_threshold(x, 1e-3) == 9990.0  # 10 values (9991..10000) lie above it
    assert np.mean(x > empirical_threshold(x, 1e-3)) <= 1e-3


@pytest.mark.parametrize("target", [1e-2, 1e-3])
def test_calibration_realises_the_target_rate_on_fresh_benign_data(target):
    rng = np.random.default_rng(11)
    held_out = rng.lognormal(mean=-3, sigma=0.7, size=200_000)
    fresh = rng.lognormal(mean=-3, sigma=0.7, size=1_000_000)
    for method in ("empirical", "lognormal"):
        th = calibrate(held_out, target, method)
        realised = float(np.mean(fresh > th.value))
        # Stated tolerance: within 20% of the target (binomial noise at these sizes is a few %).
        assert abs(realised - target) <= 0.2 * target, (method, realised)


def test_lognormal_fit_matches_closed_form():
    rng = np.random.default_rng(2)
    x = rng.lognormal(mean=1.0, sigma=0.5, size=400_000)
    value, mu, sigma = lognormal_threshold(x, 1e-4)
    assert mu == pytest.approx(1.0, abs=0.01) and sigma == pytest.approx(0.5, abs=0.01)
    assert value == pytest.approx(math.exp(1.0 + 0.5 * 3.719016485), rel=0.02)  # z(1 - 1e-4) from tables


def test_auto_picks_lognormal_when_the_tail_is_unobservable():
    x = np.random.default_rng(0).lognormal(size=1000)
    assert calibrate(x, 1e-4).method == "lognormal"
    assert calibrate(np.random.default_rng(0).lognormal(size=400_000), 1e-4).method == "empirical"


def _legal_wires() -> list[tuple[bytes, int]]:
    """Legal DNS a narrow training window lacks, built by dnspython (not by udfs/augment.py)."""
    import dns.flags
    import dns.opcode
    import dns.update

    msgs = []
    up = dns.update.UpdateMessage("corpus.test.")
    up.add("host", 300, "A", "192.0.2.7")
    up.delete("old")
    msgs.append(up)
    notify = dns.message.make_query("corpus.test.", "SOA")
    notify.set_opcode(dns.opcode.NOTIFY)
    notify.flags |= dns.flags.AA
    notify.flags &= ~dns.flags.RD
    msgs.append(notify)
    for flags in (dns.flags.AD, dns.flags.CD, dns.flags.AD | dns.flags.CD, 0):
        q = dns.message.make_query("www.example.org.", "AAAA", use_edns=0)
        q.flags = flags
        msgs.append(q)
    out = []
    for m in msgs:
        wire = m.to_wire()
        out += [(wire, 17), (len(wire).to_bytes(2, "big") + wire, 6)]
    return out


def test_header_threshold_floor_keeps_every_legal_header_below_it():
    from portprint.jobs.train import legal_floor

    feats = dns_features(2000, 8)  # one client's plain A/AAAA/MX queries: none of the messages below
    w = feature_weights(8, "mask")
    model = model_from_bytes(state_bytes(train_autoencoder(feats, w, **TRAIN).model), feats.shape[1], (32, 12))
    floor, why = legal_floor(model, w, 8, True)
    th = calibrate(reconstruction_loss(model, dns_features(3000, 9), w), 1e-3, "empirical", floor, why)
    assert th.value >= floor > 0 and th.floor == floor and "legal DNS headers" in th.floor_reason
    wires, protos = zip(*_legal_wires(), strict=True)
    legal = features_from_arrow(pa.array(wires), np.array(protos, np.int8), np.array([len(x) for x in wires]), 8, True)
    assert (reconstruction_loss(model, legal, w) < th.value).all()
    # A floor under the calibrated value changes nothing.
    plain = calibrate(reconstruction_loss(model, dns_features(3000, 9), w), 1e-3, "empirical")
    assert calibrate(reconstruction_loss(model, dns_features(3000, 9), w), 1e-3, "empirical", plain.value / 2).value \
        == plain.value


def test_recurring_names_are_those_asked_on_two_days_most_asked_first():
    from portprint.jobs.train import recurring_names

    rng = np.random.default_rng(4)
    keys = rng.integers(1, 40, 3000).astype(np.uint64)
    days = rng.integers(0, 3, 3000)
    judge = rng.random(3000) > 0.2
    # Reference: a plain dict of the days each judged key was asked on.
    seen: dict[int, set[int]] = {}
    flows: dict[int, int] = {}
    for k, d, j in zip(keys.tolist(), days.tolist(), judge.tolist(), strict=True):
        if j:
            seen.setdefault(k, set()).add(d)
            flows[k] = flows.get(k, 0) + 1
    want = sorted(k for k, ds in seen.items() if len(ds) >= 2)
    got = recurring_names(keys, days, judge, cap=10**6)
    assert got.dtype == np.uint64 and got.tolist() == want
    top = sorted(want, key=lambda k: -flows[k])[:5]
    assert recurring_names(keys, days, judge, cap=5).tolist() == sorted(top)
    # One day, or a key asked many times on one day only: not recurring.
    assert len(recurring_names(keys, np.zeros(3000, np.int64), judge, cap=10)) == 0
    assert 99 not in recurring_names(np.r_[keys, [99] * 50].astype(np.uint64), np.r_[days, [1] * 50],
                                     np.r_[judge, [True] * 50], cap=10**6).tolist()
