"""evaluate's metrics against values worked out by hand on tiny labelled sets."""

from __future__ import annotations

import numpy as np
import pytest

from portprint.jobs.evaluate import Scored, metrics
from portprint.models.metrics import attack_mask, per_label, recall_at_fpr, roc_auc, roc_curve


def test_roc_auc_by_hand():
    # Pairs (attack > benign): 3 vs {1,2} -> 2, 2.5 vs {1,2} -> 2, 1.5 vs {1} -> 1; ties none. 5 of 6.
    assert roc_auc(np.array([1.0, 2.0]), np.array([3.0, 2.5, 1.5])) == pytest.approx(5 / 6)
    # A tie counts one half: attack 2 vs benign {2} -> 0.5 of 1.
    assert roc_auc(np.array([2.0]), np.array([2.0])) == pytest.approx(0.5)
    assert roc_auc(np.array([0.0, 0.1]), np.array([5.0, np.inf])) == 1.0


def test_roc_curve_ends_at_the_corners():
    fpr, tpr = roc_curve(np.array([1.0, 2.0, 3.0, 4.0]), np.array([2.5, 5.0]))
    assert (fpr[0], tpr[0]) == (0.0, 0.0) and (fpr[-1], tpr[-1]) == (1.0, 1.0)
    # At threshold 2.5 (flag > 2.5): benign 3, 4 flagged (0.5); attack 5 flagged (0.5).
    assert any(f == 0.5 and t == 0.5 for f, t in zip(fpr, tpr, strict=True))


def test_recall_at_fpr_by_hand():
    benign = np.arange(1.0, 11.0)  # 1..10
    attack = np.array([5.5, 9.5, 20.0])
    th, rec = recall_at_fpr(benign, attack, 0.1)  # one benign of ten may be above: threshold 9
    assert th == 9.0 and rec == pytest.approx(2 / 3)


def test_metrics_on_a_tiny_labelled_set():
    labels = np.array(["dns"] * 6 + ["ssh"] * 2 + ["ntp"] * 2 + ["dns-tunnel"] * 2)
    loss = np.array([0.1, 0.2, 0.3, 0.4, 0.5, 2.0, 3.0, 0.2, 5.0, 0.3, 0.1, 0.1])
    rule = np.array([False] * 6 + [True, True, False, False, False, False])
    # The header model fires where its loss is above 1.0 (the threshold metrics is given).
    s = Scored(np.array([f"f{i}" for i in range(12)]), labels, loss, rule, {"filtered_port": 0}, model=loss > 1.0)
    ev = metrics(s, threshold=1.0)
    # dns: one of six above 1.0 -> FPR 1/6. ssh: both by the rule. ntp: one by the model. tunnels: none.
    assert ev["per_label"]["dns"] == {"flows": 6, "flagged": 1, "rate": 1 / 6, "rule_flagged": 0, "model_flagged": 1,
                                      "qname_flagged": 0, "tunnel_flagged": 0}
    assert ev["fpr"] == pytest.approx(1 / 6)
    assert ev["recall"] == pytest.approx(3 / 4)
    assert ev["recall_per_protocol"] == {"ntp": 0.5, "ssh": 1.0}
    assert ev["detectors"]["header-rule"]["recall"] == pytest.approx(2 / 4)
    assert ev["detectors"]["header-model"]["recall"] == pytest.approx(2 / 4)  # 3.0 and 5.0
    assert ev["detectors"]["combined"]["tunnel_recall"] == 0.0
    # Rule or header model: ssh (rule) and ntp 5.0 (model) -> 3 of 4; dns 2.0 -> 1 of 6.
    both = ev["detectors"]["header-both"]
    assert both["recall"] == pytest.approx(3 / 4) and both["fpr"] == pytest.approx(1 / 6)
    # No dns flagged by the rule: the Clopper-Pearson bound for 0 of 6 solves (1 - p)^6 = 0.05.
    assert (1 - ev["detectors"]["header-rule"]["fpr_upper95"]) ** 6 == pytest.approx(0.05)
    # Combined ROC: ssh rule -> +inf; attacks {inf, inf, 5.0, 0.3} vs dns {.1,.2,.3,.4,.5,2}:
    # inf, inf, 5.0 beat all 6 (18 pairs); 0.3 beats .1,.2 (2) and ties .3 (0.5) -> 20.5 / 24.
    assert ev["roc_auc"] == pytest.approx(20.5 / 24)


def test_question_model_tunnel_and_hard_benign_lines():
    labels = np.array(["dns"] * 6 + ["ssh"] * 2 + ["dns-tunnel"] * 4)
    category = np.array(["ordinary"] * 4 + ["ip6-arpa", "hex-label"] + ["ssh"] * 2 + ["iodine"] * 3 + ["dig-exfil"])
    loss = np.array([0.1] * 5 + [2.0] + [3.0, 0.2] + [0.1] * 4)  # header model: one dns FP (hex-label)
    rule = np.array([False] * 6 + [True, True] + [False] * 4)
    qloss = np.array([0.1, 0.2, np.nan, 0.1, 0.9, 0.1, 0.1, 0.1, 0.8, 0.9, 0.1, 0.7])
    family = np.where(labels == "dns-tunnel", category, "")
    s = Scored(np.array([f"f{i}" for i in range(12)]), labels, loss, rule, {"filtered_port": 0}, qloss, category,
               model=loss > 1.0, qmodel=np.nan_to_num(qloss) > 0.5, family=family)
    ev = metrics(s, threshold=1.0, qname_threshold=0.5)
    # tunnels: iodine 2 of 3 by the question model, dig-exfil 1 of 1; hard benign: ip6-arpa (question) and
    # hex-label (header) flagged, 2 of 2.
    t = ev["tunnel"]
    assert (t["flows"], t["flagged"], t["recall"]) == (4, 3, 0.75)
    assert {c: (v["flows"], v["flagged"]) for c, v in t["by_family"].items()} == {"dig-exfil": (1, 1), "iodine": (3, 2)}
    assert t["family_mean"] == pytest.approx((1.0 + 2 / 3) / 2)  # the mean over families, not over flows
    # 1 of 1: the one-sided 95% lower bound solves p^1 = 0.05.
    assert t["by_family"]["dig-exfil"]["lower95"] == pytest.approx(0.05)
    # Genuine DNS per category with its upper bound: ordinary 0 of 4 solves (1 - p)^4 = 0.05.
    assert (1 - ev["genuine_by_category"]["ordinary"]["upper95"]) ** 4 == pytest.approx(0.05)
    assert ev["genuine_by_category"]["ordinary"]["flagged"] == 0
    assert ev["hard_benign"]["by_category"]["hex-label"]["rate"] == 1.0
    assert ev["hard_benign"]["flows"] == 2 and ev["hard_benign"]["flagged"] == 2 and ev["hard_benign"]["fpr"] == 1.0
    assert ev["detectors"]["qname-model"]["tunnel_recall"] == 0.75
    assert ev["detectors"]["qname-model"]["fpr"] == pytest.approx(1 / 6)
    assert ev["fpr"] == pytest.approx(2 / 6)
    assert ev["per_label"]["dns-tunnel"]["qname_flagged"] == 3
    # No flow flagged of n: the one-sided 95% bound is 1 - 0.05**(1/n), about 3/n.
    s0 = Scored(np.array(["a"] * 3000), np.array(["dns"] * 3000), np.zeros(3000), np.zeros(3000, bool),
                {"filtered_port": 0}, model=np.zeros(3000, bool))
    assert metrics(s0, 1.0)["fpr_upper95"] == pytest.approx(1 - 0.05 ** (1 / 3000))
    assert metrics(s0, 1.0)["fpr_upper95"] < 0.001


def test_attack_mask_leaves_out_benign_tunnels_and_unscored():
    labels = np.array(["dns", "dns-tunnel", "other-port", "empty", "ssh", "redis"])
    assert attack_mask(labels).tolist() == [False, False, False, False, True, True]
    assert per_label(labels, np.array([1, 0, 0, 0, 1, 0], bool))["ssh"] == {"flows": 1, "flagged": 1, "rate": 1.0}


@pytest.mark.parametrize("k, n", [(1, 10), (3, 50), (12, 2000), (150, 225), (179, 180)])
def test_the_upper_bound_is_clopper_pearsons(k, n):
    """At the bound, seeing k or fewer of n has a 5% chance, summed here in exact rational arithmetic."""
    from fractions import Fraction
    from math import comb

    from portprint.jobs.evaluate import _lower95, _upper95

    u = _upper95(k, n)
    q = Fraction(u)
    tail = sum(comb(n, i) * q ** i * (1 - q) ** (n - i) for i in range(k + 1))
    assert float(tail) == pytest.approx(0.05, rel=1e-6)
    assert _lower95(n - k, n) == pytest.approx(1 - u)


def test_bounds_at_the_ends_are_exact():
    from portprint.jobs.evaluate import _lower95, _upper95

    assert _upper95(1, 10) == pytest.approx(0.3942, abs=1e-4)  # the one-sided 95% bound in published tables
    assert _upper95(180, 180) == 1.0 and _lower95(0, 180) == 0.0
    assert 0 <= _lower95(180, 180) <= 1.0 == _upper95(180, 180)
